"""Bad input beyond the stack file's keys: where `render` writes, duplicate
YAML keys under `pulumi up` as under `validate`, and what the new rules must
still let through. Each refusal is one `error:` line naming the path or the
stack file, the key and a fix, exit 3 (2 for an unusable `render --out`), no traceback,
nothing written.
"""
from __future__ import annotations

import dataclasses
import json
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
    assert f"render --out {precious}: is a directory that has content and no " in line
    assert (precious / "notes.txt").read_text() == "keep me"
    # An earlier render's directory, or an empty one, is replaced as before.
    earlier = tmp_path / "earlier"
    assert run_cli("render", "--stack", "tp16-mindie", "--out", earlier).returncode == 0
    assert run_cli("render", "--stack", "tp16-mindie", "--out", earlier).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("render", "--stack", "tp16-mindie", "--out", empty).returncode == 0
    assert (empty / "plan.json").is_file()


def test_render_never_replaces_a_directory_holding_a_foreign_plan_json(tmp_path):
    """Before: any plan.json (a Terraform plan) was taken for an earlier render."""
    terraform = tmp_path / "tf"
    terraform.mkdir()
    (terraform / "plan.json").write_text('{"format_version": "1.2"}')
    (terraform / "main.tf").write_text("keep")
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", terraform), exit_status=2)
    assert "no .ascend-inference-render.json of an earlier render" in line
    assert (terraform / "main.tf").read_text() == "keep"


def test_render_never_deletes_a_file_added_to_its_output(tmp_path):
    out = tmp_path / "out"
    assert run_cli("render", "--stack", "tp16-mindie", "--out", out).returncode == 0
    marker = json.loads((out / ".ascend-inference-render.json").read_text())
    assert len(marker["render_id"]) == 32 and "plan.json" in marker["files"]
    (out / "node0" / "my-notes.txt").write_text("keep")
    line = one_error_line(run_cli("render", "--stack", "tp16-mindie", "--out", out), exit_status=2)
    assert "holds node0/my-notes.txt, which no earlier render wrote" in line
    assert (out / "node0" / "my-notes.txt").read_text() == "keep"


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


# --- issue 22: values that could run code, escape their place or leak ------------------

def _node(i: int, key: str, value):
    return lambda c: c[NS + "nodes"][i].__setitem__(key, value)


def _set(section: str, key: str, value):
    return lambda c: c.setdefault(NS + section, {}).__setitem__(key, value)


PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA" * 12
               + "\n-----END OPENSSH PRIVATE KEY-----\n")

# (stack, change, key the line names, words of the message)
BAD_VALUES = {
    "infinite weights_gb": ("tp16-mindie", _set("model", "weights_gb", float("inf")), "model.weights_gb", "finite"),
    "layers 10^18": ("tp16-mindie", _set("model", "layers", 10**18), "model.layers", "less than or equal"),
    "host with a space": ("tp16-mindie", _node(0, "host", "192.0.2.11 x"), "nodes[0].host", "neither an IP"),
    "host with a newline": ("tp16-mindie", _node(0, "host", "node\nx"), "nodes[0].host", "neither an IP"),
    "host as an ssh option": ("tp16-mindie", _node(0, "host", "-oProxyCommand=id"), "nodes[0].host",
                              "neither an IP"),
    "host 0.0.0.0": ("tp16-mindie", _node(0, "host", "0.0.0.0"), "nodes[0].host", "unspecified"),
    "host loopback": ("tp16-mindie", _node(0, "host", "127.0.0.1"), "nodes[0].host", "loopback"),
    "IPv4-mapped IPv6 beside its IPv4": ("tp16-mindie", _node(1, "host", "::ffff:192.0.2.11"), "nodes[1].host",
                                         "192.0.2.11 written as IPv6"),
    "IPv6 host that URLs would use": ("tp16-vllm-mindspore", _node(0, "host", "2001:db8::11"), "nodes[0]",
                                      "IPv6"),
    "IPv6 cluster ip": ("tp16-vllm-mindspore", _node(0, "ip", "2001:db8::11"), "nodes[0].ip", "IPv6"),
    "ssh.user as an option": ("tp16-mindie", _set("ssh", "user", "-oProxyCommand=id"), "ssh.user",
                              "not a login name"),
    "node user as an option": ("tp16-mindie", _node(0, "user", "-oProxyCommand=id"), "nodes[0].user",
                               "not a login name"),
    "image as a docker option": ("tp16-mindie", _set("container", "image", "--privileged"), "container.image",
                                 "not a docker image reference"),
    "image running a command": ("tp16-mindie", _set("container", "image", "$(touch canary)"), "container.image",
                                "not a docker image reference"),
    "jump host running a command": ("tp16-mindie", _set("ssh", "jump_host", "$(id)@bastion"), "ssh.jump_host",
                                    "is not [user@]host[:port]"),
    "relative rank_table_path": ("tp16-mindie", _set("engine", "rank_table_path", "hm/rank_table.json"),
                                 "engine.rank_table_path", "not an absolute path"),
    "rank_table_path climbing out": ("tp16-lmdeploy", _set("engine", "rank_table_path", "/../../../../etc/x.json"),
                                     "engine.rank_table_path", "`..`"),
    "rank_table_path in /etc": ("tp16-lmdeploy", _set("engine", "rank_table_path", "/etc/passwd"),
                                "engine.rank_table_path", "system directory"),
    "remote_dir climbing out": ("tp16-mindie", _set("paths", "remote_dir", "/../../tmp/x"), "paths.remote_dir",
                                "`..`"),
    "model.path /": ("tp16-mindie", _set("model", "path", "/"), "model.path", "system directory"),
    "model.path /usr": ("tp16-mindie", _set("model", "path", "/usr"), "model.path", "system directory"),
    "model.path with ..": ("tp16-mindie", _set("model", "path", "/data/../../"), "model.path", "`..`"),
    "model.path relative": ("tp16-mindie", _set("model", "path", "data/models"), "model.path",
                            "not an absolute path"),
    "mount host running a command": ("tp16-mindie", _set("container", "mounts", ["$(touch c):/x"]),
                                     "container.mounts", "neither an absolute path nor a docker volume"),
    "data_volume running a command": ("dp4-ep32-gpustack", _set("engine", "data_volume", "$(touch c)"),
                                      "engine.data_volume", "neither an absolute path nor a docker volume"),
    "http image without sha256": ("tp16-mindie", lambda c: c[NS + "container"].update(
        image_tar="/data/images/i.tar", image_url="http://images.example.com/i.tar"), "container.image_url",
        "plain http"),
    "hub token over http": ("tp16-mindie", _set("model", "source", {
        "kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1", "endpoint": "http://hf-mirror.example.com",
        "token_secret": "hfToken"}), "model.source.endpoint", "in clear"),
    "password in a proxy URL": ("tp16-vllm-mindspore", _set("engine", "env", {
        "HTTPS_PROXY": "http://alice:S3cretPw@proxy:3128"}), "engine.env.HTTPS_PROXY", "password in a URL"),
    "hub token in env": ("tp16-vllm-mindspore", _set("engine", "env", {"X": "hf_" + "a1B2" * 8}),
                         "engine.env.X", "access token"),
    "GitHub token in server_args": ("dp4-ep32-gpustack", _set("engine", "server_args", ["ghp_" + "Z9" * 18]),
                                    "engine.server_args[0]", "access token"),
    "API key in env": ("tp16-vllm-mindspore", _set("engine", "env", {"EXTRA_FLAGS": "--auth sk-" + "x7" * 16}),
                       "engine.env.EXTRA_FLAGS", "access token"),
    "secret_env naming the SSH key": ("tp16-vllm-mindspore", _set("engine", "secret_env", {"LEAK": "sshPrivateKey"}),
                                      "engine.secret_env.LEAK", "SSH private key"),
    "1,001 nodes": ("tp16-mindie", lambda c: c[NS + "nodes"].extend(
        {"name": f"extra{i}", "host": f"10.9.{i // 250}.{i % 250 + 1}"} for i in range(999)), "nodes",
        "at most 1000"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_one_line_with_file_key_and_fix(tmp_path, case):
    stack, change, key, words = BAD_VALUES[case]
    doc = load_stack_doc(stack)
    change(doc["config"])
    path = write_stack(tmp_path, "bad", doc)
    line = one_error_line(run_cli("validate", "--stack", path))
    assert line.startswith(f"error: {path}: {NS}{key}: "), line
    assert words in line, line


@pytest.mark.parametrize("field", ["model.path", "ssh.jump_host", "ssh.private_key_secret"])
def test_a_private_key_pasted_into_a_checked_field_is_never_echoed(tmp_path, field):
    section, key = field.split(".")
    doc = load_stack_doc("tp16-mindie")
    doc["config"].setdefault(NS + section, {})[key] = PRIVATE_KEY
    result = run_cli("validate", "--stack", write_stack(tmp_path, "pk", doc))
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert f"{NS}{field}" in result.stderr
    assert "b3BlbnNzaC1rZXkt" not in result.stdout + result.stderr, result.stderr


def test_a_token_in_an_error_is_cut_to_a_short_prefix(tmp_path):
    token = "hf_" + "Q" * 34
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "ssh"] = {"jump_host": f"{token} bastion"}
    result = run_cli("validate", "--stack", write_stack(tmp_path, "tok", doc))
    assert result.returncode == 3 and token not in result.stderr and "hf_QQQ" in result.stderr, result.stderr


def test_a_rank_table_file_that_never_ends_is_refused(tmp_path):
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "network"]["rank_table_file"] = "/dev/zero"
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "zero", doc)))
    assert f"{NS}network.rank_table_file: /dev/zero is not a regular file" in line


def test_a_fifo_as_rank_table_file_does_not_block(tmp_path):
    fifo = tmp_path / "table.json"
    os.mkfifo(fifo)
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "network"]["rank_table_file"] = str(fifo)
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "fifo", doc)))
    assert f"{fifo} is not a regular file" in line


def test_a_huge_rank_table_is_refused_unread(tmp_path):
    from ascend_inference.brought_table import MAX_RANK_TABLE_BYTES

    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(MAX_RANK_TABLE_BYTES + 1)  # sparse: no disk used
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "network"]["rank_table_file"] = str(big)
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "big", doc)))
    assert "more than the" in line and "bytes allowed" in line


def test_a_yaml_alias_bomb_is_measured_not_expanded(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "config:\n" + "".join(f"  {line}\n" for line in levels)
    line = one_error_line(run_cli("validate", "--stack", write_stack(tmp_path, "bomb", text=text)))
    assert "(yaml): expands to more than" in line


def test_a_huge_stack_file_is_refused_unread(tmp_path):
    from ascend_inference.stackfile import MAX_STACK_BYTES

    path = tmp_path / "Pulumi.huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_STACK_BYTES + 1)
    line = one_error_line(run_cli("validate", "--stack", path))
    assert f"{path}: (file): " in line and "bytes allowed" in line


def test_a_file_that_is_not_a_stack_file_is_never_read(tmp_path):
    """`--stack /etc/shadow` printed its entries as unknown keys."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$salted$hash:19000:0:99999:7:::\n")
    line = one_error_line(run_cli("validate", "--stack", secret))
    assert "is not a stack file" in line and "$6$" not in line
    line = one_error_line(run_cli("validate", "--stack", "/etc/shadow"))
    assert "is not a stack file" in line


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"])
def test_a_hub_token_over_http_to_the_nodes_own_loopback_is_accepted(tmp_path, endpoint):
    """A mirror on the node itself: the token crosses no network (issue 22 asks https where it would)."""
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "model"]["source"] = {"kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1",
                                             "endpoint": endpoint, "token_secret": "hfToken"}
    result = run_cli("validate", "--stack", write_stack(tmp_path, "loopback", doc))
    assert result.returncode == 0, result.stderr
    assert "model.source.endpoint" not in result.stdout + result.stderr
