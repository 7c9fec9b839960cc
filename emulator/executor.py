"""Run the Pulumi program for real against an emulated cluster — test tooling.

There is no Pulumi engine on the development machines, so this plays the
engine's part: the program runs under the SDK's mocks (ascendctl.preview.recorder), and
every custom resource the program registers is *performed* the way its
provider would, in the order the SDK registers them (a resource is registered
only after the resources it depends on have returned):

  command:remote:Command       create / update / delete scripts over real SSH
                               (the connection the resource carries, key and all)
  docker:index/container:...   `docker run` over SSH on the node, from the same
                               ContainerSpec mapping `render` uses
  docker:index/remoteImage:... no registry here: the emulator's runtime image is
                               tagged with the stack's image name
  pulumi:providers:docker      nothing to do
  pulumi-python:dynamic:...    the resource's own provider (unpickled from its
                               `__provider` input, as Pulumi's dynamic-provider
                               host does): diff, then create / update / delete,
                               run here on the control host

State (ids, outputs, an input digest, and what is needed to undo each step) is
kept in a JSON file, so a second `up` compares and skips unchanged resources,
replaces changed ones (undo first, as `delete_before_replace` asks), deletes
resources no longer in the program, and `destroy` undoes everything in reverse
order. Users run the real Pulumi CLI; nothing here is a product path.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ascend_inference.container import spec_from_pulumi_inputs

Log = Callable[[str], None]

# The emulator's image stands in for every engine image (no registry here).
RUNTIME_IMAGE = "ascemu/runtime:latest"


class StepFailed(RuntimeError):
    """A remote step exited non-zero: names the resource, the node and the cause."""

    def __init__(self, resource: str, host: str, code: int, stderr: str):
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        super().__init__(f"{resource} failed on {host} (exit {code}): {tail}")
        self.resource, self.host, self.code, self.stderr = resource, host, code, stderr


@dataclass
class Action:
    resource: str
    kind: str       # create | replace | update | same | delete
    seconds: float
    node: str = ""


@dataclass
class Report:
    """Resources only in `actions`; the node checks (invokes, never a change)
    that ran in `checks`, by name, in the order they finished."""

    actions: list[Action] = field(default_factory=list)
    seconds: float = 0.0
    error: BaseException | None = None
    checks: list[str] = field(default_factory=list)

    def did(self, kind: str) -> list[str]:
        return [a.resource for a in self.actions if a.kind == kind]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Executor:
    """Performs a stack's resources on an emulated cluster.

    `extra_mounts`: bind mounts every container also gets (the emulator's
    host /usr, /lib, Python... so Python, Ray and the stand-in engine exist
    inside); `privileged_caps`: what `--privileged` is mapped to where the
    sandbox refuses it."""

    def __init__(self, state_file: Path, *, extra_mounts: list[str] = (), privileged_caps: list[str] | None = None,
                 ssh_options: list[str] = (), log: Log = print, workers: int = 16):
        self.state_file = Path(state_file)
        self.extra_mounts = list(extra_mounts)
        self.privileged_caps = privileged_caps
        self.ssh_options = list(ssh_options)
        self.log = log
        self.workers = workers
        self.default_key = ""
        # The environment of local commands (the node checks' system ssh).
        self.local_env: dict[str, str] = dict(os.environ)
        self._providers: dict[str, str] = {}
        self._lock = threading.Lock()
        # image name -> {"mounts": [...], "env": {name: value, "{host}" = the node}}: what the
        # emulator adds to the program's containers of that image (GPUStack's: emulator/gpustack.py).
        self.container_extras: dict[str, dict] = {}
        # The node checks' stdout of the latest run, by check name (not state:
        # a check is read again at every run).
        self.check_outputs: dict[str, str] = {}
        self._report: Report | None = None
        self.state = self._load()

    # --- state -------------------------------------------------------------

    def _load(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {"resources": {}, "order": []}

    def _save(self) -> None:
        # Atomic: a crash mid-run leaves the previous complete state.
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)

    def _record(self, key: str, entry: dict | None) -> None:
        with self._lock:
            if entry is None:
                self.state["resources"].pop(key, None)
                self.state["order"] = [k for k in self.state["order"] if k != key]
            else:
                self.state["resources"][key] = entry
                if key not in self.state["order"]:
                    self.state["order"].append(key)
            self._save()

    # --- running the program ----------------------------------------------

    def up(self, program: Callable[[], None], config: dict, *, stack: str, project: str = "ascend-inference") -> Report:
        from ascendctl.preview.recorder import record_graph

        report = Report()
        seen: set[str] = set()
        start = time.monotonic()

        def perform(args) -> dict:
            if not args.custom:
                return {}
            key = f"{args.typ}::{args.name}"
            seen.add(key)
            t0 = time.monotonic()
            kind, entry = self._apply(key, args)
            action = Action(args.name, kind, round(time.monotonic() - t0, 2), entry.get("host", ""))
            with self._lock:
                report.actions.append(action)
            if kind != "same":
                self.log(f"  {kind:<8} {args.name:<28} {action.seconds:6.1f}s")
            return {"__id__": entry["id"], **entry["outputs"]}

        self.log(f"rollout of stack {stack} onto the emulated cluster")
        self._report = report
        try:
            record_graph(program, config, project=project, stack=stack, outputs_for=perform, call_for=self._invoke,
                         rpc_workers=self.workers, timeout=3600)
            # Resources the program no longer declares: undo, newest first.
            for key in reversed(list(self.state["order"])):
                if key not in seen:
                    t0 = time.monotonic()
                    self._delete(key)
                    report.actions.append(Action(key.split("::")[-1], "delete", round(time.monotonic() - t0, 2)))
                    self.log(f"  delete   {key.split('::')[-1]}")
        except BaseException as error:  # the rollout stops here; state keeps what was done
            report.error = error
        finally:
            self._report = None
        self._forget_keys_when_empty()
        report.seconds = round(time.monotonic() - start, 2)
        changed = [a for a in report.actions if a.kind != "same"]
        self.log(f"{'failed' if report.error else 'done'} in {report.seconds:.1f}s: "
                 f"{len(changed)} changed, {len(report.actions) - len(changed)} unchanged")
        return report

    def destroy(self) -> Report:
        report = Report()
        start = time.monotonic()
        self.log("destroy: undoing every step, newest first")
        for key in reversed(list(self.state["order"])):
            t0 = time.monotonic()
            try:
                self._delete(key)
            except StepFailed as error:
                report.error = error
                self.log(f"  delete   {key.split('::')[-1]} FAILED: {error}")
                break
            report.actions.append(Action(key.split("::")[-1], "delete", round(time.monotonic() - t0, 2)))
            self.log(f"  delete   {key.split('::')[-1]}")
        self._forget_keys_when_empty()
        report.seconds = round(time.monotonic() - start, 2)
        return report

    def refresh(self) -> Report:
        """As `pulumi refresh`: each dynamic resource's provider reads what is there now. Changed
        outputs replace the recorded ones (and the next `up` diffs the program against them instead
        of skipping the unchanged inputs); a resource its provider no longer finds leaves the state.
        Remote commands and containers are not read (pulumi-command's read returns the state as is)."""
        report = Report()
        start = time.monotonic()
        for key in list(self.state["order"]):
            entry = self.state["resources"][key]
            if entry["type"] != DYNAMIC:
                continue
            read = _dynamic_provider(entry["provider"]).read(entry["id"], entry["outputs"])
            if read.id is None:
                self._record(key, None)
                report.actions.append(Action(entry["name"], "delete", 0.0))
                self.log(f"  gone     {entry['name']}")
            elif _digest(read.outs) != _digest(entry["outputs"]):
                self._record(key, {**entry, "outputs": read.outs, "digest": ""})
                report.actions.append(Action(entry["name"], "update", 0.0))
                self.log(f"  refresh  {entry['name']}: changed outside the program")
            else:
                report.actions.append(Action(entry["name"], "same", 0.0))
        report.seconds = round(time.monotonic() - start, 2)
        return report

    # --- invokes ------------------------------------------------------------

    def _invoke(self, args) -> dict:
        """pulumi-command's `local.run` (the node checks), as its provider runs it
        (local/commandOutputs.go `run`): the interpreter argv plus the command, stdin,
        the environment added to this process's (`local_env`: the cluster's ssh
        wrapper first on PATH), stdout and stderr with one trailing newline cut, and
        on failure `exit status N: running "<command>":` and the output."""
        if args.token != "command:local:run":
            raise NotImplementedError(f"the emulator's executor cannot invoke {args.token}")
        inputs = _reveal(args.args)
        argv = [*(inputs.get("interpreter") or ["/bin/sh", "-c"]), inputs["command"]]
        env = {**self.local_env, **(inputs.get("environment") or {})}
        t0 = time.monotonic()
        done = subprocess.run(argv, input=inputs.get("stdin") or "", capture_output=True, text=True, env=env,
                              timeout=3600)
        name = (inputs.get("environment") or {}).get("ASCEND_INFERENCE_CHECK", inputs["command"])
        if done.returncode != 0:
            self.log(f"  check    {name:<28} {time.monotonic() - t0:6.1f}s  failed")
            raise RuntimeError(f"exit status {done.returncode}: running {json.dumps(inputs['command'])}:\n"
                               f"{done.stdout}{done.stderr}")
        stdout = done.stdout.removesuffix("\n")
        with self._lock:
            self.check_outputs[name] = stdout
            if self._report is not None:
                self._report.checks.append(name)
        return {"stdout": stdout, "stderr": done.stderr.removesuffix("\n")}

    # --- per resource type ---------------------------------------------------

    def _apply(self, key: str, args) -> tuple[str, dict]:
        # A provider sees secrets in clear; so does this stand-in for one.
        inputs = _reveal(args.inputs)
        digest = _digest(inputs)
        old = self.state["resources"].get(key)
        if args.typ.startswith("pulumi:providers:"):
            with self._lock:
                self._providers[args.name] = inputs.get("host", "")
        if old and old["digest"] == digest:
            return "same", old
        typ = args.typ
        if typ == "command:remote:Command":
            # As pulumi-command: only `triggers` replace (the program puts the
            # connection's host, port and user there); anything else updates.
            replace = old is not None and old.get("triggers_digest") != _digest(inputs.get("triggers"))
            if old and replace:
                self._delete(key)
            kind = "create" if old is None or replace else "update"
            script = inputs.get("create") if kind == "create" else (inputs.get("update") or inputs.get("create"))
            stdout, stderr = self._ssh(args.name, inputs["connection"], script or "true", inputs.get("stdin"))
            conn = _public_connection(inputs["connection"])
            # pulumi-command mints an id on create only; an update keeps it.
            resource_id = old["id"] if kind == "update" else f"{args.name}-{digest[:12]}"
            entry = {"id": resource_id, "digest": digest, "type": typ, "name": args.name,
                     "host": conn["host"], "connection": conn, "delete": inputs.get("delete"),
                     "triggers_digest": _digest(inputs.get("triggers")),
                     "outputs": {"stdout": stdout, "stderr": stderr}}
            # The undo needs the key again at destroy time; keep its path only.
            entry["key_file"] = self._key_file(inputs["connection"])
            self._record(key, entry)
            return ("replace" if old and replace else kind), entry
        if typ == "docker:index/container:Container":
            node = self._node_of(args)
            if old:
                self._delete(key)
            cid = self._run_container(args.name, node, inputs)
            entry = {"id": cid, "digest": digest, "type": typ, "name": args.name, "host": node["host"],
                     "connection": node, "container": inputs["name"], "outputs": {}}
            self._record(key, entry)
            return ("replace" if old else "create"), entry
        if typ == "docker:index/remoteImage:RemoteImage":
            node = self._node_of(args)
            name = inputs["name"]
            tag = (f"docker image inspect {shlex.quote(name)} >/dev/null 2>&1 || "
                   f"docker tag {RUNTIME_IMAGE} {shlex.quote(name)}; "
                   f"docker image inspect -f '{{{{.Id}}}}' {shlex.quote(name)}")
            out, _ = self._ssh(args.name, node, tag)
            entry = {"id": out.strip(), "digest": digest, "type": typ, "name": args.name, "host": node["host"],
                     "connection": node, "image_name": name, "outputs": {"imageId": out.strip(), "repoDigest": ""}}
            self._record(key, entry)
            return ("replace" if old else "create"), entry
        if typ == DYNAMIC:
            return self._apply_dynamic(key, args.name, inputs, digest, old)
        if typ.startswith("pulumi:providers:"):
            host = inputs.get("host", "")
            entry = {"id": f"{args.name}-provider", "digest": digest, "type": typ, "name": args.name,
                     "docker_host": host, "outputs": {}}
            self._record(key, entry)
            return ("replace" if old else "create"), entry
        raise NotImplementedError(f"the emulator's executor cannot perform {typ} ({args.name})")

    def _apply_dynamic(self, key: str, name: str, inputs: dict, digest: str, old: dict | None) -> tuple[str, dict]:
        """As Pulumi's engine drives a dynamic provider: `diff` against the
        last outputs, then update in place, or delete and create when it
        replaces (the program's one dynamic resource asks delete-first)."""
        provider = _dynamic_provider(inputs[DYNAMIC_PROVIDER_KEY])
        props = {k: v for k, v in inputs.items() if k != DYNAMIC_PROVIDER_KEY}
        kind = "create"
        if old is not None:
            diff = provider.diff(old["id"], old["outputs"], props)
            if not diff.changes:
                entry = {**old, "digest": digest}
                self._record(key, entry)
                return "same", entry
            kind = "replace" if diff.replaces else "update"
            if kind == "replace":
                self._delete(key)
        if kind == "update":
            assert old is not None
            resource_id, outs = old["id"], provider.update(old["id"], old["outputs"], props).outs
        else:
            created = provider.create(props)
            resource_id, outs = created.id, created.outs
        # Kept as Pulumi keeps a dynamic resource's state: its outputs (the provider's
        # read and delete need them) and the provider itself.
        entry = {"id": resource_id, "digest": digest, "type": DYNAMIC, "name": name,
                 "provider": inputs[DYNAMIC_PROVIDER_KEY], "outputs": outs}
        self._record(key, entry)
        return kind, entry

    def _node_of(self, args) -> dict:
        """The node behind a docker resource: its provider's ssh://user@host:port."""
        ref = args.provider or ""
        # Provider references look like "<urn>::<id>"; our ids are "<name>-provider".
        provider_name = ref.split("::")[-1].removesuffix("-provider") if ref else ""
        host = self._providers.get(provider_name) or ""
        if not host.startswith("ssh://"):
            raise NotImplementedError(f"{args.name}: docker provider host {host!r} is not ssh://")
        userhost, _, port = host[len("ssh://"):].rpartition(":")
        user, _, hostname = userhost.rpartition("@")
        return {"host": hostname, "user": user or "root", "port": int(port or 22), "key_file": self.default_key}

    @property
    def key_dir(self) -> Path:
        """Where the connections' private keys are written for `ssh -i`: beside the state
        file that records their paths (a delete at destroy time needs the key again), in a
        directory only root can enter, removed once the state holds no resource."""
        return self.state_file.with_name(self.state_file.name + ".keys")

    def _key_file(self, connection: dict) -> str:
        key = connection.get("privateKey")
        if not key:
            return self.default_key
        path = self.key_dir / f"key-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        if not path.exists():
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 before the key is written: never readable by others, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key if key.endswith("\n") else key + "\n")
        return str(path)

    def _forget_keys_when_empty(self) -> None:
        """No resource left to undo: no key is needed any more."""
        if not self.state["resources"]:
            shutil.rmtree(self.key_dir, ignore_errors=True)

    def _ssh(self, resource: str, connection: dict, command: str, stdin: str | None = None) -> tuple[str, str]:
        key_file = connection.get("key_file") or self._key_file(connection)
        argv = ["ssh", "-i", key_file, "-p", str(int(connection.get("port") or 22)), *self.ssh_options,
                f"{connection.get('user') or 'root'}@{connection['host']}", command]
        done = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise StepFailed(resource, connection["host"], done.returncode, done.stderr or done.stdout)
        return done.stdout, done.stderr

    def _run_container(self, resource: str, node: dict, inputs: dict) -> str:
        spec = spec_from_pulumi_inputs(inputs)
        argv = spec.docker_run_argv()
        if spec.privileged and self.privileged_caps is not None:
            # The sandbox refuses --privileged (no CAP_SYS_RESOURCE): said in emulator/README.md.
            argv = [a for a in argv if a != "--privileged=true"]
            image_at = argv.index(spec.image)
            argv[image_at:image_at] = self.privileged_caps
        image_at = argv.index(spec.image)
        extra = []
        extras = self.container_extras.get(self._image_name(spec.image), {})
        for mount in [*self.extra_mounts, *extras.get("mounts", [])]:
            extra += ["-v", mount]
        for name, value in extras.get("env", {}).items():
            extra += ["-e", f"{name}={value.replace('{host}', node['host'])}"]
        argv[image_at:image_at] = extra
        # As pulumi-docker: a container of that name already there fails the create.
        script = " ".join(shlex.quote(a) for a in argv)
        out, _ = self._ssh(resource, node, script)
        return out.strip().splitlines()[-1]

    def _image_name(self, image: str) -> str:
        """The name of an image a container gives by id (the program runs the RemoteImage's id)."""
        for entry in self.state["resources"].values():
            if entry["type"] == "docker:index/remoteImage:RemoteImage" and entry["id"] == image:
                return str(entry.get("image_name", image))
        return image

    def _delete(self, key: str) -> None:
        entry = self.state["resources"].get(key)
        if entry is None:
            return
        typ = entry["type"]
        if typ == "command:remote:Command" and entry.get("delete"):
            conn = dict(entry["connection"], key_file=entry.get("key_file") or self.default_key)
            self._ssh(entry["name"], conn, entry["delete"])
        elif typ == "docker:index/container:Container":
            self._ssh(entry["name"], entry["connection"],
                      f"docker rm -f {shlex.quote(entry['container'])} >/dev/null 2>&1 || true")
        elif typ == DYNAMIC:
            _dynamic_provider(entry["provider"]).delete(entry["id"], entry["outputs"])
        self._record(key, None)


_SECRET_SIG = "4dabf18193072939515e22adb298388d"
DYNAMIC = "pulumi-python:dynamic:Resource"
# Where the Python SDK puts a dynamic resource's pickled provider (pulumi.dynamic.dynamic.PROVIDER_KEY).
DYNAMIC_PROVIDER_KEY = "__provider"


def _dynamic_provider(serialized: str):
    """The provider object, unpickled as `python -m pulumi.dynamic` does."""
    import base64

    import dill

    return dill.loads(base64.b64decode(serialized))


def _reveal(value):
    """Inputs as a provider receives them: secret wrappers removed."""
    if isinstance(value, dict):
        if _SECRET_SIG in value:
            return _reveal(value.get("value"))
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _public_connection(connection: dict) -> dict:
    """The connection without its secret parts (what the state file keeps)."""
    return {"host": connection.get("host"), "port": int(connection.get("port") or 22),
            "user": connection.get("user") or "root"}
