"""`.ci/run` says what it will install before it installs anything: run with
a stand-in `python3` first on PATH that records its arguments and fails, the
script stops at its first install step (pip), so everything printed before
that is what a user reads before their machine is changed."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure


def test_ci_run_says_what_it_installs_before_it_installs(tmp_path):
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = bin_dir / "python3"
    standin.write_text(f'#!/bin/sh\necho "python3 $*" >> {calls}\necho "STAND-IN PYTHON3 CALLED"\nexit 1\n')
    standin.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(PROJECT_ROOT / ".ci" / "run")], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0  # stopped at the stand-in
    # The first thing run is pip, and it came after the paragraph.
    assert calls.read_text().splitlines()[0].startswith("python3 -m pip install")
    before, _, _ = result.stdout.partition("STAND-IN PYTHON3 CALLED")
    said = " ".join(before.split())
    assert said.startswith("== .ci/run installs what the tests need"), result.stdout
    for what in ("pip-installs requirements-dev.txt and emulator/requirements-emulator.txt",
                 "pulumi CLI", "Go module proxy"):
        assert what in said, said
    if os.geteuid() == 0:
        for what in ("emulator/apt-packages.txt", "PostgreSQL", "GPUStack 2.3.0 venv"):
            assert what in said, said
    else:
        assert "Not root: no Debian packages" in said, said
