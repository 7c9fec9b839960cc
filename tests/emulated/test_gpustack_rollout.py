"""Runbook 002 (GPUStack 2.x) rolled out by the program onto the emulated cluster.

Rolled out by the real `pulumi` CLI (emulator/userpath.py PulumiRollout, the user path):
the program's own `docker run` of `gpustack/gpustack:v2.3.0` on every node starts the
real GPUStack 2.3.0 from its venv (the emulator's image arrangement:
emulator/gpustack.py ProgramGpustack), the server with its built-in worker on node0, a
worker on node1; the model is the program's dynamic resource, performed through its own
provider against the server's API; the smoke test is the program's.

The stack is dp4-ep32-gpustack on 2 nodes: DP2 x TP8 x EP16 (validate wants every NPU of
the world used). One rollout for the module, its tests a sequence of changes: a worker
that never registers is named; the full rollout (workers Ready with 8 NPUs each, the model
with the runbook's backend parameters, its instance running across both workers, a chat
answered by the stand-in MindIE); a backend-parameter change updates the model in place; a
hand edit in GPUStack is read by `refresh` and put back by `up`; `destroy` removes model,
workers and server and leaves the weights. That a second `up` changes nothing is checked on
runbook 002's own 4-node shape (test_gpustack_4nodes.py), with the same assertions.
"""
from __future__ import annotations

import contextlib
import time

import pytest

from ascend_inference import gpustack_api
from tests.emulated.conftest import node_ssh
from tests.emulated.gpustack_program import (
    MODEL_RESOURCE,
    PASSWORD_FILE,
    api_of,
    assert_destroyed,
    assert_serving,
    gpustack_rollout,
    the_model,
)

pytestmark = pytest.mark.emulated

# Two nodes: the world is 16 NPUs, and W8A8 weights (as the other 2-node stacks) to fit them.
# Workers register slowly on a loaded 2-core machine: a cap, not a wait (the model resource
# goes on as soon as every worker is Ready). The model's wait likewise: capped well inside the
# test's own limit, so an instance that never runs fails the `up` with the program's message.
SHAPE = ["model.quantization=w8a8", "parallel.dp=2", "parallel.ep=16", "engine.worker_ready_timeout_s=600",
         "engine.ready_timeout_s=600"]
# The never-registering worker's test: what the user set as the worker wait. Its server and
# the server's own worker are Ready before that `up` starts, so the wait has nothing else to
# wait for, and a worker that cannot reach the server gives the server no sign of itself:
# no state, no message, so only the user's bound can end the wait.
BLOCKED_WAIT_S = 20
# A cap on work that ends as soon as it is done (a worker Ready, a model serving).
RECOVER_S = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with gpustack_rollout(tmp_path_factory, 2, "gpustack-rollout", prefix="ptgsro", subnet=233, log_lines=60) as env:
        yield env


def up(rollout, *changes):
    return rollout.up([*SHAPE, *changes])


def wait_worker_ready(cluster, name: str, *, also=lambda: True) -> None:
    """Until GPUStack has worker `name` Ready (and `also()` holds), capped at RECOVER_S."""
    deadline = time.monotonic() + RECOVER_S
    seen = "no answer yet"
    while time.monotonic() < deadline:
        # The server writes its admin password, then its API listens.
        password = cluster.ssh("node0", f"docker exec gpustack cat {PASSWORD_FILE}", timeout=120).stdout.strip()
        with contextlib.suppress(gpustack_api.GpustackError):
            api = gpustack_api.GpustackApi(f"http://{cluster.nodes[0].address}", "admin", password)
            workers = {w["name"]: w for w in api.workers(api.cluster_id(None))}
            seen = str({n: w.get("state") for n, w in workers.items()})
            if workers.get(name, {}).get("state") == "ready" and also():
                return
        time.sleep(3)
    pytest.fail(f"worker {name} not ready within {RECOVER_S} s: {seen}", pytrace=False)


def test_a_worker_that_never_registers_is_reported_by_name(env):
    """node1 cannot open the server's port (a firewall rule in node1; pings still pass, so the
    peer check does not see it): its worker never registers, and the model resource stops the
    rollout naming it, before anything is deployed."""
    cluster, rollout = env
    rule = f"OUTPUT -p tcp -d {cluster.nodes[0].address} --dport 80 -j REJECT"
    node_ssh(cluster, "node1", f"iptables -I {rule}")
    try:
        # Everything but the model and what follows it: the server and its own worker come up,
        # so that the worker wait below has only node1 to wait for. (`**` matches any run of
        # characters in a URN: pulumi/pulumi v3.274.1 pkg/resource/deploy/deployment.go
        # UrnTargets.getMatcher.)
        staged = rollout.up(SHAPE, "--exclude", f"**::{MODEL_RESOURCE}", "--exclude-dependents")
        assert staged.error is None, staged.output[-3000:]
        assert MODEL_RESOURCE not in staged.changed()
        wait_worker_ready(cluster, "node0")
        report = up(rollout, f"engine.worker_ready_timeout_s={BLOCKED_WAIT_S}")
    finally:
        node_ssh(cluster, "node1", f"iptables -D {rule}")
    assert report.error is not None, report.output[-3000:]
    # The real engine's message is the resource's error, under the step that failed.
    assert rollout.failed_steps() == [MODEL_RESOURCE], report.error
    message = "worker node1 has not registered with GPUStack (registered: node0); expected it Ready with 8 NPUs"
    # One message, the workers' line first: no Python traceback of the dynamic provider's
    # server before it (components/gpustack_model.py `one_message`), in the event log and on
    # the console the user reads. On a busy host the server may also have found node0's health
    # check slow ("worker node0 is unreachable (...)"): the line names every worker not ready,
    # so node1's part is looked for in it, not the line's whole text.
    first = report.error.splitlines()[0]
    assert first.startswith("GpustackModelError: worker "), report.error
    assert first.endswith(f" (after {BLOCKED_WAIT_S} s)"), report.error
    assert message in first, report.error
    assert "Traceback" not in report.error, report.error
    console = [line.strip() for line in report.output.splitlines()]
    assert f"error: {first}" in console, report.output[-3000:]
    assert "Traceback" not in report.output, report.output[-3000:]
    # A create that failed leaves nothing in the state and nothing in GPUStack.
    assert MODEL_RESOURCE not in rollout.resources()
    assert api_of(cluster).find_model("DeepSeek-R1") is None
    # With the rule gone the worker registers again (docker restarts it after it gives up); the
    # next test starts once the server has it ready and can reach its API (port 10150), which
    # the server calls to coordinate the model's ports.
    node1 = cluster.nodes[1]
    wait_worker_ready(cluster, "node1", also=lambda: cluster.ssh(
        "node0", f"curl -sf -m 3 http://{node1.address}:10150/healthz", timeout=30).returncode == 0)


def test_full_rollout(env):
    cluster, rollout = env
    assert_serving(cluster, rollout, up(rollout), [
        "--data-parallel-size=2", "--tensor-parallel-size=8", "--moe-tensor-parallel-size=1",
        "--moe-expert-parallel-size=16", "--npu-memory-fraction=0.95"])


def test_backend_parameter_change_updates_the_model_in_place(env):
    cluster, rollout = env
    api = api_of(cluster)
    before = the_model(api)
    report = up(rollout, "engine.npu_memory_fraction=0.9")
    assert report.error is None, report.error
    # The rendered request on node0 (model-deployment.json, a file step: its content is its
    # trigger) is written again; no container is touched.
    assert report.changed() == {MODEL_RESOURCE: "update", "node0-file-1": "replace"}, report.changed()
    after = the_model(api)
    assert after["id"] == before["id"]
    assert "--npu-memory-fraction=0.9" in after["backend_parameters"]
    # GPUStack restarts the instance after the PUT; the resource's wait can still see the old
    # `running` (docs/gpustack.md), so the test waits for the restarted one to answer.
    wait_serving(api, after["id"])


def wait_serving(api, model_id, timeout_s: float = RECOVER_S) -> None:
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
    assert refreshed.error is None, refreshed.error
    # The refresh read the edit into the state (the model resource's `read`).
    assert "--npu-memory-fraction=0.5" in rollout.outputs(MODEL_RESOURCE)["model"]["backend_parameters"]
    report = up(rollout, "engine.npu_memory_fraction=0.9")
    assert report.error is None, report.error
    assert report.changed() == {MODEL_RESOURCE: "update"}, report.changed()
    params = the_model(api)["backend_parameters"]
    assert "--npu-memory-fraction=0.9" in params and "--npu-memory-fraction=0.5" not in params
    wait_serving(api, the_model(api)["id"])


def test_destroy_removes_model_workers_and_server_and_leaves_the_weights(env):
    cluster, rollout = env
    runners = {n.name: node_ssh(cluster, n.name, "docker ps -aq --filter label=runtime.gpustack.ai/workload").split()
               for n in cluster.nodes}
    assert any(runners.values()), "no backend container before destroy"
    assert_destroyed(cluster, rollout)
