"""Small helpers shared by the Pulumi components: SSH connections, remote
commands with the options every stateful step needs, digests."""
from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import pulumi
from pulumi.runtime import settings
from pulumi_command import local, remote

from ascend_inference.errors import NodeFactError, StackError
from ascend_inference.spec import ClusterSpec, Node

TOKEN = "ascend-inference"
T = TypeVar("T")


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
    with the old connection). A new key for the same machine stays an update.

    `ssh_argv`: the system `ssh` up to the destination, with the same options
    as the docker provider's `ssh://` (`system_ssh_options`), for the node
    checks that run from the control host (`node_check`)."""

    args: remote.ConnectionArgs
    identity: str
    ssh_argv: tuple[str, ...] = ()


def system_ssh_options(spec: ClusterSpec, stack: str) -> list[str]:
    """Options of every system `ssh` the control host runs to a node: the docker
    provider's `ssh://` transport and the node checks. The key comes from the
    user's ssh-agent or ~/.ssh/config, as for `docker -H ssh://`. With pinned
    keys only those keys are accepted, from a known_hosts file the program
    writes (`known_hosts_file`); the jump is a ProxyCommand so that the jump
    host's key is checked against the same file (`-J` would start its own ssh
    with the user's defaults)."""
    from ascend_inference.host_keys import jump_endpoint, known_hosts_text

    if not spec.ssh.insecure_ignore_host_keys and known_hosts_text(spec):
        check = ["-o", "StrictHostKeyChecking=yes",
                 "-o", f"UserKnownHostsFile={known_hosts_file(stack, known_hosts_text(spec))}"]
    else:
        # The stack opted out (or, under preview only, pins nothing yet:
        # `pulumi up` refuses that).
        check = ["-o", "StrictHostKeyChecking=accept-new"]
    options = [*check, "-o", "BatchMode=yes"]
    jump = jump_endpoint(spec)
    if jump:
        user = spec.ssh.jump_host.rpartition("@")[0] if spec.ssh.jump_host else ""
        proxy = ["ssh", *check, "-o", "BatchMode=yes", "-p", str(jump[1]), "-W", "%h:%p",
                 f"{user or spec.ssh.user}@{jump[0]}"]
        options += ["-o", "ProxyCommand=" + " ".join(proxy)]
    return options


def connection_for(spec: ClusterSpec, node: Node, private_key: pulumi.Input[str],
                   ssh_options: Sequence[str]) -> NodeConnection:
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
    # `ssh_options`: system_ssh_options, computed once per run.
    ssh_argv = ("ssh", *ssh_options, "-o", "ConnectTimeout=30", "-p", str(port), f"{user}@{node.host}")
    return NodeConnection(args, identity, ssh_argv)


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
    # Named by its content: two runs of one stack name with other keys (two
    # clusters, a key being changed) never read each other's file.
    path = directory / f"known_hosts-{digest(text)}"
    fd, staging = tempfile.mkstemp(dir=directory, prefix=".known_hosts-")  # mode 600
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(staging, path)
    return str(path)


class NodeCheckRunError(pulumi.RunError):
    """A node check that failed on the node (exit status other than 0): what it
    printed comes first, since its scripts name the node and the fault."""


# Set in a check's environment: names the check (and its node) in the control
# host's process list, and lets the offline preview's mocks answer for it.
CHECK_ENV = "ASCEND_INFERENCE_CHECK"
CHECK_NODE_ENV = "ASCEND_INFERENCE_NODE"
# A digest of what the steps a check runs after did (its depends_on's custom resources).
CHECK_AFTER_ENV = "ASCEND_INFERENCE_AFTER"


def _ran(steps: Sequence[pulumi.CustomResource]) -> pulumi.Output[str]:
    """What the steps a check follows did, as a digest the check takes as an input.
    In a preview where one of them is still to be created, or is updated or replaced
    (an image not loaded yet, a driver not installed yet), what it printed is unknown
    (pulumi-command's Create/Update in a preview leave `stdout` computed; docker's
    RemoteImage has no id yet), and the SDK answers an invoke with an unknown input
    unknown without running it (pulumi sdk/python/lib/pulumi/runtime/invoke.py
    `_invoke`: `struct_contains_unknowns(inputs)`): the check then runs at the up,
    after the step, instead of judging a node the step has not touched yet.
    depends_on alone does not hold it back: the engine runs a gated invoke once its
    dependencies' preview steps are done, and a command's preview step has an id.
    With every step in place the digest is known and the check runs at every preview."""
    done = [s.stdout if isinstance(s, remote.Command) else s.id for s in steps]
    digest = pulumi.Output.all(*done).apply(
        lambda outs: hashlib.sha256("\0".join(str(o) for o in outs).encode()).hexdigest())
    # A digest reveals nothing of a step's (secret-marked) output.
    return pulumi.Output.unsecret(digest)


def node_check(name: str, *, node: str, connection: NodeConnection, script: pulumi.Input[str],
               parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Output[str]:
    """A read-only check of a node (preflight, peer pings, the image check) that
    runs at every `pulumi preview` and every `pulumi up`: pulumi-command's
    `local.run` invoke, documented as "a local command to be executed
    unconditionally ... on any preview or deployment", running the script on the
    node through the system `ssh` (`NodeConnection.ssh_argv`) with the script on
    stdin. An invoke is no resource: it is never a change in a plan, so an
    unchanged stack previews and updates with no changes
    (`--expect-no-changes`), and a node that broke after a good rollout stops
    the next preview or up at its check. What it prints flows on by value
    (`by_value`): steps are redone when the facts change, never because a
    check's script did. The short command (`bash -s`) keeps pulumi-command's
    failure text (`exit status N: running "bash -s":` then the output) to the
    lines the script printed."""
    environment: dict[str, pulumi.Input[str]] = {CHECK_ENV: name, CHECK_NODE_ENV: node}
    steps = [r for r in depends_on if isinstance(r, pulumi.CustomResource)]
    if steps:
        environment[CHECK_AFTER_ENV] = _ran(steps)
    result = local.run_output(
        interpreter=list(connection.ssh_argv), command="bash -s", stdin=script,
        # An Output among the values is serialized like any input (the stub types
        # only plain strings; the recorder reads the names from this dict).
        environment=cast("dict[str, str]", environment), add_previous_output_in_env=False,
        # stdout is the facts (kilobytes of tool output): only stderr reaches the console.
        logging=local.Logging.STDERR,
        opts=pulumi.InvokeOutputOptions(parent=parent, depends_on=list(depends_on) or None))
    stdout = result.stdout

    def failed(error: Exception) -> str:
        if isinstance(error, NodeCheckRunError) or (
                'running "bash -s"' not in str(error) and "exit status" not in str(error)):
            # Not this check's own failure (a step it waits for failed): that error as it is.
            raise error
        raise NodeCheckRunError(_check_failure(name, connection, str(error))) from None

    # `recover` (pulumi/output.py Output.recover), not an Output wrapped around this
    # one: it stops the SDK tracking the invoke's own Output, whose raw error the
    # language host would otherwise print at exit as an unhandled exception with a
    # traceback (pulumi/runtime/stack.py wait_for_rpcs awaits every failed Output
    # still tracked) in place of this check's message.
    return from_checks(stdout.recover(failed), [name])


# The node checks a node runs at most (`node_check`): preflight, peer ping, image
# check, and the engine's liveness where it starts the engine (serve-alive).
CHECKS_PER_NODE = 4


def room_for_node_checks(node_count: int) -> int | None:
    """Give the program's blocking RPCs a thread for every node check beside
    the `--parallel` the engine asked for; returns the threads now allowed.

    The Python SDK sends every invoke and resource registration from the event
    loop's default executor (pulumi sdk/python/lib/pulumi/runtime/invoke.py
    `_invoke` and runtime/resource.py: `run_in_executor(None, ...)`), which its
    language host sizes to `--parallel`, 4 x the control host's CPUs by default
    (sdk/python/cmd/pulumi-language-python-exec `_set_default_executor`). A
    node check is a blocking invoke that holds its thread while the node runs
    the script (seconds: dozens of npu-smi/hccn_tool calls, pings), so with 8
    threads and 256 nodes the checks ran 8 at a time, and every registration
    waited behind them: measured, 43 of 512 checks done after 3.5 min
    (docs/benchmarks.md). The checks wait on the nodes, not on the control
    host, so they get threads of their own; the resource operations stay
    bounded by `--parallel` in the engine (its step executor), where that
    option is meant. Under the SDK's mocks (the offline preview, the tests)
    no `--parallel` is set and the executor the caller chose stays: None."""
    parallel = settings.SETTINGS.parallel
    if parallel is None:
        return None
    workers = max(int(parallel), 1) + CHECKS_PER_NODE * node_count
    # Threads are started on demand (up to the limit), so a small cluster pays nothing.
    asyncio.get_event_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))
    return workers


# The attribute naming the node checks an Output was computed from (`from_checks`).
NODE_CHECKS = "node_checks"


def from_checks(value: pulumi.Output[T], checks: Sequence[str]) -> pulumi.Output[T]:
    """`value`, marked as computed from these node checks (by name): `after(value)`
    carries the mark into `depends_on`, where the offline preview's recorder reads
    which checks a step waited for (checks are no resources, so no URN says it)."""
    setattr(value, NODE_CHECKS, tuple(checks))
    return value


def node_checks_of(value: object) -> tuple[str, ...]:
    """The node checks `value` is marked as computed from (`from_checks`). Read from
    the instance's own attributes: `getattr` on an Output lifts an unknown name into
    an apply on its value (Output.__getattr__), which fails later, elsewhere."""
    return tuple(getattr(value, "__dict__", {}).get(NODE_CHECKS, ()))


def _check_failure(name: str, connection: NodeConnection, error: str) -> str:
    """pulumi-command's failure text (`<status>: running "bash -s":\n<output>`, wrapped by
    the SDK's `invoke of command:local:run failed: `) -> the script's own lines first."""
    head, _, printed = error.partition('running "bash -s":')
    status = head.split("failed:", 1)[-1].strip().rstrip(":").strip() or "failed"
    lines = [line for line in printed.strip().splitlines() if line.strip()]
    where = f"(check {name} on {connection.identity}: {status})"
    return "\n".join([*lines[-20:], where]) if lines else f"{name}: {error.strip()} {where}"


def by_value(value: pulumi.Output[T]) -> pulumi.Output[T]:
    """`value` without the resources it was computed from. Its readers' inputs
    then depend on no upstream step, so an upstream step that is updated or
    replaced (a rewritten check script, a gate record rewritten with the same
    facts) reaches them only if the value itself changes; readers that must
    also run after those steps say so with `depends_on`."""
    # future() is None where the value is unknown; is_known says so beside it.
    return pulumi.Output(set(), cast("Awaitable[T]", value.future()), value.is_known(), value.is_secret())


def after(value: pulumi.Output[Any]) -> pulumi.Resource:
    """`value` as an entry of `depends_on`: the SDK waits for it (a check that
    raised fails the dependent's registration, so nothing after a failed check
    touches the node) and adds the resources it came from as plain
    dependencies, no property dependency. Typed as a Resource for the SDK's
    annotation, which lists only resources though it takes Outputs of them."""
    return cast(pulumi.Resource, from_checks(value.apply(lambda _: None), node_checks_of(value)))


# The command of every remote step: its script comes on stdin (`remote_step`).
SCRIPT_ON_STDIN = "bash -s"
# The command of a step's undo: pulumi-command sends the step's stdin to its
# `delete` too, and that stdin opens with the undo (`undo_then_script`).
UNDO_ON_STDIN = "bash -s undo"
UNDO_OPEN = 'if [ "${1-}" = undo ]; then\ncat >/dev/null\n{\n'
UNDO_CLOSE = "}; exit\nfi\n"
# A step that takes data on stdin (a key, a token, a password) gets its script
# as one `{ ...; }` group, then `exit`, then the data (`script_then_data`).
GROUP_OPEN = "{\n"
GROUP_CLOSE = "}; exit\n"


def script_then_data(script: str, data: str) -> str:
    """One stdin for `bash -s` holding a step's script and then the data its
    script reads from its own stdin.

    bash reads a script from a pipe or socket one byte at a time (bminor/bash
    input.c `fd_to_buffered_stream`: a buffer of 1 for an fd that cannot seek;
    sshd gives the command a pipe or a socketpair), as POSIX asks of `sh`
    reading commands from standard input (POSIX.1-2017 `sh`, STDIN: it "shall
    not read ahead in such a manner that any characters intended to be read
    by the invoked command are consumed by the shell"). A `{ ...; }`
    group is parsed whole before any of it runs, up to the newline after
    `}; exit`: so while the script runs, its stdin is exactly the data, as when
    the script was the command and the data the whole stdin (`IFS= read -r`,
    `ssh-add -`, Python's `sys.stdin` read what they read before), and `exit`
    ends bash before a byte of the data could be read as a command. The
    script is parsed before it runs: it may not rely on parse-time shell
    options it sets itself (`shopt -s extglob`, aliases); none does."""
    return GROUP_OPEN + script + ("" if script.endswith("\n") else "\n") + GROUP_CLOSE + data


@functools.lru_cache(maxsize=64)
def undo_then_script(undo: str, stdin: str) -> str:
    """One stdin for a step's script (`bash -s`) and for its undo (`bash -s
    undo`): an `if` on the first argument holding the undo, then the step's
    stdin as it is without an undo (its script, or `script_then_data`).

    bash parses the whole `if ... fi` before it runs any of it (from a pipe
    one byte at a time: see `script_then_data`). Run as the script, the test
    is false and bash goes on to the script; run as the undo, `cat` first
    reads the rest of stdin (the script and any data: pulumi-command writes
    all of it, and an undo that exited before the write ended would close the
    channel under it, x/crypto/ssh's `EOF`, and fail the delete), then the
    undo runs and `exit` ends bash. So the undo's command is the short `bash
    -s undo`, and a failing undo reads `running "bash -s undo":` and then its
    own lines, as a failing step does, not kilobytes of quoted script.

    Cached by value: the steps that run one text on every node (the rank
    table's copy, its undo naming no node) then share one stdin object, and
    the offline preview's records keep one copy of it, not one per node
    (a 1,000-node rank table is megabytes)."""
    return UNDO_OPEN + undo + ("" if undo.endswith("\n") else "\n") + UNDO_CLOSE + stdin


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
    two copies of a process or a file cannot coexist on one node. Read-only
    checks are no resources: see `node_check`.

    `secret_stdout`: the output is marked secret and the provider logs only
    stderr (pulumi-command logs stdout to the console by default, secret or
    not).

    The command is always the short `bash -s` (SCRIPT_ON_STDIN) and the
    script comes on stdin, so a failure reads `running "bash -s":` and then
    the script's own lines. `stdin`, data the script reads (a key, a token, a
    password), follows the script on the same stdin (`script_then_data`),
    which is then a secret as a whole; the script also goes, in the clear, as
    the last of the triggers, so that `pulumi preview --diff` still shows
    which of its lines changed. pulumi-command sends the state's stdin to
    `delete` too (commandController.go `Delete` -> `run`): the undo goes
    first on that stdin and its command is the short `bash -s undo`
    (`undo_then_script`)."""
    redo = pulumi.Output.all(create, delete or "").apply(lambda scripts: digest("\n".join(scripts)))
    # pulumi-command fails with `Process exited with status N: running
    # "<the command, Go-quoted>":` and then the output (v1.2.1
    # provider/pkg/provider/remote/commandOutputs.go `run`, `fmt.Errorf("%w:
    # running %q:\n%s", ...)`): with the script as the command, the line
    # naming the node and the fault came after kilobytes of quoted script.
    # The script goes on stdin and the command is the short `bash -s`, as
    # the node checks do.
    shown: list[pulumi.Input] = []
    script_in: pulumi.Input[str] = create
    if stdin is not None:
        # A secret stdin shows as [secret] in a preview's diff (the engine's
        # display masks a secret value whole); the script's own text, in the
        # triggers, shows what changed in it. It holds no secret: secrets reach
        # a step only as data on stdin or in a container's secret env.
        script_in = pulumi.Output.secret(pulumi.Output.all(create, stdin).apply(
            lambda parts: script_then_data(parts[0], parts[1] or "")))
        shown = [create]
    undo_command: str | None = None
    if delete is not None:
        # pulumi-command sends the state's stdin to `delete` too
        # (commandController.go `Delete` -> `run`): the undo rides on it, and
        # the undo's command is as short as the script's. (A secret stdin
        # stays secret: apply keeps the secretness of what it reads.)
        script_in = pulumi.Output.all(delete, script_in).apply(
            lambda parts: undo_then_script(parts[0], parts[1]))
        undo_command = UNDO_ON_STDIN
    return remote.Command(
        name,
        connection=connection.args,
        create=SCRIPT_ON_STDIN,
        delete=undo_command,
        triggers=[connection.identity, redo, *(triggers or []), *shown],
        stdin=script_in,
        # The previous output in the environment is sent with SSH setenv,
        # which sshd refuses unless AcceptEnv allows it; no step reads it.
        add_previous_output_in_env=False,
        logging=remote.Logging.STDERR if secret_stdout else None,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on) if depends_on else None,
            delete_before_replace=replace_to_redo,
            retain_on_delete=retain_on_delete,
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
