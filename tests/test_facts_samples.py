"""The preflight parser and the node-fact rules, on REAL tool output.

Every file in tests/fixtures/tool-output/ is output of `npu-smi`, `hccn_tool`
or a version file, copied from a public source (README.md there). The parser
is run on each; the rules are run on preflight output built from them the way
templates/preflight.sh.j2 prints it (`### <section>` blocks, one tool call per
block). Where a sample is out of the stack's scope (another chip, too few
NPUs), the test asserts the refusal, never a crash.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ascend_inference.facts import (
    NodeFacts,
    check_cluster,
    check_node,
    parse_device,
    parse_key_values,
    parse_npu_smi_info,
    parse_preflight,
    split_sections,
)
from ascend_inference.hardware import PROFILES
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from tests.conftest import FIXTURES

pytestmark = pytest.mark.pure

SAMPLES = FIXTURES / "tool-output"
A2 = PROFILES["atlas-800i-a2"]
DUO = PROFILES["atlas-300i-duo"]


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def lines_of(name: str) -> list[str]:
    return sample(name).splitlines()


# --- preflight output built from the samples -----------------------------------

# Device IPs of two servers in the DeepseekV3 multi-node guide (its rank table;
# its `hccn_tool -ip -g` loop prints the .80-.87 server).
NODE0_IPS = [f"11.12.165.{80 + d}" for d in range(8)]
NODE1_IPS = [f"11.12.165.{20 + d}" for d in range(8)]


@dataclass
class Node:
    """What one node's preflight prints; every field defaults to a real sample."""

    name: str
    ips: list[str | None]
    npu_smi: str = "npu-smi-info-910b2-23.0.7.txt"
    driver: str = "driver-version-info-24.1.0.txt"
    firmware: str = "firmware-version-info-7.1.0.11.220.txt"
    cann: str = "cann-toolkit-install-info-8.0.0.txt"
    net_health: dict[int, str] = field(default_factory=dict)   # device -> sample file
    ip_output: dict[int, str] = field(default_factory=dict)    # device -> sample file, verbatim
    rootinfo: str = "absent"
    text_edits: dict[str, tuple[str, str]] = field(default_factory=dict)  # sample -> (old, new)

    def read(self, name: str) -> str:
        text = sample(name)
        if name in self.text_edits:
            old, new = self.text_edits[name]
            assert old in text
            text = text.replace(old, new)
        return text.rstrip("\n")


def ip_output(ip: str) -> str:
    """`hccn_tool -i N -ip -g` for `ip`: the guide's first device, re-addressed."""
    first = "\n".join(lines_of("hccn-tool-ip-loop-8-devices-elided.txt")[:2])
    assert first == "ipaddr:11.12.165.80\nnetmask:255.255.255.0"
    return first.replace("11.12.165.80", ip)


def preflight_stdout(node: Node) -> str:
    """As templates/preflight.sh.j2 prints it: the lldp and tls blocks are
    grep'ed (`| grep Ifname`, `| grep switch`), the others whole."""
    lldp = lines_of("hccn-tool-lldp-ifname-loop.txt")
    gateway = lines_of("hccn-tool-gateway-loop.txt")
    tls = sample("hccn-tool-tls-switch-0.txt").rstrip("\n")
    out = ["### hostname", f"{node.name}-host",
           "### npu-smi-info", node.read(node.npu_smi),
           "### driver-version", node.read(node.driver),
           "### firmware-version", node.read(node.firmware),
           "### cann-version", node.read(node.cann)]
    for d, ip in enumerate(node.ips):
        printed = node.read(node.ip_output[d]) if d in node.ip_output else ip_output(ip)
        out += [f"### device {d} ip", printed,
                f"### device {d} link", node.read("hccn-tool-link-up.txt"),
                f"### device {d} net_health", node.read(node.net_health.get(d, "hccn-tool-net-health-success.txt")),
                f"### device {d} lldp", lldp[d],
                f"### device {d} netdetect", lines_of("hccn-tool-netdetect-loop-elided.txt")[0],
                f"### device {d} gateway", gateway[d],
                f"### device {d} tls", tls.replace("dev_id:0,", f"dev_id:{d},")]
    out += ["### hccl-rootinfo", node.rootinfo, "### model-path", "present", "### end"]
    return "\n".join(out) + "\n"


def facts_of(node: Node) -> NodeFacts:
    return parse_preflight(node.name, preflight_stdout(node), len(node.ips))


def node_errors(node: Node, *, declared: list[str] | None = None, profile=A2, devices: int = 8) -> list[str]:
    return [str(e) for e in check_node(facts_of(node), devices=devices, tls_policy="disabled", declared_ips=declared,
                                       expected_hostname=f"{node.name}-host", model_path="/data/model",
                                       profile=profile)]


def test_the_net_health_success_sample_is_the_guide_form():
    # The single-line files used above are lines of the combined real sample.
    combined = lines_of("hccn-tool-ip-link-net-health-success.txt")
    assert sample("hccn-tool-net-health-success.txt").strip() == combined[3]
    assert sample("hccn-tool-link-up.txt").strip() == combined[2]


def test_a_healthy_node_from_real_samples_passes_every_rule():
    node = Node("node0", NODE0_IPS)
    facts = facts_of(node)
    assert facts.device_ips() == NODE0_IPS
    assert [d.lldp_ifname for d in facts.devices][:2] == ["400GE1/1/5:1", "400GE1/1/5:2"]
    assert {d.gateway for d in facts.devices} == {"11.12.165.1"}
    assert {d.netdetect for d in facts.devices} == {"11.12.165.1"}
    assert {d.tls_switch for d in facts.devices} == {0}
    assert {d.link for d in facts.devices} == {"UP"} and {d.net_health for d in facts.devices} == {"Success"}
    assert (facts.driver_version, facts.firmware_version, facts.cann_version) == ("24.1.0", "7.1.0.11.220", "8.0.0")
    assert node_errors(node, declared=NODE0_IPS) == []
    assert check_cluster([facts, facts_of(Node("node1", NODE1_IPS))]) == []


# --- the rules ---------------------------------------------------------------------

def test_declared_device_ip_differs_from_the_found_one():
    declared = [*NODE0_IPS[:3], "11.12.165.99", *NODE0_IPS[4:]]
    assert node_errors(Node("node0", NODE0_IPS), declared=declared) == [
        "node node0: device 3 ip: is 11.12.165.83, the stack declares 11.12.165.99 "
        "(fix: fix nodes[].device_ips[3] or the NPU's address)"]


def test_device_ip_found_on_two_nodes():
    clash = [*NODE1_IPS[:5], NODE0_IPS[0], *NODE1_IPS[6:]]
    errors = [str(e) for e in check_cluster([facts_of(Node("node0", NODE0_IPS)), facts_of(Node("node1", clash))])]
    assert errors == ["node node1: device 5 ip: 11.12.165.80 is also node0 device 0 "
                      "(fix: every NPU needs its own IP (/etc/hccn.conf))"]


@pytest.mark.parametrize("health_sample,status", [("hccn-tool-net-health-init.txt", "Init"),
                                                  ("hccn-tool-net-health-fault.txt", "Fault")])
def test_net_health_not_success(health_sample, status):
    errors = node_errors(Node("node0", NODE0_IPS, net_health={2: health_sample}))
    assert errors == [f"node node0: device 2 net_health: is {status} "
                      "(fix: check netdetect/gateway (`hccn_tool -i 2 -net_health -g`))"]


def test_stale_rootinfo():
    errors = node_errors(Node("node0", NODE0_IPS, rootinfo="present"))
    assert errors == ["node node0: /etc/hccl_rootinfo.json: a stale HCCL root info file is present "
                      "(fix: remove /etc/hccl_rootinfo.json left by an earlier job)"]


def test_driver_mismatch_across_nodes():
    node1 = Node("node1", NODE1_IPS, driver="driver-version-info-24.1.rc1.txt")
    errors = [str(e) for e in check_cluster([facts_of(Node("node0", NODE0_IPS)), facts_of(node1)])]
    assert errors == ["node node1: driver version: is 24.1.rc1, node0 has 24.1.0 "
                      "(fix: install the same version on every node)"]


def test_cann_mismatch_across_nodes():
    node1 = Node("node1", NODE1_IPS, cann="cann-toolkit-install-info-8.5.0.txt")
    errors = [str(e) for e in check_cluster([facts_of(Node("node0", NODE0_IPS)), facts_of(node1)])]
    assert errors == ["node node1: CANN version: is 8.5.0, node0 has 8.0.0 "
                      "(fix: install the same version on every node)"]


def test_firmware_mismatch_across_nodes():
    """Only one real firmware version.info is on file: node1 gets it with the
    Version line edited (the package_version line stays as printed)."""
    node1 = Node("node1", NODE1_IPS,
                 text_edits={"firmware-version-info-7.1.0.11.220.txt": ("Version=7.1.0.11.220", "Version=7.1.0.7.220")})
    errors = [str(e) for e in check_cluster([facts_of(Node("node0", NODE0_IPS)), facts_of(node1)])]
    assert errors == ["node node1: firmware version: is 7.1.0.7.220, node0 has 7.1.0.11.220 "
                      "(fix: install the same version on every node)"]


def test_a_missing_version_file_is_not_taken_for_a_match():
    node1 = Node("node1", NODE1_IPS)
    stdout = preflight_stdout(node1)
    driver = sample("driver-version-info-24.1.0.txt").rstrip("\n")
    facts1 = parse_preflight("node1", stdout.replace(driver, "missing"), 8)  # what the script prints then
    errors = [str(e) for e in check_cluster([facts_of(Node("node0", NODE0_IPS)), facts1])]
    assert errors == ["node node1: driver version: cannot be read (its version file is missing), node0 has 24.1.0 "
                      "(fix: install the same version on every node)"]


def test_wrong_chip_for_the_profile_is_refused():
    """The 800I A2 profile expects 910B chips; 310P3 boards are refused."""
    errors = node_errors(Node("node0", NODE0_IPS, npu_smi="npu-smi-info-310p3-two-chips-24.1.0.1.txt"))
    assert errors[0] == ("node node0: npu-smi info: NPUs are 310P3, hardware.profile atlas-800i-a2 expects 910B* "
                         "(fix: set hardware.profile to these servers' model, or take the node out of the stack)")


def test_no_ip_configured_and_a_masked_ip():
    node = Node("node0", NODE0_IPS, ip_output={0: "hccn-tool-ip-not-configured.txt", 1: "hccn-tool-ip-masked.txt"})
    errors = node_errors(node)
    assert errors == [
        "node node0: device 0 ip: no IP configured (fix: configure it in /etc/hccn.conf "
        "(`hccn_tool -i 0 -ip -s address ... netmask ...`))",
        "node node0: device 1 ip: hccn_tool printed '10.xx.xx.10', not an IP address "
        "(fix: check `hccn_tool -i 1 -ip -g` and /etc/hccn.conf on the node)"]


# --- peer ping: the rendered script, with hccn_tool printing real ping output ------

def run_peer_ping(tmp_path: Path, failing_ip: str | None) -> subprocess.CompletedProcess:
    """node0's rendered peer-ping script, run with a stand-in `hccn_tool` on
    PATH that prints the real success sample, or the real 33% loss sample for
    `failing_ip`."""
    loaded = load_stack("tp16-mindie")
    script = render_node(loaded, 0).scripts.peer_ping.text
    tool = tmp_path / "hccn_tool"
    tool.write_text("#!/bin/sh\n"
                    f"case \" $* \" in *' {failing_ip or 'none'} '*) "
                    f"cat {SAMPLES / 'hccn-tool-ping-partial-loss.txt'};;\n"
                    f"  *) cat {SAMPLES / 'hccn-tool-ping-success.txt'};; esac\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)


def test_peer_ping_succeeds_on_the_real_success_output(tmp_path):
    result = run_peer_ping(tmp_path, None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr
    assert result.stdout.count("ok node0 device ") == 8


def test_peer_ping_fails_on_the_real_packet_loss_output(tmp_path):
    peer_ip = load_stack("tp16-mindie").spec.nodes[1].device_ips[5]
    result = run_peer_ping(tmp_path, peer_ip)
    assert result.returncode != 0
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED node0 device 5 -> node1 device 5 ({peer_ip}): "
                      "3 packets transmitted, 2 received, 33.33% packet loss"]


# --- the parser on every npu-smi sample ----------------------------------------------

# Read off each sample by eye: (npu, chip, name, health) per chip row.
NPU_SMI = {
    "npu-smi-info-910b2-23.0.7.txt": [(n, 0, "910B2", "OK") for n in range(8)],
    "npu-smi-info-910b2c-23.0.2.1-process-row.txt": [(0, 0, "910B2C", "OK"), (1, 0, "910B2C", "OK")],
    "npu-smi-info-910b1-23.0.rc3.3-processes.txt": [(0, 0, "910B1", "OK"), (1, 0, "910B1", "OK")],
    "npu-smi-info-910b3-25.2.3-one-card.txt": [(3, 0, "910B3", "OK")],
    "npu-smi-info-a3-two-chips-25.2.0.txt": [(0, 0, "Ascend910", "OK"), (0, 1, "Ascend910", "OK"),
                                             (1, 0, "Ascend910", "OK"), (1, 1, "Ascend910", "OK")],
    "npu-smi-info-310p3-two-chips-24.1.0.1.txt": [(1, 0, "310P3", "OK"), (1, 1, "310P3", "OK"),
                                                  (2, 0, "310P3", "OK"), (2, 1, "310P3", "OK")],
    "npu-smi-info-310b4-23.0.0-no-hbm.txt": [(0, 0, "310B4", "Alarm")],
    "npu-smi-info-masked-24.1.RC2-warning.txt": [(n, 0, "xxx", "Warning" if n in (3, 7) else "OK") for n in range(8)],
    "npu-smi-info-masked-23.0.5-elided.txt": [(0, 0, "xxx", "OK"), (7, 0, "xxx", "OK")],
}


def test_every_npu_smi_sample_on_file_is_covered():
    assert sorted(p.name for p in SAMPLES.glob("npu-smi-info-*.txt")) == sorted(NPU_SMI)


@pytest.mark.parametrize("name", sorted(NPU_SMI))
def test_npu_smi_rows(name):
    rows = [(n["npu"], n["chip"], n["name"], n["health"]) for n in parse_npu_smi_info(sample(name))]
    assert rows == NPU_SMI[name]


def _blocks_of_310b4(*npu_ids: int) -> str:
    """The 310B4 sample's NPU block (its chip row has the Bus-Id `NA`) once per NPU id given."""
    lines = sample("npu-smi-info-310b4-23.0.0-no-hbm.txt").splitlines()
    head, block, tail = lines[:6], lines[6:9], lines[9:]
    body = [row.replace("| 0       310B4", f"| {npu}       310B4", 1) for npu in npu_ids for row in block]
    return "\n".join(head + body + tail)


def test_a_chip_row_without_a_bus_id_does_not_end_the_npu_list():
    # The 310B4's chip row ("| 0  0 | NA |") matches the NPU row's pattern and is passed over:
    # the NPUs listed after it are still read.
    rows = [(n["npu"], n["chip"], n["name"], n["health"]) for n in parse_npu_smi_info(_blocks_of_310b4(0, 1, 2))]
    assert rows == [(0, 0, "310B4", "Alarm"), (1, 0, "310B4", "Alarm"), (2, 0, "310B4", "Alarm")]


def test_the_chip_index_counts_only_the_blocks_of_the_same_npu_id():
    rows = [(n["npu"], n["chip"]) for n in parse_npu_smi_info(_blocks_of_310b4(1, 0, 1))]
    assert rows == [(1, 0), (0, 0), (1, 1)]


# What check_node says about each sample as a node of a stack: the first
# line, for the profile whose chip it is (or the 800I A2 when none is).
VERDICT = {
    "npu-smi-info-910b2-23.0.7.txt": (A2, None),
    "npu-smi-info-910b2c-23.0.2.1-process-row.txt": (A2, "npu-smi info: 2 healthy NPUs, the stack needs 8 (6 missing)"),
    "npu-smi-info-910b1-23.0.rc3.3-processes.txt": (A2, "npu-smi info: 2 healthy NPUs, the stack needs 8 (6 missing)"),
    "npu-smi-info-910b3-25.2.3-one-card.txt": (A2, "npu-smi info: 1 healthy NPUs, the stack needs 8 (7 missing)"),
    "npu-smi-info-a3-two-chips-25.2.0.txt": (A2, "npu-smi info: NPUs are Ascend910, hardware.profile atlas-800i-a2 "
                                                 "expects 910B*"),
    "npu-smi-info-310p3-two-chips-24.1.0.1.txt": (DUO, "npu-smi info: 4 healthy NPUs, the stack needs 8 (4 missing)"),
    "npu-smi-info-310b4-23.0.0-no-hbm.txt": (DUO, "npu-smi info: NPUs are 310B4, hardware.profile atlas-300i-duo "
                                                  "expects 310P*"),
    "npu-smi-info-masked-24.1.RC2-warning.txt": (A2, "npu-smi info: NPUs are xxx, hardware.profile atlas-800i-a2 "
                                                     "expects 910B*"),
    "npu-smi-info-masked-23.0.5-elided.txt": (A2, "npu-smi info: NPUs are xxx, hardware.profile atlas-800i-a2 "
                                                  "expects 910B*"),
}


@pytest.mark.parametrize("name", sorted(VERDICT))
def test_npu_smi_sample_as_a_node(name):
    profile, first = VERDICT[name]
    errors = node_errors(Node("node0", NODE0_IPS, npu_smi=name), profile=profile)
    if first is None:
        assert errors == []
    else:
        assert errors and errors[0].startswith(f"node node0: {first} (fix: "), errors


def test_warning_health_is_named_per_npu():
    errors = node_errors(Node("node0", NODE0_IPS, npu_smi="npu-smi-info-masked-24.1.RC2-warning.txt"))
    assert errors[1].startswith("node node0: npu-smi info: 6 healthy NPUs, the stack needs 8 "
                                "(NPU 3 Warning, NPU 7 Warning) (fix: ")


def test_two_chip_boards_name_the_chip():
    alarm = sample("npu-smi-info-310p3-two-chips-24.1.0.1.txt").replace(
        "| 2       310P3                 | OK              | NA           61                16823",
        "| 2       310P3                 | Alarm           | NA           61                16823")
    node = Node("node0", NODE0_IPS)
    facts = replace(facts_of(node), npus=parse_npu_smi_info(alarm))
    errors = [str(e) for e in check_node(facts, devices=4, tls_policy="disabled", declared_ips=None,
                                         expected_hostname=None, model_path="/m", profile=DUO)]
    assert errors == ["node node0: npu-smi info: 3 healthy NPUs, the stack needs 4 (NPU 2 chip 1 Alarm) "
                      "(fix: replace or reset the NPU (`npu-smi info -t health -i N`), or fix the hardware profile)"]


# --- the parser on every hccn_tool and version-file sample ----------------------------

def device(section: str, text: str):
    return parse_device(0, {f"device 0 {section}": text})


def test_an_unexpected_answer_is_quoted_by_its_first_line():
    # hccn_tool printing something other than the query's answer: the message quotes its first line.
    combined = sample("hccn-tool-ip-link-net-health-success.txt")
    for section in ("lldp", "netdetect", "gateway"):
        assert device(section, combined).printed == {section: "ipaddr:10.86.1.80"}


def test_hccn_tool_samples():
    assert device("ip", sample("hccn-tool-ip-masked.txt")).ip == "10.xx.xx.10"
    assert device("ip", sample("hccn-tool-ip-not-configured.txt")).ip is None
    combined = sample("hccn-tool-ip-link-net-health-success.txt")
    assert device("ip", combined).ip == "10.86.1.80"
    assert device("link", combined).link == "UP"
    assert device("net_health", combined).net_health == "Success"
    assert device("net_health", sample("hccn-tool-net-health-init.txt")).net_health == "Init"
    assert device("net_health", sample("hccn-tool-net-health-fault.txt")).net_health == "Fault"
    assert device("link", sample("hccn-tool-link-up.txt")).link == "UP"
    assert device("tls", sample("hccn-tool-tls-switch-0.txt")).tls_switch == 0
    tls_loop = lines_of("hccn-tool-tls-switch-loop-elided.txt")
    assert [device("tls", line).tls_switch for line in tls_loop[:2]] == [0, 0]
    # The whole -lldp -g output (the preflight greps Ifname, but either reads the same).
    assert device("lldp", sample("hccn-tool-lldp-dx511.txt")).lldp_ifname == "400GE1/1/20:2"
    assert [device("lldp", line).lldp_ifname for line in lines_of("hccn-tool-lldp-ifname-loop.txt")] == [
        f"400GE1/{slot}/5:{port}" for slot in (1, 2, 3, 4) for port in (1, 2)]
    assert [device("gateway", line).gateway for line in lines_of("hccn-tool-gateway-loop.txt")] == ["11.12.165.1"] * 8
    assert device("netdetect", lines_of("hccn-tool-netdetect-loop-elided.txt")[0]).netdetect == "11.12.165.1"
    ips = lines_of("hccn-tool-ip-loop-8-devices-elided.txt")
    assert device("ip", "\n".join(ips[2:4])).ip == "11.12.165.81"


def test_ping_samples_read_as_the_peer_ping_script_reads_them():
    """peer-ping.sh.j2 counts a ping as good only with " 0.00% packet loss"."""
    for name in ("hccn-tool-ping-success.txt", "hccn-tool-ping-loop-8-devices-elided.txt"):
        assert " 0.00% packet loss" in sample(name), name
    assert " 0.00% packet loss" not in sample("hccn-tool-ping-partial-loss.txt")


def test_version_file_samples():
    assert parse_key_values(sample("driver-version-info-24.1.rc1.txt"))["Version"] == "24.1.rc1"
    assert parse_key_values(sample("driver-version-info-24.1.0.txt"))["Version"] == "24.1.0"
    assert parse_key_values(sample("firmware-version-info-7.1.0.11.220.txt"))["Version"] == "7.1.0.11.220"
    assert parse_key_values(sample("cann-toolkit-install-info-8.0.0.txt"))["version"] == "8.0.0"
    assert parse_key_values(sample("cann-toolkit-install-info-8.5.0.txt"))["version"] == "8.5.0"


def test_every_sample_on_file_is_read_by_some_test():
    here = Path(__file__).read_text(encoding="utf-8")
    unread = [p.name for p in SAMPLES.glob("*.txt") if p.name not in here]
    assert unread == []


def test_sections_are_split_as_the_script_frames_them():
    stdout = preflight_stdout(Node("node0", NODE0_IPS))
    sections = split_sections(stdout)
    assert sections["npu-smi-info"] == sample("npu-smi-info-910b2-23.0.7.txt").rstrip("\n")
    assert list(sections)[-1] == "end"
