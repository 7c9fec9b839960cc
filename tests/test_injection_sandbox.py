"""No stack value runs as code in any rendered file (issue 22 item 4).

Random strings and the issue's payloads go into every string field of the
stack that accepts them (one field at a time for the check, then all
together); the stack is rendered with `render --out`, and every rendered
shell file is run by bash in a sandbox: an empty PATH (every external
command is answered by a `command_not_found_handle` that succeeds silently,
so scripts go on past their checks), a temp dir as working directory, and,
when the test runs as root, the unprivileged user `nobody`, so nothing
outside the sandbox can be written. Each payload writes a canary file with a
shell builtin if it is ever run; no canary may appear.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from ascend_inference.errors import StackError
from ascend_inference.render import render_stack
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure

NS = "ascend-inference:"
STACKS = ("tp16-mindie", "dp4-ep32-gpustack", "tp16-vllm-mindspore", "tp16-lmdeploy")


def payloads(canary: Path) -> list[str]:
    """The issue's forms of injection, each writing `canary` if run, and
    random strings of shell metacharacters."""
    write = f"echo pwned > {canary}"
    fixed = [f"$({write})", f"`{write}`", f"x; {write}", f"x' ; {write} ; '", f'x" ; {write} ; "',
             f"x\n{write}\n", f"--x=$({write})", f"${{IFS}}$({write})", f"\\$({write})",
             f"x && {write} #", f"x | {write}", f"$(printf %s pwned > {canary})"]
    rng = random.Random(22)
    alphabet = "abc/.-_=:@ \t\"'`$(){}[];&|<>!*?~#\\\n%^,+"
    noise = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) + f"$({write})"
             for _ in range(8)]
    return fixed + noise


def string_paths(model: type[BaseModel], value: dict, prefix: str) -> list[tuple[str, ...]]:
    """Paths (section, key, ...) of the str fields of `model` present or
    defaulted in `value`, and of list[str] / dict[str, str] fields given."""
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        kinds = _types(field.annotation)
        if str in kinds:
            found.append((prefix, name))
        current = value.get(name) if isinstance(value, dict) else None
        is_str_list = typing.get_origin(field.annotation) is list and str in _types(field.annotation)
        if is_str_list or (isinstance(current, list) and current and all(isinstance(v, str) for v in current)):
            found.append((prefix, name, "[0]"))
        if isinstance(current, dict) and current and all(isinstance(v, str) for v in current.values()):
            found.append((prefix, name, "{}"))
    return found


def _types(annotation: object) -> set[type]:
    args = typing.get_args(annotation)
    if isinstance(annotation, type):
        return {annotation}
    return set().union(*(_types(a) for a in args)) if args else set()


def with_value(config: dict, path: tuple[str, ...], text: str) -> dict:
    changed = json.loads(json.dumps(config))
    section = changed.setdefault(NS + path[0], {})
    if path[0] == "nodes":
        section = section[0]
    if len(path) == 3 and path[2] == "[0]":
        section[path[1]] = [text]
    elif len(path) == 3:
        section[path[1]] = {key: text for key in section.get(path[1]) or {"INJECTION_PROBE": ""}}
    else:
        section[path[1]] = text
    return changed


def candidate_paths(loaded) -> list[tuple[str, ...]]:
    spec = loaded.spec
    config = loaded.raw_config
    paths: list[tuple[str, ...]] = []
    for section in ("model", "container", "engine", "network", "ssh", "paths"):
        model = type(getattr(spec, section))
        paths += string_paths(model, config.get(NS + section) or {}, section)
    paths += string_paths(type(spec.nodes[0]), config[NS + "nodes"][0], "nodes")
    # env values are given by the test even where the stack has none.
    paths.append(("engine", "env", "{}"))
    return sorted(set(paths))


def sandbox_run(script: Path, workdir: Path) -> subprocess.CompletedProcess:
    # A copy in the sandbox: `nobody` may not read the test's own tmp_path.
    copied = workdir / "script.sh"
    copied.write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    copied.chmod(0o755)
    script = copied
    bash_env = workdir / ".bash_env"
    bash_env.write_text("command_not_found_handle() { return 0; }\n")
    bash_env.chmod(0o644)
    argv = [shutil.which("bash") or "/bin/bash", str(script)]
    if os.geteuid() == 0:
        argv = [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    env = {"PATH": str(workdir / "empty-path"), "BASH_ENV": str(bash_env), "HOME": str(workdir)}
    # Bounded work: no external command runs, so a script's waits end at once.
    return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def work():
    """The sandbox directory, where `nobody` may write (not under pytest's
    tmp_path, which only its owner may enter)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.fail("running as root needs setpriv (util-linux) to drop to nobody")
    directory = Path(tempfile.mkdtemp(prefix="ascend-inference-sandbox-"))
    directory.chmod(0o777)
    (directory / "empty-path").mkdir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("stack", STACKS)
def test_no_stack_value_runs_as_code_in_any_rendered_script(tmp_path, work, stack):
    canary = work / "canary"
    base = load_stack(stack)
    env = dict(base.raw_config[NS + "engine"].get("env") or {})
    base_config = json.loads(json.dumps(base.raw_config))
    base_config[NS + "engine"] = {**base_config[NS + "engine"], "env": {**env, "INJECTION_PROBE": "x"}}
    base = loaded_with_config(base, base_config)
    rendered = 0
    for text in payloads(canary):
        accepted: list[tuple[str, ...]] = []
        for path in candidate_paths(base):
            try:
                loaded_with_config(base, with_value(base.raw_config, path, text))
            except StackError as error:
                assert error.problems  # refused, one problem or more, never a traceback
                continue
            accepted.append(path)
        # Every stack has free-text fields (model.name, engine.env values):
        # the payload reaches the rendered files.
        assert ("model", "name") in accepted and ("engine", "env", "{}") in accepted, accepted
        config = base.raw_config
        for path in accepted:
            config = with_value(config, path, text)
        try:
            loaded = loaded_with_config(base, config)
        except StackError:
            # Accepted one by one, refused together (a cross-field rule): each alone then.
            candidates = [loaded_with_config(base, with_value(base.raw_config, p, text)) for p in accepted]
        else:
            candidates = [loaded]
        for loaded in candidates:
            out = tmp_path / f"out{rendered}"
            rendered += 1
            render_stack(loaded, out)
            for script in sorted(out.rglob("*.sh")):
                sandbox_run(script, work)
                assert not canary.exists(), f"{script.relative_to(out)} ran {text!r} from {accepted}"
    assert rendered >= len(payloads(canary))


def test_the_sandbox_does_see_a_value_that_is_run(tmp_path, work):
    """The check above can fail: a script that runs a value makes the canary."""
    canary = work / "canary"
    script = tmp_path / "bad.sh"
    script.write_text(f"set -euo pipefail\nsome-check\nX=\"$(echo pwned > {canary})\"\n")
    script.chmod(0o755)
    sandbox_run(script, work)
    assert canary.exists()
