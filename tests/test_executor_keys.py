"""Graph tier (a small program under the SDK's mocks, performed by the
executor): where the emulator's executor (emulator/executor.py) keeps the
SSH private keys the program's remote commands carry. `ssh -i` needs a file;
it lives in a root-only directory beside the executor's state file and goes
when no resource is left to undo, so a rollout leaves no key behind in the
shared temp directory. The executor's code path is the real one; only `ssh`
is a stand-in on PATH that records the key file it was given."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from emulator.executor import Executor
from tests.conftest import temp_files_holding

pytestmark = pytest.mark.graph

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key-{tag}\n-----END OPENSSH PRIVATE KEY-----\n"

FAKE_SSH = """#!/bin/sh
# stand-in ssh: records the -i file and that it could read it, runs nothing
while [ $# -gt 0 ]; do
  case "$1" in -i) shift; echo "$1" >> "$SSH_LOG"; cat "$1" > /dev/null || exit 9;; esac
  shift
done
"""


def program_with_key(key: str, names: tuple[str, ...]):
    """A Pulumi program of remote commands whose connection carries `key` as a secret, as
    components/common.py remote_step builds them."""
    def program():
        import pulumi
        from pulumi_command import remote

        connection = remote.ConnectionArgs(host="192.0.2.10", port=22, user="root",
                                           private_key=pulumi.Output.secret(key))
        for name in names:
            remote.Command(name, connection=connection, create="true", delete="true", triggers=[name])
    return program


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SSH_LOG", str(log))
    return log



def test_keys_stay_beside_the_state_file_and_go_with_the_last_resource(tmp_path, fake_ssh):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    key = KEY.format(tag=os.urandom(8).hex())
    executor = Executor(state_dir / "state.json", log=lambda m: None)
    report = executor.up(program_with_key(key, ("node0-preflight", "node1-preflight")), {}, stack="keys")
    assert report.error is None, report.error
    assert sorted(report.did("create")) == ["node0-preflight", "node1-preflight"]
    used = set(fake_ssh.read_text().split())
    assert len(used) == 1, used  # one file per key, not one per step
    key_file = Path(used.pop())
    assert state_dir in key_file.parents
    assert key_file.read_text() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    # The state names the file (destroy needs the key again), never the key itself.
    state_text = (state_dir / "state.json").read_text()
    assert str(key_file) in state_text and "not-a-real-key" not in state_text
    assert temp_files_holding(key) == []

    report = executor.destroy()
    assert report.error is None and len(report.did("delete")) == 2
    # Each undo ran `ssh -i` with the same file, which was still there.
    assert fake_ssh.read_text().split() == [str(key_file)] * 4
    assert not key_file.parent.exists()
    assert sorted(p.name for p in state_dir.iterdir()) == ["state.json"]


def test_a_run_whose_first_step_fails_leaves_no_key(tmp_path, fake_ssh):
    key = KEY.format(tag=os.urandom(8).hex())
    (tmp_path / "bin" / "ssh").write_text(FAKE_SSH.replace("runs nothing", "then fails") + "exit 1\n")
    executor = Executor(tmp_path / "state.json", log=lambda m: None)
    report = executor.up(program_with_key(key, ("node0-preflight",)), {}, stack="keys")
    assert "node0-preflight failed on 192.0.2.10" in str(report.error), report.error
    assert [Path(used).parent for used in fake_ssh.read_text().split()] == [executor.key_dir]
    # Nothing recorded, so nothing to undo: the key is not kept.
    assert executor.state["resources"] == {}
    assert not executor.key_dir.exists()
    assert temp_files_holding(key) == []
