"""Fixtures for the emulated-cluster tests (the emulated tier in docs/testing.md).

Every test here is marked `emulated`. They need root, the Debian packages in
emulator/apt-packages.txt and the pip packages in
emulator/requirements-emulator.txt; when something is missing the fixture
FAILS with what to install: CI installs everything, so a skip would only hide
a broken setup.

The shared 2-node cluster uses its own prefix and subnet, so the tests run
beside a cluster a developer brought up by hand, and a fixed state dir, so a
run that was killed before its teardown is cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from emulator import Cluster, ClusterError, image  # noqa: E402
from emulator.provision import preflight  # noqa: E402

STATE_ROOT = Path(tempfile.gettempdir()) / "ascemu-tests"


def session_cluster_names() -> tuple[str, dict]:
    """State dir name, prefix and subnet of the session cluster. Under pytest-xdist
    (docs/testing.md) every worker that runs a module using it makes its own:
    worker N gets session-gwN, ptsessN and subnet 200+N (N < 16)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return "session", {"prefix": "ptsess", "subnet": 250}
    n = int(worker.removeprefix("gw"))
    if n >= 16:
        pytest.fail(f"the emulated tests have session-cluster subnets for 16 pytest-xdist workers, not {n + 1}",
                    pytrace=False)
    return f"session-{worker}", {"prefix": f"ptsess{n}", "subnet": 200 + n}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "emulated: runs on the emulated Ascend cluster (namespace nodes with sshd, dockerd, Ray); "
                   "needs root and emulator/apt-packages.txt + emulator/requirements-emulator.txt")


def require_prerequisites() -> None:
    try:
        preflight()
    except ClusterError as exc:
        pytest.fail(f"emulated tests cannot run here: {exc}", pytrace=False)
    try:
        import ray  # noqa: F401  (Ray runs inside the containers from this Python)
    except ImportError:
        pytest.fail("emulated tests need Ray: pip install -r emulator/requirements-emulator.txt", pytrace=False)


def fresh_state_dir(name: str) -> Path:
    """A fixed per-purpose state dir; whatever a killed earlier run left there is torn down first."""
    state = STATE_ROOT / name
    Cluster.down_state_dir(state, log=lambda m: None)
    return state


@pytest.fixture(scope="session")
def cluster():
    require_prerequisites()
    name, settings = session_cluster_names()
    state = fresh_state_dir(name)
    try:
        c = Cluster.up(2, state, log=print, **settings)
    except ClusterError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        # Shown by pytest only when something failed: what state the nodes were in.
        health = c.health_problems()
        print("node health before teardown:", health or "all nodes healthy")
        for node in c.nodes if health else []:
            for log in ("holder.log", "run/sshd.log", "run/dockerd.log"):
                print(cluster_tail(Path(node.dir) / log))
        problems = Cluster.down_state_dir(state, log=print)
        assert not problems, problems


def cluster_tail(path: Path, lines: int = 15) -> str:
    try:
        return f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"--- {path} (missing)"


# --------------------------------------------------------------------- helpers

DEVICES = [f"--device=/dev/davinci{i}" for i in range(8)] + [
    "--device=/dev/davinci_manager", "--device=/dev/devmm_svm", "--device=/dev/hisi_hdc"]

# Host mounts of runbook 000 (vLLM-MindSpore), plus the model directory.
RUNBOOK_MOUNTS = ["-v", "/usr/local/sbin/:/usr/local/sbin/", "-v", "/var/log/npu/slog/:/var/log/npu/slog",
                  "-v", "/var/log/npu/profiling/:/var/log/npu/profiling", "-v", "/var/log/npu/dump/:/var/log/npu/dump",
                  "-v", "/var/log/npu/:/usr/slog", "-v", "/etc/hccn.conf:/etc/hccn.conf",
                  "-v", "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi", "-v", "/usr/local/dcmi:/usr/local/dcmi",
                  "-v", "/usr/local/Ascend/driver:/usr/local/Ascend/driver",
                  "-v", "/etc/ascend_install.info:/etc/ascend_install.info", "-v", "/etc/vnpu.cfg:/etc/vnpu.cfg",
                  "-v", "/data:/data"]


def runbook_run_argv(name: str, command: list[str]) -> list[str]:
    """`docker run` as runbook 000 writes it, with --privileged mapped and the emulator's base mounts."""
    return (["docker", "run", "-d", f"--name={name}", "--ipc=host", "--network=host", "--init"]
            + image.privileged_substitute()["docker_run_args"] + DEVICES + RUNBOOK_MOUNTS
            + ["--shm-size=250g"] + image.base_docker_args() + [image.IMAGE] + command)


def ssh_ok(cluster: Cluster, node, command: str, timeout: float = 120) -> str:
    got = cluster.ssh(node, command, timeout=timeout)
    assert got.returncode == 0, f"{command!r} on {node}: rc={got.returncode}\n{got.stdout}\n{got.stderr}"
    return got.stdout


def in_container(cluster: Cluster, node, container: str, script: str, timeout: float = 120,
                 detach: bool = False) -> subprocess.CompletedProcess:
    flag = "-d " if detach else ""
    return cluster.ssh(node, f"docker exec {flag}{container} sh -c {shlex.quote(script)}", timeout=timeout)


@contextlib.contextmanager
def own_cluster(n: int, name: str, *, prefix: str, subnet: int, hardware=None):
    """A cluster for one test module, torn down however the module ends
    (`hardware`: an emulator.nodefs.Hardware, the 800 A2 by default)."""
    require_prerequisites()
    state = fresh_state_dir(name)
    c = Cluster.up(n, state, log=lambda m: None, prefix=prefix, subnet=subnet, hardware=hardware)
    try:
        yield c
    finally:
        assert not Cluster.down_state_dir(state, log=print)


def node_ssh(cluster, node, command: str) -> str:
    """stdout of a command run on a node over ssh; fails the test if it fails."""
    done = cluster.ssh(node, command, timeout=120)
    assert done.returncode == 0, f"{node}: {command}: {done.stderr}"
    return done.stdout


# The line the engine adds to every failed program run, after the program's own message.
ENGINE_PROGRAM_EXITED = "an unhandled error occurred: program exited with non-zero exit code"


def program_error_lines(report) -> list[str]:
    """The lines of a real `pulumi` operation's error the program wrote (the engine's own line left out)."""
    return [line for line in (report.error or "").splitlines() if not line.startswith(ENGINE_PROGRAM_EXITED)]


@contextlib.contextmanager
def rolled_out_stack(cluster, stack: str, workdir: Path, *, changes: list[str] | None = None, log=print):
    """`stack` rolled out onto `cluster` by the real `pulumi` CLI (emulator/userpath.py
    PulumiRollout), destroyed however the module ends: yields (rollout, the up's report)."""
    from emulator.userpath import PulumiRollout

    rollout = PulumiRollout(cluster, stack, workdir, log=log)
    try:
        yield rollout, rollout.up(changes)
    finally:
        rollout.destroy()


def container_ids(cluster, container: str) -> dict[str, str]:
    """node name -> id of the container named `container` on it."""
    return {n.name: node_ssh(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {container}").strip()
            for n in cluster.nodes}


def processes_in(cluster, node: str, container: str) -> str:
    """The command lines of the processes in `container` on `node`."""
    return node_ssh(cluster, node, f"docker exec {container} ps -eo args")


def changed(report) -> set[str]:
    """The resources an operation did something to (created, replaced, updated or deleted)."""
    return set(report.changed())
