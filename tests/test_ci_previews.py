"""The CI preview (issue 22 item 7): no preview for a fork's pull request
(it would run the fork's program with the SSH key), and the posted comment
names the changes without any value (rendered scripts stay out of it)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "#!/usr/bin/env bash\nset -euo pipefail\necho secret-looking-script-body\n"


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))


def test_the_preview_never_runs_for_a_fork():
    preview = workflow()["jobs"]["preview"]
    assert preview["if"] == ("github.event_name == 'push' || "
                             "github.event.pull_request.head.repo.full_name == github.repository")


def test_no_step_posts_pulumis_own_diff():
    steps = workflow()["jobs"]["preview"]["steps"]
    for step in steps:
        assert not (step.get("with") or {}).get("comment-on-pr"), step
        assert (step.get("with") or {}).get("command") != "preview", step
    run = "\n".join(step.get("run", "") for step in steps)
    assert "tools/masked_preview.py" in run and "--body-file comment.md" in run


def test_the_comment_holds_no_input_value(tmp_path):
    document = {"steps": [
        {"op": "create", "urn": "urn:pulumi:s::p::command:remote:Command::node0-preflight",
         "diffReasons": [], "newState": {"inputs": {"create": SCRIPT, "stdin": "key"}}},
        {"op": "replace", "urn": "urn:pulumi:s::p::command:remote:Command::node1-env",
         "diffReasons": ["create", "triggers"], "newState": {"inputs": {"create": SCRIPT}},
         "detailedDiff": {"create": {"kind": "update"}}, "oldState": {"inputs": {"create": SCRIPT}}},
        {"op": "same", "urn": "urn:pulumi:s::p::command:remote:Command::node1-weights"}],
        "changeSummary": {"create": 1, "replace": 1, "same": 1}}
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(document))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "masked_preview.py"), str(path), "tp16-mindie"],
                          capture_output=True, text=True, check=True)
    assert "secret-looking-script-body" not in done.stdout and "set -euo" not in done.stdout
    assert "| create | `node0-preflight` | - |" in done.stdout
    assert "| replace | `node1-env` | create, triggers |" in done.stdout
    assert "node1-weights" not in done.stdout
