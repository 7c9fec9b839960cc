"""Emulated nodes that answer the node checks and nothing else, by the hundred (root).

A full emulated node (emulator/provision.py) runs sshd, dockerd and
containerd and holds the runtime image: about 200 MB and seconds of CPU to
start, too much for 256 of them on a shared 2-core machine. `pulumi preview`
of a fresh stack needs less of a node: the program's node checks (preflight
and the peer pings, pulumi-command `local.run` of `bash -s` over the system
ssh) run on it; nothing else reaches it. An sshd-only node here is a full
node minus dockerd:

- its own mount, UTS, IPC and PID namespaces built by emulator/holder.py
  exactly as for a full node (overlay root with the node's Ascend files from
  emulator/nodefs.py: the npu-smi and hccn_tool stand-ins, driver and
  firmware version files, /etc/hccn.conf, the model fixture; its hostname;
  its boot id), with the node's own sshd, host key and authorized key; the
  sshd is the node's PID 1 (holder.py's `exec`), so a node costs one sshd;
- its device IPs on its interface, pinged for real by hccn_tool's `-ping`;
- no dockerd: one process (`DockerVersionApi`, in the benchmark) answers
  the Docker Engine API's `/_ping` and `/version` on every node's
  /run/docker.sock with this machine's dockerd version, so the preflight's
  `docker version` (the real docker CLI) reads "running". Nothing else of
  the API answers: a check that needs images or containers (the image check,
  which waits for the image step and so does not run in a fresh preview)
  would fail.

Addresses: one emulator subnet (198.18.K.0/24, emulator/network.py) holds 200
node addresses, fewer than 256, and a stack refuses two nodes at one host.
So each node here is reached at 198.19.<i>.200/32, in the emulator's device
range (198.19.<i>.1-16 are node i's device IPs, 198.19.255.254 the bridge):
on the node an on-link route to 198.19.0.0/16 as on every emulated node, on
this machine one /32 route per node through the cluster's bridge (removed
with the bridge). The bridge also holds 198.18.K.1, so that the emulator's
leftover check sees the subnet taken. Every node has its own namespace,
address, port-22 sshd, host key, hostname, files and device IPs.

One kernel for every node: the ARP (neighbour) table is one table for all
network namespaces, bounded by the init namespace's
net.ipv4.neigh.default.gc_thresh3 (1024 by default). The peer pings of 16
nodes (all pairs, 8 devices: 16 x 15 x 8 senders' entries and as many
receivers') overflow it ("neighbour: arp_cache: neighbor table overflow!" in
the kernel log) and the last nodes' pings fail. On a real cluster every node
has its own kernel and table; `neighbour_room` raises the limits for the run
to what the nodes' pings need and puts the old values back.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from ascend_inference.peers import ping_targets
from emulator import network, provision
from emulator.cluster import Cluster
from emulator.node import ClusterError, Node, process_alive, tcp_open


def sshd_only_cluster(n: int, state_dir: Path, *, prefix: str, subnet: int, log=print) -> Cluster:
    """n sshd-only nodes; on failure what was made is removed and the error raised."""
    provision.preflight()
    provision.check_no_leftovers(prefix, subnet)
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(state_dir=state_dir, prefix=prefix, subnet=subnet)
    cluster.bridge = f"{prefix}-br0"
    try:
        _create(cluster, n, log)
    except BaseException:
        remove(cluster)
        raise
    return cluster


def _create(cluster: Cluster, n: int, log) -> None:
    clock = provision.Clock(log)
    (cluster.state_dir / "ssh").mkdir(exist_ok=True)
    provision.keygen(cluster.ssh_key_path, "ascemu-client")
    _record(cluster)
    network.create_bridge(f"{cluster.prefix}-br0", cluster.subnet)
    if n > 256:
        raise ClusterError(f"{n} nodes: the addresses 198.19.<i>.200 are for nodes 0 to 255")
    for i in range(n):
        cluster.nodes.append(Node(
            name=f"node{i}", index=i, address=node_address(i), hostname=f"ascend-node{i}",
            netns=f"{cluster.prefix}-node{i}", veth=f"{cluster.prefix}-n{i}",
            device_ips=[network.device_ip(i, d) for d in range(cluster.hardware.npu_count)],
            dir=str(cluster.state_dir / "nodes" / f"node{i}")))
    all_hosts = [(node.hostname, node.address) for node in cluster.nodes]
    for node in cluster.nodes:
        _node_netns(node, f"{cluster.prefix}-br0")
        provision.prepare_node_files(cluster, node, all_hosts)
        holder = Path(node.dir) / "holder.json"
        spec = json.loads(holder.read_text())
        spec["exec"] = spec.pop("daemons")["sshd"]
        spec["daemons"] = {}
        holder.write_text(json.dumps(spec, indent=2) + "\n")
        provision.start_holder(node)
        _record(cluster)
    clock(f"{n} sshd-only nodes started")
    for node in cluster.nodes:
        deadline = time.monotonic() + 60
        while not ((Path(node.dir) / "run" / "holder.ready").exists() and tcp_open(node.address, node.ssh_port)):
            if time.monotonic() > deadline or not process_alive(node.holder_pid):
                raise ClusterError(f"{node.name}: sshd did not come up: "
                                   f"{(Path(node.dir) / 'holder.log').read_text(errors='replace')[-800:]}")
            time.sleep(0.05)
    provision.write_ssh_client_files(cluster)
    clock(f"{n} nodes answer ssh")


NEIGHBOUR_LIMITS = [Path(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{i}") for i in (2, 3)]


@contextlib.contextmanager
def neighbour_room(n: int, npus: int):
    """The kernel's neighbour table (shared by every namespace) large enough
    for n nodes' peer pings: each ping of a device IP leaves an entry in the
    sender's namespace and one in the receiver's; plus the control host's and
    each node's entry for the ssh connection, and the table's default room
    for the rest of the machine. Only raised, never lowered; restored after."""
    needed = sum(2 * npus * len(ping_targets(n, i)) + 2 for i in range(n))
    before = [int(path.read_text()) for path in NEIGHBOUR_LIMITS]
    wanted = [max(old, needed + 1024 * (k + 1)) for k, old in enumerate(before)]  # thresh2 below thresh3
    try:
        for path, value in reversed(list(zip(NEIGHBOUR_LIMITS, wanted, strict=True))):  # the hard limit first
            path.write_text(str(value))
        yield
    finally:
        for path, value in zip(NEIGHBOUR_LIMITS, before, strict=True):
            path.write_text(str(value))


def node_address(index: int) -> str:
    return f"198.19.{index}.200"


def _node_netns(node: Node, bridge: str) -> None:
    """emulator/network.py create_node_netns with the node at a /32 in 198.19.0.0/16."""
    run = network.run
    run("ip", "netns", "add", node.netns)
    run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    run("ip", "link", "set", node.veth, "master", bridge, "up")
    run("ip", "-n", node.netns, "link", "set", "lo", "up")
    for ip in [node.address, *node.device_ips]:
        run("ip", "-n", node.netns, "addr", "add", f"{ip}/32", "dev", "eth0")
    run("ip", "-n", node.netns, "link", "set", "eth0", "up")
    run("ip", "-n", node.netns, "route", "add", str(network.DEVICE_SUPERNET), "dev", "eth0", "scope", "link")
    run("ip", "route", "add", f"{node.address}/32", "dev", bridge, "src", network.DEVICE_GATEWAY)


def _record(cluster: Cluster) -> None:
    """What `remove` needs, written before it is made (a killed run can be undone)."""
    (cluster.state_dir / "sshd-nodes.json").write_text(json.dumps(cluster.to_json(), indent=1))


def _owned(pid: int | None, netns: str) -> bool:
    """pid still runs in the network namespace we made for it."""
    if not pid or not process_alive(pid):
        return False
    with contextlib.suppress(OSError):
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{netns}").st_ino
    return False


def remove(cluster: Cluster) -> None:
    """Stop every node (its PID 1 sshd: the kernel ends the rest of its PID
    namespace), then remove the namespaces, veths, bridge and files."""
    for node in cluster.nodes:
        if node.holder_pid and _owned(node.holder_pid, node.netns):
            os.kill(node.holder_pid, signal.SIGKILL)
        elif network.netns_exists(node.netns):
            # A node started but not yet recorded (a run killed in between): its
            # processes are in the namespace this benchmark made for it.
            for pid in network.netns_pids(node.netns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    for node in cluster.nodes:
        proc = provision._SPAWNED.pop(node.unshare_pid or 0, None)  # the `unshare` we started: reap it
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    for netns, veth in dict.fromkeys((node.netns, node.veth) for node in cluster.nodes):
        network.delete_netns(netns)
        network.delete_link(veth)
    if cluster.bridge:
        network.delete_link(cluster.bridge)
    shutil.rmtree(cluster.state_dir, ignore_errors=True)


class DockerVersionApi:
    """The Docker Engine API's `/_ping` and `/version`, on every node's
    /run/docker.sock (reached from the host through the node's PID 1,
    /proc/<pid>/root), answered by one thread of this process with the version
    of this machine's dockerd. Every other path answers 404."""

    def __init__(self, cluster: Cluster):
        out = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=True).stdout
        version = re.search(r"version ([^\s,]+)", out)
        # API versions of the daemon (docker 20.10 speaks 1.41, down to 1.12).
        self.version = {"Version": version.group(1) if version else "unknown", "ApiVersion": "1.41",
                        "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64", "KernelVersion": os.uname().release,
                        "Components": [{"Name": "Engine", "Version": version.group(1) if version else "unknown"}]}
        self.paths = [f"/proc/{node.holder_pid}/root/run/docker.sock" for node in cluster.nodes]
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DockerVersionApi:
        self.thread.start()
        self.started.wait(60)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.loop.run_until_complete(asyncio.start_unix_server(self._serve, path=path))
        self.started.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ", 2)[:2]
                path = re.sub(r"^/v[0-9.]+", "", target.decode().split("?")[0])
                status, body = "200 OK", b"OK"
                if path == "/version":
                    body = json.dumps(self.version).encode()
                elif path != "/_ping":
                    status, body = "404 Not Found", b'{"message":"not answered by the benchmark\'s stand-in"}'
                writer.write(f"HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nOstype: linux\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                             + (b"" if method == b"HEAD" else body))
                await writer.drain()
        writer.close()
