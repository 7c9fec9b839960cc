"""GPUStack 2.x on the emulated cluster: what a real server and real workers need from a node.

Test tooling, like the rest of the emulator. Two jobs:

1. Provisioning (called from provision.py for every node): the stand-in DCMI
   library. A GPUStack 2.x worker finds Ascend NPUs only through DCMI
   (gpustack-runtime's detector/ascend.py over ctypes, detector/pydcmi), so
   every node gets `libdcmi.so` built from standins/libdcmi.c at the two paths
   pydcmi tries after the linker's own (`<driver>/lib64/driver/libdcmi.so`,
   `<dcmi>/libdcmi.so`), answering from `/run/ascemu/dcmi.facts`, written here
   from the node's facts.

2. Running GPUStack on a cluster (`GpustackOnCluster`, used by
   tests/emulated/test_gpustack_workers.py): PostgreSQL and the GPUStack server
   as processes of node0, a worker as a container on each other node, from the
   venv tests/realsoftware/install.sh installs (default /tmp/gpustack-venv,
   which every node sees read-only through its overlay root) with the worker
   tools emulator/install-gpustack.sh puts in it; and what the worker's
   deployer needs from the node's docker (`load_worker_images`). The worker is
   a container, as GPUStack's docs and runbook 002 run it, because GPUStack's
   mirrored deployment then gives the backend containers it starts the
   worker's own mounts: that is how the stand-in engine gets the Python it
   runs on.

Everything runs inside the nodes' namespaces: the server listens on node0's
address on the emulator's bridge, which nothing outside this machine reaches.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import image as imagelib
from .node import ClusterError, Node, run
from .nodefs import NodeRoot, compile_standin, in_upper, write

if TYPE_CHECKING:
    from .cluster import Cluster

LIBDCMI_SOURCE = Path(__file__).resolve().parent / "standins" / "libdcmi.c"
DCMI_FACTS = "/run/ascemu/dcmi.facts"  # the C source's default path; /run/ascemu is the node's run dir

VENV = Path(os.environ.get("GPUSTACK_VENV", "/tmp/gpustack-venv"))
VERSION = "2.3.0"  # the release this was written against (tests/realsoftware/install.sh's default)
# What GPUStack 2.3.0's worker/tools_manager.py checks in <package>/third_party/bin/versions.json
# before downloading a tool from GitHub: a file of that name and this version is not fetched again.
TOOL_VERSIONS = {"gguf-parser": "v0.26.4", "fastfetch": "2.25.0.1"}
INSTALL = "bash emulator/install-gpustack.sh (as root; GPUStack goes to $GPUSTACK_VENV, default /tmp/gpustack-venv)"

# Inside node0 every port is free; these are GPUStack's own defaults for a server without its gateway.
API_PORT = 8080
WORKER_PORT = 10150
PG_PORT = 5432
STATE = "/var/lib/ascemu-gpustack"  # in each node's overlay root: gone with the node
# gpustack-runtime scans sysfs for a PCI device of vendor 0x19e5 before it asks DCMI. The nodes share
# the host's /sys, which has none, so the worker is told to skip that scan (the one setting that
# differs from a real Ascend host; detector/ascend.py AscendDetector.is_supported).
WORKER_CONTAINER = "gpustack-worker"
WORKER_ENV = {"GPUSTACK_RUNTIME_DETECT_NO_PCI_CHECK": "1", "GPUSTACK_RUNTIME_DETECT": "ascend"}


# ---------------------------------------------------------------------------
# the stand-in DCMI library (provisioning)
# ---------------------------------------------------------------------------

def build_libdcmi(out_dir: Path) -> Path:
    """Compile standins/libdcmi.c once per source version into out_dir; returns the .so path."""
    return compile_standin(LIBDCMI_SOURCE, out_dir, "libdcmi-{digest}.so",
                           ["-Wall", "-Werror", "-shared", "-fPIC"], "the stand-in libdcmi.so")


def dcmi_facts(facts: dict) -> str:
    """The facts file libdcmi.c reads, from a node's node.json (emulator/provision.py)."""
    lines = [f"npu_count {facts['npu_count']}", f"chip_name {facts['chip_name']}",
             f"hbm_mb {facts['hbm_mb']}", f"driver_version {facts['driver_version']}",
             f"node_index {facts['index']}"]
    for dev, ip in enumerate(facts["device_ips"]):
        # An A3 node has 16 dies on 8 NPUs (bus ids): the dies of one NPU share its bus.
        bus = facts["bus_ids"][(dev // facts.get("chips_per_npu", 1)) % len(facts["bus_ids"])]
        lines.append(f"device {dev} {bus} {ip} {facts['netmask']} {facts['gateway']}")
    return "\n".join(lines) + "\n"


def library_paths(layout) -> list[str]:
    """Where a node carries libdcmi.so: the driver's copy and the DCMI package's (pydcmi tries both)."""
    return [f"{layout.driver_dir}/lib64/driver/libdcmi.so", f"{layout.dcmi_dir}/libdcmi.so"]


def install_dcmi(cluster: Cluster, upper: Path, run_dir: Path) -> None:
    """Put the stand-in library into a node's overlay upper dir (before the node is started)
    and its facts file into the node's run dir. node.json must be written already."""
    lib = build_libdcmi(cluster.state_dir / "image").read_bytes()
    for path in library_paths(cluster.layout):
        write(in_upper(upper, path), lib, 0o755)
    (run_dir / "dcmi.facts").write_text(dcmi_facts(json.loads((run_dir / "node.json").read_text())))


# ---------------------------------------------------------------------------
# the images a GPUStack worker's deployer asks its node's docker for
# ---------------------------------------------------------------------------

PAUSE_SOURCE = Path(__file__).resolve().parent / "standins" / "pause.c"
# gpustack-runtime 0.2.6's defaults (envs.py GPUSTACK_RUNTIME_DOCKER_PAUSE_IMAGE): pulled only when absent.
PAUSE_IMAGE = "gpustack/runtime:pause"


# The runner image GPUStack 2.3.0 asks for with the MindIE backend on a 910B node that has no CANN
# toolkit installed (so the newest CANN runner of gpustack-runner 0.1.31's catalog, runner.py.json,
# variant 910b): read from the worker's "Failed to pull image" error on the emulator.
MINDIE_RUNNER_IMAGE = "gpustack/runner:cann8.5-910b-mindie2.3.0"


def build_pause_tar(out_dir: Path) -> Path:
    """A root filesystem holding only a static /pause (standins/pause.c), as a tar for `docker import`."""
    source = PAUSE_SOURCE.read_bytes()
    target = out_dir / f"pause-{hashlib.sha256(source).hexdigest()[:12]}.tar"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "pause"
    got = subprocess.run([shutil.which("gcc") or "gcc", "-O2", "-static", "-o", str(binary), str(PAUSE_SOURCE)],
                         capture_output=True, text=True, timeout=120)
    if got.returncode != 0:
        raise ClusterError(f"building the stand-in pause binary failed (gcc -static needs Debian's libc6-dev): "
                           f"{got.stderr.strip()}")
    with tarfile.open(target.with_suffix(".tmp"), "w") as tar:
        tar.add(binary, arcname="pause")
    target.with_suffix(".tmp").rename(target)
    return target


RUNC_WRAPPER = Path(__file__).resolve().parent / "standins" / "runc_caps.py"


def install_runc_wrapper(node: Node) -> None:
    """standins/runc_caps.py as the node's /usr/local/sbin/runc (see its docstring: GPUStack
    starts its backend containers privileged, which runc cannot grant here in full)."""
    script = f"#!{imagelib.python_path()}\n" + RUNC_WRAPPER.read_text()
    NodeRoot(node.holder_pid).write_if_changed("/usr/local/sbin/runc", script.encode(), 0o755)


def load_worker_images(cluster: Cluster, node: Node, runner_images: list[str]) -> None:
    """Give the node's dockerd the images a GPUStack worker deploys with, offline: the pause image,
    and the emulator's runtime image (the stand-in engines) under each runner image name given."""
    install_runc_wrapper(node)
    tar = build_pause_tar(cluster.state_dir / "image")
    got = node.exec(["docker", "import", "--change", 'ENTRYPOINT ["/pause"]', str(tar), PAUSE_IMAGE], timeout=120)
    if got.returncode != 0:
        raise ClusterError(f"{node.name}: docker import {PAUSE_IMAGE} failed: {got.stderr.strip()}")
    for name in runner_images:
        got = node.exec(["docker", "tag", cluster.image, name], timeout=60)
        if got.returncode != 0:
            raise ClusterError(f"{node.name}: docker tag {cluster.image} {name} failed: {got.stderr.strip()}")


# ---------------------------------------------------------------------------
# the GPUStack venv and its worker tools
# ---------------------------------------------------------------------------

def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path = VENV) -> str | None:
    if not (venv / "bin" / "gpustack").exists() or not venv_python(venv).exists():
        return None
    got = subprocess.run([str(venv_python(venv)), "-c", "import importlib.metadata as m; print(m.version('gpustack'))"],
                         capture_output=True, text=True, timeout=60)
    return got.stdout.strip() if got.returncode == 0 else None


def third_party_bin(venv: Path = VENV) -> Path:
    """<site-packages>/gpustack/third_party/bin, where the worker looks for its tools."""
    found = sorted(venv.glob("lib/python3*/site-packages/gpustack/third_party"))
    if not found:
        raise ClusterError(f"no GPUStack package in {venv}. Install with: {INSTALL}")
    return found[-1] / "bin"


def missing_prerequisites(venv: Path = VENV) -> list[str]:
    """What keeps GPUStack from running on the emulated nodes (empty when nothing)."""
    missing = []
    version = installed_version(venv)
    if version is None:
        return [f"GPUStack in {venv} (set GPUSTACK_VENV if elsewhere)"]
    if not version.startswith("2."):
        missing.append(f"GPUStack 2.x in {venv} (found {version})")
    bin_dir = third_party_bin(venv)
    try:
        versions = json.loads((bin_dir / "versions.json").read_text())
    except (OSError, ValueError):
        versions = {}
    for tool, want in TOOL_VERSIONS.items():
        if not (bin_dir / tool / tool).is_file() or versions.get(tool) != want:
            missing.append(f"the worker tool {bin_dir / tool / tool} recorded as {want} in versions.json")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        missing.append("PostgreSQL server binaries /usr/lib/postgresql/*/bin (Debian postgresql)")
    return missing


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[4]))
    return found[-1].parent


# A login shell's environment on a server, not the test runner's (no PYTEST_*, GPUSTACK_*, HF_* leak in).
NODE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8"}


# ---------------------------------------------------------------------------
# GPUStack processes on the nodes
# ---------------------------------------------------------------------------

@dataclass
class NodeProcess:
    node: Node
    pid: int  # in the node's PID namespace
    what: str
    log: str  # path inside the node
    container: str = ""  # a container's id instead of a PID


@dataclass
class GpustackOnCluster:
    """A real GPUStack server (and its PostgreSQL) on one node, real workers on others."""

    cluster: Cluster
    server_node: Node
    venv: Path = VENV
    # The cluster's registration token: given to the server (which then creates its default
    # cluster, as `gpustack start --token` does) and to every worker, through the environment.
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: list[NodeProcess] = field(default_factory=list)

    @property
    def server_url(self) -> str:
        return f"http://{self.server_node.address}:{API_PORT}"

    # -- processes, stopped by the PIDs recorded here
    def spawn(self, node: Node, command: str, what: str, env: dict[str, str] | None = None) -> NodeProcess:
        """Start `command` in the background inside the node; its output goes to STATE/<what>.log there."""
        log = f"{STATE}/{what}.log"
        # The environment travels through nsenter, not on a command line (the token is in it).
        got = run(node.nsenter_argv() + ["/bin/sh", "-c", f"mkdir -p {STATE} && exec </dev/null >>{log} 2>&1 "
                                         f"&& {command} & echo $!"],
                  timeout=30, env={**NODE_ENV, **(env or {})})
        if got.returncode != 0 or not got.stdout.strip().isdigit():
            raise ClusterError(f"{node.name}: could not start {what}: {got.stderr.strip()}")
        proc = NodeProcess(node, int(got.stdout.strip()), what, log)
        self.processes.append(proc)
        return proc

    def alive(self, proc: NodeProcess) -> bool:
        if proc.container:
            got = proc.node.exec(["docker", "inspect", "-f", "{{.State.Running}}", proc.container], timeout=30)
            return got.stdout.strip() == "true"
        status = f"/proc/{proc.pid}/status"
        got = proc.node.exec(["sh", "-c", f"test -f {status} && ! grep -q '^State:.*Z' {status}"], timeout=30)
        return got.returncode == 0

    def stop(self, proc: NodeProcess, timeout_s: float = 30) -> None:
        if proc.container:
            proc.node.exec(["docker", "rm", "-f", proc.container], timeout=60)
            self.processes.remove(proc)
            return
        proc.node.exec(["kill", "-TERM", str(proc.pid)], timeout=30)
        deadline = time.monotonic() + timeout_s
        while self.alive(proc) and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.alive(proc):
            proc.node.exec(["kill", "-KILL", str(proc.pid)], timeout=30)
        if proc in self.processes:
            self.processes.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.processes)):
            self.stop(proc)

    def log_tail(self, proc: NodeProcess, lines: int = 40) -> str:
        if proc.container:
            got = proc.node.exec(["docker", "logs", "--tail", str(lines), proc.container], timeout=30)
            return f"--- {proc.node.name}: docker logs {proc.what}\n{got.stdout}{got.stderr}"
        got = proc.node.exec(["tail", "-n", str(lines), proc.log], timeout=30)
        return f"--- {proc.node.name}:{proc.log}\n{got.stdout}"

    def wait(self, ready, timeout_s: float, what: str, proc: NodeProcess) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.alive(proc):
                raise ClusterError(f"{proc.node.name}: {what} exited:\n{self.log_tail(proc)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{proc.node.name}: {what} not ready after {timeout_s} s:\n{self.log_tail(proc)}")
            time.sleep(1)

    # -- the server side
    def start_database(self) -> NodeProcess:
        node, pg = self.server_node, postgres_bin()
        as_postgres = "setpriv --reuid=postgres --regid=postgres --clear-groups"
        data = f"{STATE}/pg/data"
        init = node.exec(f"mkdir -p {STATE}/pg && chown postgres:postgres {STATE}/pg && "
                         f"{as_postgres} {pg}/initdb -D {data} -U gpustack --auth=trust -E UTF8 --locale=C",
                         timeout=180)
        if init.returncode != 0:
            raise ClusterError(f"{node.name}: initdb failed: {init.stdout[-1500:]} {init.stderr[-1500:]}")
        proc = self.spawn(node, f"exec {as_postgres} {pg}/postgres -D {data} -c listen_addresses=127.0.0.1 "
                                f"-p {PG_PORT} -k {STATE}/pg", "postgres")
        self.wait(lambda: self.psql("SELECT 1").returncode == 0, 60, "PostgreSQL", proc)
        made = self.psql("CREATE DATABASE gpustack")
        if made.returncode != 0:
            raise ClusterError(f"{node.name}: CREATE DATABASE failed: {made.stderr.strip()}")
        return proc

    def psql(self, sql: str) -> subprocess.CompletedProcess:
        return self.server_node.exec([f"{postgres_bin()}/psql", "-h", f"{STATE}/pg", "-p", str(PG_PORT),
                                      "-U", "gpustack", "-d", "postgres", "-tAc", sql], timeout=30)

    def start_server(self) -> NodeProcess:
        node = self.server_node
        argv = [str(self.venv / "bin" / "gpustack"), "start",
                "--data-dir", f"{STATE}/server",
                "--database-url", f"postgresql://gpustack@127.0.0.1:{PG_PORT}/gpustack?sslmode=disable",
                "--advertise-address", node.address, "--api-port", str(API_PORT), "--port", str(API_PORT + 1),
                # Higress (the gateway) and Prometheus/Grafana are binaries of GPUStack's container
                # image, not of the PyPI package; the server's node runs no worker of its own.
                "--gateway-mode", "disabled", "--disable-builtin-observability", "--disable-metrics",
                "--disable-update-check"]
        proc = self.spawn(node, "exec " + shlex.join(argv), "server", {"GPUSTACK_TOKEN": self.token})
        self.wait(lambda: self.curl(node, ["-sf", "-m", "2", f"{self.server_url}/healthz"]).returncode == 0,
                  240, "GPUStack server", proc)
        return proc

    def read_server_file(self, name: str) -> str:
        got = self.server_node.exec(["cat", f"{STATE}/server/{name}"], timeout=30)
        if got.returncode != 0:
            raise ClusterError(f"{self.server_node.name}: no {STATE}/server/{name}: {got.stderr.strip()}")
        return got.stdout.strip()

    # -- workers
    def worker_argv(self, node: Node) -> list[str]:
        return [str(self.venv / "bin" / "gpustack"), "start",
                "--server-url", self.server_url,
                "--data-dir", f"{STATE}/worker", "--worker-ip", node.address,
                "--worker-name", node.hostname, "--worker-port", str(WORKER_PORT),
                "--disable-worker-metrics"]

    def start_worker_container(self, node: Node, env: dict[str, str] | None = None) -> NodeProcess:
        """The worker as GPUStack's docs and runbook 002 run it: a container on the node with the
        node's docker socket, NPU devices and driver files, host network. With mirrored deployment
        on, the worker gives the backend containers it starts its own mounts, devices and
        environment (gpustack_runtime/deployer/docker.py, _find_self_container): here that carries
        the emulator's base mounts (the Python the stand-in engines run on) into them."""
        devices = [f"--device=/dev/davinci{i}" for i in range(self.cluster.hardware.npu_count)]
        devices += ["--device=/dev/davinci_manager", "--device=/dev/devmm_svm", "--device=/dev/hisi_hdc"]
        layout = self.cluster.layout
        mounts = ["-v", f"{layout.dcmi_dir}:{layout.dcmi_dir}", "-v", f"{layout.driver_dir}:{layout.driver_dir}",
                  "-v", "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi", "-v", "/etc/hccn.conf:/etc/hccn.conf",
                  "-v", "/data:/data", "-v", "/var/run/docker.sock:/var/run/docker.sock",
                  "-v", f"{STATE}/worker:{STATE}/worker", "-v", f"{self.venv}:{self.venv}:ro"]
        worker_env = {**WORKER_ENV, "GPUSTACK_RUNTIME_DEPLOY_MIRRORED_DEPLOYMENT": "true",
                      "GPUSTACK_RUNTIME_DEPLOY_MIRRORED_NAME": WORKER_CONTAINER, **(env or {})}
        env_args = [a for k in (*worker_env, "GPUSTACK_TOKEN") for a in ("-e", k)]  # values from the CLI's env
        argv = (["docker", "run", "-d", f"--name={WORKER_CONTAINER}", "--network=host", "--ipc=host",
                 "--restart=no", *devices, *mounts, *imagelib.base_docker_args(), *env_args,
                 self.cluster.image] + self.worker_argv(node))
        node.exec(["mkdir", "-p", f"{STATE}/worker"], timeout=30)
        got = run(node.nsenter_argv() + argv, timeout=120,
                  env={**NODE_ENV, **worker_env, "GPUSTACK_TOKEN": self.token})
        if got.returncode != 0:
            raise ClusterError(f"{node.name}: docker run of the GPUStack worker failed: {got.stderr.strip()}")
        proc = NodeProcess(node, 0, f"worker-{node.name}", "", container=got.stdout.strip())
        self.processes.append(proc)
        return proc

    # -- the API, asked from inside node0 as a client on the server's machine would
    def curl(self, node: Node, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return node.exec(["curl", *args], timeout=60, input=stdin)


# ---------------------------------------------------------------------------
# the program's own GPUStack containers (emulator/userpath.py PulumiRollout.arrange_gpustack)
# ---------------------------------------------------------------------------

# Where each node carries the entrypoint of the image the program's `container.image` names.
PROGRAM_ENTRYPOINT = "/usr/local/lib/ascemu/gpustack-entrypoint"
DATABASE_URL = f"postgresql://gpustack@127.0.0.1:{PG_PORT}/gpustack?sslmode=disable"
# GPUStack's image keeps its state here; the program mounts its `gpustack-data` volume here.
IMAGE_DATA_DIR = "/var/lib/gpustack"


def program_entrypoint(venv: Path = VENV) -> str:
    """The entrypoint of the emulator's `gpustack/gpustack:v2.3.0`: `gpustack start` from the venv
    with the program's arguments, plus what GPUStack's real image brings and the PyPI package
    lacks: the server's database (PostgreSQL as a process of node0, started by
    `ProgramGpustack`), no Higress gateway (the server's API then listens on the program's port
    itself), no Prometheus/Grafana; and the node's address (the emulator gives it as
    ASCEMU_NODE_ADDRESS: a node has several interfaces and GPUStack would guess)."""
    return f'''#!{venv}/bin/python
import os, sys
args = sys.argv[1:]
address = os.environ["ASCEMU_NODE_ADDRESS"]
extra = ["--data-dir", "{IMAGE_DATA_DIR}"]
if "--server-url" in args:  # a worker
    extra += ["--worker-ip", address, "--disable-worker-metrics"]
else:
    port = "80"
    if "--port" in args:  # the program's port is where the API answers without a gateway
        at = args.index("--port")
        port = args.pop(at + 1)
        args.pop(at)
    extra += ["--database-url", os.environ["ASCEMU_GPUSTACK_DATABASE_URL"], "--advertise-address", address,
              "--api-port", port, "--port", str(int(port) + 1), "--gateway-mode", "disabled",
              "--disable-builtin-observability", "--disable-metrics", "--disable-update-check"]
    if "--enable-worker" in args:
        extra += ["--worker-ip", address, "--disable-worker-metrics"]
gpustack = "{venv}/bin/gpustack"
os.execv(gpustack, [gpustack, "start", *args, *extra])
'''


def program_image_archive(runtime_archive: Path, tag: str, out: Path) -> Path:
    """The runtime image (its one layer, unchanged) with PROGRAM_ENTRYPOINT as entrypoint, tagged
    `tag`, as a `docker load` archive: built from the same bytes on every node, so every node's
    copy has the same id (the program's image check compares them)."""
    with tarfile.open(runtime_archive) as source:
        manifest = json.loads(source.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(source.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
        layer_name = manifest[0]["Layers"][0]
        layer = source.extractfile(layer_name).read()  # type: ignore[union-attr]
    config["config"]["Entrypoint"] = [PROGRAM_ENTRYPOINT]
    config["config"]["Cmd"] = []
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    new_manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out.with_suffix(".tmp"), "w") as archive:
        for name, data in ((config_name, config_bytes), (layer_name, layer), ("manifest.json", new_manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, _bytes_io(data))
    out.with_suffix(".tmp").rename(out)
    return out


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


@dataclass
class ProgramGpustack:
    """What the emulated nodes need so that the program's own `docker run` of GPUStack's image
    starts the real GPUStack 2.x: that image on every node (the runtime image with
    program_entrypoint), the worker deployer's images, and the server's database on node0.
    `container_extras()` is what the stand-in docker plugin adds to the program's GPUStack containers
    (the sandbox mapping, emulator/userpath.py write_sandbox)."""

    cluster: Cluster
    image: str
    container_name: str
    venv: Path = VENV
    gs: GpustackOnCluster | None = None

    def arrange(self) -> None:
        runtime = self.cluster.state_dir / "image" / "runtime.tar"
        archive = program_image_archive(runtime, self.image, self.cluster.state_dir / "image" / "gpustack-program.tar")
        for node in self.cluster.nodes:
            NodeRoot(node.holder_pid).write_if_changed(PROGRAM_ENTRYPOINT, program_entrypoint(self.venv).encode(),
                                                       0o755)
            got = node.exec(["docker", "load", "-i", str(archive)], timeout=300)
            if got.returncode != 0:
                raise ClusterError(f"{node.name}: docker load of {self.image} failed: {got.stderr.strip()}")
            load_worker_images(self.cluster, node, [MINDIE_RUNNER_IMAGE])
        self.gs = GpustackOnCluster(self.cluster, self.cluster.nodes[0], self.venv)
        self.gs.start_database()

    def container_extras(self) -> dict:
        """Mounts and env (values may name the node as {host}) for containers of self.image."""
        return {"mounts": [f"{self.venv}:{self.venv}:ro", f"{PROGRAM_ENTRYPOINT}:{PROGRAM_ENTRYPOINT}:ro"],
                "env": {**WORKER_ENV, "GPUSTACK_RUNTIME_DEPLOY_MIRRORED_DEPLOYMENT": "true",
                        "GPUSTACK_RUNTIME_DEPLOY_MIRRORED_NAME": self.container_name,
                        "ASCEMU_NODE_ADDRESS": "{host}", "ASCEMU_GPUSTACK_DATABASE_URL": DATABASE_URL}}

    def stop(self) -> None:
        if self.gs is not None:
            self.gs.stop_all()
