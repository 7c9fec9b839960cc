"""Real `pulumi preview` at scale, beside the offline preview (root).

    python3 benchmarks/preview_scale.py [--sizes 64,256] [--stack tp16-vllm-mindspore]
        [--parallel 0,64] [--profile] [--skip-checkpoints] [--json] [--keep]
        [--prefix ptbench --subnet 238]

For each size: that many sshd-only emulated nodes (benchmarks/sshd_nodes.py
says exactly what they are; prefix "ptbench" and subnet 238 unless told), the stack widened
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
resources the engine previewed and where its time went (`phases`, from its
event log); the peak memory of the control host's processes, sampled every
second (`Sampler`); the load average before and after; and the time per
doubling of nodes (2.0 is linear). With `--profile` the busiest processes
of the preview and of the nodes are sampled every second (CPU seconds by
command). With `--skip-checkpoints` the real preview runs with
`PULUMI_SKIP_CHECKPOINTS=true`, as docs/benchmarks.md advises for large
clusters: the file backend writes nothing in a preview, but pulumi v3.274.1
serializes its whole in-memory snapshot at every step of one.
"""
from __future__ import annotations

import argparse
import contextlib
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
from benchmarks.sshd_nodes import DockerVersionApi, neighbour_room, remove, sshd_only_cluster  # noqa: E402
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


def process_tree(roots: list[int]) -> dict[int, int]:
    """Every live process under the roots (themselves included) -> the root it is under."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree: dict[int, int] = {}
    for root in roots:
        todo = [root]
        while todo:
            pid = todo.pop()
            tree[pid] = root
            todo.extend(children.get(pid, []))
    return tree


def command_name(comm: str, cmdline: list[bytes]) -> str:
    """The program a process runs: a stand-in or plugin script by its file name
    (they run as `python3 SCRIPT`), anything else by its command."""
    args = [a.decode(errors="replace") for a in cmdline if a]
    for arg in args[:3]:
        base = os.path.basename(arg)
        if base.startswith(("pulumi", "ascend_tools", "hccn_tool", "npu-smi")) or base == "__main__.py":
            return base
    return comm


class Sampler:
    """Every second, the processes of the preview (the control host's side: the
    CLI and engine, the language host and program, the plugins, the ssh
    clients) and of the nodes (everything under the nodes' sshd), each sample:

    - memory of the control host's side: the peak over samples of RSS summed
      (pages shared between processes counted in each, as `ps` does) and of
      PSS summed (shared pages divided among their users: what the machine
      pays), with the number of processes and of `pulumi-resource-docker`
      plugins at that peak;
    - with `profile`, CPU seconds by side and command of the processes alive at
      each sample, counted from their first sample on: a coarse profile
      (processes shorter than a second are mostly missed; the exact totals
      per side are the rows' CPU columns).

    Only the preview's and the nodes' processes are counted, never the rest
    of a shared machine."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, control_pid: int, node_pids: list[int], profile: bool):
        self.control_pid, self.node_pids, self.profile = control_pid, node_pids, profile
        self.peak = {"rss_mb": 0, "pss_mb": 0, "processes": 0, "docker_plugins": 0}
        self.last: dict[int, int] = {}
        self.by_command: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = pss = plugins = processes = 0
        for pid, root in process_tree([self.control_pid, *self.node_pids]).items():
            control = root == self.control_pid
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if self.profile:
                    head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
                    ticks = sum(int(f) for f in rest.split()[11:13])
                if control:
                    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                    kib = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            except (OSError, StopIteration, ValueError):
                continue  # ended meanwhile (or a kernel thread: no smaps)
            if self.profile:
                side = "control host" if control else "nodes"
                self.by_command[f"{side}: {command_name(head.partition('(')[2], cmdline)}"] += (
                    ticks - self.last.get(pid, ticks))
                self.last[pid] = ticks
            if control:
                rss += pages * self.PAGE
                pss += kib * 1024
                processes += 1
                # A stand-in runs as `python3 .../pulumi-resource-docker ADDRESS`, a real plugin as itself.
                plugins += any(os.path.basename(arg) == b"pulumi-resource-docker" for arg in cmdline[:2])
        if rss >> 20 > self.peak["rss_mb"]:
            self.peak = {"rss_mb": rss >> 20, "pss_mb": pss >> 20, "processes": processes,
                         "docker_plugins": plugins}

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def top(self, count: int = 14) -> list[tuple[str, float]]:
        return [(name, ticks / TICKS) for name, ticks in self.by_command.most_common(count)]


def timed(argv: list[str], *, cwd: Path, env: dict[str, str], cluster=None, profile: bool = False) -> dict:
    """Run argv to the end: wall time, CPU time of it and its children, of the
    nodes; peak memory of it and its children; the load average before and after."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    nodes = node_cpu(cluster) if cluster is not None else 0.0
    node_pids = [node.holder_pid for node in cluster.nodes] if cluster is not None else []
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    # Its own process group: a run stopped midway (Ctrl-C, kill) takes the CLI and
    # everything it started (a plugin per docker provider, the ssh clients) with it;
    # otherwise the plugins outlive the engine, waiting for a call that never comes.
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process, \
            Sampler(process.pid, node_pids, profile) as sampler:
        try:
            stdout, stderr = process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"seconds": round(wall, 1),
           "cpu_seconds": round(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1),
           "returncode": process.returncode, "output": stdout + stderr, "stdout": stdout,
           "peak_memory": sampler.peak, "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    if cluster is not None:
        row["node_cpu_seconds"] = round(node_cpu(cluster) - nodes, 1)
    if profile:
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


def phases(event_log: Path) -> dict[str, float]:
    """Where a real preview's time went, in seconds from its first event (the
    engine's timestamps are whole seconds): the program's first check sent
    (the CLI, the language host and the program started), the last check
    answered (every node's preflight and peer pings, run on the nodes), the
    first and last docker provider registered (the engine starts one plugin
    process per provider resource, and the program gives each node its own),
    and the last event. The checks and the providers overlap: a node's
    provider and image follow its own preflight, not the others'."""
    first = None
    marks: dict[str, float] = {}
    providers: list[float] = []
    for event in read_events(event_log):
        stamp = event["timestamp"]
        first = stamp if first is None else first
        at = stamp - first
        marks["end"] = at
        message = (event.get("diagnosticEvent") or {}).get("message", "")
        if "Invoking function prepared: tok=command:local:run" in message:
            marks.setdefault("first_check_sent", at)
        elif "Invoking function completed: tok=command:local:run" in message:
            marks["last_check_answered"] = at
        body = event.get("resOutputsEvent")
        if body and body["metadata"]["type"] == "pulumi:providers:docker":
            providers.append(at)
    if providers:
        marks["first_docker_provider"], marks["last_docker_provider"] = min(providers), max(providers)
    return marks


def measure(stack: str, nodes: int, work: Path, parallels: list[int], profile: bool, log, *,
            prefix: str = PREFIX, subnet: int = SUBNET, grpc_log: bool = False,
            skip_checkpoints: bool = False) -> dict:
    cluster = sshd_only_cluster(nodes, work / f"cluster-{nodes}", prefix=prefix, subnet=subnet, log=log)
    try:
        with DockerVersionApi(cluster), neighbour_room(nodes, cluster.hardware.npu_count):
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
                debug = {"PULUMI_DEBUG_COMMANDS": "true"}
                if skip_checkpoints:
                    debug["PULUMI_SKIP_CHECKPOINTS"] = "true"
                if grpc_log:  # every gRPC call of the engine, to see which one failed (large)
                    debug["PULUMI_DEBUG_GRPC"] = str(work / f"grpc-{nodes}-{label}.json")
                real = timed(["pulumi", "preview", "--non-interactive", *extra, "--event-log", str(event_log)],
                             cwd=project, env={**env, **debug}, cluster=cluster, profile=profile)
                output = real.pop("output")
                real.pop("stdout")
                if real["returncode"] != 0:
                    raise SystemExit(f"pulumi preview {' '.join(extra)} at {nodes} nodes failed:\n{output[-4000:]}")
                real["resources"] = resources_previewed(event_log)
                real["phases"] = phases(event_log)
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
    head = ("| nodes | preview | resources | wall s | wall ratio per doubling | control host CPU s | nodes' CPU s "
            "| peak RSS MB (PSS MB, docker plugins) | load average before, after |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    labels = [k for k in rows[0] if k.startswith("real")] + ["offline"]
    for which in labels:
        parallel = which.partition("-p")[2]
        label = ("`ascendctl preview`" if which == "offline"
                 else f"`pulumi preview{' --parallel ' + parallel if parallel else ''}`")
        ratios = per_doubling(rows, which)
        for row in rows:
            r = row[which]
            ratio = f"{ratios[row['nodes']]:.2f}" if row["nodes"] in ratios else ""
            memory = r["peak_memory"]
            lines.append(f"| {row['nodes']} | {label} | {r['resources']} | {r['seconds']} | {ratio} | "
                         f"{r['cpu_seconds']} | {r.get('node_cpu_seconds', '-')} | {memory['rss_mb']:,} "
                         f"({memory['pss_mb']:,}, {memory['docker_plugins']}) | "
                         f"{r['load_average'][0]}, {r['load_average'][1]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,256", help="comma-separated node counts, ascending")
    parser.add_argument("--stack", default="tp16-vllm-mindspore", help="a stack that widens tp over its nodes")
    parser.add_argument("--parallel", default="0",
                        help="comma-separated `pulumi preview --parallel` values to time; 0: the CLI's default")
    parser.add_argument("--profile", action="store_true", help="sample the busiest processes of the real preview")
    parser.add_argument("--skip-checkpoints", action="store_true",
                        help="run the real preview with PULUMI_SKIP_CHECKPOINTS=true (no snapshot serialized per step)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--grpc-log", action="store_true",
                        help="log the engine's gRPC calls (PULUMI_DEBUG_GRPC) into the work dir (use with --keep)")
    parser.add_argument("--prefix", default=PREFIX, help="name prefix of the nodes' namespaces and links")
    parser.add_argument("--subnet", type=int, default=SUBNET,
                        help="the emulator subnet K (198.18.K.0/24) the bridge holds, as a cluster's")
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
            rows.append(measure(args.stack, n, work, parallels, args.profile, log, prefix=args.prefix,
                                subnet=args.subnet, grpc_log=args.grpc_log,
                                skip_checkpoints=args.skip_checkpoints))
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
