"""Pinned SSH host keys (issue 22 item 1): the stack keys, every connection
the program makes (pulumi-command and its proxy, the docker provider's ssh://,
the node-to-master rsync copies), the refusal of unpinned stacks under
`validate --require-secrets`, the opt-out and its warning, and `hostkeys
--write`. A node whose key changed is refused on the emulated cluster
(tests/emulated/test_host_keys.py)."""
from __future__ import annotations

import base64
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from ascend_inference.host_keys import known_hosts_text, write_host_keys
from ascend_inference.render import render_image_copy, render_weights_copy
from ascend_inference.spec import host_key_fingerprint
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.conftest import NS, TEST_HOST_KEY, load_stack_doc, pin_host_keys, run_cli, write_stack

pytestmark = pytest.mark.graph

CIPHERTEXT = "v1:Q2lwaGVyVGV4dE5ldmVyU2hvd25JblJlbmRlcmVkRmlsZXM="


def ed25519(seed: int) -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def pinned(stack: str = "tp16-mindie", **ssh) -> tuple:
    loaded = load_stack(stack)
    config = json.loads(json.dumps(loaded.raw_config))
    for i, node in enumerate(config[NS + "nodes"]):
        node["host_key"] = ed25519(i + 1)
    if ssh:
        config[NS + "ssh"] = {**config.get(NS + "ssh", {}), **ssh}
    return loaded_with_config(loaded, config), config


def test_every_pulumi_command_connection_and_proxy_carries_the_pinned_key():
    loaded, config = pinned(jump_host="ops@bastion.example.com:2222", jump_host_key=ed25519(9))
    graph = record_stack(loaded, config)
    commands = [r for r in graph.resources if "connection" in r.inputs]
    assert commands
    for resource in commands:
        connection = resource.inputs["connection"]
        connection = getattr(connection, "value", connection)
        node = next(n for n in loaded.spec.nodes if n.host == connection["host"])
        assert connection["hostKey"] == node.host_key, resource.name
        assert connection["proxy"]["hostKey"] == ed25519(9), resource.name


def test_the_docker_provider_checks_keys_strictly_from_a_private_known_hosts_file():
    loaded, config = pinned(jump_host="ops@bastion.example.com:2222", jump_host_key=ed25519(9))
    graph = record_stack(loaded, config)
    providers = [r for r in graph.resources if r.inputs.get("sshOpts")]
    assert providers
    for provider in providers:
        opts = provider.inputs["sshOpts"]
        opts = json.loads(opts) if isinstance(opts, str) else opts  # the provider's inputs are JSON strings
        assert "StrictHostKeyChecking=yes" in opts and "StrictHostKeyChecking=accept-new" not in opts
        known = next(o.split("=", 1)[1] for o in opts if o.startswith("UserKnownHostsFile="))
        assert Path(known).read_text() == known_hosts_text(loaded.spec)
        assert stat.S_IMODE(os.stat(known).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(known).parent).st_mode) == 0o700
        # The jump host is reached by a ProxyCommand checked against the same file (not -J).
        assert "-J" not in opts
        proxy = next(o for o in opts if o.startswith("ProxyCommand="))
        assert f"UserKnownHostsFile={known}" in proxy and "ops@bastion.example.com" in proxy
    assert "[bastion.example.com]:2222 " + ed25519(9) in known_hosts_text(loaded.spec)


@pytest.mark.parametrize("render", [render_weights_copy, render_image_copy])
def test_the_copies_from_the_master_accept_only_its_pinned_key(render):
    loaded, _ = pinned()
    printed = {"disk_bytes": 1, "fingerprint": "f", "tar_bytes": 1, "tar_sha256": "0" * 64}
    if render is render_image_copy:
        loaded, _ = pinned()
        config = json.loads(json.dumps(loaded.raw_config))
        config[NS + "container"] = {**config[NS + "container"], "image_tar": "/data/images/i.tar",
                                    "image_url": "https://images.example.com/i.tar"}
        loaded = loaded_with_config(loaded, config)
    text = render(loaded, 1, printed).text
    assert "StrictHostKeyChecking=accept-new" not in text
    assert "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$known_hosts" in text
    assert f"ascend-inference-master '{loaded.spec.nodes[0].host_key}'" in text
    # Opted out: the old behaviour, named in the script.
    loaded_out, _ = pinned(insecure_ignore_host_keys=True)
    if render is render_image_copy:
        config = json.loads(json.dumps(loaded_out.raw_config))
        config[NS + "container"] = {**config[NS + "container"], "image_tar": "/data/images/i.tar",
                                    "image_url": "https://images.example.com/i.tar"}
        loaded_out = loaded_with_config(loaded_out, config)
    assert "StrictHostKeyChecking=accept-new" in render(loaded_out, 1, printed).text


def test_require_secrets_refuses_unpinned_nodes_and_the_opt_out_is_a_preview_warning(tmp_path):
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    unpinned = run_cli("validate", "--stack", write_stack(tmp_path, "unpinned", doc), "--require-secrets")
    assert unpinned.returncode == 3
    lines = unpinned.stderr.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == [f"{NS}nodes[0].host_key", f"{NS}nodes[1].host_key"]
    assert all("hostkeys --stack" in line and "insecure_ignore_host_keys" in line for line in lines)
    ok = run_cli("validate", "--stack", write_stack(tmp_path, "pinned", pin_host_keys(doc)), "--require-secrets")
    assert ok.returncode == 0, ok.stderr
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "sshPrivateKey"] = {"secure": CIPHERTEXT}
    doc["config"][NS + "ssh"] = {"insecure_ignore_host_keys": True}
    path = write_stack(tmp_path, "lab", doc)
    assert run_cli("validate", "--stack", path, "--require-secrets").returncode == 0
    preview = run_cli("preview", "--stack", path, "--no-inputs")
    assert preview.returncode == 0, preview.stderr
    assert f"Warning: {path}: {NS}ssh.insecure_ignore_host_keys is true: SSH host keys are not checked" \
        in preview.stdout


@pytest.mark.parametrize("key,words", [
    ("ssh-ed25519", "is not an SSH public host key"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "is not an SSH public host key"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    (ed25519(1).replace("ssh-ed25519", "ssh-rsa"), "but its data is a ssh-ed25519 key"),
])
def test_a_malformed_host_key_is_one_line(tmp_path, key, words):
    doc = load_stack_doc("tp16-mindie")
    doc["config"][NS + "nodes"][1]["host_key"] = key
    result = run_cli("validate", "--stack", write_stack(tmp_path, "badkey", doc))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and f"{NS}nodes[1].host_key: " in lines[0] and words in lines[0]
    assert "(fix: " in lines[0]


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path):
    import shutil
    import subprocess

    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen (OpenSSH) is needed; install openssh-client")
    (tmp_path / "k.pub").write_text(TEST_HOST_KEY + " comment\n")
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert host_key_fingerprint(TEST_HOST_KEY) == printed


def test_hostkeys_write_keeps_the_file_and_validates():
    text = (Path(__file__).resolve().parent.parent / "stacks" / "Pulumi.tp16-mindie.yaml").read_text()
    written = write_host_keys(text, {"nodes[0]": ed25519(1), "nodes[1]": ed25519(2)})
    # Comments and every other line kept; one line added per node.
    assert [line for line in written.splitlines() if "host_key" not in line] == text.splitlines()
    again = write_host_keys(written, {"nodes[1]": ed25519(3)})
    assert again.count("host_key:") == 2 and ed25519(3) in again and ed25519(2) not in again
    import yaml

    nodes = yaml.safe_load(again)["config"][NS + "nodes"]
    assert [n["host_key"] for n in nodes] == [ed25519(1), ed25519(3)]


def test_hostkeys_reports_a_node_that_does_not_answer(tmp_path):
    """A stand-in ssh-keyscan first on PATH that hears from no host (as
    ssh-keyscan prints nothing for a host that does not answer within -T):
    no packet leaves this machine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    keyscan = bin_dir / "ssh-keyscan"
    keyscan.write_text(f"#!/bin/sh\ncat > /dev/null\necho \"$*\" >> {tmp_path / 'argv'}\nexit 1\n")
    keyscan.chmod(0o755)
    result = run_cli("hostkeys", "--stack", "tp16-mindie", "--timeout", "1",
                     env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert "nodes[0] node0 192.0.2.11:22: no answer within 1s" in result.stdout
    assert "-T 1" in (tmp_path / "argv").read_text()
