"""The offline preview prints what it knows and marks the rest (issue 25,
item 2): no value the mocks made up (ids, image ids, node facts, command
output) is printed as a fact; the steps come in the order a rollout runs them,
grouped per node with a count each; `--json` keeps the mocks' values and
says which they are; `diff` shows the changed lines of a changed script."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ascend_inference.stackfile import load_stack, stack_names
from ascendctl.preview import stack as preview_stack

pytestmark = pytest.mark.graph

STACKS = stack_names()


def _preflight_facts(stdout: str) -> list[str]:
    """What synthetic_preflight (ascendctl/preview/facts.py) makes up as a
    node's answer: its hostname, versions, device IPs, docker version."""
    lines = stdout.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line in ("### hostname", "### docker") and i + 1 < len(lines):
            found.append(lines[i + 1].removeprefix("running ").strip())
        for prefix in ("Version=", "version=", "ipaddr:"):
            if line.startswith(prefix):
                found.append(line[len(prefix):].strip())
    return found


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    return [value] if isinstance(value, str) else []


def _needles(answers: list[dict[str, Any]], stack_text: str) -> set[str]:
    """Every value the mocks minted that the stack file does not itself
    declare (a declared hostname is config; the driver version a node
    reports is not, unless the stack names it)."""
    minted: set[str] = set()
    for answer in answers:
        if answer["__id__"] is not None:  # None: an id the preview does not know (facts.CREATED)
            minted.add(answer["__id__"])
        for key, value in answer.items():
            if key == "__id__" or not isinstance(value, str) or not value.strip():
                continue
            if key != "stdout":
                minted.add(value)
                continue
            minted.add(value.strip())
            minted.update(_preflight_facts(value))
            try:
                printed = json.loads(value)
            except ValueError:
                continue
            minted.update(_leaves(printed))
    # Short or common words ("", "ok", "no") say nothing about where they came from.
    return {m for m in minted if len(m) >= 5 and m not in stack_text}


def _preview_recording_answers(monkeypatch, stack: str, *args: str) -> tuple[str, set[str]]:
    answers: list[dict[str, Any]] = []
    original = preview_stack.mock_outputs

    def recording(loaded, unknown=None):
        answer_for = original(loaded, unknown)

        def outputs_for(args):
            answer = answer_for(args)
            answers.append(answer)
            return answer

        return outputs_for

    monkeypatch.setattr(preview_stack, "mock_outputs", recording)
    text = (preview_stack.preview_stack(stack, as_json="--json" in args) if "diff" not in args
            else preview_stack.diff_stack(stack, list(args[1:])))
    stack_text = Path(load_stack(stack).file).read_text()
    return text, _needles(answers, stack_text)


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_prints_no_mock_value(monkeypatch, stack):
    text, needles = _preview_recording_answers(monkeypatch, stack)
    # The needles are real: ids of every step and what preflight made up.
    assert any(n.startswith("node0-preflight-") for n in needles), sorted(needles)[:20]
    assert any(n.startswith("sha256:") for n in needles)
    printed = [n for n in needles if n in text]
    assert printed == [], printed[:10]
    assert "output<string>" in text
    assert re.search(r"^    (images|node_facts): output<object>$", text, re.M), text[-800:]


@pytest.mark.parametrize("stack", STACKS)
def test_json_keeps_the_mock_values_and_marks_them(monkeypatch, stack):
    text, needles = _preview_recording_answers(monkeypatch, stack, "--json")
    doc = json.loads(text)
    assert "mocks' stand-ins" in doc["note"]
    assert {"node_facts", "images"} <= set(doc["outputs_after_apply"])
    marked = 0
    for resource in doc["resources"]:
        inputs = json.dumps(resource["inputs"])
        if any(n in inputs for n in needles if n.startswith("sha256:") or "-" in n):
            assert resource.get("after_apply"), resource["name"]
            marked += 1
    assert marked > 0  # the JSON does keep them


def _groups(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """Phase headers in order, and (phase, owner) -> step names as printed."""
    phases: list[str] = []
    groups: dict[tuple[str, str], list[str]] = {}
    owner = ""
    for line in text.splitlines():
        if not line.startswith(" ") and ("cluster gate" in line or line.startswith("Steps")):
            phases.append(line)
            owner = "gate"
        elif m := re.fullmatch(r"  (\S+): (\d+) to create", line):
            owner = m.group(1)
            groups[(phases[-1], owner)] = []
            groups[(phases[-1], owner)].append(m.group(2))
        elif m := re.match(r"    [+>] \S+ (\S+)", line):
            groups.setdefault((phases[-1], owner), []).append(m.group(1))
    return phases, groups


@pytest.mark.parametrize("stack", STACKS)
def test_steps_in_rollout_order_per_node_with_subtotals(stack):
    loaded = load_stack(stack)
    text = preview_stack.preview_stack(stack)
    graph = preview_stack.record_stack(loaded)
    phases, groups = _groups(text)
    assert [re.match(r"(Before the|The|After the) cluster gate", p).group(0) for p in phases] == [
        "Before the cluster gate", "The cluster gate", "After the cluster gate"]
    printed_at: dict[str, int] = {}
    for (phase, owner), members in groups.items():
        if owner != "gate":
            count, *members = members
            assert int(count) == len(members), (phase, owner, members)  # the subtotal counts its group
            assert all(m == owner or m.startswith(f"{owner}-") for m in members) or owner == "cluster-wide"
        for name in members:
            printed_at[name] = len(printed_at)
    steps = {r.name: r for r in graph.resources if r.custom}
    assert set(printed_at) == set(steps)  # every step once
    gate = printed_at["cluster-verified"]
    for name, rec in steps.items():
        waits_for_gate = graph.depends_on(rec, steps["cluster-verified"]) if name != "cluster-verified" else False
        assert (printed_at[name] > gate) == waits_for_gate, name
    # Node steps before the gate, the node's own after it. The node checks (preflight, pings,
    # image check) are invokes, no steps: listed apart, at every preview and up.
    assert printed_at["node0-image"] < gate < printed_at["node0-container"]
    assert "node0-preflight" not in printed_at
    checks = re.search(r"^Node checks, run at every preview and up \(no resources\): (.*)$", text, re.M)
    assert checks and all(c.name in checks.group(1) for c in graph.checks), text[-2000:]
    node_names = [n.name for n in loaded.spec.nodes]
    totals = re.search(r"steps per node: (.*); longest chain", text).group(1)
    assert totals.startswith(f"{node_names[0]} ")
    assert sum(int(part.rsplit(" ", 1)[1]) for part in totals.split(", ")) == len(steps)


def test_diff_shows_the_changed_lines_of_a_script(monkeypatch):
    text, needles = _preview_recording_answers(monkeypatch, "tp16-vllm-mindspore", "diff",
                                               "engine.max_num_seqs=128")
    assert "stdin: changed (" in text
    lines = text.splitlines()
    removed = [line for line in lines if line.startswith("             | -") and "--max-num-seqs=256" in line]
    added = [line for line in lines if line.startswith("             | +") and "--max-num-seqs=128" in line]
    assert removed and added, text
    assert [n for n in needles if n in text] == []


def test_diff_of_a_secret_script_prints_no_line(tmp_path):
    """A changed value that is a secret prints [secret], never a line diff."""
    from ascendctl.preview.diff import Change
    from ascendctl.preview.printer import format_diff
    from ascendctl.preview.values import Secret

    change = Change("urn:x", "command:remote:Command", "step", "update", paths=["stdin"],
                    details=[("stdin", Secret("token-A\nline\n"), Secret("token-B\nline\n"))])
    text = format_diff([change])
    assert "token-A" not in text and "token-B" not in text and "stdin: [secret] -> [secret]" in text


def test_diff_prints_each_warning_of_the_program_once():
    """`diff` runs the program several times (before, after, settling rounds); the
    warning it logs for an insecure choice (Ray without auth here) prints once."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ascendctl", "diff", "--stack", "tp16-vllm-mindspore",
                           "--set", "engine.max_num_seqs=128"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(set(warnings)) >= 1, warnings
    assert any("container.ray_version" in line for line in warnings)
