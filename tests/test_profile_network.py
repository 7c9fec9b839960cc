"""Hardware profiles and their network checks, on REAL tool output.

The A2 servers keep the RoCE checks and have lldp, netdetect and gateway
judged per the stack's policy; the 300I Duo (runbook 003) has no fabric: its
preflight calls no hccn_tool, and its npu-smi shape (two 310P3 chips per
card) is counted per chip. The rendered preflight scripts are run by bash
against stand-in `npu-smi`/`hccn_tool` that print the verbatim samples of
tests/fixtures/tool-output/ (sources in its README).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_inference.facts import (
    NetworkPolicies,
    check_network,
    check_node,
    parse_npu_smi_info,
    parse_preflight,
)
from ascend_inference.hardware import NO_FABRIC, PROFILES, ROCE_FABRIC
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.facts import synthetic_npu_smi_cards
from tests.conftest import FIXTURES

pytestmark = pytest.mark.pure

SAMPLES = FIXTURES / "tool-output"
REPO = Path(__file__).resolve().parent.parent
A2 = PROFILES["atlas-800t-a2"]
DUO = PROFILES["atlas-300i-duo"]


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# --- the profiles ---------------------------------------------------------------

def test_a2_profiles_have_every_fabric_check_and_the_300i_duo_none():
    for name in ("atlas-800i-a2", "atlas-800t-a2"):
        assert PROFILES[name].network == ROCE_FABRIC and ROCE_FABRIC.fabric
    assert DUO.network == NO_FABRIC and not NO_FABRIC.fabric


def test_300i_duo_devices_are_chips_two_per_card():
    assert (DUO.devices_per_node, DUO.chips_per_npu, DUO.npus_per_node) == (8, 2, 4)
    assert (A2.devices_per_node, A2.chips_per_npu, A2.npus_per_node) == (8, 1, 8)


# --- npu-smi in the 300I Duo shape ------------------------------------------------

def test_the_real_310p3_sample_counts_chips_not_cards():
    npus = parse_npu_smi_info(sample("npu-smi-info-310p3-two-chips-24.1.0.1.txt"))
    assert [(n["npu"], n["chip"]) for n in npus] == [(1, 0), (1, 1), (2, 0), (2, 1)]


def standin_npu_smi(tmp_path: Path, hardware: dict, faults: dict) -> str:
    """The emulator's npu-smi stand-in, as the emulator's 300I Duo node runs it."""
    from emulator.nodefs import BUS_IDS

    run = tmp_path / "run"
    run.mkdir()
    (run / "node.json").write_text(json.dumps({
        "driver_version": "24.1.0", "firmware_version": "7.1.0.11.220", "device_ips": [], "netmask": "x",
        "netdetect": "x", "gateway": "x", "bus_ids": BUS_IDS, **hardware}))
    (run / "faults.json").write_text(json.dumps(faults))
    tool = tmp_path / "npu-smi"
    tool.symlink_to(REPO / "emulator" / "standins" / "ascend_tools.py")
    done = subprocess.run([sys.executable, str(tool), "info"], capture_output=True, text=True,
                          env={**os.environ, "ASCEMU_RUN_DIR": str(run)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_emulated_300i_duo_prints_the_310p3_layout(tmp_path):
    real = sample("npu-smi-info-310p3-two-chips-24.1.0.1.txt").splitlines()
    out = standin_npu_smi(tmp_path, {"chip_name": "310P3", "npu_count": 8, "hbm_mb": 44280, "chips_per_card": 2},
                          {"unhealthy_devices": {"3": "Alarm"}})
    lines = out.splitlines()
    # The same header rows and rules, and rows as wide as the real tool's.
    assert lines[3:6] == real[3:6]
    assert {len(line) for line in lines} == {len(real[0])}
    npus = parse_npu_smi_info(out)
    assert [(n["npu"], n["chip"], n["health"]) for n in npus] == [
        (card, chip, "Alarm" if (card, chip) == (1, 1) else "OK") for card in range(4) for chip in range(2)]


def test_the_preview_prints_the_same_layout():
    npus = parse_npu_smi_info(synthetic_npu_smi_cards(8, 2, "310P3", 48 * 1024))
    assert [(n["npu"], n["chip"]) for n in npus] == [(c, chip) for c in range(4) for chip in range(2)]


def one_chip_per_card() -> str:
    """The real 310P3 sample with card 2's second chip gone (what an Atlas 300I
    Pro, one 310P3 per card, looks like to the parser)."""
    lines = sample("npu-smi-info-310p3-two-chips-24.1.0.1.txt").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| 2       310P3")) + 3
    assert lines[start].startswith("| 2       310P3") and lines[start + 1].startswith("| 1       3 ")
    return "\n".join(lines[:start] + lines[start + 3:])


def test_a_card_with_other_than_two_chips_is_refused_on_the_300i_duo():
    stdout = "### hostname\nh\n### npu-smi-info\n" + one_chip_per_card() + "\n### end\n"
    facts = parse_preflight("node0", stdout, 0)
    errors = [str(e) for e in check_node(facts, devices=3, tls_policy="disabled", declared_ips=None,
                                         expected_hostname=None, model_path="/m", profile=DUO)]
    assert errors == ["node node0: npu-smi info: NPU 2 lists 1 chip(s), hardware.profile atlas-300i-duo has 2 per "
                      "NPU (fix: set hardware.profile to these servers' model (chips per NPU differ between "
                      "models), or reseat/replace the card)"]


# --- the rendered preflight, run against stand-ins printing real samples ------------

HCCN_SAMPLES = {
    # hccn_tool command -> the sample it prints (one device's line of the loop samples)
    "-ip": "hccn-tool-ip-loop-8-devices-elided.txt:0-2",
    "-link": "hccn-tool-link-up.txt",
    "-net_health": "hccn-tool-net-health-success.txt",
    "-lldp": "hccn-tool-lldp-dx511.txt",
    "-netdetect": "hccn-tool-netdetect-loop-elided.txt:0-1",
    "-gateway": "hccn-tool-gateway-loop.txt:0-1",
    "-tls": "hccn-tool-tls-switch-0.txt",
    "-ping": "hccn-tool-ping-success.txt",
}


def fake_tools(tmp_path: Path, npu_smi_sample: str, hccn: dict[str, str | None]) -> dict[str, str]:
    """`npu-smi` printing a sample; `hccn_tool` printing per command a sample
    (`file:first-last` takes those lines; `text:...` a line of its own) or
    nothing with exit 1 (None), and
    logging every call to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npu-smi").write_text(f"#!/bin/sh\ncat {SAMPLES / npu_smi_sample}\n")
    cases = []
    for command, spec in hccn.items():
        if spec is None:
            cases.append(f"  *' {command} '*) exit 1;;")
            continue
        if spec.startswith("text:"):
            # A form no public sample has (named so in the test using it).
            text = [spec[len("text:"):]]
        else:
            name, _, span = spec.partition(":")
            first, _, last = span.partition("-")
            text = sample(name).splitlines()[int(first):int(last)] if span else sample(name).splitlines()
        body = (tmp_path / f"{command.strip('-')}.out")
        body.write_text("\n".join(text) + "\n")
        cases.append(f"  *' {command} '*) cat {body};;")
    (bin_dir / "hccn_tool").write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {tmp_path / 'calls.log'}\n"
        "case \" $* \" in\n" + "\n".join(cases) + "\n  *) exit 2;;\nesac\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def run_preflight(stack: str, env: dict[str, str]) -> str:
    script = render_node(load_stack(stack), 0).scripts.preflight.text
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_300i_duo_preflight_calls_no_hccn_tool(tmp_path):
    env = fake_tools(tmp_path, "npu-smi-info-310p3-two-chips-24.1.0.1.txt", HCCN_SAMPLES)
    stdout = run_preflight("tp8-pp2-300iduo", env)
    assert not (tmp_path / "calls.log").exists()
    assert "### device" not in stdout
    facts = parse_preflight("node0", stdout, 0)
    assert facts.devices == [] and len(facts.npus) == 4
    errors, warnings = check_network(facts, DUO, NetworkPolicies())
    assert errors == warnings == []


def test_the_a2_preflight_reads_and_judges_every_network_check(tmp_path):
    env = fake_tools(tmp_path, "npu-smi-info-910b2-23.0.7.txt", HCCN_SAMPLES)
    stdout = run_preflight("tp16-lmdeploy", env)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    # The gateway of each device is pinged from that device; the pings run side by side
    # (preflight.sh.j2 starts each in the background), so they are logged in any order.
    assert sorted(c for c in calls if "-ping" in c) == [f"-i {d} -ping -g address 11.12.165.1" for d in range(8)]
    facts = parse_preflight("node0", stdout, 8)
    d = facts.devices[5]
    assert (d.ip, d.netmask, d.lldp_ifname, d.netdetect, d.gateway) == (
        "11.12.165.80", "255.255.255.0", "400GE1/1/20:2", "11.12.165.1", "11.12.165.1")
    assert d.gateway_ping == "3 packets transmitted, 3 received, 0.00% packet loss"
    assert check_network(facts, A2, NetworkPolicies()) == ([], [])


def judged(tmp_path: Path, policies: NetworkPolicies | None = None, **hccn: str | None):
    env = fake_tools(tmp_path, "npu-smi-info-910b2-23.0.7.txt", {**HCCN_SAMPLES, **hccn})
    facts = parse_preflight("node1", run_preflight("tp16-lmdeploy", env), 8)
    errors, warnings = check_network(facts, A2, policies or NetworkPolicies())
    return [str(e) for e in errors], [str(w) for w in warnings]


def test_no_lldp_neighbour(tmp_path):
    errors, _ = judged(tmp_path, **{"-lldp": None})
    assert len(errors) == 8
    assert errors[3] == ("node node1: device 3 lldp: no neighbour (`hccn_tool -i 3 -lldp -g` printed nothing) "
                         "(fix: check the cable and the switch port (LLDP on), or set network.lldp: warn)")


def test_lldp_printing_something_else_is_quoted(tmp_path):
    errors, _ = judged(tmp_path, **{"-lldp": "hccn-tool-link-up.txt"})
    assert errors[0].startswith("node node1: device 0 lldp: no neighbour (`hccn_tool -i 0 -lldp -g` printed "
                                "'link status: UP')")


def test_no_netdetect_address(tmp_path):
    errors, _ = judged(tmp_path, **{"-netdetect": None})
    assert errors[0] == ("node node1: device 0 netdetect: no netdetect address (`hccn_tool -i 0 -netdetect -g` "
                         "printed nothing) (fix: set one (`hccn_tool -i 0 -netdetect -s address <ip>`, netdetect_0 "
                         "in /etc/hccn.conf), or set network.netdetect: warn)")


def test_no_gateway(tmp_path):
    errors, _ = judged(tmp_path, **{"-gateway": None})
    assert len(errors) == 8 and errors[7].startswith(
        "node node1: device 7 gateway: no default gateway (`hccn_tool -i 7 -gateway -g` printed nothing)")
    assert not [c for c in (tmp_path / "calls.log").read_text().splitlines() if "-ping" in c]


def test_gateway_outside_the_device_subnet(tmp_path):
    # The guide's device IPs (/24) with the blog's /16 gateway (docs/formats.md §2e).
    errors, _ = judged(tmp_path, **{"-gateway": "text:default gateway:29.1.0.1, Iface:eth0"})
    assert errors[0] == ("node node1: device 0 gateway: 29.1.0.1 is outside the device's subnet 11.12.165.0/24 "
                         "(fix: fix gateway_0 or netmask_0 in /etc/hccn.conf)")


def test_gateway_not_answering(tmp_path):
    errors, _ = judged(tmp_path, **{"-ping": "hccn-tool-ping-partial-loss.txt"})
    assert errors[2] == ("node node1: device 2 gateway: 11.12.165.1 does not answer the device's ping "
                         "(`hccn_tool -i 2 -ping -g address 11.12.165.1`: 3 packets transmitted, 2 received, "
                         "33.33% packet loss) (fix: check the gateway and the switch port, or set network.gateway: "
                         "warn)")


def test_warn_and_ignore_policies(tmp_path):
    errors, warnings = judged(tmp_path, NetworkPolicies(lldp="warn", netdetect="ignore"),
                              **{"-lldp": None, "-netdetect": None})
    assert errors == [] and len(warnings) == 8
    assert all(" lldp: no neighbour" in w for w in warnings)


def test_gateway_ignore_runs_no_ping(tmp_path):
    loaded = load_stack("tp16-lmdeploy")
    from ascendctl.preview.stack import loaded_with_config

    config = json.loads(json.dumps(loaded.raw_config))
    config["ascend-inference:network"] = {**config.get("ascend-inference:network", {}), "gateway": "ignore"}
    script = render_node(loaded_with_config(loaded, config), 0).scripts.preflight.text
    assert "-ping" not in script and "-gateway -g" in script
