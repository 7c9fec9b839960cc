"""Pure tier: a node's scripts are typed fields that carry where they run.

Ray and the serving process live in the container, everything else runs on
the host; `Script.command` is the one place that turns a container script
into what the host runs (`docker exec -i <container> bash -s`).
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from emulator.node import process_alive
from tests.conftest import STACKS

pytestmark = pytest.mark.pure

IN_CONTAINER = {"container-check", "config-edit", "config-restore", "ray-start", "ray-stop", "ray-verify",
                "serve-start", "serve-stop", "serve-ready"}

# Stand-in for `docker exec -i NAME bash -s`: records the container name and
# what the host fed it on stdin.
DOCKER_STUB = """#!/usr/bin/env bash
[ "$1 $2 $4 $5" = "exec -i bash -s" ] || { echo "unexpected docker call: $*" >&2; exit 64; }
printf '%s' "$3" > "$RECORD.name"
cat > "$RECORD.stdin"
"""


@pytest.fixture(scope="module")
def rendered():
    out = {}
    for stack in STACKS:
        loaded = load_stack(stack)
        out[stack] = (loaded, [render_node(loaded, i) for i in range(len(loaded.spec.nodes))])
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_each_script_runs_in_its_place(rendered, stack):
    loaded, nodes = rendered[stack]
    for node in nodes:
        scripts = node.scripts.present()
        assert scripts, stack
        for script in scripts:
            expected = "container" if script.name in IN_CONTAINER else "host"
            assert script.place == expected, f"{stack} {node.ctx.node.name} {script.name}"
            if script.place == "host":
                assert script.command == script.text
            else:
                assert script.container == loaded.spec.container.name
                assert script.command.startswith(f"docker exec -i {loaded.spec.container.name} bash -s <<")


@pytest.mark.parametrize("stack", ["tp16-lmdeploy", "tp16-mindie"])
def test_a_container_script_reaches_the_container_unchanged(rendered, stack, tmp_path):
    _, nodes = rendered[stack]
    stub = tmp_path / "docker"
    stub.write_text(DOCKER_STUB)
    stub.chmod(0o755)
    record = tmp_path / "record"
    # A step's script and its undo (which asks docker nothing more when its exec succeeds).
    for script in (nodes[0].scripts.serve_start, nodes[0].scripts.serve_stop):
        assert script is not None
        done = subprocess.run(["bash", "-c", script.command], capture_output=True, text=True,
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin", "RECORD": str(record)})
        assert done.returncode == 0, done.stderr
        assert Path(f"{record}.name").read_text() == script.container
        assert Path(f"{record}.stdin").read_text() == script.text


# The undos of something in the container (a step's delete there): see templating.wrap.
UNDOS = {"config-restore", "pyacl-remove", "ray-stop", "serve-stop"}

# Stand-in for docker where `docker exec` fails (the container is gone or going):
# `docker inspect` prints the states listed in $STATES, one per call (the last one
# repeated), "gone" being no such container; each call is counted in $RECORD.
DOCKER_EXEC_FAILS = """#!/usr/bin/env bash
case "$1" in
  exec) cat > /dev/null; echo "OCI runtime exec failed: exec failed: unable to start container process" >&2; exit 126 ;;
  inspect)
    echo x >> "$RECORD"
    set -- $STATES
    n=$(wc -l < "$RECORD"); [ "$n" -le "$#" ] || n=$#
    state=${!n}
    [ "$state" = gone ] && { echo "Error: No such object" >&2; exit 1; }
    echo "$state" ;;
  *) echo "unexpected docker call: $*" >&2; exit 64 ;;
esac
"""


def test_the_undos_in_the_container_are_marked_undos(rendered):
    for stack, (_, nodes) in rendered.items():
        for node in nodes:
            for script in node.scripts.present():
                assert script.undo == (script.name in UNDOS), f"{stack} {script.name}"


@pytest.mark.parametrize("states,status,inspected", [
    # Gone already (deleted by another container's chain, or removed by hand): done.
    ("gone", 0, 1),
    # Stopped (a node rebooted, or the container being deleted stopped): done.
    ("exited", 0, 1),
    # Still said to be running for a moment while it is removed: done once it is not.
    ("running running removing", 0, 3),
    # Running all along: the failure stands, after the bounded wait.
    ("running", 126, 30),
])
def test_an_undo_in_a_container_that_is_gone_or_going_is_done(rendered, tmp_path, states, status, inspected):
    _, nodes = rendered["tp16-vllm-mindspore"]
    for name, body in (("docker", DOCKER_EXEC_FAILS), ("sleep", "#!/bin/sh\n")):
        (tmp_path / name).write_text(body)
        (tmp_path / name).chmod(0o755)
    record = tmp_path / "inspected"
    record.write_text("")
    script = nodes[1].scripts.ray_stop
    done = subprocess.run(["bash", "-c", script.command], capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "RECORD": str(record), "STATES": states})
    assert done.returncode == status, done.stdout + done.stderr
    assert len(record.read_text().split()) == inspected
    if status == 0:
        assert f"container {script.container} is {states.split()[-1]}: what this undo undoes went with it" \
            in done.stdout


def test_only_the_master_has_the_smoke_test_and_readiness(rendered):
    _, nodes = rendered["tp16-mindie"]
    master, worker = nodes[0].scripts, nodes[1].scripts
    assert master.smoke is not None and master.serve_ready is not None
    assert worker.smoke is None and worker.serve_ready is None
    # MindIE starts its daemon on every node.
    assert worker.serve_start is not None and worker.serve_stop is not None
    _, gpustack = rendered["dp4-ep32-gpustack"]
    assert gpustack[0].scripts.serve_start is None and gpustack[0].scripts.ray_start is None


def readiness_wait(rendered, tmp_path, pid: int) -> str:
    """The master's rendered readiness wait with its run directory moved
    under tmp_path (a log line in its log) and `pid` in its pid file."""
    _, nodes = rendered["tp16-lmdeploy"]
    text = nodes[0].scripts.serve_ready.text
    run_dir, log_name = re.search(r"^pid_file=(\S+)/serve\.pid; log_file=\S+/(\S+)$", text, re.M).groups()
    (tmp_path / "serve.pid").write_text(f"{pid}\n")
    (tmp_path / log_name).write_text("engine log line\n")
    return text.replace(run_dir, str(tmp_path))


def run_without_an_answer(script: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    # `curl` stands for an endpoint that does not answer yet. The serving API
    # key is in the environment, as the container's secret env puts it there.
    return subprocess.run(["bash", "-s"], input=script.replace("curl ", "false "), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "ASCEND_INFERENCE_API_KEY": "test-key"})


def test_readiness_takes_a_crashed_engine_left_a_zombie_for_dead(rendered, tmp_path):
    # `kill -0` succeeds on a zombie: under a container PID 1 that does not
    # reap adopted children, a crashed engine looked alive until the
    # readiness timeout (an hour by default) instead of failing at once.
    crashed = subprocess.Popen(["true"])  # not reaped until wait() below
    try:
        for _ in range(500):  # until it has exited (a zombie)
            if not process_alive(crashed.pid):
                break
            time.sleep(0.01)
        done = run_without_an_answer(readiness_wait(rendered, tmp_path, crashed.pid))
    finally:
        crashed.wait()
    assert done.returncode == 6, done.stderr
    assert done.stderr == "the serving process is not running; last log lines:\nengine log line\n"


def test_readiness_keeps_waiting_on_a_live_engine(rendered, tmp_path):
    # The same wait with a live process: no answer yet, so it is still
    # waiting when stopped (the pid check did not end it).
    live = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            run_without_an_answer(readiness_wait(rendered, tmp_path, live.pid), timeout=5)
    finally:
        live.kill()
        live.wait()
