"""`engine.secret_env`: a credential the engine reads from its environment
(a hub token, an API key) as a Pulumi secret, never in clear.

The stack names the variable and the secret config key that holds it; the
value reaches the container's environment as a secret input and nowhere
else: not the stack file, not the env file, not a rendered file.
"""
from __future__ import annotations

import os

import pytest

from ascend_inference.errors import StackError
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from ascendctl.preview.recorder import record_graph
from ascendctl.preview.stack import config_for, record_stack
from ascendctl.preview.values import contains_secret
from components.program import run
from tests.conftest import NS, load_stack_doc, pin_host_keys, run_cli, write_stack

pytestmark = pytest.mark.graph

CIPHERTEXT = "v1:c2VjcmV0LWJ5dGVz:bm90LXJlYWxseS1lbmNyeXB0ZWQ="
TOKEN = "hf_never_in_clear_0123456789"


def stack_with(tmp_path, label: str, *, secret_env=None, env=None, secret_value=None):
    doc = load_stack_doc("tp16-vllm-mindspore")
    engine = doc["config"][NS + "engine"]
    if secret_env is not None:
        engine["secret_env"] = secret_env
    if env is not None:
        engine["env"] = env
    if secret_value is not None:
        doc["config"][NS + "hfToken"] = secret_value
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    # The serving API key (engine.api_key_secret's default config key).
    doc["config"][NS + "servingApiKey"] = {"secure": CIPHERTEXT}
    return write_stack(tmp_path, label, pin_host_keys(doc))


def test_a_token_in_clear_points_at_secret_env(tmp_path):
    path = stack_with(tmp_path, "clear", env={"HF_TOKEN": TOKEN})
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.count("\n") == 0, result.stderr
    assert f"{NS}engine.env.HF_TOKEN: looks like a credential written in clear" in line
    assert "add `secret_env: {HF_TOKEN: hfToken}` under engine" in line
    assert f"pulumi config set --secret {NS}hfToken" in line


def test_the_fix_the_message_gives_validates(tmp_path):
    """Following the fix: secret_env plus the encrypted value."""
    path = stack_with(tmp_path, "fixed", secret_env={"HF_TOKEN": "hfToken"}, secret_value={"secure": CIPHERTEXT})
    result = run_cli("validate", "--stack", path, "--require-secrets")
    assert result.returncode == 0, result.stderr


def test_the_secret_is_required_and_may_not_be_in_clear(tmp_path):
    missing = stack_with(tmp_path, "missing", secret_env={"HF_TOKEN": "hfToken"})
    result = run_cli("validate", "--stack", missing, "--require-secrets")
    assert result.returncode == 3
    assert f"{NS}hfToken: secret not set" in result.stderr
    # Without --require-secrets it is listed as still to set.
    assert f"{NS}hfToken" in run_cli("validate", "--stack", missing).stdout

    clear = stack_with(tmp_path, "inclear", secret_env={"HF_TOKEN": "hfToken"}, secret_value=TOKEN)
    result = run_cli("validate", "--stack", clear)
    assert result.returncode == 3
    assert f"{NS}hfToken: a secret is written in clear" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_bad_secret_env_entries(tmp_path):
    for label, secret_env, env, words in (
        ("badname", {"1BAD": "hfToken"}, None, "'1BAD' is not a valid environment variable name"),
        ("badkey", {"HF_TOKEN": "hf-token"}, None, "'hf-token' is not a config key name"),
        ("twice", {"HF_HOME": "hfHome"}, {"HF_HOME": "/data/hf"}, "HF_HOME is also set in engine.env"),
    ):
        result = run_cli("validate", "--stack", stack_with(tmp_path, label, secret_env=secret_env, env=env))
        assert result.returncode == 3, label
        assert words in result.stderr and "Traceback" not in result.stderr, (label, result.stderr)


def test_rendered_files_name_the_variable_never_the_value(tmp_path):
    path = stack_with(tmp_path, "render", secret_env={"HF_TOKEN": "hfToken"}, secret_value={"secure": CIPHERTEXT})
    out = tmp_path / "out"
    assert run_cli("render", "--stack", path, "--out", out).returncode == 0
    for node in ("node0", "node1"):
        docker_run = (out / node / "docker-run.sh").read_text()
        assert " -e HF_TOKEN " in docker_run  # docker takes the value from the caller's environment
        assert "HF_TOKEN" not in (out / node / "env.sh").read_text()
    every_file = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert CIPHERTEXT not in every_file


def test_the_program_passes_it_to_the_container_as_a_secret(tmp_path):
    """Graph tier: under the SDK's mocks the container's env list carries the
    secret (so the whole list prints masked), and the value is nowhere."""
    path = stack_with(tmp_path, "graph", secret_env={"HF_TOKEN": "hfToken"}, secret_value={"secure": CIPHERTEXT})
    loaded = load_stack(str(path))
    graph = record_stack(loaded, loaded.raw_config)
    containers = [r for r in graph.resources if r.type == "docker:index/container:Container"]
    assert len(containers) == 2
    for container in containers:
        assert contains_secret(container.inputs["envs"])
    printed = run_cli("preview", "--stack", path).stdout
    # Two secret entries: HF_TOKEN and the serving API key (VLLM_API_KEY).
    assert "envs: [[secret], [secret]]" in printed and CIPHERTEXT not in printed


def test_the_program_refuses_a_missing_engine_secret(tmp_path):
    """`pulumi up` without the secret: the program stops with one problem
    naming the key, before registering anything (the offline preview itself
    uses placeholders and says so)."""
    path = stack_with(tmp_path, "nosecret", secret_env={"HF_TOKEN": "hfToken"})
    loaded = load_stack(str(path))
    config = config_for(loaded, loaded.raw_config)
    del config[f"{NAMESPACE}:hfToken"]  # as the engine hands config over when it was never set
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = str(path)
    try:
        with pytest.raises(StackError) as caught:
            record_graph(run, config, project=NAMESPACE, stack=loaded.name)
    finally:
        os.environ.pop("ASCEND_INFERENCE_STACK_FILE", None)
    [problem] = caught.value.problems
    assert str(problem).endswith(f"{NAMESPACE}:hfToken: secret not set "
                                 f"(fix: run `pulumi config set --secret {NAMESPACE}:hfToken`; "
                                 "the engine's HF_TOKEN (engine.secret_env), stored encrypted in the stack file)")
    preview = run_cli("preview", "--stack", path)
    assert "placeholders used" in preview.stdout and f"{NAMESPACE}:hfToken" in preview.stdout


def test_the_program_and_validate_give_one_line_for_a_missing_ssh_key(tmp_path):
    """The same problem, the same fix, built in one place
    (stackfile.secret_not_set): `pulumi up` without the SSH key stops with
    exactly the line `validate --require-secrets` prints, which names the key
    file to read."""
    doc = pin_host_keys(load_stack_doc("tp16-mindie"))
    path = write_stack(tmp_path, "nokey", doc)
    loaded = load_stack(str(path))
    config = config_for(loaded, loaded.raw_config)
    del config[f"{NAMESPACE}:sshPrivateKey"]  # never set
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = str(path)
    try:
        with pytest.raises(StackError) as caught:
            record_graph(run, config, project=NAMESPACE, stack=loaded.name)
    finally:
        os.environ.pop("ASCEND_INFERENCE_STACK_FILE", None)
    [problem] = caught.value.problems
    validate = run_cli("validate", "--stack", path, "--require-secrets")
    assert validate.returncode == 3
    assert validate.stderr.splitlines() == [f"error: {problem}"]
    assert f"(fix: run `pulumi config set --secret {NAMESPACE}:sshPrivateKey < ~/.ssh/id_ed25519`;" in str(problem)
