"""The GPUStack model resource (components/gpustack_model.py) under the REAL
Pulumi engine, against a real GPUStack 2.3.0 server.

The real `pulumi` CLI, the Python language host and the dynamic-provider
plugin (`pulumi-resource-pulumi-python`, installed by tools/pulumi-toolchain.sh)
run a small program holding only that resource (gpustack_model_program/), on
a copy of the project's pure core and components, with a file backend and
passphrase secrets. The server is the real-software tier's (GPUStack from
PyPI on PostgreSQL, in a loopback-only network namespace; see
tests/realsoftware/conftest.py), so every `pulumi` command runs inside that
namespace. No worker joins (none has NPUs here), so the resource is asked
not to wait for an instance (readyTimeoutS 0); the worker wait, the instance
wait and its failure report are shown by tests/realsoftware.

Shown here: `pulumi up` creates the model; a backend-parameter change is an
update in `pulumi preview --diff`; a hand edit through the API is seen by
`pulumi refresh` and put back by the next `pulumi up`; a new model path is a
replacement; `pulumi destroy` removes the model; the admin password appears
in no printout and not in clear in the state.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from ascend_inference.stackfile import load_stack
from tests.realengine.conftest import pulumi_env
from tests.realengine.projects import copy_program_with_sources
from tests.realsoftware.conftest import gpustack_stack  # noqa: F401  (the real server, a session fixture)
from tests.realsoftware.test_gpustack_api import STACK, Api

PROGRAM = Path(__file__).parent / "gpustack_model_program"
PASSWORD = "engine-tier-Adm1n!&="


class Project:
    def __init__(self, directory: Path, env: dict, netns: list[str]):
        self.dir, self.env, self.netns = directory, env, netns
        self.printed: list[str] = []

    def run(self, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.netns, "pulumi", *args, "--non-interactive"], cwd=self.dir, env=self.env,
                              input=stdin, capture_output=True, text=True, timeout=timeout)
        self.printed.append(done.stdout + done.stderr)
        return done

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"pulumi {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def set_model(self, model: dict) -> None:
        path = self.dir / "Pulumi.gpustack.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["config"]["gpustack-model-only:model"] = model
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def program_copy(tmp_path: Path, toolchain_bin: Path, program_venv: Path, netns: list[str]) -> Project:
    work = tmp_path / "gpustack-model-only"
    copy_program_with_sources(work, PROGRAM, program_venv)
    (tmp_path / "state").mkdir()
    return Project(work, pulumi_env(tmp_path, toolchain_bin, drop=("PYTEST",)), netns)


@pytest.fixture
def project(tmp_path, toolchain_bin, program_venv, gpustack_stack) -> Project:  # noqa: F811
    return program_copy(tmp_path, toolchain_bin, program_venv, gpustack_stack.netns)


def test_a_failure_is_one_message_without_a_traceback(tmp_path, toolchain_bin, program_venv):
    """The model resource failing under the real engine: the dynamic provider's server
    (pulumi v3.272.0 sdk/python/lib/pulumi/dynamic/__main__.py `_abort_with_traceback`)
    sends `traceback.format_exc()` as the error, which the CLI prints after `error:`; the
    resource's failure is one line instead, naming what failed (components/gpustack_model.py
    `one_message`). No server is needed: nothing listens at the URL (a loopback port
    this test bound and closed), so the login gets no answer within the resource's 1 s wait."""
    project = program_copy(tmp_path, toolchain_bin, program_venv, [])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    project.ok("stack", "select", "--create", "gpustack")
    project.ok("config", "set", "serverUrl", url)
    project.ok("config", "set", "workerTimeoutS", "1")
    project.ok("config", "set", "--secret", "adminPassword", stdin=PASSWORD)
    project.set_model({"name": "DeepSeek-R1", "source": "local_path", "local_path": "/models/r1", "replicas": 1})
    done = project.run("up", "--yes")
    printed = done.stdout + done.stderr
    assert done.returncode != 0, printed
    message = f"GpustackModelError: GPUStack at {url} did not answer the login: [Errno 111] Connection refused " \
              "(after 1 s)"
    lines = [line.strip() for line in printed.splitlines()]
    assert f"error: {message}" in lines, printed
    assert "Traceback" not in printed and "dynamic/__main__.py" not in printed, printed
    assert PASSWORD not in printed


def test_model_resource_under_the_real_engine(project, gpustack_stack):  # noqa: F811
    gpustack_stack.start_server("--token", "engine-tier-token", "--bootstrap-password", PASSWORD)
    loaded = load_stack(STACK)
    request = loaded.spec.engine_plugin.deployment_request(loaded.spec, loaded.plan)
    name = request["name"]
    api = Api(gpustack_stack, PASSWORD)

    project.ok("stack", "select", "--create", "gpustack")
    project.ok("config", "set", "serverUrl", gpustack_stack.url)
    project.ok("config", "set", "--secret", "adminPassword", stdin=PASSWORD)
    project.set_model(request)

    # up: the model is created through the API.
    up = project.ok("up", "--yes")
    assert "+ 1 created" in up or "1 created" in up, up
    [model] = api.models(name)
    assert model["backend_parameters"] == request["backend_parameters"]
    assert project.ok("stack", "output", "model_id").strip() == str(model["id"])
    again = project.ok("preview", "--diff")
    assert "2 unchanged" in again and "to update" not in again, again

    # A backend-parameter change: an update in place, not a replacement.
    changed = {**request, "backend_parameters": [*request["backend_parameters"], "--max-seq-len=16384"]}
    project.set_model(changed)
    diff = project.ok("preview", "--diff")
    assert "~ 1 to update" in diff and "replace" not in diff.split("Resources:")[-1], diff
    assert "--max-seq-len=16384" in diff
    project.ok("up", "--yes")
    [updated] = api.models(name)
    assert updated["id"] == model["id"] and updated["backend_parameters"][-1] == "--max-seq-len=16384"

    # A hand edit in GPUStack (as the UI does it): refresh sees it, the next up puts the stack's values back.
    api.put(f"/v2/models/{model['id']}", {**updated, "backend_parameters": ["--max-seq-len=2048"], "replicas": 3})
    refreshed = project.ok("refresh", "--yes", "--diff")
    assert "1 updated" in refreshed, refreshed
    # The drift as read from the server, in the refresh's diff.
    assert "--max-seq-len=2048" in refreshed, refreshed
    drift = project.ok("preview", "--diff")
    assert "~ 1 to update" in drift, drift
    project.ok("up", "--yes")
    [restored] = api.models(name)
    assert restored["backend_parameters"] == changed["backend_parameters"] and restored["replicas"] == 1
    assert "2 unchanged" in project.ok("preview", "--diff")

    # A new model path is another model: a replacement (deleted first: GPUStack keys models by name).
    project.set_model({**changed, "local_path": "/models/elsewhere"})
    moved = project.ok("preview", "--diff")
    assert "+-1 to replace" in moved or "1 to replace" in moved, moved

    # destroy removes the model (and its instances).
    project.ok("destroy", "--yes")
    assert api.models(name) == []
    assert api.get(f"/v2/model-instances?model_id={model['id']}")["items"] == []

    if os.environ.get("GPUSTACK_ENGINE_PRINTOUT"):
        Path(os.environ["GPUSTACK_ENGINE_PRINTOUT"]).write_text("\n=====\n".join(project.printed))
    # The admin password: in no printout, and only encrypted in the state.
    for text in project.printed:
        assert PASSWORD not in text
    exported = project.ok("stack", "export", "--show-secrets=false")
    assert PASSWORD not in exported
    state = json.dumps([p.read_text() for p in (project.dir.parent / "state").rglob("*.json")])
    assert PASSWORD not in state
