"""The offline CLI's contract (docs/cli.md): `validate`, `render`, `stacks`,
`--version` and the help of every command; exit 0 on success, 2 on a usage
error, 3 on a stack problem, never a traceback."""
from __future__ import annotations

import re
import tomllib

import pytest

from ascendctl.cli import EXIT_STATUS
from tests.conftest import NS, PROJECT_ROOT, STACKS, STACKS_DIR, load_stack_doc, pin_host_keys, run_cli, write_stack

pytestmark = pytest.mark.pure

HELP_MUST_EXPLAIN = {
    # command: words its --help must contain
    None: ("validate", "render", "preview", "diff", "stacks", "--version", "exit status", "usage error"),
    "validate": ("--stack", "--require-secrets", "memory"),
    "render": ("--stack", "--out", "plan.json", "rank_table.json", "replaced"),
    "preview": ("--stack", "mocks", "secrets"),
    "diff": ("--stack", "--set", "KEY=VALUE"),
    "graph": ("--stack", "--set", "--format", "svg", "mermaid", "graphviz", "lane", "gate"),
    "stacks": ("stacks/",),
}


@pytest.mark.parametrize("command", list(HELP_MUST_EXPLAIN), ids=lambda c: c or "top-level")
def test_help_exits_0_and_explains(command):
    args = ([command] if command else []) + ["--help"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m ascendctl"), result.stdout
    text = " ".join(result.stdout.split()).lower()
    for word in HELP_MUST_EXPLAIN[command]:
        assert word.lower() in text, f"`{' '.join(args)}` does not mention {word!r}:\n{result.stdout}"
    assert result.stderr == ""


def test_stacks_lists_the_five_stacks():
    result = run_cli("stacks")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(STACKS)
    assert sorted(p.name for p in STACKS_DIR.glob("Pulumi.*.yaml")) == sorted(f"Pulumi.{s}.yaml" for s in STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_validate_each_stack(stack):
    result = run_cli("validate", "--stack", stack)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == f"{STACKS_DIR / f'Pulumi.{stack}.yaml'}: ok"
    assert re.search(r"= world (16|32);", result.stdout), result.stdout
    assert "memory: weights" in result.stdout
    # Without --require-secrets a missing secret is a note, not an error.
    assert "ascend-inference:sshPrivateKey" in result.stdout


def test_validate_takes_a_path_too():
    by_name = run_cli("validate", "--stack", "tp16-mindie")
    relative = run_cli("validate", "--stack", "stacks/Pulumi.tp16-mindie.yaml")
    absolute = run_cli("validate", "--stack", STACKS_DIR / "Pulumi.tp16-mindie.yaml")
    assert by_name.returncode == relative.returncode == absolute.returncode == 0
    assert by_name.stdout.splitlines()[1:] == relative.stdout.splitlines()[1:] == absolute.stdout.splitlines()[1:]


def test_validate_300iduo_prints_the_pipeline_split():
    result = run_cli("validate", "--stack", "tp8-pp2-300iduo")
    assert result.returncode == 0
    assert "pipeline layer split 31,30" in result.stdout


def test_render_lists_what_it_wrote(tmp_path):
    out = tmp_path / "out"
    result = run_cli("render", "--stack", "tp16-mindie", "--out", out)
    assert result.returncode == 0, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines()[1:]]
    on_disk = sorted(str(p) for p in out.rglob("*") if p.is_file())
    assert sorted(listed) == on_disk
    assert re.match(rf"rendered stack tp16-mindie \(mindie, world 16\) into {re.escape(str(out))}: "
                    rf"{len(on_disk)} files", result.stdout)


def test_done_when_mindie(tmp_path):
    """Issue 3 "Done when": a 2-server, 16-rank table with container_ip and a
    config.json edit list per node that turns multi-node inference on."""
    import json

    out = tmp_path / "out"
    assert run_cli("render", "--stack", "tp16-mindie", "--out", out).returncode == 0
    table = json.loads((out / "rank_table.json").read_text())
    assert table["server_count"] == "2"
    assert sum(len(s["device"]) for s in table["server_list"]) == 16
    assert all(s.get("container_ip") for s in table["server_list"])
    for node in ("node0", "node1"):
        (edits,) = (out / node).glob("files/**/mindie/config-edits.json")
        assert ["BackendConfig.multiNodesInferEnabled", True] in json.loads(edits.read_text())["edits"]


def test_done_when_300iduo(tmp_path):
    out = tmp_path / "out"
    assert run_cli("render", "--stack", "tp8-pp2-300iduo", "--out", out).returncode == 0
    for node in ("node0", "node1"):
        assert "export VLLM_PP_LAYER_PARTITION=31,30" in (out / node / "env.sh").read_text().splitlines()


@pytest.mark.parametrize("args", [
    (),
    ("frobnicate",),
    ("validate", "--stack"),
    ("validate", "--stack", "tp16-mindie", "--bogus"),
    ("diff", "--stack", "tp16-mindie"),
], ids=["no-command", "unknown-command", "stack-without-value", "unknown-option", "diff-without-set"])
def test_usage_errors_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_stack_name_suggests_the_close_one():
    result = run_cli("render", "--stack", "tp16-lmdepoly", "--out", PROJECT_ROOT / "never-written")
    assert result.returncode == 3
    assert "did you mean 'tp16-lmdeploy'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (PROJECT_ROOT / "never-written").exists()


def test_version_is_the_projects():
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"python -m ascendctl {version}\n"


def exit_status_section(help_text: str) -> dict[int, str]:
    """`--help`'s "exit status:" list as {code: meaning}."""
    section = help_text.split("exit status:\n", 1)[1]
    entries: dict[int, str] = {}
    for line in section.splitlines():
        if match := re.match(r"  (\d)  (.*)", line):
            code = int(match.group(1))
            entries[code] = match.group(2)
        elif line.startswith("     ") and entries:
            entries[code] += " " + line.strip()
    return entries


def test_help_and_docs_list_every_exit_status():
    """Usage 2, bad stack 3, node failure 4 (and the wrong SDK 5) are told
    apart, in --help and in docs/cli.md, each code once."""
    listed = exit_status_section(run_cli("--help").stdout)
    assert listed == dict(EXIT_STATUS)
    assert sorted(listed) == [0, 2, 3, 4, 5]
    assert "usage" in listed[2] and "stack" in listed[3] and "node" in listed[4]
    docs = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    table = dict(re.findall(r"^\| (\d) \| (.+?) \|$", docs, re.M))
    assert sorted(map(int, table)) == [0, 2, 3, 4, 5], table


def test_a_usage_error_a_bad_stack_and_a_bad_out_exit_differently(tmp_path):
    usage = run_cli("validate", "--stak", "tp16-mindie")
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "parallel"]["tp"] = 8
    bad_stack = run_cli("validate", "--stack", write_stack(tmp_path, "bad", doc))
    (tmp_path / "file").write_text("")
    bad_out = run_cli("render", "--stack", "tp16-mindie", "--out", tmp_path / "file")
    assert (usage.returncode, bad_stack.returncode, bad_out.returncode) == (2, 3, 2)
    assert "usage:" in usage.stderr
    assert "ascend-inference:parallel" in bad_stack.stderr and "(fix: " in bad_stack.stderr
    assert "render --out" in bad_out.stderr


SSH_KEY_FIX = f"pulumi config set --secret {NS}sshPrivateKey < ~/.ssh/id_ed25519"


def test_a_missing_ssh_key_gives_the_whole_fix(tmp_path):
    """`validate` (its note, and the error with --require-secrets) names the
    key file to read, as the program's message does (test_secret_env.py)."""
    note = run_cli("validate", "--stack", "tp16-mindie")
    assert note.returncode == 0
    assert f"ascend-inference:sshPrivateKey (fix: run `{SSH_KEY_FIX}`)" in note.stdout
    # Its host keys pinned, so the missing key is the one problem (issue 22: --require-secrets refuses both).
    pinned = write_stack(tmp_path, "pinned", pin_host_keys(load_stack_doc("tp16-mindie")))
    required = run_cli("validate", "--stack", pinned, "--require-secrets")
    assert required.returncode == 3
    [line] = required.stderr.splitlines()
    assert line.startswith(f"error: {pinned}: {NS}sshPrivateKey: secret not set "
                           f"(fix: run `{SSH_KEY_FIX}`;")
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "sshPrivateKey"] = "not-encrypted"
    clear = run_cli("validate", "--stack", write_stack(tmp_path, "clear", doc))
    assert clear.returncode == 3 and f"remove it and run `{SSH_KEY_FIX}`" in clear.stderr
