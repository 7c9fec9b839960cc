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
import tempfile
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
    # vllm-ascend (issue 27): no field runbook; vllm-ascend's own DeepSeek-R1 tutorial.
    "dp2-tp8-ep16-vllm-ascend": None,
    "dp4-tp8-ep32-vllm-ascend": None,
    # Its Ray form (TP16 across nodes): vllm-ascend's docs/source/tutorials/features/ray.md.
    "tp16-vllm-ascend-ray": None,
}
STACKS = tuple(STACK_RUNBOOK)


def run_cli(*args: str, env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """`python -m ascendctl ARGS` from the project root, output captured. No clock of its own:
    a test's work is bounded by what it runs, and a hang by pytest-timeout's per-test limit
    (pyproject.toml), so a busy machine does not fail it."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "ascendctl", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


# A well-formed ed25519 public host key (not any machine's) for stacks that
# must pin keys (`validate --require-secrets`, `pulumi up`).
TEST_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"


def pin_host_keys(doc: dict) -> dict:
    """The stack document with TEST_HOST_KEY pinned for every node."""
    for node in doc["config"][NS + "nodes"]:
        node["host_key"] = TEST_HOST_KEY
    return doc


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


# --------------------------------------------------------------------------
# Running modules side by side: pytest-xdist with `-n N --dist loadgroup`
# (the README's test command). Each test module goes to one worker with all
# its tests, so a module's fixtures (its own emulated cluster above all) are
# made once, as in a serial run, while other modules run on other workers.
# The real-software and real-engine tiers go to one worker together: they
# share one GPUStack server and PostgreSQL per session (a second worker would
# clean the first one's away) and the toolchain and program-venv caches they
# fill on first use. The emulated tier's session cluster is made per worker
# (tests/emulated/conftest.py). xdist's own loadgroup reads groups from node
# ids that pytest 9.2 no longer lets it change, so the grouping is done here,
# by the controller's scheduler, from the test's path.

# Modules sent out first, slowest first (measured with --durations,
# docs/testing.md): a worker that starts a long module last ends the run last. Only
# the order depends on this list; the rest follow in collection order.
SLOW_FIRST = (
    "tests/emulated/test_recovery.py",
    "tests/emulated/test_recovery_faults.py",
    "tests/emulated/test_diff_table.py",
    "tests/emulated/test_engine_rules.py",
    "tests/emulated/test_pulumi_userpath.py",
    "tests/emulated/test_rollout_faults.py",
    "tests/emulated/test_gpustack_4nodes.py",
    "tests/emulated/test_gpustack_rollout.py",
    "tests/emulated/test_image_checks.py",
    "tests/emulated/test_host_software.py",
    "tests/emulated/test_rollout.py",
    "tests/emulated/test_rollout_vllm_ascend.py",
    "tests/emulated/test_rollout_vllm_ascend_ray.py",
    "tests/emulated/test_tls_rollout.py",
    "tests/emulated/test_in_container.py",
    "tests/emulated/test_step_idempotent.py",
    "tests/emulated/test_gpustack_workers.py",
    "tests/emulated/test_image_fetch_once.py",
    "tests/emulated/test_rollout_a3.py",
    "tests/emulated/test_weights_rollout.py",
    "tests/emulated/test_rollout_4nodes.py",
    "tests/emulated/test_standin_docker.py",
    "tests/emulated/test_benchmark_scripts.py",
    # The real tiers' group (GPUStack server start, real pulumi runs): after the emulated
    # modules and before the quick tiers; sent out last, it ran alone for its last 3 minutes.
    "tests/realsoftware/test_gpustack_api.py",
    "tests/realengine/test_gpustack_model_engine.py",
    "tests/realengine/test_pulumi_cli.py",
)
SHARED_SESSION_DIRS = ("tests/realsoftware/", "tests/realengine/")


def xdist_group(nodeid: str) -> str:
    """The unit of work one worker runs: the test's module, or the real tiers together."""
    module = nodeid.split("::", 1)[0]
    return "real" if module.startswith(SHARED_SESSION_DIRS) else module


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # without pytest-xdist the tests run one after another
    LoadScopeScheduling = None
else:
    class ModuleGroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with xdist_group above as the scope, groups sent in
        collection order (the workers put SLOW_FIRST first)."""

        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    @pytest.hookimpl(tryfirst=True)  # before xdist's own choice for --dist loadgroup
    def pytest_xdist_make_scheduler(config, log):
        if config.getoption("dist") == "loadgroup":
            config.option.loadscopereorder = False
            return ModuleGroupScheduling(config, log)
        return None


class SlowModulesFirst:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config, items):
        rank = {module: i for i, module in enumerate(SLOW_FIRST)}
        # Stable: a module's tests stay together and in their order.
        items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(SLOW_FIRST)))


class XdistWithoutGroups:
    """Another --dist would spread one module's tests over several workers, each making
    the module's cluster (same state dir, prefix and subnet) over the others': such tests
    fail at once, before their fixtures, saying what to run instead."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        if item.nodeid.startswith(("tests/emulated/", *SHARED_SESSION_DIRS)):
            pytest.fail("the emulated, real-software and real-engine tests run under pytest-xdist only with "
                        "`--dist loadgroup` (docs/testing.md)", pytrace=False)


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    # On a worker --dist reads "no"; xdist keeps whether it was loadgroup.
    if config.getoption("loadgroup", False):
        config.pluginmanager.register(SlowModulesFirst(), "ascend-inference-slow-modules-first")
    else:
        config.pluginmanager.register(XdistWithoutGroups(), "ascend-inference-xdist-without-groups")


def temp_files_holding(text: str) -> list[str]:
    """Small files directly in the temp directory whose content holds `text`."""
    found = []
    for entry in os.scandir(tempfile.gettempdir()):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_size < 65536 and \
                    text in Path(entry.path).read_text(errors="replace"):
                found.append(entry.path)
        except OSError:  # gone or unreadable meanwhile: not ours
            pass
    return found
