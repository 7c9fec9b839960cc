"""The program's GPUStack parts against a real GPUStack 2.x server (tier 4).

What runs is taken from the Pulumi program itself, under the SDK's mocks
(`ascendctl.preview.stack.record_stack`): the inputs of the
`gpustack-model-deploy` resource (GPUStack's model deployment, a
`pulumi.dynamic` resource run from the control host) and the scripts of the
secret readers and the smoke request, for runbook 002's stack with the server
at 127.0.0.1. The provider's create, read, update, delete and diff run
inside the loopback-only namespace of conftest.py (provider_runner.py),
exactly the calls the Pulumi engine's dynamic-provider host makes.

No worker has NPUs here (none joins at all), so an instance never leaves
`pending` ("No available workers"): what is verified is everything up to that,
on the real server: login, the cluster lookup, the worker readiness check
(a worker that never registers is named), create, read (a hand edit through
the API shows), update in place, the diff rules, the instance-state polling on
the real answer and its timeout, the model route that `/v1/completions`
resolves, and the delete.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from ascend_inference import safe_values
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.values import Secret
from tests.realsoftware.conftest import spawn, stop_pid
from tests.step_script import step_script
from tests.test_mindie_tls import _certificates

pytestmark = pytest.mark.realsoftware

STACK = "dp4-ep32-gpustack"
NS = "ascend-inference:"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _plain(value):
    """Inputs as a provider receives them: secret wrappers removed."""
    if isinstance(value, Secret):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def program_parts(stack, *, ready_timeout_s: int = 2, **engine_settings) -> dict:
    """What the Pulumi program sends for runbook 002's stack, with the server at 127.0.0.1:<its API port>
    (and `engine_settings` over the stack file's engine section)."""
    loaded = load_stack(STACK)
    config = copy.deepcopy(loaded.raw_config)
    config[f"{NS}nodes"][0]["host"] = "127.0.0.1"
    engine = config[f"{NS}engine"]
    engine["port"] = stack.api_port
    engine["ready_timeout_s"] = ready_timeout_s
    engine.update(engine_settings)
    # A stack file may not name a loopback host (ascend_inference/safe_values.py: every
    # node would reach itself); this tier's server answers only on its namespace's
    # loopback, so that one rule lets 127.0.0.1 through here, for node0 alone.
    refuse = safe_values._unusable_ip

    def loopback_server_allowed(ip):
        return None if str(ip) == "127.0.0.1" else refuse(ip)

    with mock.patch.object(safe_values, "_unusable_ip", loopback_server_allowed):
        changed = loaded_with_config(loaded, config)
        graph = record_stack(changed)
    model = graph.by_name("gpustack-model-deploy")
    assert isinstance(model.inputs["password"], Secret), "the admin password must reach the provider as a secret"
    props = {k: _plain(v) for k, v in model.inputs.items() if k != "__provider"}
    return {
        "props": props,
        "smoke": step_script(graph.by_name("smoke-test-request").inputs),
        "read-token": step_script(graph.by_name("gpustack-token").inputs),
        "read-password": step_script(graph.by_name("gpustack-admin-password").inputs),
        "request": changed.spec.engine_plugin.deployment_request(changed.spec, changed.plan),
        "name": changed.spec.model.name,
        "loaded": changed,
    }


def provider(stack, op: str, **request) -> tuple[dict, str]:
    """One provider call inside the server's namespace: (answer, progress lines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    done = subprocess.run(stack.netns + [sys.executable, "-m", "tests.realsoftware.provider_runner"],
                          input=json.dumps({"op": op, **request}), capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env, timeout=300)
    assert done.returncode == 0, f"provider {op}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout), done.stderr


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

    def put(self, path: str, body: dict) -> dict:
        got = self.stack.curl(["-sS", "-b", self.jar, "-w", "\n%{http_code}", "-X", "PUT",
                               "-H", "Content-Type: application/json", "--data-binary", "@-",
                               f"{self.stack.url}{path}"], stdin=json.dumps(body))
        answer, _, code = got.stdout.rpartition("\n")
        assert code == "200", f"PUT {path}: {code} {answer} {got.stderr}"
        return json.loads(answer)

    def models(self, name: str) -> list[dict]:
        return [m for m in self.get(f"/v2/models?search={name}")["items"] if m["name"] == name]


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



def test_fresh_2x_server_has_no_cluster_and_the_model_says_so(gpustack_stack):
    """A 2.x server started without --enable-worker or --token writes no
    /var/lib/gpustack/token and has no cluster: the model resource stops with
    one line saying why, and creates nothing. The password has form-encoding
    specials, to check the login's encoding."""
    password = "p&ss=w%rd+ ;'\"x"
    gpustack_stack.start_server("--bootstrap-password", password)
    assert not (gpustack_stack.data_dir / "token").exists()
    parts = program_parts(gpustack_stack)
    props = {**parts["props"], "server_url": gpustack_stack.url, "password": password, "workers": []}
    answer, progress = provider(gpustack_stack, "create", props=props)
    assert answer["error"].startswith(f"GPUStack at {gpustack_stack.url} has no default cluster to deploy into"), answer
    assert "--enable-worker" in answer["error"]
    api = Api(gpustack_stack, password)
    assert api.get("/v2/clusters")["items"] == []
    assert api.models(parts["name"]) == []
    wrong, _ = provider(gpustack_stack, "create", props={**props, "password": "wrong"})
    assert "login as admin" in wrong["error"] and "HTTP 401" in wrong["error"], wrong
    for text in (json.dumps(answer), progress, json.dumps(wrong)):
        assert password not in text


def test_model_resource_create_read_drift_update_diff_delete(gpustack_stack, tmp_path):
    # A server with a default cluster, as with --enable-worker (which cannot run here:
    # the embedded worker downloads tools from the internet at start) or --token.
    gpustack_stack.start_server("--token", "test-registration-token")
    data = gpustack_stack.data_dir
    parts = program_parts(gpustack_stack, ready_timeout_s=2)
    name, request = parts["name"], parts["request"]

    # The secret readers: the runbook's paths, as the server writes them (docker exec stand-in).
    container = load_stack(STACK).spec.container.name
    docker = docker_stand_in(tmp_path / "docker", container, data)
    read = gpustack_stack.run_script(parts["read-password"], "read-password", "", docker)
    check(read, 0, "read initial_admin_password")
    password = read.stdout.strip()            # as GpustackServer does
    token = gpustack_stack.run_script(parts["read-token"], "read-token", "", docker)
    check(token, 0, "read token")
    assert token.stdout.strip() == "test-registration-token"
    props = {**parts["props"], "password": password}
    assert props["server_url"] == gpustack_stack.url
    assert [w["name"] for w in props["workers"]] == ["node0", "node1", "node2", "node3"]
    api = Api(gpustack_stack, password)
    cluster = next(c for c in api.get("/v2/clusters")["items"] if c["is_default"])
    texts: list[str] = []

    # Runbook 002 step 3: no worker registers here; every missing one is named, in one line.
    missing, progress = provider(gpustack_stack, "create", props={**props, "worker_timeout_s": 3})
    texts += [missing["error"], progress]
    assert missing["error"] == "; ".join(
        f"worker node{i} has not registered with GPUStack (registered: none); expected it Ready with 8 NPUs"
        for i in range(4)) + " (after 3 s)", missing
    assert api.models(name) == []

    # Without the worker wait: create, then the instance wait times out on the real states.
    no_workers = {**props, "workers": []}
    timed_out, progress = provider(gpustack_stack, "create", props=no_workers)
    texts += [timed_out["error"], progress]
    assert f"model {name} not running after 2 s" in timed_out["error"], timed_out
    assert "pending" in timed_out["error"]
    # The first state the wait sees depends on when it polls (new -> analyzing -> pending,
    # or new -> pending): the line that matters is the one reaching `pending`.
    assert f"model {name}: instance " in progress and "-> pending" in progress, progress
    [model] = api.models(name)
    for key, value in request.items():
        if key != "enable_model_route":       # not a column: it creates the route
            assert model[key] == value, f"{key}: server stored {model[key]!r}, sent {value!r}"
    assert model["cluster_id"] == cluster["id"]
    routes = [r for r in api.get("/v2/model-routes")["items"] if r["name"] == name]
    assert [r["created_model_id"] for r in routes] == [model["id"]]

    # A create after an interrupted one takes the model over (no second model of that name).
    quiet = {**no_workers, "ready_timeout_s": 0}
    created, progress = provider(gpustack_stack, "create", props=quiet)
    texts += [progress]
    assert created["id"] == str(model["id"]) and len(api.models(name)) == 1
    outs = created["outs"]
    assert outs["model_id"] == model["id"] and outs["cluster_id"] == cluster["id"]

    # read: what the server has; a hand edit (the UI's PUT) shows as drift.
    same, _ = provider(gpustack_stack, "read", id=created["id"], props=outs)
    assert same["id"] == created["id"] and same["outs"]["model"] == outs["model"]
    edited = {**model, "backend_parameters": [*request["backend_parameters"], "--max-seq-len=4096"], "replicas": 2}
    api.put(f"/v2/models/{model['id']}", edited)
    drift, _ = provider(gpustack_stack, "read", id=created["id"], props=outs)
    assert drift["outs"]["model"]["backend_parameters"][-1] == "--max-seq-len=4096"
    assert drift["outs"]["model"]["replicas"] == 2
    # The next `up`: the diff against the refreshed state is an in-place update, which puts the stack's values back.
    diff, _ = provider(gpustack_stack, "diff", id=created["id"], olds=drift["outs"], news=quiet)
    assert diff == {"changes": True, "replaces": [], "delete_before_replace": False}
    back, progress = provider(gpustack_stack, "update", id=created["id"], olds=drift["outs"], news=quiet)
    texts += [progress]
    [restored] = api.models(name)
    assert restored["id"] == model["id"]
    assert restored["backend_parameters"] == request["backend_parameters"] and restored["replicas"] == 1
    steady, _ = provider(gpustack_stack, "diff", id=created["id"], olds=back["outs"], news=quiet)
    assert steady["changes"] is False

    # A backend parameter changed in the stack: update in place, same id.
    more = copy.deepcopy(quiet)
    more["model"]["backend_parameters"] = [*request["backend_parameters"], "--max-seq-len=16384"]
    diff, _ = provider(gpustack_stack, "diff", id=created["id"], olds=back["outs"], news=more)
    assert diff["changes"] is True and diff["replaces"] == []
    updated, _ = provider(gpustack_stack, "update", id=created["id"], olds=back["outs"], news=more)
    [after] = api.models(name)
    assert after["id"] == model["id"] and after["backend_parameters"][-1] == "--max-seq-len=16384"
    # Another model path: a replacement, deleted first (GPUStack keys models by name).
    moved = copy.deepcopy(more)
    moved["model"]["local_path"] = "/models/elsewhere"
    diff, _ = provider(gpustack_stack, "diff", id=created["id"], olds=updated["outs"], news=moved)
    assert diff == {"changes": True, "replaces": ["model.local_path"], "delete_before_replace": True}

    # The smoke request reaches the deployment through its route: 503 until it runs.
    smoke = gpustack_stack.run_script(parts["smoke"], "smoke", password + "\n")
    check(smoke, 8, "smoke before any instance runs")
    assert "HTTP 503" in smoke.stderr and "No running instances available" in smoke.stderr

    # delete: the model, its instances and its route are gone; read then says so (no id).
    deleted, progress = provider(gpustack_stack, "delete", id=created["id"], props=updated["outs"])
    texts += [progress]
    assert deleted == {} and f"GPUStack model {model['id']} deleted" in progress
    assert api.models(name) == []
    assert api.get(f"/v2/model-instances?model_id={model['id']}")["items"] == []
    assert [r for r in api.get("/v2/model-routes")["items"] if r["name"] == name] == []
    gone, _ = provider(gpustack_stack, "read", id=created["id"], props=updated["outs"])
    assert gone["id"] is None
    # An update of a model deleted by hand (no refresh since) says what to do instead of failing on a 404.
    stale, _ = provider(gpustack_stack, "update", id=created["id"], olds=updated["outs"], news=more)
    assert stale["error"] == (f"GPUStack model {name} (id {model['id']}) is gone from {gpustack_stack.url}; run "
                              "`pulumi refresh` (it drops the model from the state), then `pulumi up` creates it")
    assert api.models(name) == []

    # The admin password is never in a message or a progress line; the outputs keep it
    # (read and delete log in with it), and the program marks that output secret.
    assert outs["password"] == password
    for text in texts + [smoke.stdout, smoke.stderr]:
        assert password not in text


# GPUStack's `--tls-port` here (its default 443 would do too: the namespace is ours).
TLS_PORT = 28443


def test_the_program_over_https_checks_the_server_against_the_stack_s_ca(gpustack_stack, tmp_path):
    """`engine.https_enabled: true` against the real server started with the
    flags the program gives it (`--ssl-certfile`, `--ssl-keyfile`,
    `--ssl-ca-certfile`, `--tls-port`) and a test CA: GPUStack accepts them and
    serves the CA bundle at /v2/cacerts (what a worker without SSL_CERT_FILE
    would bootstrap from); through a TLS front standing in for GPUStack's
    gateway (tls_front.py: the gateway is a binary of the image), the model
    resource's provider and the smoke script reach the real API over https,
    checking the server against the stack's CA, and refuse a server that CA
    did not sign."""
    files = _certificates(tmp_path)
    password = "tls-test-password"
    server_flags = ("--ssl-certfile", str(files["server"]), "--ssl-keyfile", str(files["server.key"]),
                    "--ssl-ca-certfile", str(files["ca"]), "--tls-port", str(TLS_PORT))
    gpustack_stack.start_server("--token", "test-registration-token", "--bootstrap-password", password,
                                *server_flags)
    cacerts = gpustack_stack.curl(["-sS", "-w", "\n%{http_code}", f"{gpustack_stack.url}/v2/cacerts"])
    bundle, _, code = cacerts.stdout.rpartition("\n")
    assert code == "200" and bundle == files["ca"].read_text(), cacerts

    tls = {"ca": str(files["ca"]), "cert": str(files["server"]), "key": str(files["server.key"]),
           "control_ca": str(files["ca"])}
    parts = program_parts(gpustack_stack, https_enabled=True, tls=tls, tls_port=TLS_PORT)
    # The server container's command carries the flags the server above was started with.
    command = render_node(parts["loaded"], 0).container.command
    assert " ".join(server_flags) in " ".join(command), command
    url = f"https://127.0.0.1:{TLS_PORT}"
    # No worker can run an instance here: the create does not wait for one.
    props = {**parts["props"], "password": password, "workers": [], "ready_timeout_s": 0}
    assert props["server_url"] == url and props["ca_pem"] == files["ca"].read_text()

    front = spawn(gpustack_stack.netns + [sys.executable, str(Path(__file__).with_name("tls_front.py")),
                                          str(files["server"]), str(files["server.key"]), str(TLS_PORT),
                                          str(gpustack_stack.api_port)],
                  gpustack_stack.root / "tls-front.log", "tls front")
    try:
        gpustack_stack._wait(lambda: gpustack_stack.curl(["-sf", "-m", "2", "--cacert", str(files["ca"]),
                                                          f"{url}/healthz"]).returncode == 0,
                             30, "the TLS front", gpustack_stack.root / "tls-front.log", front)
        api = Api(gpustack_stack, password)
        name = parts["name"]

        # Another CA: refused before the password is sent, nothing created.
        refused, _ = provider(gpustack_stack, "create", props={**props, "ca_pem": files["other-ca"].read_text()})
        assert refused["error"].startswith(f"GPUStack at {url}: its certificate was refused"), refused
        assert api.models(name) == []

        created, progress = provider(gpustack_stack, "create", props=props)
        assert "error" not in created, created
        [model] = api.models(name)
        assert created["id"] == str(model["id"]) and f"GPUStack model {name} created" in progress
        read, _ = provider(gpustack_stack, "read", id=created["id"], props=created["outs"])
        assert read["id"] == created["id"]

        # The smoke script over https with --cacert: logged in, the route answers (503 until an instance runs).
        smoke = gpustack_stack.run_script(parts["smoke"], "smoke-https", password + "\n")
        check(smoke, 8, "smoke over https before any instance runs")
        assert "HTTP 503" in smoke.stderr and "No running instances available" in smoke.stderr
        wrong_ca = parts["smoke"].replace(str(files["ca"]), str(files["other-ca"]))
        assert wrong_ca != parts["smoke"]
        refused_smoke = gpustack_stack.run_script(wrong_ca, "smoke-wrong-ca", password + "\n")
        check(refused_smoke, 11, "smoke against a server the stack's CA did not sign")

        deleted, _ = provider(gpustack_stack, "delete", id=created["id"], props=created["outs"])
        assert deleted == {} and api.models(name) == []
        for text in (json.dumps(refused), json.dumps(created["outs"]["model"]), progress, smoke.stderr):
            assert password not in text
    finally:
        stop_pid(front.pid)
        front.wait(timeout=5)
