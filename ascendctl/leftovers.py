"""`python -m ascendctl leftovers`: what a stack left on its nodes that its
Pulumi state does not hold, and their removal (docs/recovery.md).

What the program leaves on a node carries the stack's name: its containers the
label `ascend-inference/stack=<stack>` (components/cluster.py), its files the
directory `<paths.remote_dir>/<stack>/` (env file, run dir with the serving pid
file and log, cluster record), and its processes (Ray, the engine) run inside
those containers. A leftover is such a container whose id the state does not
record (an `up` killed while creating it, a lost state, `pulumi stack rm
--force`), and the stack's directory when the state records nothing at all.

The nodes are reached as the node checks reach them: the system `ssh` with the
pinned host keys (components/common.py system_ssh_options), the key from the
user's ssh-agent or ~/.ssh/config.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

from ascend_inference.spec import ClusterSpec, Node

LABEL = "ascend-inference/stack"
CONTAINER_TYPE = "docker:index/container:Container"


@dataclass(frozen=True)
class Leftover:
    node: str
    kind: str      # container | directory
    name: str      # the container's name, the directory's path
    ident: str = ""  # the container's id

    def line(self) -> str:
        what = f"container {self.name} ({self.ident[:12]})" if self.kind == "container" else f"directory {self.name}"
        return f"{self.node}: {what}"


def recorded(state: dict[str, Any]) -> tuple[set[str], bool]:
    """The container ids a `pulumi stack export` holds, and whether it holds any
    resource of the program at all (a stack's own record and providers aside)."""
    resources = (state.get("deployment") or {}).get("resources") or []
    ids = {r.get("id", "") for r in resources if r.get("type") == CONTAINER_TYPE and r.get("id")}
    holds = any(r.get("custom") and not str(r.get("type", "")).startswith("pulumi:providers:") for r in resources)
    return ids, holds


def list_script(stack: str, stack_dir: str) -> str:
    return (f"docker ps -a --no-trunc --filter label={shlex.quote(f'{LABEL}={stack}')} "
            "--format 'container {{.ID}} {{.Names}}'\n"
            f"if [ -e {shlex.quote(stack_dir)} ]; then echo directory {shlex.quote(stack_dir)}; fi\n")


def remove_script(found: list[Leftover]) -> str:
    lines = [f"docker rm -f {shlex.quote(f.ident)} >/dev/null" for f in found if f.kind == "container"]
    lines += [f"rm -rf {shlex.quote(f.name)}" for f in found if f.kind == "directory"]
    return "set -e\n" + "\n".join(lines) + "\n"


def parse(node: str, output: str, ids: set[str], holds: bool) -> list[Leftover]:
    found = []
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "container":
            ident, _, name = rest.partition(" ")
            if ident not in ids:
                found.append(Leftover(node, "container", name, ident))
        elif kind == "directory" and not holds:
            found.append(Leftover(node, "directory", rest))
    return found


def ssh_argv(spec: ClusterSpec, stack: str, node: Node) -> list[str]:
    from components.common import system_ssh_options

    port, user = node.port or spec.ssh.port, node.user or spec.ssh.user
    return ["ssh", *system_ssh_options(spec, stack), "-p", str(port), f"{user}@{node.host}", "bash -s"]


def run(spec: ClusterSpec, stack: str, state: dict[str, Any] | None, remove: bool, out: Any) -> list[str]:
    """List (and with `remove` remove) the stack's leftovers on every node; the
    problems (a node that could not be read) are returned, one line each."""
    ids, holds = recorded(state) if state is not None else (set(), False)
    stack_dir = f"{spec.paths.remote_dir}/{stack}"
    problems: list[str] = []
    total = 0
    for node in spec.nodes:
        argv = ssh_argv(spec, stack, node)
        listed = subprocess.run(argv, input=list_script(stack, stack_dir), capture_output=True, text=True)
        if listed.returncode != 0:
            problems.append(f"node {node.name} ({node.host}): could not list what stack {stack} left there: "
                            f"{listed.stderr.strip() or f'ssh exited {listed.returncode}'}")
            continue
        found = parse(node.name, listed.stdout, ids, holds)
        total += len(found)
        for leftover in found:
            print(leftover.line(), file=out)
        if remove and found:
            removed = subprocess.run(argv, input=remove_script(found), capture_output=True, text=True)
            if removed.returncode != 0:
                problems.append(f"node {node.name} ({node.host}): removing failed: {removed.stderr.strip()}")
                continue
            print(f"{node.name}: removed {len(found)}", file=out)
    if not total:
        print(f"nothing of stack {stack} on its nodes outside its state", file=out)
    elif not remove:
        print(f"{total} left by stack {stack} outside its state; remove them with --remove", file=out)
    return problems


def read_state(text: str, source: str) -> dict[str, Any]:
    """A `pulumi stack export`; ValueError with one line naming `source` when it is not one."""
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not a `pulumi stack export` (JSON: {error.msg} at line {error.lineno})") from None
    if not isinstance(state, dict) or not isinstance(state.get("deployment", {}), dict):
        raise ValueError(f"{source}: not a `pulumi stack export` (no deployment object)")
    return state
