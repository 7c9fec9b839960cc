"""The program's GPUStack scripts against a real GPUStack 2.x server (tier 4).

The scripts are taken from the Pulumi program itself, run under the SDK's
mocks (`ascendctl.preview.stack.record_stack`): the `create`/`delete` of the
`gpustack-model` command, the `smoke-test-request` command and the secret
readers, exactly as `pulumi up` would send them, for runbook 002's stack with
the server at 127.0.0.1 and a short readiness timeout. They run with bash
inside the loopback-only namespace of conftest.py, the admin password on stdin.

No worker has NPUs (none joins at all), so an instance never leaves `pending`
("No available workers"): what is verified is everything up to that, on the
real server: login, the cluster lookup, create, update on a second run, the
request body as the server stores it, the instance-state polling on the real
answer, the timeout exit, the model route that `/v1/completions` resolves,
and the delete.
"""
from __future__ import annotations

import copy
import json
import shutil
import stat
from pathlib import Path

import pytest

from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.values import Secret

pytestmark = pytest.mark.realsoftware

STACK = "dp4-ep32-gpustack"
NS = "ascend-inference:"
# Every state of GPUStack 2.x's ModelInstanceStateEnum.
INSTANCE_STATES = {"pending", "analyzing", "scheduled", "initializing", "downloading", "starting", "running",
                   "error", "unreachable"}


def program_scripts(stack, *, timeout_s: int = 2, extra_backend_parameters: list[str] | None = None) -> dict:
    """What the Pulumi program sends for runbook 002's stack, with the server at 127.0.0.1:<its API port>."""
    loaded = load_stack(STACK)
    config = copy.deepcopy(loaded.raw_config)
    config[f"{NS}nodes"][0]["host"] = "127.0.0.1"
    engine = config[f"{NS}engine"]
    engine["port"] = stack.api_port
    engine["ready_timeout_s"] = timeout_s
    if extra_backend_parameters is not None:
        engine["extra_backend_parameters"] = extra_backend_parameters
    changed = loaded_with_config(loaded, config)
    graph = record_stack(changed)
    model = graph.by_name("gpustack-model-deploy")
    assert isinstance(model.inputs["stdin"], Secret), "the admin password must reach the script as a secret"
    return {
        "deploy": model.inputs["create"],
        "undeploy": model.inputs["delete"],
        "smoke": graph.by_name("smoke-test-request").inputs["create"],
        "read-token": graph.by_name("gpustack-token").inputs["create"],
        "read-password": graph.by_name("gpustack-admin-password").inputs["create"],
        "request": changed.spec.engine_plugin.deployment_request(changed.spec, changed.plan),
        "name": changed.spec.model.name,
    }


class Api:
    """Direct API calls (curl inside the namespace) to check what the scripts did."""

    def __init__(self, stack, password: str):
        self.stack = stack
        self.jar = str(stack.root / "test-cookies")
        got = stack.curl(["-sS", "-c", self.jar, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "--data-urlencode", "username=admin", "--data-urlencode", "password@-",
                          f"{stack.url}/auth/login"], stdin=password)
        assert got.stdout == "200", f"login: {got.stdout} {got.stderr}"

    def get(self, path: str):
        got = self.stack.curl(["-sS", "-b", self.jar, "-w", "\n%{http_code}", f"{self.stack.url}{path}"])
        body, _, code = got.stdout.rpartition("\n")
        assert code == "200", f"GET {path}: {code} {body} {got.stderr}"
        return json.loads(body)

    def models(self, name: str) -> list[dict]:
        return [m for m in self.get(f"/v2/models?search={name}")["items"] if m["name"] == name]


def argv_recorders(directory: Path) -> tuple[list[Path], Path]:
    """`curl` and `python3` stand-ins that log their arguments, then run the real ones."""
    directory.mkdir(exist_ok=True)
    log = directory / "argv.log"
    for tool in ("curl", "python3"):
        real = shutil.which(tool)
        shim = directory / tool
        shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return [directory], log


def docker_stand_in(directory: Path, container: str, data_dir: Path) -> list[Path]:
    """`docker exec <container> CMD...` run here, with the container's /var/lib/gpustack
    being the server's --data-dir (the runbook's volume gpustack-data:/var/lib/gpustack)."""
    directory.mkdir(exist_ok=True)
    shim = directory / "docker"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        f'[ "$1" = exec ] && [ "$2" = {container} ] || {{ echo "docker stand-in: unexpected $*" >&2; exit 99; }}\n'
        "shift 2; args=()\n"
        f'for a in "$@"; do args+=("${{a/#\\/var\\/lib\\/gpustack/{data_dir}}}"); done\n'
        'exec "${args[@]}"\n')
    shim.chmod(0o755)
    return [directory]


def check(done, code: int, what: str) -> None:
    assert done.returncode == code, (f"{what}: exit {done.returncode}, wanted {code}\n"
                                     f"stdout: {done.stdout}\nstderr: {done.stderr}")


def test_fresh_2x_server_has_no_cluster_and_deploy_says_so(gpustack_stack):
    """A 2.x server started as the program's server container starts it (no --enable-worker, no --token)
    writes no /var/lib/gpustack/token and has no cluster: a deployment has nowhere to
    go. The deploy script stops with exit 13 and says why, and creates nothing.
    The password has form-encoding specials, to check the login's encoding."""
    password = "p&ss=w%rd+ ;'\"x"
    gpustack_stack.start_server("--bootstrap-password", password)
    assert not (gpustack_stack.data_dir / "token").exists()
    scripts = program_scripts(gpustack_stack)
    done = gpustack_stack.run_script(scripts["deploy"], "deploy-no-cluster", password + "\n")
    check(done, 13, "deploy without a cluster")
    assert "no default cluster" in done.stderr and "--enable-worker" in done.stderr
    api = Api(gpustack_stack, password)
    assert api.get("/v2/clusters")["items"] == []
    assert api.models(scripts["name"]) == []
    no_password = gpustack_stack.run_script(scripts["deploy"], "deploy-no-password", "")
    check(no_password, 11, "deploy without a password on stdin")
    assert "no GPUStack admin password on stdin" in no_password.stderr


def test_deploy_update_poll_timeout_smoke_undeploy(gpustack_stack, tmp_path):
    # A server with a default cluster, as with --enable-worker (which cannot run here:
    # the embedded worker downloads tools from the internet at start) or --token.
    gpustack_stack.start_server("--token", "test-registration-token")
    data = gpustack_stack.data_dir
    scripts = program_scripts(gpustack_stack, timeout_s=2)
    name, request = scripts["name"], scripts["request"]

    # The secret readers: the runbook's paths, as the server writes them (docker exec stand-in).
    container = load_stack(STACK).spec.container.name
    docker = docker_stand_in(tmp_path / "docker", container, data)
    read = gpustack_stack.run_script(scripts["read-password"], "read-password", "", docker)
    check(read, 0, "read initial_admin_password")
    password = read.stdout.strip()            # as GpustackModel does
    token = gpustack_stack.run_script(scripts["read-token"], "read-token", "", docker)
    check(token, 0, "read token")
    assert token.stdout.strip() == "test-registration-token"
    stdin = password + "\n"                   # as GpustackModel sends it
    for text in scripts.values():
        assert password not in str(text)
    path, argv_log = argv_recorders(tmp_path / "argv")
    api = Api(gpustack_stack, password)
    cluster = next(c for c in api.get("/v2/clusters")["items"] if c["is_default"])
    assert api.models(name) == []

    # First run: POST, then polling until the (short) timeout.
    first = gpustack_stack.run_script(scripts["deploy"], "deploy-1", stdin, path)
    check(first, 7, "first deploy (no worker: never running)")
    assert f"model {name} not running after 2 s" in first.stderr
    assert "pending (No available workers)" in first.stderr, first.stderr
    [model] = api.models(name)
    for key, value in request.items():
        if key != "enable_model_route":       # not a column: it creates the route
            assert model[key] == value, f"{key}: server stored {model[key]!r}, sent {value!r}"
    assert model["cluster_id"] == cluster["id"]
    routes = [r for r in api.get("/v2/model-routes")["items"] if r["name"] == name]
    assert [r["created_model_id"] for r in routes] == [model["id"]]
    instances = api.get(f"/v2/model-instances?model_id={model['id']}")["items"]
    assert instances and {i["state"] for i in instances} <= INSTANCE_STATES
    assert all(i["model_id"] == model["id"] and i["state"] == "pending" for i in instances)

    # Second run with a changed parameter: PUT on the same model, not a second one.
    changed = program_scripts(gpustack_stack, timeout_s=2, extra_backend_parameters=["--max-seq-len=16384"])
    second = gpustack_stack.run_script(changed["deploy"], "deploy-2", stdin, path)
    check(second, 7, "second deploy")
    [updated] = api.models(name)
    assert updated["id"] == model["id"]
    assert updated["backend_parameters"] == request["backend_parameters"] + ["--max-seq-len=16384"]
    assert updated["cluster_id"] == cluster["id"]
    writes = [line for line in argv_log.read_text().splitlines()
              if line.startswith("curl ") and ("-X POST" in line or "-X PUT" in line) and "/auth/login" not in line]
    assert [w.split("-X ")[1].split()[0] + " " + w.split()[-1] for w in writes] == [
        f"POST {gpustack_stack.url}/v2/models", f"PUT {gpustack_stack.url}/v2/models/{model['id']}"], writes

    # The smoke request reaches the deployment through its route: 503 until it runs
    # (a deployment without a route answers 404 "Model not found").
    smoke = gpustack_stack.run_script(scripts["smoke"], "smoke", stdin, path)
    check(smoke, 8, "smoke before any instance runs")
    assert "HTTP 503" in smoke.stderr and "No running instances available" in smoke.stderr

    # A wrong password: a clear refusal, for deploy and undeploy alike (never a silent success).
    for which in ("deploy", "undeploy"):
        refused = gpustack_stack.run_script(scripts[which], f"{which}-refused", "wrong\n", path)
        check(refused, 11, f"{which} with a wrong password")
        assert "login as admin failed: HTTP 401" in refused.stderr
    assert len(api.models(name)) == 1

    # Undeploy deletes the model, its instances and its route; a second undeploy has nothing to do.
    gone = gpustack_stack.run_script(scripts["undeploy"], "undeploy", stdin, path)
    check(gone, 0, "undeploy")
    assert f"deleted model {name} (id {model['id']})" in gone.stdout
    assert api.models(name) == []
    assert api.get(f"/v2/model-instances?model_id={model['id']}")["items"] == []
    assert [r for r in api.get("/v2/model-routes")["items"] if r["name"] == name] == []
    again = gpustack_stack.run_script(scripts["undeploy"], "undeploy-again", stdin, path)
    check(again, 0, "second undeploy")
    assert "nothing to delete" in again.stdout

    # The password never was an argument of anything the scripts ran, nor in their output.
    argv = argv_log.read_text()
    assert "/auth/login" in argv and "/v2/models" in argv
    assert password not in argv
    for done in (first, second, smoke, gone, again):
        assert password not in done.stdout + done.stderr
