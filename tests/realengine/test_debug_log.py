"""components/debug_log.py under the real `pulumi` CLI and language host: with
the program's non-blocking `pulumi.log.debug` the engine gets the very debug
messages it gets from the SDK's own function, the program's and the SDK's
(each registration's), and `pulumi up --debug` shows them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.realengine.projects import STACK, Project, copy_program_with_sources, pulumi_env

pytestmark = pytest.mark.realengine

PROGRAM = Path(__file__).parent / "debug_log_program"
COUNT = 20


def program_copy(tmp_path: Path, toolchain_bin: Path, program_venv: Path) -> Project:
    work = tmp_path / "debug-log-only"
    copy_program_with_sources(work, PROGRAM, program_venv)
    (tmp_path / "state").mkdir()
    project = Project(work, pulumi_env(tmp_path, toolchain_bin, drop=("PYTEST",)), "debug-log-only")
    project.ok("stack", "select", "--create", STACK)
    return project


def debug_lines(output: str) -> list[str]:
    """The debug messages `--debug` showed, each once, sorted (the non-blocking
    calls may reach the engine in another order)."""
    return sorted(set(re.findall(r"debug: ((?:marker \d+ of \d+)|(?:resource registration successful: "
                                 r"ty=test:index:Part, urn=\S+))", output)))


def test_the_engine_gets_the_same_debug_messages_as_from_the_sdks_function(tmp_path, toolchain_bin, program_venv):
    seen = {}
    for installed in (False, True):
        project = program_copy(tmp_path / str(installed), toolchain_bin, program_venv)
        project.ok("config", "set", "installDebugLog", str(installed).lower())
        project.ok("config", "set", "count", str(COUNT))
        output = project.ok("up", "--yes", "--debug", "--skip-preview")
        assert project.outputs()["installed"] is installed
        seen[installed] = debug_lines(output)
    assert len([line for line in seen[False] if line.startswith("marker")]) == COUNT
    assert len([line for line in seen[False] if line.startswith("resource registration")]) == COUNT
    assert seen[True] == seen[False]
