"""A remote step's stdin when it takes data (components/common.py `script_then_data`)
and when it carries the step's undo (`undo_then_script`), fed to `bash -s` (and to the
undo's `bash -s undo`) as sshd feeds a command: through a pipe and through a socketpair (the
two kinds of stdin OpenSSH's session gives a command). bash reads the script one byte
at a time from either, parses the `{ ...; }` group whole, and the script's own reads
of stdin get exactly the data; data the script does not read never runs."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from components.common import SCRIPT_ON_STDIN, UNDO_ON_STDIN, script_then_data, undo_then_script

pytestmark = pytest.mark.graph

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def bash_s(stdin: str, kind: str, command: str = SCRIPT_ON_STDIN) -> subprocess.CompletedProcess[str]:
    """`bash -s` (or the undo's `bash -s undo`) with `stdin` on a pipe or a socketpair,
    written all at once as pulumi-command writes it (then EOF)."""
    argv = command.split()
    if kind == "pipe":
        return subprocess.run(argv, input=stdin, capture_output=True, text=True)
    ours, theirs = socket.socketpair()
    with ours:
        process = subprocess.Popen(argv, stdin=theirs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        theirs.close()
        ours.sendall(stdin.encode())
        ours.shutdown(socket.SHUT_WR)
        out, err = process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
def test_the_script_reads_its_line_and_the_key_to_the_end(kind):
    """As the smoke tests read a password (`IFS= read -r`) and the copies a key
    (`ssh-add -` reads to the end); a heredoc, a function and an EXIT trap parse
    as they do when the script is the command."""
    script = ("#!/usr/bin/env bash\nset -euo pipefail\ntrap 'echo trap-ran >&2' EXIT\n"
              "IFS= read -r password\nkey=$(cat)\n"
              "shown() { printf '%s %s\\n' \"$1\" \"$(printf %s \"$2\" | wc -c)\"; }\n"
              "shown password \"$password\"\nshown key \"$key\"\n"
              "cat <<'END'\nafter the data\nEND\n")
    done = bash_s(script_then_data(script, "S3cret pass\n" + KEY), kind)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"password 11\nkey {len(KEY) - 1}\nafter the data\n"
    assert done.stderr == "trap-ran\n"


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
def test_data_the_script_does_not_read_never_runs(kind, tmp_path: Path):
    ran = tmp_path / "ran"
    for script in ("echo only-this", "echo only-this\n", "IFS= read -r one\necho only-this\n"):
        done = bash_s(script_then_data(script, f"first line\ntouch {ran}\n"), kind)
        assert (done.returncode, done.stdout, done.stderr) == (0, "only-this\n", ""), script
    assert not ran.exists()


def test_the_scripts_exit_status_is_the_steps():
    """A failing step fails with its status and its own line (pulumi-command then
    reports `Process exited with status N`), under `set -e` or by `exit N`."""
    failed = bash_s(script_then_data("set -e\necho 'node node1: the fault' >&2\nfalse\necho never\n", "x\n"),
                    "pipe")
    assert (failed.returncode, failed.stdout, failed.stderr) == (1, "", "node node1: the fault\n")
    assert bash_s(script_then_data("IFS= read -r x\nexit 7\n", "x\n"), "socketpair").returncode == 7


UNDO = ("set -euo pipefail\nrm -f \"$WORK/done\"\necho undone >> \"$WORK/undo.log\"\n"
        "cat <<'END'\nundo heredoc\nEND\n")
SCRIPT = "set -euo pipefail\necho made > \"$WORK/done\"\necho script-ran\n"


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
@pytest.mark.parametrize("data", [None, "S3cret pass\n" + KEY])
def test_one_stdin_runs_the_script_as_bash_s_and_the_undo_as_bash_s_undo(kind, data, tmp_path: Path):
    """The step's command runs only its script (and the script still reads exactly its
    data); the undo's command runs only the undo, after reading the whole stdin (so
    pulumi-command's write of it never meets a closed channel); data never runs."""
    script = SCRIPT if data is None else SCRIPT + "IFS= read -r password\necho \"read ${#password}\"\n"
    rest = script if data is None else script_then_data(script, data + f"touch {tmp_path}/ran-data\n")
    stdin = undo_then_script(UNDO.replace("$WORK", str(tmp_path)), rest.replace("$WORK", str(tmp_path)))

    made = bash_s(stdin, kind)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "script-ran\n" + ("" if data is None else "read 11\n")
    assert (tmp_path / "done").exists() and not (tmp_path / "undo.log").exists()

    undone = bash_s(stdin, kind, UNDO_ON_STDIN)
    assert (undone.returncode, undone.stdout, undone.stderr) == (0, "undo heredoc\n", "")
    assert not (tmp_path / "done").exists() and (tmp_path / "undo.log").read_text() == "undone\n"
    assert not (tmp_path / "ran-data").exists()


def test_a_failing_undo_fails_with_its_own_line_and_status():
    """pulumi-command then reports `Process exited with status 4: running "bash -s undo":`
    and the undo's own line right after it."""
    stdin = undo_then_script("set -e\necho 'node node1: cannot stop the engine' >&2\nexit 4\necho never\n",
                             "echo the-script\n")
    failed = bash_s(stdin, "socketpair", UNDO_ON_STDIN)
    assert (failed.returncode, failed.stdout, failed.stderr) == (4, "", "node node1: cannot stop the engine\n")
    assert bash_s(stdin, "pipe").stdout == "the-script\n"
