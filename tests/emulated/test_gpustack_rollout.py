"""Runbook 002 (GPUStack 2.x) rolled out by the program onto the emulated cluster.

The same engine path as the other stacks (emulator/rollout.py, emulator/executor.py):
the program's own `docker run` of `gpustack/gpustack:v2.3.0` on every node starts the
real GPUStack 2.3.0 from its venv (the emulator's image arrangement:
emulator/gpustack.py ProgramGpustack), the server with its built-in worker on node0, a
worker on node1; the model is the program's dynamic resource, performed through its own
provider against the server's API; the smoke test is the program's.

The stack is dp4-ep32-gpustack on 2 nodes: DP2 x TP8 x EP16 (validate wants every NPU of
the world used). Checked: a worker that never registers is named; the full rollout
(workers Ready with 8 NPUs each, the model with the runbook's backend parameters, its
instance running, a chat answered by the stand-in MindIE); a backend-parameter change
updates the model in place; a hand edit in GPUStack is put back after `refresh` + `up`;
`destroy` removes model, workers and server and leaves the weights. That a second `up`
changes nothing is checked on runbook 002's own 4-node shape (test_gpustack_4nodes.py).
"""
from __future__ import annotations

import contextlib
import json
import time

import pytest

from ascend_inference import gpustack_api
from emulator import gpustack
from emulator.rollout import StackRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "dp4-ep32-gpustack"
# Two nodes: the world is 16 NPUs, and W8A8 weights (as the other 2-node stacks) to fit them.
# Workers register slowly on a loaded 2-core machine.
SHAPE = ["model.quantization=w8a8", "parallel.dp=2", "parallel.ep=16", "engine.worker_ready_timeout_s=600"]
MODEL_RESOURCE = "gpustack-model-deploy"
BLOCKED_WAIT_S = 180
# The node checks: local.run invokes at every `up` (report.checks), never a change.
NODE_CHECKS = {f"{n}-{c}" for n in ("node0", "node1") for c in ("preflight", "peer-ping", "image-check")}
RECOVER_S = 300


def require_gpustack() -> None:
    missing = gpustack.missing_prerequisites()
    if missing:
        pytest.fail("GPUStack cannot run on the emulated nodes; missing: " + "; ".join(missing)
                    + f". Install with: {gpustack.INSTALL}", pytrace=False)


@contextlib.contextmanager
def gpustack_rollout(tmp_path_factory, count: int, name: str, *, prefix: str, subnet: int, log_lines: int):
    """`count` emulated nodes arranged for GPUStack and the stack's rollout on
    them; on the way out, each node's last GPUStack log lines (for a failed
    run's log), `destroy`, and the arrangement stopped."""
    require_gpustack()
    with own_cluster(count, name, prefix=prefix, subnet=subnet) as cluster:
        rollout = StackRollout(cluster, STACK, tmp_path_factory.mktemp("state") / "state.json", log=print)
        arranged = rollout.arrange_gpustack()
        try:
            yield cluster, rollout
        finally:
            for node in cluster.nodes:
                logs = node.exec(["docker", "logs", "--tail", str(log_lines), "gpustack"], timeout=60).stderr
                print(logs[-100 * log_lines:])
            rollout.destroy()
            arranged.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with gpustack_rollout(tmp_path_factory, 2, "gpustack-rollout", prefix="ptgsro", subnet=233, log_lines=60) as env:
        yield env


def up(rollout, *changes):
    return rollout.up([*SHAPE, *changes])


def api_of(cluster) -> gpustack_api.GpustackApi:
    password = node_ssh(cluster, "node0", "docker exec gpustack cat /var/lib/gpustack/initial_admin_password").strip()
    return gpustack_api.GpustackApi(f"http://{cluster.nodes[0].address}", "admin", password)


def the_model(api) -> dict:
    found = api.find_model("DeepSeek-R1")
    assert found is not None, "no model DeepSeek-R1 in GPUStack"
    return found


def test_a_worker_that_never_registers_is_reported_by_name(env):
    """node1 cannot open the server's port (a firewall rule in node1; pings still pass, so the
    peer check does not see it): its worker never registers, and the model resource stops the
    rollout naming it, before anything is deployed."""
    cluster, rollout = env
    rule = f"OUTPUT -p tcp -d {cluster.nodes[0].address} --dport 80 -j REJECT"
    node_ssh(cluster, "node1", f"iptables -I {rule}")
    try:
        report = up(rollout, f"engine.worker_ready_timeout_s={BLOCKED_WAIT_S}")
    finally:
        node_ssh(cluster, "node1", f"iptables -D {rule}")
    assert report.error is not None
    message = str(report.error)
    assert "worker node1 has not registered with GPUStack" in message, message
    assert "expected it Ready with 8 NPUs" in message, message
    assert MODEL_RESOURCE not in report.did("create")
    api = api_of(cluster)
    assert api.find_model("DeepSeek-R1") is None
    # With the rule gone the worker registers again (docker restarts it after it gives up); the
    # next test starts once the server has it ready and can reach its API (port 10150), which
    # the server calls to coordinate the model's ports.
    node1 = cluster.nodes[1]
    deadline = time.monotonic() + RECOVER_S
    while time.monotonic() < deadline:
        workers = {w["name"]: w for w in api.workers(api.cluster_id(None))}
        healthz = cluster.ssh("node0", f"curl -sf -m 3 http://{node1.address}:10150/healthz", timeout=30)
        if workers.get("node1", {}).get("state") == "ready" and healthz.returncode == 0:
            return
        time.sleep(3)
    pytest.fail(f"worker node1 not back within {RECOVER_S} s after the firewall rule went", pytrace=False)


def test_full_rollout(env):
    cluster, rollout = env
    report = up(rollout)
    assert report.error is None, report.error
    assert MODEL_RESOURCE in report.did("create")
    assert "smoke-test-request" in report.did("create")
    api = api_of(cluster)
    cluster_id = api.cluster_id(None)
    workers = {w["name"]: w for w in api.workers(cluster_id)}
    assert set(workers) == {"node0", "node1"}
    for name, worker in workers.items():
        assert worker["state"] == "ready", (name, worker.get("state_message"))
        assert gpustack_api.npu_count(worker) == 8, name
    model = the_model(api)
    assert model["backend"] == "MindIE"
    assert model["backend_parameters"] == [
        "--data-parallel-size=2", "--tensor-parallel-size=8", "--moe-tensor-parallel-size=1",
        "--moe-expert-parallel-size=16", "--npu-memory-fraction=0.95"]
    instances = api.instances(model["id"])
    assert [i["state"] for i in instances] == ["running"], instances
    # Distributed over both workers (DP2 x TP8 = 16 NPUs): the main worker's stand-in MindIE
    # master served only once the subordinate's daemon, started by node1's worker, had joined it.
    main_ip = instances[0]["worker_ip"]
    logs = {n.name: backend_logs(cluster, n) for n in cluster.nodes}
    main = next(n for n in cluster.nodes if n.address == main_ip)
    other = next(n for n in cluster.nodes if n is not main)
    assert f"multi-node master: {other.address} joined (1/1)" in logs[main.name], logs
    assert f"multi-node: joined the master {main_ip}:" in logs[other.name], logs
    # The program's smoke test got its answer through GPUStack from the stand-in engine.
    smoke = next(e for e in rollout.executor.state["resources"].values() if e["name"] == "smoke-test-request")
    assert '"choices"' in smoke["outputs"]["stdout"], smoke["outputs"]
    request = {"model": "DeepSeek-R1", "messages": [{"role": "user", "content": "Mindspore is"}], "max_tokens": 16}
    answer = api.call("POST", "/v1/chat/completions", request)
    assert answer["choices"][0]["message"]["content"]


def changed(report) -> dict[str, str]:
    """What an `up` changed. The node checks run at every up but are invokes,
    never a change: they are in `report.checks`, never here."""
    return {a.resource: a.kind for a in report.actions if a.kind != "same"}


def backend_logs(cluster, node) -> str:
    """The logs of the backend containers GPUStack's worker started on the node."""
    ids = node_ssh(cluster, node.name, "docker ps -q --filter label=runtime.gpustack.ai/workload").split()
    return "".join(node_ssh(cluster, node.name, f"docker logs {cid} 2>&1") for cid in ids)


def test_backend_parameter_change_updates_the_model_in_place(env):
    cluster, rollout = env
    api = api_of(cluster)
    before = the_model(api)
    report = up(rollout, "engine.npu_memory_fraction=0.9")
    assert report.error is None, report.error
    # The rendered request on node0 (model-deployment.json, a file step: its content is its
    # trigger) is written again; no container is touched.
    assert changed(report) == {MODEL_RESOURCE: "update", "node0-file-1": "replace"}, report.actions
    after = the_model(api)
    assert after["id"] == before["id"]
    assert "--npu-memory-fraction=0.9" in after["backend_parameters"]
    # GPUStack restarts the instance after the PUT; the resource's wait can still see the old
    # `running` (docs/gpustack.md), so the test waits for the restarted one to answer.
    wait_serving(api, after["id"])


def wait_serving(api, model_id, timeout_s: float = 300) -> None:
    request = {"model": "DeepSeek-R1", "messages": [{"role": "user", "content": "Mindspore is"}], "max_tokens": 8}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [i["state"] for i in api.instances(model_id)]
        if states == ["running"]:
            try:
                if api.call("POST", "/v1/chat/completions", request)["choices"]:
                    return
            except gpustack_api.GpustackError:
                pass
        time.sleep(3)
    pytest.fail(f"model not serving again within {timeout_s} s: {api.instances(model_id)}", pytrace=False)


def test_a_hand_edit_is_reverted_after_refresh_and_up(env):
    cluster, rollout = env
    api = api_of(cluster)
    model = the_model(api)
    edited = [p for p in model["backend_parameters"] if not p.startswith("--npu-memory-fraction")]
    api.update_model(model["id"], {**{k: model[k] for k in gpustack_api.MODEL_FIELDS if k in model},
                                   "cluster_id": model["cluster_id"],
                                   "backend_parameters": [*edited, "--npu-memory-fraction=0.5"]})
    assert "--npu-memory-fraction=0.5" in the_model(api)["backend_parameters"]
    refreshed = rollout.refresh()
    assert MODEL_RESOURCE in refreshed.did("update"), refreshed.actions
    report = up(rollout, "engine.npu_memory_fraction=0.9")
    assert report.error is None, report.error
    assert changed(report) == {MODEL_RESOURCE: "update"}, report.actions
    params = the_model(api)["backend_parameters"]
    assert "--npu-memory-fraction=0.9" in params and "--npu-memory-fraction=0.5" not in params
    wait_serving(api, the_model(api)["id"])


def test_destroy_removes_model_workers_and_server_and_leaves_the_weights(env):
    cluster, rollout = env
    api = api_of(cluster)
    assert the_model(api)
    runners = {n.name: node_ssh(cluster, n.name, "docker ps -aq --filter label=runtime.gpustack.ai/workload").split()
               for n in cluster.nodes}
    assert any(runners.values()), "no backend container before destroy"
    report = rollout.destroy()
    assert report.error is None, report.error
    deleted = report.did("delete")
    assert deleted.index(MODEL_RESOURCE) < min(deleted.index(f"{n.name}-container") for n in cluster.nodes)
    # The model's delete waited until GPUStack had removed it and its instances, before the server went.
    for node in cluster.nodes:
        left = node_ssh(cluster, node.name, "docker ps -a --format '{{.Names}} {{.Image}}'")
        assert "gpustack/" not in left, (node.name, left)
        weights = node_ssh(cluster, node.name, "ls /data/models/deepseek-r1")
        assert "config.json" in weights, (node.name, weights)
    assert json.dumps(rollout.executor.state["resources"]) == "{}"
