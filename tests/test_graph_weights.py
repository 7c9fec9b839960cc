"""`model.source` in the graph (the program under the SDK's mocks): which
weight steps each kind registers, where they run, what they wait for, that
the SSH key and the hub token reach them only as secrets, and that they are
kept on destroy."""
from __future__ import annotations

import copy

import pytest

from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.values import contains_secret
from components.common import script_then_data
from tests.conftest import NS, load_stack_doc, run_cli, write_stack
from tests.step_script import step_script

pytestmark = pytest.mark.graph

CIPHERTEXT = "v1:aHViLXRva2Vu:bm90LXJlYWxseS1lbmNyeXB0ZWQ="


def graph_with(tmp_path, label: str, source: dict | None, **top) -> Graph:
    doc = load_stack_doc("tp16-vllm-mindspore")
    if source is not None:
        doc["config"][f"{NS}model"]["source"] = source
    for key, value in top.items():
        doc["config"][f"{NS}{key}"] = value
    loaded = load_stack(str(write_stack(tmp_path, label, doc)))
    return record_stack(loaded)


def named(g: Graph, name: str) -> ResourceRecord:
    found = [r for r in g.resources if r.name == name]
    assert len(found) == 1, f"{name}: {len(found)} resources"
    return found[0]


def weight_steps(g: Graph) -> set[str]:
    return {r.name for r in g.resources if "-weights" in r.name and r.custom}


def host_of(record: ResourceRecord) -> str:
    return record.inputs["triggers"][0]


def test_local_checks_every_node_and_fetches_nothing(tmp_path):
    g = graph_with(tmp_path, "local", None)
    assert weight_steps(g) == {"node0-weights", "node1-weights"}


def test_copy_pulls_from_the_master_check_on_every_other_node(tmp_path):
    g = graph_with(tmp_path, "copy", {"kind": "copy"})
    assert weight_steps(g) == {"node0-weights", "node1-weights-copy", "node1-weights"}
    copy_step, master, check = named(g, "node1-weights-copy"), named(g, "node0-weights"), named(g, "node1-weights")
    assert host_of(copy_step) == host_of(check) == "ssh://root@192.0.2.12:22"
    assert g.depends_on(copy_step, master) and "node1-preflight" in g.checks_before(copy_step)
    assert g.depends_on(check, copy_step)
    # The SSH key on stdin after the script (`bash -s` reads the script, the script
    # the key), the whole a secret; the weights stay on destroy.
    assert contains_secret(copy_step.inputs["stdin"])
    script = step_script(copy_step.inputs)
    assert copy_step.inputs["stdin"].value.startswith(script_then_data(script, ""))
    assert copy_step.options["retain_on_delete"] and check.options["retain_on_delete"]
    # The copy is sized by the master's check (the mocks print disk_bytes 0)
    # and pulls from the master's address on the cluster network.
    assert "NEEDED=0\n" in script
    assert "root@192.0.2.11:/path/to/save/deepseek_r1_w8a8/" in script
    assert g.depends_on(named(g, "node1-container"), check)


def test_huggingface_downloads_once_on_the_master_then_copies(tmp_path):
    source = {"kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1", "token_secret": "hfToken"}
    g = graph_with(tmp_path, "hub", source, hfToken={"secure": CIPHERTEXT})
    assert weight_steps(g) == {"node0-weights-download", "node0-weights", "node1-weights-copy", "node1-weights"}
    download = named(g, "node0-weights-download")
    assert host_of(download) == "ssh://root@192.0.2.11:22"
    assert contains_secret(download.inputs["stdin"]) and download.options["retain_on_delete"]
    assert g.depends_on(named(g, "node0-weights"), download)
    assert g.depends_on(named(g, "node1-weights-copy"), named(g, "node0-weights"))
    printed = run_cli("preview", "--stack", str(tmp_path / "Pulumi.hub.yaml")).stdout
    assert "node0-weights-download" in printed and "stdin: [secret]" in printed and CIPHERTEXT not in printed


def test_without_a_token_the_download_reads_an_empty_line(tmp_path):
    g = graph_with(tmp_path, "hub-open", {"kind": "huggingface", "repo": "deepseek-ai/DeepSeek-R1"})
    download = named(g, "node0-weights-download").inputs
    assert download["stdin"].value == script_then_data(step_script(download), "\n")


def test_copies_wait_for_the_master_only(tmp_path):
    """8 nodes: each copy waits for its node's preflight and the master's
    check, not for the other copies (they run in parallel)."""
    doc = load_stack_doc("tp16-vllm-mindspore")
    doc["config"][f"{NS}model"]["source"] = {"kind": "copy"}
    loaded = load_stack(str(write_stack(tmp_path, "copy8", doc)))
    config = scaled_config(loaded, 8)
    g = record_stack(loaded_with_config(loaded, config), copy.deepcopy(config))
    copies = [r for r in g.resources if r.name.endswith("-weights-copy")]
    assert len(copies) == 7
    for one in copies:
        for other in copies:
            if other is not one:
                assert not g.depends_on(one, other), f"{one.name} waits for {other.name}"
    assert config[f"{NAMESPACE}:model"]["source"] == {"kind": "copy"}
