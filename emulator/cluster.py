"""An emulated Ascend cluster: N nodes, each a set of Linux namespaces on this machine.

    from emulator import Cluster
    cluster = Cluster.up(2, state_dir)          # or Cluster.load(state_dir)
    cluster.ssh("node0", "npu-smi info")        # real sshd, per-run key
    cluster.exec("node1", ["docker", "ps"])     # straight into the namespaces
    cluster.set_fault("node1", link_down=[3])
    cluster.down()

Everything `up` makes is recorded in <state_dir>/cluster.json *before* it is
made, so `down` can undo a partial `up` (even one that was killed). What is
made, per node: a network namespace with a veth on the bridge, a holder
process (holder.py: PID 1 of the node's PID/mount/UTS/IPC namespaces) that
runs the node's sshd and dockerd, and a directory under <state_dir>/nodes/
(overlay upper dir, docker data root, run dir with logs and the fault file).
Processes are only ever stopped by the PIDs recorded here, after checking
that the PID still runs our holder.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import faults as faultlib
from . import image as imagelib
from . import network
from .nodefs import BUS_IDS, Hardware, Layout, device_specs, populate_upper, sshd_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = Path(os.environ.get("ASCEMU_STATE_DIR") or REPO_ROOT / ".emulator")
HOLDER = Path(__file__).resolve().parent / "holder.py"
REQUIRED_BINARIES = ["ip", "nsenter", "unshare", "sshd", "ssh", "ssh-keygen", "dockerd", "containerd",
                     "runc", "docker", "ping"]
SSH_PORT = 22
SSH_USER = "root"

Log = Callable[[str], None]
_SPAWNED: dict[int, subprocess.Popen] = {}  # unshare processes this Python process started


class ClusterError(RuntimeError):
    """One clear message: what failed, where, and what to do."""


@dataclass
class Node:
    name: str
    index: int
    address: str
    hostname: str
    netns: str
    veth: str
    device_ips: list[str]
    dir: str
    holder_pid: int | None = None
    unshare_pid: int | None = None
    ssh_port: int = SSH_PORT
    ssh_user: str = SSH_USER

    @property
    def run_dir(self) -> Path:
        """Host path of the node's /run/ascemu (facts, faults, logs)."""
        return Path(self.dir) / "run"

    @property
    def ssh_target(self) -> str:
        return f"{self.ssh_user}@{self.address}"

    @property
    def docker_host(self) -> str:
        """What pulumi_docker's Provider `host` (or DOCKER_HOST) takes."""
        return f"ssh://{self.ssh_target}"

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(docker_host=self.docker_host, run_dir=str(self.run_dir),
                    docker_socket_in_node="/run/docker.sock")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Node":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Cluster:
    state_dir: Path
    prefix: str = "ascemu"
    subnet: int = 0
    status: str = "creating"
    nodes: list[Node] = field(default_factory=list)
    layout: Layout = field(default_factory=Layout)
    hardware: Hardware = field(default_factory=Hardware)
    bridge: str | None = None
    image: str = imagelib.IMAGE
    timings: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ paths

    @property
    def cluster_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def ssh_key_path(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "ssh" / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / "ssh" / "config"

    @property
    def bin_dir(self) -> Path:
        """Holds an `ssh` wrapper using ssh_config_path, for docker's ssh:// transport."""
        return self.state_dir / "bin"

    # ------------------------------------------------------------- persistence

    def to_json(self) -> dict:
        return {
            "version": 1,
            "status": self.status,
            "state_dir": str(self.state_dir),
            "prefix": self.prefix,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "bridge_address": network.bridge_address(self.subnet),
            "image": self.image,
            "ssh": {"user": SSH_USER, "port": SSH_PORT, "key": str(self.ssh_key_path),
                    "known_hosts": str(self.known_hosts_path), "config": str(self.ssh_config_path),
                    "opts": self.ssh_opts()},
            "docker": {"base_mounts": [asdict(m) for m in imagelib.base_mounts()],
                       "base_run_args": imagelib.base_docker_args(),
                       "privileged_substitute": imagelib.privileged_substitute()},
            "layout": self.layout.to_json(),
            "hardware": asdict(self.hardware),
            "nodes": [dict(n.to_json(), ssh_key=str(self.ssh_key_path)) for n in self.nodes],
            "timings": self.timings,
        }

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cluster_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.cluster_file)

    @classmethod
    def load(cls, state_dir: Path | str | None = None) -> "Cluster":
        state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        try:
            data = json.loads((state_dir / "cluster.json").read_text())
        except FileNotFoundError:
            raise ClusterError(f"no emulated cluster in {state_dir} (start one with "
                               f"`python -m emulator up --nodes 2 --state-dir {state_dir}`)") from None
        return cls(state_dir=state_dir, prefix=data["prefix"], subnet=data.get("subnet", 0), status=data["status"],
                   nodes=[Node.from_json(n) for n in data["nodes"]],
                   layout=Layout.from_json(data["layout"]), hardware=Hardware(**data["hardware"]),
                   bridge=data.get("bridge"), image=data.get("image", imagelib.IMAGE),
                   timings=data.get("timings", {}))

    # ------------------------------------------------------------------ lookup

    def node(self, which: str | int | Node) -> Node:
        if isinstance(which, Node):
            return which
        for n in self.nodes:
            if which in (n.name, n.index, n.address):
                return n
        raise ClusterError(f"no node {which!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    # ------------------------------------------------------------- up / down

    @classmethod
    def up(cls, n: int, state_dir: Path | str | None = None, *, prefix: str = "ascemu", subnet: int = 0,
           hostnames: Sequence[str] | None = None, duplicate_hostname: bool = False,
           layout: Layout | None = None, hardware: Hardware | None = None, log: Log = print) -> "Cluster":
        """Bring up n nodes, or return the running cluster of n nodes in state_dir.

        Raises ClusterError with one message after tearing down whatever it made."""
        state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
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
        layout = layout or Layout()
        if (state_dir / "cluster.json").exists():
            existing = cls.load(state_dir)
            problems = existing.health_problems()
            if existing.status != "up":
                problems.insert(0, f"its `up` did not finish ({existing.status})")
            if len(existing.nodes) != n:
                problems.append(f"it has {len(existing.nodes)} nodes, not {n}")
            elif [nd.hostname for nd in existing.nodes] != hostnames:
                problems.append(f"its hostnames are {[nd.hostname for nd in existing.nodes]}, not {hostnames}")
            if (existing.prefix, existing.subnet, existing.layout) != (prefix, subnet, layout):
                problems.append("its prefix, subnet or file layout differ")
            if not problems:
                log(f"cluster of {n} nodes already up in {state_dir}: reusing it")
                return existing
            raise ClusterError(f"{state_dir} already holds a cluster that cannot be reused ({'; '.join(problems)}). "
                               f"Run `python -m emulator down --state-dir {state_dir}` first.")
        check_no_leftovers(prefix, subnet)
        cluster = cls(state_dir=state_dir, prefix=prefix, subnet=subnet, layout=layout, hardware=hardware or Hardware())
        clock = _Clock(log)
        try:
            cluster._create(n, hostnames, clock)
        except BaseException as exc:  # KeyboardInterrupt too: never leave half a cluster
            message = exc.args[0] if isinstance(exc, ClusterError) and exc.args else f"{type(exc).__name__}: {exc}"
            log("emulator up failed; tearing down what was made ...")
            try:
                cls.down_state_dir(state_dir, log=lambda m: log("  " + m))
            except Exception as down_exc:  # report both; the first is the cause
                log(f"  teardown also failed: {down_exc}")
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ClusterError(f"emulator up failed: {message}") from exc
        return cluster

    def _create(self, n: int, hostnames: list[str], clock: "_Clock") -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.save()  # from here on `down` knows this state dir is ours
        clock(f"creating {n} nodes in {self.state_dir}")
        (self.state_dir / "ssh").mkdir(exist_ok=True)
        keygen(self.ssh_key_path, "ascemu-client")

        self.bridge = f"{self.prefix}-br0"
        self.save()
        network.create_bridge(self.bridge, self.subnet)
        clock(f"bridge {self.bridge} {network.bridge_address(self.subnet)}/24")

        for i in range(n):
            self.nodes.append(Node(
                name=f"node{i}", index=i, address=network.node_address(i, self.subnet), hostname=hostnames[i],
                netns=f"{self.prefix}-node{i}", veth=f"{self.prefix}-n{i}",
                device_ips=[network.device_ip(i, d) for d in range(self.hardware.npu_count)],
                dir=str(self.state_dir / "nodes" / f"node{i}")))
        self.save()

        all_hosts = [(node.hostname, node.address) for node in self.nodes]
        for node in self.nodes:
            self._prepare_node_files(node, all_hosts)
            network.create_node_netns(node.netns, node.veth, self.bridge, node.address, node.device_ips,
                                      self.subnet)
            self._start_holder(node)
            self.save()
        clock(f"{n} node namespaces created, holders started; waiting for sshd and dockerd")

        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            for node in pool.map(self._wait_ready, self.nodes):
                clock(f"{node.name}: {node.hostname} at {node.address}: sshd and dockerd ready")
        self.timings["nodes_ready_s"] = clock.elapsed()

        tarball = imagelib.build_rootfs(self.state_dir / "image" / "rootfs.tar")
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            for node in pool.map(lambda nd: self._import_image(nd, tarball), self.nodes):
                clock(f"{node.name}: image {self.image} imported")

        self._write_ssh_client_files()
        for node in self.nodes:  # the path a user (and the Pulumi program) takes: real ssh
            got = self.ssh(node, "hostname", timeout=30)
            if got.returncode != 0 or got.stdout.strip() != node.hostname:
                raise ClusterError(f"{node.name}: `ssh {node.ssh_target} hostname` returned "
                                   f"{got.returncode}: {got.stdout.strip()} {got.stderr.strip()}")
        clock(f"ssh to every node works (key {self.ssh_key_path})")
        self.status = "up"
        self.timings["up_s"] = clock.elapsed()
        self.save()
        clock(f"cluster up: {n} nodes in {self.timings['up_s']:.1f} s")

    def _prepare_node_files(self, node: Node, all_hosts: list[tuple[str, str]]) -> None:
        d = Path(node.dir)
        for sub in ("upper", "work", "root", "docker", "run"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        populate_upper(d / "upper", layout=self.layout, hw=self.hardware, hostname=node.hostname,
                       address=node.address, all_hosts=all_hosts, device_ips=node.device_ips,
                       gateway=network.DEVICE_GATEWAY)
        run = node.run_dir
        keygen(run / "ssh_host_ed25519_key", f"ascemu-{node.name}")
        shutil.copy(self.ssh_key_path.with_suffix(".pub"), run / "authorized_keys")
        (run / "sshd_config").write_text(sshd_config(node.address, node.ssh_port))
        (run / "node.json").write_text(json.dumps({
            "name": node.name, "index": node.index, "hostname": node.hostname, "address": node.address,
            "chip_name": self.hardware.chip_name, "npu_count": self.hardware.npu_count,
            "hbm_mb": self.hardware.hbm_mb, "driver_version": self.hardware.driver_version,
            "firmware_version": self.hardware.firmware_version, "device_ips": node.device_ips,
            "netmask": self.hardware.netmask, "netdetect": network.DEVICE_GATEWAY,
            "gateway": network.DEVICE_GATEWAY, "bus_ids": BUS_IDS}, indent=2) + "\n")
        faultlib.write(run, {})
        spec = {
            "hostname": node.hostname, "root": str(d / "root"), "upper": str(d / "upper"),
            "work": str(d / "work"), "docker_dir": str(d / "docker"), "run_dir": str(run),
            "devices": device_specs(self.hardware.npu_count, set()), "shm_size": "50%",
            "daemons": {
                "sshd": [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", "/run/ascemu/sshd_config"],
                "dockerd": [shutil.which("dockerd"), "--data-root", "/var/lib/docker", "--exec-root", "/run/docker",
                            "-H", "unix:///run/docker.sock", "--pidfile", "/run/docker.pid",
                            # the node's netns is ours; no NAT or host iptables rules are wanted
                            "--iptables=false", "--ip-masq=false",
                            "--cgroup-parent", f"{self.prefix}-{node.name}"],
            },
        }
        (d / "holder.json").write_text(json.dumps(spec, indent=2) + "\n")

    def _start_holder(self, node: Node) -> None:
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

    def _wait_ready(self, node: Node) -> Node:
        run = node.run_dir
        deadline = time.time() + 60
        while not (run / "holder.ready").exists():
            if not _alive(node.holder_pid):
                raise ClusterError(f"{node.name}: node setup failed. {_tail(Path(node.dir) / 'holder.log')}")
            if time.time() > deadline:
                raise ClusterError(f"{node.name}: node setup timed out. {_tail(Path(node.dir) / 'holder.log')}")
            time.sleep(0.05)
        _wait_for(lambda: _tcp_open(node.address, node.ssh_port), 15,
                  lambda: f"{node.name}: sshd not listening on {node.address}:{node.ssh_port}. "
                          f"{_tail(run / 'sshd.log')}")
        _wait_for(lambda: docker_ping(node), 60,
                  lambda: f"{node.name}: dockerd did not answer on /run/docker.sock. {_tail(run / 'dockerd.log')}")
        return node

    def _import_image(self, node: Node, tarball: Path) -> Node:
        argv = ["docker", "-H", "unix:///run/docker.sock", "import"]
        for change in imagelib.import_changes():
            argv += ["--change", change]
        argv += [str(tarball), self.image]
        got = self.exec(node, argv, timeout=120)
        if got.returncode != 0:
            raise ClusterError(f"{node.name}: docker import failed: {got.stderr.strip()}")
        return node

    def _write_ssh_client_files(self) -> None:
        lines = []
        for node in self.nodes:
            key = (Path(node.dir) / "run" / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{node.address} {key[0]} {key[1]}")
        self.known_hosts_path.write_text("\n".join(lines) + "\n")
        hosts = " ".join(f"{n.name} {n.address}" for n in self.nodes)
        config = [f"# ssh settings for the emulated nodes: ssh -F {self.ssh_config_path} node0"]
        for node in self.nodes:
            config += [f"Host {node.name}", f"    HostName {node.address}"]
        config += [f"Host {hosts}", f"    User {SSH_USER}", f"    Port {SSH_PORT}",
                   f"    IdentityFile {self.ssh_key_path}", "    IdentitiesOnly yes",
                   f"    UserKnownHostsFile {self.known_hosts_path}", "    StrictHostKeyChecking yes",
                   "    BatchMode yes", "    LogLevel INFO", "    ConnectTimeout 10"]
        self.ssh_config_path.write_text("\n".join(config) + "\n")
        self.bin_dir.mkdir(exist_ok=True)
        wrapper = self.bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\n# docker -H ssh://... runs `ssh`; this one knows the emulator key\n'
                           f'exec {shutil.which("ssh")} -F {self.ssh_config_path} "$@"\n')
        wrapper.chmod(0o755)

    def down(self, log: Log = print) -> list[str]:
        return Cluster.down_state_dir(self.state_dir, log=log)

    @staticmethod
    def down_state_dir(state_dir: Path | str | None = None, *, log: Log = print) -> list[str]:
        """Remove everything an `up` in state_dir made, even a partial one.

        Returns the problems it could not fix (empty when all is gone)."""
        state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        if not (state_dir / "cluster.json").exists():
            log(f"nothing to tear down in {state_dir}")
            return []
        cluster = Cluster.load(state_dir)
        problems = []
        clock = _Clock(log)
        for node in cluster.nodes:
            problems += _stop_holder(node)
        for node in cluster.nodes:
            # Processes die asynchronously after their PID 1; the netns is free
            # once none is left in it.
            _wait_for(lambda: not (network.netns_exists(node.netns) and network.netns_pids(node.netns)), 10, None)
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

    # ------------------------------------------------------------------ status

    def health_problems(self) -> list[str]:
        problems = []
        for node in self.nodes:
            if not _is_our_holder(node):
                problems.append(f"{node.name}: holder process gone")
                continue
            if not _tcp_open(node.address, node.ssh_port):
                problems.append(f"{node.name}: sshd not listening on {node.address}:{node.ssh_port}")
            if not docker_ping(node):
                problems.append(f"{node.name}: dockerd not answering")
        return problems

    def describe(self) -> dict:
        nodes = []
        for node in self.nodes:
            alive = _is_our_holder(node)
            nodes.append({
                "name": node.name, "address": node.address, "holder_pid": node.holder_pid, "alive": alive,
                "hostname": faultlib.current_hostname(node.__dict__) if alive else None,
                "sshd": alive and _tcp_open(node.address, node.ssh_port),
                "dockerd": alive and docker_ping(node),
                "faults": faultlib.read(node.run_dir),
            })
        return {"state_dir": str(self.state_dir), "status": self.status, "bridge": self.bridge,
                "image": self.image, "ssh_key": str(self.ssh_key_path), "nodes": nodes}

    # --------------------------------------------------------- running things

    def nsenter_argv(self, node: str | int | Node) -> list[str]:
        """Prefix that runs a command inside a node (all its namespaces, its root)."""
        node = self.node(node)
        return ["nsenter", "-t", str(node.holder_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w"]

    def exec(self, node: str | int | Node, command: str | Sequence[str], *, check: bool = False,
             timeout: float | None = 120, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside a node without ssh (a string runs under /bin/sh -c)."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        env = dict(os.environ, HOME="/root")
        return _run(self.nsenter_argv(node) + argv, check=check, timeout=timeout, input=input, env=env)

    def ssh_args(self, node: str | int | Node) -> list[str]:
        """`ssh` argv up to and including the destination; append the remote command."""
        return ["ssh", "-F", str(self.ssh_config_path), self.node(node).ssh_target]

    def ssh_opts(self) -> list[str]:
        """ssh options for pulumi_docker's Provider(ssh_opts=...) and other ssh users."""
        return ["-i", str(self.ssh_key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR"]

    def ssh(self, node: str | int | Node, command: str, *, check: bool = False, timeout: float | None = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on a node over real ssh, as the Pulumi program does."""
        return _run(self.ssh_args(node) + [command], check=check, timeout=timeout, input=input)

    def docker_env(self, node: str | int | Node) -> dict[str, str]:
        """Environment for the host's docker CLI to drive a node's engine over ssh://."""
        return dict(os.environ, DOCKER_HOST=self.node(node).docker_host,
                    PATH=f"{self.bin_dir}:{os.environ.get('PATH', '')}")

    # ------------------------------------------------------------------ faults

    def faults(self, node: str | int | Node) -> dict:
        return faultlib.read(self.node(node).run_dir)

    def set_fault(self, node: str | int | Node, **faults) -> dict:
        """Add or change faults on a node (a value of None/False/[] removes that one).

        Returns the node's full fault set. Raises FaultError on a bad key/value."""
        node = self.node(node)
        merged = faultlib.normalize({**faultlib.read(node.run_dir), **faults}, self.hardware.npu_count)
        return self._apply_faults(node, merged)

    def clear_faults(self, node: str | int | Node) -> dict:
        return self._apply_faults(self.node(node), {})

    def _apply_faults(self, node: Node, wanted: dict) -> dict:
        if not _is_our_holder(node):
            raise ClusterError(f"{node.name} is not running (run `python -m emulator status`)")
        faultlib.write(node.run_dir, wanted)
        faultlib.apply(node.__dict__, self.layout, self.hardware.npu_count, self.hardware.driver_version, wanted)
        return wanted


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class _Clock:
    def __init__(self, log: Log):
        self.start, self.log = time.monotonic(), log

    def elapsed(self) -> float:
        return round(time.monotonic() - self.start, 2)

    def __call__(self, msg: str) -> None:
        self.log(f"[{self.elapsed():6.1f}s] {msg}")


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


def keygen(path: Path, comment: str) -> None:
    if not path.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def _run(argv, *, check=False, timeout=None, input=None, env=None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{shlex.join(map(str, argv))}` timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise ClusterError(f"`{shlex.join(map(str, argv))}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _runs_holder_of(pid: int | None, node: Node) -> bool:
    """True only if pid runs holder.py for this node (PIDs get reused)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return (str(HOLDER).encode() in cmdline and str(Path(node.dir) / "holder.json").encode() in cmdline
            and cmdline[0] != b"unshare")


def _is_our_holder(node: Node) -> bool:
    return _runs_holder_of(node.holder_pid, node)


def _stop_holder(node: Node) -> list[str]:
    """Kill the node's PID 1; the kernel then kills every process of the node
    (sshd, dockerd, containerd, containers, Ray, ssh sessions)."""
    holders = [node.holder_pid] if _is_our_holder(node) else []
    if network.netns_exists(node.netns):
        # An `up` killed between starting a holder and recording its PID
        # leaves one we only find by its command line.
        holders += [p for p in network.netns_pids(node.netns) if p not in holders and _runs_holder_of(p, node)]
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    for pid in holders:
        _wait_for(lambda: not _alive(pid), 10, None)
    proc = _SPAWNED.pop(node.unshare_pid, None)
    if proc is not None:  # we are its parent: reap it (it exits once its child is gone)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    elif node.unshare_pid and _alive(node.unshare_pid):
        try:
            comm = Path(f"/proc/{node.unshare_pid}/comm").read_text().strip()
        except FileNotFoundError:
            comm = ""
        if comm == "unshare":  # it exits by itself once its child is gone; init reaps it
            _wait_for(lambda: not _alive(node.unshare_pid), 5, None)
    survivors = [pid for pid in holders if _runs_holder_of(pid, node)]
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


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=2)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self.path)


def docker_ping(node: Node) -> bool:
    """GET /_ping on the node's docker socket, reached through the holder's root."""
    if not node.holder_pid:
        return False
    conn = _UnixHTTPConnection(f"/proc/{node.holder_pid}/root/run/docker.sock")
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().read() == b"OK"
    except OSError:
        return False
    finally:
        conn.close()


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
