"""Runbook 003's stack (`tp8-pp2-300iduo`) rolled out by the real `pulumi` CLI
(emulator/userpath.py PulumiRollout) on emulated Atlas 300I Duo nodes: 4 cards
x 2 310P3 chips each (npu-smi in the 310P3 layout), no RoCE fabric (no
hccn_tool, no /etc/hccn.conf). The rollout runs no fabric check: no hccn_tool
call in preflight, no peer pings; Ray, vLLM-MindSpore (the emulator's stand-in
engine) and the smoke test run as on the A2."""
from __future__ import annotations

import json

import pytest

from emulator.nodefs import atlas_300i_duo
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import changed, node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp8-pp2-300iduo"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-300iduo", prefix="ptduo", subnet=236, hardware=atlas_300i_duo()) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack selected and configured for the cluster; destroyed when the module ends."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("300iduo"), log=print)
    try:
        yield rollout
    finally:
        rollout.destroy()


def test_the_nodes_are_300i_duo_servers_without_a_fabric(cluster):
    for node in cluster.nodes:
        info = node_ssh(cluster, node.name, "npu-smi info")
        assert info.count("310P3") == 8 and "| Chip    Device" in info
        assert node_ssh(cluster, node.name, "command -v hccn_tool || echo absent; "
                                            "test -e /etc/hccn.conf && echo conf || echo no-conf").split() == [
            "absent", "no-conf"]


def test_runbook_003_rolls_out_with_no_fabric_checks(cluster, rollout):
    report = rollout.up()
    assert report.error is None, report.error
    created = set(report.did("create"))
    assert {"node0-preflight", "node1-preflight"} <= set(report.checks)
    assert {"cluster-verified", "ray-verify", "serving-ready", "smoke-test-request"} <= created
    assert not [r for r in {*created, *report.checks} if r.endswith("-peer-ping") or r.endswith("-fix-tls")]
    # What preflight read, as the stack exports it: the nodes, and no fabric (no device IP).
    facts = json.loads(rollout.ok("stack", "output", "node_facts", "--json"))
    for node in cluster.nodes:
        assert facts[node.name]["hostname"] == node.hostname and not facts[node.name]["device_ips"], facts
    # A second `up` changes nothing; the node checks run again.
    again = rollout.up([], "--expect-no-changes")
    assert again.error is None, again.output[-3000:]
    assert changed(again) == set()
    assert {"node0-preflight", "node1-preflight"} <= set(again.checks)
    gone = rollout.destroy()
    assert gone.error is None, gone.error
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        assert node_ssh(cluster, node.name, f"docker ps -aq --filter name={container}").strip() == ""


def test_a_300i_pro_node_is_refused_by_its_chip_count(cluster, rollout):
    """One chip missing from a card (what a 300I Pro card, or a dead chip,
    looks like) stops the rollout at preflight with one line."""
    cluster.set_fault("node1", missing_devices=[5])
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
    message = str(report.error)
    assert "node node1: npu-smi info: NPU 2 lists 1 chip(s), hardware.profile atlas-300i-duo has 2 per NPU" \
        in message, message
    assert "node node1: npu-smi info: 7 healthy NPUs, the stack needs 8 (1 missing)" in message
    assert not changed(report) & {"node0-container", "node1-container", "node0-serve"}, report.changed()
