"""The engine's liveness check (serve-alive.sh.j2) and the start's record
(render.serve_record_line) run for real in bash, with a stand-in `docker`
that runs `docker exec -i NAME bash -s` here, and real processes as the
engine: what the check prints is what makes the next `pulumi up` restart a
dead engine once and leave a healthy one alone (components/serving.py).

The property: while the engine a start began runs, the check prints exactly
what that start recorded (so its step is unchanged); once it is gone, a value
no start recorded, the same at every run until the next start (so the plan
of a preview is the plan of the `up`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ascend_inference.render import render_node, serve_record_line
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template

pytestmark = pytest.mark.pure

FAKE_DOCKER = """#!/bin/bash
# docker exec -i NAME CMD...: CMD here (the test's processes are "the container's").
[ "$1" = exec ] || { echo "unexpected: docker $*" >&2; exit 2; }
shift; [ "$1" = -i ] && shift
shift
exec "$@"
"""


class Node:
    """A run directory, a `docker` on PATH, and the engine as a real process."""

    def __init__(self, tmp_path: Path):
        self.run_dir = tmp_path / "run"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text(FAKE_DOCKER)
        (bin_dir / "docker").chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        self.engine: subprocess.Popen | None = None
        common = {"stack": "tp16-vllm-mindspore", "node": None, "run_dir": str(self.run_dir)}
        self.alive_script = render_template("serve-alive.sh.j2", purpose="liveness", container_name="c", **common)
        self.stop_script = render_template("serve-stop.sh.j2", purpose="stop", **common)

    def bash(self, script: str) -> str:
        done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, env=self.env,
                              check=True)
        return done.stdout

    def check(self) -> str:
        return self.bash(self.alive_script).strip()

    def start(self, said: str) -> None:
        """What the start step does: its first line records `said`, then the engine starts (pid file)."""
        self.bash(serve_record_line(str(self.run_dir), said))
        self.engine = subprocess.Popen(["sleep", "600"])
        (self.run_dir / "serve.pid").write_text(f"{self.engine.pid}\n")

    def die(self) -> None:
        assert self.engine is not None
        self.engine.kill()
        self.engine.wait()

    def stop(self) -> None:
        self.bash(self.stop_script)
        if self.engine is not None:
            self.engine.wait()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    if n.engine is not None and n.engine.poll() is None:
        n.engine.kill()
        n.engine.wait()


def test_a_healthy_engine_reads_as_what_its_start_recorded(node):
    first = node.check()
    assert first == "not started"
    node.start(first)
    assert node.check() == first
    assert node.check() == first  # read-only: a preview and its `up` see the same


def test_each_death_reads_as_a_value_no_start_recorded_once(node):
    said = node.check()
    seen = {said}
    for _ in range(3):
        node.start(said)
        assert node.check() == said
        node.die()
        dead = node.check()
        assert dead.startswith("down after start ") and dead not in seen, (dead, seen)
        assert node.check() == dead  # the same until the next start
        seen.add(dead)
        said = dead
    node.start(said)
    assert node.check() == said


def test_a_pid_file_gone_or_unreadable_reads_as_down(node):
    said = node.check()
    node.start(said)
    (node.run_dir / "serve.pid").write_text("not a pid\n")
    assert node.check().startswith("down after start ")
    (node.run_dir / "serve.pid").unlink()
    assert node.check().startswith("down after start ")


def test_the_stop_takes_the_record_with_the_process(node):
    node.start(node.check())
    node.stop()
    assert not (node.run_dir / "serve.pid").exists() and not (node.run_dir / "serve.record").exists()
    assert node.check() == "not started"


def test_a_value_with_quotes_is_recorded_as_it_is(node):
    said = "down after start 'x' \"y\" $(false) `z`"
    node.start(said)
    assert node.check() == said


def test_every_serving_node_has_the_check_on_its_host():
    """Rendered beside the start (the node that starts the engine has it), run on the host."""
    for stack in ("tp16-vllm-mindspore", "tp16-mindie"):
        loaded = load_stack(stack)
        for index in range(len(loaded.spec.nodes)):
            scripts = render_node(loaded, index).scripts
            assert (scripts.serve_alive is None) == (scripts.serve_start is None)
            if scripts.serve_alive is not None:
                assert scripts.serve_alive.place == "host"
                assert "docker exec -i" in scripts.serve_alive.text
