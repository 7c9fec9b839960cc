"""Pure tier: the check that runs before the stack's `docker run`, executed
by bash against a stand-in `docker` that answers `container inspect` as the
real one does (exit 1 when there is no such container)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack

pytestmark = pytest.mark.pure

STUB = """#!/usr/bin/env bash
# docker container inspect -f FORMAT NAME
[ "$1 $2" = "container inspect" ] || exit 64
[ -n "${EXISTING_LABEL+x}" ] || { echo "Error: No such container: $5" >&2; exit 1; }
case "$4" in
  *Labels*) printf '%s\\n' "$EXISTING_LABEL" ;;
  *Image*) echo "mindie:2.0.T3-800I-A2" ;;
esac
"""


def run_check(tmp_path: Path, existing_label: str | None) -> subprocess.CompletedProcess:
    loaded = load_stack("tp16-mindie")
    script = render_node(loaded, 1).scripts.container_name_free.command
    stub = tmp_path / "docker"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    if existing_label is not None:
        env["EXISTING_LABEL"] = existing_label
    return subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("label", [None, "tp16-mindie"], ids=["no container", "the stack's own"])
def test_free_or_ours_passes(tmp_path, label):
    done = run_check(tmp_path, label)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"container_name_free": true}'


@pytest.mark.parametrize("label", ["", "another-stack"], ids=["manual run (no label)", "another stack"])
def test_a_container_the_stack_did_not_create_is_one_clear_line(tmp_path, label):
    done = run_check(tmp_path, label)
    assert done.returncode == 7
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    name = load_stack("tp16-mindie").spec.container.name
    assert lines[0].startswith(f"node node1: a container named {name} (mindie:2.0.T3-800I-A2) exists that stack "
                               "tp16-mindie did not create")
    assert f"fix: remove it with `docker rm -f {name}` on node1, or set container.name" in lines[0]
