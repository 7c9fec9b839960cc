"""One container spec, two renderings: the `docker run` line a runbook would
type, and the arguments of `pulumi_docker.Container`. Both come from the same
`ContainerSpec`, so what `render` shows is what `pulumi up` creates.

Pure: builds plain dicts; the Pulumi layer passes them to pulumi_docker.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The Ascend device files every runbook passes with --device.
ASCEND_CONTROL_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")


def ascend_devices(count: int) -> tuple[str, ...]:
    return tuple(f"/dev/davinci{i}" for i in range(count)) + ASCEND_CONTROL_DEVICES


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        parts = text.split(":")
        read_only = len(parts) == 3 and parts[2] == "ro"
        return cls(parts[0], parts[1], read_only)

    def flag(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.read_only else "")

    @property
    def is_named_volume(self) -> bool:
        return not self.host.startswith("/")


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    devices: tuple[str, ...]
    mounts: tuple[Mount, ...]
    shm_size: str
    privileged: bool
    ipc_host: bool
    network_host: bool = True
    restart: str = "no"
    env: tuple[tuple[str, str], ...] = ()
    entrypoint: tuple[str, ...] | None = None
    command: tuple[str, ...] = ()
    # `-it`: the runbooks keep a shell open so the container stays up.
    interactive: bool = True
    # Values in `command` that are secret (e.g. GPUStack's --token): rendered
    # as a shell variable reference, never in clear.
    secret_args: dict[str, str] = field(default_factory=dict)
    # Env variables whose value is a Pulumi secret: (NAME, config key). The
    # rendered `docker run` line passes `-e NAME` (docker then takes the value
    # from the caller's environment); the Pulumi layer adds NAME=<secret>.
    secret_env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    # `--runtime`: "ascend" for the Ascend docker runtime (GPUStack 2.x's guide);
    # None keeps docker's default runtime.
    runtime: str | None = None

    def shm_size_mb(self) -> int:
        """pulumi_docker takes shm_size in MB."""
        match = re.fullmatch(r"([0-9]+)([bkmg]?)", self.shm_size.lower())
        assert match is not None, f"shm_size {self.shm_size!r} (the spec's SIZE pattern refuses it)"
        number, unit = int(match.group(1)), match.group(2)
        factor = {"b": 1 / 2**20, "k": 1 / 1024, "": 1 / 2**20, "m": 1, "g": 1024}[unit]
        return max(1, int(number * factor))

    def docker_run_argv(self, *, reveal: dict[str, str] | None = None) -> list[str]:
        """argv of the equivalent `docker run -d`. Secret args appear as
        "$VAR" unless `reveal` maps the variable to its value (tests comparing
        the line with the program's docker.Container, tests/test_container.py)."""
        return [arg for arg, _ in self._argv(reveal)]

    def _argv(self, reveal: dict[str, str] | None) -> list[tuple[str, bool]]:
        """argv with, for each argument, whether it is a secret's variable
        reference (which the shell line leaves to the shell to expand)."""
        argv = ["docker", "run", "-d"]
        if self.interactive:
            argv += ["-it"]
        argv += [f"--name={self.name}"]
        if self.network_host:
            argv += ["--network=host"]
        if self.ipc_host:
            argv += ["--ipc=host"]
        if self.privileged:
            argv += ["--privileged=true"]
        if self.restart != "no":
            argv += [f"--restart={self.restart}"]
        if self.runtime:
            argv += [f"--runtime={self.runtime}"]
        argv += [f"--shm-size={self.shm_size}"]
        for device in self.devices:
            argv += [f"--device={device}"]
        for mount in self.mounts:
            argv += ["-v", mount.flag()]
        for name, value in self.env:
            argv += ["-e", f"{name}={value}"]
        for name, secret_key in self.secret_env:
            argv += ["-e", f"{name}={reveal[secret_key]}" if reveal and secret_key in reveal else name]
        for name, value in self.labels:
            argv += ["--label", f"{name}={value}"]
        if self.entrypoint:
            argv += [f"--entrypoint={self.entrypoint[0]}"]
        argv.append(self.image)
        if self.entrypoint and len(self.entrypoint) > 1:
            argv += list(self.entrypoint[1:])
        marked = [(arg, False) for arg in argv]
        for arg in self.command:
            if arg in self.secret_args:
                var = self.secret_args[arg]
                if reveal is not None and var in reveal:
                    marked.append((reveal[var], False))
                else:
                    marked.append((f"${var}", True))
            else:
                marked.append((arg, False))
        return marked

    def docker_run_line(self) -> str:
        """Shell line for the rendered files. Every argument is single-quoted
        (`shlex.quote`) but a secret's own variable reference, which is
        written "$VAR" so the shell expands that variable and nothing else
        (a stack value that merely starts with `$` stays a literal word)."""
        out = []
        for arg, is_secret_ref in self._argv(None):
            if is_secret_ref and re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", arg):
                out.append(f'"{arg}"')
            else:
                out.append(shlex.quote(arg))
        return " ".join(out)

    def pulumi_docker_args(self) -> dict[str, Any]:
        """Keyword arguments for `pulumi_docker.Container` (secret args are
        substituted by the Pulumi layer with secret Outputs)."""
        args: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "devices": [
                {"host_path": d, "container_path": d, "permissions": "rwm"} for d in self.devices
            ],
            "volumes": [],
            "shm_size": self.shm_size_mb(),
            "privileged": self.privileged,
            "network_mode": "host" if self.network_host else "bridge",
            "ipc_mode": "host" if self.ipc_host else None,
            "restart": self.restart,
            "envs": [f"{k}={v}" for k, v in self.env],
            "labels": [{"label": k, "value": v} for k, v in self.labels],
            "tty": self.interactive,
            "stdin_open": self.interactive,
            "command": list(self.command),
            "entrypoints": list(self.entrypoint) if self.entrypoint else None,
            "must_run": True,
            # The runbooks' containers run a shell and have no healthcheck.
            "wait": False,
            "runtime": self.runtime,
        }
        for mount in self.mounts:
            if mount.is_named_volume:
                args["volumes"].append(
                    {"volume_name": mount.host, "container_path": mount.container, "read_only": mount.read_only})
            else:
                args["volumes"].append(
                    {"host_path": mount.host, "container_path": mount.container, "read_only": mount.read_only})
        return {k: v for k, v in args.items() if v is not None}


def spec_from_pulumi_inputs(inputs: dict[str, Any]) -> ContainerSpec:
    """The inverse of `ContainerSpec.pulumi_docker_args`, from the inputs as
    the Pulumi engine receives them (camelCase). tests/test_container.py
    reads each stack's docker.Container back through it: the `docker run`
    line `render` writes and the container `pulumi up` creates must say the
    same, so both directions of the mapping live here, side by side."""
    mounts = []
    for v in inputs.get("volumes") or []:
        host = v.get("hostPath") or v.get("volumeName")
        mounts.append(Mount(host, v["containerPath"], bool(v.get("readOnly"))))
    shm_mb = inputs.get("shmSize")
    entrypoints = inputs.get("entrypoints") or None
    return ContainerSpec(
        name=inputs["name"],
        image=inputs["image"],
        devices=tuple(d["hostPath"] for d in inputs.get("devices") or []),
        mounts=tuple(mounts),
        shm_size=(f"{int(shm_mb) // 1024}g" if int(shm_mb) % 1024 == 0 else f"{int(shm_mb)}m") if shm_mb else "64m",
        privileged=bool(inputs.get("privileged")),
        ipc_host=inputs.get("ipcMode") == "host",
        network_host=inputs.get("networkMode") == "host",
        restart=inputs.get("restart") or "no",
        env=tuple(tuple(e.split("=", 1)) for e in inputs.get("envs") or []),
        entrypoint=tuple(entrypoints) if entrypoints else None,
        command=tuple(inputs.get("command") or ()),
        interactive=bool(inputs.get("tty")),
        labels=tuple((label["label"], label["value"]) for label in inputs.get("labels") or []),
        runtime=inputs.get("runtime") or None,
    )


def standard_mounts(specs: list[str]) -> tuple[Mount, ...]:
    return tuple(Mount.parse(s) for s in specs)


def merge_mounts(*groups: Iterable[Mount]) -> tuple[Mount, ...]:
    """Later groups win on the same container path; order of first appearance kept."""
    by_target: dict[str, Mount] = {}
    for group in groups:
        for mount in group:
            by_target[mount.container.rstrip("/") or "/"] = mount
    return tuple(by_target.values())
