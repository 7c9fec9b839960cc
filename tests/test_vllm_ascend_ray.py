"""vllm-ascend's Ray form (issue 27 item 1: "the Ray form for TP/PP across
nodes"): stack tp16-vllm-ascend-ray against vllm-ascend's own tutorial, the
form chosen from the layout alone, and its refusals.

The tutorial text below is quoted verbatim from vllm-ascend 0.23.0.post1's
sdist, docs/source/tutorials/features/ray.md "Ray Distributed" ("Start Ray
Cluster" head and worker blocks, and the tensor-parallel-only serve command).
"""
from __future__ import annotations

import json
import shlex

import pytest

from ascend_inference.engines.base import ClusterStyle
from ascend_inference.engines.vllm_ascend import flag_name, known_env_names, serve_option_names
from ascend_inference.render import plan_document
from ascend_inference.stackfile import load_stack
from tests.conftest import load_stack_doc, run_cli, write_stack
from tests.test_bad_input import one_error_line
from tests.test_golden import node_ip, parse_exports, parse_serve, ray_start_line, rendered_serve_command, stack_nodes

pytestmark = pytest.mark.pure

RAY = "tp16-vllm-ascend-ray"

TUTORIAL_HEAD = r'''
# Head node
export HCCL_IF_IP={local_ip}
export GLOO_SOCKET_IFNAME={nic_name}
export TP_SOCKET_IFNAME={nic_name}
export RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1
export ASCEND_RT_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
ray start --head
'''

TUTORIAL_WORKER = r'''
# Worker node
export HCCL_IF_IP={local_ip}
export GLOO_SOCKET_IFNAME={nic_name}
export TP_SOCKET_IFNAME={nic_name}
export RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1
export ASCEND_RT_VISIBLE_DEVICES=0,1,2,3,4,5,6,7
ray start --address='{head_node_ip}:6379' --node-ip-address={local_ip}
'''

TUTORIAL_TP16_SERVE = r'''
vllm serve Qwen/Qwen3-235B-A22B \
  --distributed-executor-backend ray \
  --tensor-parallel-size 16 \
  --enable-expert-parallel \
  --seed 1024 \
  --max-model-len 8192  \
  --max-num-seqs 25 \
  --served-model-name qwen \
  --trust-remote-code \
  --gpu-memory-utilization 0.9
'''


def test_the_form_follows_from_the_layout():
    """TP x PP wider than a node: Ray. Within a node: the data parallel form.
    Every other engine keeps its one style (tests/test_engine_plugins.py)."""
    ray, dp = load_stack(RAY), load_stack("dp2-tp8-ep16-vllm-ascend")
    assert ray.spec.engine_plugin is dp.spec.engine_plugin
    assert ray.spec.engine_plugin.cluster_style_for(ray.spec) is ClusterStyle.RAY
    assert ray.spec.engine_plugin.uses_ray(ray.spec)
    assert dp.spec.engine_plugin.cluster_style_for(dp.spec) is ClusterStyle.ENGINE_PEERS
    assert not dp.spec.engine_plugin.uses_ray(dp.spec)
    assert plan_document(ray)["cluster"] == "ray" and plan_document(dp)["cluster"] == "engine peers"


def test_serve_runs_on_the_head_only_and_is_the_tutorials_but_for_the_model(rendered):
    """ray.md: "You only need to run the vllm command on one node." The stack
    serves DeepSeek-R1 W8A8 instead of Qwen3, so it adds --quantization ascend
    (vllm-ascend's method for W8A8 weights) and --max-num-batched-tokens (the
    engine's default, as in the data parallel form); --host/--port say where
    the API listens, as the readiness check expects."""
    nodes = stack_nodes(RAY)
    assert not (rendered[RAY] / nodes[1]["name"] / "scripts" / "serve-start.sh").exists()
    actual = parse_serve(rendered_serve_command(rendered[RAY], nodes[0]["name"]), ("vllm", "serve"))
    tutorial = parse_serve(TUTORIAL_TP16_SERVE.strip(), ("vllm", "serve"))
    engine = load_stack_doc(RAY)["config"]["ascend-inference:engine"]
    differs = {"--model": load_stack_doc(RAY)["config"]["ascend-inference:model"]["path"],
               "--served-model-name": engine["served_model_name"], "--quantization": "ascend",
               "--max-num-batched-tokens": "4096", "--host": "0.0.0.0", "--port": "8000"}
    assert actual == {**tutorial, **differs}


def test_env_is_the_tutorials_block_with_each_nodes_values(rendered):
    nic = load_stack_doc(RAY)["config"]["ascend-inference:network"]["socket_ifname"]
    assert parse_exports(TUTORIAL_HEAD) == parse_exports(TUTORIAL_WORKER)
    for node in stack_nodes(RAY):
        want = [(k, v.replace("{local_ip}", node_ip(node)).replace("{nic_name}", nic))
                for k, v in parse_exports(TUTORIAL_HEAD)]
        assert parse_exports((rendered[RAY] / node["name"] / "env.sh").read_text()) == want


def test_ray_starts_as_the_tutorial_says_after_the_env(rendered):
    """`ray start --head` (Ray's default port 6379, written out) on node0;
    the worker joins `<head>:6379` with `--node-ip-address=<its address>`. The
    head also gets its address and its dashboard on 127.0.0.1 (not in ray.md:
    docs/security.md#ray).
    The env file is sourced first: ray.md's note says it must be set before
    Ray starts."""
    head, worker = stack_nodes(RAY)
    assert ray_start_line(rendered[RAY], head["name"]) == (
        f"ray start --head --port=6379 --node-ip-address={node_ip(head)} --dashboard-host=127.0.0.1")
    tutorial_worker = TUTORIAL_WORKER.strip().splitlines()[-1].format(
        head_node_ip=node_ip(head), local_ip=node_ip(worker))
    assert shlex.split(ray_start_line(rendered[RAY], worker["name"])) == shlex.split(tutorial_worker)
    for node in (head, worker):
        script = (rendered[RAY] / node["name"] / "scripts" / "ray-start.sh").read_text()
        assert script.index("env.sh") < script.index("ray start")
    verify = (rendered[RAY] / head["name"] / "scripts" / "ray-verify.sh").read_text()
    assert "want_npu=16; want_nodes=2" in verify


def test_every_rendered_flag_and_vllm_env_name_is_known_to_the_release(rendered):
    argv = shlex.split(rendered_serve_command(rendered[RAY], stack_nodes(RAY)[0]["name"]))
    flags = [flag_name(a) for a in argv if a.startswith("--")]
    assert "--distributed-executor-backend" in flags and not [f for f in flags if f not in serve_option_names()]
    for node in stack_nodes(RAY):
        names = [k for k, _ in parse_exports((rendered[RAY] / node["name"] / "env.sh").read_text())]
        assert not [n for n in names if n.startswith("VLLM_") and n not in known_env_names()]


def test_tp8_pp2_is_the_tutorials_other_ray_layout(tmp_path):
    """ray.md's first command: TP8 x PP2 over the same two nodes."""
    doc = load_stack_doc(RAY)
    doc["config"]["ascend-inference:parallel"].update(tp=8, pp=2, ep=8)
    out = tmp_path / "out"
    result = run_cli("render", "--stack", write_stack(tmp_path, "tp8pp2", doc), "--out", out)
    assert result.returncode == 0, result.stderr
    flags = parse_serve(rendered_serve_command(out, "node0"), ("vllm", "serve"))
    assert (flags["--tensor-parallel-size"], flags["--pipeline-parallel-size"]) == ("8", "2")
    assert flags["--distributed-executor-backend"] == "ray"
    assert json.loads((out / "plan.json").read_text())["cluster"] == "ray"


def _refused(tmp_path, label, edit, base=RAY) -> str:
    doc = load_stack_doc(base)
    edit(doc["config"])
    return one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, label, doc)))


def test_data_parallel_beside_a_group_wider_than_a_node_is_refused(tmp_path):
    def four_nodes(config):
        for i in (2, 3):
            config["ascend-inference:nodes"].append(
                {"name": f"node{i}", "host": f"192.0.2.{11 + i}", "hostname": f"atlas-800i-a2-{i}",
                 "device_ips": [f"198.51.100.{33 + 16 * (i - 2) + d}" for d in range(8)]})
        config["ascend-inference:parallel"].update(tp=16, dp=2, ep=32)
    line = _refused(tmp_path, "raydp", four_nodes)
    assert "parallel.dp" in line and "Ray form runs one instance" in line


def test_pipeline_parallel_within_a_node_is_refused(tmp_path):
    line = _refused(tmp_path, "pp-in-node",
                    lambda c: c["ascend-inference:parallel"].update(tp=4, pp=2, dp=2, ep=8),
                    base="dp2-tp8-ep16-vllm-ascend")
    assert "parallel.pp" in line and "only across nodes" in line


def test_an_ep_other_than_tp_is_refused_in_the_ray_form(tmp_path):
    line = _refused(tmp_path, "ray-ep", lambda c: c["ascend-inference:parallel"].update(ep=8))
    assert "parallel.ep" in line and "set ep: 16" in line


def test_ray_port_on_the_api_port_is_refused(tmp_path):
    line = _refused(tmp_path, "ray-port", lambda c: c["ascend-inference:engine"].update(ray_port=8000))
    assert "engine.ray_port" in line and "engine.port" in line


@pytest.mark.parametrize("ep, flag", [(1, None), (2, True)])
def test_expert_parallel_over_two_tp_ranks_is_asked_for_and_without_it_it_is_not(tmp_path, ep, flag):
    """TP2 x PP8 over the two nodes (Ray form): vLLM's EP is DP x TP = 2, the smallest that is
    expert parallel at all. Found by mutation testing: `plan.ep > 1` -> `> 2` passed every test
    (every stack's EP was 1 or 16 and up)."""
    doc = load_stack_doc(RAY)
    doc["config"]["ascend-inference:parallel"].update(tp=2, pp=8, ep=ep)
    out = tmp_path / "out"
    result = run_cli("render", "--stack", write_stack(tmp_path, f"tp2pp8ep{ep}", doc), "--out", out)
    assert result.returncode == 0, result.stderr
    flags = parse_serve(rendered_serve_command(out, "node0"), ("vllm", "serve"))
    assert (flags["--tensor-parallel-size"], flags["--pipeline-parallel-size"]) == ("2", "8")
    assert flags.get("--enable-expert-parallel") is flag
