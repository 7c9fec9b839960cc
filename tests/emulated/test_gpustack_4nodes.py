"""Runbook 002's own shape rolled out by the program: GPUStack 2.3.0 server + 3 workers on
4 emulated Atlas 800T A2 (8 NPUs each), DeepSeek-R1 BF16 with MindIE at DP4 / TP8 / MoE EP32.

The stack file dp4-ep32-gpustack unchanged but for what names the machines (emulator/rollout.py)
and the worker wait (workers register slowly on a loaded 2-core machine). Same machinery as
test_gpustack_rollout.py (the 2-node DP2/EP16 layout, which also covers updates, refresh and a
missing worker): the real server and workers from the program's own `docker run`, the model
through the program's dynamic resource, the stand-in MindIE started by GPUStack's workers.

One rollout, then: server + 3 workers Ready with 8 NPUs each, the model with the stack file's
backend parameters as GPUStack's API reports them, its instance running across the 4 workers,
a chat answered; a second `up` changes nothing; `destroy` removes model, workers and server
and leaves the weights.
"""
from __future__ import annotations

import json

import pytest

from ascend_inference import gpustack_api
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from tests.emulated.conftest import node_ssh
from tests.emulated.test_gpustack_rollout import api_of, backend_logs, gpustack_rollout, the_model

pytestmark = pytest.mark.emulated

STACK = "dp4-ep32-gpustack"
NODES = [f"node{i}" for i in range(4)]
# Four GPUStack processes start at once on a shared 2-core machine.
SHAPE = ["engine.worker_ready_timeout_s=900"]
MODEL_RESOURCE = "gpustack-model-deploy"
# The node checks: local.run invokes at every `up` (report.checks), never a change.
NODE_CHECKS = {f"{n}-{c}" for n in NODES for c in ("preflight", "peer-ping", "image-check")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with gpustack_rollout(tmp_path_factory, 4, "gpustack-4nodes", prefix="ptgs4n", subnet=247, log_lines=40) as env:
        yield env


def runbook_backend_parameters() -> list[str]:
    """Runbook 002 step 4's backend parameters, from the stack file's own values."""
    config = load_stack(STACK).raw_config
    parallel, engine = config[f"{NAMESPACE}:parallel"], config[f"{NAMESPACE}:engine"]
    return [f"--data-parallel-size={parallel['dp']}", f"--tensor-parallel-size={parallel['tp']}",
            f"--moe-tensor-parallel-size={parallel['moe_tp']}", f"--moe-expert-parallel-size={parallel['ep']}",
            f"--npu-memory-fraction={engine['npu_memory_fraction']}"]


def test_the_runbook_shape_rolls_out_on_four_nodes(env):
    cluster, rollout = env
    report = rollout.up(SHAPE)
    assert report.error is None, report.error
    assert MODEL_RESOURCE in report.did("create")
    assert "smoke-test-request" in report.did("create")
    api = api_of(cluster)
    # The server's own worker (server_enable_worker) and the three others, each with its 8 NPUs.
    workers = {w["name"]: w for w in api.workers(api.cluster_id(None))}
    assert sorted(workers) == NODES
    for name, worker in workers.items():
        assert worker["state"] == "ready", (name, worker.get("state_message"))
        assert gpustack_api.npu_count(worker) == 8, name
    model = the_model(api)
    assert model["backend"] == "MindIE"
    assert runbook_backend_parameters() == ["--data-parallel-size=4", "--tensor-parallel-size=8",
                                            "--moe-tensor-parallel-size=1", "--moe-expert-parallel-size=32",
                                            "--npu-memory-fraction=0.95"]
    assert model["backend_parameters"] == runbook_backend_parameters()
    instances = api.instances(model["id"])
    assert [i["state"] for i in instances] == ["running"], instances
    # One instance over all four workers (DP4 x TP8 = 32 NPUs): the main worker and three subordinates.
    instance = instances[0]
    subordinates = (instance.get("distributed_servers") or {}).get("subordinate_workers") or []
    by_id = {w["id"]: name for name, w in workers.items()}
    members = sorted([by_id[instance["worker_id"]], *(by_id[s["worker_id"]] for s in subordinates)])
    assert members == NODES, instance
    main = next(n for n in cluster.nodes if n.address == instance["worker_ip"])
    logs = backend_logs(cluster, main)
    assert "joined (3/3)" in logs, logs
    smoke = next(e for e in rollout.executor.state["resources"].values() if e["name"] == "smoke-test-request")
    assert '"choices"' in smoke["outputs"]["stdout"], smoke["outputs"]
    request = {"model": "DeepSeek-R1", "messages": [{"role": "user", "content": "Mindspore is"}], "max_tokens": 16}
    answer = api.call("POST", "/v1/chat/completions", request)
    assert answer["choices"][0]["message"]["content"]

    again = rollout.up(SHAPE)
    assert again.error is None, again.error
    # The node checks ran again (invokes, never a change); no resource changed.
    assert NODE_CHECKS <= set(again.checks)
    assert {a.resource: a.kind for a in again.actions if a.kind != "same"} == {}
    assert the_model(api)["id"] == model["id"]


def test_destroy_removes_model_workers_and_server_and_leaves_the_weights(env):
    cluster, rollout = env
    report = rollout.destroy()
    assert report.error is None, report.error
    deleted = report.did("delete")
    assert deleted.index(MODEL_RESOURCE) < min(deleted.index(f"{n}-container") for n in NODES)
    for node in cluster.nodes:
        left = node_ssh(cluster, node.name, "docker ps -a --format '{{.Names}} {{.Image}}'")
        assert "gpustack/" not in left, (node.name, left)
        assert node_ssh(cluster, node.name, "docker ps -aq --filter label=runtime.gpustack.ai/workload").strip() == ""
        weights = node_ssh(cluster, node.name, "ls /data/models/deepseek-r1")
        assert "config.json" in weights, (node.name, weights)
    assert json.dumps(rollout.executor.state["resources"]) == "{}"
