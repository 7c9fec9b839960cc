"""Graph tier: the hardware profile's network checks in the program's graph.

A 300I Duo stack (runbook 003, no RoCE fabric) registers no peer pings and
no TLS fix, and its preflight calls no hccn_tool; an A2 stack keeps them.
lldp, netdetect and gateway faults injected into the mocked preflight stop
the program per the stack's policy (`require`) or only warn (`warn`).
"""
from __future__ import annotations

import copy

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.test_graph_errors import in_section, patched_preflight

pytestmark = pytest.mark.graph

NS = "ascend-inference:"
CMD = "command:remote:Command"


def test_300i_duo_stack_has_no_fabric_steps():
    stack = load_stack("tp8-pp2-300iduo")
    graph = record_stack(stack)
    names = {r.name for r in graph.of_type(CMD)}
    checks = {c.name for c in graph.checks}
    nodes = [n.name for n in stack.spec.nodes]
    assert {f"{n}-preflight" for n in nodes} <= checks
    assert not [n for n in names | checks if n.endswith("-peer-ping") or n.endswith("-fix-tls")]
    for node in nodes:
        # The node check's script goes to the node on stdin.
        preflight = str(graph.check(f"{node}-preflight").args["stdin"])
        assert preflight.strip()
        assert '"$HCCN_TOOL" -i' not in preflight and "### device" not in preflight
    # The rollout goes on past the gate to serving, with no device IPs recorded.
    assert "cluster-verified" in names and "smoke-test-request" in names
    assert graph.outputs["node_facts"] == {n: {"hostname": f"atlas-300i-duo-{i}", "driver": "24.1.rc3",
                                               "device_ips": []} for i, n in enumerate(nodes)}


def test_a2_stack_keeps_its_fabric_steps():
    graph = record_stack(load_stack("tp16-vllm-mindspore"))
    assert {"node0-peer-ping", "node1-peer-ping"} <= {c.name for c in graph.checks if c.ran}
    preflight = str(graph.check("node0-preflight").args["stdin"])
    assert '"$HCCN_TOOL" -i "$i" -lldp -g' in preflight
    assert '-ping -g address "$gw"' in preflight


@pytest.mark.parametrize("section,old,new,fact,words", [
    ("device 3 lldp", "\tIfname: 400GE1/1/3:1", "", "device 3 lldp", "no neighbour"),
    ("device 4 netdetect", "netdetect address: ", "netdetect: ", "device 4 netdetect", "no netdetect address"),
    ("device 6 gateway_ping", "3 received, 0.00%", "0 received, 100.00%", "device 6 gateway",
     "does not answer the device's ping"),
])
def test_network_fault_stops_the_program(monkeypatch, section, old, new, fact, words):
    stack = "tp16-lmdeploy"
    node = load_stack(stack).spec.nodes[1].name
    patched_preflight(monkeypatch, node, in_section(section, old, new))
    with pytest.raises(NodeFactError) as info:
        record_stack(load_stack(stack))
    assert (info.value.node, info.value.fact) == (node, fact)
    assert words in str(info.value) and info.value.fix


def test_warn_policy_lets_the_program_go_on(monkeypatch):
    loaded = load_stack("tp16-lmdeploy")
    config = copy.deepcopy(loaded.raw_config)
    config[NS + "network"] = {**config.get(NS + "network", {}), "lldp": "warn"}
    node = loaded.spec.nodes[1].name
    patched_preflight(monkeypatch, node, in_section("device 3 lldp", "\tIfname: 400GE1/1/3:1", ""))
    graph = record_stack(loaded_with_config(loaded, config), config)
    assert "smoke-test-request" in {r.name for r in graph.of_type(CMD)}
