"""The Pulumi program rolled out for real onto an emulated cluster.

The program runs under the SDK's mocks with emulator.executor performing each
resource: real SSH into namespace nodes, real docker engines, real Ray. What
is checked: a full rollout, idempotence, the real impact of a change, each
injected fault stopping the rollout before serving with one message naming
node and cause, and a clean teardown.
"""
from __future__ import annotations

import json

import pytest

from emulator.rollout import StackRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING = {"node0-serve", "serving-ready", "smoke-test-request"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout", prefix="ptroll", subnet=241) as c:
        yield c


ssh = node_ssh


def container_ids(cluster, name) -> dict:
    return {n.name: ssh(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {name}").strip() for n in cluster.nodes}


def ray_head_started(cluster, container) -> str:
    """Start time of the head's GCS server: changes only if Ray is restarted."""
    return ssh(cluster, "node0",
               f"docker exec {container} sh -c 'ps -o lstart= -p $(pgrep -f gcs_server | head -n1)'").strip()


@pytest.fixture(scope="module")
def rolled_out(cluster, tmp_path_factory):
    rollout = StackRollout(cluster, STACK, tmp_path_factory.mktemp("state") / "state.json", log=print)
    report = rollout.up()
    try:
        yield rollout, report
    finally:
        rollout.destroy()


def test_full_rollout(cluster, rolled_out):
    rollout, report = rolled_out
    assert report.error is None, report.error
    done = set(report.did("create"))
    for node in ("node0", "node1"):
        assert {f"{node}-weights", f"{node}-env", f"{node}-container"} <= done
        # The node checks ran (invokes, not resources).
        assert {f"{node}-preflight", f"{node}-peer-ping", f"{node}-image-check"} <= set(report.checks)
    assert {"node0-ray-head", "node1-ray-worker", "ray-verify", *SERVING} <= done
    state = rollout.executor.state["resources"]
    # Preflight facts were collected and parsed from the stand-ins' real formats.
    preflight = rollout.executor.check_outputs["node1-preflight"]
    assert "### npu-smi-info" in preflight and "link status: UP" in preflight
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        info = json.loads(ssh(cluster, node.name, f"docker inspect {container}"))[0]
        assert info["State"]["Running"]
        devices = {d["PathOnHost"] for d in info["HostConfig"]["Devices"]}
        assert ({f"/dev/davinci{i}" for i in range(8)}
                | {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}) <= devices
        assert info["HostConfig"]["NetworkMode"] == "host" and info["HostConfig"]["IpcMode"] == "host"
        binds = info["HostConfig"]["Binds"]
        assert "/etc/hccn.conf:/etc/hccn.conf" in binds and "/data/models/deepseek-r1:/data/models/deepseek-r1" in binds
        assert info["Config"]["Labels"]["ascend-inference/stack"] == STACK
        env = ssh(cluster, node.name, f"docker exec {container} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                      " && echo $MS_ENABLE_LCCL $RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES'")
        assert env.split() == ["off", "1"]
    status = ssh(cluster, "node0", f"docker exec {container} ray status")
    assert "16.0 NPU" in status, status
    assert status.count("node_") >= 2
    smoke = state["command:remote:Command::smoke-test-request"]["outputs"]["stdout"]
    assert '"choices"' in smoke


NODE_CHECKS = {"node0-preflight", "node1-preflight", "node0-peer-ping", "node1-peer-ping", "node0-image-check",
               "node1-image-check"}


def test_second_run_only_repeats_the_node_checks(rolled_out):
    rollout, _ = rolled_out
    report = rollout.up()
    assert report.error is None
    # The checks run at every up (invokes: never a change); no resource changes.
    assert set(report.checks) == NODE_CHECKS and len(report.checks) == len(NODE_CHECKS)
    assert {a.resource: a.kind for a in report.actions if a.kind != "same"} == {}
    assert len(report.actions) == len(rollout.executor.state["resources"])


def test_a_fault_after_a_good_rollout_stops_the_next_up(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    cluster.set_fault("node1", link_down=[3])
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
    # node1's own preflight names the cause first (its gateway line may
    # follow), never a peer's failed ping: the pings wait for it and did not run.
    assert str(report.error).startswith("node node1: device 3 link: is DOWN"), report.error
    assert " -> node0 device 3" not in str(report.error), report.error
    assert "node1-peer-ping" not in report.checks and "node0-peer-ping" not in report.checks
    assert {a.resource for a in report.actions if a.kind != "same"} == set()
    # Fixed: the next up passes without --replace, and changes nothing.
    report = rollout.up()
    assert report.error is None, report.error
    assert set(report.checks) == NODE_CHECKS
    assert {a.resource for a in report.actions if a.kind != "same"} == set()
    assert container_ids(cluster, container) == ids


def test_serve_flag_restarts_only_the_serving_process(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids, ray_start = container_ids(cluster, container), ray_head_started(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128"])
    assert report.error is None, report.error
    assert set(report.did("replace")) == SERVING
    assert {a.resource for a in report.actions if a.kind not in ("same", "replace")} == set()
    assert set(report.checks) == NODE_CHECKS
    assert container_ids(cluster, container) == ids
    assert ray_head_started(cluster, container) == ray_start
    processes = ssh(cluster, "node0", f"docker exec {container} ps -eo args")
    assert "--max-num-seqs=128" in processes, processes


def test_env_change_recreates_containers_and_ray(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128", 'engine.env.MS_ENABLE_LCCL=on'])
    assert report.error is None, report.error
    replaced = set(report.did("replace"))
    assert {"node0-env", "node1-env", "node0-container", "node1-container", "node0-ray-head", "node1-ray-worker",
            "ray-verify", *SERVING} <= replaced
    assert not any(r.endswith(("-preflight", "-weights", "-peer-ping")) for r in replaced)
    new_ids = container_ids(cluster, container)
    assert all(new_ids[n] != ids[n] for n in ids)
    assert ssh(cluster, "node1", f"docker exec {container} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                 " && echo $MS_ENABLE_LCCL'").strip() == "on"
    assert "16.0 NPU" in ssh(cluster, "node0", f"docker exec {container} ray status")
