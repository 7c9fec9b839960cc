"""Small helpers shared by the Pulumi components: SSH connections, remote
commands with the options every stateful step needs, digests."""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import pulumi
from pulumi_command import remote

from components.errors import NodeFactError, StackError
from components.spec import ClusterSpec, Node

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


def connection_for(spec: ClusterSpec, node: Node, private_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    ssh = spec.ssh
    proxy = None
    if ssh.jump_host:
        user, _, rest = ssh.jump_host.rpartition("@")
        host, _, port = rest.partition(":")
        proxy = remote.ProxyConnectionArgs(host=host, user=user or ssh.user, port=int(port or 22),
                                           private_key=private_key)
    return remote.ConnectionArgs(
        host=node.host, port=node.port or ssh.port, user=node.user or ssh.user,
        private_key=private_key, proxy=proxy,
        # Ascend servers under load answer slowly; retry the dial a few times.
        dial_error_limit=10, per_dial_timeout=30)


def remote_step(
    name: str,
    *,
    connection: remote.ConnectionArgs,
    create: pulumi.Input[str],
    parent: pulumi.Resource,
    delete: Optional[pulumi.Input[str]] = None,
    triggers: Optional[Sequence[pulumi.Input]] = None,
    depends_on: Optional[Sequence[pulumi.Resource]] = None,
    timeout: Optional[str] = None,
    stdin: Optional[pulumi.Input[str]] = None,
    secret_stdout: bool = False,
    replace_to_redo: bool = True,
    retain_on_delete: bool = False,
) -> remote.Command:
    """A remote command as a resource. `triggers` mean "redo this step"
    (pulumi-command replaces on a triggers change); with `replace_to_redo`
    the old step is undone (its delete runs) before the new one is created,
    since two copies of a process or a file cannot coexist on one node."""
    return remote.Command(
        name,
        connection=connection,
        create=create,
        delete=delete,
        triggers=list(triggers) if triggers else None,
        stdin=stdin,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on) if depends_on else None,
            delete_before_replace=replace_to_redo,
            retain_on_delete=retain_on_delete,
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout) if timeout else None,
            additional_secret_outputs=["stdout"] if secret_stdout else None,
        ),
    )
