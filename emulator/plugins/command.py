"""Stand-in `pulumi-resource-command` (reports 1.2.1), FOR TESTS ONLY:
`command:remote:Command`, the one resource of the package this program uses,
and `command:local:run`, the invoke its node checks run at every preview and
up (the system `ssh` to the node, the script on stdin).

Follows pulumi-command v1.2.1 (provider/pkg/provider/remote/*.go, built on
pulumi-go-provider v1.3.0 `infer`); docs/standin-plugins.md lists every rule
with the file and function it was read from. SSH is paramiko here where the
real provider uses Go's golang.org/x/crypto/ssh: same connection rules
(host key ignored unless `hostKey` is set, then exactly that key; the
`proxy` jump host; dial retries), same session (setenv, stdin, exec), same
texts for a failed command.
"""
from __future__ import annotations

import io
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from emulator.plugins.serve import (
    UNKNOWN,
    Call,
    Diff,
    Provider,
    ProviderError,
    ResourceType,
    as_int,
    guard,
    is_secret,
    is_unknown,
    object_diff,
    reveal,
    secret,
    serve,
)

VERSION = "1.2.1"
TOKEN = "command:remote:Command"

# remote/connection.go, (*Connection).Annotate and (*ProxyConnection).Annotate: a.SetDefault.
CONNECTION_DEFAULTS = {"user": "root", "port": 22, "dialErrorLimit": 10, "perDialTimeout": 15}
# util/util.go
PULUMI_COMMAND_STDOUT = "PULUMI_COMMAND_STDOUT"
PULUMI_COMMAND_STDERR = "PULUMI_COMMAND_STDERR"

T = TypeVar("T")


def go_quote(text: str) -> str:
    """Go's strconv.Quote (what `%q` prints): printable characters as they
    are, the usual backslash escapes, \\xNN / \\uNNNN / \\UNNNNNNNN otherwise."""
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\", '"': '\\"'}
    out = ['"']
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


# --- inputs --------------------------------------------------------------------

def _with_defaults(connection: Any) -> Any:
    if connection is None or is_unknown(connection):
        return connection
    wrapped = is_secret(connection)
    body = connection["value"] if wrapped else connection
    if not isinstance(body, dict):
        return connection
    body = dict(body)
    for key, default in CONNECTION_DEFAULTS.items():
        if body.get(key) is None:
            body[key] = default
    proxy = body.get("proxy")
    if proxy is not None and not is_unknown(proxy):
        body["proxy"] = _with_defaults(proxy)
        if not is_secret(proxy):
            body["proxy"] = reveal(body["proxy"])
    return secret(body) if wrapped else body


# --- SSH -------------------------------------------------------------------------

class DialError(Exception):
    pass


def _parse_private_key(text: str, password: str | None) -> Any:
    import paramiko

    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=password)
        except (paramiko.SSHException, ValueError):
            continue
    raise ProviderError("ssh: no key found")


def _parse_host_key(text: str) -> tuple[str, bytes]:
    """ssh.ParseAuthorizedKey: `<type> <base64> [comment]` -> (type, key blob)."""
    import base64

    fields = text.split()
    if len(fields) < 2:
        raise ProviderError("failed to parse host key: ssh: no key found")
    try:
        return fields[0], base64.b64decode(fields[1])
    except ValueError as error:
        raise ProviderError(f"failed to parse host key: {error}") from None


def _handshake(connection: dict[str, Any], sock: Any) -> Any:
    """An SSH client transport over `sock`, host key checked and authenticated
    as remote/connection.go (*connectionBase).SSHConfig configures Go's client."""
    import paramiko

    host_key = connection.get("hostKey")
    timeout = as_int(connection.get("perDialTimeout"), 15) or None
    transport = paramiko.Transport(sock)
    try:
        expected = None
        if host_key:
            expected = _parse_host_key(host_key)
            # HostKeyAlgorithms: only the given key's type is offered.
            transport.get_security_options().key_types = [expected[0]]
        try:
            transport.start_client(timeout=timeout)
        except paramiko.SSHException as error:
            raise DialError(f"ssh: handshake failed: {error}") from None
        server_key = transport.get_remote_server_key()
        if expected is not None and (server_key.get_name(), server_key.asbytes()) != expected:
            # ssh.FixedHostKey
            raise DialError("ssh: handshake failed: ssh: host key mismatch")
        user = str(connection.get("user") or "root")
        attempted = ["none"]
        key_text, password = connection.get("privateKey"), connection.get("password")
        if key_text:
            key = _parse_private_key(key_text, connection.get("privateKeyPassword"))
            attempted.append("publickey")
            try:
                transport.auth_publickey(user, key)
                return transport
            except paramiko.AuthenticationException:
                pass
        if password:
            attempted.append("password")
            try:
                transport.auth_password(user, password)
                return transport
            except paramiko.AuthenticationException:
                pass
        agent_keys: tuple[Any, ...] = ()
        agent_socket = connection.get("agentSocketPath")
        try:
            if agent_socket:
                os.environ["SSH_AUTH_SOCK"] = agent_socket
            agent_keys = paramiko.Agent().get_keys() if os.environ.get("SSH_AUTH_SOCK") else ()
        except paramiko.SSHException:
            agent_keys = ()
        for key in agent_keys:
            if "publickey" not in attempted:
                attempted.append("publickey")
            try:
                transport.auth_publickey(user, key)
                return transport
            except paramiko.AuthenticationException:
                continue
        raise DialError(f"ssh: handshake failed: ssh: unable to authenticate, attempted methods "
                        f"[{' '.join(attempted)}], no supported methods remain")
    except BaseException:
        transport.close()
        raise


def _tcp(host: str, port: int, timeout: int | None) -> socket.socket:
    endpoint = f"{host}:{port}"
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise DialError(f"dial tcp {endpoint}: connect: connection refused") from None
    except TimeoutError:
        raise DialError(f"dial tcp {endpoint}: i/o timeout") from None
    except OSError as error:
        raise DialError(f"dial tcp {endpoint}: {error.strerror or error}") from None


def _dial_with_retry(call: Call, message: str, max_attempts: int, dial: Callable[[], T]) -> T:
    """remote/connection.go dialWithRetry on pulumi's retry.Until (delay 100 ms,
    x1.5, at most 5 s): `<message> N/<limit> failed: retrying` as a status
    line; after the limit `after N failed attempts: <last error>`."""
    delay, attempt = 0.1, 0
    while True:
        try:
            return dial()
        except DialError as error:
            dials = attempt + 1
            if max_attempts > -1 and dials > max_attempts:
                raise DialError(f"after {attempt} failed attempts: {error}") from None
            limit = "inf" if max_attempts == -1 else str(max_attempts)
            call.info(f"{message} {dials}/{limit} failed: retrying", ephemeral=True)
        time.sleep(min(delay, 5.0))
        delay *= 1.5
        attempt += 1


def dial(call: Call, connection: dict[str, Any]) -> Any:
    """remote/connection.go (*Connection).Dial."""
    host, port = str(connection["host"]), as_int(connection.get("port"), 22)
    timeout = as_int(connection.get("perDialTimeout"), 15) or None
    tries = as_int(connection.get("dialErrorLimit"), 10)
    proxy = connection.get("proxy")
    if not proxy:
        return _dial_with_retry(call, "Dial", tries,
                                lambda: _handshake(connection, _tcp(host, port, timeout)))
    import paramiko

    proxy_host, proxy_port = str(proxy["host"]), as_int(proxy.get("port"), 22)
    proxy_timeout = as_int(proxy.get("perDialTimeout"), 15) or None
    try:
        proxy_client = _dial_with_retry(
            call, "Dial proxy", as_int(proxy.get("dialErrorLimit"), 10),
            lambda: _handshake(proxy, _tcp(proxy_host, proxy_port, proxy_timeout)))
    except DialError as error:
        raise DialError(f"proxy: {error}") from None

    def tunnel() -> Any:
        try:
            return proxy_client.open_channel("direct-tcpip", (host, port), ("", 0), timeout=timeout)
        except paramiko.ChannelException as error:
            raise DialError(f"ssh: rejected: connect failed ({error.text})") from None
        except paramiko.SSHException as error:
            raise DialError(str(error)) from None

    try:
        _dial_with_retry(call, "Dial from proxy", tries, lambda: tunnel().close())
        # Each handshake attempt gets its own tunnel (Go's retries reuse one
        # connection, which its first failed handshake has closed).
        client = _dial_with_retry(call, "Dial", tries, lambda: _handshake(connection, tunnel()))
    except DialError as error:
        proxy_client.close()
        raise DialError(f"proxy: {error}") from None
    client.ascend_proxy = proxy_client
    return client


def _setenv(channel: Any, name: str, value: str, want_reply: bool) -> None:
    """An `env` channel request (Go's session.Setenv asks for a reply; paramiko's
    set_environment_variable does not, hence the message built here)."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("env")
    m.add_boolean(want_reply)
    m.add_string(name)
    m.add_string(value)
    if want_reply:
        channel._event_pending()
    channel.transport._send_user_message(m)
    if want_reply:
        channel._wait_for_event()


class _LineLog:
    """util.LogOutput: the logged streams go through one pipe, and every
    complete line is an InfoStatus (ephemeral) message on the resource."""

    def __init__(self, call: Call):
        self.call, self.pending, self.lock = call, b"", threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.pending += data
            *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.call.info(line.decode(errors="replace"), ephemeral=True)

    def close(self) -> None:
        with self.lock:
            rest, self.pending = self.pending, b""
        if rest:
            self.call.info(rest.decode(errors="replace"), ephemeral=True)


def run(call: Call, state: dict[str, Any], command: str) -> dict[str, Any]:
    """remote/commandOutputs.go (*CommandOutputs).run: the command over SSH;
    the state with its new stdout and stderr, or ProviderError with the
    real provider's text."""
    import paramiko

    values = reveal(state)
    connection = values["connection"]
    try:
        client = dial(call, connection)
    except DialError as error:
        raise ProviderError(str(error)) from None
    try:
        channel = client.open_session()
        for name, value in (values.get("environment") or {}).items():
            try:
                _setenv(channel, name, str(value), want_reply=True)
            except paramiko.SSHException:
                call.console.log(call.urn, (
                    f"Unable to set '{name}'. This only works if your SSH server is configured to accept\n"
                    "\tthese variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the "
                    "remote host, you could\n\tprefix the command itself with the variables in the form "
                    "'VAR=value command'"), severity="ERROR")
                raise ProviderError(f"could not set environment variable {go_quote(name)}: ssh: setenv failed") \
                    from None
        if values.get("addPreviousOutputInEnv") is None or values.get("addPreviousOutputInEnv"):
            # Optimistic in the real provider (a refusal is a warning); sent
            # without a reply here, so a refusal passes silently.
            for name, key in ((PULUMI_COMMAND_STDOUT, "stdout"), (PULUMI_COMMAND_STDERR, "stderr")):
                if values.get(key):
                    _setenv(channel, name, values[key], want_reply=False)
        logging = values.get("logging")
        log_stdout = logging in (None, "stdout", "stdoutAndStderr")
        log_stderr = logging in (None, "stderr", "stdoutAndStderr")
        line_log = _LineLog(call)
        stdout, stderr, both = bytearray(), bytearray(), bytearray()
        lock = threading.Lock()

        def pump(receive: Callable[[int], bytes], own: bytearray, logged: bool) -> None:
            while True:
                data = receive(32768)
                if not data:
                    return
                with lock:
                    own.extend(data)
                    both.extend(data)
                if logged:
                    line_log.write(data)

        channel.exec_command(command)
        readers = [threading.Thread(target=pump, args=(channel.recv, stdout, log_stdout), daemon=True),
                   threading.Thread(target=pump, args=(channel.recv_stderr, stderr, log_stderr), daemon=True)]
        for reader in readers:
            reader.start()
        stdin = values.get("stdin")
        if stdin:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        status = channel.recv_exit_status()
        for reader in readers:
            reader.join()
        line_log.close()
    finally:
        client.close()
        proxy = getattr(client, "ascend_proxy", None)
        if proxy is not None:
            proxy.close()
    if status != 0:
        reason = ("wait: remote command exited without exit status or exit signal" if status < 0
                  else f"Process exited with status {status}")
        raise ProviderError(f"{reason}: running {go_quote(command)}:\n{both.decode(errors='replace')}")
    return {**state, "stdout": stdout.decode(errors="replace").removesuffix("\n"),
            "stderr": stderr.decode(errors="replace").removesuffix("\n")}


# --- the resource ------------------------------------------------------------------

INPUTS = ("triggers", "create", "update", "delete", "stdin", "logging", "connection", "environment",
          "addPreviousOutputInEnv")


class RemoteCommand(ResourceType):
    token = TOKEN

    def check(self, call: Call, news: dict[str, Any], olds: dict[str, Any]) -> dict[str, Any]:
        # infer DefaultCheck: the connection's defaults applied; `connection`
        # is `provider:"secret"`, so it comes back a secret.
        checked = dict(news)
        if "connection" in checked and checked["connection"] is not None:
            connection = _with_defaults(checked["connection"])
            checked["connection"] = connection if is_unknown(connection) else secret(connection)
        return checked

    def diff(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
             old_inputs: dict[str, Any], ignore_changes: list[str]) -> Any:
        # infer/resource.go diff: ignored changes take the state's value; the
        # old inputs come from the engine (or, failing that, from the state).
        news = dict(news)
        for key in ignore_changes:
            if key in olds:
                news[key] = olds[key]
        news = {k: v for k, v in news.items() if k != "version" and not k.startswith("__")}
        if not old_inputs:
            old_inputs = {k: olds[k] for k in INPUTS if k in olds}
        # Only `triggers` is `replaceOnChanges` (common/inputs.go), and the
        # resource has an Update, so every other change is an update.
        return Diff(object_diff(old_inputs, news, lambda key: key == "triggers")).response()

    def create(self, call: Call, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # remote/commandController.go Create: resource.NewUniqueHex(name, 8, 0).
        resource_id = call.name + secrets.token_hex(4)
        state = {k: v for k, v in inputs.items() if v is not None}
        if call.preview:
            # Outputs that are not inputs are unknown in a preview (infer markComputed).
            return resource_id, {**state, "stdout": UNKNOWN, "stderr": UNKNOWN}
        create = reveal(inputs.get("create"))
        if create is None:
            return resource_id, {**state, "stdout": "", "stderr": ""}
        return resource_id, run(call, state, create)

    def update(self, call: Call, resource_id: str, olds: dict[str, Any], news: dict[str, Any],
               old_inputs: dict[str, Any]) -> dict[str, Any]:
        state = {k: v for k, v in news.items() if v is not None}
        state["stdout"], state["stderr"] = olds.get("stdout", ""), olds.get("stderr", "")
        if call.preview:
            # An update has changed inputs, so every output that is not an
            # input is unknown in its preview (infer markComputed).
            return {**state, "stdout": UNKNOWN, "stderr": UNKNOWN}
        command = reveal(news.get("update")) or reveal(news.get("create"))
        if command is None:
            return state
        return run(call, state, command)

    def delete(self, call: Call, resource_id: str, state: dict[str, Any], old_inputs: dict[str, Any]) -> None:
        # remote/commandController.go Delete: the state's `delete`, over the
        # state's (the old) connection.
        command = reveal(state.get("delete"))
        if command is None:
            return
        run(call, state, command)


LOCAL_RUN = "command:local:run"


def local_run(console: Any, args: dict[str, Any]) -> dict[str, Any]:
    """local/runController.go (*Run).Invoke and local/commandOutputs.go `run`:
    argv is `interpreter` (default `/bin/sh -c`) then `command`; the working
    directory `dir`, else the plugin's own; the plugin's environment plus
    `environment`; stdin only when non-empty; stdout and stderr streamed to
    the console per `logging` (util.LogOutput, an invoke has no resource), kept
    with one trailing newline cut; a failure is `<exec error>: running
    <command, %q>:\n<stdout and stderr as they came>`. The outputs repeat the
    inputs (RunOutputs embeds RunInputs). No previous output exists for an
    invoke, so addPreviousOutputInEnv adds nothing."""
    import subprocess

    command = args.get("command") or ""
    argv = [*(args.get("interpreter") or ["/bin/sh", "-c"]), command]
    env = {**os.environ, **{k: str(v) for k, v in (args.get("environment") or {}).items()}}
    logging = args.get("logging") or "stdoutAndStderr"
    logged = {"stdout": logging in ("stdout", "stdoutAndStderr"), "stderr": logging in ("stderr", "stdoutAndStderr")}
    stdin = args.get("stdin") or ""
    try:
        process = subprocess.Popen(argv, cwd=args.get("dir") or os.getcwd(), env=env,
                                   stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as error:
        raise ProviderError(f"{error.strerror or error}: running {go_quote(command)}:\n") from None
    both: list[bytes] = []
    both_lock = threading.Lock()
    kept: dict[str, bytes] = {}

    def pump(name: str, stream: Any) -> None:
        data = b""
        pending = b""
        for chunk in iter(lambda: stream.read1(65536), b""):
            data += chunk
            with both_lock:
                both.append(chunk)
            if logged[name]:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    console.log("", line.decode(errors="replace"))
        if logged[name] and pending:
            console.log("", pending.decode(errors="replace"))
        kept[name] = data

    threads = [threading.Thread(target=pump, args=(name, stream), daemon=True)
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for thread in threads:
        thread.start()
    if stdin:
        assert process.stdin is not None
        try:
            process.stdin.write(stdin.encode())
        except BrokenPipeError:
            pass
        process.stdin.close()
    code = process.wait()
    for thread in threads:
        thread.join()
    if code != 0:
        # Go's exec.ExitError prints "exit status N" (a signal: "signal: <name>").
        status = f"exit status {code}" if code > 0 else f"signal: {_signal_name(-code)}"
        raise ProviderError(f"{status}: running {go_quote(command)}:\n{b''.join(both).decode(errors='replace')}")
    return {**args, "stdout": kept.get("stdout", b"").decode(errors="replace").removesuffix("\n"),
            "stderr": kept.get("stderr", b"").decode(errors="replace").removesuffix("\n")}


def _signal_name(number: int) -> str:
    import signal

    try:
        return {signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGINT: "interrupt"}.get(
            signal.Signals(number), signal.Signals(number).name.lower().removeprefix("sig"))
    except ValueError:
        return str(number)


class CommandProvider(Provider):
    name = "command"
    version = VERSION


def main() -> None:
    guard("pulumi-resource-command")
    serve(CommandProvider([RemoteCommand()], {LOCAL_RUN: local_run}), sys.argv[1:])


if __name__ == "__main__":
    main()
