"""Every value of the node-fact policies judged (issue 24): each HCCL TLS
policy against each switch a device can report, and each `require | warn |
ignore` of network.lldp / netdetect / gateway against a device failing that
check, on facts built in memory (the parser's own tests read real tool
output: test_facts_samples.py, test_profile_network.py)."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from ascend_inference.facts import DeviceFacts, NetworkPolicies, NodeFacts, check_cluster, check_network, check_node
from ascend_inference.hardware import PROFILES
from ascend_inference.spec import Network, NetworkPolicy

pytestmark = pytest.mark.pure

A2 = PROFILES["atlas-800i-a2"]
DUO = PROFILES["atlas-300i-duo"]
TLS_POLICIES = typing.get_args(Network.model_fields["hccl_tls"].annotation)
POLICIES = typing.get_args(NetworkPolicy)


def healthy_device(index: int, **changes) -> DeviceFacts:
    fields = {"ip": f"10.0.0.{10 + index}", "netmask": "255.255.255.0", "link": "UP", "net_health": "Success",
              "tls_switch": 0, "lldp_ifname": f"400GE1/1/{index}", "netdetect": "10.0.0.1", "gateway": "10.0.0.1",
              "gateway_ping": "3 packets transmitted, 3 received, 0.00% packet loss"}
    return DeviceFacts(index, **{**fields, **changes})


def node_facts(**device_changes) -> NodeFacts:
    return NodeFacts(node="node0", hostname="host0",
                     npus=[{"npu": i, "chip": 0, "name": "910B2", "health": "OK"} for i in range(8)],
                     devices=[healthy_device(i, **device_changes) for i in range(8)], model_present=True)


def node_errors(facts: NodeFacts, tls_policy: str) -> list[str]:
    return [str(e) for e in check_node(facts, devices=8, tls_policy=tls_policy, declared_ips=None,
                                       expected_hostname="host0", model_path="/data/model", profile=A2)]


def test_the_policies_tested_here_are_all_the_spec_allows():
    assert set(TLS_POLICIES) == {"disabled", "enabled"}
    assert set(POLICIES) == {"require", "warn", "ignore"}


@pytest.mark.parametrize("policy", TLS_POLICIES)
@pytest.mark.parametrize("switch", [0, 1])
def test_each_tls_policy_against_each_switch(policy, switch):
    errors = node_errors(node_facts(tls_switch=switch), policy)
    wanted = 1 if policy == "enabled" else 0
    if switch == wanted:
        assert errors == []
    else:
        assert len(errors) == 8
        assert errors[3] == (f"node node0: device 3 tls: switch is {switch}, the stack's policy is {policy} "
                             "(fix: set network.fix_tls: true (runs `hccn_tool -i N -tls -s enable 0`) "
                             "or change network.hccl_tls)")


@pytest.mark.parametrize("policy", TLS_POLICIES)
def test_a_device_that_printed_no_tls_switch_is_not_judged(policy):
    assert node_errors(node_facts(tls_switch=None), policy) == []


@pytest.mark.parametrize("policy", TLS_POLICIES)
def test_a_profile_without_a_tls_switch_never_judges_it(policy):
    facts = NodeFacts(node="node0", hostname="host0", model_present=True,
                      npus=[{"npu": i // 2, "chip": i % 2, "name": "310P3", "health": "OK"} for i in range(8)])
    assert check_node(facts, devices=8, tls_policy=policy, declared_ips=None, expected_hostname=None,
                      model_path="/data/model", profile=DUO) == []


def test_switches_that_differ_between_nodes_are_one_cluster_error():
    one, other = node_facts(tls_switch=1), node_facts(tls_switch=0)
    other.node, other.hostname = "node1", "host1"
    for d in other.devices:
        d.ip = f"10.0.1.{d.index}"
    errors = [str(e) for e in check_cluster([one, other])]
    assert errors == ["node node0,node1: tls: TLS switches differ across nodes: {'node0': {1}, 'node1': {0}} "
                      "(fix: set network.fix_tls: true or align `hccn_tool -tls` on every node)"]


# One broken device fact per network check, and the message it gives.
BROKEN = {
    "lldp": ({"lldp_ifname": None}, "node node0: device 0 lldp: no neighbour"),
    "netdetect": ({"netdetect": None}, "node node0: device 0 netdetect: no netdetect address"),
    "gateway": ({"gateway_ping": "3 packets transmitted, 0 received, 100.00% packet loss"},
                "node node0: device 0 gateway: 10.0.0.1 does not answer the device's ping"),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("check", sorted(BROKEN))
def test_each_network_policy_on_each_check(check, policy):
    changes, message = BROKEN[check]
    policies = NetworkPolicies(**{check: policy})
    errors, warnings = check_network(node_facts(**changes), A2, policies)
    judged = {"require": errors, "warn": warnings, "ignore": []}[policy]
    other = warnings if policy == "require" else errors
    assert len(judged) == (8 if policy != "ignore" else 0)
    if judged:
        assert str(judged[0]).startswith(message)
    assert other == []
    if policy == "ignore":
        assert errors == warnings == []


@pytest.mark.parametrize("policy", POLICIES)
def test_a_gateway_outside_the_subnet_follows_the_gateway_policy(policy):
    errors, warnings = check_network(node_facts(gateway="10.9.9.1"), A2, NetworkPolicies(gateway=policy))
    judged = {"require": errors, "warn": warnings, "ignore": []}[policy]
    assert [str(e) for e in judged][:1] == (
        [] if policy == "ignore" else
        ["node node0: device 0 gateway: 10.9.9.1 is outside the device's subnet 10.0.0.0/24 "
         "(fix: fix gateway_0 or netmask_0 in /etc/hccn.conf)"])


def test_under_gateway_ignore_an_unanswered_ping_is_not_even_found():
    # The preflight under `ignore` runs no ping (test_profile_network.py); a ping line, if any, is not judged.
    facts = node_facts(gateway_ping="3 packets transmitted, 0 received, 100.00% packet loss")
    assert check_network(facts, A2, NetworkPolicies(gateway="ignore")) == ([], [])
    assert check_network(node_facts(gateway_ping=None), A2, NetworkPolicies()) == ([], [])


@pytest.mark.parametrize("policy", POLICIES)
def test_a_profile_without_a_fabric_judges_nothing_under_any_policy(policy):
    facts = NodeFacts(node="node0", devices=[DeviceFacts(0)])
    assert check_network(facts, DUO, NetworkPolicies(lldp=policy, netdetect=policy, gateway=policy)) == ([], [])


# Found by mutation testing of check_network (tools/mutation.py, docs/testing.md): each test below
# fails with the mutant it names applied.

@pytest.mark.parametrize("check", ["netdetect", "gateway"])
def test_an_address_that_is_no_ip_is_judged_like_none(check):
    # The parser takes `[0-9a-fA-F.:]+` after the label, so a cut-off address comes through as text
    # (`or` -> `and` in the check let it pass).
    errors, warnings = check_network(node_facts(**{check: "10.0.0"}), A2, NetworkPolicies())
    assert [e.fact for e in errors] == [f"device {i} {check}" for i in range(8)] and warnings == []
    assert str(errors[0]).startswith(f"node node0: device 0 {check}: no ")


def test_a_profile_without_the_gateway_check_still_judges_every_devices_lldp_and_netdetect():
    # The gateway's `continue` -> `break` stopped at the first device.
    no_gateway = dataclasses.replace(A2, network=dataclasses.replace(A2.network, gateway=False))
    errors, _ = check_network(node_facts(lldp_ifname=None, netdetect=None, gateway=None), no_gateway,
                              NetworkPolicies())
    assert sorted(e.fact for e in errors) == sorted(
        [f"device {i} lldp" for i in range(8)] + [f"device {i} netdetect" for i in range(8)])
