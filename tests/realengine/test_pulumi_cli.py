"""The real `pulumi` CLI and Python language host on a copy of the project.

The user path of the README, as far as it runs without the resource plugins:
`pulumi stack select --create`, `pulumi config set --path` and `--secret`,
`pulumi preview`. See conftest.py for why nothing further runs here."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.realengine.conftest import PROJECT_ROOT, TOOLCHAIN, created_count

NS = "ascend-inference"


def pins() -> dict:
    text = TOOLCHAIN.read_text()
    return dict(re.findall(r"^(PULUMI_[A-Z_]+_VERSION)=(\S+)$", text, re.M))


def test_toolchain_is_the_pinned_cli_and_language_host(project):
    versions = pins()
    assert project.ok("version").strip() == versions["PULUMI_CLI_VERSION"]
    about = project.ok("about", "--json")
    # The language host that ran `about` is the one the script built, found on PATH.
    assert '"python"' in about
    requirements = (PROJECT_ROOT / "requirements.txt").read_text()
    # The plugins the script looks for are the versions the SDK packages pin.
    assert f"pulumi-command=={versions['PULUMI_COMMAND_VERSION']}" in requirements
    assert f"pulumi-docker=={versions['PULUMI_DOCKER_VERSION']}" in requirements


def test_config_set_path_types_are_read_per_schema(project, ssh_key):
    """The CLI stores only booleans and integers typed (`0.5` becomes the
    string "0.5", `16667` an integer); the program reads both per the schema."""
    stack = "tp16-lmdeploy"
    project.ok("stack", "select", "--create", stack)
    project.ok("config", "set", "--secret", f"{NS}:sshPrivateKey", stdin=ssh_key)
    # The serving API key (engine.api_key_secret's default, docs/security.md#endpoints).
    project.ok("config", "set", "--secret", f"{NS}:servingApiKey", stdin="serving-key-for-the-test")
    project.ok("config", "set", "--path", f"{NS}:engine.cache_max_entry_count", "0.5")
    # A key set anew is typed by its text (an existing string value stays a string).
    project.ok("config", "rm", "--path", f"{NS}:engine.device_port")
    project.ok("config", "set", "--path", f"{NS}:engine.device_port", "16668")
    project.ok("config", "set", "--path", f"{NS}:engine.eager_mode", "true")
    engine = yaml.safe_load(project.stack_file(stack))["config"][f"{NS}:engine"]
    assert engine["cache_max_entry_count"] == "0.5"     # what the CLI wrote: a string
    assert engine["device_port"] == 16668               # an integer, where the schema wants a string
    assert engine["eager_mode"] is True

    done = project.run("preview")
    output = done.stdout + done.stderr
    assert f"{NS}:engine" not in output, output
    # The run ends at the first plugin load (see conftest.py); the engine then
    # interrupts the language host, whose shim prints a KeyboardInterrupt
    # trace. None of it comes from the program.
    assert str(project.dir / "components") not in output
    assert str(project.dir / "ascend_inference") not in output
    # Past the config checks the program went on to its first plugin load: the
    # node checks' `command:local:run` (the plugins cannot be had here).
    assert "pulumi-resource-command" in output, output


BAD_STACKS = [
    # (config set arguments, the key named, a word of the fix)
    (["--path", f"{NS}:parallel.tp", "8"], f"{NS}:parallel", "choose tp, pp, dp whose product is 16"),
    (["--path", f"{NS}:engine.max_batch_sise", "3"], f"{NS}:engine.max_batch_sise", "max_batch_size"),
    (["--path", f"{NS}:engine.npu_memory_fraction", "lots"], f"{NS}:engine.npu_memory_fraction", "number"),
    ([f"{NS}:sshPrivateKey", "hunter2"], f"{NS}:sshPrivateKey", "--secret"),
]


@pytest.mark.parametrize("args,key,fix", BAD_STACKS, ids=["layout", "unknown-key", "not-a-number", "clear-secret"])
def test_bad_stack_is_one_line_under_real_pulumi(project, ssh_key, args, key, fix):
    stack = "tp16-mindie"
    project.ok("stack", "select", "--create", stack)
    project.ok("config", "set", "--secret", f"{NS}:sshPrivateKey", stdin=ssh_key)
    project.ok("config", "set", *args)
    done = project.run("preview")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [line.strip() for line in output.splitlines() if "(fix:" in line and key in line]
    assert errors, output
    line = errors[0]
    assert f"stacks/Pulumi.{stack}.yaml" in line and fix in line, line
    assert "Traceback" not in output
    assert "hunter2" not in output
    # Nothing was registered: the program stopped before its first resource.
    assert created_count(output) <= 1, output


def test_missing_secret_is_one_line(project):
    project.ok("stack", "select", "--create", "tp16-vllm-mindspore")
    done = project.run("preview")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert re.search(rf"{NS}:sshPrivateKey: secret not set \(fix: run `pulumi config set --secret", output), output
    assert "Traceback" not in output


def test_secrets_stay_encrypted_and_out_of_the_output(project, ssh_key):
    stack = "tp16-vllm-mindspore"
    project.ok("stack", "select", "--create", stack)
    project.ok("config", "set", "--secret", f"{NS}:sshPrivateKey", stdin=ssh_key)
    project.ok("config", "set", "--secret", f"{NS}:servingApiKey", stdin="serving-key-for-the-test")
    key_body = ssh_key.splitlines()[1]
    stored = project.stack_file(stack)
    assert "secure:" in stored and key_body not in stored
    shown = project.ok("config")
    assert key_body not in shown and "[secret]" in shown
    done = project.run("preview", "--diff")
    assert key_body not in done.stdout + done.stderr
    exported = project.ok("stack", "export")
    assert key_body not in exported
