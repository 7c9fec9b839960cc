"""The compiled front of the npu-smi/hccn_tool stand-ins (emulator/standins/ascend_front.c).

The front answers a node's queries from the answer file the Python stand-in
(emulator/standins/ascend_tools.py) writes, and runs the Python stand-in for
everything else. These tests install both as the emulator does
(emulator/nodefs.py install_ascend_tools), and hold the front to printing
byte for byte what the Python stand-in prints: every call a preflight makes
and some it does not, on an A2, an A3 and a 300I Duo node, without and with
every fault the stand-ins honour; an answer is served from the file only
while node.json, faults.json and hccn.conf still hold the bytes it was
computed from; `hccn_tool -tls -s` still writes the fault file back.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.nodefs import (
    A3_HARDWARE,
    BUS_IDS,
    Hardware,
    Layout,
    atlas_300i_duo,
    build_ascend_front,
    in_upper,
)
from emulator.nodefs import install_ascend_tools as install

pytestmark = pytest.mark.pure

REPO = Path(__file__).resolve().parent.parent
PYTHON_STANDIN = REPO / "emulator" / "standins" / "ascend_tools.py"
LAYOUT = Layout()

FAULTS = {
    "link_down": [3], "tls_on": [1, 5], "missing_devices": [7], "net_health_fail": [6], "netdetect_fail": [2],
    "lldp_missing": [4], "wrong_device_ip": {"4": "198.19.9.9"}, "driver_version": "23.0.6",
    "unhealthy_devices": {"2": "Warning"},
}
HCCN_CONF = "address_0=198.19.0.2\r\nnetmask_0=255.255.0.0\ngateway_1=198.19.0.254\nnetdetect_1=198.19.0.253\n"
# Calls outside the answer file: left to the Python stand-in, and still the same.
ODD_CALLS = [
    ("hccn_tool", ["-i", "03", "-ip", "-g"]), ("hccn_tool", ["-i", "9", "-link", "-g"]),
    ("hccn_tool", ["-i", "x", "-ip", "-g"]), ("hccn_tool", ["-ip", "-g"]), ("hccn_tool", ["-i", "1", "-speed", "-g"]),
    ("hccn_tool", ["-i", "1", "-ip", "-g", "-inet6"]), ("hccn_tool", ["-i", "1", "-ip", "-s", "address", "1.2.3.4"]),
    ("npu-smi", []), ("npu-smi", ["-v"]), ("npu-smi", ["info", "-t", "board", "-i", "2"]),
    ("npu-smi", ["info", "-t", "health", "-i", "7", "-c", "0"]), ("npu-smi", ["info", "-x"]),
]


def node_facts(hw: Hardware) -> dict:
    """node.json as emulator/provision.py writes it."""
    return {"name": "node1", "index": 1, "hostname": "ascend-node1", "address": "10.99.0.3",
            "chip_name": hw.chip_name, "npu_count": hw.npu_count, "hbm_mb": hw.hbm_mb,
            "driver_version": hw.driver_version, "firmware_version": hw.firmware_version,
            "device_ips": [f"198.19.{d}.3" for d in range(hw.npu_count)], "netmask": hw.netmask,
            "netdetect": "198.19.0.1", "gateway": "198.19.0.1", "bus_ids": BUS_IDS,
            "chips_per_npu": hw.chips_per_npu, "super_pod_id": hw.super_pod_id,
            "chips_per_card": hw.chips_per_card, "fabric": hw.fabric}


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> Path:
    return build_ascend_front(tmp_path_factory.mktemp("front"))


class Node:
    """One node's tools as install_ascend_tools lays them out, under tmp_path."""

    def __init__(self, root: Path, hw: Hardware, front: Path):
        self.upper, self.run, self.conf = root / "upper", root / "run", root / "hccn.conf"
        self.run.mkdir(parents=True)
        (self.run / "node.json").write_text(json.dumps(node_facts(hw), indent=2) + "\n")
        self.set_faults({})
        self.conf.write_text(HCCN_CONF)
        install(self.upper, self.run, layout=LAYOUT, hw=hw, front=front)
        self.env = {**os.environ, "ASCEMU_RUN_DIR": str(self.run), "ASCEMU_HCCN_CONF": str(self.conf)}

    def set_faults(self, faults: dict) -> None:
        # As emulator/faults.py write does it: a new file put in place.
        tmp = self.run / "faults.json.tmp"
        tmp.write_text(json.dumps(faults, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.run / "faults.json")

    def tool(self, name: str) -> Path:
        return in_upper(self.upper, LAYOUT.npu_smi[0] if name == "npu-smi" else LAYOUT.hccn_tool)

    def call(self, name: str, argv: list[str]) -> tuple[int, str, str]:
        done = subprocess.run([str(self.tool(name)), *argv], capture_output=True, text=True, env=self.env)
        return done.returncode, done.stdout, done.stderr


def load_python_standin(run: Path, conf: Path):
    """ascend_tools.py as a module reading `run` and `conf` (its main answers with its `answer`)."""
    spec = importlib.util.spec_from_file_location("ascend_tools_reference", PYTHON_STANDIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.RUN_DIR, module.HCCN_CONF = str(run), str(conf)
    return module


def python_answers(node: Node, tmp_path: Path, calls) -> dict:
    """What the Python stand-in's main prints for each call, as (status, stdout, stderr): its
    `answer`, run in this process on a copy of the node's files (the answer file it would
    write is not the front's)."""
    run = tmp_path / "reference-run"
    run.mkdir()
    for f in ("node.json", "faults.json"):
        shutil.copy(node.run / f, run / f)
    tools = load_python_standin(run, node.conf)
    expected = {}
    for name, argv in calls:
        stream, rc, text = tools.answer(name, list(argv), tools.Inputs())
        expected[(name, tuple(argv))] = (rc, text + "\n", "") if stream == 1 else (rc, "", text + "\n")
    return expected


def python_standin(node: Node, tmp_path: Path, name: str, argv: list[str]) -> tuple[int, str, str]:
    """The Python stand-in alone, called by the tool's name (the reference), on a copy of the node's
    run dir so that the answer file it writes is not the front's."""
    run = tmp_path / "reference-run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    for f in ("node.json", "faults.json"):
        shutil.copy(node.run / f, run / f)
    tool = tmp_path / "reference" / name
    if not tool.exists():
        tool.parent.mkdir(exist_ok=True)
        tool.symlink_to(PYTHON_STANDIN)
    done = subprocess.run([sys.executable, "-S", str(tool), *argv], capture_output=True, text=True,
                          env={**node.env, "ASCEMU_RUN_DIR": str(run)})
    return done.returncode, done.stdout, done.stderr


def preflight_calls(hw: Hardware) -> list[tuple[str, list[str]]]:
    """What the rendered preflight asks (ascend_inference/templates/preflight.sh.j2), pings aside."""
    calls = [("npu-smi", ["info"]), ("npu-smi", ["info", "-m"])]
    if hw.fabric:
        calls += [("hccn_tool", ["-i", str(d), f"-{c}", "-g"]) for d in range(hw.npu_count)
                  for c in ("ip", "link", "net_health", "lldp", "netdetect", "gateway", "tls", "fec")]
    if hw.super_pod_id is not None:
        calls += [("npu-smi", ["info", "-t", "spod-info", "-i", str(d // hw.chips_per_npu),
                               "-c", str(d % hw.chips_per_npu)]) for d in range(hw.npu_count)]
    return calls


HARDWARE = {"a2": Hardware(), "a3": Hardware(**A3_HARDWARE), "300i-duo": atlas_300i_duo()}


@pytest.mark.parametrize("faults", [{}, FAULTS], ids=["no-faults", "every-fault"])
@pytest.mark.parametrize("kind", list(HARDWARE))
def test_the_front_prints_what_the_python_standin_prints(tmp_path, front, kind, faults):
    hw = HARDWARE[kind]
    node = Node(tmp_path / "node", hw, front)
    node.set_faults(faults)
    calls = preflight_calls(hw) + [(name, argv) for name, argv in ODD_CALLS if hw.fabric or name == "npu-smi"]
    expected = python_answers(node, tmp_path, calls)
    # The reference is the Python stand-in's own printing too (its main, run as the node runs it).
    assert python_standin(node, tmp_path, "npu-smi", ["info"]) == expected[("npu-smi", ("info",))]
    # The first call finds no answer file and runs the Python stand-in, which writes it.
    assert node.call("npu-smi", ["info"]) == expected[("npu-smi", ("info",))]
    assert (node.run / "answers").exists()
    for (name, argv), want in expected.items():
        assert node.call(name, list(argv)) == want, (name, argv)


def test_queries_are_answered_from_the_file_and_never_stale(tmp_path, front, fake_ping):
    node = Node(tmp_path / "node", Hardware(), front)
    node.env["PATH"] = f"{fake_ping}:{os.environ['PATH']}"
    (tmp_path / "ping.out").write_text(PING_OUTPUTS["three-replies"])
    assert node.call("hccn_tool", ["-i", "3", "-link", "-g"]) == (0, "link status: UP\n", "")
    # Without the Python stand-in the front alone answers every preflight query and ping...
    shutil.move(node.run / "standins", tmp_path / "standins")
    for name, argv in preflight_calls(Hardware()) + [("hccn_tool", ["-i", "0", "-ping", "-g", "address", "1.2.3.4"])]:
        rc, out, err = node.call(name, argv)
        assert out and not err, (name, argv, err)
    # ...but not a setting (the Python stand-in writes it), nor anything once a
    # fault changed faults.json or a setting changed hccn.conf.
    rc, out, err = node.call("hccn_tool", ["-i", "0", "-tls", "-s", "enable", "0"])
    assert (rc, out) == (1, "") and "cannot run" in err and "base mounts" in err
    node.set_faults({"link_down": [3]})
    assert node.call("hccn_tool", ["-i", "3", "-link", "-g"])[0:2] == (1, "")
    shutil.move(tmp_path / "standins", node.run / "standins")
    assert node.call("hccn_tool", ["-i", "3", "-link", "-g"]) == (0, "link status: DOWN\n", "")
    node.conf.write_text("address_3=198.19.7.7\nnetmask_3=255.255.255.0\n")
    assert node.call("hccn_tool", ["-i", "3", "-ip", "-g"]) == (0, "ipaddr:198.19.7.7\nnetmask:255.255.255.0\n", "")
    node.conf.unlink()
    assert node.call("hccn_tool", ["-i", "3", "-ip", "-g"]) == (0, "ipaddr:198.19.3.3\nnetmask:255.255.0.0\n", "")


def test_tls_set_through_the_front_writes_the_fault_file_back(tmp_path, front):
    node = Node(tmp_path / "node", Hardware(), front)
    node.set_faults({"tls_on": [1, 2]})
    assert "tls switch[1]" in node.call("hccn_tool", ["-i", "1", "-tls", "-g"])[1]
    assert node.call("hccn_tool", ["-i", "1", "-tls", "-s", "enable", "0"]) == (0, "Cmd executed successfully!\n", "")
    assert json.loads((node.run / "faults.json").read_text())["tls_on"] == [2]
    assert "tls switch[0]" in node.call("hccn_tool", ["-i", "1", "-tls", "-g"])[1]
    assert "tls switch[1]" in node.call("hccn_tool", ["-i", "2", "-tls", "-g"])[1]


# What `ping` may print, for a stand-in `ping` on PATH that logs its arguments and prints one of these.
PING_OUTPUTS = {
    "three-replies": "PING 198.19.0.4 (198.19.0.4) from 198.19.0.3 : 56(84) bytes of data.\n"
                     "64 bytes from 198.19.0.4: icmp_seq=1 ttl=64 time=0.061 ms\n"
                     "64 bytes from 198.19.0.4: icmp_seq=2 ttl=64 time=0.05 ms\n"
                     "64 bytes from 198.19.0.4: icmp_seq=3 ttl=64 time=12.3456789 ms\n\n"
                     "--- 198.19.0.4 ping statistics ---\n"
                     "3 packets transmitted, 3 received, 0% packet loss, time 402ms\n"
                     "rtt min/avg/max/mdev = 0.050/0.055/0.061/0.004 ms\n",
    "lost-and-duplicated": "From 198.19.0.3 icmp_seq=1 Destination Host Unreachable\n"
                           "64 bytes from x: icmp_seq=2 ttl=64 time=0.5 ms\n"
                           "64 bytes from x: icmp_seq=2 ttl=64 time=0.7 ms (DUP!)\n",
    "odd-lines": "icmp_seq=0 time=1 ms\r\nicmp_seq=03 time=2. ms\nicmp_seq=4 time=x ms time=3 msx\n"
                 "icmp_seq=2 ttl\r time=9 ms\nicmp_seq= time=4 ms icmp_seq=1 time=.5 ms\n",
    "nothing": "",
    "unreadable-time": "64 bytes from x: icmp_seq=1 ttl=64 time=1.2.3 ms\n",
}


@pytest.fixture
def fake_ping(tmp_path):
    """A `ping` first on PATH printing tmp_path/ping.out and logging its arguments to tmp_path/ping.log."""
    bin_dir = tmp_path / "ping-bin"
    bin_dir.mkdir()
    (bin_dir / "ping").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/ping.log\ncat {tmp_path}/ping.out\n')
    (bin_dir / "ping").chmod(0o755)
    return bin_dir


def test_pings_print_what_the_python_standin_prints(tmp_path, front, fake_ping):
    node = Node(tmp_path / "node", Hardware(), front)
    node.env["PATH"] = f"{fake_ping}:{os.environ['PATH']}"
    log = tmp_path / "ping.log"
    for name, output in PING_OUTPUTS.items():
        (tmp_path / "ping.out").write_text(output)
        ping = ["-i", "2", "-ping", "-g", "address", "198.19.2.4"]
        want = python_standin(node, tmp_path, "hccn_tool", ping)
        want_log = log.read_text()
        log.unlink()
        assert node.call("hccn_tool", ping) == want, name
        assert want_log == "-n -c 3 -W 1 -i 0.2 -I 198.19.2.3 198.19.2.4\n"
        # The same ping; where the front cannot read a time as float() does, the Python stand-in pings again.
        assert log.read_text() == want_log * (2 if name == "unreadable-time" else 1), name
        log.unlink()


@pytest.mark.parametrize("faults, target", [
    ({}, "198.19.0.1"),  # the gateway: from the node's address
    ({"link_down": [2]}, "198.19.2.4"), ({"unreachable": ["198.19.2.4"]}, "198.19.2.4"),
    ({"unreachable": ["198.19.2.4"]}, "198.19.2.5"), ({"gateway_unreachable": True}, "198.19.0.1"),
    ({"gateway_unreachable": True}, "198.19.2.4"), ({"wrong_device_ip": {"2": "198.19.9.9"}}, "198.19.2.4"),
    ({"missing_devices": [2]}, "198.19.2.4"), ({}, "-inet6"),
], ids=["gateway", "link-down", "unreachable", "another-unreachable", "gateway-unreachable",
        "gateway-unreachable-peer", "wrong-device-ip", "missing-device", "odd-target"])
def test_pings_honour_the_faults_as_the_python_standin_does(tmp_path, front, fake_ping, faults, target):
    node = Node(tmp_path / "node", Hardware(), front)
    node.set_faults(faults)
    node.conf.write_text("address_1=198.19.1.77\n")  # another device's setting changes nothing
    node.env["PATH"] = f"{fake_ping}:{os.environ['PATH']}"
    (tmp_path / "ping.out").write_text(PING_OUTPUTS["three-replies"])
    ping = ["-i", "2", "-ping", "-g", "address", target]
    want = python_standin(node, tmp_path, "hccn_tool", ping)
    want_log = (tmp_path / "ping.log").read_text() if (tmp_path / "ping.log").exists() else ""
    (tmp_path / "ping.log").unlink(missing_ok=True)
    node.call("npu-smi", ["info"])  # the answer file is written...
    assert node.call("hccn_tool", ping) == want  # ...and the ping answered from its plan
    assert ((tmp_path / "ping.log").read_text() if (tmp_path / "ping.log").exists() else "") == want_log


def test_the_install_puts_the_front_at_the_tools_paths(tmp_path, front):
    node = Node(tmp_path / "node", Hardware(), front)
    for path in (*LAYOUT.npu_smi, LAYOUT.hccn_tool):
        assert in_upper(node.upper, path).read_bytes() == front.read_bytes()
    assert os.readlink(in_upper(node.upper, LAYOUT.hccn_tool_links[0])) == LAYOUT.hccn_tool
    assert (node.run / "standins" / "ascend_tools.py").read_text().startswith(f"#!{os.path.realpath(sys.executable)}")
    duo = Node(tmp_path / "duo", atlas_300i_duo(), front)
    assert not in_upper(duo.upper, LAYOUT.hccn_tool).exists()
    assert duo.call("npu-smi", ["info"])[0] == 0


def test_without_node_facts_the_front_says_what_the_python_standin_says(tmp_path, front):
    node = Node(tmp_path / "node", Hardware(), front)
    assert node.call("npu-smi", ["info", "-m"])[0] == 0
    (node.run / "node.json").unlink()  # answers are kept, for a node.json that is gone
    rc, out, err = node.call("npu-smi", ["info", "-m"])
    assert (rc, out) == (1, "") and err == f"emulator stand-in: {node.run}/node.json not found. Run this on an " \
        "emulated node, or in a container started with the emulator's base mounts (emulator.image.base_mounts())\n"
