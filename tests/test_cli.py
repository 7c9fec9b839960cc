"""The offline CLI's contract (README, "Offline CLI"): `validate`, `render`,
`stacks` and the help of every command; exit 0 on success, 2 on a stack
problem, never a traceback."""
from __future__ import annotations

import re

import pytest

from tests.conftest import PROJECT_ROOT, STACKS, STACKS_DIR, run_cli

pytestmark = pytest.mark.pure

HELP_MUST_EXPLAIN = {
    # command: words its --help must contain
    None: ("validate", "render", "preview", "diff", "stacks", "exit status 2"),
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
    assert result.returncode == 2
    assert "did you mean 'tp16-lmdeploy'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (PROJECT_ROOT / "never-written").exists()
