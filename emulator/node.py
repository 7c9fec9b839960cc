"""The node handle: one emulated node's recorded facts, and running or inspecting things on it.

What tests, the stand-in plugins' helpers and the command line hold to reach a node, the way
kind's `nodes.Node` is what its callers hold. Provisioning (provision.py)
makes the nodes and fills these records in; fault injection (faults.py)
changes them; this module only reads a running node and runs commands on it:

    node.exec("npu-smi info")            # straight into its namespaces, no ssh
    node.ssh(ssh_config, "hostname")     # over its real sshd, as Pulumi does
    node.is_running(), node.problems()   # is it the node we made, and healthy

A node is entered through its holder process (holder.py), the PID 1 of the
node's PID/mount/UTS/IPC namespaces; see emulator/README.md.
"""

from __future__ import annotations

import http.client
import os
import shlex
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# The script every node's PID 1 runs; its command line identifies our holders.
HOLDER = Path(__file__).resolve().parent / "holder.py"
SSH_PORT = 22
SSH_USER = "root"


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
    def from_json(cls, data: dict) -> Node:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    # ------------------------------------------------------------ is it ours

    def is_running(self) -> bool:
        """True only while the recorded holder PID still runs this node's holder."""
        return runs_holder_of(self.holder_pid, self)

    def problems(self) -> list[str]:
        """What keeps the node from serving ssh and docker (empty when healthy)."""
        if not self.is_running():
            return [f"{self.name}: holder process gone"]
        problems = []
        if not tcp_open(self.address, self.ssh_port):
            problems.append(f"{self.name}: sshd not listening on {self.address}:{self.ssh_port}")
        if not self.docker_answers():
            problems.append(f"{self.name}: dockerd not answering")
        return problems

    def docker_answers(self) -> bool:
        """GET /_ping on the node's docker socket, reached through the holder's root."""
        if not self.holder_pid:
            return False
        conn = _UnixHTTPConnection(f"/proc/{self.holder_pid}/root/run/docker.sock")
        try:
            conn.request("GET", "/_ping")
            return conn.getresponse().read() == b"OK"
        except OSError:
            return False
        finally:
            conn.close()

    def current_hostname(self) -> str:
        """The hostname the node has now (a fault may have changed it)."""
        out = subprocess.run(["nsenter", "-t", str(self.holder_pid), "--uts", "hostname"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    # --------------------------------------------------------- running things

    def nsenter_argv(self) -> list[str]:
        """Prefix that runs a command inside the node (all its namespaces, its root)."""
        return ["nsenter", "-t", str(self.holder_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w"]

    def exec(self, command: str | Sequence[str], *, check: bool = False, timeout: float | None = 120,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the node without ssh (a string runs under /bin/sh -c)."""
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        env = dict(os.environ, HOME="/root")
        return run(self.nsenter_argv() + argv, check=check, timeout=timeout, input=input, env=env)

    def ssh_args(self, ssh_config: Path) -> list[str]:
        """`ssh` argv up to and including the destination; append the remote command."""
        return ["ssh", "-F", str(ssh_config), self.ssh_target]

    def ssh(self, ssh_config: Path, command: str, *, check: bool = False, timeout: float | None = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on the node over real ssh, as the Pulumi program does."""
        return run(self.ssh_args(ssh_config) + [command], check=check, timeout=timeout, input=input)


# ---------------------------------------------------------------------------
# processes and sockets, seen from the host
# ---------------------------------------------------------------------------

def run(argv, *, check=False, timeout=None, input=None, env=None) -> subprocess.CompletedProcess:
    """subprocess.run that turns a timeout or (with check) a failure into one ClusterError."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{shlex.join(map(str, argv))}` timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise ClusterError(f"`{shlex.join(map(str, argv))}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def process_alive(pid: int | None) -> bool:
    """The PID exists and is not a zombie."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def runs_holder_of(pid: int | None, node: Node) -> bool:
    """True only if pid runs holder.py for this node (PIDs get reused)."""
    if not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return (str(HOLDER).encode() in cmdline and str(Path(node.dir) / "holder.json").encode() in cmdline
            and cmdline[0] != b"unshare")


def tcp_open(host: str, port: int) -> bool:
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
