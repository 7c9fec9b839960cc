"""Graph tier, Atlas A3: the program under the SDK's mocks, with each node's
mocked preflight printing A3 shapes (ascendctl/preview/facts.py). The gate
records the SDIDs, the rank table installed on every node is version 1.2
with those SDIDs, and a super-pod contradiction in a node's facts stops the
program with one NodeFactError naming the node and the die."""
from __future__ import annotations

import json
import re

import pytest

from ascend_inference.errors import NodeFactError
from ascendctl.preview.stack import record_stack
from tests.step_script import step_script
from tests.test_graph_errors import in_section, loaded, patched_preflight
from tests.test_graph_stacks import named

pytestmark = pytest.mark.graph

STACK = "tp32-a3-mindie"


def gate_record(stack: str) -> dict:
    gate = named(record_stack(loaded(stack)), "cluster-verified")
    return json.loads(gate.inputs["triggers"][-1])


def test_the_gate_records_each_dies_sdid():
    record = gate_record(STACK)
    spec = loaded(STACK).spec
    assert sorted(record["super_pods"]) == [n.name for n in spec.nodes]
    node1 = record["super_pods"]["node1"]
    assert node1["super_pod_id"] == "0"
    # The mocked node1 is server index 1: SDID = 1 << 22 | NPU << 18 | chip << 16 | die.
    assert node1["super_device_ids"][15] == str((1 << 22) | (7 << 18) | (1 << 16) | 15)


def test_the_installed_table_is_1_2_with_the_recorded_sdids():
    g = record_stack(loaded(STACK))
    record = json.loads(named(g, "cluster-verified").inputs["triggers"][-1])
    script = step_script(named(g, "node1-rank-table").inputs)
    # The install script's heredoc (templates/install-file.sh.j2) holds the table.
    body = re.search(r"<<'(\w+)'\n(.*?)\1\n", script, re.DOTALL)
    assert body is not None, script[:400]
    table = json.loads(body.group(2))
    assert table["version"] == "1.2"
    for server, node in zip(table["server_list"], loaded(STACK).spec.nodes, strict=True):
        assert [d["super_device_id"] for d in server["device"]] == record["super_pods"][node.name]["super_device_ids"]


def test_a2_stacks_record_no_super_pods():
    # The gate's record of an A2 stack: no super_pods key (the images are recorded on every stack).
    assert set(gate_record("tp16-mindie")) == {"device_ips", "weights_fingerprint", "images"}


def test_a_die_without_spod_info_stops_the_program(monkeypatch):
    answer = "This device does not support querying spod-info."
    patched_preflight(monkeypatch, "node1", lambda text: _replace_section(text, "device 5 spod", answer))
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(STACK))
    assert (info.value.node, info.value.fact) == ("node1", "device 5 spod-info")
    assert "`npu-smi info -t spod-info -i 2 -c 1` printed no SDID" in str(info.value)


def test_two_servers_with_one_server_index_stop_at_the_gate(monkeypatch):
    def as_server_0(text: str) -> str:
        # node1's dies as node0's: Server Index 0 and the SDIDs that go with it.
        for die in range(16):
            npu, chip = divmod(die, 2)
            text = in_section(f"device {die} spod", str((1 << 22) | (npu << 18) | (chip << 16) | die),
                              str((npu << 18) | (chip << 16) | die))(text)
            text = in_section(f"device {die} spod", "Server Index                   : 1",
                              "Server Index                   : 0")(text)
        return text

    patched_preflight(monkeypatch, "node1", as_server_0)
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(STACK))
    first = str(info.value).splitlines()[0]
    assert first.startswith("node node1: device 0 spod-info: SDID 0 in super pod 0 is also node0 device 0"), first


def _replace_section(text: str, section: str, body: str) -> str:
    head, marker, tail = text.partition(f"### {section}\n")
    assert marker, section
    _, _, rest = tail.partition("\n### ")
    return head + marker + body + "\n### " + rest


def mocked_table() -> dict:
    """The table the program makes from the mocked nodes' facts."""
    from ascend_inference.facts import parse_preflight, super_pods_of
    from ascend_inference.render import declared_device_ips, rank_table
    from ascendctl.preview.facts import synthetic_preflight

    ld = loaded(STACK)
    pods = super_pods_of([parse_preflight(n.name, synthetic_preflight(ld, n.name), 16) for n in ld.spec.nodes])
    table = rank_table(ld, declared_device_ips(ld), pods)
    assert table is not None
    return table


def test_a_brought_1_2_table_with_the_found_sdids_is_installed(tmp_path):
    from ascend_inference.stackfile import load_stack
    from tests.test_brought_rank_table import stack_using
    from tests.test_brought_rank_table_program import installed_table

    table = mocked_table()
    brought = load_stack(str(stack_using(tmp_path, STACK, table)))
    g = record_stack(brought, brought.raw_config)
    assert installed_table(step_script(named(g, "node1-rank-table").inputs)) == table


def test_a_brought_table_with_another_sdid_stops_the_program(tmp_path):
    from ascend_inference.stackfile import load_stack
    from tests.test_brought_rank_table import stack_using

    table = mocked_table()
    table["server_list"][1]["device"][4]["super_device_id"] = "999"  # unique, so HCCL's own rules pass
    brought = load_stack(str(stack_using(tmp_path, STACK, table)))
    with pytest.raises(NodeFactError) as info:
        record_stack(brought, brought.raw_config)
    assert ("server_list[1].device[4].super_device_id" in str(info.value)
            and "has super_device_id 999, but preflight found SDID " in str(info.value)), str(info.value)
