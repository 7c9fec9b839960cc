"""`python -m ascendctl leftovers` (docs/recovery.md): what it runs on each
node, what it counts as left over against a `pulumi stack export`, and its
messages. The nodes here are a recording `ssh` on PATH that answers as a node
holding two containers of the stack and its directory; the command against
real nodes, after `pulumi stack rm --force`, is in
tests/emulated/test_recovery.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ascendctl import cli, leftovers

pytestmark = pytest.mark.graph

STACK = "tp16-vllm-mindspore"
KEPT = "a" * 64      # the container the state records
LEFT = "b" * 64      # the one an `up` killed mid-create left
DIRECTORY = f"/etc/ascend-inference/{STACK}"

FAKE_SSH = """#!{python}
import sys, pathlib
script = sys.stdin.read()
host = [a for a in sys.argv[1:] if "@" in a][-1]
log = pathlib.Path({log!r})
with log.open("a") as f:
    f.write(host + "\\n" + script + "\\n---\\n")
if host.endswith("@{unreachable}"):
    sys.stderr.write("ssh: connect to host {unreachable} port 22: No route to host\\n")
    sys.exit(255)
if "docker ps" in script:
    print("container {kept} mindspore_vllm")
    print("container {left} mindspore_vllm_old")
    print("directory {directory}")
"""


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """A fake `ssh` first on PATH; returns its log (host, then the script it was given)."""
    log = tmp_path / "ssh.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable, log=str(log), kept=KEPT, left=LEFT, directory=DIRECTORY,
                                   unreachable="192.0.2.99"))
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return log


def state(*container_ids: str) -> dict:
    resources = [{"urn": "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s", "type": "pulumi:pulumi:Stack"},
                 {"urn": "urn:pulumi:s::p::pulumi:providers:docker::d", "type": "pulumi:providers:docker",
                  "custom": True, "id": "provider-id"}]
    resources += [{"urn": f"urn:pulumi:s::p::docker:index/container:Container::node{i}-container",
                   "type": leftovers.CONTAINER_TYPE, "custom": True, "id": ident}
                  for i, ident in enumerate(container_ids)]
    return {"version": 3, "deployment": {"resources": resources}}


def test_without_a_state_everything_the_stack_left_is_listed_and_nothing_removed(nodes, capsys):
    assert cli.main(["leftovers", "--stack", STACK]) == 0
    out = capsys.readouterr().out.splitlines()
    each = [f"container mindspore_vllm ({KEPT[:12]})", f"container mindspore_vllm_old ({LEFT[:12]})",
            f"directory {DIRECTORY}"]
    assert out == [*[f"node0: {line}" for line in each], *[f"node1: {line}" for line in each],
                   f"6 left by stack {STACK} outside its state; remove them with --remove"]
    calls = nodes.read_text().split("\n---\n")
    assert calls[0].startswith("root@192.0.2.11\n")
    # Only the stack's own label is asked for; nothing is removed without --remove.
    assert f"--filter label=ascend-inference/stack={STACK} " in calls[0]
    assert "rm " not in nodes.read_text()


def test_with_the_state_a_recorded_container_and_the_directory_stay(nodes, tmp_path, capsys):
    exported = tmp_path / "state.json"
    exported.write_text(json.dumps(state(KEPT)))
    assert cli.main(["leftovers", "--stack", STACK, "--state", str(exported), "--remove"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"node0: container mindspore_vllm_old ({LEFT[:12]})", "node0: removed 1",
                   f"node1: container mindspore_vllm_old ({LEFT[:12]})", "node1: removed 1"]
    removals = [c for c in nodes.read_text().split("\n---\n") if "docker rm" in c]
    assert len(removals) == 2
    assert all(f"docker rm -f {LEFT} " in c and KEPT not in c and "rm -rf" not in c for c in removals)


def test_a_state_read_from_standard_input_that_holds_nothing(nodes, monkeypatch, capsys):
    import io

    # `pulumi stack export` of a stack whose resources are gone: the directory is a leftover too.
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(state())))
    assert cli.main(["leftovers", "--stack", STACK, "--state", "-", "--remove"]) == 0
    out = capsys.readouterr().out
    assert "node1: removed 3" in out
    assert f"rm -rf {DIRECTORY}" in nodes.read_text()


def test_nothing_left(nodes, tmp_path, capsys):
    nodes.parent.joinpath("bin", "ssh").write_text(f"#!{sys.executable}\nimport sys; sys.stdin.read()\n")
    assert cli.main(["leftovers", "--stack", STACK]) == 0
    assert capsys.readouterr().out == f"nothing of stack {STACK} on its nodes outside its state\n"


@pytest.mark.parametrize("text,words", [
    ("not json", "not a `pulumi stack export` (JSON: Expecting value at line 1)"),
    ('{"deployment": []}', "not a `pulumi stack export` (no deployment object)"),
])
def test_a_bad_state_file_is_one_line(nodes, tmp_path, capsys, text, words):
    exported = tmp_path / "state.json"
    exported.write_text(text)
    assert cli.main(["leftovers", "--stack", STACK, "--state", str(exported)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"error: leftovers --state: {exported}: {words} (fix: pulumi stack export > FILE)\n"


def test_a_missing_state_file_is_one_line(nodes, tmp_path, capsys):
    assert cli.main(["leftovers", "--stack", STACK, "--state", str(tmp_path / "none.json")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: leftovers --state: [Errno 2] No such file or directory") and "Traceback" not in err


def test_an_unreachable_node_is_named_and_the_others_are_still_listed(nodes, tmp_path, capsys):
    import yaml

    from tests.conftest import load_stack_doc, write_stack

    doc = load_stack_doc(STACK)
    doc["config"]["ascend-inference:nodes"][1]["host"] = "192.0.2.99"
    path = write_stack(tmp_path, STACK, doc)
    assert yaml.safe_load(path.read_text())  # the stack file as written
    assert cli.main(["leftovers", "--stack", str(path)]) == cli.EXIT_NODE_FAILURE
    captured = capsys.readouterr()
    assert "node0: directory" in captured.out
    assert captured.err == (f"error: node node1 (192.0.2.99): could not list what stack {STACK} left there: "
                            "ssh: connect to host 192.0.2.99 port 22: No route to host\n")


def test_a_failed_removal_is_named(nodes, tmp_path, capsys):
    script = nodes.parent.joinpath("bin", "ssh")
    refuse = 'if "docker rm" in script:\n    sys.stderr.write("denied\\n"); sys.exit(1)\n'
    script.write_text(script.read_text() + refuse)
    assert cli.main(["leftovers", "--stack", STACK, "--remove"]) == cli.EXIT_NODE_FAILURE
    assert "error: node node0 (192.0.2.11): removing failed: denied" in capsys.readouterr().err
