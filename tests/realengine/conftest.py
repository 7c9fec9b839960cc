"""Fixtures of the real-engine tier: the `pulumi` CLI and the Python language
host built by tools/pulumi-toolchain.sh, run on a copy of this project with a
file backend and passphrase secrets, exactly as a user runs them.

Every test here is marked `realengine`. The toolchain script is the only
source of the binaries: when it cannot produce them the fixture FAILS with its
message (a skip would only hide a broken setup). `.ci/run` runs the script
first, so here it only finds its cache.

The stack's `command` and `docker` resource plugins cannot be had on the
development machines (the Go module proxy refuses both provider modules;
Pulumi's download site is unreachable). A stack's `pulumi preview` here,
with no plugin on PATH, runs the program up to its first plugin load:
what these tests show of it is the CLI's own config typing and secrets, the
program's reading of them, and bad stacks refused with one line under the
real engine (test_pulumi_cli.py). The stand-in plugins (emulator/plugins,
docs/standin-plugins.md) run under the real CLI in test_standin_plugins.py,
and whole rollouts in tests/emulated (test_pulumi_userpath.py and the
modules on emulator.userpath). The one dynamic resource, GPUStack's model,
runs to the end with its own plugin, a script the toolchain installs
(test_gpustack_model_engine.py). test_control_host.py shows what the README
says of a control host: which Python runs the program, and plugins
installed from archives.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from emulator import userpath
from tests.realengine.projects import Project, pulumi_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = PROJECT_ROOT / "tools" / "pulumi-toolchain.sh"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realengine: runs the real `pulumi` CLI and Python language host from "
                   "tools/pulumi-toolchain.sh on a copy of the project (file backend, passphrase secrets)")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.realengine)


@pytest.fixture(scope="session")
def toolchain_bin() -> Path:
    done = subprocess.run(["bash", str(TOOLCHAIN)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        pytest.fail(f"tools/pulumi-toolchain.sh failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def program_venv() -> Path:
    """The project's runtime venv (`virtualenv: venv` in Pulumi.yaml): emulator.userpath.program_venv."""
    return userpath.program_venv()


@pytest.fixture
def project(tmp_path, toolchain_bin, program_venv) -> Project:
    work = tmp_path / "ascend-inference"
    userpath.copy_project(work)
    (tmp_path / "state").mkdir()
    return Project(work, pulumi_env(tmp_path, toolchain_bin), "ascend-inference")


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "real-engine-tier", "-f", str(path)],
                   check=True)
    return path.read_text()


def created_count(preview_output: str) -> int:
    """`+ N to create` from a preview summary (0 when there is none)."""
    found = re.search(r"\+ (\d+) to create", preview_output)
    return int(found.group(1)) if found else 0
