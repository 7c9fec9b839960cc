"""Provisioning: making and removing the nodes of an emulated cluster.

The job kind's providers do (`provision.go`): given what the cluster should
look like, make its nodes, and later remove everything that was made. Per
node that is a network namespace with a veth on the bridge (network.py), a
directory under <state_dir>/nodes/ (overlay upper dir with the fake Ascend
files from nodefs.py, docker data root, run dir with logs and the fault
file), a holder process (holder.py: PID 1 of the node's PID/mount/UTS/IPC
namespaces) that runs the node's sshd and dockerd, and the runtime image
imported into that dockerd (image.py).

Everything is recorded in <state_dir>/cluster.json (Cluster.save) *before*
it is made, so `destroy` can undo a partial `create` (even one that was
killed). Processes are only ever stopped by the PIDs recorded there, after
checking that the PID still runs our holder.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import faults, gpustack, network
from . import image as imagelib
from .node import HOLDER, SSH_PORT, SSH_USER, ClusterError, Node, process_alive, run, runs_holder_of, tcp_open
from .nodefs import BUS_IDS, build_ascend_front, device_specs, install_ascend_tools, populate_upper, sshd_config

if TYPE_CHECKING:
    from .cluster import Cluster

REQUIRED_BINARIES = ["ip", "nsenter", "unshare", "sshd", "ssh", "ssh-keygen", "dockerd", "containerd",
                     "runc", "docker", "ping", "gcc"]

Log = Callable[[str], None]
_SPAWNED: dict[int, subprocess.Popen] = {}  # unshare processes this Python process started


class Clock:
    """Prefixes log lines with the seconds since provisioning started."""

    def __init__(self, log: Log):
        self.start, self.log = time.monotonic(), log

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def __call__(self, msg: str) -> None:
        self.log(f"[{self.elapsed():6.1f}s] {msg}")


# ---------------------------------------------------------------------------
# before anything is made
# ---------------------------------------------------------------------------

def check_request(n: int, prefix: str, subnet: int, hostnames: Sequence[str] | None,
                  duplicate_hostname: bool) -> list[str]:
    """Refuse settings the machine cannot hold; returns the nodes' hostnames."""
    if not 1 <= n <= network.MAX_NODES:
        raise ClusterError(f"--nodes must be between 1 and {network.MAX_NODES}, got {n}")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", prefix):
        # it names <prefix>-br0 and <prefix>-n<i>: Linux allows 15 characters
        raise ClusterError(f"--prefix must be 1-10 lowercase letters/digits, got {prefix!r}")
    if not 0 <= subnet <= 255:
        raise ClusterError(f"--subnet must be 0..255, got {subnet}")
    preflight()
    hostnames = list(hostnames) if hostnames else [f"ascend-node{i}" for i in range(n)]
    if len(hostnames) != n:
        raise ClusterError(f"{len(hostnames)} hostnames given for {n} nodes")
    if duplicate_hostname:
        if n < 2:
            raise ClusterError("a duplicate hostname needs at least 2 nodes")
        hostnames[1] = hostnames[0]
    return hostnames


def preflight() -> None:
    if os.geteuid() != 0:
        raise ClusterError("the emulator needs root (namespaces, bridges, dockerd); run it as root, as CI does")
    missing = [b for b in REQUIRED_BINARIES if not shutil.which(b)]
    if missing:
        raise ClusterError(f"missing programs: {', '.join(missing)}. Install the Debian packages in "
                           f"emulator/apt-packages.txt (apt-get install -y $(cat emulator/apt-packages.txt))")
    if not os.path.exists("/usr/lib/openssh/sftp-server"):
        raise ClusterError("missing /usr/lib/openssh/sftp-server (Debian package openssh-sftp-server)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise ClusterError("the kernel has no overlay filesystem; the emulated nodes need it")


def check_no_leftovers(prefix: str, subnet: int) -> None:
    leftovers = [ns for ns in network.netns_list() if ns.startswith(f"{prefix}-node")]
    if network.link_exists(f"{prefix}-br0"):
        leftovers.append(f"bridge {prefix}-br0")
    if network.host_has_address(network.bridge_address(subnet)):
        leftovers.append(f"address {network.bridge_address(subnet)} (subnet {subnet} in use)")
    if leftovers:
        raise ClusterError(f"another emulated cluster (or its leftovers) exists: {', '.join(leftovers)}. "
                           "Run `python -m emulator down --state-dir DIR` with the state dir it was started "
                           "with (default .emulator/ in the repo), or pick another --prefix and --subnet.")


# ---------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------

def create(cluster: Cluster, n: int, hostnames: list[str], clock: Clock) -> None:
    """Make n nodes for a new cluster record; the caller tears down on failure."""
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    cluster.save()  # from here on `down` knows this state dir is ours
    clock(f"creating {n} nodes in {cluster.state_dir}")
    (cluster.state_dir / "ssh").mkdir(exist_ok=True)
    keygen(cluster.ssh_key_path, "ascemu-client")

    cluster.bridge = f"{cluster.prefix}-br0"
    cluster.save()
    network.create_bridge(cluster.bridge, cluster.subnet)
    clock(f"bridge {cluster.bridge} {network.bridge_address(cluster.subnet)}/24")

    for i in range(n):
        cluster.nodes.append(Node(
            name=f"node{i}", index=i, address=network.node_address(i, cluster.subnet), hostname=hostnames[i],
            netns=f"{cluster.prefix}-node{i}", veth=f"{cluster.prefix}-n{i}",
            device_ips=[network.device_ip(i, d) for d in range(cluster.hardware.npu_count)],
            dir=str(cluster.state_dir / "nodes" / f"node{i}")))
    cluster.save()

    all_hosts = [(node.hostname, node.address) for node in cluster.nodes]
    for node in cluster.nodes:
        prepare_node_files(cluster, node, all_hosts)
        network.create_node_netns(node.netns, node.veth, cluster.bridge, node.address, node.device_ips,
                                  cluster.subnet)
        start_holder(node)
        cluster.save()
    clock(f"{n} node namespaces created, holders started; waiting for sshd and dockerd")

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for node in pool.map(wait_ready, cluster.nodes):
            clock(f"{node.name}: {node.hostname} at {node.address}: sshd and dockerd ready")
    cluster.timings["nodes_ready_s"] = clock.elapsed()

    archive = imagelib.build_image(cluster.state_dir / "image" / "runtime.tar", cluster.image)
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        for node in pool.map(lambda nd: load_image(nd, archive), cluster.nodes):
            clock(f"{node.name}: image {cluster.image} loaded")

    write_ssh_client_files(cluster)
    for node in cluster.nodes:  # the path a user (and the Pulumi program) takes: real ssh
        got = node.ssh(cluster.ssh_config_path, "hostname", timeout=30)
        if got.returncode != 0 or got.stdout.strip() != node.hostname:
            raise ClusterError(f"{node.name}: `ssh {node.ssh_target} hostname` returned "
                               f"{got.returncode}: {got.stdout.strip()} {got.stderr.strip()}")
    clock(f"ssh to every node works (key {cluster.ssh_key_path})")
    cluster.status = "up"
    cluster.timings["up_s"] = clock.elapsed()
    cluster.save()
    clock(f"cluster up: {n} nodes in {cluster.timings['up_s']:.1f} s")


def keygen(path: Path, comment: str) -> None:
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def prepare_node_files(cluster: Cluster, node: Node, all_hosts: list[tuple[str, str]]) -> None:
    """The node's directory: overlay upper with the Ascend files, sshd keys and
    config, node.json, an empty fault file, and holder.json for its PID 1."""
    d = Path(node.dir)
    for sub in ("upper", "work", "root", "docker", "run"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    hardware = cluster.hardware
    populate_upper(d / "upper", layout=cluster.layout, hw=hardware, hostname=node.hostname,
                   address=node.address, all_hosts=all_hosts, device_ips=node.device_ips,
                   gateway=network.DEVICE_GATEWAY)
    run_dir = node.run_dir
    keygen(run_dir / "ssh_host_ed25519_key", f"ascemu-{node.name}")
    shutil.copy(cluster.ssh_key_path.with_suffix(".pub"), run_dir / "authorized_keys")
    (run_dir / "sshd_config").write_text(sshd_config(node.address, node.ssh_port))
    (run_dir / "node.json").write_text(json.dumps({
        "name": node.name, "index": node.index, "hostname": node.hostname, "address": node.address,
        "chip_name": hardware.chip_name, "npu_count": hardware.npu_count,
        "hbm_mb": hardware.hbm_mb, "driver_version": hardware.driver_version,
        "firmware_version": hardware.firmware_version, "device_ips": node.device_ips,
        "netmask": hardware.netmask, "netdetect": network.DEVICE_GATEWAY,
        "gateway": network.DEVICE_GATEWAY, "bus_ids": BUS_IDS,
        "chips_per_npu": hardware.chips_per_npu, "super_pod_id": hardware.super_pod_id,
        "chips_per_card": hardware.chips_per_card, "fabric": hardware.fabric}, indent=2) + "\n")
    faults.write(run_dir, {})
    install_ascend_tools(d / "upper", run_dir, layout=cluster.layout, hw=hardware,
                         front=build_ascend_front(cluster.state_dir / "image"))
    # The stand-in DCMI library GPUStack's workers detect NPUs through (gpustack.py).
    gpustack.install_dcmi(cluster, d / "upper", run_dir)
    spec = {
        "hostname": node.hostname, "root": str(d / "root"), "upper": str(d / "upper"),
        "work": str(d / "work"), "docker_dir": str(d / "docker"), "run_dir": str(run_dir),
        "devices": device_specs(hardware.npu_count, set()), "shm_size": "50%",
        "daemons": {
            "sshd": [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", "/run/ascemu/sshd_config"],
            "dockerd": [shutil.which("dockerd"), "--data-root", "/var/lib/docker", "--exec-root", "/run/docker",
                        "-H", "unix:///run/docker.sock", "--pidfile", "/run/docker.pid",
                        # the node's netns is ours; no NAT or host iptables rules are wanted
                        "--iptables=false", "--ip-masq=false",
                        "--cgroup-parent", f"{cluster.prefix}-{node.name}"],
        },
    }
    (d / "holder.json").write_text(json.dumps(spec, indent=2) + "\n")


def start_holder(node: Node) -> None:
    """Start the node's PID 1 in its network namespace and record its PID."""
    d = Path(node.dir)
    argv = ["nsenter", f"--net=/run/netns/{node.netns}", "--",
            "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--propagation", "private", "--",
            imagelib.python_path(), str(HOLDER), str(d / "holder.json")]
    with open(d / "holder.log", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    node.unshare_pid = proc.pid  # nsenter execs unshare: same PID
    _SPAWNED[proc.pid] = proc  # so a `down` in this same process can reap it
    deadline = time.time() + 10
    while time.time() < deadline:
        children = _children(proc.pid)
        if children:
            node.holder_pid = children[0]
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise ClusterError(f"{node.name}: holder did not start. {_tail(d / 'holder.log')}")


def wait_ready(node: Node) -> Node:
    """Wait until the holder has set the node up and its sshd and dockerd answer."""
    run_dir = node.run_dir
    deadline = time.time() + 60
    while not (run_dir / "holder.ready").exists():
        if not process_alive(node.holder_pid):
            raise ClusterError(f"{node.name}: node setup failed. {_tail(Path(node.dir) / 'holder.log')}")
        if time.time() > deadline:
            raise ClusterError(f"{node.name}: node setup timed out. {_tail(Path(node.dir) / 'holder.log')}")
        time.sleep(0.05)
    _wait_for(lambda: tcp_open(node.address, node.ssh_port), 15,
              lambda: f"{node.name}: sshd not listening on {node.address}:{node.ssh_port}. "
                      f"{_tail(run_dir / 'sshd.log')}")
    _wait_for(node.docker_answers, 60,
              lambda: f"{node.name}: dockerd did not answer on /run/docker.sock. {_tail(run_dir / 'dockerd.log')}")
    return node


def reboot(cluster: Cluster, node: Node) -> Node:
    """A power cycle of one node: its PID 1 is killed and with it every process
    of the node (sshd, dockerd, containerd, the containers, Ray, the engines,
    ssh sessions), then it boots again from its disk with a new boot id. What
    lives on disk stays (the overlay's upper layer, /var/lib/docker: images and
    containers, which dockerd finds exited); /run, /dev/shm and the mounts are
    new, and the node's faults are applied again (faults.json is on disk)."""
    problems = stop_holder(node)
    if problems:
        raise ClusterError("; ".join(problems))
    (node.run_dir / "boot_id").write_text(f"{uuid.uuid4()}\n")
    (node.run_dir / "holder.ready").unlink(missing_ok=True)
    start_holder(node)
    wait_ready(node)
    faults.apply(node, cluster.layout, cluster.hardware.npu_count, cluster.hardware.driver_version,
                 faults.read(node.run_dir))
    return node


def load_image(node: Node, archive: Path) -> Node:
    """`docker load` the runtime image archive (emulator/image.py build_image)."""
    got = node.exec(["docker", "-H", "unix:///run/docker.sock", "load", "-i", str(archive)], timeout=120)
    if got.returncode != 0:
        raise ClusterError(f"{node.name}: docker load failed: {got.stderr.strip()}")
    return node


def write_ssh_client_files(cluster: Cluster) -> None:
    """known_hosts, an ssh config naming node0.., and an `ssh` wrapper for docker's ssh://."""
    lines = []
    for node in cluster.nodes:
        key = (Path(node.dir) / "run" / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{node.address} {key[0]} {key[1]}")
    cluster.known_hosts_path.write_text("\n".join(lines) + "\n")
    hosts = " ".join(f"{n.name} {n.address}" for n in cluster.nodes)
    config = [f"# ssh settings for the emulated nodes: ssh -F {cluster.ssh_config_path} node0"]
    for node in cluster.nodes:
        config += [f"Host {node.name}", f"    HostName {node.address}"]
    config += [f"Host {hosts}", f"    User {SSH_USER}", f"    Port {SSH_PORT}",
               f"    IdentityFile {cluster.ssh_key_path}", "    IdentitiesOnly yes",
               f"    UserKnownHostsFile {cluster.known_hosts_path}", "    StrictHostKeyChecking yes",
               "    BatchMode yes", "    LogLevel INFO", "    ConnectTimeout 10"]
    cluster.ssh_config_path.write_text("\n".join(config) + "\n")
    cluster.bin_dir.mkdir(exist_ok=True)
    wrapper = cluster.bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\n# docker -H ssh://... runs `ssh`; this one knows the emulator key\n'
                       f'exec {shutil.which("ssh")} -F {cluster.ssh_config_path} "$@"\n')
    wrapper.chmod(0o755)


# ---------------------------------------------------------------------------
# destroy
# ---------------------------------------------------------------------------

def destroy(cluster: Cluster, log: Log) -> list[str]:
    """Remove everything `create` made for this cluster record, even a partial one.

    Returns the problems it could not fix (empty when all is gone)."""
    state_dir = cluster.state_dir
    problems = []
    clock = Clock(log)
    for node in cluster.nodes:
        problems += stop_holder(node)
    for node in cluster.nodes:
        # Processes die asynchronously after their PID 1; the netns is free
        # once none is left in it.
        # (`node` bound as a default: _wait_for calls the predicate right away, in this iteration.)
        _wait_for(lambda node=node: not (network.netns_exists(node.netns) and network.netns_pids(node.netns)),
                  10, None)
        left = network.netns_pids(node.netns) if network.netns_exists(node.netns) else []
        if left:
            problems.append(f"{node.name}: processes still in {node.netns}: {left} (not ours to kill)")
        network.delete_netns(node.netns)
        network.delete_link(node.veth)
        _remove_cgroups(f"{cluster.prefix}-{node.name}")
    if cluster.nodes:
        clock(f"stopped {len(cluster.nodes)} nodes, removed their namespaces and veths")
    if cluster.bridge:
        network.delete_link(cluster.bridge)
        clock(f"removed bridge {cluster.bridge}")
    for mount_point in _mounts_under(state_dir):  # only a crashed kernel-side setup could leave one
        subprocess.run(["umount", "-l", mount_point], check=False)
        problems.append(f"had to unmount {mount_point}")
    for name in ("nodes", "image", "ssh", "bin", "cluster.tmp"):
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (state_dir / "cluster.json").unlink()
    try:
        state_dir.rmdir()  # only if nothing else lives there
    except OSError:
        pass
    clock(f"removed {state_dir}" + (f" (problems: {'; '.join(problems)})" if problems else ""))
    return problems


def stop_holder(node: Node) -> list[str]:
    """Kill the node's PID 1; the kernel then kills every process of the node
    (sshd, dockerd, containerd, containers, Ray, ssh sessions)."""
    holders = [node.holder_pid] if node.is_running() else []
    if network.netns_exists(node.netns):
        # An `up` killed between starting a holder and recording its PID
        # leaves one we only find by its command line.
        holders += [p for p in network.netns_pids(node.netns) if p not in holders and runs_holder_of(p, node)]
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    for pid in holders:
        _wait_for(lambda pid=pid: not process_alive(pid), 10, None)
    proc = _SPAWNED.pop(node.unshare_pid, None)
    if proc is not None:  # we are its parent: reap it (it exits once its child is gone)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    elif node.unshare_pid and process_alive(node.unshare_pid):
        try:
            comm = Path(f"/proc/{node.unshare_pid}/comm").read_text().strip()
        except FileNotFoundError:
            comm = ""
        if comm == "unshare":  # it exits by itself once its child is gone; init reaps it
            _wait_for(lambda: not process_alive(node.unshare_pid), 5, None)
    survivors = [pid for pid in holders if runs_holder_of(pid, node)]
    return [f"{node.name}: holder {pid} survived SIGKILL" for pid in survivors]


def _remove_cgroups(name: str) -> None:
    """dockerd puts containers under <controller>/<name>/; remove what is left."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / name] + [c / name for c in root.iterdir() if c.is_dir() and not c.is_symlink()]
    for top in candidates:
        if not top.is_dir():
            continue
        for dirpath, _dirnames, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while its last tasks exit
                    time.sleep(0.1)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _wait_for(predicate, timeout: float, failure) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    if failure is not None:
        raise ClusterError(failure())


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return f"{path.name}:\n    " + "\n    ".join(text[-lines:])
