"""benchmarks/preview_scaling.py --repeat: of N runs of a (stack, size) the
one with the least CPU time is kept, a refused or failed run ends the
repeats with its row, and N below 1 is refused with one line."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure

SCRIPT = PROJECT_ROOT / "benchmarks" / "preview_scaling.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("preview_scaling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_run_with_the_least_cpu_time_is_kept(monkeypatch):
    bench = load_benchmark()
    runs = iter([{"nodes": 8, "resources": 9, "seconds": 2.0, "cpu_seconds": 1.9, "peak_mb": 80},
                 {"nodes": 8, "resources": 9, "seconds": 1.2, "cpu_seconds": 1.1, "peak_mb": 81},
                 {"nodes": 8, "resources": 9, "seconds": 1.6, "cpu_seconds": 1.5, "peak_mb": 79}])
    calls = []
    monkeypatch.setattr(bench, "measure", lambda *args: calls.append(args) or next(runs))
    best = bench.best_of(SCRIPT.parent, "tp16-vllm-mindspore", 8, 60, 3)
    assert len(calls) == 3
    assert best == {"nodes": 8, "resources": 9, "seconds": 1.2, "cpu_seconds": 1.1, "peak_mb": 81, "runs": 3}


def test_a_refused_or_failed_run_ends_the_repeats(monkeypatch):
    bench = load_benchmark()
    calls = []
    refused = {"nodes": 32, "refused": "MindIE multi-node inference supports at most 4 servers"}
    monkeypatch.setattr(bench, "measure", lambda *args: calls.append(args) or refused)
    assert bench.best_of(SCRIPT.parent, "tp16-mindie", 32, 60, 3) == refused
    assert len(calls) == 1


def test_one_run_is_the_default_and_reports_no_repeat(monkeypatch):
    bench = load_benchmark()
    row = {"nodes": 2, "resources": 40, "seconds": 0.2, "cpu_seconds": 0.2, "peak_mb": 68}
    monkeypatch.setattr(bench, "measure", lambda *args: dict(row))
    assert bench.best_of(SCRIPT.parent, "tp16-vllm-mindspore", 2, 60, 1) == row


def test_repeat_below_one_is_refused():
    result = subprocess.run([sys.executable, str(SCRIPT), "--repeat", "0"], capture_output=True, text=True,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "preview_scaling.py: error: --repeat must be at least 1"
