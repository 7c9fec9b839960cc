"""Injected node faults stop a real rollout before serving, with one message
naming node and cause; MindIE's rank table and a clean teardown on the
emulated cluster. (Kept apart from test_rollout.py: these tests roll the same
stacks out and tear them down, and must not share nodes with its long-lived
rollout.)"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ascend_inference.errors import NodeFactError
from components.common import NodeCheckRunError
from emulator.executor import StepFailed
from emulator.rollout import StackRollout
from tests.conftest import temp_files_holding
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-faults", prefix="ptfault", subnet=242) as c:
        yield c


ssh = node_ssh


def test_a_container_left_by_a_manual_run_is_named_not_a_docker_error(cluster, tmp_path):
    from emulator.executor import RUNTIME_IMAGE

    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    name = rollout.base.spec.container.name
    ssh(cluster, "node1", f"docker create --name {name} {RUNTIME_IMAGE} true >/dev/null")
    try:
        report = rollout.up()
    finally:
        rollout.destroy()
        ssh(cluster, "node1", f"docker rm -f {name} >/dev/null")
    message = str(report.error)
    assert f"node node1: a container named {name} ({RUNTIME_IMAGE}) exists that stack {STACK} did not create" in message
    assert f"fix: remove it with `docker rm -f {name}` on node1" in message
    assert "node1-container" not in {a.resource for a in report.actions}


# --- faults ---------------------------------------------------------------

FAULTS = [
    # (fault on node1, words the message must contain)
    ({"link_down": [3]}, ["node1", "device 3 link", "DOWN"]),
    ({"tls_on": [2]}, ["node1", "device 2 tls", "switch is 1"]),
    ({"net_health_fail": [5]}, ["node1", "device 5 net_health", "Fault"]),
    ({"unhealthy_devices": [4]}, ["node1", "npu-smi info", "7 healthy NPUs"]),
    ({"missing_devices": [7]}, ["node1", "npu-smi info", "1 missing"]),
    ({"driver_version": "23.0.6"}, ["node1", "driver version", "23.0.6"]),
    # node1 cannot send to node0's device 0, so node0's ping from that device
    # gets no reply either: whichever ping fails first is named (a tuple: any of).
    ({"unreachable": ["198.19.0.1"]}, ["node1", "device 0", "node0", ("198.19.0.1", "198.19.1.1")]),
    ({"stale_rootinfo": True}, ["node1", "/etc/hccl_rootinfo.json"]),
    ({"missing_model": True}, ["node1", "model path"]),
    ({"model_file_differs": True}, ["node1", "model weights"]),
    ({"hostname": "ascend-node0"}, ["node1", "hostname", "ascend-node0"]),
    ({"wrong_device_ip": {"6": "198.19.9.9"}}, ["node1", "device 6 ip", "198.19.9.9"]),
    ({"lldp_missing": [3]}, ["node node1: device 3 lldp: no neighbour", "network.lldp: warn"]),
    ({"netdetect_fail": [4]}, ["node node1: device 4 netdetect: no netdetect address",
                               "node node1: device 4 net_health: is Init"]),
    ({"gateway_unreachable": True}, ["node node1: device 0 gateway: 198.19.255.254 does not answer",
                                     "100.00% packet loss"]),
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
    # A fact judged wrong (NodeFactError), a node check whose script failed on
    # the node (a ping: NodeCheckRunError, the script's lines first) or a step.
    assert isinstance(report.error, (NodeFactError, NodeCheckRunError, StepFailed)), report.error
    message = str(report.error)
    for word in words:
        options = word if isinstance(word, tuple) else (word,)
        assert any(option in message for option in options), f"{word!r} not in {message!r}"
    assert "Traceback" not in message
    started = {a.resource for a in report.actions}
    assert not started & {"node0-serve", "node0-container", "node1-container", "node0-ray-head"}, started
    # How fast is measured by benchmarks/rollout.py --faults; printed here for the log.
    print(f"time to detect {next(iter(fault))}: {detected:.1f} s (runbooks: HCCL_CONNECT_TIMEOUT=7200 s)")


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
        assert ssh(cluster, node.name, "find /etc/ascend-inference 2>/dev/null || true").strip() == ""


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
    # The engine dies while "loading" (it would listen only after 600 s): with
    # a crash alone, an engine that got to listen first could answer the
    # readiness check and the smoke test in the second before it died.
    cluster.set_fault("node0", engine_crash_after=1, engine_ready_delay=600)
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
    # The SSH key the program's commands carry is written for `ssh -i` only inside the state's dir.
    key_files = {e["key_file"] for e in rollout.executor.state["resources"].values() if e.get("key_file")}
    assert key_files and all(tmp_path in Path(f).parents for f in key_files), key_files
    report = rollout.destroy()
    assert report.error is None
    assert not rollout.executor.key_dir.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    for node in cluster.nodes:
        assert ssh(cluster, node.name, "docker ps -aq").strip() == ""
        names = ssh(cluster, node.name, "ps -eo comm").split()
        assert not [n for n in names if n in ("raylet", "gcs_server") or n.startswith(("ray::", "vllm"))], names
        assert ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"
    assert rollout.executor.state["resources"] == {}
    assert temp_files_holding(cluster.ssh_key_path.read_text()) == []

