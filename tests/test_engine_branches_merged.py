"""Branches of the engines merged this round (vllm-ascend's flags, vllm-mindspore's
version pairing) that no other fast test reached: each flag rendered away from its
default, each pairing by its own rule."""
from __future__ import annotations

import copy

import pytest

from ascend_inference.engines.vllm_ascend import VllmAscend
from ascend_inference.engines.vllm_mindspore import (
    VLLM_BLOCK_SIZES,
    VLLM_BLOCK_SIZES_FROM_0_9_1,
    block_size_choices,
    vllm_version,
)
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure


def test_vllm_mindspore_pairing_and_block_sizes():
    assert vllm_version(None) is None
    assert vllm_version("0.3.0") == (0, 8, 3) and vllm_version("0.4.0") == (0, 9, 1)
    assert vllm_version("0.9.0") is None
    assert block_size_choices(None) == VLLM_BLOCK_SIZES
    assert block_size_choices("0.3.0") == VLLM_BLOCK_SIZES
    assert block_size_choices("0.4.0") == VLLM_BLOCK_SIZES_FROM_0_9_1
    # A later release than the known pairings runs a later vLLM: 1 is a choice.
    assert block_size_choices("0.5.0") == VLLM_BLOCK_SIZES_FROM_0_9_1


def test_vllm_mindspore_0_2_runs_on_vllm_0_7_3():
    # vllm-mindspore's install guide for 0.2 pairs it with vLLM 0.7.3 (the module's table).
    assert vllm_version("0.2.0") == (0, 7, 3)
    assert vllm_version("0.1.0") is None and vllm_version("1.2.0") is None


@pytest.mark.parametrize("release", ["0.1.0", "0.1.9"])
def test_an_unpaired_release_before_0_5_takes_the_older_block_sizes(release):
    # Only releases from 0.5 on are taken to run a vLLM of 0.9.1 or later.
    assert block_size_choices(release) == VLLM_BLOCK_SIZES


@pytest.mark.parametrize("release", ["0.5", "0.5.0", "0.6.0", "1.0.0"])
def test_an_unpaired_release_from_0_5_on_takes_block_size_1(release):
    # "0.5" is (0, 5) itself (images.version_tuple): from 0.5 on, both ends included.
    assert block_size_choices(release) == VLLM_BLOCK_SIZES_FROM_0_9_1


def serve_of(stack: str, **engine) -> str:
    loaded = load_stack(stack)
    config = copy.deepcopy(loaded.raw_config)
    config["ascend-inference:engine"] = {**config["ascend-inference:engine"], **engine}
    changed = loaded_with_config(loaded, config)
    from ascend_inference.render import render_node

    master = render_node(changed, 0)
    return master.scripts.serve_start.command if master.scripts.serve_start else ""


def test_vllm_ascend_flags_away_from_their_defaults():
    assert isinstance(load_stack("dp2-tp8-ep16-vllm-ascend").spec.engine_plugin, VllmAscend)
    # Defaults: the tutorial's --quantization ascend, --seed 1024, --trust-remote-code, prefix caching on.
    default = serve_of("dp2-tp8-ep16-vllm-ascend")
    assert "--quantization ascend" in default and "--seed 1024" in default and "--trust-remote-code" in default
    assert "--no-enable-prefix-caching" not in default
    off = serve_of("dp2-tp8-ep16-vllm-ascend", quantization=None, seed=None, trust_remote_code=False,
                   enable_prefix_caching=False)
    assert "--quantization" not in off and "--seed" not in off and "--trust-remote-code" not in off
    assert "--no-enable-prefix-caching" in off


def test_host_key_scan_reads_ssh_keyscans_lines(tmp_path, monkeypatch):
    """ascend_inference.host_keys.scan over a stand-in ssh-keyscan (no packet leaves
    this machine): `[host]:port` names, comments and short lines skipped, a key type
    that is not pinned skipped, `-t` passed when asked for."""
    from ascend_inference.host_keys import scan
    from tests.conftest import TEST_HOST_KEY

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ssh-keyscan"
    script.write_text("#!/bin/sh\n"
                      f"echo \"$*\" > {tmp_path / 'argv'}\n"
                      "cat > /dev/null\n"
                      "echo '# 192.0.2.11:2222 SSH-2.0-OpenSSH_9.2'\n"
                      "echo 'short line'\n"
                      f"echo '[192.0.2.11]:2222 {TEST_HOST_KEY}'\n"
                      "echo '[192.0.2.11]:2222 sk-ssh-ed25519@openssh.com AAAAnotpinned'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    found = scan([("192.0.2.11", 2222)], key_type="ed25519", timeout=1)
    assert found == {("192.0.2.11", 2222): [TEST_HOST_KEY]}
    assert "-t ed25519" in (tmp_path / "argv").read_text()
