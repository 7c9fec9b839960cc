"""Rollout time on the emulated cluster (root; emulator/README.md lists what it needs).

    python benchmarks/rollout.py [--sizes 2,4] [--faults] [--stack tp16-vllm-mindspore]

For each size: wall time of a full rollout (preflight ... smoke test) with
independent steps in parallel, as the program's graph allows, against the
same steps run one after another, as the runbooks do node by node; then
`destroy`. With --faults: time from the start of a rollout to the failure,
per injected fault, against the runbooks' HCCL_CONNECT_TIMEOUT of 7200 s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Cluster  # noqa: E402
from emulator.rollout import StackRollout  # noqa: E402

FAULTS = [
    {"link_down": [3]}, {"tls_on": [2]}, {"net_health_fail": [5]}, {"unhealthy_devices": [4]},
    {"missing_devices": [7]}, {"driver_version": "23.0.6"}, {"unreachable": ["198.19.0.1"]},
    {"stale_rootinfo": True}, {"missing_model": True}, {"model_file_differs": True},
    {"hostname": "ascend-node0"}, {"wrong_device_ip": {"6": "198.19.9.9"}},
]


def rollout_once(cluster, stack: str, changes: list[str], workers: int, state: Path) -> float:
    rollout = StackRollout(cluster, stack, state, log=lambda m: None)
    rollout.executor.workers = workers
    start = time.monotonic()
    report = rollout.up(changes)
    elapsed = time.monotonic() - start
    rollout.destroy()
    if report.error:
        raise SystemExit(f"rollout failed: {report.error}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,4")
    parser.add_argument("--stack", default="tp16-vllm-mindspore")
    parser.add_argument("--faults", action="store_true", help="also measure time-to-detect per fault (2 nodes)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ascend-bench-"))
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        state = work / f"cluster-{n}"
        cluster = Cluster.up(n, state, log=lambda m: None, prefix="bench", subnet=244)
        try:
            changes = [f"parallel.tp={8 * n}"]
            parallel = rollout_once(cluster, args.stack, changes, workers=16, state=work / f"p{n}.json")
            serial = rollout_once(cluster, args.stack, changes, workers=1, state=work / f"s{n}.json")
            rows.append((n, parallel, serial))
            print(f"{n} nodes: full rollout {parallel:6.1f} s in parallel, {serial:6.1f} s step after step", flush=True)
            if args.faults and n == 2:
                print(f"{'fault':<20} {'detected after':>14}  (runbooks: HCCL_CONNECT_TIMEOUT 7200 s)")
                for fault in FAULTS:
                    cluster.set_fault("node1", **fault)
                    rollout = StackRollout(cluster, args.stack, work / "fault.json", log=lambda m: None)
                    start = time.monotonic()
                    report = rollout.up()
                    elapsed = time.monotonic() - start
                    rollout.destroy()
                    cluster.clear_faults("node1")
                    caught = "caught" if report.error else "NOT CAUGHT"
                    first_line = str(report.error).splitlines()[0][:90]
                    print(f"{next(iter(fault)):<20} {elapsed:12.1f} s  {caught}: {first_line}", flush=True)
        finally:
            Cluster.down_state_dir(state, log=lambda m: None)
    if len(rows) > 1:
        (n0, p0, _), (n1, p1, _) = rows[0], rows[-1]
        print(f"parallel rollout time ratio {n1}/{n0} nodes: {p1 / p0:.2f} (1.0 = nodes proceed fully in parallel)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
