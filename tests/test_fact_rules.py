"""The node-fact rules' branches the sample-based tests do not reach (issue
24, found by branch coverage): each rule of check_node / check_cluster on a
node that breaks only that rule, the helpers' edge cases, and raise_first's
one-message form. Facts are built in memory; test_facts_samples.py runs the
same rules on real tool output."""
from __future__ import annotations

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.facts import (
    DeviceFacts,
    NodeFacts,
    _subnet,
    check_cluster,
    check_node,
    check_super_pod_facts,
    parse_preflight,
    raise_first,
    split_sections,
    super_pods_of,
)
from ascend_inference.hardware import PROFILES
from tests.test_policy_values import healthy_device, node_facts

pytestmark = pytest.mark.pure

A2 = PROFILES["atlas-800i-a2"]
A3 = PROFILES["atlas-800i-a3"]


def errors_of(facts: NodeFacts, **overrides) -> list[str]:
    args = {"devices": 8, "tls_policy": "disabled", "declared_ips": None, "expected_hostname": "host0",
            "model_path": "/data/model", "profile": A2, **overrides}
    return [str(e) for e in check_node(facts, **args)]


def test_a_healthy_node_has_no_error():
    assert errors_of(node_facts()) == []


def test_no_npu_listed():
    facts = node_facts()
    facts.npus = []
    assert errors_of(facts) == ["node node0: npu-smi info: no NPU listed "
                                "(fix: check the driver: `npu-smi info` must list the NPUs)"]


def test_more_npus_listed_than_needed_but_too_few_healthy_names_only_the_unhealthy():
    # 9 listed for a stack that needs 8, 2 of them in Alarm: 7 healthy, and none missing (not "-1 missing").
    facts = node_facts()
    facts.npus = [{"npu": i, "chip": 0, "name": "910B2", "health": "Alarm" if i in (3, 5) else "OK"}
                  for i in range(9)]
    assert [e for e in errors_of(facts) if "npu-smi info" in e] == [
        "node node0: npu-smi info: 7 healthy NPUs, the stack needs 8 (NPU 3 Alarm, NPU 5 Alarm) (fix: replace or "
        "reset the NPU (`npu-smi info -t health -i N`), or fix the hardware profile)"]


def test_another_hostname():
    assert errors_of(node_facts(), expected_hostname="host9") == [
        "node node0: hostname: is 'host0', the stack expects 'host9' "
        "(fix: run `hostname host9` on the node or update nodes[].hostname)"]
    assert errors_of(node_facts(), expected_hostname=None) == []


def test_a_hostname_that_sorts_after_the_expected_one_is_named_too():
    assert errors_of(node_facts(), expected_hostname="host") == [
        "node node0: hostname: is 'host0', the stack expects 'host' "
        "(fix: run `hostname host` on the node or update nodes[].hostname)"]


def test_more_healthy_npus_than_the_stack_needs_is_no_error():
    facts = node_facts()
    facts.npus = [{"npu": i, "chip": 0, "name": "910B2", "health": "OK"} for i in range(16)]
    assert errors_of(facts) == []


def test_one_npu_missing_is_named():
    facts = node_facts()
    facts.npus = facts.npus[:7]
    assert [e for e in errors_of(facts) if "npu-smi info" in e] == [
        "node node0: npu-smi info: 7 healthy NPUs, the stack needs 8 (1 missing) (fix: replace or "
        "reset the NPU (`npu-smi info -t health -i N`), or fix the hardware profile)"]


def test_a_device_ip_found_above_the_declared_one_is_named_too():
    declared = [f"10.0.0.{10 + i}" for i in range(8)]
    declared[4] = "10.0.0.1"  # below the found 10.0.0.14
    assert errors_of(node_facts(), declared_ips=declared) == [
        "node node0: device 4 ip: is 10.0.0.14, the stack declares 10.0.0.1 "
        "(fix: fix nodes[].device_ips[4] or the NPU's address)"]


def test_more_chips_per_npu_than_the_profile_has_is_refused():
    # Two chips under each NPU id (as an A3 lists its dies) on a profile of one chip per NPU.
    facts = node_facts()
    facts.npus = [{"npu": i, "chip": c, "name": "910B2", "health": "OK"} for i in range(8) for c in range(2)]
    odd = ", ".join(f"NPU {i} lists 2" for i in range(8))
    assert errors_of(facts) == [
        f"node node0: npu-smi info: {odd} chip(s), hardware.profile atlas-800i-a2 has 1 per NPU (fix: set "
        "hardware.profile to these servers' model (chips per NPU differ between models), or reseat/replace the card)"]


@pytest.mark.parametrize(("link", "shown"), [("DOWN", "DOWN"), (None, "unknown")])
def test_a_link_not_up(link, shown):
    facts = node_facts()
    facts.devices[2] = healthy_device(2, link=link)
    assert errors_of(facts) == [f"node node0: device 2 link: is {shown} "
                                "(fix: check the cable/optics (`hccn_tool -i 2 -link -g`))"]


def test_missing_weights():
    facts = node_facts()
    facts.model_present = False
    assert errors_of(facts) == ["node node0: model path: /data/model does not exist "
                                "(fix: copy the weights to the same path on every node)"]
    facts.model_present = None  # not looked at: no verdict
    assert errors_of(facts) == []


@pytest.mark.parametrize(("printed", "present"), [("present", True), ("absent", False), ("", None)])
def test_the_model_path_section_is_read_as_present_absent_or_not_looked_at(printed, present):
    # What the preflight prints for the model path: `echo present` or `echo absent` (preflight.sh.j2).
    text = f"### hostname\nhost0\n### model-path\n{printed}\n### end\n"
    assert parse_preflight("node0", text, 0).model_present is present


def test_sections_before_the_first_header_are_ignored():
    assert split_sections("noise\n### a\none\n\n### b\ntwo\n") == {"a": "one", "b": "two"}


def test_facts_to_json_keep_every_field():
    facts = node_facts()
    data = facts.to_json()
    assert data["node"] == "node0" and data["devices"][3]["ip"] == "10.0.0.13" and data["model_present"] is True


def test_an_a3_node_without_spod_info_is_named_per_die_and_nothing_else_is_compared():
    facts = NodeFacts(node="node0", devices=[DeviceFacts(i) for i in range(2)])
    errors = [str(e) for e in check_super_pod_facts(facts, A3)]
    assert len(errors) == 2 and errors[1].startswith(
        "node node0: device 1 spod-info: `npu-smi info -t spod-info -i 0 -c 1` printed no SDID")
    assert super_pods_of([facts]) is None


@pytest.mark.parametrize(("ip", "netmask"), [(None, "255.255.255.0"), ("10.0.0.1", None), ("10.0.0.1", "garbage")])
def test_no_subnet_without_a_valid_address_and_netmask(ip, netmask):
    assert _subnet(DeviceFacts(0, ip=ip, netmask=netmask)) is None


def second_node(**device_changes) -> NodeFacts:
    return numbered_node(1, **device_changes)


def numbered_node(number: int, **device_changes) -> NodeFacts:
    """node_facts() as node N: its own name, hostname and device IPs."""
    other = node_facts(**device_changes)
    other.node, other.hostname = f"node{number}", f"host{number}"
    for d in other.devices:
        d.ip = f"10.0.{number}.{d.index}"
    return other


def test_two_nodes_with_one_hostname():
    one, other = node_facts(), second_node()
    other.hostname = "host0"
    assert [str(e) for e in check_cluster([one, other])] == [
        "node node1: hostname: 'host0' is also the hostname of node0 (fix: Ray needs distinct hostnames: "
        "`hostname <new-name>` on one of them (runbook 000))"]


def test_versions_differ_and_one_is_unreadable():
    one, other, third = node_facts(), second_node(), numbered_node(2)
    one.driver_version, other.driver_version, third.driver_version = "24.1.0", "23.0.7", None
    errors = [str(e) for e in check_cluster([one, other, third])]
    assert errors == [
        "node node2: driver version: cannot be read (its version file is missing), node0 has 24.1.0 "
        "(fix: install the same version on every node)",
        "node node1: driver version: is 23.0.7, node0 has 24.1.0 (fix: install the same version on every node)"]


def test_devices_without_an_ip_are_not_duplicates():
    one, other = node_facts(ip=None), second_node()
    for d in other.devices:
        d.ip = None
    assert check_cluster([one, other]) == []


def test_raise_first_raises_nothing_for_no_error_the_error_itself_for_one_all_for_many():
    raise_first([])
    one = NodeFactError("node0", "hostname", "is 'a'", "fix it")
    with pytest.raises(NodeFactError) as raised:
        raise_first([one])
    assert raised.value is one
    two = NodeFactError("node1", "tls", "differs")
    with pytest.raises(NodeFactError) as raised:
        raise_first([one, two])
    assert str(raised.value) == "node node0: hostname: is 'a' (fix: fix it)\nnode node1: tls: differs"
    assert (raised.value.node, raised.value.fact) == ("node0", "hostname")  # what callers match on
    assert (raised.value.node, raised.value.fact) == ("node0", "hostname")


def test_a_version_missing_on_the_first_node_only_is_named_once_not_compared():
    # One version found (on node1), none on node0: node0 is named as unreadable, and node1 is not
    # "is 24.1.0, node0 has None" (the comparison with the first node needs two versions found).
    one, other = node_facts(), second_node()
    one.driver_version, other.driver_version = None, "24.1.0"
    assert [str(e) for e in check_cluster([one, other])] == [
        "node node0: driver version: cannot be read (its version file is missing), node1 has 24.1.0 "
        "(fix: install the same version on every node)"]


def test_equal_versions_read_off_each_node_are_compared_by_value():
    # Parsed versions are distinct string objects with equal text, as two nodes' version files give:
    # with a third node's version differing, node1 (equal to node0) is not named, node2 is.
    one, other, third = node_facts(), second_node(), numbered_node(2)
    one.driver_version = "".join(["24.1", ".rc2"])
    other.driver_version = "".join(["24.1.", "rc2"])
    third.driver_version = "23.0.7"
    assert one.driver_version is not other.driver_version
    assert [str(e) for e in check_cluster([one, other, third])] == [
        "node node2: driver version: is 23.0.7, node0 has 24.1.rc2 (fix: install the same version on every node)"]


def test_nodes_without_fabric_devices_have_no_tls_switches_to_differ():
    # A profile without a fabric (the 300I Duo) reads no device sections: no switch on any node.
    one, other = node_facts(), second_node()
    one.devices, other.devices = [], []
    assert check_cluster([one, other]) == []
    assert check_cluster([]) == []
