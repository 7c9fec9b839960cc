"""`engine.secret_env`: a credential the engine reads from its environment
(a hub token, an API key) as a Pulumi secret, never in clear.

The stack names the variable and the secret config key that holds it; the
value reaches the container's environment as a secret input and nowhere
else: not the stack file, not the env file, not a rendered file.
"""
from __future__ import annotations

from tests.conftest import NS, load_stack_doc, run_cli, write_stack

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
    return write_stack(tmp_path, label, doc)


def test_a_token_in_clear_points_at_secret_env(tmp_path):
    path = stack_with(tmp_path, "clear", env={"HF_TOKEN": TOKEN})
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
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
    assert result.returncode == 2
    assert f"{NS}hfToken: secret not set" in result.stderr
    # Without --require-secrets it is listed as still to set.
    assert f"{NS}hfToken" in run_cli("validate", "--stack", missing).stdout

    clear = stack_with(tmp_path, "inclear", secret_env={"HF_TOKEN": "hfToken"}, secret_value=TOKEN)
    result = run_cli("validate", "--stack", clear)
    assert result.returncode == 2
    assert f"{NS}hfToken: a secret is written in clear" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_bad_secret_env_entries(tmp_path):
    for label, secret_env, env, words in (
        ("badname", {"1BAD": "hfToken"}, None, "'1BAD' is not a valid environment variable name"),
        ("badkey", {"HF_TOKEN": "hf-token"}, None, "'hf-token' is not a config key name"),
        ("twice", {"HF_HOME": "hfHome"}, {"HF_HOME": "/data/hf"}, "HF_HOME is also set in engine.env"),
    ):
        result = run_cli("validate", "--stack", stack_with(tmp_path, label, secret_env=secret_env, env=env))
        assert result.returncode == 2, label
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
