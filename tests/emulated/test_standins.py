"""npu-smi and hccn_tool stand-ins print the real tools' formats, and every
injected fault shows up where the runbooks' checks look for it.

Expected lines are copied from the samples in docs/formats.md (section
given per constant); values that differ per node are filled in.
"""

import hashlib
import json
import subprocess
import sys

import pytest

from emulator import FaultError

from .conftest import REPO, ssh_ok

pytestmark = pytest.mark.emulated

# docs/formats.md §1a, `npu-smi info` (version 23.0.7 there)
NPU_SMI_FRAME = [
    "+------------------------------------------------------------------------------------------------+",
    "| npu-smi {v:<25}Version: {v:<53}|",
    "+---------------------------+---------------+----------------------------------------------------+",
    "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
    "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
    "+===========================+===============+====================================================+",
]
REF_1A_HEADER_23_0_7 = (
    "| npu-smi 23.0.7                   Version: 23.0.7                                               |")
REF_1A_DEVICE_4 = ["| 4     910B2               | OK            | 96.6        36                0    / 0             |",
                   "| 0                         | 0000:81:00.0  | 0           0    / 0          3347 / 65536         |"]
REF_1A_PROCESS_HEADER = (
    "| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |")
REF_1A_NO_PROCESS_0 = (
    "| No running processes found in NPU 0                                                            |")
# docs/formats.md §1e, `npu-smi info -m`
REF_1E_HEADER = "NPU ID                         Chip ID                        Chip Logic ID                  Chip Name"
REF_1E_ROWS = [
    "3                              0                              0                              Ascend 910B3",
    "3                              1                              -                              Mcu",
]
# docs/formats.md §2a
REF_TLS_OFF = ("dev_id:{d}, tls switch[0](0:disable, 1:enable), tls preconfigured[1](0:non-preset, 1:preset), "
               "tls alarm time threshold[60]days")


def test_npu_smi_info_has_the_real_table_format(cluster):
    out = ssh_ok(cluster, "node0", "npu-smi info").splitlines()
    version = cluster.hardware.driver_version
    assert out[:6] == [line.format(v=version) for line in NPU_SMI_FRAME]
    assert NPU_SMI_FRAME[1].format(v="23.0.7") == REF_1A_HEADER_23_0_7  # the template is the sample's line
    device_rows = out[6:6 + 8 * 3]
    for d in range(8):
        top, bottom, sep = device_rows[3 * d:3 * d + 3]
        assert top.startswith(f"| {d:<6}910B3") and "| OK " in top
        assert bottom.endswith("/ 65536         |") and sep == NPU_SMI_FRAME[5]
    # device 4 line for line as in the sample, but for the chip name
    assert device_rows[12:14] == [REF_1A_DEVICE_4[0].replace("910B2", "910B3"), REF_1A_DEVICE_4[1]]
    assert REF_1A_PROCESS_HEADER in out and REF_1A_NO_PROCESS_0 in out
    assert all(len(line) == 98 for line in out)


def test_npu_smi_mapping_and_board(cluster):
    out = ssh_ok(cluster, "node0", "npu-smi info -m").splitlines()
    assert out[0] == REF_1E_HEADER
    row = "{:<31}{:<31}{:<31}{}"
    assert row.format(3, 0, 0, "Ascend 910B3") == REF_1E_ROWS[0]  # the template is the sample's row
    # NPU 3's chip row (logic id 3 here: the sample host's first NPU was 3) and its Mcu row
    assert out[7:9] == [row.format(3, 0, 3, "Ascend 910B3"), REF_1E_ROWS[1]]
    board = ssh_ok(cluster, "node0", "npu-smi info -t board -i 3")
    assert f"\tSoftware Version               : {cluster.hardware.driver_version}\n" in board
    assert "\tPCIe Bus Info                  : 0000:02:00.0\n" in board
    assert "Health Status                  : OK" in ssh_ok(cluster, "node0", "npu-smi info -t health -i 0 -c 0")


def test_hccn_tool_network_checks(cluster):
    node = cluster.nodes[1]
    loop = "for i in 0 1 2 3 4 5 6 7; do hccn_tool -i $i -{} -g; done"
    ips = ssh_ok(cluster, node, loop.format("ip")).splitlines()
    assert ips == [line for ip in node.device_ips for line in (f"ipaddr:{ip}", "netmask:255.255.0.0")]
    assert ssh_ok(cluster, node, loop.format("link")).splitlines() == ["link status: UP"] * 8
    assert ssh_ok(cluster, node, loop.format("net_health")).splitlines() == ["net health status: Success"] * 8
    assert ssh_ok(cluster, node, loop.format("netdetect")).splitlines() == ["netdetect address: 198.19.255.254"] * 8
    assert ssh_ok(cluster, node, loop.format("gateway")).splitlines() == [
        f"default gateway:198.19.255.254, Iface:eth{d}" for d in range(8)]
    assert ssh_ok(cluster, node, loop.format("tls") + " | grep switch").splitlines() == [
        REF_TLS_OFF.format(d=d) for d in range(8)]
    ifnames = ssh_ok(cluster, node, loop.format("lldp") + " | grep Ifname").splitlines()
    assert len(ifnames) == 8 and all(line.startswith("\tIfname: 400GE1/") for line in ifnames)


def test_hccn_tool_ping_across_nodes_for_real(cluster):
    node0, node1 = cluster.nodes
    for d in range(8):
        out = ssh_ok(cluster, node0, f"hccn_tool -i {d} -ping -g address {node1.device_ips[d]}").splitlines()
        assert out[0] == f"device {d} PING {node1.device_ips[d]}"
        assert [line.split(",")[0] for line in out[1:4]] == ["recv seq=0", "recv seq=1", "recv seq=2"]
        assert out[4] == "3 packets transmitted, 3 received, 0.00% packet loss"


def test_hccn_tool_ping_fails_for_an_unreachable_peer(cluster):
    node0, node1 = cluster.nodes
    target = node1.device_ips[2]
    cluster.set_fault(node0, unreachable=[target])
    try:
        got = cluster.ssh(node0, f"hccn_tool -i 0 -ping -g address {target}")
        assert got.returncode != 0
        assert got.stdout.splitlines() == [f"device 0 PING {target}", "recv time out seq=0", "recv time out seq=1",
                                           "recv time out seq=2",
                                           "3 packets transmitted, 0 received, 100.00% packet loss"]
        # a real routing fault, not only the stand-in's word for it
        assert cluster.ssh(node0, f"ping -c 1 -W 1 {target}").returncode != 0
        assert cluster.ssh(node1, f"ping -c 1 -W 1 {node0.device_ips[0]}").returncode == 0
    finally:
        cluster.clear_faults(node0)
    ssh_ok(cluster, node0, f"hccn_tool -i 0 -ping -g address {target}")


def test_tls_switch_can_be_turned_off_and_stays_off(cluster):
    cluster.set_fault("node1", tls_on=[0, 5])
    try:
        check = "for i in 0 1 2 3 4 5 6 7; do hccn_tool -i $i -tls -g; done | grep switch"
        switches = [line.split("tls switch[")[1][0] for line in ssh_ok(cluster, "node1", check).splitlines()]
        assert switches == ["1", "0", "0", "0", "0", "1", "0", "0"]
        out = ssh_ok(cluster, "node1", "for i in 0 1 2 3 4 5 6 7; do hccn_tool -i $i -tls -s enable 0; done")
        assert out.splitlines() == ["Cmd executed successfully!"] * 8
        assert ssh_ok(cluster, "node1", check).splitlines() == [REF_TLS_OFF.format(d=d) for d in range(8)]
        assert cluster.faults("node1").get("tls_on", []) == []
    finally:
        cluster.clear_faults("node1")


def model_digest(cluster, node):
    return hashlib.sha256(ssh_ok(cluster, node, "cd /data/models/deepseek-r1 && sha256sum $(ls)").encode()).hexdigest()


# fault -> (shell command on node1, check on its output)
FAULTS = {
    "link_down": ({"link_down": [3]}, "hccn_tool -i 3 -link -g; hccn_tool -i 3 -net_health -g",
                  lambda out: out.splitlines() == ["link status: DOWN", "net health status: Fault"]),
    "tls_on": ({"tls_on": [1]}, "hccn_tool -i 1 -tls -g",
               lambda out: "tls switch[1](0:disable, 1:enable)" in out),
    "net_health_fail": ({"net_health_fail": [6]}, "hccn_tool -i 6 -net_health -g; hccn_tool -i 6 -link -g",
                        lambda out: out.splitlines() == ["net health status: Fault", "link status: UP"]),
    "missing_devices": ({"missing_devices": [7]}, "npu-smi info | grep -c 910B3; ls /dev/davinci7 2>&1; "
                        "npu-smi info -m | grep -c Ascend",
                        lambda out: (out.splitlines()[0] == "7" and "No such file" in out
                                     and out.splitlines()[-1] == "7")),
    "unhealthy_devices": ({"unhealthy_devices": {"2": "Warning", "5": "Alarm"}},
                          "npu-smi info | grep 910B3 | cut -c30-44",
                          lambda out: [s.strip() for s in out.splitlines()] ==
                          ["OK", "OK", "Warning", "OK", "OK", "Alarm", "OK", "OK"]),
    "driver_version": ({"driver_version": "23.0.6"}, "npu-smi info | sed -n 2p; head -1 "
                       "/usr/local/Ascend/driver/version.info; npu-smi info -t board -i 0 | grep Software",
                       lambda out: "| npu-smi 23.0.6                   Version: 23.0.6" in out
                       and "Version=23.0.6" in out and "Software Version               : 23.0.6" in out),
    "wrong_device_ip": ({"wrong_device_ip": {"4": "198.19.9.9"}}, "hccn_tool -i 4 -ip -g",
                        lambda out: out.startswith("ipaddr:198.19.9.9")),
    "stale_rootinfo": ({"stale_rootinfo": True}, "cat /etc/hccl_rootinfo.json",
                       lambda out: out.startswith("{") and "stale" in json.loads(out)["rootinfo"]),
    "missing_model": ({"missing_model": True}, "ls /data/models/deepseek-r1 2>&1 || true",
                      lambda out: "No such file" in out),
}


@pytest.mark.parametrize("name", FAULTS)
def test_each_fault_shows_up_and_clears(cluster, name):
    faults, command, check = FAULTS[name]
    before = ssh_ok(cluster, "node1", command + " 2>&1 || true")
    cluster.set_fault("node1", **faults)
    try:
        out = ssh_ok(cluster, "node1", command + " 2>&1 || true")
        assert check(out), out
        assert not check(ssh_ok(cluster, "node0", command + " 2>&1 || true"))  # node0 is untouched
    finally:
        cluster.clear_faults("node1")
    assert ssh_ok(cluster, "node1", command + " 2>&1 || true") == before


def test_model_file_differs_and_duplicate_hostname(cluster):
    node0, node1 = cluster.nodes
    assert model_digest(cluster, node0) == model_digest(cluster, node1)
    cluster.set_fault(node1, model_file_differs=True, hostname=node0.hostname)
    try:
        assert model_digest(cluster, node0) != model_digest(cluster, node1)
        assert ssh_ok(cluster, node1, "hostname").strip() == node0.hostname
        # a container started now (host network) carries the duplicate too, as Ray would see it
        got = cluster.ssh(node1, "docker run --rm --network host " + " ".join(__import__("emulator").base_docker_args())
                          + " ascemu/runtime:latest hostname")
        assert got.stdout.strip() == node0.hostname
    finally:
        cluster.clear_faults(node1)
    assert model_digest(cluster, node0) == model_digest(cluster, node1)
    assert ssh_ok(cluster, node1, "hostname").strip() == node1.hostname


def test_fault_command_line(cluster):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(cluster.state_dir), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)
    got = cli("fault", "node1", "link_down=2,3", "stale_rootinfo=true")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"node1": {"link_down": [2, 3], "stale_rootinfo": True}}
    assert ssh_ok(cluster, "node1", "hccn_tool -i 2 -link -g").strip() == "link status: DOWN"
    got = cli("fault", "node1", "no_such_fault=1")
    assert got.returncode == 1 and "unknown fault 'no_such_fault'" in got.stderr and "link_down" in got.stderr
    got = cli("fault", "node1", "--clear")
    assert got.returncode == 0 and json.loads(got.stdout) == {"node1": {}}
    assert ssh_ok(cluster, "node1", "hccn_tool -i 2 -link -g").strip() == "link status: UP"


def test_bad_fault_values_are_rejected(cluster):
    for bad in ({"link_down": [8]}, {"unhealthy_devices": {"1": "Broken"}}, {"unreachable": ["not-an-ip"]},
                {"missing_model": "maybe"}):
        with pytest.raises(FaultError):
            cluster.set_fault("node1", **bad)
    assert cluster.faults("node1") == {}
