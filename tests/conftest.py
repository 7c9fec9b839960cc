"""Shared fixtures of the pure tier: run the offline CLI as a user would, load
and mutate stack files, and render the five stacks once per session.

The CLI is run as a subprocess (`python -m ascendctl ...` from the project
root) so that exit codes, stderr and the absence of tracebacks are real.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = PROJECT_ROOT / "stacks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NS = "ascend-inference:"

# Stack name -> runbook (docs/runbooks.md).
STACK_RUNBOOK = {
    "tp16-vllm-mindspore": "000",
    "tp16-mindie": "001",
    "dp4-ep32-gpustack": "002",
    "tp8-pp2-300iduo": "003",
    "tp16-lmdeploy": "004",
    # Atlas A3 (issue 11): no field runbook; runbook 001's MindIE settings.
    "tp32-a3-mindie": None,
}
STACKS = tuple(STACK_RUNBOOK)


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m ascendctl ARGS` from the project root, output captured."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "ascendctl", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def load_stack_doc(name: str) -> dict:
    """The parsed YAML document of stacks/Pulumi.<name>.yaml (a fresh copy)."""
    return copy.deepcopy(yaml.safe_load((STACKS_DIR / f"Pulumi.{name}.yaml").read_text(encoding="utf-8")))


def write_stack(directory: Path, label: str, doc: dict | None = None, *, text: str | None = None) -> Path:
    """Write a stack file named Pulumi.<label>.yaml into `directory`."""
    path = Path(directory) / f"Pulumi.{label}.yaml"
    if text is None:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Every stack rendered once with `python -m ascendctl render`: {stack: DIR}."""
    base = tmp_path_factory.mktemp("rendered")
    out = {}
    for stack in STACKS:
        target = base / stack
        result = run_cli("render", "--stack", stack, "--out", target)
        assert result.returncode == 0, f"render {stack} failed:\n{result.stdout}\n{result.stderr}"
        out[stack] = target
    return out


def container_mount_for(path: str, mounts: list[str]) -> str | None:
    """The `-v host:container[:ro]` mount through which the container sees
    the host's `path` at the same path, or None. Named volumes do not count."""
    best = None
    for mount in mounts:
        parts = mount.split(":")
        host, target = parts[0].rstrip("/") or "/", parts[1].rstrip("/") or "/"
        if not host.startswith("/") or host != target:
            continue
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best.split(":")[1].rstrip("/")):
                best = mount
    return best


# The test tiers (pyproject.toml describes them). Every test belongs to
# exactly one, so `pytest -m pure` / `-m graph` / ... together run everything.
TIERS = ("pure", "graph", "emulated", "realsoftware", "realengine")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) != 1:
            raise pytest.UsageError(
                f"{item.nodeid} belongs to tier(s) {tiers or 'none'}: mark its module with exactly one of "
                f"{', '.join(TIERS)} (`pytestmark = pytest.mark.<tier>`)")
