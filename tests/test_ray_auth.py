"""Ray's exposure (docs/security.md#ray): Ray on each node's cluster address
with its dashboard on loopback, token authentication when the stack declares
a Ray that has it (2.52.0 and later: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from
the Pulumi secret rayAuthToken as a secret container env), otherwise a
warning naming the open ports in validate, preview and the program's log."""
from __future__ import annotations

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import record_stack
from ascendctl.preview.values import contains_secret
from tests.conftest import NS, load_stack_doc, pin_host_keys, run_cli, write_stack
from tests.test_bad_input import one_error_line

CIPHERTEXT = "v1:cmF5LXRva2Vu:bm90LXJlYWxseS1lbmNyeXB0ZWQ="
RAY_STACKS = ("tp16-vllm-mindspore", "tp16-lmdeploy", "tp16-vllm-ascend-ray", "tp8-pp2-300iduo")


def stack_with(tmp_path, stack: str, label: str, ray_version: str | None, *, token: bool = True):
    doc = pin_host_keys(load_stack_doc(stack))
    if ray_version is not None:
        doc["config"][NS + "container"]["ray_version"] = ray_version
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    if doc["config"][NS + "engine"]["kind"] != "mindie":   # MindIE has no API key (docs/security.md)
        doc["config"][NS + "servingApiKey"] = {"secure": CIPHERTEXT}
    if token:
        doc["config"][NS + "rayAuthToken"] = {"secure": CIPHERTEXT}
    return write_stack(tmp_path, label, doc)


@pytest.mark.pure
@pytest.mark.parametrize("stack", RAY_STACKS)
@pytest.mark.parametrize("version", ["2.52.0", "2.53.0"])
def test_a_ray_with_token_auth_gets_it_on_every_node(tmp_path, stack, version):
    # The first release with token auth and a later one (found by mutation testing: the
    # version rule's `>=` -> `==` passed, as every test gave 2.52.0 itself).
    loaded = load_stack(str(stack_with(tmp_path, stack, "token", version)))
    assert "rayAuthToken" in loaded.spec.secret_keys()
    for index in range(len(loaded.spec.nodes)):
        node = render_node(loaded, index)
        assert ("RAY_AUTH_MODE", "token") in node.container.env
        assert ("RAY_AUTH_TOKEN", "rayAuthToken") in node.container.secret_env
        run_line = node.container.docker_run_line()
        assert "-e RAY_AUTH_TOKEN " in run_line + " " and "RAY_AUTH_TOKEN=" not in run_line
        start = node.scripts.ray_start.text if node.scripts.ray_start else ""
        assert f"--node-ip-address={loaded.spec.nodes[index].address}" in start
        assert ("--dashboard-host=127.0.0.1" in start) == (index == 0)
    assert not any("ray_version" in line for line in loaded.spec.insecure_warnings())


@pytest.mark.pure
@pytest.mark.parametrize(("declared", "shown"), [(None, "is not set"), ("2.51.1", "is 2.51.1")])
def test_a_ray_without_token_auth_is_a_named_warning(tmp_path, declared, shown):
    path = stack_with(tmp_path, "tp16-vllm-mindspore", "open", declared, token=False)
    loaded = load_stack(str(path))
    assert "rayAuthToken" not in loaded.spec.secret_keys()
    master = render_node(loaded, 0)
    assert not any(name.startswith("RAY_AUTH") for name, _ in (*master.container.env, *master.container.secret_env))
    result = run_cli("validate", "--stack", str(path), "--require-secrets")
    assert result.returncode == 0, result.stderr
    assert (f"warning: {NS}container.ray_version: {shown}: Ray runs without authentication "
            "(token authentication needs Ray 2.52.0 or later), so whoever reaches the head's GCS port 6379"
            in result.stdout), result.stdout


@pytest.mark.pure
@pytest.mark.parametrize("stack", ["tp16-mindie", "dp2-tp8-ep16-vllm-ascend"])
def test_no_ray_no_token_and_no_ray_warning(tmp_path, stack):
    """MindIE forms no Ray cluster, nor does vllm-ascend's data parallel form."""
    loaded = load_stack(str(stack_with(tmp_path, stack, "noray", "2.53.0", token=False)))
    assert "rayAuthToken" not in loaded.spec.secret_keys()
    assert not any("ray_version" in line for line in loaded.spec.insecure_warnings())
    assert not any(name == "RAY_AUTH_MODE" for name, _ in render_node(loaded, 0).container.env)


@pytest.mark.pure
def test_without_the_token_require_secrets_refuses(tmp_path):
    path = stack_with(tmp_path, "tp16-lmdeploy", "notoken", "2.52.0", token=False)
    result = run_cli("validate", "--stack", str(path), "--require-secrets")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"{NS}rayAuthToken: secret not set" in result.stderr


@pytest.mark.graph
def test_a_bad_ray_version_is_one_line(tmp_path):
    path = stack_with(tmp_path, "tp16-vllm-mindspore", "bad", "two.fifty")
    line = one_error_line(run_cli("validate", "--stack", str(path)))
    assert f"{NS}container.ray_version" in line and str(path) in line


@pytest.mark.graph
def test_the_program_keeps_the_token_secret_and_logs_the_open_ray(tmp_path, monkeypatch):
    import pulumi

    path = stack_with(tmp_path, "tp16-vllm-ascend-ray", "graph", "2.52.0")
    loaded = load_stack(str(path))
    graph = record_stack(loaded, loaded.raw_config)
    containers = [r for r in graph.resources if r.type == "docker:index/container:Container"]
    assert len(containers) == 2 and all(contains_secret(c.inputs["envs"]) for c in containers)
    printed = run_cli("preview", "--stack", str(path)).stdout
    assert CIPHERTEXT not in printed and "ray_version" not in printed

    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: logged.append(message))
    open_ray = load_stack("tp16-vllm-ascend-ray")
    record_stack(open_ray, open_ray.raw_config)
    assert any(line.startswith(f"{NS}container.ray_version: is not set: Ray runs without authentication")
               for line in logged), logged
