"""The real-engine preview benchmark runs, at 2 nodes: a smoke test of the
script (docs/benchmarks.md), not a measurement. Its times are printed, never
judged (performance is never a timing assertion in a test). It makes its own
sshd-only nodes with the benchmarks' prefix and subnet (ptbench, 238), so it
cannot run while a benchmark does. `benchmarks/rollout.py` is not run here:
its smallest measurement is three full rollouts."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator import network
from tests.emulated.conftest import REPO, require_prerequisites

pytestmark = pytest.mark.emulated


def test_preview_scale_at_two_nodes():
    require_prerequisites()
    # With PULUMI_SKIP_CHECKPOINTS, as docs/benchmarks.md advises for a large cluster's
    # preview (every other emulated test previews without it).
    done = subprocess.run([sys.executable, "benchmarks/preview_scale.py", "--sizes", "2", "--parallel", "0",
                           "--skip-checkpoints", "--json"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout)
    (row,) = json.loads(done.stdout)
    # The engine previewed what the offline preview records, and every node's
    # checks ran on the node (the nodes' own processes used CPU).
    assert row["real"]["resources"] == row["offline"]["resources"] > 0
    assert row["real"]["node_cpu_seconds"] > 0
    # Nothing of the benchmark's nodes is left behind.
    assert not [ns for ns in network.netns_list() if ns.startswith("ptbench-")]
    assert not network.link_exists("ptbench-br0")
