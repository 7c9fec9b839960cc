"""Host-side network plumbing: one bridge, one network namespace and veth per node.

Addresses come from 198.18.0.0/15, the range reserved for network benchmark
tests (RFC 2544), so they can never be a real host. K is the cluster's subnet
index (default 0; tests use their own so they can run beside a user's cluster):

    bridge (host side)     198.18.K.1/24      and 198.19.255.254/16 (the
                                              devices' netdetect/gateway address)
    node i                 198.18.K.(10+i)/24 on eth0
    node i, NPU device d   198.19.i.(d+1)/32  on eth0, plus one on-link route
                           198.19.0.0/16 so device IPs of all nodes reach each
                           other across the bridge (real pings, real failures)

A device IP is a /32 so removing one (link down) never drops the others.
"""

from __future__ import annotations

import ipaddress
import subprocess

DEVICE_SUPERNET = ipaddress.ip_network("198.19.0.0/16")
DEVICE_GATEWAY = "198.19.255.254"
NODE_PREFIXLEN = 24
MAX_NODES = 200  # addresses .10-.209; .254 is the dead gateway


def bridge_address(subnet: int = 0) -> str:
    return f"198.18.{subnet}.1"


def dead_gateway(subnet: int = 0) -> str:
    """Never assigned: the nodes' default route leads nowhere."""
    return f"198.18.{subnet}.254"


class NetworkError(RuntimeError):
    pass


def node_address(index: int, subnet: int = 0) -> str:
    return f"198.18.{subnet}.{10 + index}"


def device_ip(node_index: int, device: int) -> str:
    return f"198.19.{node_index}.{device + 1}"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return run("ip", "link", "show", "dev", name, check=False).returncode == 0


def netns_list() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_exists(name: str) -> bool:
    return name in netns_list()


def create_bridge(name: str, subnet: int = 0) -> None:
    run("ip", "link", "add", name, "type", "bridge")
    run("ip", "addr", "add", f"{bridge_address(subnet)}/{NODE_PREFIXLEN}", "dev", name)
    run("ip", "addr", "add", f"{DEVICE_GATEWAY}/{DEVICE_SUPERNET.prefixlen}", "dev", name)
    run("ip", "link", "set", name, "up")


def create_node_netns(netns: str, veth: str, bridge: str, address: str, device_ips: list[str],
                      subnet: int = 0) -> None:
    run("ip", "netns", "add", netns)
    # The peer is created directly inside the namespace as eth0, like a
    # server's NIC; the host side is enslaved to the bridge.
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    run("ip", "link", "set", veth, "master", bridge, "up")
    run("ip", "-n", netns, "link", "set", "lo", "up")
    run("ip", "-n", netns, "addr", "add", f"{address}/{NODE_PREFIXLEN}", "dev", "eth0")
    run("ip", "-n", netns, "link", "set", "eth0", "up")
    for ip in device_ips:
        run("ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "eth0")
    run("ip", "-n", netns, "route", "add", str(DEVICE_SUPERNET), "dev", "eth0", "scope", "link")
    # A default route is needed by tools that find "their" address by routing
    # towards the internet (Ray's autodetect, `ip route get`). Its gateway is
    # an address nobody owns, so ARP never resolves and nothing a node sends
    # to a non-test address ever leaves the node.
    run("ip", "-n", netns, "route", "add", "default", "via", dead_gateway(subnet), "dev", "eth0", "src", address)


def host_has_address(ip: str) -> bool:
    out = run("ip", "-o", "-4", "addr", "show", check=False).stdout
    return any(line.split()[3].split("/")[0] == ip for line in out.splitlines())


def netns_pids(netns: str) -> list[int]:
    out = run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_netns(netns: str) -> None:
    if netns_exists(netns):
        run("ip", "netns", "del", netns)


def delete_link(name: str) -> None:
    # A node's host-side veth goes away by itself, a moment after its netns
    # is deleted (the kernel destroys the pair): gone in between is success.
    if link_exists(name):
        done = run("ip", "link", "del", name, check=False)
        if done.returncode != 0 and link_exists(name):
            raise NetworkError(f"`ip link del {name}` failed: {done.stderr.strip() or done.stdout.strip()}")


def netns_addresses(netns: str) -> set[str]:
    out = run("ip", "-n", netns, "-o", "-4", "addr", "show", "dev", "eth0").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


def set_device_address(netns: str, ip: str, present: bool) -> None:
    run("ip", "-n", netns, "addr", "add" if present else "del", f"{ip}/32", "dev", "eth0")


def blackholes(netns: str) -> set[str]:
    out = run("ip", "-n", netns, "route", "show", "type", "blackhole").stdout
    return {line.split()[1].split("/")[0] for line in out.splitlines() if line.startswith("blackhole")}


def set_blackholes(netns: str, targets: set[str]) -> None:
    """Make exactly `targets` unreachable from this node (a real routing fault)."""
    have = blackholes(netns)
    for ip in sorted(targets - have):
        run("ip", "-n", netns, "route", "add", "blackhole", f"{ip}/32")
    for ip in sorted(have - targets):
        run("ip", "-n", netns, "route", "del", "blackhole", f"{ip}/32")
