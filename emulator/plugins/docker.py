"""Stand-in `pulumi-resource-docker` (reports 4.11.2), FOR TESTS ONLY: the
provider configuration (`host`, `sshOpts`), `docker:index/container:Container`
and `docker:index/remoteImage:RemoteImage`, the parts of the package this
program uses.

pulumi-docker v4.11.2 bridges terraform-provider-docker v3.9.0 (its
`upstream` submodule) with pulumi-terraform-bridge v3.125.0; the rules below
are read from those (docs/standin-plugins.md lists each with file and
function). The real provider speaks the Docker API through
`ssh ... -- host docker system dial-stdio`; the stand-in runs the system
`ssh` with the same options and the `docker` CLI on the node, whose daemon
answers with the same texts.

Sandbox mapping (NOT a provider rule): the emulated nodes cannot run
`--privileged`, need extra bind mounts in every container and have no
registry. An optional JSON file named by ASCEMU_DOCKER_SANDBOX says how:
{"extra_mounts": [...], "privileged_caps": [...], "runtime_image": "...",
 "by_image": {"<image name>": {"mounts": [...], "env": {"NAME": "... {host} ..."}}}}
`privileged` becomes `privileged_caps`, the mounts and `by_image` extras are
added to the container, and a RemoteImage "pull" tags `runtime_image` under
the requested name when no image of that name is there.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from emulator.plugins.serve import (
    UNKNOWN,
    Call,
    Diff,
    Provider,
    ProviderError,
    ResourceType,
    guard,
    object_diff,
    reveal,
    serve,
)

VERSION = "4.11.2"
CONTAINER = "docker:index/container:Container"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
SANDBOX_VARIABLE = "ASCEMU_DOCKER_SANDBOX"

# resource_docker_container.go resourceDockerContainer: the attributes with
# ForceNew, by their Pulumi names (pulumi-docker resources.go maps `env` to
# `envs`, `entrypoint` to `entrypoints`, `ulimit` to `ulimits`...).
CONTAINER_FORCE_NEW = frozenset({
    "name", "image", "command", "entrypoints", "envs", "labels", "volumes", "devices", "privileged",
    "capabilities", "networkMode", "ipcMode", "shmSize", "tty", "stdinOpen", "runtime", "ulimits", "hostname",
    "domainname", "user", "dns", "dnsOpts", "dnsSearch", "publishAllPorts", "workingDir", "securityOpts",
    "stopSignal", "stopTimeout", "mounts", "ports", "readOnly", "logDriver", "logOpts", "networksAdvanced",
    "pidMode", "usernsMode", "uploads", "sysctls", "groupAdds", "storageOpts", "gpus", "cpus", "cgroupnsMode",
    "cgroupParent", "hosts",
})
# resource_docker_container.go: TypeSet attributes (order is not a change).
CONTAINER_SETS = frozenset({"envs", "labels", "volumes", "devices", "ulimits", "dns", "dnsOpts", "dnsSearch",
                            "securityOpts", "mounts", "networksAdvanced", "uploads", "groupAdds", "hosts"})
# resource_docker_container.go: schema Defaults the bridge's Check fills in.
CONTAINER_DEFAULTS = {"rm": False, "readOnly": False, "start": True, "wait": False, "waitTimeout": 60,
                      "attach": False, "logs": False, "mustRun": True, "restart": "no", "removeVolumes": True,
                      "networkMode": "bridge", "tty": False, "stdinOpen": False, "memoryReservation": 0,
                      "containerReadRefreshTimeoutMilliseconds": 15000}
# resource_docker_container_funcs.go resourceDockerContainerUpdate: what an update changes on the container.
CONTAINER_UPDATED = ("restart", "maxRetryCount", "cpuShares", "memory", "memoryReservation", "cpuSet",
                     "memorySwap")
# resource_docker_image.go resourceDockerImage: ForceNew attributes.
IMAGE_FORCE_NEW = frozenset({"name", "pullTriggers", "triggers", "build", "platform"})

# resource_docker_container_funcs.go: the time this process last created a
# container (a package global there too); Read judges a stopped container by it.
_creation_time = 0.0


def _sandbox() -> dict[str, Any]:
    path = os.environ.get(SANDBOX_VARIABLE)
    if not path:
        return {}
    return dict(json.loads(open(path).read()))


class Remote:
    """The provider's daemon: `host` ssh://user@host:port and `sshOpts`, as
    docker/cli connhelper getConnectionHelper builds the ssh command line
    (the options, `-o ConnectTimeout=30` unless one is given, `-T`, then
    `-l user -p port -- host`)."""

    def __init__(self, config: dict[str, Any]):
        host = reveal(config.get("host")) or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if not str(host).startswith("ssh://"):
            raise ProviderError(f"docker stand-in plugin: only ssh:// hosts are covered, not {host!r}")
        self.host = str(host)
        url = urlsplit(self.host)
        self.user, self.address, self.port = url.username, url.hostname or "", url.port
        opts = reveal(config.get("sshOpts"))
        if isinstance(opts, str):
            opts = json.loads(opts) if opts.strip().startswith("[") else opts.split()
        flags = [str(o) for o in (opts or [])]
        if "ConnectTimeout" not in "".join(flags):
            flags.append("-o ConnectTimeout=30")
        if "-T" not in flags:
            flags.append("-T")
        target = []
        if self.user:
            target += ["-l", self.user]
        if self.port:
            target += ["-p", str(self.port)]
        self.argv = ["ssh", *flags, *target, "--", self.address]

    def run(self, *docker_argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.argv, " ".join(shlex.quote(a) for a in docker_argv)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=3600)
        if done.returncode == 255:
            # ssh's own failure: the real provider cannot reach the daemon either.
            raise ProviderError(f"failed to create Docker client: Error pinging Docker server, please make sure "
                                f"that {self.host} is reachable and has a  '_ping' endpoint. Error: "
                                f"{done.stderr.strip()}")
        return done

    def ok(self, *docker_argv: str, error: str) -> str:
        done = self.run(*docker_argv)
        if done.returncode != 0:
            raise ProviderError(f"{error}: {_daemon_text(done.stderr)}")
        return done.stdout


def _daemon_text(stderr: str) -> str:
    # `docker run`/`create` print the daemon's error after "docker: "; the API
    # client's error (what the real provider shows) is the text after it.
    text = stderr.strip()
    text = text.removeprefix("docker: ")
    return text.split("\n\nRun 'docker", 1)[0].strip()


def _inputs_only(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "version" and not k.startswith("__")}


def _canonical(key: str, value: Any, sets: frozenset[str]) -> Any:
    """A TypeSet's elements in one order, so a reordering is no change."""
    if key in sets and isinstance(value, list):
        return sorted(value, key=lambda v: json.dumps(reveal(v), sort_keys=True))
    return value


def _bridge_diff(olds: dict[str, Any], news: dict[str, Any], old_inputs: dict[str, Any],
                 ignore_changes: list[str], force_new: frozenset[str], sets: frozenset[str],
                 delete_before_replace: bool) -> Any:
    """pulumi-terraform-bridge v3.125.0 pkg/tfbridge/provider.go (*Provider).Diff
    for the attributes this program sets: a ForceNew attribute that changes
    (or is unknown in a preview) replaces, any other change updates;
    `deleteBeforeReplace` when something replaces and the resource asks for
    it (resources.go: docker_container); ForceNew attributes that do not
    change are `stables`."""
    old = dict(old_inputs) if old_inputs else {k: v for k, v in olds.items() if k in news}
    new = dict(news)
    for key in ignore_changes:
        if key in olds:
            new[key] = olds[key]
    old = {k: _canonical(k, v, sets) for k, v in _inputs_only(old).items()}
    new = {k: _canonical(k, v, sets) for k, v in _inputs_only(new).items()}
    detailed = object_diff(old, new, lambda key: key in force_new)
    diff = Diff(detailed, delete_before_replace=delete_before_replace)
    replaced = set(diff.replaces)
    return diff.response(stables=sorted(k for k in force_new if k in new and k not in replaced))


def _flag_args(values: dict[str, Any], sandbox: dict[str, Any], host: str, image_names: list[str]) -> list[str]:
    """`docker create` flags for the container's inputs, as
    resourceDockerContainerCreate fills container.Config and HostConfig."""
    v = reveal(values)
    argv = [f"--name={v['name']}"]
    if v.get("tty"):
        argv.append("--tty")
    if v.get("stdinOpen"):
        argv.append("--interactive")
    if v.get("networkMode"):
        argv.append(f"--network={v['networkMode']}")
    if v.get("ipcMode"):
        argv.append(f"--ipc={v['ipcMode']}")
    if v.get("privileged"):
        # Sandbox mapping: `--privileged` becomes the configured capabilities.
        argv += list(sandbox["privileged_caps"]) if sandbox.get("privileged_caps") else ["--privileged"]
    argv.append(f"--restart={v.get('restart') or 'no'}"
                + (f":{int(v['maxRetryCount'])}" if v.get("maxRetryCount") else ""))
    if v.get("runtime"):
        argv.append(f"--runtime={v['runtime']}")
    if v.get("shmSize"):
        argv.append(f"--shm-size={int(v['shmSize'])}m")  # HostConfig.ShmSize = shm_size MB
    if v.get("init"):
        argv.append("--init")
    for device in v.get("devices") or []:
        # deviceSetToDockerDevices: the container path defaults to the host's, permissions to rwm.
        container_path = device.get("containerPath") or device["hostPath"]
        argv.append(f"--device={device['hostPath']}:{container_path}:{device.get('permissions') or 'rwm'}")
    for volume in v.get("volumes") or []:
        # volumeSetToDockerVolumes: <volume name or host path>:<container path>:rw|ro, or --volumes-from.
        if volume.get("fromContainer"):
            argv.append(f"--volumes-from={volume['fromContainer']}")
            continue
        source = volume.get("volumeName") or volume.get("hostPath")
        mode = "ro" if volume.get("readOnly") else "rw"
        argv += ["-v", f"{source}:{volume['containerPath']}:{mode}" if source else volume["containerPath"]]
    capabilities = v.get("capabilities") or {}
    for cap in capabilities.get("adds") or []:
        argv.append(f"--cap-add={cap}")
    for cap in capabilities.get("drops") or []:
        argv.append(f"--cap-drop={cap}")
    for opt in v.get("securityOpts") or []:
        argv.append(f"--security-opt={opt}")
    for ulimit in v.get("ulimits") or []:
        argv.append(f"--ulimit={ulimit['name']}={int(ulimit['soft'])}:{int(ulimit['hard'])}")
    for env in v.get("envs") or []:
        argv += ["-e", env]
    for label in v.get("labels") or []:
        argv += ["--label", f"{label['label']}={label['value']}"]
    extras: dict[str, Any] = {}
    for name in image_names:
        if name in (sandbox.get("by_image") or {}):
            extras = sandbox["by_image"][name]
            break
    for mount in [*(sandbox.get("extra_mounts") or []), *(extras.get("mounts") or [])]:
        argv += ["-v", mount]
    for name, value in (extras.get("env") or {}).items():
        argv += ["-e", f"{name}={str(value).replace('{host}', host)}"]
    entrypoint = v.get("entrypoints") or []
    if entrypoint:
        argv.append(f"--entrypoint={entrypoint[0]}")
    argv.append(v["image"])
    argv += [str(a) for a in entrypoint[1:]]
    argv += [str(a) for a in v.get("command") or []]
    return argv


class Container(ResourceType):
    token = CONTAINER

    def check(self, call: Call, news: dict[str, Any], olds: dict[str, Any]) -> dict[str, Any]:
        checked = dict(news)
        for key, default in CONTAINER_DEFAULTS.items():
            if checked.get(key) is None:
                checked[key] = default
        restart = reveal(checked.get("restart"))
        if restart != UNKNOWN and restart not in ("no", "on-failure", "always", "unless-stopped"):
            # validateStringMatchesPattern(`^(no|on-failure|always|unless-stopped)$`)
            raise ProviderError(f"restart: {restart!r} must match ^(no|on-failure|always|unless-stopped)$")
        return checked

    def diff(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
             old_inputs: dict[str, Any], ignore_changes: list[str]) -> Any:
        return _bridge_diff(olds, news, old_inputs, ignore_changes, CONTAINER_FORCE_NEW, CONTAINER_SETS,
                            delete_before_replace=True)

    def create(self, call: Call, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        global _creation_time
        if call.preview:
            return "", dict(inputs)
        remote = Remote(call.provider.config)
        sandbox = _sandbox()
        image = str(reveal(inputs["image"]))
        found = remote.run("docker", "image", "inspect", "--format", "{{json .RepoTags}}", image)
        if found.returncode != 0:
            # findImage: not local and (here) no registry to pull from.
            raise ProviderError(f"Unable to create container with image {image}: {_daemon_text(found.stderr)}")
        tags = json.loads(found.stdout.strip() or "[]") or []
        created = remote.ok("docker", "create", *_flag_args(inputs, sandbox, remote.address, [image, *tags]),
                            error="Unable to create container")
        container_id = created.strip().splitlines()[-1]
        if reveal(inputs.get("start")) is not False:
            _creation_time = time.time()
            remote.ok("docker", "start", container_id, error="Unable to start container")
        state = {**inputs}
        self._after_create(remote, container_id, state)
        return container_id, state

    def _after_create(self, remote: Remote, container_id: str, state: dict[str, Any]) -> None:
        """resourceDockerContainerCreate ends in Read: a container that must
        run and stopped right after its start is removed, and the create fails."""
        running = self._inspect(remote, container_id)
        if running is None:
            raise ProviderError("container failed to be created")
        if not running["Running"] and reveal(state.get("mustRun")) is not False:
            self._remove(remote, container_id, state)
            raise ProviderError("container exited immediately")

    @staticmethod
    def _inspect(remote: Remote, container_id: str) -> dict[str, Any] | None:
        done = remote.run("docker", "container", "inspect", "--format", "{{json .State}}", container_id)
        if done.returncode != 0:
            return None
        return dict(json.loads(done.stdout.strip()))

    def update(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
               old_inputs: dict[str, Any]) -> dict[str, Any]:
        state = {**olds, **news}
        if call.preview:
            return state
        old = old_inputs or olds
        if any(reveal(old.get(k)) != reveal(news.get(k)) for k in CONTAINER_UPDATED):
            # resourceDockerContainerUpdate: ContainerUpdate with the restart policy (and resources).
            restart = reveal(news.get("restart")) or "no"
            retries = reveal(news.get("maxRetryCount"))
            remote = Remote(call.provider.config)
            remote.ok("docker", "update", f"--restart={restart}" + (f":{int(retries)}" if retries else ""),
                      resource_id, error="Unable to update a container")
        return state

    def _remove(self, remote: Remote, container_id: str, state: dict[str, Any]) -> None:
        """resourceDockerContainerDelete: stop (timeout destroy_grace_seconds,
        0 when unset), then a forced remove (volumes too, as remove_volumes
        says); "No such container" on the remove is not an error."""
        if not reveal(state.get("attach")):
            grace = int(reveal(state.get("destroyGraceSeconds")) or 0)
            remote.ok("docker", "stop", "--time", str(grace), container_id,
                      error=f"Error stopping container {container_id}")
        argv = ["docker", "rm", "--force"]
        if reveal(state.get("removeVolumes")) is not False:
            argv.append("--volumes")
        done = remote.run(*argv, container_id)
        if done.returncode != 0 and not any(s in done.stderr for s in ("No such container", "is already in progress")):
            raise ProviderError(f"Error deleting container {container_id}: {_daemon_text(done.stderr)}")

    def delete(self, call: Call, resource_id: str, state: dict[str, Any], old_inputs: dict[str, Any]) -> None:
        self._remove(Remote(call.provider.config), resource_id, state)

    def read(self, call: Call, resource_id: str, state: dict[str, Any],
             inputs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """resourceDockerContainerRead: a container no longer listed is gone
        (empty id); one that must run but does not, and was not created by
        this process just now, is deleted and gone too."""
        remote = Remote(call.provider.config)
        listed = remote.ok("docker", "ps", "--all", "--no-trunc", "--quiet",
                           error="error fetching container information from Docker")
        if resource_id not in listed.split():
            return "", {}, {}
        found = self._inspect(remote, resource_id)
        if found is None:
            raise ProviderError(f"Error inspecting container {resource_id}")
        if not found["Running"] and reveal(state.get("mustRun")) is not False:
            # resourceDockerContainerReadRefreshFunc: with no create in this
            # process (creationTime zero: every `pulumi refresh`),
            # errContainerFailedToBeCreated, and Read ends in
            # resourceDockerContainerDelete: removed, empty id, dropped. After a
            # create by this process: finished after it, errContainerExitedImmediately
            # (deleted, and the read fails with it); else "running", then the
            # must_run check deletes it and fails with errContainerFailedToBeInRunningState.
            if not _creation_time:
                self._remove(remote, resource_id, state)
                return "", {}, {}
            exited_after_create = _finished_at(found) > _creation_time
            try:
                self._remove(remote, resource_id, state)
            except ProviderError:
                if exited_after_create:
                    raise ProviderError("container failed to be deleted") from None
                raise
            raise ProviderError("container exited immediately" if exited_after_create
                                else "container failed to be in running state")
        if not found["Running"]:
            state = {**state, "exitCode": found.get("ExitCode")}
        return resource_id, state, inputs


def _finished_at(state: dict[str, Any]) -> float:
    """State.FinishedAt (RFC 3339, nanoseconds) as seconds since the epoch."""
    from datetime import datetime

    text = str(state.get("FinishedAt") or "")
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        # time.Parse fails: the refresh func returns the error.
        raise ProviderError(f"parsing time {text!r} as RFC3339")
    zone = "+00:00" if match[3] == "Z" else match[3]
    seconds = datetime.fromisoformat(match[1] + zone).timestamp()
    return seconds + float("0." + (match[2] or "0"))


class RemoteImage(ResourceType):
    token = REMOTE_IMAGE

    def diff(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
             old_inputs: dict[str, Any], ignore_changes: list[str]) -> Any:
        return _bridge_diff(olds, news, old_inputs, ignore_changes, IMAGE_FORCE_NEW, frozenset({"pullTriggers"}),
                            delete_before_replace=False)

    @staticmethod
    def _found(remote: Remote, name: str) -> tuple[str, str] | None:
        """searchLocalImages + determineRepoDigest: (image id, repo digest)."""
        done = remote.run("docker", "image", "inspect", "--format", "{{json .}}", name)
        if done.returncode != 0:
            if "No such image" in done.stderr or "No such object" in done.stderr:
                return None
            raise ProviderError(f"unable to inspect image {name}: {_daemon_text(done.stderr)}")
        found = json.loads(done.stdout.strip())
        digests = found.get("RepoDigests") or []
        digest = ""
        if len(digests) == 1:
            digest = digests[0]
        elif digests:
            repo = name.split(":", 1)[0] if "@" not in name else name.split("@", 1)[0]
            digest = next((d for d in digests if d.startswith(repo + "@")), "")
        return str(found["Id"]), digest

    def _pull(self, remote: Remote, name: str) -> tuple[str, str]:
        """findImage: the local image of that name, else a pull; here the
        sandbox's "pull" tags its runtime image under the name."""
        found = self._found(remote, name)
        if found is None:
            runtime = _sandbox().get("runtime_image")
            if not runtime:
                raise ProviderError(f"Unable to read Docker image into resource: unable to pull image {name}: "
                                    "no registry in this sandbox (set runtime_image in $ASCEMU_DOCKER_SANDBOX)")
            remote.ok("docker", "tag", runtime, name, error=f"Unable to read Docker image into resource: "
                                                             f"unable to pull image {name}")
            found = self._found(remote, name)
            if found is None:
                raise ProviderError(f"Unable to read Docker image into resource: unable to find image {name}")
        return found

    def create(self, call: Call, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if call.preview:
            return "", {**inputs, "imageId": UNKNOWN, "repoDigest": UNKNOWN}
        name = str(reveal(inputs["name"]))
        image_id, digest = self._pull(Remote(call.provider.config), name)
        # resourceDockerImageCreate: d.SetId(apiImage.ID + name).
        return image_id + name, {**inputs, "imageId": image_id, "repoDigest": digest}

    def update(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
               old_inputs: dict[str, Any]) -> dict[str, Any]:
        state = {**olds, **news}
        if call.preview:
            return state
        image_id, digest = self._pull(Remote(call.provider.config), str(reveal(news["name"])))
        return {**state, "imageId": image_id, "repoDigest": digest}

    def read(self, call: Call, resource_id: str, state: dict[str, Any],
             inputs: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        name = str(reveal(state.get("name") or inputs.get("name")))
        found = self._found(Remote(call.provider.config), name)
        if found is None:
            return "", {}, {}
        image_id, digest = found
        return image_id + name, {**state, "imageId": image_id, "repoDigest": digest}, inputs

    def delete(self, call: Call, resource_id: str, state: dict[str, Any], old_inputs: dict[str, Any]) -> None:
        # removeImage: nothing with keep_locally; else remove the image if it is there.
        if reveal(state.get("keepLocally")):
            return
        remote = Remote(call.provider.config)
        name = str(reveal(state["name"]))
        if self._found(remote, name) is None:
            return
        argv = ["docker", "image", "rm", *(["--force"] if reveal(state.get("forceRemove")) else []), name]
        remote.ok(*argv, error="Unable to remove Docker image")


class DockerProvider(Provider):
    name = "docker"
    version = VERSION

    def diff_config(self, olds: dict[str, Any], news: dict[str, Any]) -> Diff:
        # pkg/tfbridge/provider.go (*configDiffer).DiffConfig: no provider
        # attribute of docker forces a replacement (no ForcesProviderReplace
        # in pulumi-docker's resources.go): a new `host` is an update.
        return super().diff_config(olds, news)


def main() -> None:
    guard("pulumi-resource-docker")
    serve(DockerProvider([Container(), RemoteImage()]), sys.argv[1:])


if __name__ == "__main__":
    main()

