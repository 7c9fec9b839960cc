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
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)


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
