"""An emulated Ascend cluster: N nodes, each a set of Linux namespaces on this machine.

    from emulator import Cluster
    cluster = Cluster.up(2, state_dir)          # or Cluster.load(state_dir)
    cluster.ssh("node0", "npu-smi info")        # real sshd, per-run key
    cluster.exec("node1", ["docker", "ps"])     # straight into the namespaces
    cluster.set_fault("node1", link_down=[3])
    cluster.down()

This module holds the cluster's record (<state_dir>/cluster.json: its nodes,
paths, layout, hardware) and the one object tests and the command line use.
The work is done apart, split the way kind splits a provider:

    provision.py   making and removing nodes (namespaces, veths, holder,
                   sshd, dockerd, files, image); `up` and `down` call it
    node.py        the node handle: running commands on a node (nsenter,
                   ssh) and inspecting it; `exec`, `ssh`, `health_problems`
    faults.py      injecting and clearing faults; `set_fault`, `clear_faults`
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import faults as faultlib
from . import image as imagelib
from . import network, provision
from .node import SSH_PORT, SSH_USER, ClusterError, Node, tcp_open
from .nodefs import Hardware, Layout
from .provision import Log

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = Path(os.environ.get("ASCEMU_STATE_DIR") or REPO_ROOT / ".emulator")

__all__ = ["Cluster", "ClusterError", "DEFAULT_STATE_DIR", "Node"]


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
    def load(cls, state_dir: Path | str | None = None) -> Cluster:
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
           layout: Layout | None = None, hardware: Hardware | None = None, log: Log = print) -> Cluster:
        """Bring up n nodes, or return the running cluster of n nodes in state_dir.

        Raises ClusterError with one message after tearing down whatever it made."""
        state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        hostnames = provision.check_request(n, prefix, subnet, hostnames, duplicate_hostname)
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
        provision.check_no_leftovers(prefix, subnet)
        cluster = cls(state_dir=state_dir, prefix=prefix, subnet=subnet, layout=layout, hardware=hardware or Hardware())
        try:
            provision.create(cluster, n, hostnames, provision.Clock(log))
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
        return provision.destroy(Cluster.load(state_dir), log)

    def reboot(self, node: str | int | Node) -> Node:
        """Power-cycle one node (provision.reboot): every process killed, sshd and
        dockerd started again, its containers left exited, a new boot id."""
        rebooted = provision.reboot(self, self.node(node))
        self.save()  # its new holder PID: `down` kills that one
        return rebooted

    # ------------------------------------------------------------------ status

    def health_problems(self) -> list[str]:
        return [problem for node in self.nodes for problem in node.problems()]

    def describe(self) -> dict:
        nodes = []
        for node in self.nodes:
            alive = node.is_running()
            nodes.append({
                "name": node.name, "address": node.address, "holder_pid": node.holder_pid, "alive": alive,
                "hostname": node.current_hostname() if alive else None,
                "sshd": alive and tcp_open(node.address, node.ssh_port),
                "dockerd": alive and node.docker_answers(),
                "faults": faultlib.read(node.run_dir),
            })
        return {"state_dir": str(self.state_dir), "status": self.status, "bridge": self.bridge,
                "image": self.image, "ssh_key": str(self.ssh_key_path), "nodes": nodes}

    # --------------------------------------------------------- running things (node.py)

    def nsenter_argv(self, node: str | int | Node) -> list[str]:
        """Prefix that runs a command inside a node (all its namespaces, its root)."""
        return self.node(node).nsenter_argv()

    def exec(self, node: str | int | Node, command: str | Sequence[str], *, check: bool = False,
             timeout: float | None = 120, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside a node without ssh (a string runs under /bin/sh -c)."""
        return self.node(node).exec(command, check=check, timeout=timeout, input=input)

    def ssh_args(self, node: str | int | Node) -> list[str]:
        """`ssh` argv up to and including the destination; append the remote command."""
        return self.node(node).ssh_args(self.ssh_config_path)

    def ssh_opts(self) -> list[str]:
        """ssh options for pulumi_docker's Provider(ssh_opts=...) and other ssh users."""
        return ["-i", str(self.ssh_key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "BatchMode=yes",
                "-o", "LogLevel=ERROR"]

    def ssh(self, node: str | int | Node, command: str, *, check: bool = False, timeout: float | None = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on a node over real ssh, as the Pulumi program does."""
        return self.node(node).ssh(self.ssh_config_path, command, check=check, timeout=timeout, input=input)

    def docker_env(self, node: str | int | Node) -> dict[str, str]:
        """Environment for the host's docker CLI to drive a node's engine over ssh://."""
        return dict(os.environ, DOCKER_HOST=self.node(node).docker_host,
                    PATH=f"{self.bin_dir}:{os.environ.get('PATH', '')}")

    # ------------------------------------------------------------------ faults (faults.py)

    def faults(self, node: str | int | Node) -> dict:
        return faultlib.read(self.node(node).run_dir)

    def set_fault(self, node: str | int | Node, **faults) -> dict:
        """Add or change faults on a node (a value of None/False/[] removes that one).

        Returns the node's full fault set. Raises FaultError on a bad key/value."""
        return faultlib.set_faults(self.node(node), self.layout, self.hardware, **faults)

    def clear_faults(self, node: str | int | Node) -> dict:
        return faultlib.clear(self.node(node), self.layout, self.hardware)
