"""The README's examples run as written on the stack they name.

The README's bash blocks are replayed in order, offline, as a user would type
them: `pulumi stack select --create NAME` selects the stack,
`pulumi config set --secret` stores a secret (here an encrypted-looking
placeholder), `pulumi config set --path KEY VALUE` changes the selected
stack's config (typed as the Pulumi CLI types it, `ascendctl.preview.config`)
and must leave a stack `validate` accepts, and every `python3 -m ascendctl
...` command runs, on the stack as the steps before it left it, and exits 0.
A `diff --set`, run on the stack before the change, must be the change a
`pulumi config set --path` after it makes, so the offline diff shows what the
real preview will. The pure tier runs the
commands that need no Pulumi SDK; the graph tier the `preview` and `diff`
commands (the program under the SDK's mocks).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascend_inference.stackfile import _split_config, read_config, spec_from_sections
from ascendctl.cli import DEFAULT_STACK
from ascendctl.preview.config import apply_change
from tests.conftest import NS, PROJECT_ROOT, STACKS_DIR, TEST_HOST_KEY

README = PROJECT_ROOT / "README.md"
CIPHERTEXT = "v1:c2VjcmV0LWJ5dGVz:bm90LXJlYWxseS1lbmNyeXB0ZWQ="
# Commands the graph tier runs (the program under the SDK's mocks).
NEEDS_SDK = ("preview", "diff")


def bash_lines() -> list[str]:
    """Every command line of the README's ```bash blocks, comments dropped,
    `&&` chains split into their commands."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S):
        for raw in block.splitlines():
            line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
            lines += [part.strip() for part in line.split("&&") if part.strip()]
    return lines


@dataclass
class Replay:
    """The stack as the README's commands so far have left it."""

    tmp: Path
    stack: str = DEFAULT_STACK
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_changes: list[str] = field(default_factory=list)
    diff_sets: list[str] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        if self.stack not in self.configs:
            self.configs[self.stack] = read_config(STACKS_DIR / f"Pulumi.{self.stack}.yaml")
        return self.configs[self.stack]

    def file(self) -> Path:
        """The selected stack, as it stands now, written where a command can read it."""
        directory = self.tmp / f"step{len(list(self.tmp.iterdir()))}"
        directory.mkdir()
        path = directory / f"Pulumi.{self.stack}.yaml"
        path.write_text(yaml.safe_dump({"config": self.config()}, sort_keys=False), encoding="utf-8")
        return path


def config_set(replay: Replay, words: list[str]) -> None:
    args = words[3:]
    if args[0] == "--secret":
        key = args[1]
        assert key.startswith(NS), key
        replay.config()[key] = {"secure": CIPHERTEXT}
        return
    assert args[0] == "--path", f"`{' '.join(words)}`: the README sets structured keys with --path"
    key, value = args[1], args[2]
    assert key.startswith(NS), key
    assignment = f"{key[len(NS):]}={value}"
    file = str(STACKS_DIR / f"Pulumi.{replay.stack}.yaml")
    changed = apply_change(replay.config(), assignment, file)
    # The stack as `pulumi up` would read it after this command: no problem.
    sections, others, problems = _split_config(changed, file)
    spec_from_sections(replay.stack, file, sections, others, problems=problems, raw_config=changed)
    replay.configs[replay.stack] = changed
    replay.path_changes.append(assignment)


def ascendctl(replay: Replay, words: list[str], run_sdk: bool) -> str | None:
    """Run one `python3 -m ascendctl` command on the replayed stack; None
    when this tier does not run it."""
    args = words[3:]
    command = args[0] if args and not args[0].startswith("-") else None
    if (command in NEEDS_SDK) != run_sdk:
        return None
    if "--stack" in args:
        at = args.index("--stack") + 1
        assert args[at] == replay.stack, (
            f"`{' '.join(words)}` names stack {args[at]}, but the README selected {replay.stack}")
        args[at] = str(replay.file())
    elif command not in (None, "stacks"):
        args += ["--stack", str(replay.file())]
    if command == "diff":
        replay.diff_sets += [args[i + 1] for i, word in enumerate(args) if word == "--set"]
    workdir = replay.tmp / "cwd"
    workdir.mkdir(exist_ok=True)  # `render` without --out writes out/<stack> here
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PYTHONWARNINGS", None)
    if command == "hostkeys":
        # The README's hosts are a user's (10.0.0.11): a stand-in ssh-keyscan answers
        # for them, so no packet leaves this machine.
        env["PATH"] = f"{keyscan_standin(replay.tmp)}:{env['PATH']}"
    done = subprocess.run([sys.executable, "-m", "ascendctl", *args], cwd=workdir, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"`{' '.join(words)}` exits {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr
    if command == "hostkeys" and "--write" in args:
        # What it wrote into the stack file is the stack from now on.
        replay.configs[replay.stack] = read_config(Path(args[args.index("--stack") + 1]))
    return done.stdout


def keyscan_standin(tmp: Path) -> Path:
    """A bin dir whose `ssh-keyscan` offers TEST_HOST_KEY for every host it is asked about (`-f -`)."""
    bin_dir = tmp.parent / "keyscan-bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        script = bin_dir / "ssh-keyscan"
        script.write_text("#!/bin/sh\nwhile read -r host; do echo \"$host " + TEST_HOST_KEY + "\"; done\n")
        script.chmod(0o755)
    return bin_dir


def replay_readme(tmp_path: Path, *, run_sdk: bool) -> dict[str, str]:
    replay = Replay(tmp_path / "steps")
    replay.tmp.mkdir()
    ran: dict[str, str] = {}
    for line in bash_lines():
        words = shlex.split(line)
        if words[:4] == ["pulumi", "stack", "select", "--create"]:
            replay.stack = words[4]
            assert (STACKS_DIR / f"Pulumi.{replay.stack}.yaml").is_file(), line
        elif words[:3] == ["pulumi", "config", "set"]:
            config_set(replay, words)
        elif words[:3] == ["python3", "-m", "ascendctl"]:
            out = ascendctl(replay, words, run_sdk)
            if out is not None:
                ran[line] = out
    # `diff --set` previews offline exactly what a `pulumi config set --path` of the README then sets.
    assert all(change in replay.path_changes for change in replay.diff_sets), (
        f"`diff --set {replay.diff_sets}`: not all set by the README's `pulumi config set --path` "
        f"{replay.path_changes}")
    return ran


@pytest.mark.pure
def test_the_readme_has_the_user_path():
    lines = bash_lines()
    for command in ("pulumi login --local", "pulumi stack select --create",
                    "pulumi config set --secret ascend-inference:sshPrivateKey < ~/.ssh/id_ed25519",
                    "pulumi config set --path", "pulumi preview --diff", "pulumi up",
                    "pulumi stack output endpoint", "pulumi destroy",
                    "python3 -m pip install -r requirements.txt", "bash .ci/run"):
        assert any(line.startswith(command) for line in lines), f"the README has no `{command}`"


@pytest.mark.pure
def test_readme_commands_without_the_sdk_run_as_written(tmp_path):
    ran = replay_readme(tmp_path, run_sdk=False)
    assert any(" validate " in line for line in ran), ran
    assert any(line.startswith("python3 -m ascendctl render") for line in ran), ran
    validate = next(out for line, out in ran.items() if "--require-secrets" in line)
    assert ": ok" in validate.splitlines()[0]
    assert "secret not set" not in validate  # the README set the SSH key before


@pytest.mark.graph
def test_readme_preview_and_diff_run_as_written(tmp_path):
    ran = replay_readme(tmp_path, run_sdk=True)
    previews = [out for line, out in ran.items() if line.startswith("python3 -m ascendctl preview")]
    diffs = [out for line, out in ran.items() if line.startswith("python3 -m ascendctl diff")]
    assert previews and diffs, ran
    assert all("resources" in out for out in previews)
    # The day-2 change does something: at least one resource is updated or replaced.
    assert all(re.search(r"Resources: \d+ to (replace|update)", out) for out in diffs), diffs


@pytest.mark.pure
def test_a_config_key_the_selected_stack_lacks_is_caught(tmp_path):
    """What the replay catches: the MindIE stack has no `max_num_seqs`."""
    replay = Replay(tmp_path, stack="tp16-mindie")
    from ascend_inference.errors import StackError

    with pytest.raises(StackError) as caught:
        config_set(replay, shlex.split("pulumi config set --path 'ascend-inference:engine.max_num_seqs' 128"))
    assert f"{NS}engine.max_num_seqs" in str(caught.value)


@pytest.mark.pure
def test_every_page_the_readme_and_docs_name_exists():
    for page in [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))]:
        for named in set(re.findall(r"\bdocs/[\w-]+\.md\b", page.read_text(encoding="utf-8"))):
            assert (PROJECT_ROOT / named).is_file(), f"{page.name} names {named}, which does not exist"
