"""A stack on the emulated cluster, run exactly as a user runs it.

The real `pulumi` CLI (tools/pulumi-toolchain.sh) drives every rollout, with
a file backend and passphrase secrets, on a copy of the project. The two
resource plugins that cannot be had here are the test stand-ins of
emulator/plugins (docs/standin-plugins.md), put on PATH with their guard
variable by `environment()`; nothing else stands in for the engine.

A person does the same by hand (emulator/README.md):

    python -m emulator up --nodes 2
    eval "$(python -m emulator env)"
    pulumi stack select --create tp16-vllm-mindspore
    python -m emulator configure --stack tp16-vllm-mindspore
    pulumi preview --diff && pulumi up --yes

`configure` sets only what names the machines (node hosts, hostnames, host
keys and device IPs, the model path, the SSH key as a secret) with `pulumi config
set-all --path` / `config set --secret`; every other setting is the stack's
own. Tests drive the same commands through `PulumiRollout`.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLCHAIN = REPO_ROOT / "tools" / "pulumi-toolchain.sh"
# What a user's clone holds that the program needs (no tests, no emulator).
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "ascend_inference", "components", "stacks")
# The passphrase of the emulator's throwaway stacks: they hold only the
# emulator's own per-cluster key.
PASSPHRASE = "emulated-cluster"
MODEL_FIXTURE = "/data/models/deepseek-r1"
Log = Callable[[str], None]


class UserPathError(RuntimeError):
    """A step of the user path failed for a reason of the harness, not of the stack."""


# --------------------------------------------------------------- environment

def toolchain_bin() -> Path:
    """The bin dir of the pinned `pulumi` CLI and language host (built once, then cached)."""
    done = subprocess.run(["bash", str(TOOLCHAIN)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserPathError(f"tools/pulumi-toolchain.sh failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def cache_dir() -> Path:
    return Path(os.environ.get("ASCEND_INFERENCE_CACHE", Path.home() / ".cache" / "ascend-inference"))


# The pip of the program's venv. The language host runs `python -m pip list -v --format
# json` in it at every operation (pulumi-language-python v3.68.0 `determinePulumiPackages`):
# 0.28 s of CPU with this pip, 0.57 s with Python 3.11's bundled 23.2.1 (docs/testing.md).
PROGRAM_VENV_PIP = "pip==26.3"


def program_venv() -> Path:
    """The project's runtime venv (`virtualenv: venv` in Pulumi.yaml), made once per
    requirements.txt outside the clone and shared by every copy of the project."""
    import hashlib
    import sys

    requirements = (REPO_ROOT / "requirements.txt").read_bytes() + PROGRAM_VENV_PIP.encode()
    venv = cache_dir() / f"program-venv-{hashlib.sha256(requirements).hexdigest()[:12]}"
    if (venv / ".complete").exists():
        return venv
    # Test workers start side by side on a cold cache: the first makes the venv while
    # the others wait on the lock, then find it complete (without the lock a second
    # worker removed the first one's half-made venv under it).
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", PROGRAM_VENV_PIP], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", "-r", str(REPO_ROOT / "requirements.txt")], check=True)
            (venv / ".complete").touch()
    return venv


def sandbox_file(cluster) -> Path:
    return Path(cluster.state_dir) / "docker-sandbox.json"


def write_sandbox(cluster, by_image: dict | None = None) -> Path:
    """The emulator's sandbox mapping for the docker stand-in (docs/standin-plugins.md,
    "Sandbox mapping"): no `--privileged` here, the base mounts every container needs,
    the runtime image that stands in for every engine image (no registry), and the
    extra mounts/env of containers of a given image (GPUStack's: emulator/gpustack.py)."""
    from emulator import image as imagelib

    args = imagelib.base_docker_args()
    mapping = {"extra_mounts": [args[i + 1] for i, a in enumerate(args) if a == "-v"],
               "privileged_caps": imagelib.privileged_substitute()["docker_run_args"],
               "runtime_image": imagelib.IMAGE,
               "by_image": by_image or {}}
    path = sandbox_file(cluster)
    path.write_text(json.dumps(mapping, indent=1, sort_keys=True))
    return path


def environment(cluster, *, backend_dir: Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user (or a test) runs `pulumi` in against `cluster`: the
    stand-in plugins on PATH with their guard variable, the pinned CLI, the cluster's
    `ssh` wrapper (docker's ssh:// transport runs the system ssh; on a real control
    host that is the user's own ssh with the key in its agent), a file backend and
    the test passphrase. None of the caller's PULUMI_ variables leak in."""
    from emulator import plugins

    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if not k.startswith("PULUMI_")}
    state = Path(cluster.state_dir)
    backend_dir = backend_dir or state / "pulumi-backend"
    backend_dir.mkdir(parents=True, exist_ok=True)
    # The stand-ins first (none with ASCEND_INFERENCE_REAL_PLUGINS=1: then the
    # real plugins installed in PULUMI_HOME or on PATH run the same steps).
    path = os.pathsep.join([str(toolchain_bin()), str(cluster.bin_dir), base.get("PATH", "")])
    env.update({"PATH": path, **plugins.environment(path)})
    env.update({
        "PULUMI_BACKEND_URL": f"file://{backend_dir}",
        "PULUMI_HOME": str(backend_dir.parent / (backend_dir.name + "-home")),
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "ASCEMU_DOCKER_SANDBOX": str(sandbox_file(cluster)),
        "NO_COLOR": "1",
    })
    if not sandbox_file(cluster).exists():
        write_sandbox(cluster)
    return env


def export_lines(env: dict[str, str], keys: Sequence[str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(env[k])}" for k in keys)


# ---------------------------------------------------------------- configure

def machine_settings(loaded: LoadedStack, cluster, *, model_path: str = MODEL_FIXTURE,
                     node_count: int | None = None) -> dict[str, str]:
    """`--path` key -> value for what names the machines; everything else stays the stack's.
    `node_count`: the stack's nodes once its last ones are removed (PulumiRollout `nodes`)."""
    stack_nodes = len(loaded.spec.nodes) if node_count is None else node_count
    if len(cluster.nodes) != stack_nodes:
        raise UserPathError(f"stack {loaded.name} has {stack_nodes} nodes and the emulated cluster "
                            f"{len(cluster.nodes)}: bring up a cluster of that size "
                            f"(python -m emulator up --nodes {stack_nodes})")
    settings: dict[str, str] = {}
    declares_device_ips = bool(loaded.spec.profile.network.device_ips)

    for i, node in enumerate(cluster.nodes):
        settings[f"{NAMESPACE}:nodes[{i}].host"] = node.address
        settings[f"{NAMESPACE}:nodes[{i}].hostname"] = node.hostname
        # The node's real sshd host key, pinned as `python -m ascendctl hostkeys --write` would.
        settings[f"{NAMESPACE}:nodes[{i}].host_key"] = node_host_key(node)
        if declares_device_ips:
            # A profile without a fabric (300I Duo) has none to declare.
            for d, ip in enumerate(node.device_ips):
                settings[f"{NAMESPACE}:nodes[{i}].device_ips[{d}]"] = ip
    settings[f"{NAMESPACE}:model.path"] = model_path
    engine = loaded.spec.engine
    if getattr(engine, "mindformers_model_config", None) and not getattr(engine, "write_mindformers_yaml", True):
        # Runbook 000's yaml path is a placeholder for a MindFormers checkout,
        # as its model path is: point it at the predict yaml the emulator's
        # image ships (container-check refuses a path that is not there).
        from emulator.image import MINDFORMERS_YAML

        settings[f"{NAMESPACE}:engine.mindformers_model_config"] = MINDFORMERS_YAML
    return settings


def configure_commands(loaded: LoadedStack, cluster, *, model_path: str = MODEL_FIXTURE,
                       node_count: int | None = None) -> list[tuple[list[str], str | None]]:
    """The `pulumi config` commands (argv, stdin) `python -m emulator configure` runs."""
    settings = machine_settings(loaded, cluster, model_path=model_path, node_count=node_count)
    set_all = ["pulumi", "config", "set-all", "--path"]
    for key, value in settings.items():
        set_all += ["--plaintext", f"{key}={value}"]
    key_name = f"{NAMESPACE}:{loaded.spec.ssh.private_key_secret}"
    commands = [(set_all, None),
                (["pulumi", "config", "set", "--secret", key_name], Path(cluster.ssh_key_path).read_text())]
    import secrets

    for engine_key in loaded.spec.engine_plugin.secret_keys(loaded.spec):
        # The serving API key and Ray's token (docs/security.md#endpoints): fresh ones per configure.
        commands.append((["pulumi", "config", "set", "--secret", f"{NAMESPACE}:{engine_key}"],
                         secrets.token_urlsafe(32)))
    return commands


# ------------------------------------------------------------------ reports

@dataclass
class Action:
    resource: str
    kind: str       # create | replace | update | same | delete
    seconds: float = 0.0
    node: str = ""


@dataclass
class Report:
    """What one `pulumi` operation did, read from its engine event log."""

    actions: list[Action] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    output: str = ""
    # The node checks (invokes: no resources, no events) that started, by name, in order.
    checks: list[str] = field(default_factory=list)

    def did(self, kind: str) -> list[str]:
        return [a.resource for a in self.actions if a.kind == kind]

    def changed(self) -> dict[str, str]:
        return {a.resource: a.kind for a in self.actions if a.kind != "same"}

    def failed_step_output(self) -> list[str]:
        """What a failed step's script printed, first line first, after pulumi-command's
        `Process exited with status N: running "<the command, Go-quoted on one line>":`
        (`bash -s` for a step whose script goes on stdin: components/common.py SCRIPT_ON_STDIN)."""
        if self.error is None:
            raise AssertionError("the rollout did not fail")
        head, *printed = self.error.splitlines()
        if not re.fullmatch(r'Process exited with status \d+: running ".*":', head):
            raise AssertionError(f"not a failed step's text: {self.error}")
        return printed or [""]


# The engine's step ops (apitype.OpType) as the kinds a test asks about.
_KIND = {"create": "create", "update": "update", "delete": "delete", "same": "same", "read": "same",
         "refresh": "same", "replace": "replace", "create-replacement": "replace", "delete-replaced": "replace",
         "discard": "delete", "discard-replaced": "replace"}
_RANK = {"same": 0, "update": 1, "delete": 2, "create": 3, "replace": 4}


def read_events(path: Path) -> list[dict]:
    """The engine events of one `--event-log` file, in order. A file not written yet
    reads as none, and a line the engine is still writing (or was cut writing) is
    left out: the log is read while the CLI runs, and after it was killed."""
    events = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def report_from_events(path: Path, *, returncode: int, output: str, seconds: float) -> Report:
    """The custom resources' steps of one operation (components, the stack and the
    providers left out), each resource once with its strongest op."""
    kinds: dict[str, str] = {}
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    errors: list[str] = []
    for event in read_events(path):
        for key in ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent"):
            body = event.get(key)
            if not body or body.get("planning"):
                continue
            meta = body["metadata"]
            state = meta.get("new") or meta.get("old") or {}
            typ = meta.get("type", "")
            if not state.get("custom", False) or typ.startswith("pulumi:providers:"):
                continue
            name = meta["urn"].rsplit("::", 1)[-1]
            kind = _KIND.get(meta.get("op", ""), "same")
            if _RANK[kind] >= _RANK.get(kinds.get(name, "same"), 0):
                kinds[name] = kind
            if key == "resourcePreEvent":
                started.setdefault(name, event.get("timestamp", 0))
            else:
                took[name] = event.get("timestamp", 0) - started.get(name, event.get("timestamp", 0))
        diag = event.get("diagnosticEvent")
        if diag and diag.get("severity") == "error":
            errors.append(diag.get("message", "").strip())
    report = Report(actions=[Action(n, k, float(took.get(n, 0))) for n, k in kinds.items()],
                    seconds=round(seconds, 2), output=output)
    if returncode != 0:
        report.error = "\n".join(e for e in errors if e) or output[-4000:] or f"pulumi exited {returncode}"
    return report


# ----------------------------------------------------------------- rollouts

@dataclass
class RunningOperation:
    """A `pulumi` operation started by PulumiRollout.start: its argv after `pulumi`,
    the process, its engine event log and its console output (stdout and stderr)."""

    args: tuple[str, ...]
    process: subprocess.Popen
    events: Path
    output: Path
    started: float


class PulumiRollout:
    """One stack of the project rolled out onto `cluster` with the real CLI.

    The project is copied into `workdir` (`pulumi config set` writes the stack
    file), with its own file backend; `up(changes)` applies `--set`-style
    changes with `pulumi config set --path` and reverts the ones a later call
    leaves out, so each call states the whole difference from the stack.
    `nodes`: roll out only the stack's first `nodes` nodes, the others removed from the
    stack file (`pulumi config rm --path`, as a user drops nodes); the changes of each
    `up` then make the rest of the stack fit them (e.g. a smaller `parallel.dp`)."""

    def __init__(self, cluster, stack: str, workdir: Path, *, log: Log = print, model_path: str = MODEL_FIXTURE,
                 settings: Sequence[str] = (), nodes: int | None = None):
        """`settings`: `KEY=VALUE` edits of the stack a user makes before `configure`, with
        `pulumi config set --path` (e.g. `nodes[2].name=node2` for each node a cluster larger
        than the stack's has): kept for the whole rollout, unlike `up`'s changes."""
        self.cluster = cluster
        self.log = log
        self.base = load_stack(stack)
        self.stack = self.base.name
        self.workdir = Path(workdir)
        self.project = self.workdir / "project"
        self.events = self.workdir / "events"
        self.events.mkdir(parents=True, exist_ok=True)
        copy_project(self.project)
        self.env = environment(cluster, backend_dir=self.workdir / "backend")
        self.checks_log = self.workdir / "checks.log"
        self.env["PATH"] = f"{check_recorder(cluster, self.workdir / 'bin', self.checks_log)}:{self.env['PATH']}"
        # The project's venv active, as the README's user path has it (`. venv/bin/activate`):
        # the pinned language host runs the program under the first python3 on PATH. The
        # stand-in plugins keep the tests' Python (plugins.PYTHON_VARIABLE).
        venv = self.project / "venv"
        self.env.update({"PATH": f"{venv / 'bin'}:{self.env['PATH']}", "VIRTUAL_ENV": str(venv)})
        self._applied: dict[str, str | None] = {}   # changed key -> its value before (None: absent)
        self._ops = 0
        self.last_events: Path | None = None
        self.ok("stack", "select", "--create", self.stack)
        for index in reversed(range(nodes if nodes is not None else len(self.base.spec.nodes),
                                    len(self.base.spec.nodes))):
            self.ok("config", "rm", "--path", f"{NAMESPACE}:nodes[{index}]")
        if settings:
            self.base = self.edited(settings)
        for argv, stdin in configure_commands(self.base, cluster, model_path=model_path, node_count=nodes):
            self.ok(*argv[1:], stdin=stdin)
        # What a registry would hold for the stack: the emulator's runtime image under
        # its name, with its pinned engine version, or saved to its image tar.
        provide_engine_version(cluster, self.base, log)
        provide_image_tar(cluster, self.base, log)

    def edited(self, settings: Sequence[str]) -> LoadedStack:
        """The stack after `pulumi config set --path` of each setting (the copy's stack
        file), as configure then reads it."""
        from ascendctl.preview.config import apply_change
        from ascendctl.preview.stack import loaded_with_config

        config = self.base.raw_config
        for setting in settings:
            key, _, value = setting.partition("=")
            self.ok("config", "set", "--path", f"{NAMESPACE}:{key}", value)
            config = apply_change(config, setting, self.base.file)
        return loaded_with_config(self.base, config)

    # --- running the CLI -----------------------------------------------------

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["pulumi", *args, "--non-interactive"], cwd=self.project, env=self.env, input=stdin,
                              capture_output=True, text=True)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        if done.returncode != 0:
            raise UserPathError(f"pulumi {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def operation(self, *args: str) -> Report:
        """`pulumi <args> --event-log FILE`, reported. The CLI registers `--event-log`
        (its engine events as JSON lines) only with PULUMI_DEBUG_COMMANDS set."""
        return self.finish(self.start(*args))

    def start(self, *args: str) -> RunningOperation:
        """`pulumi <args>` started as `operation` runs it, not waited for: a test
        reads `events` while it runs and may signal `process` (tests/emulated/test_recovery.py)."""
        self._ops += 1
        log_file = self.events / f"{self._ops:03d}-{args[0]}.jsonl"
        self.last_events = log_file  # the engine's events of this operation, for a test to read
        output = self.events / f"{self._ops:03d}-{args[0]}.out"
        self.checks_log.write_text("")
        with open(output, "w") as out:
            process = subprocess.Popen(["pulumi", *args, "--non-interactive", "--event-log", str(log_file)],
                                       cwd=self.project, env={**self.env, "PULUMI_DEBUG_COMMANDS": "true"},
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True)
        return RunningOperation(args, process, log_file, output, time.monotonic())

    def finish(self, running: RunningOperation) -> Report:
        """Wait for a started operation to end and report it. Interrupted (the test's
        time limit, a Ctrl-C), the CLI is killed, so that it does not go on changing the
        nodes after its test has ended."""
        try:
            returncode = running.process.wait()
        except BaseException:
            running.process.kill()
            running.process.wait()
            raise
        report = report_from_events(running.events, returncode=returncode, output=running.output.read_text(),
                                    seconds=time.monotonic() - running.started)
        report.checks = self.checks_log.read_text().split()
        changed = report.changed()
        self.log(f"pulumi {' '.join(running.args)}: {'FAILED' if report.error else 'done'} in {report.seconds:.1f}s, "
                 f"{len(changed)} changed: {json.dumps(changed, sort_keys=True)}")
        return report

    # --- the user's commands -----------------------------------------------

    def set_changes(self, changes: Sequence[str] | None) -> None:
        wanted = dict(change.split("=", 1) for change in changes or [])
        for key in [k for k in self._applied if k not in wanted]:
            before = self._applied.pop(key)
            if before is None:
                self.ok("config", "rm", "--path", f"{NAMESPACE}:{key}")
            else:
                self.ok("config", "set", "--path", f"{NAMESPACE}:{key}", before)
        for key, value in wanted.items():
            if key not in self._applied:
                got = self.run("config", "get", "--path", f"{NAMESPACE}:{key}")
                self._applied[key] = got.stdout.strip() if got.returncode == 0 else None
            self.ok("config", "set", "--path", f"{NAMESPACE}:{key}", value)

    def up(self, changes: Sequence[str] | None = None, *extra: str) -> Report:
        self.set_changes(changes)
        return self.operation("up", "--yes", *extra)

    def preview(self, *extra: str) -> Report:
        return self.operation("preview", *extra)

    def refresh(self) -> Report:
        return self.operation("refresh", "--yes")

    def destroy(self) -> Report:
        return self.operation("destroy", "--yes")

    def resources(self) -> dict[str, dict]:
        """name -> {"type", "id", "outputs"} of the custom resources in the state (secrets shown)."""
        state = json.loads(self.ok("stack", "export", "--show-secrets"))
        found = {}
        for r in state.get("deployment", {}).get("resources") or []:
            if r.get("custom") and not r["type"].startswith("pulumi:providers:"):
                found[r["urn"].rsplit("::", 1)[-1]] = {"type": r["type"], "id": r.get("id", ""),
                                                       "outputs": r.get("outputs") or {}}
        return found

    def outputs(self, name: str) -> dict:
        return self.resources()[name]["outputs"]

    def stack_output(self, name: str):
        """A stack output as JSON (`pulumi stack output NAME --json`), secrets shown."""
        return json.loads(self.ok("stack", "output", name, "--json", "--show-secrets"))

    def failed_steps(self) -> list[str]:
        """The resources whose step failed in the latest operation, in order (an error
        diagnostic naming its URN, or a failed-op event): under the real engine
        Report.error is text; this says which step it came from."""
        names: list[str] = []
        for event in read_events(self.last_events) if self.last_events else []:
            urn = ""
            if (diag := event.get("diagnosticEvent")) and diag.get("severity") == "error":
                urn = diag.get("urn", "")
            elif failed := event.get("resOpFailedEvent"):
                urn = failed.get("metadata", {}).get("urn", "")
            if not urn or urn.split("::")[2].endswith("pulumi:pulumi:Stack"):
                continue  # the program's own failure, not a step's
            name = urn.rsplit("::", 1)[-1]
            if name not in names:
                names.append(name)
        return names

    # --- what the emulator provides beside the stack ---------------------------

    def arrange_gpustack(self):
        """For a GPUStack stack: the nodes get what the program's own GPUStack containers need
        (emulator/gpustack.py ProgramGpustack) and the docker stand-in adds its mounts and env
        to them (the sandbox mapping). Returns the arrangement; its stop() ends its database."""
        from emulator import gpustack

        c = self.base.spec.container
        arranged = gpustack.ProgramGpustack(self.cluster, c.image, c.name)
        arranged.arrange()
        write_sandbox(self.cluster, by_image={c.image: arranged.container_extras()})
        return arranged


def check_recorder(cluster, bin_dir: Path, log: Path) -> Path:
    """A directory holding an `ssh` that appends the name of the node check it
    runs for (the check's environment names it: components/common.py CHECK_ENV)
    to `log`, then is the cluster's `ssh`. Checks are invokes, which leave no
    trace in the engine's events; this is how a test sees which ones ran."""
    from components.common import CHECK_ENV

    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "ssh"
    record = f'printf \'%s\\n\' "${CHECK_ENV}" >> {shlex.quote(str(log))}'
    wrapper.write_text("#!/bin/sh\n"
                       f'if [ -n "${{{CHECK_ENV}:-}}" ]; then {record}; fi\n'
                       f'exec {shlex.quote(str(Path(cluster.bin_dir) / "ssh"))} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


def copy_project(dest: Path) -> None:
    """What a user's clone holds, and the project's venv beside it (as `venv`)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "venv").exists():
        (dest / "venv").symlink_to(program_venv())
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest / name)


# ------------------------------------------------ what the emulator provides

def node_host_key(node) -> str:
    """`type base64` of the emulated node's sshd host key, as the node holds it now."""
    return " ".join((Path(node.dir) / "run" / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def provide_engine_version(cluster, loaded: LoadedStack, log: Callable[[str], None]) -> None:
    """A stack that pins another engine version than the runtime image
    holds (tp8-pp2-300iduo's vllm-mindspore 0.4.0) gets, on each node
    where its image name is absent, the runtime image built with that
    version under that name: what a registry would give it. The image
    step then finds the name and leaves it; faults that swap the runtime
    image (`image_engine_version`) move only the runtime image's names."""
    from emulator import image as imagelib

    spec = loaded.spec
    package = spec.engine_plugin.image_package
    key = package.dist or package.label.lower()
    version = spec.container.engine_version
    if version is None or version == imagelib.ENGINE_VERSIONS.get(key) or spec.container.image_tar:
        return
    image = spec.container.image
    for node in cluster.nodes:
        docker = ["docker", "-H", "unix:///run/docker.sock"]
        if node.exec([*docker, "image", "inspect", image], timeout=120).returncode == 0:
            continue
        safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{image}-{version}")
        archive = node.run_dir.parent / f"image-{safe}.tar"
        if not archive.exists():
            imagelib.build_image(archive, image, imagelib.Variant(engine_version=version))
        done = node.exec([*docker, "load", "-i", str(archive)], timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{node.name}: could not load {image} ({version}): {done.stderr.strip()}")
        log(f"  emulator: {image} on {node.name} holds {package.label} {version} (the stack's version)")


def provide_image_tar(cluster, loaded: LoadedStack, log: Callable[[str], None]) -> None:
    """Runbook 001 loads its image from a tar on each node. The emulator
    saves its runtime image under the stack's image name to that path (and
    removes the tag), so the program's own `docker load -i` runs for real."""
    import shlex

    c = loaded.spec.container
    if not c.image_tar or c.image_url:
        return  # with image_url the nodes fetch it themselves
    image, tar = shlex.quote(c.image), shlex.quote(c.image_tar)
    for node in cluster.nodes:
        script = (f"test -s {tar} || {{ mkdir -p $(dirname {tar}) && docker tag ascemu/runtime:latest {image}"
                  f" && docker save -o {tar} {image} && docker rmi {image} >/dev/null; }}")
        done = cluster.ssh(node.name, script, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{node.name}: could not place {c.image_tar}: {done.stderr.strip()}")
        log(f"  emulator: {c.image_tar} on {node.name} holds {c.image} (the runtime image; no registry here)")
