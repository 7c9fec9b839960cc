"""Pure tier: the rendered env file run for real with bash, under the
`set -euo pipefail` every node script starts with (templates/_prelude.sh.j2).

Its comment promises that a missing set_env.sh is skipped with a warning; a
value that refers to a variable such a script sets (`$ASCEND_HOME_PATH/..`)
must then neither stop the script (`unbound variable` under `set -u`) nor be
exported half-expanded.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.stack import loaded_with_config
from tests.conftest import STACKS

pytestmark = pytest.mark.pure


def env_text(stack: str, changes: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    base = load_stack(stack)
    config = base.raw_config
    for change in changes:
        config = apply_change(config, change, base.file)
    node = render_node(loaded_with_config(base, config), 0)
    return node.env_text, node.env.sources


def run_env(text: str, sources: tuple[str, ...], where: Path, present: dict[str, str]) -> subprocess.CompletedProcess:
    """Source the env file as a node script does, with each set_env.sh moved
    under `where` (present only when `present` gives its text), then print
    the environment."""
    for source in sources:
        moved = where / source.lstrip("/")
        text = text.replace(source, str(moved))
        if source in present:
            moved.parent.mkdir(parents=True, exist_ok=True)
            moved.write_text(present[source])
    env_file = where / "env.sh"
    env_file.write_text(text)
    script = f"set -euo pipefail\nsource {env_file}\nenv\n"
    # A small file of exports and tests: bounded work.
    return subprocess.run(["bash", "-c", script], cwd=where, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})


def exported(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stacks_env_file_runs_without_its_set_env_scripts(stack, tmp_path):
    text, sources = env_text(stack)
    done = run_env(text, sources, tmp_path, {})
    assert done.returncode == 0, done.stderr
    for source in sources:
        assert f"warning: {tmp_path / source.lstrip('/')} not found" in done.stderr
    assert "unbound variable" not in done.stderr


REFERRING = ("engine.env.MY_TOOLKIT=$ASCEND_HOME_PATH/../", "engine.env.MY_OPP=${ASCEND_HOME_PATH}/opp")


def test_a_value_built_on_a_missing_set_env_variable_is_skipped_with_a_warning(tmp_path):
    text, sources = env_text("tp16-vllm-mindspore", REFERRING)
    assert sources == ("/usr/local/Ascend/ascend-toolkit/set_env.sh",)
    done = run_env(text, sources, tmp_path, {})
    assert done.returncode == 0, done.stderr
    assert "warning: MY_TOOLKIT not exported: it needs ASCEND_HOME_PATH set" in done.stderr
    assert "warning: MY_OPP not exported: it needs ASCEND_HOME_PATH set" in done.stderr
    env = exported(done.stdout)
    assert "MY_TOOLKIT" not in env and "MY_OPP" not in env
    # The rest of the file still ran.
    assert env["MS_ENABLE_LCCL"] == "off"


def test_a_value_built_on_a_set_env_variable_is_exported_when_the_script_is_there(tmp_path):
    text, sources = env_text("tp16-vllm-mindspore", REFERRING)
    toolkit = "/usr/local/Ascend/ascend-toolkit/latest"
    done = run_env(text, sources, tmp_path, {sources[0]: f"export ASCEND_HOME_PATH={toolkit}\n"})
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    env = exported(done.stdout)
    assert env["MY_TOOLKIT"] == f"{toolkit}/../" and env["MY_OPP"] == f"{toolkit}/opp"
