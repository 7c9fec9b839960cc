"""The stand-in `pulumi-resource-command` (emulator/plugins/command.py) under
the REAL `pulumi` CLI, against an sshd this module starts on 127.0.0.1.

A tiny program (standin_command_program/) makes `remote.Command` resources
from the stack's config. Shown, each through `pulumi up` / `preview --diff` /
`refresh` / `destroy` as a user runs them: a create; a changed `create` is an
update that keeps the id; a changed `triggers` replaces (the old `delete`
first); a replacement with a new port deletes over the old connection; a
wrong `hostKey` refuses to connect; a jump host (`proxy`); stdin, environment
and the logging switch; a failing command shows pulumi-command's failure
text; output lines stream to the console while the command runs; `refresh`
changes nothing. And the guard: neither plugin starts without the fixture's
variable.

With ASCEND_INFERENCE_REAL_PLUGINS=1 the stand-ins stay off PATH and the
same tests run on the real plugin (installed with `pulumi plugin install`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator import plugins
from tests.realengine.conftest import PROJECT_ROOT
from tests.realengine.projects import Project, program_copy

PROGRAM = Path(__file__).parent / "standin_command_program"
PROJECT = "standin-command"
# The program's own remote steps (components/common.py remote_step) from the stack's config.
STEP_PROGRAM = Path(__file__).parent / "remote_step_program"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    """One sshd on 127.0.0.1 listening on two ports (so a test can move a
    connection from one to the other), with its own host key and one
    authorized client key. Sessions record their server port in files the
    test reads (`${SSH_CONNECTION##* }`)."""

    dir: Path
    ports: tuple[int, int]
    client_key: str
    host_public_key: str
    other_public_key: str
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return (self.dir / "sshd.log").read_text()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(home / name)],
                       check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    (home / "authorized_keys").chmod(0o600)
    ports = (_free_port(), _free_port())
    (home / "sshd_config").write_text("\n".join([
        *(f"Port {p}" for p in ports),
        "ListenAddress 127.0.0.1",
        f"HostKey {home / 'host_key'}",
        f"AuthorizedKeysFile {home / 'authorized_keys'}",
        f"PidFile {home / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "AllowTcpForwarding yes",
        # The `environment` input is sent with SSH setenv, which sshd refuses unless AcceptEnv allows it.
        "AcceptEnv ASCEND_STANDIN_*",
        # DEBUG1 logs the jump host's forwarding (`server_request_direct_tcpip`).
        "LogLevel DEBUG1", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory (Debian's unit makes it)
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(home / "sshd_config"), "-E", str(home / "sshd.log")])
    try:
        for port in ports:
            for _ in range(200):
                assert process.poll() is None, f"sshd ended: {(home / 'sshd.log').read_text()}"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    break
                except OSError:
                    process_wait(process)
            else:
                pytest.fail(f"sshd does not listen on {port}: {(home / 'sshd.log').read_text()}")
        yield Sshd(home, ports, (home / "client_key").read_text(), (home / "host_key.pub").read_text().strip(),
                   (home / "other_key.pub").read_text().strip(), process)
    finally:
        process.terminate()
        process.wait(timeout=60)


def process_wait(process: subprocess.Popen[bytes]) -> None:
    """Give a starting sshd a moment (bounded by the caller's attempt count)."""
    try:
        process.wait(timeout=0.05)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture
def project(tmp_path, toolchain_bin, program_venv, sshd) -> Project:
    project = program_copy(tmp_path, PROGRAM, PROJECT, toolchain_bin, program_venv)
    project.ok("config", "set", "--secret", "privateKey", stdin=sshd.client_key)
    return project


def connection(port: int, **more) -> dict:
    return {"host": "127.0.0.1", "port": port, **more}


def console(printed: str) -> str:
    """What `pulumi up` printed while it ran, without the stack outputs it prints at the end."""
    return printed.rsplit("\nOutputs:", 1)[0]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_create_update_replace_refresh_destroy(project, sshd, tmp_path):
    a, b = sshd.ports
    record = tmp_path / "remote.log"
    where = "via ${SSH_CONNECTION##* }"

    def step(version: str, port: int, triggers: list, update: str | None = None) -> dict:
        return {"name": "step", "connection": connection(port), "triggers": triggers,
                "create": f'echo "create {version} {where}" >> {record}; echo out-line-1; echo err-line-1 >&2; '
                          f"echo out-line-2",
                "update": update, "delete": f'echo "delete {where}" >> {record}'}

    project.set_commands([step("v1", a, ["t1"])])
    up = project.ok("up", "--yes")
    assert lines(record) == [f"create v1 via {a}"]
    first = project.outputs()["step"]
    assert (first["stdout"], first["stderr"]) == ("out-line-1\nout-line-2", "err-line-1")
    # The lines reached the console while the command ran (pulumi-command logs both streams by default,
    # as ephemeral status lines: the display shows a row's latest one whenever it redraws, so which of
    # them it shows depends on timing; the one-line commands of the next test show which stream is logged).
    assert any(line in console(up) for line in ("out-line-1", "err-line-1", "out-line-2")), up
    project.ok("preview", "--expect-no-changes")

    # A changed `create` is an update: the same id, the new script runs (no `update` given).
    project.set_commands([step("v2", a, ["t1"])])
    diff = project.ok("preview", "--diff")
    assert "~ 1 to update" in diff and "replace" not in diff.split("Resources:")[-1], diff
    project.ok("up", "--yes")
    assert project.outputs()["step"]["id"] == first["id"]
    assert lines(record)[-1] == f"create v2 via {a}"

    # With an `update` script, an update runs that instead.
    project.set_commands([step("v2", a, ["t1"], update=f'echo "update {where}" >> {record}')])
    project.ok("up", "--yes")
    assert lines(record)[-1] == f"update via {a}" and project.outputs()["step"]["id"] == first["id"]

    # A changed `triggers` replaces: the old `delete` first (delete_before_replace), then `create`.
    project.set_commands([step("v3", a, ["t2"])])
    diff = project.ok("preview", "--diff")
    assert "+-1 to replace" in diff, diff
    project.ok("up", "--yes")
    assert lines(record)[-2:] == [f"delete via {a}", f"create v3 via {a}"]
    replaced = project.outputs()["step"]["id"]
    assert replaced != first["id"]

    # A replacement that also moves the connection: the delete runs over the OLD connection.
    project.set_commands([step("v4", b, ["t3"])])
    project.ok("up", "--yes")
    assert lines(record)[-2:] == [f"delete via {a}", f"create v4 via {b}"]

    # refresh: pulumi-command's Read returns the state as it is; nothing runs, nothing changes.
    before = lines(record)
    refreshed = project.ok("refresh", "--yes")
    assert "2 unchanged" in refreshed and "updated" not in refreshed.split("Resources:")[-1], refreshed
    assert lines(record) == before
    project.ok("preview", "--expect-no-changes")

    project.ok("destroy", "--yes")
    assert lines(record)[-1] == f"delete via {b}"
    # The client key is a secret: in no printout.
    assert not any(sshd.client_key.strip().splitlines()[1] in text for text in project.printed)


def test_jump_host_stdin_environment_logging(project, sshd):
    a, b = sshd.ports
    project.set_commands([
        # Through the jump host on port b to the "node" on port a, the host keys pinned.
        {"name": "jumped", "create": 'echo "ran ${SSH_CONNECTION##* }"',
         "connection": connection(a, hostKey=sshd.host_public_key,
                                  proxy={"host": "127.0.0.1", "port": b, "hostKey": sshd.host_public_key})},
        # stdin is sent, `environment` travels by setenv, and logging "none" keeps both streams off the console.
        {"name": "quiet", "create": 'cat; echo "value=$ASCEND_STANDIN_VALUE"; echo quiet-err >&2',
         "stdin": "from-stdin-line\n", "environment": {"ASCEND_STANDIN_VALUE": "set-by-setenv"},
         "logging": "none", "connection": connection(a)},
        # logging "stderr": only stderr reaches the console.
        {"name": "errs", "create": "echo stdout-hidden; echo stderr-shown >&2", "logging": "stderr",
         "connection": connection(a)},
    ])
    up = project.ok("up", "--yes")
    outputs = project.outputs()
    assert outputs["jumped"]["stdout"] == f"ran {a}"
    assert f"target 127.0.0.1 port {a}" in sshd.log  # the jump host opened the tunnel (direct-tcpip)
    assert outputs["quiet"]["stdout"] == "from-stdin-line\nvalue=set-by-setenv"
    assert outputs["quiet"]["stderr"] == "quiet-err"
    assert "from-stdin-line" not in console(up) and "quiet-err" not in console(up), up
    assert outputs["errs"]["stdout"] == "stdout-hidden"
    assert "stderr-shown" in console(up) and "stdout-hidden" not in console(up), up
    project.ok("destroy", "--yes")


def test_wrong_host_key_and_failing_command(project, sshd, tmp_path):
    a, _ = sshd.ports
    touched = tmp_path / "touched"
    # A host key that is not the server's: the handshake is refused (ssh.FixedHostKey), nothing runs.
    project.set_commands([{"name": "pinned", "create": f"touch {touched}",
                           "connection": connection(a, hostKey=sshd.other_public_key, dialErrorLimit=1)}])
    refused = project.fails("up", "--yes")
    assert "after 1 failed attempts: ssh: handshake failed: ssh: host key mismatch" in refused, refused
    assert not touched.exists()

    # A failing command: pulumi-command's text, the script Go-quoted on one line, then the output.
    script = 'echo first-line\necho "the fault" >&2\nexit 3'
    project.set_commands([{"name": "failing", "create": script, "connection": connection(a)}])
    failed = project.fails("up", "--yes")
    expected = 'Process exited with status 3: running "echo first-line\\necho \\"the fault\\" >&2\\nexit 3":'
    assert expected in failed, failed
    after = failed.split(expected, 1)[1]
    assert "first-line" in after and "the fault" in after, failed
    project.ok("destroy", "--yes")


@pytest.fixture
def step_project(tmp_path, toolchain_bin, program_venv, sshd) -> Project:
    project = program_copy(tmp_path, STEP_PROGRAM, "remote-step", toolchain_bin, program_venv)
    for name in ("ascend_inference", "components"):
        shutil.copytree(PROJECT_ROOT / name, project.dir / name, ignore=shutil.ignore_patterns("__pycache__"))
    project.ok("config", "set", "--secret", "privateKey", stdin=sshd.client_key)
    project.ok("config", "set", "port", str(sshd.ports[0]))
    return project


TOKEN = "S3cret-t0ken-4711"


def data_step(version: str, fault: str = "") -> str:
    """A step's script that reads a token from its stdin, as the program's smoke tests
    read an API key or a password (`IFS= read -r`), and prints only a digest of it."""
    return ("#!/usr/bin/env bash\nset -euo pipefail\n"
            "IFS= read -r token || { echo 'no token on stdin' >&2; exit 11; }\n"
            f"{fault}"
            'echo "token of ${#token} characters, sha256 $(printf %s "$token" | sha256sum | cut -c1-12)"\n'
            f"echo {version}\n")


def test_a_step_with_data_on_stdin(step_project, tmp_path):
    """A remote step that takes data on stdin (components/common.py remote_step,
    `script_then_data`): the command is `bash -s`, the stdin the script then the data,
    a secret; the script's text in the triggers. Shown: the script reads exactly its
    data (a second line it does not read never runs as a command); `preview --diff` of
    a changed script shows the changed line, the stdin as [secret]; the replacement
    runs the old step's undo, which gets the state's stdin (pulumi-command sends it to
    `delete` too); a failure reads `running "bash -s":` and then the script's own line,
    a failing undo `running "bash -s undo":` and then the undo's own line;
    the data in no printout and not in clear in the state."""
    project = step_project
    undone, ran_data = tmp_path / "undone", tmp_path / "ran-the-data"
    # The token, and a line after it the script never reads.
    project.ok("config", "set", "--secret", "token", stdin=f"{TOKEN}\ntouch {ran_data}\n")

    def steps(create: str) -> None:
        project.set_config("steps", [{"name": "with-data", "data": "token", "create": create,
                                      "delete": f"echo undone >> {undone}\n"}])

    steps(data_step("version-1"))
    project.ok("up", "--yes")
    sha = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert project.outputs()["with-data"] == f"token of {len(TOKEN)} characters, sha256 {sha}\nversion-1"
    assert not ran_data.exists()

    steps(data_step("version-2"))
    diff = project.ok("preview", "--diff")
    # The engine shows a secret whole as [secret], and the script's own text (the last
    # trigger) line by line: the changed line, with the lines around it.
    assert re.search(r"~ stdin\s*: \[secret\] => \[secret\]", diff), diff
    changed = [line.strip() for line in diff.splitlines() if "version-" in line]
    assert changed == ["- echo version-1", "+ echo version-2"], diff
    assert "IFS= read -r token" in diff and "+-1 to replace" in diff, diff
    project.ok("up", "--yes")
    assert project.outputs()["with-data"].endswith("\nversion-2")
    # The undo of version 1 ran (delete before replace) with the state's stdin sent to it.
    assert undone.read_text() == "undone\n"

    steps(data_step("version-3", fault='echo "node node9: the fault, named first" >&2; exit 3\n'))
    failed = project.fails("up", "--yes")
    lines = [line.strip() for line in failed.splitlines()]
    head = 'error: Process exited with status 3: running "bash -s":'
    assert head in lines, failed
    assert lines[lines.index(head) + 1] == "node node9: the fault, named first", failed
    assert undone.read_text() == "undone\nundone\n"

    # A failing undo reads the same way: its command is `bash -s undo` (the undo rides
    # on the step's stdin, components/common.py `undo_then_script`), then its own line.
    fail_undo = tmp_path / "fail-undo"
    project.set_config("steps", [{"name": "with-data", "data": "token", "create": data_step("version-4"),
                                  "delete": f'if [ -e {fail_undo} ]; then echo "node node9: the undo fault, '
                                            f'named first" >&2; exit 4; fi\necho undone >> {undone}\n'}])
    project.ok("up", "--yes")
    fail_undo.touch()
    failed = project.fails("destroy", "--yes")
    lines = [line.strip() for line in failed.splitlines()]
    head = 'error: Process exited with status 4: running "bash -s undo":'
    assert head in lines, failed
    assert lines[lines.index(head) + 1] == "node node9: the undo fault, named first", failed
    fail_undo.unlink()
    project.ok("destroy", "--yes")
    assert undone.read_text() == "undone\nundone\nundone\n"
    assert not ran_data.exists()

    for text in project.printed:
        assert TOKEN not in text
    assert TOKEN not in project.ok("stack", "export")
    state = json.dumps([p.read_text() for p in (project.dir.parent / "state").rglob("*.json")])
    assert TOKEN not in state


@pytest.mark.parametrize("plugin", ["pulumi-resource-command", "pulumi-resource-docker"])
def test_guard_refuses_without_the_variable(plugin):
    env = {k: v for k, v in os.environ.items() if k != plugins.GUARD_VARIABLE}
    done = subprocess.run([str(plugins.BIN_DIR / plugin), "127.0.0.1:1"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert plugins.GUARD_VARIABLE in line and "tests only" in line
    # And the fixtures' environment is what lets it start (unless the real plugins are asked for).
    added = plugins.environment("/usr/bin")
    if plugins.use_real_plugins():
        assert added == {}
    else:
        assert added == {"PATH": f"{plugins.BIN_DIR}:/usr/bin", plugins.GUARD_VARIABLE: "1",
                         plugins.PYTHON_VARIABLE: sys.executable}
