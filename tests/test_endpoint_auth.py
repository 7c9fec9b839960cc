"""The serving API key of vLLM-MindSpore, vllm-ascend and LMDeploy (docs/security.md#endpoints).

What the engines are given (a secret container env, LMDeploy's flag from it),
what readiness and smoke send (`Authorization: Bearer`, on no command line),
the explicit opt-out and its warning, and the key absent from every rendered
file and printout. The scripts run under bash against a 127.0.0.1 server of
this test that answers 401 without the key; it serves a fixed number of
requests, so nothing here waits on the clock.
"""
from __future__ import annotations

import http.server
import json
import os
import shlex
import subprocess
import threading
from pathlib import Path

import pytest

from ascend_inference.engines.base import HttpCheck
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascend_inference.templating import render_template
from ascendctl.preview.stack import record_stack
from ascendctl.preview.values import contains_secret
from tests.conftest import NS, load_stack_doc, pin_host_keys, run_cli, write_stack
from tests.readiness import run_readiness
from tests.test_vllm_ascend import standin_engine

CIPHERTEXT = "v1:c2VydmluZy1rZXk=:bm90LXJlYWxseS1lbmNyeXB0ZWQ="
KEY = "sk-serving-key-never-in-argv-0123456789"

ENGINES = {"tp16-vllm-mindspore": "VLLM_API_KEY", "tp16-lmdeploy": "ASCEND_INFERENCE_API_KEY",
           # vllm-ascend in both its forms: data parallel (every node serves) and Ray (the head serves).
           "dp2-tp8-ep16-vllm-ascend": "VLLM_API_KEY", "tp16-vllm-ascend-ray": "VLLM_API_KEY"}


def stack_with(tmp_path: Path, stack: str, label: str, **engine) -> Path:
    # Host keys pinned: `--require-secrets` refuses unpinned nodes too (docs/security.md).
    doc = pin_host_keys(load_stack_doc(stack))
    doc["config"][NS + "engine"].update(engine)
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    if not engine.get("insecure_no_api_key"):
        doc["config"][NS + engine.get("api_key_secret", "servingApiKey")] = {"secure": CIPHERTEXT}
    return write_stack(tmp_path, label, doc)


# ---------------------------------------------------------------- pure

@pytest.mark.pure
@pytest.mark.parametrize("stack", sorted(ENGINES))
def test_the_key_reaches_the_engine_as_a_secret_env(tmp_path, stack):
    loaded = load_stack(str(stack_with(tmp_path, stack, "keyed")))
    variable = ENGINES[stack]
    assert loaded.spec.secret_keys().count("servingApiKey") == 1
    master = render_node(loaded, 0)
    assert (variable, "servingApiKey") in master.container.secret_env
    serve = master.scripts.serve_start.command if master.scripts.serve_start else ""
    if stack == "tp16-lmdeploy":
        # LMDeploy reads no env variable: its flag, from the container's env.
        assert f'--api-keys="${variable}"' in serve
    else:
        assert "--api-key" not in serve
    engine = loaded.spec.engine_plugin
    assert engine.readiness(loaded.spec).bearer and engine.readiness(loaded.spec).key_env == variable
    assert engine.smoke_request(loaded.spec).bearer
    smoke = master.scripts.smoke.command if master.scripts.smoke else ""
    assert "curl" in smoke and "-H @-" in smoke and "Bearer %s" in smoke


@pytest.mark.pure
@pytest.mark.parametrize("stack", sorted(ENGINES))
def test_the_opt_out_is_explicit_and_named(tmp_path, stack):
    path = stack_with(tmp_path, stack, "open", insecure_no_api_key=True)
    loaded = load_stack(str(path))
    assert "servingApiKey" not in loaded.spec.secret_keys()
    master = render_node(loaded, 0)
    assert not master.container.secret_env
    assert "Bearer" not in (master.scripts.smoke.command if master.scripts.smoke else "")
    assert "--api-keys" not in (master.scripts.serve_start.command if master.scripts.serve_start else "")
    result = run_cli("validate", "--stack", str(path), "--require-secrets")
    assert result.returncode == 0, result.stderr
    assert f"warning: {NS}engine.insecure_no_api_key:" in result.stdout


@pytest.mark.pure
def test_without_the_secret_require_secrets_refuses(tmp_path):
    doc = pin_host_keys(load_stack_doc("tp16-vllm-mindspore"))
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    path = write_stack(tmp_path, "nokey", doc)
    result = run_cli("validate", "--stack", str(path), "--require-secrets")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"{NS}servingApiKey: secret not set" in result.stderr


@pytest.mark.pure
def test_the_ssh_key_cannot_be_the_api_key(tmp_path):
    path = stack_with(tmp_path, "tp16-vllm-mindspore", "sshkey", api_key_secret="sshPrivateKey")
    result = run_cli("validate", "--stack", str(path))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"{NS}engine.api_key_secret: names the SSH private key's secret" in result.stderr


@pytest.mark.pure
@pytest.mark.parametrize("insecure, refused", [(False, True), (True, False)])
def test_an_api_key_secret_that_is_no_config_key_is_refused_unless_no_key_is_used(tmp_path, insecure, refused):
    # With insecure_no_api_key the key is never read, so its name is not checked. Found by
    # mutation testing: the rule's `not self.insecure_no_api_key` -> `not not` passed every test.
    path = stack_with(tmp_path, "tp16-vllm-mindspore", f"badkey{insecure}", api_key_secret="serving-key",
                      insecure_no_api_key=insecure)
    result = run_cli("validate", "--stack", str(path))
    named = f"{NS}engine.api_key_secret: is not a config key name" in result.stderr
    assert named is refused and (result.returncode == 3) is refused, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.pure
def test_lmdeploy_takes_a_key_that_starts_with_a_dash(tmp_path):
    """`token_urlsafe` keys start with "-" one time in 64; argparse reads `--api-keys -Kx9...` as
    an unknown option and LMDeploy exits at once (an emulated rollout failed so). The rendered
    `--api-keys="$VAR"` hands the key over whole. Checked with the emulator's LMDeploy parser,
    built from LMDeploy's own options (emulator/standins/lmdeploy_flags.json)."""
    parser = standin_engine().lmdeploy_parser("lmdeploy serve api_server")
    loaded = load_stack(str(stack_with(tmp_path, "tp16-lmdeploy", "dash")))
    command = loaded.spec.engine_plugin.serve(loaded.spec, loaded.plan, loaded.name).command
    argv = shlex.split(command.replace("$ASCEND_INFERENCE_API_KEY", "-Kx9_dashed-key"))
    assert argv[:3] == ["lmdeploy", "serve", "api_server"] and argv[-1] == "--api-keys=-Kx9_dashed-key"
    assert parser.parse_args(argv[3:]).api_keys == ["-Kx9_dashed-key"]
    with pytest.raises(SystemExit):  # the form rendered before
        parser.parse_args([*argv[3:-1], "--api-keys", "-Kx9_dashed-key"])


# ---------------------------------------------------------------- graph

@pytest.mark.graph
@pytest.mark.parametrize("stack", sorted(ENGINES))
def test_the_program_keeps_the_key_secret(tmp_path, stack):
    path = stack_with(tmp_path, stack, "graph")
    loaded = load_stack(str(path))
    graph = record_stack(loaded, loaded.raw_config)
    containers = [r for r in graph.resources if r.type == "docker:index/container:Container"]
    assert containers and all(contains_secret(c.inputs["envs"]) for c in containers)
    smoke = [r for r in graph.resources if r.name == "smoke-test-request"]
    assert len(smoke) == 1 and contains_secret(smoke[0].inputs["stdin"])
    printed = run_cli("preview", "--stack", str(path)).stdout
    assert CIPHERTEXT not in printed and "insecure_no_api_key" not in printed
    out = tmp_path / "out"
    assert run_cli("render", "--stack", str(path), "--out", str(out)).returncode == 0
    every_file = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert CIPHERTEXT not in every_file


@pytest.mark.graph
def test_preview_names_the_open_api_as_a_warning(tmp_path):
    path = stack_with(tmp_path, "tp16-lmdeploy", "open", insecure_no_api_key=True)
    printed = run_cli("preview", "--stack", str(path)).stdout
    assert f"Warning: {NS}engine.insecure_no_api_key: the engine's API on port 23333 answers anyone" in printed


# ---------------------------------------------------------------- the scripts against a server

class KeyedServer:
    """127.0.0.1, answers /v1/* with 401 unless `Authorization: Bearer KEY`;
    serves at most `requests` requests, then stops by itself."""

    def __init__(self, requests: int):
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append(self.headers.get("Authorization", ""))
                ok = self.headers.get("Authorization") == f"Bearer {KEY}"
                body = json.dumps({"data": [{"id": "/models/m"}], "choices": [{"text": "hi"}]} if ok
                                  else {"error": "Unauthorized"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=lambda: [self.server.handle_request() for _ in range(requests)],
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.thread.join()
        self.server.server_close()


def recording_curl(tmp_path: Path) -> dict[str, str]:
    """PATH with a curl that records its argv, then runs the real one."""
    real = subprocess.run(["bash", "-c", "command -v curl"], capture_output=True, text=True, check=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {tmp_path}/argv.log\nexec {real} "$@"\n')
    (bin_dir / "curl").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _smoke_script(url: str) -> str:
    check = HttpCheck("POST", f"{url}/v1/completions", json.dumps({"prompt": "I am"}), timeout_s=30,
                      expect='"choices"', bearer=True)
    return render_template("smoke.sh.j2", purpose="Smoke request", stack="t", node=None, smoke=check)


@pytest.mark.pure
def test_smoke_sends_the_key_from_stdin_never_in_argv(tmp_path):
    server = KeyedServer(requests=2)
    script = _smoke_script(server.url)
    env = recording_curl(tmp_path)
    good = subprocess.run(["bash", "-c", script], input=KEY + "\n", capture_output=True, text=True, env=env)
    bad = subprocess.run(["bash", "-c", script], input="wrong\n", capture_output=True, text=True, env=env)
    server.close()
    assert good.returncode == 0 and '"choices"' in good.stdout, good.stderr
    assert bad.returncode != 0
    assert server.seen == [f"Bearer {KEY}", "Bearer wrong"]
    argv = (tmp_path / "argv.log").read_text()
    assert argv.count("-H @-") == 2 and KEY not in argv and KEY not in script


@pytest.mark.pure
def test_readiness_sends_the_key_from_the_container_env(tmp_path):
    server = KeyedServer(requests=1)
    check = HttpCheck("GET", f"{server.url}/v1/models", None, (), 60, expect="/models/m", bearer=True,
                      key_env="VLLM_API_KEY")
    script, result = run_readiness(tmp_path, check, env={**recording_curl(tmp_path), "VLLM_API_KEY": KEY})
    server.close()
    assert result.returncode == 0 and '"ready": true' in result.stdout, result.stderr
    assert server.seen == [f"Bearer {KEY}"]
    assert KEY not in (tmp_path / "argv.log").read_text() and KEY not in script


@pytest.mark.graph
def test_gpustack_workers_get_the_token_as_secret_env_not_an_argument(tmp_path):
    doc = load_stack_doc("dp4-ep32-gpustack")
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    loaded = load_stack(str(write_stack(tmp_path, "gs", doc)))
    graph = record_stack(loaded, loaded.raw_config)
    containers = {r.name: r for r in graph.resources if r.type == "docker:index/container:Container"}
    workers = [r for name, r in containers.items() if not name.startswith(loaded.spec.nodes[0].name)]
    assert len(workers) == len(loaded.spec.nodes) - 1
    for worker in workers:
        assert contains_secret(worker.inputs["envs"])
        command = worker.inputs.get("command") or []
        assert "--token" not in command and not contains_secret(command)
