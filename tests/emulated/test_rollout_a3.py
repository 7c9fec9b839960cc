"""Atlas A3 on the emulated cluster: two nodes whose stand-ins print the A3
shapes (16 dies, two per NPU, `npu-smi info -t spod-info` per die), stack
tp32-a3-mindie rolled out for real by the real `pulumi` CLI
(emulator/userpath.py PulumiRollout), its rank table 1.2 carrying the SDIDs the
nodes print, a second up that redoes nothing but the node checks, a server
index shared by two servers stopping the rollout before anything starts, and
a clean teardown."""
from __future__ import annotations

import contextlib
import json

import pytest

from ascend_inference.facts import DeviceFacts, parse_npu_smi_info, parse_spod_info, sdid_fields
from emulator import Cluster
from emulator.nodefs import A3_HARDWARE, Hardware
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import changed, fresh_state_dir, node_ssh, require_prerequisites

pytestmark = pytest.mark.emulated

STACK = "tp32-a3-mindie"
TABLE = "/data/hm/hccl_2s_32p.json"
# What runs again at every `up`: the node checks and the image checks.
# MindIE starts a daemon on every node: each has the engine's liveness check too.
CHECKS = {f"node{i}-{step}" for i in (0, 1) for step in ("preflight", "peer-ping", "image-check", "serve-alive")}

ssh = node_ssh


@contextlib.contextmanager
def a3_cluster():
    require_prerequisites()
    state = fresh_state_dir("rollout-a3")
    c = Cluster.up(2, state, log=lambda m: None, prefix="pta3", subnet=245, hardware=Hardware(**A3_HARDWARE))
    try:
        yield c
    finally:
        assert not Cluster.down_state_dir(state, log=print)


@pytest.fixture(scope="module")
def cluster():
    with a3_cluster() as c:
        yield c


def spod(cluster, node: str, die: int) -> DeviceFacts:
    printed = ssh(cluster, node, f"npu-smi info -t spod-info -i {die // 2} -c {die % 2}")
    return parse_spod_info(DeviceFacts(die), printed)


def test_a3_standins(cluster):
    rows = parse_npu_smi_info(ssh(cluster, "node1", "npu-smi info"))
    assert [(r["npu"], r["chip"]) for r in rows] == [(n, c) for n in range(8) for c in range(2)]
    assert {r["name"] for r in rows} == {"Ascend910"}
    die = spod(cluster, "node1", 15)
    assert (die.super_pod_id, die.server_index) == (0, 1)
    assert die.sdid is not None
    assert sdid_fields(die.sdid) == {"server_index": 1, "chip": 7, "die": 1, "device": 15}
    assert ssh(cluster, "node1", "hccn_tool -i 15 -ip -g").startswith(f"ipaddr:{cluster.nodes[1].device_ips[15]}")
    assert ssh(cluster, "node1", "ls /dev | grep -c '^davinci[0-9]'").strip() == "16"


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack selected and configured for the cluster; destroyed when the module ends."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("a3"), log=print)
    try:
        yield rollout
    finally:
        rollout.destroy()


@pytest.fixture(scope="module")
def rolled_out(cluster, rollout):
    try:
        yield rollout, rollout.up()
    finally:
        assert rollout.destroy().error is None
        container = rollout.base.spec.container.name
        for node in cluster.nodes:
            assert ssh(cluster, node.name, f"docker ps -aq --filter name={container}").strip() == ""
            assert ssh(cluster, node.name, f"test -e {TABLE} && echo left || echo gone").strip() == "gone"


def test_a3_stack_rolls_out_with_a_1_2_rank_table(cluster, rolled_out):
    rollout, report = rolled_out
    assert report.error is None, report.error
    assert {"node0-serve", "node1-serve", "serving-ready", "smoke-test-request"} <= set(report.did("create"))
    tables = set()
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"stat -c %a {TABLE}").strip() == "640"
        tables.add(ssh(cluster, node.name, f"cat {TABLE}"))
    assert len(tables) == 1
    table = json.loads(tables.pop())
    assert table["version"] == "1.2" and table["server_count"] == "2"
    assert table["super_pod_list"] == [{"super_pod_id": "0",
                                        "server_list": [{"server_id": n.address} for n in cluster.nodes]}]
    for i, (node, server) in enumerate(zip(cluster.nodes, table["server_list"], strict=True)):
        assert server["server_id"] == server["host_ip"] == node.address
        assert [d["device_ip"] for d in server["device"]] == list(node.device_ips)
        # Each die's super_device_id is the SDID that node's npu-smi prints for it.
        for die in (0, 7, 15):
            assert server["device"][die]["super_device_id"] == str(spod(cluster, node.name, die).sdid)
        assert [d["rank_id"] for d in server["device"]] == [str(i * 16 + d) for d in range(16)]
    container = rollout.base.spec.container.name
    info = json.loads(ssh(cluster, "node0", f"docker inspect {container}"))[0]
    devices = {d["PathOnHost"] for d in info["HostConfig"]["Devices"]}
    assert {f"/dev/davinci{i}" for i in range(16)} <= devices


def test_a3_second_up_repeats_only_the_node_checks(rolled_out):
    rollout, _ = rolled_out
    report = rollout.up([], "--expect-no-changes")
    assert report.error is None, report.output[-3000:]
    # The node checks run again (invokes, never a change); no resource changes
    # (the TLS fix runs when created or changed, not at every up).
    assert set(report.checks) == CHECKS
    assert changed(report) == set()


def test_a3_duplicate_server_index_stops_before_anything_starts(cluster, rollout):
    """An `up` from nothing (the rolled-out stack destroyed first; it runs last)."""
    assert rollout.destroy().error is None
    cluster.set_fault("node1", server_index=0)
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
    message = str(report.error)
    assert "node node1: device 0 spod-info: SDID 0 in super pod 0 is also node0 device 0" in message, message
    assert "Server ID" in message
    started = set(report.did("create"))
    assert not started & {"node0-container", "node1-container", "node0-serve", "rank-table"}, started
