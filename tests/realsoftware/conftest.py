"""Fixtures of tier 4 (docs/testing.md, "What is and is not exercised on this machine"): real software
where it installs. Here: a real GPUStack 2.x server (PyPI) on a real
PostgreSQL (Debian), to run the program's GPUStack scripts against.

Every test here is marked `realsoftware`. They need root and what
tests/realsoftware/install.sh installs; when something is missing the fixture
FAILS with what to install (a skip would only hide a broken setup).

Loopback only: GPUStack 2.x binds its API, proxy and metrics ports on 0.0.0.0
(it has no host flag: `host` is deprecated and unused). So PostgreSQL, the
server and the scripts run in a network namespace of our own that has only
`lo`: nothing they open is reachable from outside it, and no port of the
machine is taken. The scripts reach the server at 127.0.0.1 there, as they
would on the server node.

Processes are started with their PIDs recorded in a fixed state dir and stopped
by those PIDs; a run that was killed before its teardown is cleaned up by the
next one (a recorded PID is only signalled if its start time still matches).
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from emulator.node import process_alive  # a zombie counts as gone

VENV = Path(os.environ.get("GPUSTACK_VENV", "/tmp/gpustack-venv"))
INSTALL = "bash tests/realsoftware/install.sh (as root; GPUStack goes to $GPUSTACK_VENV, default /tmp/gpustack-venv)"
STATE = Path(tempfile.gettempdir()) / "ascend-inference-realsoftware"
# Inside the private namespace every port is free, but one in the kernel's
# ephemeral range (32768-60999) can be taken as the source port of an outgoing
# connection: GPUStack's own pool to PostgreSQL once took 48080 just before
# its API bound it ("address already in use", two starts in a row in one run).
PG_PORT = 5432
API_PORT = 28080    # GPUStack's API (`--api-port`; with the gateway disabled it is the served port)
PORT = 28081        # `--port` (the embedded gateway's port; unused with the gateway disabled)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realsoftware: runs real third-party software installed by tests/realsoftware/install.sh "
                   "(GPUStack 2.x server on PostgreSQL in a loopback-only network namespace; the vLLM 0.23.0 "
                   "wheel and vllm-ascend 0.23.0.post1 sdist, read, not installed)")


# ----------------------------------------------------------------- prerequisites

def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def gpustack_version() -> str | None:
    python = VENV / "bin" / "python"
    if not (VENV / "bin" / "gpustack").exists() or not python.exists():
        return None
    got = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('gpustack'))"],
                         capture_output=True, text=True, timeout=60)
    return got.stdout.strip() if got.returncode == 0 else None


def require_prerequisites() -> str:
    """The GPUStack version, or pytest.fail naming what is missing and how to install it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (a network namespace of its own, PostgreSQL run as the postgres user)")
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2"),
                          ("curl", "curl"), ("python3", "python3")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian {package})")
    if postgres_bin() is None:
        missing.append("PostgreSQL server binaries /usr/lib/postgresql/*/bin (Debian postgresql)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("the postgres user (Debian postgresql)")
    version = gpustack_version()
    if version is None:
        missing.append(f"GPUStack in {VENV} (pip install gpustack in a venv; set GPUSTACK_VENV if elsewhere)")
    elif not version.startswith("2."):
        missing.append(f"GPUStack 2.x in {VENV} (found {version})")
    if missing:
        pytest.fail("real-software tests cannot run here; missing: " + "; ".join(missing)
                    + f". Install with: {INSTALL}", pytrace=False)
    return version


# --------------------------------------------------------- processes by PID

def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record(pid: int, what: str) -> None:
    registry = STATE / "pids.json"
    entries = json.loads(registry.read_text()) if registry.exists() else []
    entries.append({"pid": pid, "start": _start_time(pid), "what": what})
    registry.write_text(json.dumps(entries))


def stop_pid(pid: int, sig: int = signal.SIGTERM, wait_s: float = 20) -> None:
    """Signal one process we started, wait for it, SIGKILL it if it lingers."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while process_alive(pid) and time.monotonic() < deadline + 10:
        time.sleep(0.2)


def clean_stale_state() -> None:
    """Stop what a killed earlier run left (only PIDs whose start time still matches), then wipe STATE."""
    registry = STATE / "pids.json"
    if registry.exists():
        for entry in reversed(json.loads(registry.read_text())):
            if entry["start"] and _start_time(entry["pid"]) == entry["start"]:
                stop_pid(entry["pid"], signal.SIGKILL if entry["what"] != "postgres" else signal.SIGQUIT, 10)
    shutil.rmtree(STATE, ignore_errors=True)


def spawn(argv: list[str], log: Path, what: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _record(proc.pid, what)
    return proc


def tail(path: Path, lines: int = 40) -> str:
    try:
        return f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"--- {path} (missing)"


# ------------------------------------------------------------------ the stack

class GpustackStack:
    """PostgreSQL + a GPUStack server in a loopback-only network namespace."""

    def __init__(self, version: str):
        self.version = version
        self.root = STATE
        self.holder: subprocess.Popen | None = None
        self.postgres: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.data_dir: Path | None = None
        self.starts = 0
        self.api_port = API_PORT
        self.url = f"http://127.0.0.1:{API_PORT}"
        self.pg_bin = postgres_bin()
        pg_user = pwd.getpwnam("postgres")
        self.pg_ids = (pg_user.pw_uid, pg_user.pw_gid)

    # -- the namespace
    @property
    def netns(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net"]

    def up(self) -> None:
        self.root.mkdir(parents=True)
        self.root.chmod(0o711)
        # `unshare` without --fork execs: the holder's PID is the namespace's first process.
        self.holder = spawn(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep infinity"],
                            self.root / "holder.log", "netns holder")
        deadline = time.monotonic() + 10
        while Path(f"/proc/{self.holder.pid}/comm").read_text().strip() != "sleep":
            if self.holder.poll() is not None or time.monotonic() > deadline:
                pytest.fail("could not make a network namespace (`unshare --net`): "
                            + tail(self.root / "holder.log"), pytrace=False)
            time.sleep(0.05)
        self._start_postgres()

    def _start_postgres(self) -> None:
        pg = self.root / "pg"
        pg.mkdir()
        os.chown(pg, *self.pg_ids)
        uid, gid = self.pg_ids
        init = subprocess.run([str(self.pg_bin / "initdb"), "-D", str(pg / "data"), "-U", "gpustack",
                               "--auth=trust", "-E", "UTF8", "--locale=C"],
                              user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        # nsenter enters the namespace as root, then drops to postgres and execs: the PID is the postmaster's.
        self.postgres = spawn(self.netns + ["-S", str(uid), "-G", str(gid), str(self.pg_bin / "postgres"),
                                            "-D", str(pg / "data"), "-c", "listen_addresses=127.0.0.1",
                                            "-p", str(PG_PORT), "-k", str(pg)],
                              self.root / "postgres.log", "postgres")
        self._wait(lambda: (pg / f".s.PGSQL.{PG_PORT}").exists() and self.psql("SELECT 1").returncode == 0,
                   30, "PostgreSQL", self.root / "postgres.log", self.postgres)

    def psql(self, sql: str) -> subprocess.CompletedProcess:
        # Through the unix socket (a file, reachable from outside the namespace).
        return subprocess.run([str(self.pg_bin / "psql"), "-h", str(self.root / "pg"),
                               "-p", str(PG_PORT), "-U", "gpustack", "-d", "postgres", "-tAc", sql],
                              capture_output=True, text=True, timeout=30)

    def _wait(self, ready, timeout_s: float, what: str, log: Path, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not up after {timeout_s} s:\n{tail(log)}", pytrace=False)
            time.sleep(0.3)

    # -- the GPUStack server
    def start_server(self, *extra: str) -> None:
        """A fresh server (new data dir, new database) with the given extra `gpustack start` flags."""
        self.stop_server()
        self.starts += 1
        database = f"gpustack{self.starts}"
        made = self.psql(f"CREATE DATABASE {database}")
        assert made.returncode == 0, made.stderr
        self.data_dir = self.root / f"data{self.starts}"
        self.data_dir.mkdir()
        self.log = self.root / f"gpustack{self.starts}.log"
        argv = [str(VENV / "bin" / "gpustack"), "start",
                "--data-dir", str(self.data_dir),
                "--database-url", f"postgresql://gpustack@127.0.0.1:{PG_PORT}/{database}?sslmode=disable",
                "--advertise-address", "127.0.0.1",
                "--api-port", str(API_PORT), "--port", str(PORT),
                # Nothing here can run: Higress and the embedded worker download tools at start,
                # Prometheus/Grafana are binaries of the container image.
                "--gateway-mode", "disabled", "--disable-builtin-observability", "--disable-metrics",
                "--disable-update-check", "--disable-worker", *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUSTACK_", "HF_", "PYTEST"))}
        with open(self.log, "ab") as out:
            self.server = subprocess.Popen(self.netns + argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True, env=env)
        _record(self.server.pid, "gpustack")
        self._wait(lambda: self.curl(["-sf", "-m", "2", f"{self.url}/healthz"]).returncode == 0,
                   120, "GPUStack server", self.log, self.server)

    def stop_server(self) -> None:
        if self.server is not None:
            stop_pid(self.server.pid)
            self.server.wait(timeout=5)
            self.server = None

    def down(self) -> None:
        self.stop_server()
        if self.postgres is not None:
            stop_pid(self.postgres.pid, signal.SIGINT, 30)   # fast shutdown
            self.postgres.wait(timeout=5)
        if self.holder is not None:
            stop_pid(self.holder.pid, signal.SIGTERM, 5)
            self.holder.wait(timeout=5)

    # -- clients inside the namespace
    def curl(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.netns + ["curl", *args], input=stdin, capture_output=True, text=True, timeout=60)

    def run_script(self, script: str, name: str, stdin: str, path_dirs: list[Path] = (),
                   timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a rendered script with bash inside the namespace, as pulumi-command would on the node."""
        path = self.root / f"{name}.sh"
        path.write_text(script)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*map(str, path_dirs), env.get("PATH", "")])
        return subprocess.run(self.netns + ["bash", str(path)], input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=env)


# One server per session, also when the real-engine tier's test (which imports
# this fixture) runs in the same session: pytest then holds two definitions of
# the fixture, and a second stack would clean the first one's state away.
_shared: dict = {"stack": None, "users": 0}


@pytest.fixture(scope="session")
def gpustack_stack():
    if _shared["stack"] is None:
        version = require_prerequisites()
        clean_stale_state()
        stack = GpustackStack(version)
        _shared["stack"] = stack
        try:
            stack.up()
        except BaseException:
            _shared["stack"] = None
            stack.down()
            raise
    _shared["users"] += 1
    try:
        yield _shared["stack"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            stack, _shared["stack"] = _shared["stack"], None
            failed_logs = [tail(p) for p in sorted(STATE.glob("*.log"))]
            stack.down()
            print("\n".join(failed_logs))  # shown by pytest only when something failed
            shutil.rmtree(STATE, ignore_errors=True)
