"""A project's copy run by the real `pulumi` CLI: this project (the
real-engine tier's `project` fixture) or a small program with the stand-in
plugins on PATH (emulator.plugins.environment), shared by the stand-in
plugin tests of the real-engine and emulated tiers. One runner for both."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from emulator import plugins
from tests.conftest import PROJECT_ROOT

STACK = "test"
PASSPHRASE = "real-engine-tier"


def pulumi_env(tmp_path: Path, toolchain_bin: Path, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a `pulumi` run on a project copy: the toolchain
    first on PATH, its own home, a file backend under tmp_path and the
    passphrase; none of the caller's PULUMI_/ASCEND_INFERENCE_ (or `drop`)
    variables."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PULUMI_", "ASCEND_INFERENCE_", *drop))}
    env.update({
        "PATH": f"{toolchain_bin}:{env.get('PATH', '')}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    })
    return env


class Project:
    """A copy of a small program with its own backend, run with the stand-ins on PATH."""

    def __init__(self, directory: Path, env: dict[str, str], name: str, stack: str = STACK):
        self.dir, self.env, self.name, self.stack = directory, env, name, stack
        self.printed: list[str] = []

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # No clock of its own: a `pulumi` run on a busy machine may take long, and a hang is
        # ended by the test's limit (pytest-timeout), whose exception makes subprocess.run kill it.
        done = subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env, input=stdin,
                              capture_output=True, text=True)
        self.printed.append(done.stdout + done.stderr)
        return done

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"pulumi {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def fails(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode != 0, f"pulumi {' '.join(args)} passed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def set_config(self, key: str, value: object) -> None:
        """A structured config value, written into the stack file as `pulumi config set --path` would."""
        path = self.dir / f"Pulumi.{self.stack}.yaml"
        doc = yaml.safe_load(path.read_text()) if path.exists() else None
        doc = doc or {}
        doc.setdefault("config", {})[f"{self.name}:{key}"] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def set_commands(self, commands: list[dict]) -> None:
        self.set_config("commands", commands)

    def stack_file(self, stack: str) -> str:
        """The project's own stack file (stackConfigDir: stacks), as the CLI left it."""
        return (self.dir / "stacks" / f"Pulumi.{stack}.yaml").read_text()

    def outputs(self) -> dict:
        return dict(json.loads(self.ok("stack", "output", "--json", "--show-secrets")))


def copy_program_with_sources(work: Path, program: Path, program_venv: Path) -> None:
    """`program` (its __main__.py and Pulumi.yaml) into `work` beside a copy of this
    project's `ascend_inference` and `components`, which it imports, and its venv."""
    work.mkdir(parents=True)
    for name in ("ascend_inference", "components"):
        shutil.copytree(PROJECT_ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__main__.py", "Pulumi.yaml"):
        shutil.copy2(program / name, work / name)
    (work / "venv").symlink_to(program_venv)


def program_copy(tmp_path: Path, program: Path, name: str, toolchain_bin: Path, program_venv: Path,
                 extra_env: dict[str, str] | None = None) -> Project:
    """A copy of `program` with a file backend under tmp_path, the stand-in
    plugins on PATH (emulator.plugins.environment) and a selected stack."""
    work = tmp_path / name
    work.mkdir()
    for file in ("__main__.py", "Pulumi.yaml"):
        shutil.copy2(program / file, work / file)
    (work / "venv").symlink_to(program_venv)
    (tmp_path / "state").mkdir()
    env = pulumi_env(tmp_path, toolchain_bin, drop=("PYTEST",))
    env.update(plugins.environment(env["PATH"]))
    env.update(extra_env or {})
    project = Project(work, env, name)
    project.ok("stack", "select", "--create", STACK)
    return project
