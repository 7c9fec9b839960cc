"""Real `pulumi preview` at scale, beside the offline preview (root).

    python3 benchmarks/preview_scale.py [--sizes 64,256] [--stack tp16-vllm-mindspore]
        [--parallel 0,64] [--profile] [--json] [--keep]

For each size: that many sshd-only emulated nodes (benchmarks/sshd_nodes.py
says exactly what they are; prefix "ptbench", subnet 238), the stack widened
to them (tp over every NPU, as benchmarks/preview_scaling.py scales it) with
each node's address, port, hostname, pinned host key and device IPs set as
`python -m emulator configure` sets them, then, on a copy of the project:

- offline: `python3 -m ascendctl preview --stack FILE` (the program under
  the SDK's mocks; no node is reached);
- real: `pulumi preview` of a fresh stack with the real CLI and language
  host (tools/pulumi-toolchain.sh) and the stand-in `command` and `docker`
  plugins (emulator/plugins, on PATH with their guard variable as
  emulator/userpath.py `environment()` puts them). Every node's checks run
  on the node: preflight and peer pings (invokes of `bash -s` over the
  system ssh).

Per run: wall time; CPU time of the control host's processes (the pulumi
CLI and engine, the language host and program, the plugins, the ssh
clients: everything the benchmark waited for) and of the nodes (every
process their sshd ran: the checks' bash, npu-smi, hccn_tool, ping); the
resources the engine previewed (from its event log); and the time per
doubling of nodes (2.0 is linear). With `--profile` the busiest processes
of the real preview are sampled every second (CPU seconds by command).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ascend_inference.stackfile import load_stack  # noqa: E402
from ascendctl.preview.config import scaled_config  # noqa: E402
from ascendctl.preview.stack import loaded_with_config  # noqa: E402
from benchmarks.sshd_nodes import DockerVersionApi, remove, sshd_only_cluster  # noqa: E402
from emulator.node import ClusterError  # noqa: E402
from emulator.userpath import (  # noqa: E402
    configure_commands,
    copy_project,
    environment,
    machine_settings,
    read_events,
)

PREFIX, SUBNET = "ptbench", 238
TICKS = os.sysconf("SC_CLK_TCK")


def set_path(config: dict, key: str, value: str) -> None:
    """`pulumi config set --path` on a plain dict: `ns:a.b[2].c` = value."""
    namespace, _, path = key.partition(":")
    parts = [p for p in path.replace("]", "").replace("[", ".").split(".")]
    parent: object = config
    name: str | int = f"{namespace}:{parts[0]}"
    for part in parts[1:]:
        step = parent[name]  # type: ignore[index]
        parent, name = step, int(part) if part.isdigit() else part
    if isinstance(parent, list) and isinstance(name, int) and name == len(parent):
        parent.append(value)
    else:
        parent[name] = value  # type: ignore[index]


def stack_config(stack: str, cluster) -> dict:
    """The stack widened to the cluster, its machine settings the emulator's
    (`machine_settings`, what `python -m emulator configure` sets)."""
    base = load_stack(stack)
    config = scaled_config(base, len(cluster.nodes))
    loaded = loaded_with_config(base, config)
    for key, value in machine_settings(loaded, cluster).items():
        set_path(config, key, value)
    return config


def node_cpu(cluster) -> float:
    """CPU seconds of every finished process the nodes' sshd (their PID 1) ran."""
    total = 0
    for node in cluster.nodes:
        fields = Path(f"/proc/{node.holder_pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


class Sampler:
    """CPU seconds by command name of the processes alive at each sample
    (every second), counted from their first sample on: a coarse profile
    (processes shorter than a second are mostly missed; the node and control
    host totals are exact)."""

    def __init__(self):
        self.last: dict[int, tuple[str, int]] = {}
        self.by_command: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                    cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                head, _, rest = stat.rpartition(")")
                ticks = sum(int(f) for f in rest.split()[11:13])
                pid = int(entry.name)
                name = self._name(head.partition("(")[2], cmdline)
                before = self.last.get(pid, (name, ticks))[1]
                self.by_command[name] += ticks - before
                self.last[pid] = (name, ticks)

    @staticmethod
    def _name(comm: str, cmdline: list[bytes]) -> str:
        args = [a.decode(errors="replace") for a in cmdline if a]
        for arg in args[:3]:
            base = os.path.basename(arg)
            if base.startswith(("pulumi", "ascend_tools", "hccn_tool", "npu-smi")) or base == "__main__.py":
                return base
        return comm

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def top(self, count: int = 12) -> list[tuple[str, float]]:
        return [(name, ticks / TICKS) for name, ticks in self.by_command.most_common(count)]


def timed(argv: list[str], *, cwd: Path, env: dict[str, str], cluster=None, profile: bool = False) -> dict:
    """Run argv to the end: wall time, CPU time of it and its children, of the nodes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    nodes = node_cpu(cluster) if cluster is not None else 0.0
    sampler = Sampler() if profile else None
    start = time.monotonic()
    if sampler:
        sampler.__enter__()
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    finally:
        if sampler:
            sampler.__exit__()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"seconds": round(wall, 1),
           "cpu_seconds": round(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1),
           "returncode": done.returncode, "output": done.stdout + done.stderr, "stdout": done.stdout}
    if cluster is not None:
        row["node_cpu_seconds"] = round(node_cpu(cluster) - nodes, 1)
    if sampler:
        row["profile"] = sampler.top()
    return row


def resources_previewed(event_log: Path) -> int:
    urns = set()
    for event in read_events(event_log):
        body = event.get("resourcePreEvent")
        if not body:
            continue
        meta = body["metadata"]
        # As the offline preview records them: no stack, no default provider.
        default_provider = meta["type"].startswith("pulumi:providers:") and meta["urn"].rsplit("::", 1)[1].startswith(
            "default")
        if meta["type"] != "pulumi:pulumi:Stack" and not default_provider:
            urns.add(meta["urn"])
    return len(urns)


def measure(stack: str, nodes: int, work: Path, parallels: list[int], profile: bool, log) -> dict:
    cluster = sshd_only_cluster(nodes, work / f"cluster-{nodes}", prefix=PREFIX, subnet=SUBNET, log=log)
    try:
        with DockerVersionApi(cluster):
            project = work / f"project-{nodes}"
            copy_project(project)
            name = f"bench-{nodes}"
            stack_file = project / "stacks" / f"Pulumi.{name}.yaml"
            stack_file.write_text(yaml.safe_dump({"config": stack_config(stack, cluster)}, sort_keys=False))
            env = environment(cluster, backend_dir=work / f"backend-{nodes}")

            def pulumi(*args: str, stdin: str | None = None) -> None:
                done = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=project, env=env, input=stdin,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"pulumi {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")

            pulumi("stack", "select", "--create", name)
            loaded = load_stack(str(stack_file))
            for argv, stdin in configure_commands(loaded, cluster)[1:]:  # the secrets; the rest is in the file
                pulumi(*argv[1:], stdin=stdin)
            offline = timed([sys.executable, "-m", "ascendctl", "preview", "--stack", str(stack_file), "--json"],
                            cwd=HERE.parent, env=dict(os.environ))
            if offline["returncode"] != 0:
                raise SystemExit(f"offline preview failed: {offline['output'][-3000:]}")
            # The JSON is stdout alone (the program's warnings go to stderr).
            offline["resources"] = len(json.loads(offline.pop("stdout"))["resources"])
            offline.pop("output")
            log(f"{nodes} nodes: offline preview {offline['seconds']} s")
            row = {"nodes": nodes, "offline": offline}
            for parallel in parallels:
                label = f"real-p{parallel}" if parallel else "real"
                event_log = work / f"events-{nodes}-{label}.jsonl"
                extra = ["--parallel", str(parallel)] if parallel else []
                real = timed(["pulumi", "preview", "--non-interactive", *extra, "--event-log", str(event_log)],
                             cwd=project, env={**env, "PULUMI_DEBUG_COMMANDS": "true"}, cluster=cluster,
                             profile=profile)
                output = real.pop("output")
                real.pop("stdout")
                if real["returncode"] != 0:
                    raise SystemExit(f"pulumi preview {' '.join(extra)} at {nodes} nodes failed:\n{output[-4000:]}")
                real["resources"] = resources_previewed(event_log)
                log(f"{nodes} nodes: pulumi preview {' '.join(extra)} {real['seconds']} s")
                row[label] = real
            return row
    finally:
        remove(cluster)


def per_doubling(rows: list[dict], which: str) -> dict[int, float]:
    out = {}
    for a, b in zip(rows, rows[1:], strict=False):
        out[b["nodes"]] = (b[which]["seconds"] / a[which]["seconds"]) ** (1 / math.log2(b["nodes"] / a["nodes"]))
    return out


def table(rows: list[dict]) -> str:
    head = "| nodes | preview | resources | wall s | wall ratio per doubling | control host CPU s | nodes' CPU s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    labels = [k for k in rows[0] if k.startswith("real")] + ["offline"]
    for which in labels:
        parallel = which.partition("-p")[2]
        label = ("`ascendctl preview`" if which == "offline"
                 else f"`pulumi preview{' --parallel ' + parallel if parallel else ''}`")
        ratios = per_doubling(rows, which)
        for row in rows:
            r = row[which]
            ratio = f"{ratios[row['nodes']]:.2f}" if row["nodes"] in ratios else ""
            lines.append(f"| {row['nodes']} | {label} | {r['resources']} | {r['seconds']} | {ratio} | "
                         f"{r['cpu_seconds']} | {r.get('node_cpu_seconds', '-')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,256", help="comma-separated node counts, ascending")
    parser.add_argument("--stack", default="tp16-vllm-mindspore", help="a stack that widens tp over its nodes")
    parser.add_argument("--parallel", default="0",
                        help="comma-separated `pulumi preview --parallel` values to time; 0: the CLI's default")
    parser.add_argument("--profile", action="store_true", help="sample the busiest processes of the real preview")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (project copies, stack files, backends, event logs)")
    args = parser.parse_args()
    # Ctrl-C and `kill` end the run through its cleanup (the nodes are removed), also when
    # started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="ascend-bench-preview-"))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    parallels = [int(p) for p in args.parallel.split(",")]
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows = []
    try:
        for n in sizes:
            rows.append(measure(args.stack, n, work, parallels, args.profile, log))
            log(json.dumps(rows[-1]))  # each size's row as soon as it is measured
    except ClusterError as error:  # another cluster on the subnet, a node that did not start
        log(f"preview_scale: {error}")
        return 1
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows))
        for row in rows:
            for label in (k for k in row if k.startswith("real")):
                for name, seconds in row[label].get("profile", []):
                    print(f"  {row['nodes']} nodes, {label}: {name:<28} {seconds:7.1f} CPU s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
