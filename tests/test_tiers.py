"""Every test belongs to exactly one tier (tests/conftest.py refuses
collection otherwise), so `-m pure`, `-m graph`, ... together run everything."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure


def collect(tmp_path, body: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_sample.py"
    test.write_text("import pytest\n" + body + "\ndef test_sample():\n    assert True\n")
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tests.conftest",
                           "-p", "no:cacheprovider", str(test)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)


def test_a_test_without_a_tier_is_refused(tmp_path):
    result = collect(tmp_path, "")
    assert result.returncode != 0
    assert "test_sample.py::test_sample belongs to tier(s) none" in result.stdout + result.stderr


def test_a_test_in_two_tiers_is_refused(tmp_path):
    result = collect(tmp_path, "pytestmark = [pytest.mark.pure, pytest.mark.graph]")
    assert result.returncode != 0
    assert "belongs to tier(s) ['graph', 'pure']" in result.stdout + result.stderr


def test_a_test_in_one_tier_is_collected(tmp_path):
    result = collect(tmp_path, "pytestmark = pytest.mark.graph")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 test collected" in result.stdout


def test_a_test_that_hangs_fails_with_where_it_was_and_the_run_goes_on(tmp_path):
    # pyproject.toml's `timeout` (pytest-timeout): a hang fails its test with
    # the stack it was stuck in, instead of running CI past its limit. Here
    # with the project's settings but a 2-second limit.
    test = tmp_path / "test_sample.py"
    test.write_text("import threading\nimport pytest\npytestmark = pytest.mark.pure\n\n"
                    "def test_stuck():\n    threading.Event().wait()\n\n"
                    "def test_after():\n    assert True\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c",
                             str(PROJECT_ROOT / "pyproject.toml"), "--rootdir", str(PROJECT_ROOT),
                             "-o", "timeout=2", str(test)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Timeout (>2.0s) from pytest-timeout" in out
    assert "threading.Event().wait()" in out  # where it was stuck
    assert "1 failed, 1 passed" in out


def test_the_project_sets_a_per_test_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert float(pytestconfig.getini("timeout")) > 0
