"""Graph tier: `<node>-gpustack-backends`, the step between the GPUStack model's delete and the
node's GPUStack container's. Its undo, as the program records it for dp4-ep32-gpustack, run by
bash against a stand-in `docker` that answers `docker ps --format '{{.ID}} {{.Label ...}}'` as
the real one does and records what is removed."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import record_stack
from tests.step_script import undo_script

pytestmark = pytest.mark.graph

# ps: the lines in $PS_FILE (id and workload label), emptied once $WORKER_REMOVES_AFTER ps calls
# have been answered (the worker removing them by itself); rm -f: recorded. Any other call fails.
PS_ARGS = 'ps -a --filter label=runtime.gpustack.ai/workload --format {{.ID}} {{.Label "runtime.gpustack.ai/workload"}}'
STUB = """#!/usr/bin/env bash
if [ -n "${DOCKER_DOWN:-}" ]; then echo "Cannot connect to the Docker daemon" >&2; exit 1; fi
case "$1" in
  ps)
    [ "$*" = "$PS_ARGS" ] || exit 64
    calls=$(( $(cat "$CALLS" 2>/dev/null || echo 0) + 1 )); echo "$calls" > "$CALLS"
    if [ -z "${WORKER_REMOVES_AFTER:-}" ] || [ "$calls" -lt "$WORKER_REMOVES_AFTER" ]; then cat "$PS_FILE"; fi ;;
  rm) [ "$2" = "-f" ] || exit 64; shift 2; echo "$*" >> "$REMOVED" ;;
  *) exit 64 ;;
esac
"""

LEFT = ["a1 DeepSeek-R1-zw9qz", "b2 DeepSeek-R1-zw9qz-f0", "c3 Qwen3-abcde", "d4 DeepSeek-R1-distill-ab1c2",
        "e5 DeepSeek-R1-zw9qz-f12"]


@pytest.fixture(scope="module")
def undo() -> str:
    graph = record_stack(load_stack("dp4-ep32-gpustack"))
    return undo_script(graph.by_name("node1-gpustack-backends").inputs)


def run(tmp_path: Path, script: str, ps: list[str], **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    stub = tmp_path / "docker"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "ps").write_text("".join(f"{line}\n" for line in ps))
    removed = tmp_path / "removed"
    done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "PS_FILE": str(tmp_path / "ps"),
                               "CALLS": str(tmp_path / "calls"), "REMOVED": str(removed), "PS_ARGS": PS_ARGS, **env})
    return done, removed.read_text().split() if removed.exists() else []


def test_what_the_worker_left_of_this_model_is_removed_after_the_wait(tmp_path, undo):
    # The stack's wait, shortened: the script is the program's, only `seq` counts to 2.
    script = undo.replace("$(seq 1 30)", "$(seq 1 2)")
    assert script != undo
    done, removed = run(tmp_path, script, LEFT)
    assert done.returncode == 0, done.stderr
    assert removed == ["a1", "b2", "e5"]
    assert done.stderr.strip() == (
        "GPUStack's worker did not remove the backend containers of model DeepSeek-R1 within 30 s of its delete; "
        "removing them: DeepSeek-R1-zw9qz DeepSeek-R1-zw9qz-f0 DeepSeek-R1-zw9qz-f12")


def test_nothing_is_removed_when_the_worker_removed_them(tmp_path, undo):
    done, removed = run(tmp_path, undo, LEFT, WORKER_REMOVES_AFTER="3")
    assert done.returncode == 0, done.stderr
    assert removed == [] and done.stderr == ""


def test_none_left_is_done_at_once_and_a_second_run_too(tmp_path, undo):
    for _ in range(2):
        done, removed = run(tmp_path, undo, ["c3 Qwen3-abcde"])
        assert done.returncode == 0, done.stderr
        assert removed == []


def test_a_docker_that_does_not_answer_fails_the_step(tmp_path, undo):
    done, removed = run(tmp_path, undo, LEFT, DOCKER_DOWN="1")
    assert done.returncode != 0
    assert "Cannot connect to the Docker daemon" in done.stderr
    assert removed == []
