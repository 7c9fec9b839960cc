"""Pure tier: values in the shell templates are quoted by default.

A stack whose paths, image and env values hold spaces, quotes, `$` and
backticks renders scripts that bash parses, that keep each value one word,
and that never run what a value contains. The scripts run here under bash
against stand-ins for docker.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template, wrap
from tests.conftest import NS, STACKS, load_stack_doc, write_stack

pytestmark = pytest.mark.pure

# Each would break an unquoted script or run something: a space splits
# words, `$(...)` and backticks run commands, a quote ends a string.
HOSTILE = "a b $(touch PWNED) `touch PWNED` 'q' $HOME;"


def run_bash(script: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": "/nonexistent", **env})


def hostile_stack(tmp_path: Path, model_path: str, stack: str = "tp16-mindie"):
    doc = load_stack_doc(stack)
    config = doc["config"]
    config[f"{NS}model"]["path"] = model_path
    config[f"{NS}paths"] = {"remote_dir": f"/srv/{HOSTILE}"}
    config[f"{NS}container"]["image_tar"] = f"/images/{HOSTILE}.tar"
    config[f"{NS}engine"]["env"] = {"EXTRA_FLAGS": HOSTILE, "FROM_SET_ENV": "$ASCEND_HOME_PATH/lib:${ASCEND_HOME_PATH}"}
    return load_stack(str(write_stack(tmp_path, "hostile", doc)))


@pytest.fixture
def rendered(tmp_path):
    model = tmp_path / f"weights {HOSTILE}"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model-00001.safetensors").write_bytes(b"x" * 10)
    loaded = hostile_stack(tmp_path, str(model))
    return loaded, model, render_node(loaded, 0)


@pytest.mark.parametrize("stack", STACKS)
def test_every_script_of_every_engine_parses(stack, tmp_path):
    loaded = hostile_stack(tmp_path, f"/data/weights {HOSTILE}", stack)
    for index in range(len(loaded.spec.nodes)):
        node = render_node(loaded, index)
        for name, text in [*((s.name, s.command) for s in node.scripts.present()), ("env.sh", node.env_text)]:
            done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
            assert done.returncode == 0, f"{stack} {node.ctx.node.name} {name}: {done.stderr}"


def test_a_path_stays_one_word_and_runs_nothing(rendered, tmp_path):
    _, model, node = rendered
    done = run_bash(node.scripts.weights.text, tmp_path)
    assert done.returncode == 0, done.stderr
    # The weights check found the two files under the literal path.
    assert '"files": 2, "bytes": 12' in done.stdout
    assert f'"path": "{model}"' in done.stdout
    assert not (tmp_path / "PWNED").exists()


def test_a_value_in_a_message_is_shown_as_it_is(rendered, tmp_path):
    # docker stand-in: no image present. The tar is not there, so image.sh
    # reports it (and the image) by name before any `docker load`.
    stub = tmp_path / "docker"
    stub.write_text('#!/usr/bin/env bash\n[ "$1" = load ] && exit 0\nexit 1\n')
    stub.chmod(0o755)
    loaded, _, node = rendered
    done = run_bash(node.scripts.image.text, tmp_path)
    assert done.returncode == 4, done.stderr
    assert (f"image tar: {loaded.spec.container.image_tar} is missing or empty (fix: put the tar of "
            f"{loaded.spec.container.image} there") in done.stderr
    assert not (tmp_path / "PWNED").exists()


def test_env_values_are_literal_except_set_env_references(rendered, tmp_path):
    _, _, node = rendered
    env_file = tmp_path / "env.sh"
    # The set_env.sh files are absent here: env.sh warns and goes on.
    env_file.write_text(node.env_text)
    done = run_bash(f'set -u; ASCEND_HOME_PATH=/opt/cann; source {env_file} 2>/dev/null; '
                    'printf "%s\\n" "$EXTRA_FLAGS" "$FROM_SET_ENV"', tmp_path)
    assert done.returncode == 0, done.stderr
    # A value that refers to a variable (as runbook 000's $ASCEND_HOME_PATH/../ one
    # does) gets that variable expanded, and nothing else: `$(...)` and
    # backticks stay text.
    assert done.stdout.splitlines() == [HOSTILE.replace("$HOME", "/nonexistent"), "/opt/cann/lib:/opt/cann"]
    assert not (tmp_path / "PWNED").exists()


def test_the_serve_script_reads_its_paths_literally(rendered, tmp_path):
    loaded, _, node = rendered
    text = node.scripts.serve_start.text
    # The run directory under the hostile remote_dir: one quoted word.
    run_dir = f"{loaded.spec.paths.remote_dir}/{loaded.name}/run"
    line = next(line for line in text.splitlines() if line.startswith("run_dir="))
    done = run_bash(f'{line}; printf "%s" "$run_dir"', tmp_path)
    assert done.stdout == run_dir
    # The pre-built command line goes in as the engine built it.
    assert f"nohup {loaded.spec.engine_plugin.serve(loaded.spec, loaded.plan, loaded.name).command} >" in text


def test_file_content_cannot_end_its_heredoc_early(tmp_path):
    # A line equal to the heredoc marker would end the body there and run the
    # next lines as commands; the marker is chosen so that it cannot.
    content = "export A='x\nASCEND_INFERENCE_EOF\ntouch PWNED\nASCEND_INFERENCE_EOF_1\n'\n"
    target = tmp_path / f"dir {HOSTILE}" / "env.sh"
    script = render_template("install-file.sh.j2", purpose="Install", stack="s", node={"name": "node0"},
                             path=str(target), content=content, mode="640")
    done = run_bash(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == content
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert not (tmp_path / "PWNED").exists()


def test_a_container_script_cannot_end_its_heredoc_early(tmp_path):
    stub = tmp_path / "docker"
    stub.write_text('#!/usr/bin/env bash\ncat > "$RECORD"\n')
    stub.chmod(0o755)
    script = "echo one\nASCEND_INFERENCE_SCRIPT\ntouch PWNED\n"
    record = tmp_path / "stdin"
    done = run_bash(wrap(script, "container", "c"), tmp_path, RECORD=str(record))
    assert done.returncode == 0, done.stderr
    assert record.read_text() == script
    assert not (tmp_path / "PWNED").exists()


def test_config_edit_passes_its_paths_as_one_word_each(rendered, tmp_path):
    # MindIE's config-edit runs the container's python3 on the image's
    # config.json, the edit list under the (hostile) stack directory and the
    # kept original; a stand-in python3 prints the arguments it got.
    stub = tmp_path / "python3"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\ncat > /dev/null\n')
    stub.chmod(0o755)
    loaded, _, node = rendered
    edit = loaded.spec.engine_plugin.config_edit(node.ctx)
    assert HOSTILE in edit.edits_file
    done = run_bash(node.scripts.config_edit.text, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["-", edit.target, edit.edits_file, f"{edit.target}.ascend-inference-orig"]
    assert not (tmp_path / "PWNED").exists()
