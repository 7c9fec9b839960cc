"""Real `pulumi up` on the emulated cluster (root; emulator/README.md lists what it needs).

    python3 benchmarks/rollout.py [--sizes 2,4] [--faults] [--stack tp16-vllm-mindspore] [--keep]

For each size: a cluster of that many emulated nodes (prefix "ptbench",
subnet 238), the stack widened to it (tp over every NPU, as
benchmarks/preview_scaling.py scales it), and the wall time of a full
`pulumi up --yes` (the real CLI and language host of
tools/pulumi-toolchain.sh, the stand-in `command` and `docker` plugins of
emulator/plugins, driven by emulator/userpath.py PulumiRollout exactly as
the README's user path) with the engine's default parallelism against
`--parallel 1`; each `up` on a fresh stack, destroyed afterwards.

With --faults (on the first size): one fault at a time injected on node1
(emulator/faults.py, as `python -m emulator fault` does), then `pulumi up` of
a fresh stack, timed from the start of `up` to the first output line that
names the fault, and to the end of `up`, against the runbooks'
HCCL_CONNECT_TIMEOUT of 7200 s.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ascend_inference.stackfile import load_stack  # noqa: E402
from ascendctl.preview.config import scaled_config  # noqa: E402
from emulator import Cluster, ClusterError  # noqa: E402
from emulator.userpath import PulumiRollout  # noqa: E402

PREFIX, SUBNET = "ptbench", 238

# (fault on node1, what the failure line says: docs/testing.md, "What an injected fault reports")
FAULTS: list[tuple[dict, str]] = [
    ({"link_down": [3]}, "device 3 link: is DOWN"),
    ({"tls_on": [2]}, "device 2 tls: switch is 1"),
    ({"net_health_fail": [5]}, "device 5 net_health: is Fault"),
    ({"unhealthy_devices": [4]}, "healthy NPUs, the stack needs 8"),
    ({"missing_devices": [7]}, "healthy NPUs, the stack needs 8"),
    ({"driver_version": "23.0.6"}, "driver version: is 23.0.6"),
    ({"unreachable": ["198.19.0.1"]}, "FAILED node1 device 0 -> node0 device 0"),
    ({"stale_rootinfo": True}, "a stale HCCL root info file is present"),
    ({"missing_model": True}, "does not exist"),
    ({"model_file_differs": True}, "model weights:"),
    ({"hostname": "ascend-node0"}, "hostname: is 'ascend-node0'"),
    ({"wrong_device_ip": {"6": "198.19.9.9"}}, "device 6 ip: is 198.19.9.9"),
]


def widened_stack(stack: str, nodes: int, directory: Path) -> Path:
    """The stack file with `nodes` nodes and tp over all their NPUs, named
    `<stack>-<nodes>n`; `python -m emulator configure` (PulumiRollout) then
    points the nodes at the emulated cluster."""
    base = load_stack(stack)
    path = directory / f"Pulumi.{base.name}-{nodes}n.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"config": scaled_config(base, nodes)}, sort_keys=False))
    return path


def fresh_rollout(cluster, stack_file: Path, workdir: Path) -> PulumiRollout:
    """A PulumiRollout of the stack file on a fresh copy of the project: the file
    goes into the copy's stacks/ first, so `pulumi stack select --create` finds it."""
    stacks = workdir / "project" / "stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    (stacks / stack_file.name).write_text(stack_file.read_text())
    return PulumiRollout(cluster, str(stacks / stack_file.name), workdir, log=lambda m: None)


def timed_up(rollout: PulumiRollout, *extra: str, watch: str | None = None) -> tuple[float, float | None, str, int]:
    """`pulumi up --yes` run as PulumiRollout runs it, its output read as it comes:
    (seconds to the end, seconds to the first line holding `watch` or None,
    that line, the exit status)."""
    start = time.monotonic()
    proc = subprocess.Popen(["pulumi", "up", "--yes", "--non-interactive", *extra], cwd=rollout.project,
                            env=rollout.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[tuple[float, str]] = []
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if watch and not seen and watch in line:
                seen.append((time.monotonic() - start, line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait()
    reader.join()
    total = time.monotonic() - start
    if watch is None and proc.returncode != 0:
        raise SystemExit(f"pulumi up {' '.join(extra)} failed:\n{''.join(lines[-40:])}")
    at, line = seen[0] if seen else (None, "".join(lines[-5:]).strip())
    return total, at, line, proc.returncode


def measure_size(cluster, stack: str, nodes: int, work: Path) -> tuple[float, float]:
    stack_file = widened_stack(stack, nodes, work / "stacks")
    times = []
    for label, extra in (("default", ()), ("parallel1", ("--parallel", "1"))):
        rollout = fresh_rollout(cluster, stack_file, work / f"{nodes}n-{label}")
        try:
            seconds, _, _, _ = timed_up(rollout, *extra)
        finally:
            rollout.destroy()
        times.append(seconds)
    return times[0], times[1]


def measure_faults(cluster, stack: str, work: Path) -> None:
    stack_file = widened_stack(stack, len(cluster.nodes), work / "stacks")
    rollout = fresh_rollout(cluster, stack_file, work / "faults")
    print(f"{'fault on node1':<20} {'to the line':>11} {'to the end':>10}  (runbooks: HCCL_CONNECT_TIMEOUT 7200 s)",
          flush=True)
    for fault, says in FAULTS:
        cluster.set_fault("node1", **fault)
        try:
            total, at, line, status = timed_up(rollout, watch=says)
        finally:
            cluster.clear_faults("node1")
            rollout.destroy()
        name = next(iter(fault))
        if status == 0:
            print(f"{name:<20} {'NOT CAUGHT':>11} {total:9.1f}s", flush=True)
        elif at is None:
            print(f"{name:<20} {'not named':>11} {total:9.1f}s  failed otherwise: {line[-200:]}", flush=True)
        else:
            said = line[line.find("error: "):] if "error: " in line else line
            print(f"{name:<20} {at:10.1f}s {total:9.1f}s  {said[:100]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,4", help="comma-separated node counts")
    parser.add_argument("--stack", default="tp16-vllm-mindspore", help="a stack that widens tp over its nodes")
    parser.add_argument("--faults", action="store_true", help="also time each fault to its message (first size)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (project copies, stack files)")
    args = parser.parse_args()
    # Ctrl-C and `kill` end the run through its cleanup (the nodes are removed), also when
    # started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ascend-bench-rollout-"))
    print(f"stack {args.stack}, real pulumi up; work dir {work}", flush=True)
    rows = []
    try:
        for n in sizes:
            state = work / f"cluster-{n}"
            cluster = Cluster.up(n, state, log=lambda m: None, prefix=PREFIX, subnet=SUBNET)
            try:
                parallel, serial = measure_size(cluster, args.stack, n, work)
                rows.append((n, parallel, serial))
                print(f"{n} nodes: pulumi up {parallel:6.1f} s (default parallelism), {serial:6.1f} s (--parallel 1)",
                      flush=True)
                if args.faults and n == sizes[0]:
                    measure_faults(cluster, args.stack, work)
            finally:
                Cluster.down_state_dir(state, log=lambda m: None)
    except ClusterError as error:  # another cluster on the subnet, a node that did not start
        print(f"rollout: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(rows) > 1:
        (n0, p0, _), (n1, p1, _) = rows[0], rows[-1]
        print(f"pulumi up time ratio {n1}/{n0} nodes: {p1 / p0:.2f} (1.0 = nodes proceed fully in parallel)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
