"""What the offline preview does to keep a large cluster's memory down
changes nothing it records: the mocks leave a command's scripts out of its
outputs (`SCRIPTS_NOT_ECHOED`), and the records keep one copy of a long
string that many resources carry. The memory itself is measured by
benchmarks/preview_scaling.py, not here."""
from __future__ import annotations

import json

import pulumi
import pytest
from pulumi_command import remote

from ascend_inference.stackfile import load_stack, stack_names
from ascendctl.preview.config import scaled_config
from ascendctl.preview.recorder import record_graph
from ascendctl.preview.stack import SCRIPTS_NOT_ECHOED, loaded_with_config, record_stack
from ascendctl.preview.values import UNKNOWN
from tests.step_script import step_script, undo_script

pytestmark = pytest.mark.graph


def as_recorded(graph) -> dict:
    """The graph as JSON (no per-run value left in it: the node checks are
    invokes, not resources with a run id), with the resources in URN order
    and the node checks in name order (independent ones may come in another
    order from one recording to the next: `ascendctl/preview/recorder.py`)."""
    recorded = json.loads(graph.to_json())
    recorded["resources"].sort(key=lambda r: r["urn"])
    recorded["checks"].sort(key=lambda c: c["name"])
    return recorded


@pytest.mark.parametrize("stack", stack_names())
def test_every_stack_records_the_same_graph_with_its_scripts_echoed_or_not(stack):
    loaded = load_stack(stack)
    echoed = as_recorded(record_stack(loaded, not_echoed={}))
    assert echoed == as_recorded(record_stack(loaded))


def test_a_scaled_rank_table_stack_records_the_same_graph_with_its_scripts_echoed_or_not():
    # 48 nodes: the rank table is past COMPRESS_ABOVE and the pings past all-pairs.
    base = load_stack("tp16-lmdeploy")
    config = scaled_config(base, 48)
    loaded = loaded_with_config(base, config)
    echoed = as_recorded(record_stack(loaded, config, not_echoed={}))
    trimmed = record_stack(loaded, config)
    # Three checks a node, and the engine's liveness check on the head (LMDeploy serves there).
    assert len(trimmed.resources) > 48 * 10 and len(trimmed.checks) == 48 * 3 + 1
    assert echoed == as_recorded(trimmed)


def test_scripts_left_out_of_a_commands_outputs_are_unknown_in_preview():
    seen: dict[str, object] = {}

    def program() -> None:
        step = remote.Command("step", connection=remote.ConnectionArgs(host="10.0.0.1"),
                              create="echo created", delete="echo deleted", triggers=["t"])
        step.create.apply(lambda v: seen.setdefault("create", v))
        step.triggers.apply(lambda v: seen.setdefault("triggers", v))
        pulumi.export("create", step.create)

    graph = record_graph(program, {}, not_echoed=SCRIPTS_NOT_ECHOED)
    # The input is recorded as the program sent it...
    assert graph.by_name("step").inputs["create"] == "echo created"
    # ...the output is unknown (an apply on it does not run in preview); others are echoed.
    assert "create" not in seen and seen["triggers"] == ["t"]
    assert graph.outputs["create"] is UNKNOWN
    echoed = record_graph(program, {})
    assert echoed.outputs["create"] == "echo created"


def test_every_nodes_rank_table_copy_shares_one_script_in_the_records():
    base = load_stack("tp16-lmdeploy")
    config = scaled_config(base, 48)
    graph = record_stack(loaded_with_config(base, config), config)
    copies = [r for r in graph.resources if r.custom and r.name.endswith("-rank-table")]
    # What each copy is sent (its undo, then its script) is one object for all of them.
    stdins = [r.inputs["stdin"] for r in copies]
    assert len(stdins) == 48 and len(stdins[0]) > 1024
    assert all(s is stdins[0] for s in stdins)
    # The script and its undo name no node, so one text serves them all.
    assert "every node" in step_script(copies[0].inputs).splitlines()[1]
    assert "every node" in undo_script(copies[0].inputs).splitlines()[1]
