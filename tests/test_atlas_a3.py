"""Atlas A3 (800I A3 / 800T A3 / A3 SuperPoD): the profiles, the parser on
the real `npu-smi` samples of A3 servers, the super-pod checks, and the rank
table "1.2" built from preflight facts, compared field by field with CANN's
documented example.

Samples: tests/fixtures/tool-output/a3/ (sources in tests/fixtures/tool-output/README.md);
the A3 `npu-smi info` sample is tests/fixtures/tool-output/npu-smi-info-a3-two-chips-25.2.0.txt.
Where a test needs more dies than a sample shows, it says what it derived
and from which rule.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from ascend_inference.facts import (
    DeviceFacts,
    check_cluster,
    check_node,
    check_super_pods,
    parse_npu_smi_info,
    parse_preflight,
    parse_spod_info,
    sdid_fields,
    super_pods_of,
)
from ascend_inference.hardware import PROFILES
from ascend_inference.ranktable import validate_rank_table
from ascend_inference.render import rank_table, render_node
from ascend_inference.stackfile import load_stack
from tests.conftest import FIXTURES, NS, load_stack_doc, run_cli, write_stack
from tests.test_ranktable import CANN_A3_FIRST_SERVER

pytestmark = pytest.mark.pure

SAMPLES = FIXTURES / "tool-output"
A3_SAMPLES = SAMPLES / "a3"
A3_NPU_SMI = "npu-smi-info-a3-two-chips-25.2.0.txt"
SPOD_DOC = "a3/npu-smi-spod-info-a3-doc-example.txt"
SPOD_NOT_SUPPORTED = "a3/npu-smi-spod-info-not-supported-a2.txt"
A3 = PROFILES["atlas-800i-a3"]
STACK = "tp32-a3-mindie"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def test_every_a3_sample_is_read_here():
    here = Path(__file__).read_text(encoding="utf-8")
    assert sorted(p.name for p in A3_SAMPLES.glob("*.txt") if f"a3/{p.name}" not in here) == []


# --- profiles ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["atlas-800i-a3", "atlas-800t-a3", "atlas-900-a3-superpod"])
def test_a3_profiles(name):
    profile = PROFILES[name]
    # 8 NPUs x 2 dies; every die is a rank, a /dev/davinciN and an hccn_tool device.
    assert (profile.devices_per_node, profile.chips_per_npu, profile.device_memory_gb) == (16, 2, 64)
    assert profile.rank_table_version == "1.2" and profile.spod_info
    assert profile.npu_smi_name_prefix == "Ascend910"


def test_a3_npu_smi_sample_has_two_dies_per_npu_with_64_gb_each():
    rows = parse_npu_smi_info(sample(A3_NPU_SMI))
    assert [(r["npu"], r["chip"], r["name"]) for r in rows] == [
        (0, 0, "Ascend910"), (0, 1, "Ascend910"), (1, 0, "Ascend910"), (1, 1, "Ascend910")]
    # HBM per die as the sample prints it (the profile's 64 GB).
    assert re.findall(r"(\d+)\s*/ (\d+)\s+\|$", sample(A3_NPU_SMI), re.MULTILINE)[1::2] == [
        ("3133", "65536"), ("2876", "65536"), ("3116", "65536"), ("10568", "65536")]


# --- spod-info ---------------------------------------------------------------

def test_spod_info_doc_example_and_the_sdid_layout_agree():
    device = parse_spod_info(DeviceFacts(0), sample(SPOD_DOC))
    assert (device.sdid, device.super_pod_size, device.super_pod_id, device.server_index) == (16777216, 384, 0, 4)
    # The DCMI reference's SDID layout gives back the sample's own Server Index, for die 0.
    assert sdid_fields(device.sdid) == {"server_index": 4, "chip": 0, "die": 0, "device": 0}


def test_spod_info_as_npu_smi_prints_it():
    # npu-smi's own format string for these lines is "\t%-30s : %u" (docs/formats.md §1i).
    printed = "".join(f"\t{k:<30} : {v}\n" for k, v in
                      (("SDID", 16777216), ("Super Pod Size", 384), ("Super Pod ID", 0), ("Server Index", 4)))
    assert parse_spod_info(DeviceFacts(0), printed) == parse_spod_info(DeviceFacts(0), sample(SPOD_DOC))


def test_a2_answer_to_spod_info_leaves_no_sdid():
    device = parse_spod_info(DeviceFacts(0), sample(SPOD_NOT_SUPPORTED))
    assert (device.sdid, device.super_pod_id, device.server_index) == (None, None, None)


# --- a node built from the samples ------------------------------------------

def spod_text(die: int, server_index: int, *, super_pod: int = 0, sdid: int | None = None) -> str:
    """The doc example's four lines for one die. For other dies than the
    example's die 0 of server 4, the SDID is the one the DCMI layout gives
    (server index << 22 | NPU << 18 | chip << 16 | die), the rest as printed."""
    npu, chip = divmod(die, 2)
    value = (server_index << 22) | (npu << 18) | (chip << 16) | die if sdid is None else sdid
    text = sample(SPOD_DOC)
    assert "SDID : 16777216" in text and "Server Index : 4" in text and "Super Pod ID : 0" in text
    return (text.replace("SDID : 16777216", f"SDID : {value}")
            .replace("Server Index : 4", f"Server Index : {server_index}")
            .replace("Super Pod ID : 0", f"Super Pod ID : {super_pod}")).rstrip("\n")


def preflight_a3(node: str, server_index: int, ips: list[str], *, spod: dict[int, str] | None = None) -> str:
    """Preflight output of a 4-die A3 node as templates/preflight.sh.j2 prints
    it, from the samples: the A3 npu-smi sample, the hccn_tool samples of
    tests/fixtures/tool-output (re-addressed), the spod-info doc example."""
    link = sample("hccn-tool-link-up.txt").strip()
    health = sample("hccn-tool-net-health-success.txt").strip()
    tls = sample("hccn-tool-tls-switch-0.txt").strip()
    first_ip = "\n".join(sample("hccn-tool-ip-loop-8-devices-elided.txt").splitlines()[:2])
    out = ["### hostname", f"{node}-host", "### npu-smi-info", sample(A3_NPU_SMI).rstrip("\n"),
           "### driver-version", sample("driver-version-info-24.1.0.txt").rstrip("\n"),
           "### firmware-version", sample("firmware-version-info-7.1.0.11.220.txt").rstrip("\n"),
           "### cann-version", sample("cann-toolkit-install-info-8.0.0.txt").rstrip("\n")]
    for d, ip in enumerate(ips):
        out += [f"### device {d} ip", first_ip.replace("11.12.165.80", ip), f"### device {d} link", link,
                f"### device {d} net_health", health, f"### device {d} tls", tls.replace("dev_id:0,", f"dev_id:{d},")]
    for d in range(len(ips)):
        out += [f"### device {d} spod", (spod or {}).get(d, spod_text(d, server_index))]
    out += ["### hccl-rootinfo", "absent", "### model-path", "present", "### end"]
    return "\n".join(out) + "\n"


FOUR_DIES = replace(A3, devices_per_node=4)  # the sample shows 2 NPUs x 2 dies
IPS = {"node0": [f"192.168.1.{6 + d}" for d in range(4)], "node1": [f"192.168.2.{6 + d}" for d in range(4)]}


def node_errors(stdout: str, node: str = "node0") -> list[str]:
    facts = parse_preflight(node, stdout, 4)
    return [str(e) for e in check_node(facts, devices=4, tls_policy="disabled", declared_ips=None,
                                       expected_hostname=f"{node}-host", model_path="/data/m", profile=FOUR_DIES)]


def test_a3_node_from_samples_passes():
    assert node_errors(preflight_a3("node0", 0, IPS["node0"])) == []


def test_a3_node_without_spod_info_is_refused():
    stdout = preflight_a3("node0", 0, IPS["node0"], spod={2: sample(SPOD_NOT_SUPPORTED).strip()})
    assert node_errors(stdout) == [
        "node node0: device 2 spod-info: `npu-smi info -t spod-info -i 1 -c 0` printed no SDID, which rank table "
        "1.2 needs (hardware.profile atlas-800i-a3) (fix: check the driver on the node (A3 driver and npu-smi), "
        "or set hardware.profile to this server's model)"]


def test_a3_die_with_another_server_index_is_refused():
    # Die 3 reports Server Index 5 while the server's other dies report 0 (a Server ID not set after a swap).
    stdout = preflight_a3("node0", 0, IPS["node0"], spod={3: spod_text(3, 5)})
    errors = node_errors(stdout)
    assert errors[0].startswith("node node0: device 3 spod-info: Server Index is 5, device 0 of the same server has 0")
    assert "Redfish" in errors[0]


def test_a3_die_with_a_lower_server_index_than_the_first_is_refused():
    # Die 3 reports Server Index 0 while the others report 5: "differs", whichever is the greater.
    stdout = preflight_a3("node0", 5, IPS["node0"], spod={3: spod_text(3, 0)})
    assert node_errors(stdout)[0].startswith(
        "node node0: device 3 spod-info: Server Index is 0, device 0 of the same server has 5")


def test_a3_sdid_that_names_another_die_is_refused():
    stdout = preflight_a3("node0", 0, IPS["node0"], spod={1: spod_text(1, 0, sdid=0)})
    assert node_errors(stdout) == [
        "node node0: device 1 spod-info: SDID 0 encodes server index 0 and device 0, but it is device 1 of a "
        "server with Server Index 0 (fix: set the server's Server ID (Server Index) the way its documentation "
        "says (Redfish or Computing Toolkit), then check `npu-smi info -t spod-info -i 0 -c 0`)"]


def test_a3_sdid_that_names_a_later_die_is_refused():
    # Die 1's SDID names device 3 (a later die, not an earlier one as above): the rule is "differs".
    sdid = (0 << 22) | (1 << 18) | (1 << 16) | 3
    stdout = preflight_a3("node0", 0, IPS["node0"], spod={1: spod_text(1, 0, sdid=sdid)})
    assert node_errors(stdout)[0].startswith(
        f"node node0: device 1 spod-info: SDID {sdid} encodes server index 0 and device 3, but it is device 1")


@pytest.mark.parametrize("encoded", [3, 5], ids=["lower", "higher"])
def test_an_sdid_that_encodes_another_server_index_is_refused(encoded):
    # Every die prints Server Index 4; die 1's SDID encodes server index 3, or 5: the rule is
    # "differs", not "is greater" or "is less".
    sdid = (encoded << 22) | (0 << 18) | (1 << 16) | 1
    stdout = preflight_a3("node0", 4, IPS["node0"], spod={1: spod_text(1, 4, sdid=sdid)})
    assert node_errors(stdout) == [
        f"node node0: device 1 spod-info: SDID {sdid} encodes server index {encoded} and device 1, but it is device 1 "
        "of a server with Server Index 4 (fix: set the server's Server ID (Server Index) the way its documentation "
        "says (Redfish or Computing Toolkit), then check `npu-smi info -t spod-info -i 0 -c 0`)"]


def test_a3_second_die_with_another_super_pod_id_is_refused():
    # The die right after the first is compared too (the others agree with die 0).
    stdout = preflight_a3("node0", 0, IPS["node0"], spod={1: spod_text(1, 0, super_pod=1)})
    assert node_errors(stdout) == [
        "node node0: device 1 spod-info: Super Pod ID is 1, device 0 of the same server has 0 (fix: set the "
        "server's Server ID (Server Index) the way its documentation says (Redfish or Computing Toolkit), then "
        "check `npu-smi info -t spod-info -i 0 -c 0`)"]


def test_a3_node_with_super_pod_id_and_server_index_above_256_passes():
    # Each die's values are read apart: equal values above 256 are equal ints, not one object (`!=`, not `is not`).
    spod = {d: spod_text(d, 300, super_pod=700) for d in range(4)}
    assert node_errors(preflight_a3("node0", 300, IPS["node0"], spod=spod)) == []


def test_sdid_fields_read_each_field_from_its_own_bits():
    # Server index, chip, die and device each set to a value no other field's bits could give.
    sdid = (5 << 22) | (3 << 18) | (1 << 16) | 7
    assert sdid_fields(sdid) == {"server_index": 5, "chip": 3, "die": 1, "device": 7}
    assert sdid_fields((1023 << 22) | (15 << 18) | (3 << 16) | 0xFFFF) == {
        "server_index": 1023, "chip": 15, "die": 3, "device": 0xFFFF}


def test_an_a2_profile_refuses_the_a3_sample():
    facts = parse_preflight("node0", preflight_a3("node0", 0, IPS["node0"]), 4)
    errors = [str(e) for e in check_node(facts, devices=4, tls_policy="disabled", declared_ips=None,
                                         expected_hostname="node0-host", model_path="/m",
                                         profile=PROFILES["atlas-800i-a2"])]
    assert errors == ["node node0: npu-smi info: NPUs are Ascend910, hardware.profile atlas-800i-a2 expects 910B* "
                      "(fix: set hardware.profile to these servers' model, or take the node out of the stack)"]


def test_two_servers_with_one_server_index_in_one_super_pod():
    both = [parse_preflight(n, preflight_a3(n, 0, IPS[n]), 4) for n in ("node0", "node1")]
    errors = [str(e) for e in check_cluster(both)]
    assert errors[0] == ("node node1: device 0 spod-info: SDID 0 in super pod 0 is also node0 device 0 "
                         "(Server Index 0 on both?) (fix: give every server of a super pod its own Server ID "
                         "(set the server's Server ID (Server Index) the way its documentation says (Redfish or "
                         "Computing Toolkit), then check `npu-smi info -t spod-info -i 0 -c 0`))")
    assert len(errors) == 4
    # Distinct Server IDs: no contradiction.
    both = [parse_preflight(n, preflight_a3(n, i, IPS[n]), 4) for i, n in enumerate(("node0", "node1"))]
    assert check_cluster(both) == []


def test_a_die_without_a_super_pod_id_does_not_stop_the_check_of_the_next_dies():
    # Die 0 of each server prints no Super Pod ID; dies 1 to 3 do, and both servers' SDIDs are the same.
    def first_die_without(n: str) -> str:
        first = "\n".join(line for line in spod_text(0, 0).splitlines() if "Super Pod ID" not in line)
        return preflight_a3(n, 0, IPS[n], spod={0: first})

    both = [parse_preflight(n, first_die_without(n), 4) for n in ("node0", "node1")]
    errors = [str(e) for e in check_super_pods(both)]
    assert [e.split(" (")[0] for e in errors] == [
        f"node node1: device {d} spod-info: SDID {(d // 2) << 18 | (d % 2) << 16 | d} in super pod 0 is also "
        f"node0 device {d}" for d in (1, 2, 3)]


def test_dies_without_a_super_pod_id_are_not_compared_across_servers():
    # Both servers print one Server Index and so the same SDIDs, but no "Super Pod ID" line: which super pod
    # each is in is unknown, so the SDID rule (once per super pod) has nothing to judge.
    def no_super_pod(n: str) -> str:
        spod = {d: "\n".join(line for line in spod_text(d, 0).splitlines() if "Super Pod ID" not in line)
                for d in range(4)}
        return preflight_a3(n, 0, IPS[n], spod=spod)

    both = [parse_preflight(n, no_super_pod(n), 4) for n in ("node0", "node1")]
    assert [d.super_pod_id for d in both[0].devices] == [None] * 4 and both[0].devices[0].sdid == 0
    assert check_cluster(both) == []


# --- the stack and its rank table 1.2 ----------------------------------------

THICK = "+===========================+===============+====================================================+\n"


def sixteen_dies(node: str, server_index: int) -> str:
    """A 16-die preflight for the stack: the 4-die preflight above with the
    A3 sample's two NPU blocks repeated for NPUs 2..7 (NPU id renumbered),
    16 devices of hccn_tool and spod-info."""
    ips = [f"198.51.100.{server_index * 16 + d + 1}" for d in range(16)]
    text = preflight_a3(node, server_index, ips)
    npu_smi = sample(A3_NPU_SMI)
    blocks = npu_smi.split(THICK)
    # blocks[1] and blocks[2]: NPU 0's and NPU 1's two dies.
    more = [re.sub(r"^\| [01]     Ascend910", f"| {npu:<5} Ascend910", blocks[1 + npu % 2], flags=re.MULTILINE)
            for npu in range(2, 8)]
    grown = THICK.join(blocks[:3] + more + blocks[3:])
    assert len(parse_npu_smi_info(grown)) == 16
    return text.replace(npu_smi.rstrip("\n"), grown.rstrip("\n"))


def test_stack_validates():
    done = run_cli("validate", "--stack", STACK)
    assert done.returncode == 0, done.stderr
    assert "2 x atlas-800i-a3 = world 32; tp 32" in done.stdout


def test_rank_table_1_2_from_preflight_facts_field_by_field_against_cann():
    loaded = load_stack(STACK)
    facts = [parse_preflight(n.name, sixteen_dies(n.name, i), 16) for i, n in enumerate(loaded.spec.nodes)]
    for f in facts:
        assert [str(e) for e in check_node(f, devices=16, tls_policy="disabled", declared_ips=None,
                                           expected_hostname=f"{f.node}-host", model_path="/m", profile=A3)] == []
    assert check_cluster(facts) == []
    device_ips = {f.node: f.device_ips() for f in facts}
    table = rank_table(loaded, device_ips, super_pods_of(facts))
    assert table is not None
    # Top level: CANN's example keys, version 1.2.
    assert set(table) == {"status", "version", "server_count", "server_list", "super_pod_list"}
    assert (table["status"], table["version"], table["server_count"]) == ("completed", "1.2", "2")
    for node, f, server in zip(loaded.spec.nodes, facts, table["server_list"], strict=True):
        # CANN's server fields, plus MindIE's container_ip (runbook 001).
        assert set(server) == set(CANN_A3_FIRST_SERVER) | {"container_ip"}
        assert server["server_id"] == server["host_ip"] == node.address
        assert len(server["device"]) == 16
        for d, (ours, die) in enumerate(zip(server["device"], f.devices, strict=True)):
            # CANN's device fields in CANN's order: device_id, super_device_id, device_ip, rank_id.
            assert list(ours) == list(CANN_A3_FIRST_SERVER["device"][0])
            assert ours["device_id"] == str(d)
            assert ours["super_device_id"] == str(die.sdid)   # the SDID spod-info printed for this die
            assert ours["device_ip"] == die.ip
            assert ours["rank_id"] == str(loaded.spec.nodes.index(node) * 16 + d)
    assert table["super_pod_list"] == [
        {"super_pod_id": "0", "server_list": [{"server_id": n.address} for n in loaded.spec.nodes]}]
    assert validate_rank_table(table, source="a3", devices_per_node=16, version="1.2") == []


def test_offline_render_names_where_each_value_comes_from():
    loaded = load_stack(STACK)
    table = rank_table(loaded, {n.name: [f"198.51.100.{i * 16 + d + 1}" for d in range(16)]
                                for i, n in enumerate(loaded.spec.nodes)})
    assert table is not None
    die = table["server_list"][1]["device"][3]
    assert die["super_device_id"] == "<discovered by preflight: SDID of npu-smi info -t spod-info -i 1 -c 1 on node1>"
    assert len(table["super_pod_list"]) == 1


def test_preflight_reads_spod_info_on_a3_only():
    a3 = render_node(load_stack(STACK), 0).scripts.preflight.text
    assert 'info -t spod-info -i $((i / 2)) -c $((i % 2))' in a3 and "seq 0 15" in a3
    a2 = render_node(load_stack("tp16-mindie"), 0).scripts.preflight.text
    assert "spod-info" not in a2


def test_mindie_on_a3_needs_tp_over_all_dies(tmp_path):
    doc = load_stack_doc(STACK)
    doc["config"][NS + "parallel"]["tp"] = 16
    path = write_stack(tmp_path, "a3-tp16", doc)
    done = run_cli("validate", "--stack", str(path))
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "ascend-inference:parallel.tp" in done.stderr and "set tp: 32" in done.stderr
