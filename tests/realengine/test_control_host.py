"""What the README says about a control host, shown with the real CLI:
which Python runs the program, and how a resource plugin is installed on a
host without internet.

The program's Python: the pinned language host (v3.68.0, docs/toolchain.md)
does not read `virtualenv: venv` from Pulumi.yaml (it takes it from a
`-virtualenv` flag; the CLI of v3.274.1 starts a language host with the
engine's address alone and passes runtime options in its requests), so the program
runs under the first `python3` on PATH. The README's user path therefore
activates the project's venv before `pulumi`. A probe project with the same
`runtime:` block as Pulumi.yaml records which interpreter ran it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from tests.realengine.conftest import PROJECT_ROOT
from tests.realengine.projects import pulumi_env

PROBE = """\
import sys

import pulumi

with open("ran-under.txt", "w") as out:
    out.write(sys.prefix)
pulumi.export("prefix", sys.prefix)
"""


def probe_project(tmp_path: Path) -> Path:
    """A project whose Pulumi.yaml has this project's own `runtime:` block and a
    `venv` holding the project's requirements (as the README makes it)."""
    runtime = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())["runtime"]
    assert runtime["options"]["virtualenv"] == "venv"
    work = tmp_path / "probe"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(yaml.safe_dump({"name": "probe", "runtime": runtime}))
    (work / "__main__.py").write_text(PROBE)
    return work


def run(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    # Bounded by the work: a one-output program, no resources, no plugins to fetch.
    return subprocess.run(["pulumi", *args, "--non-interactive"], cwd=work, env=env, capture_output=True, text=True)


def test_the_program_runs_under_the_first_python3_on_path(tmp_path, toolchain_bin, program_venv):
    work = probe_project(tmp_path)
    (work / "venv").symlink_to(program_venv)
    (tmp_path / "state").mkdir()
    # A python3 first on PATH that has no pulumi: a user who installed the
    # requirements into the project's venv only, and did not activate it.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
    env = pulumi_env(tmp_path, toolchain_bin)
    env["PATH"] = f"{bare / 'bin'}:{env['PATH']}"
    assert run(work, env, "stack", "init", "dev").returncode == 0
    unactivated = run(work, env, "preview")
    assert unactivated.returncode != 0
    assert "No module named 'pulumi'" in unactivated.stdout + unactivated.stderr
    assert not (work / "ran-under.txt").exists()

    # `. venv/bin/activate` puts the venv's python3 first: the program runs there.
    env["PATH"] = f"{work / 'venv' / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(work / "venv")
    activated = run(work, env, "preview")
    assert activated.returncode == 0, activated.stdout + activated.stderr
    assert Path((work / "ran-under.txt").read_text()).resolve() == program_venv.resolve()


def plugin_tarball(tmp_path: Path, name: str, version: str) -> Path:
    """A plugin archive as Pulumi's site serves them (the binary at its top level);
    its binary here is a script that is never started."""
    binary = tmp_path / f"pulumi-resource-{name}"
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    archive = tmp_path / f"pulumi-resource-{name}-v{version}-linux-amd64.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, arcname=binary.name)
    return archive


def test_a_plugin_archive_installs_without_network_and_its_checksum_is_the_users_job(tmp_path, toolchain_bin):
    env = pulumi_env(tmp_path, toolchain_bin)
    archive = plugin_tarball(tmp_path, "command", "1.2.1")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    # The README's check first: sha256sum -c against the digest the mirror publishes.
    checked = subprocess.run(["sha256sum", "-c", "-"], input=f"{digest}  {archive.name}\n", cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0 and ": OK" in checked.stdout
    done = subprocess.run(["pulumi", "plugin", "install", "resource", "command", "1.2.1", "--file", str(archive)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = Path(env["PULUMI_HOME"]) / "plugins" / "resource-command-v1.2.1" / "pulumi-resource-command"
    assert installed.is_file() and os.access(installed, os.X_OK)
    listed = subprocess.run(["pulumi", "plugin", "ls"], env=env, capture_output=True, text=True)
    rows = [line.split()[:3] for line in listed.stdout.splitlines()]
    assert ["command", "resource", "1.2.1"] in rows, listed.stdout

    # Why the README checks the archive itself: with --file the CLI does not
    # apply --checksum (v3.274.1 installs an archive whose digest differs).
    env["PULUMI_HOME"] = str(tmp_path / "other-home")
    wrong = subprocess.run(["pulumi", "plugin", "install", "resource", "command", "1.2.1", "--file", str(archive),
                            "--checksum", "0" * 64], env=env, capture_output=True, text=True)
    assert wrong.returncode == 0, wrong.stdout + wrong.stderr
    assert (Path(env["PULUMI_HOME"]) / "plugins" / "resource-command-v1.2.1" / "pulumi-resource-command").is_file()
