"""The Pulumi program rolled out for real onto an emulated cluster.

The program runs under the SDK's mocks with emulator.executor performing each
resource: real SSH into namespace nodes, real docker engines, real Ray. What
is checked: a full rollout, idempotence, the real impact of a change, each
injected fault stopping the rollout before serving with one message naming
node and cause, and a clean teardown.
"""
from __future__ import annotations

import json
import time

import pytest

from components.errors import NodeFactError
from emulator import Cluster
from emulator.executor import StepFailed
from emulator.rollout import StackRollout
from tests.emulated.conftest import fresh_state_dir, require_prerequisites

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING = {"node0-serve", "serving-ready", "smoke-test-request"}


@pytest.fixture(scope="module")
def cluster():
    require_prerequisites()
    state = fresh_state_dir("rollout")
    c = Cluster.up(2, state, log=lambda m: None, prefix="ptroll", subnet=241)
    try:
        yield c
    finally:
        assert not Cluster.down_state_dir(state, log=print)


def ssh(cluster, node, command) -> str:
    done = cluster.ssh(node, command, timeout=120)
    assert done.returncode == 0, f"{node}: {command}: {done.stderr}"
    return done.stdout


def container_ids(cluster, name) -> dict:
    return {n.name: ssh(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {name}").strip() for n in cluster.nodes}


def ray_head_started(cluster, container) -> str:
    """Start time of the head's GCS server: changes only if Ray is restarted."""
    return ssh(cluster, "node0", f"docker exec {container} sh -c 'ps -o lstart= -p $(pgrep -f gcs_server | head -n1)'").strip()


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
        assert {f"{node}-preflight", f"{node}-weights", f"{node}-peer-ping", f"{node}-env", f"{node}-container"} <= done
    assert {"node0-ray-head", "node1-ray-worker", "ray-verify", *SERVING} <= done
    state = rollout.executor.state["resources"]
    # Preflight facts were collected and parsed from the stand-ins' real formats.
    preflight = state["command:remote:Command::node1-preflight"]["outputs"]["stdout"]
    assert "### npu-smi-info" in preflight and "link status: UP" in preflight
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        info = json.loads(ssh(cluster, node.name, f"docker inspect {container}"))[0]
        assert info["State"]["Running"]
        devices = {d["PathOnHost"] for d in info["HostConfig"]["Devices"]}
        assert {f"/dev/davinci{i}" for i in range(8)} | {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= devices
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


def test_second_run_changes_nothing(rolled_out):
    rollout, _ = rolled_out
    report = rollout.up()
    assert report.error is None
    assert [a for a in report.actions if a.kind != "same"] == []
    assert len(report.actions) == len(rollout.executor.state["resources"])


def test_serve_flag_restarts_only_the_serving_process(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids, ray_start = container_ids(cluster, container), ray_head_started(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128"])
    assert report.error is None, report.error
    assert {a.resource for a in report.actions if a.kind != "same"} == SERVING
    assert container_ids(cluster, container) == ids
    assert ray_head_started(cluster, container) == ray_start
    processes = ssh(cluster, "node0", f"docker exec {container} ps -eo args")
    assert "--max-num-seqs=128" in processes, processes


def test_env_change_recreates_containers_and_ray(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128", 'engine.env.MS_ENABLE_LCCL="on"'])
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


# --- faults ---------------------------------------------------------------

FAULTS = [
    # (fault on node1, words the message must contain)
    ({"link_down": [3]}, ["node1", "device 3 link", "DOWN"]),
    ({"tls_on": [2]}, ["node1", "device 2 tls", "switch is 1"]),
    ({"net_health_fail": [5]}, ["node1", "device 5 net_health", "Fault"]),
    ({"unhealthy_devices": [4]}, ["node1", "npu-smi info", "7 healthy NPUs"]),
    ({"missing_devices": [7]}, ["node1", "npu-smi info", "1 missing"]),
    ({"driver_version": "23.0.6"}, ["node1", "driver version", "23.0.6"]),
    ({"unreachable": ["198.19.0.1"]}, ["node1", "device 0", "node0", "198.19.0.1"]),
    ({"stale_rootinfo": True}, ["node1", "/etc/hccl_rootinfo.json"]),
    ({"missing_model": True}, ["node1", "model path"]),
    ({"model_file_differs": True}, ["node1", "model weights"]),
    ({"hostname": "ascend-node0"}, ["node1", "hostname", "ascend-node0"]),
    ({"wrong_device_ip": {"6": "198.19.9.9"}}, ["node1", "device 6 ip", "198.19.9.9"]),
]


@pytest.mark.parametrize("fault,words", FAULTS, ids=[next(iter(f)) for f, _ in FAULTS])
def test_fault_stops_the_rollout_before_serving(cluster, tmp_path, fault, words):
    cluster.set_fault("node1", **fault)
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    try:
        start = time.monotonic()
        report = rollout.up()
        detected = time.monotonic() - start
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert isinstance(report.error, (NodeFactError, StepFailed)), report.error
    message = str(report.error)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in message
    started = {a.resource for a in report.actions}
    assert not started & {"node0-serve", "node0-container", "node1-container", "node0-ray-head"}, started
    print(f"time to detect {next(iter(fault))}: {detected:.1f} s (runbooks: HCCL_CONNECT_TIMEOUT=7200 s)")
    assert detected < 120


def test_mindie_rank_table_config_and_teardown(cluster, tmp_path):
    """TP16 MindIE: the rank table lands at the same path on every node with
    mode 640, the daemons start on every node, and destroy removes it all."""
    rollout = StackRollout(cluster, "tp16-mindie", tmp_path / "state.json", log=print)
    report = rollout.up()
    try:
        assert report.error is None, report.error
        table_path = "/data/hm/hccl_2s_16p.json"
        tables = set()
        for node in cluster.nodes:
            assert ssh(cluster, node.name, f"stat -c %a {table_path}").strip() == "640"
            tables.add(ssh(cluster, node.name, f"cat {table_path}"))
            assert ssh(cluster, node.name, "stat -c %a /data/models/deepseek-r1").strip() == "750"
        assert len(tables) == 1
        table = json.loads(tables.pop())
        assert [s["server_id"] for s in table["server_list"]] == [n.address for n in cluster.nodes]
        assert [d["device_ip"] for d in table["server_list"][1]["device"]] == list(cluster.nodes[1].device_ips)
        assert {"node0-serve", "node1-serve", "serving-ready", "smoke-test-request"} <= set(report.did("create"))
        # fix_tls is on in this stack: a TLS switch left on is set back to 0 before preflight.
    finally:
        rollout.destroy()
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"docker ps -aq --filter name={container}").strip() == ""
        assert ssh(cluster, node.name, f"test -e {table_path} && echo left || echo gone").strip() == "gone"
        assert ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"


def test_fix_tls_repairs_a_tls_switch(cluster, tmp_path):
    cluster.set_fault("node1", tls_on=[1, 2])
    rollout = StackRollout(cluster, "tp16-mindie", tmp_path / "state.json", log=lambda m: None)
    try:
        report = rollout.up()
        assert report.error is None, report.error
        assert "node1-fix-tls" in report.did("create")
        assert "tls switch[0]" in ssh(cluster, "node1", "hccn_tool -i 2 -tls -g")
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")


def test_engine_crash_is_reported_with_its_log(cluster, tmp_path):
    cluster.set_fault("node0", engine_crash_after=1)
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    try:
        report = rollout.up()
    finally:
        rollout.destroy()
        cluster.clear_faults("node0")
    assert isinstance(report.error, StepFailed)
    assert report.error.resource in ("node0-serve", "serving-ready")
    assert "last log lines" in str(report.error)


def test_teardown_leaves_nothing(cluster, tmp_path):
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    assert rollout.up().error is None
    report = rollout.destroy()
    assert report.error is None
    for node in cluster.nodes:
        assert ssh(cluster, node.name, "docker ps -aq").strip() == ""
        names = ssh(cluster, node.name, "ps -eo comm").split()
        assert not [n for n in names if n in ("raylet", "gcs_server") or n.startswith(("ray::", "vllm"))], names
        assert ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"
    assert rollout.executor.state["resources"] == {}
