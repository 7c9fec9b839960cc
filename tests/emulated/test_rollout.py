"""The Pulumi program rolled out for real onto an emulated cluster by the real
`pulumi` CLI (emulator/userpath.py PulumiRollout, the README's user path), the
`command` and `docker` plugins being the test stand-ins of emulator/plugins.

One rollout serves the module, as a sequence of `up`s on one stack: a full
rollout, a second `up` that changes nothing, a fault after a good rollout
stopping the next `up` with one message naming node and cause, the real
impact of a serve-flag change and of an env change, and a clean teardown.
"""
from __future__ import annotations

import json

import pytest

from emulator.userpath import PulumiRollout
from tests.emulated.conftest import changed, container_ids, node_ssh, own_cluster, processes_in

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING = {"node0-serve", "serving-ready", "smoke-test-request"}
# What runs again at every `up`: the node checks (invokes, never a change).
# The engine's liveness check runs where the engine starts (node0 for vLLM-MindSpore).
NODE_CHECKS = {"node0-preflight", "node1-preflight", "node0-peer-ping", "node1-peer-ping", "node0-image-check",
               "node1-image-check", "node0-serve-alive"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout", prefix="ptroll", subnet=241) as c:
        yield c


ssh = node_ssh


def ray_head_started(cluster, container) -> str:
    """Start time of the head's GCS server: changes only if Ray is restarted."""
    return ssh(cluster, "node0",
               f"docker exec {container} sh -c 'ps -o lstart= -p $(pgrep -f gcs_server | head -n1)'").strip()


@pytest.fixture(scope="module")
def rolled_out(cluster, tmp_path_factory):
    """(rollout, the first up's report); destroyed at the end, leaving no container."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("rollout"), log=print)
    try:
        yield rollout, rollout.up()
    finally:
        gone = rollout.destroy()
        assert gone.error is None, gone.error
        assert rollout.resources() == {}
        for node in cluster.nodes:
            assert ssh(cluster, node.name, "docker ps -aq").strip() == ""


def test_full_rollout(cluster, rolled_out):
    rollout, report = rolled_out
    assert report.error is None, report.error
    done = set(report.did("create"))
    for node in ("node0", "node1"):
        assert {f"{node}-weights", f"{node}-env", f"{node}-container"} <= done
    # The node checks ran (invokes, not resources).
    assert set(report.checks) == NODE_CHECKS, report.checks
    assert {"node0-ray-head", "node1-ray-worker", "ray-verify", *SERVING} <= done
    # Preflight facts were collected and parsed from the stand-ins' real formats
    # (npu-smi's driver version, hccn_tool's device IPs), as the stack exports them.
    facts = rollout.stack_output("node_facts")
    for node in cluster.nodes:
        assert facts[node.name]["hostname"] == node.hostname
        assert facts[node.name]["device_ips"] == list(node.device_ips)
        assert facts[node.name]["driver"]
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        info = json.loads(ssh(cluster, node.name, f"docker inspect {container}"))[0]
        assert info["State"]["Running"]
        devices = {d["PathOnHost"] for d in info["HostConfig"]["Devices"]}
        assert ({f"/dev/davinci{i}" for i in range(8)}
                | {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}) <= devices
        assert info["HostConfig"]["NetworkMode"] == "host" and info["HostConfig"]["IpcMode"] == "host"
        # Read from the mounts: docker_container writes every bind with its mode (`:rw`/`:ro`).
        mounts = {(m["Source"], m["Destination"]) for m in info["Mounts"]}
        model = "/data/models/deepseek-r1"
        assert {("/etc/hccn.conf", "/etc/hccn.conf"), (model, model)} <= mounts
        assert info["Config"]["Labels"]["ascend-inference/stack"] == STACK
        env = ssh(cluster, node.name, f"docker exec {container} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                      " && echo $MS_ENABLE_LCCL $RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES'")
        assert env.split() == ["off", "1"]
    status = ssh(cluster, "node0", f"docker exec {container} ray status")
    assert "16.0 NPU" in status, status
    assert status.count("node_") >= 2
    assert '"choices"' in rollout.outputs("smoke-test-request")["stdout"]


def test_second_run_only_repeats_the_node_checks(rolled_out):
    rollout, _ = rolled_out
    report = rollout.up([], "--expect-no-changes")
    assert report.error is None, report.output[-3000:]
    # The checks run at every up (invokes: never a change); no resource changes.
    assert set(report.checks) == NODE_CHECKS, report.checks
    assert changed(report) == set()
    assert {a.resource for a in report.actions} == set(rollout.resources())


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
    assert "node1-peer-ping" not in report.checks and "node0-peer-ping" not in report.checks, report.checks
    # A check stopped it, no step: nothing failed and nothing changed.
    assert rollout.failed_steps() == []
    assert changed(report) == set()
    # Fixed: the next up passes without --replace, and changes nothing.
    report = rollout.up([], "--expect-no-changes")
    assert report.error is None, report.output[-3000:]
    assert set(report.checks) == NODE_CHECKS, report.checks
    assert changed(report) == set()
    assert container_ids(cluster, container) == ids


def test_serve_flag_restarts_only_the_serving_process(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids, ray_start = container_ids(cluster, container), ray_head_started(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128"])
    assert report.error is None, report.error
    assert set(report.did("replace")) == SERVING
    assert changed(report) == SERVING, report.changed()
    assert set(report.checks) == NODE_CHECKS, report.checks
    assert container_ids(cluster, container) == ids
    assert ray_head_started(cluster, container) == ray_start
    processes = processes_in(cluster, "node0", container)
    assert "--max-num-seqs=128" in processes, processes


def test_env_change_recreates_containers_and_ray(cluster, rolled_out):
    """Both containers are replaced delete-before-replace in one `up`: node1's Ray
    worker (which reads both containers) is stopped in whichever container's chain
    the engine reaches first, while the other container may be gone already; its
    undo is done then (ascend_inference/templating.py `wrap`), not a failed `up`."""
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128", "engine.env.MS_ENABLE_LCCL=on"])
    assert report.error is None, report.error
    replaced = set(report.did("replace"))
    assert {"node0-env", "node1-env", "node0-container", "node1-container", "node0-ray-head", "node1-ray-worker",
            "ray-verify", *SERVING} <= replaced
    # The weights, the image and the checks' facts are the same: not redone.
    assert not any(r.endswith(("-weights", "-image")) for r in changed(report)), report.changed()
    new_ids = container_ids(cluster, container)
    assert all(new_ids[n] != ids[n] for n in ids)
    assert ssh(cluster, "node1", f"docker exec {container} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                 " && echo $MS_ENABLE_LCCL'").strip() == "on"
    assert "16.0 NPU" in ssh(cluster, "node0", f"docker exec {container} ray status")
