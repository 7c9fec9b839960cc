"""Small helpers shared by the Pulumi components: SSH connections, remote
commands with the options every stateful step needs, digests."""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from ascend_inference.errors import NodeFactError, StackError
from ascend_inference.spec import ClusterSpec, Node

TOKEN = "ascend-inference"


class StackRunError(StackError, pulumi.RunError):
    """A bad stack under `pulumi up`: RunError makes Pulumi print the message
    without a stack trace; StackError keeps the offline tools' handling."""


class NodeFactRunError(NodeFactError, pulumi.RunError):
    """A node fact that contradicts the stack, raised during a rollout."""


def clearly(check):
    """Wrap an `apply` callback so its NodeFactError ends the run cleanly."""

    def run(value):
        try:
            return check(value)
        except NodeFactRunError:
            raise
        except NodeFactError as error:
            clean = NodeFactRunError(error.node, error.fact, "")
            clean.args = error.args
            clean.fix = error.fix
            raise clean from None

    return run


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NodeConnection:
    """How the steps reach one node: pulumi-command's connection, and the
    part of it that says *which* machine (host, port, user, jump host).

    pulumi-command treats a connection change as an in-place update: the step
    would run again on the new machine and nothing would be undone on the old
    one. The identity is therefore part of every step's triggers, so a new
    host, port or user replaces the step (its delete runs on the old machine
    with the old connection). A new key for the same machine stays an update."""

    args: remote.ConnectionArgs
    identity: str


def connection_for(spec: ClusterSpec, node: Node, private_key: pulumi.Input[str]) -> NodeConnection:
    """pulumi-command's connection to `node`. Its `host_key` (and the
    proxy's) is the pinned key. Without one pulumi-command accepts any key:
    its SDK (pulumi_command/remote/_inputs.py, ConnectionArgs.host_key, 1.2.1)
    says "If not provided, the host key will be ignored", and its provider's
    provider/pkg/provider/remote/connection.go (pulumi/pulumi-command) sets
    `HostKeyCallback: ssh.InsecureIgnoreHostKey()` in that case."""
    ssh = spec.ssh
    proxy = None
    if ssh.jump_host:
        user, _, rest = ssh.jump_host.rpartition("@")
        host, _, jump_port = rest.partition(":")
        proxy = remote.ProxyConnectionArgs(host=host, user=user or ssh.user, port=int(jump_port or 22),
                                           private_key=private_key, host_key=ssh.jump_host_key)
    port, user = node.port or ssh.port, node.user or ssh.user
    args = remote.ConnectionArgs(
        host=node.host, port=port, user=user, host_key=node.host_key,
        private_key=private_key, proxy=proxy,
        # Ascend servers under load answer slowly; retry the dial a few times.
        dial_error_limit=10, per_dial_timeout=30)
    identity = f"ssh://{user}@{node.host}:{port}" + (f" via {ssh.jump_host}" if ssh.jump_host else "")
    return NodeConnection(args, identity)


def known_hosts_file(stack: str, text: str) -> str:
    """Write the stack's pinned keys as a known_hosts file the docker
    provider's ssh reads (`UserKnownHostsFile`), in a directory of the
    program's own beside the project (.ascend-inference/<stack>/, mode 700,
    the file 600); returns its path. Rewritten whole at every run."""
    import os
    import tempfile
    from pathlib import Path

    directory = Path(__file__).resolve().parent.parent / ".ascend-inference" / stack
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / "known_hosts"
    fd, staging = tempfile.mkstemp(dir=directory, prefix=".known_hosts-")  # mode 600
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(staging, path)
    return str(path)


# One value per run of the program (`pulumi up` starts a new process; the
# offline tools and the emulator call `begin_run`). Steps that must run at
# every `pulumi up` (the node checks) carry it in their `update` command.
_run_id = uuid.uuid4().hex


def begin_run() -> str:
    global _run_id
    _run_id = uuid.uuid4().hex
    return _run_id


def remote_step(
    name: str,
    *,
    connection: NodeConnection,
    create: pulumi.Input[str],
    parent: pulumi.Resource,
    delete: pulumi.Input[str] | None = None,
    triggers: Sequence[pulumi.Input] | None = None,
    depends_on: Sequence[pulumi.Resource] | None = None,
    timeout: str | None = None,
    stdin: pulumi.Input[str] | None = None,
    secret_stdout: bool = False,
    replace_to_redo: bool = True,
    retain_on_delete: bool = False,
    every_up: bool = False,
    aliases: Sequence[pulumi.Alias] | None = None,
) -> remote.Command:
    """A remote command as a resource, redone exactly when it must be.

    pulumi-command replaces a command only when its `triggers` change; any
    other input change is an in-place update that keeps the resource's id
    (so steps that hold that id in their triggers would not be redone). Here
    the triggers always carry what the step runs (create and delete scripts)
    and where (the connection identity) besides the caller's `triggers`
    (upstream ids and digests): a change to any of them replaces the step
    and, through its new id, what depends on it. With `replace_to_redo` the
    old step is undone (its delete runs) before the new one is created, since
    two copies of a process or a file cannot coexist on one node.

    `every_up`: a read-only check that runs again at every `pulumi up`, so a
    node that broke after a good rollout is caught (and one that was fixed
    passes) without `--replace`. Its `update` is its script plus this run's
    id, an update keeps its id, and what depends on it reads its output by
    value: downstream is redone only when the facts it prints change. A
    preview ignores that per-run change (`ignore_changes`), so
    `pulumi preview` of a rolled-out stack shows no change.

    `secret_stdout`: the output is marked secret and the provider logs only
    stderr (pulumi-command logs stdout to the console by default, secret or
    not)."""
    redo = pulumi.Output.all(create, delete or "").apply(lambda scripts: digest("\n".join(scripts)))
    update = None
    ignore_changes = None
    if every_up:
        run_id = _run_id
        update = pulumi.Output.from_input(create).apply(lambda script: f"{script}\n# ascend-inference run {run_id}\n")
        if pulumi.runtime.is_dry_run():
            ignore_changes = ["update"]
    return remote.Command(
        name,
        connection=connection.args,
        create=create,
        update=update,
        delete=delete,
        triggers=[connection.identity, redo, *(triggers or [])],
        stdin=stdin,
        # The previous output in the environment is sent with SSH setenv,
        # which sshd refuses unless AcceptEnv allows it; no step reads it.
        add_previous_output_in_env=False,
        logging=remote.Logging.STDERR if secret_stdout else None,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on) if depends_on else None,
            delete_before_replace=replace_to_redo,
            retain_on_delete=retain_on_delete,
            ignore_changes=ignore_changes,
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout) if timeout else None,
            additional_secret_outputs=["stdout"] if secret_stdout else None,
            aliases=list(aliases) if aliases else None,
        ),
    )


def copy_from_master(name: str, node_connection: NodeConnection, create: pulumi.Input[str], *,
                     after: list[pulumi.Resource], ssh_private_key: pulumi.Input[str] | None,
                     parent: pulumi.Resource) -> remote.Command:
    """A node's pull of a file set from the master (weights, the image tar)
    over the cluster network: the stack's SSH key reaches the step only as
    its secret stdin (into an ssh-agent the script ends), and what was copied
    stays on destroy."""
    return remote_step(
        name, connection=node_connection, create=create, parent=parent, depends_on=after,
        stdin=pulumi.Output.from_input(ssh_private_key).apply(lambda key: (key or "").rstrip("\n") + "\n"),
        timeout="1440m", retain_on_delete=True)
