"""Offline preview of generated stacks with 2 to 256 nodes: wall time and peak
memory per size, and how time grows against the node count.

    python benchmarks/preview_scaling.py [--sizes 2,8,32,128,256] [--stack tp16-vllm-mindspore]

Each size runs in a fresh subprocess so peak memory (max RSS) is its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascend_inference.stackfile import load_stack
base = load_stack(sys.argv[2])
nodes = int(sys.argv[3])
config = scaled_config(base, nodes)
start = time.perf_counter()
loaded = loaded_with_config(base, config)
graph = record_stack(loaded, config)
elapsed = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"nodes": nodes, "resources": len(graph.resources), "seconds": round(elapsed, 3),
                  "peak_mb": round(peak_mb, 1), "longest_chain": graph.longest_chain()}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2,8,32,128,256", help="comma-separated node counts")
    parser.add_argument("--stack", default="tp16-vllm-mindspore", help="stack to scale (tp over the whole world)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"{'nodes':>6} {'resources':>10} {'seconds':>9} {'peak MB':>9} {'chain':>6}", flush=True)
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), args.stack, str(n)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['nodes']:>6} {row['resources']:>10} {row['seconds']:>9.2f} {row['peak_mb']:>9.1f} "
              f"{row['longest_chain']:>6}", flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"time ratio {last['nodes']}/{first['nodes']} nodes: {last['seconds'] / first['seconds']:.1f} "
              f"(node ratio {last['nodes'] // first['nodes']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
