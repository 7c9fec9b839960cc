"""Bad input beyond the stack file's keys: where `render` writes, duplicate
YAML keys under `pulumi up` as under `validate`, and what the new rules must
still let through. Each refusal is one `error:` line naming the path or the
stack file, the key and a fix, exit 3 (2 for an unusable `render --out`), no traceback,
nothing written.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from ascend_inference.errors import StackError
from ascend_inference.stackfile import load_stack
from tests.conftest import NS, STACKS_DIR, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.graph


def one_error_line(result, *, exit_status: int = 3) -> str:
    """The one `error:` line of a refusal; a bad stack exits 3, an unusable
    `render --out` 2 (a usage error: the stack is fine)."""
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == exit_status, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert "(fix: " in lines[0], shown
    return lines[0]


# --- render --out --------------------------------------------------------------

def test_render_onto_an_existing_file_is_refused_and_the_file_kept(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", target), exit_status=2)
    assert f"render --out {target}: is an existing file, not a directory" in line
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], "staging left behind"


def test_render_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "plain").write_text("")
    out = tmp_path / "plain" / "sub" / "out"
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", out), exit_status=2)
    assert f"{tmp_path / 'plain'} is a file" in line


def test_render_into_a_read_only_directory(tmp_path):
    """Mode 0555: refused for a normal user; root may write there anyway (mode
    bits do not bind root), and then the render really succeeds. The test
    follows what the operating system says about this very directory."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_cli("render", "--stack", "tp16-mindie", "--out", locked / "out")
        if os.access(locked, os.W_OK):
            assert os.geteuid() == 0, "a 0555 directory is writable only for root"
            assert result.returncode == 0, result.stderr
            assert (locked / "out" / "plan.json").is_file()
        else:
            line = one_error_line(result, exit_status=2)
            assert f"cannot write to {locked}" in line
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_render_where_even_root_cannot_write():
    """procfs takes no new entries, whoever asks: refused before writing."""
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", "/proc/self/out"), exit_status=2)
    assert "render --out /proc/self/out: cannot write to /proc/self" in line


def test_render_failure_the_checks_cannot_foresee_is_still_one_line():
    """/proc is writable for root by its mode, yet refuses a new directory:
    the write itself fails, and that failure is reported, not a traceback."""
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", "/proc/not-a-pid/out"), exit_status=2)
    assert line.startswith("error: render --out /proc/not-a-pid/out: ")


def test_render_never_replaces_a_directory_it_did_not_write(tmp_path):
    """`--out ~` must not delete a home directory: a non-empty directory
    without an earlier render's plan.json is refused and left as it was."""
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", precious), exit_status=2)
    assert f"render --out {precious}: is a directory with other content" in line
    assert (precious / "notes.txt").read_text() == "keep me"
    # An earlier render's directory, or an empty one, is replaced as before.
    earlier = tmp_path / "earlier"
    assert run_cli("render", "--stack", "tp16-mindie", "--out", earlier).returncode == 0
    assert run_cli("render", "--stack", "tp16-mindie", "--out", earlier).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("render", "--stack", "tp16-mindie", "--out", empty).returncode == 0
    assert (empty / "plan.json").is_file()


# --- duplicate YAML keys --------------------------------------------------------

def duplicate_tp_file(tmp_path: Path) -> Path:
    text = (STACKS_DIR / "Pulumi.tp16-vllm-mindspore.yaml").read_text(encoding="utf-8")
    assert text.count("    tp: 16\n") == 1
    return write_stack(tmp_path, "dup-tp", text=text.replace("    tp: 16\n", "    tp: 16\n    tp: 8\n"))


def test_duplicate_key_is_the_only_problem_reported(tmp_path):
    """Before: `tp: 8` silently won and the error blamed the world size."""
    path = duplicate_tp_file(tmp_path)
    line = one_error_line(run_cli("validate", "--stack", path))
    assert line.startswith(f"error: {path}: {NS}parallel.tp: written twice (lines ")
    assert "world" not in line


def test_duplicate_key_is_refused_by_the_program_too(tmp_path):
    """Under `pulumi up` the program reads config through pulumi.Config, which
    holds one value per key; it reads the stack file itself for duplicates."""
    from ascendctl.preview import stack as offline

    path = duplicate_tp_file(tmp_path)
    survivor = yaml.safe_load(path.read_text(encoding="utf-8"))["config"]
    assert survivor[NS + "parallel"]["tp"] == 8  # what a last-wins reader hands over
    stand_in = dataclasses.replace(load_stack("tp16-vllm-mindspore"), name="dup-tp", file=str(path),
                                   raw_config=survivor)
    validate_line = one_error_line(run_cli("validate", "--stack", path))
    try:
        offline.record_stack(stand_in, survivor)
    except StackError as error:
        assert [f"error: {p}" for p in error.problems] == [validate_line]
    else:
        raise AssertionError("the program accepted a stack file with a duplicate key")


# --- what the new rules let through ------------------------------------------------

def test_valid_env_and_a_secret_passed_by_reference_are_accepted(tmp_path):
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][NS + "engine"]["env"] = {"_MY_FLAG2": "1", "HF_TOKEN": "$HF_TOKEN", "API_KEY": None}
    doc["config"][NS + "ssh"] = {"user": "admin", "jump_host": "ops@bastion.example.com:2222"}
    result = run_cli("validate", "--stack", write_stack(tmp_path, "fine", doc))
    assert result.returncode == 0, result.stderr


def test_two_equal_container_ips_are_one_problem(tmp_path):
    doc = load_stack_doc("tp16-mindie")
    for node in doc["config"][NS + "nodes"]:
        node["container_ip"] = "192.0.2.50"
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "cip", doc)))
    assert f"{NS}nodes[1].container_ip: '192.0.2.50' is also the container IP of {NS}nodes[0]" in line


def test_a_clashing_port_is_one_problem_on_the_key_to_change(tmp_path):
    """ray_port on engine.port: one line, on ray_port (the later key), not two."""
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][NS + "engine"]["ray_port"] = doc["config"][NS + "engine"].get("port", 8000)
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "ports", doc)))
    assert f"{NS}engine.ray_port: port 8000 is also engine.port on every node" in line


def test_a_value_is_quoted_as_written_even_with_braces(tmp_path):
    """pydantic fills `{name}` in error messages from the error's context; the
    user's value must come out as written, not as some other text."""
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "ssh"] = {"jump_host": "{fix}"}
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "braces", doc)))
    assert f"{NS}ssh.jump_host: '{{fix}}' is not [user@]host[:port] (fix: write e.g. " in line
