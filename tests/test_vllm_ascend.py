"""vllm-ascend (issue 27): the two stacks against vllm-ascend's own tutorial,
every flag / env name / additional_config key against the names extracted from
the real vLLM 0.23.0 wheel and vllm-ascend 0.23.0.post1 sdist
(ascend_inference/engines/data/vllm_ascend_names.json), and the refusals.

The tutorial text below is quoted verbatim from vllm-ascend 0.23.0.post1's
sdist, docs/source/tutorials/models/DeepSeek-R1.md §5.2 "Multi-Node Data
Parallel Deployment" (Node 0 and Node 1 tabs).
"""
from __future__ import annotations

import importlib.util
import json
import shlex

import pytest

from ascend_inference.engines.vllm_ascend import flag_name, known_env_names, release_names, serve_option_names
from tests.conftest import PROJECT_ROOT, load_stack_doc, run_cli, write_stack
from tests.test_bad_input import one_error_line
from tests.test_golden import node_ip, parse_exports, parse_serve, rendered_serve_command, stack_nodes

pytestmark = pytest.mark.pure

TWO, FOUR = "dp2-tp8-ep16-vllm-ascend", "dp4-tp8-ep32-vllm-ascend"

TUTORIAL_NODE0 = r'''
export HCCL_IF_IP=$local_ip
export GLOO_SOCKET_IFNAME=$nic_name
export TP_SOCKET_IFNAME=$nic_name
export HCCL_SOCKET_IFNAME=$nic_name
export OMP_PROC_BIND=false
export OMP_NUM_THREADS=1
export HCCL_BUFFSIZE=200
export PYTORCH_NPU_ALLOC_CONF=expandable_segments:True
export VLLM_ASCEND_BALANCE_SCHEDULING=1
export HCCL_INTRA_PCIE_ENABLE=1
export HCCL_INTRA_ROCE_ENABLE=0

vllm serve vllm-ascend/DeepSeek-R1-W8A8 \
  --host 0.0.0.0 \
  --port 8000 \
  --data-parallel-size 4 \
  --data-parallel-size-local 2 \
  --data-parallel-address $local_ip \
  --data-parallel-rpc-port 13389 \
  --tensor-parallel-size 4 \
  --quantization ascend \
  --seed 1024 \
  --served-model-name deepseek_r1 \
  --enable-expert-parallel \
  --max-num-seqs 16 \
  --max-model-len 16384 \
  --max-num-batched-tokens 4096 \
  --trust-remote-code \
  --gpu-memory-utilization 0.92 \
  --speculative-config '{"num_speculative_tokens":3,"method":"mtp"}' \
  --compilation-config '{"cudagraph_mode": "FULL_DECODE_ONLY"}'
'''

TUTORIAL_NODE1 = r'''
export HCCL_IF_IP=$local_ip
export GLOO_SOCKET_IFNAME=$nic_name
export TP_SOCKET_IFNAME=$nic_name
export HCCL_SOCKET_IFNAME=$nic_name
export OMP_PROC_BIND=false
export OMP_NUM_THREADS=1
export HCCL_BUFFSIZE=200
export PYTORCH_NPU_ALLOC_CONF=expandable_segments:True
export VLLM_ASCEND_BALANCE_SCHEDULING=1
export HCCL_INTRA_PCIE_ENABLE=1
export HCCL_INTRA_ROCE_ENABLE=0

vllm serve vllm-ascend/DeepSeek-R1-W8A8 \
  --host 0.0.0.0 \
  --port 8000 \
  --headless \
  --data-parallel-size 4 \
  --data-parallel-size-local 2 \
  --data-parallel-start-rank 2 \
  --data-parallel-address $node0_ip \
  --data-parallel-rpc-port 13389 \
  --tensor-parallel-size 4 \
  --quantization ascend \
  --seed 1024 \
  --served-model-name deepseek_r1 \
  --enable-expert-parallel \
  --max-num-seqs 16 \
  --max-model-len 16384 \
  --max-num-batched-tokens 4096 \
  --trust-remote-code \
  --gpu-memory-utilization 0.92 \
  --speculative-config '{"num_speculative_tokens":3,"method":"mtp"}' \
  --compilation-config '{"cudagraph_mode": "FULL_DECODE_ONLY"}'
'''


def tutorial_serve(text: str) -> dict:
    return parse_serve(text.split("\n\n", 1)[1].strip(), ("vllm", "serve"))


def _json_equal(a, b) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except (TypeError, ValueError):
        return False


@pytest.mark.parametrize("index", [0, 1])
def test_two_node_serve_commands_are_the_tutorials_but_for_the_layout(rendered, index):
    """The tutorial runs DP4/TP4 (two DP ranks per server); the stack runs
    DP2/TP8 (one). Every other flag and value is the tutorial's."""
    tutorial = tutorial_serve((TUTORIAL_NODE0, TUTORIAL_NODE1)[index])
    nodes = stack_nodes(TWO)
    actual = parse_serve(rendered_serve_command(rendered[TWO], nodes[index]["name"]), ("vllm", "serve"))
    layout = {"--data-parallel-size": "2", "--data-parallel-size-local": "1", "--tensor-parallel-size": "8",
              "--data-parallel-address": node_ip(nodes[0]), "--model": load_stack_doc(TWO)["config"][
                  "ascend-inference:model"]["path"]}
    if index:
        layout["--data-parallel-start-rank"] = "1"
    expected = {**tutorial, **layout}
    assert set(actual) == set(expected)
    wrong = {k: (expected[k], actual[k]) for k in expected
             if actual[k] != expected[k] and not _json_equal(actual[k], expected[k])}
    assert not wrong


def test_four_node_start_ranks_headless_and_the_master_address(rendered):
    nodes = stack_nodes(FOUR)
    for i, node in enumerate(nodes):
        flags = parse_serve(rendered_serve_command(rendered[FOUR], node["name"]), ("vllm", "serve"))
        assert flags["--data-parallel-size"] == "4" and flags["--data-parallel-size-local"] == "1"
        assert flags["--data-parallel-address"] == node_ip(nodes[0])
        assert flags.get("--headless") is (True if i else None)
        assert flags.get("--data-parallel-start-rank") == (str(i) if i else None)
        assert flags["--enable-expert-parallel"] is True and flags["--tensor-parallel-size"] == "8"


@pytest.mark.parametrize("stack", [TWO, FOUR])
def test_env_file_is_the_tutorials_block_with_the_nodes_values(rendered, stack):
    doc = load_stack_doc(stack)["config"]
    nic = doc["ascend-inference:network"]["socket_ifname"]
    for node in stack_nodes(stack):
        want = [(k, v.replace("$local_ip", node_ip(node)).replace("$nic_name", nic))
                for k, v in parse_exports(TUTORIAL_NODE0)]
        assert parse_exports((rendered[stack] / node["name"] / "env.sh").read_text()) == want
    assert parse_exports(TUTORIAL_NODE0) == parse_exports(TUTORIAL_NODE1)


@pytest.mark.parametrize("stack", [TWO, FOUR])
def test_every_rendered_flag_and_vllm_env_name_is_known_to_the_release(rendered, stack):
    options, env_names = serve_option_names(), known_env_names()
    for node in stack_nodes(stack):
        argv = shlex.split(rendered_serve_command(rendered[stack], node["name"]))
        flags = [flag_name(a) for a in argv if a.startswith("--")]
        assert flags and not [f for f in flags if f not in options]
        names = [k for k, _ in parse_exports((rendered[stack] / node["name"] / "env.sh").read_text())]
        assert [n for n in names if n.startswith("VLLM_")] == ["VLLM_ASCEND_BALANCE_SCHEDULING"]
        assert not [n for n in names if n.startswith("VLLM_") and n not in env_names]


def test_the_data_file_is_the_pinned_pair_and_holds_the_tutorials_names():
    data = release_names()
    assert (data["vllm"], data["vllm_ascend"]) == ("0.23.0", "0.23.0.post1")
    # vLLM 0.23 has no V0 engine left: VLLM_USE_V1 is not read any more.
    assert "VLLM_USE_V1" not in data["vllm_env"] and "VLLM_HOST_IP" in data["vllm_env"]
    assert "VLLM_ASCEND_BALANCE_SCHEDULING" in data["vllm_ascend_env"]
    assert {"--headless", "--data-parallel-start-rank", "--data-parallel-address", "--data-parallel-rpc-port",
            "--data-parallel-size-local", "--enable-expert-parallel", "--additional-config"} <= set(
                data["serve_options"])
    assert {"eplb_config", "enable_shared_expert_dp", "ascend_compilation_config"} <= set(data["additional_config"])


NAMES_FILE = PROJECT_ROOT / "ascend_inference/engines/data/vllm_ascend_names.json"


def standin_engine():
    spec = importlib.util.spec_from_file_location("standin_engine", PROJECT_ROOT / "emulator/standins/engine.py")
    assert spec and spec.loader
    engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engine)
    return engine


def test_the_emulators_vllm_stand_in_parses_every_nodes_command_and_joins_the_ranks(rendered):
    """emulator/standins/engine.py's `vllm serve` parser (built from the same
    names file) takes every node's command; the master waits for ranks 1..3,
    each headless node joins as its start rank."""
    engine = standin_engine()
    master_address = node_ip(stack_nodes(FOUR)[0])
    for index, node in enumerate(stack_nodes(FOUR)):
        argv = shlex.split(rendered_serve_command(rendered[FOUR], node["name"]))[2:]
        args = engine.vllm_ascend_parser("vllm serve", NAMES_FILE).parse_args(engine.flexible_argv(argv))
        assert (args.headless, args.data_parallel_start_rank) == ((True, index) if index else (False, None))
        assert (args.data_parallel_size, args.tensor_parallel_size, args.quantization) == (4, 8, "ascend")
        assert args.compilation_config == {"cudagraph_mode": "FULL_DECODE_ONLY"}
        peers = engine.data_parallel_peers(args, 4, 1)
        assert peers.master == master_address and peers.port == 13389
        assert peers.servers == ([master_address, "dp-rank-1", "dp-rank-2", "dp-rank-3"] if index == 0
                                 else [master_address, f"dp-rank-{index}"])


def test_the_emulators_vllm_stand_in_refuses_a_flag_the_release_lacks():
    engine = standin_engine()
    with pytest.raises(SystemExit):
        engine.vllm_ascend_parser("vllm serve", NAMES_FILE).parse_args(["/m", "--enable-reasoning"])


# --- refused at validate, one line each ---------------------------------------

def _refused(tmp_path, label, edit) -> str:
    doc = load_stack_doc(TWO)
    edit(doc["config"])
    return one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, label, doc)))


def _engine(**values):
    return lambda config: config["ascend-inference:engine"].update(values)


def test_a_flag_the_release_does_not_know_is_refused(tmp_path):
    line = _refused(tmp_path, "flag", _engine(extra_args=["--enable-chunked-prefill", "--no-such-flag=1"]))
    assert "engine.extra_args[1]" in line and "--no-such-flag is not a `vllm serve` option of vLLM 0.23.0" in line


def test_a_known_flag_and_its_no_form_pass(tmp_path):
    doc = load_stack_doc(TWO)
    doc["config"]["ascend-inference:engine"]["extra_args"] = ["--no-enable-chunked-prefill", "--max_num_seqs=8"]
    result = run_cli("validate", "--stack", write_stack(tmp_path, "ok", doc))
    assert result.returncode == 0, result.stderr


def test_a_vllm_variable_the_release_does_not_read_is_refused(tmp_path):
    line = _refused(tmp_path, "env", _engine(env={"VLLM_USE_V1": "1"}))
    assert "engine.env.VLLM_USE_V1" in line and "vllm_ascend/envs.py" in line


def test_an_additional_config_key_the_reader_does_not_read_is_refused(tmp_path):
    line = _refused(tmp_path, "addcfg", _engine(additional_config={"torchair_graph_config": {"enabled": True}}))
    assert "engine.additional_config.torchair_graph_config" in line and "ascend_config.py" in line


def test_a_release_outside_the_window_is_refused(tmp_path):
    line = _refused(tmp_path, "old", lambda c: c["ascend-inference:container"].update(engine_version="0.18.0"))
    assert "container.engine_version" in line and "0.23.0.post1" in line


# TP across nodes is the Ray form, built since: tests/test_vllm_ascend_ray.py.


def test_an_ep_other_than_dp_times_tp_is_refused(tmp_path):
    line = _refused(tmp_path, "ep", lambda c: c["ascend-inference:parallel"].update(ep=8))
    assert "parallel.ep" in line and "set ep: 16" in line


def test_the_tutorials_own_dp4_tp4_layout_validates(tmp_path):
    doc = load_stack_doc(TWO)
    doc["config"]["ascend-inference:parallel"].update(tp=4, dp=4, ep=16)
    result = run_cli("validate", "--stack", write_stack(tmp_path, "dp4tp4", doc))
    assert result.returncode == 0, result.stderr


def test_dp_ranks_that_do_not_split_evenly_over_the_nodes_are_refused(tmp_path):
    def three_nodes(config):
        nodes = config["ascend-inference:nodes"]
        nodes.append({"name": "node2", "host": "192.0.2.13", "hostname": "atlas-800i-a2-2",
                      "device_ips": [f"198.51.100.{33 + d}" for d in range(8)]})
        config["ascend-inference:parallel"].update(tp=6, dp=4, ep=1)
    line = _refused(tmp_path, "dp3n", three_nodes)
    assert "parallel.dp" in line and "dp 4 x tp 6" in line and "3 nodes" in line


def test_gpu_memory_utilization_out_of_range_is_refused(tmp_path):
    line = _refused(tmp_path, "mem", _engine(gpu_memory_utilization=1.5))
    assert "engine.gpu_memory_utilization" in line and "(0, 1]" in line


@pytest.mark.parametrize("stack", [TWO, FOUR, "tp16-vllm-ascend-ray"])
def test_readiness_and_the_smoke_request_ask_the_master_that_serves_the_api(rendered, stack):
    """The tutorial's Node 0 serves the API (the others are `--headless`; in the Ray form
    only the head runs `vllm serve`), so both checks ask node0's address. Found by mutation
    testing: `spec.nodes[0]` -> `[1]` or `[-1]` in the endpoint passed every test."""
    nodes = stack_nodes(stack)
    port = load_stack_doc(stack)["config"]["ascend-inference:engine"].get("port", 8000)
    for script, path in (("serve-ready.sh", "/v1/models"), ("smoke.sh", "/v1/completions")):
        text = (rendered[stack] / nodes[0]["name"] / "scripts" / script).read_text()
        assert f" http://{node_ip(nodes[0])}:{port}{path}" in text, text
        assert not [n for n in nodes[1:] if f"http://{node_ip(n)}:" in text], text


def test_only_a_boolean_option_has_a_no_form(tmp_path):
    """argparse's BooleanOptionalAction makes `--no-X` for a boolean option only; vLLM 0.23.0 has no
    `--no-max-model-len` (a value option). Found by mutation testing: `kind == "bool"` -> `>=` or
    `is not` (a `--no-` form for every option) passed every test."""
    line = _refused(tmp_path, "no-value", _engine(extra_args=["--no-enable-prefix-caching", "--no-max-model-len"]))
    assert "engine.extra_args[1]" in line and "--no-max-model-len is not a `vllm serve` option" in line


def test_a_one_character_served_model_name_is_taken(tmp_path):
    """Any name but the empty one (test_engine_rules_in_process refuses ""). Found by mutation
    testing: `min_length=1` -> 2 passed every test."""
    doc = load_stack_doc(TWO)
    doc["config"]["ascend-inference:engine"]["served_model_name"] = "r"
    out = tmp_path / "out"
    result = run_cli("render", "--stack", write_stack(tmp_path, "one-char", doc), "--out", out)
    assert result.returncode == 0, result.stderr
    assert parse_serve(rendered_serve_command(out, "node0"), ("vllm", "serve"))["--served-model-name"] == "r"
