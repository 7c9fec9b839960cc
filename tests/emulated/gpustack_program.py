"""The program's GPUStack rollout on an emulated cluster, shared by the modules that roll
out dp4-ep32-gpustack with the real `pulumi` CLI (test_gpustack_rollout.py on 2 nodes,
test_gpustack_4nodes.py on runbook 002's own 4): the cluster arranged for the program's own
GPUStack containers (emulator/userpath.py PulumiRollout.arrange_gpustack), and what a user
sees after a good first `up` and after `destroy`, asserted once for both."""
from __future__ import annotations

import contextlib
import json

import pytest

from ascend_inference import gpustack_api
from emulator import gpustack
from emulator.userpath import PulumiRollout, Report
from tests.emulated.conftest import node_ssh, own_cluster

STACK = "dp4-ep32-gpustack"
MODEL_RESOURCE = "gpustack-model-deploy"
PASSWORD_FILE = "/var/lib/gpustack/initial_admin_password"


def require_gpustack() -> None:
    missing = gpustack.missing_prerequisites()
    if missing:
        pytest.fail("GPUStack cannot run on the emulated nodes; missing: " + "; ".join(missing)
                    + f". Install with: {gpustack.INSTALL}", pytrace=False)


@contextlib.contextmanager
def gpustack_rollout(tmp_path_factory, count: int, name: str, *, prefix: str, subnet: int, log_lines: int):
    """`count` emulated nodes arranged for GPUStack and the stack's rollout on
    them with the real CLI; on the way out, each node's last GPUStack log lines
    (for a failed run's log), `pulumi destroy`, and the arrangement stopped."""
    require_gpustack()
    with own_cluster(count, name, prefix=prefix, subnet=subnet) as cluster:
        rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp(name), log=print, nodes=count)
        arranged = rollout.arrange_gpustack()
        try:
            yield cluster, rollout
        finally:
            try:
                # For a failed run's log: the model's instances as GPUStack holds them
                # (state, message, each subordinate's state), whatever became of the run.
                with contextlib.suppress(Exception):
                    api = api_of(cluster)
                    model = api.find_model("DeepSeek-R1")
                    if model is not None:
                        print("model instances:", json.dumps(api.instances(model["id"]), indent=1)[-6000:])
                for node in cluster.nodes:
                    logs = node.exec(["docker", "logs", "--tail", str(log_lines), "gpustack"], timeout=60).stderr
                    print(logs[-100 * log_lines:])
                rollout.destroy()  # nothing to do after the destroy test
            finally:
                arranged.stop()


def api_of(cluster) -> gpustack_api.GpustackApi:
    password = node_ssh(cluster, "node0", f"docker exec gpustack cat {PASSWORD_FILE}").strip()
    return gpustack_api.GpustackApi(f"http://{cluster.nodes[0].address}", "admin", password)


def the_model(api) -> dict:
    found = api.find_model("DeepSeek-R1")
    assert found is not None, "no model DeepSeek-R1 in GPUStack"
    return found


def backend_logs(cluster, node) -> str:
    """The logs of the backend containers GPUStack's worker started on the node."""
    ids = node_ssh(cluster, node.name, "docker ps -q --filter label=runtime.gpustack.ai/workload").split()
    return "".join(node_ssh(cluster, node.name, f"docker logs {cid} 2>&1") for cid in ids)


def assert_serving(cluster, rollout: PulumiRollout, report: Report, backend_parameters: list[str]) -> dict:
    """What a user sees after the first good `up` of a GPUStack stack (this module's 2 nodes
    and test_gpustack_4nodes.py's 4): every node's worker Ready with its 8 NPUs, the model
    with the stack's backend parameters, one instance running over every worker (the main
    worker's stand-in MindIE master joined by each subordinate's daemon), the program's
    smoke test answered through GPUStack, and a chat answered. Returns the model."""
    assert report.error is None, report.error
    assert MODEL_RESOURCE in report.did("create")
    assert "smoke-test-request" in report.did("create")
    api = api_of(cluster)
    names = sorted(n.name for n in cluster.nodes)
    # The server's own worker (server_enable_worker) and the others, each with its 8 NPUs.
    workers = {w["name"]: w for w in api.workers(api.cluster_id(None))}
    assert sorted(workers) == names
    for name, worker in workers.items():
        assert worker["state"] == "ready", (name, worker.get("state_message"))
        assert gpustack_api.npu_count(worker) == 8, name
    model = the_model(api)
    assert model["backend"] == "MindIE"
    assert model["backend_parameters"] == backend_parameters
    instances = api.instances(model["id"])
    assert [i["state"] for i in instances] == ["running"], instances
    # One instance over all the workers: the main worker and the others its subordinates.
    instance = instances[0]
    subordinates = (instance.get("distributed_servers") or {}).get("subordinate_workers") or []
    by_id = {w["id"]: name for name, w in workers.items()}
    assert sorted([by_id[instance["worker_id"]], *(by_id[s["worker_id"]] for s in subordinates)]) == names, instance
    main = next(n for n in cluster.nodes if n.address == instance["worker_ip"])
    others = [n for n in cluster.nodes if n is not main]
    master_log = backend_logs(cluster, main)
    assert f"joined ({len(others)}/{len(others)})" in master_log, master_log
    for node in others:
        assert f"multi-node master: {node.address} joined (" in master_log, master_log
        log = backend_logs(cluster, node)
        assert f"multi-node: joined the master {main.address}:" in log, (node.name, log)
    # The program's smoke test got its answer through GPUStack from the stand-in engine.
    smoke = rollout.outputs("smoke-test-request")
    assert '"choices"' in smoke["stdout"], smoke
    request = {"model": "DeepSeek-R1", "messages": [{"role": "user", "content": "Mindspore is"}], "max_tokens": 16}
    answer = api.call("POST", "/v1/chat/completions", request)
    assert answer["choices"][0]["message"]["content"]
    return model


def assert_destroyed(cluster, rollout: PulumiRollout) -> None:
    """`pulumi destroy` of a GPUStack stack, as a user sees it: the model deleted first (its
    delete waits until GPUStack has removed it and its instances), then the servers and
    workers; no GPUStack or backend container left on any node; the weights kept; an empty state."""
    assert api_of(cluster).find_model("DeepSeek-R1") is not None
    report = rollout.destroy()
    assert report.error is None, report.error
    deleted = report.did("delete")
    assert deleted.index(MODEL_RESOURCE) < min(deleted.index(f"{n.name}-container") for n in cluster.nodes)
    for node in cluster.nodes:
        left = node_ssh(cluster, node.name, "docker ps -a --format '{{.Names}} {{.Image}}'")
        assert "gpustack/" not in left, (node.name, left)
        assert node_ssh(cluster, node.name, "docker ps -aq --filter label=runtime.gpustack.ai/workload").strip() == ""
        weights = node_ssh(cluster, node.name, "ls /data/models/deepseek-r1")
        assert "config.json" in weights, (node.name, weights)
    assert rollout.resources() == {}
