"""Pure tier: engine rules and rendered defaults checked in process, where
the CLI tests (test_golden.py, test_spec_errors.py) check them through a
`python -m ascendctl` subprocess. Each test here was written for a mutant
that survived `tools/mutation.py` on an engine module (docs/testing.md,
"Mutation testing"): the mutation run selects only tests that run the
module in their own process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascend_inference.engines.mindie import MindieSettings
from ascend_inference.errors import Problem, StackError
from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from tests.conftest import NS, load_stack_doc, write_stack

pytestmark = pytest.mark.pure


def loaded_case(tmp_path: Path, stack: str, *, engine: dict | None = None, drop: tuple[str, ...] = (),
                nodes: int | None = None, parallel: dict | None = None, model: dict | None = None):
    """stacks/`stack` with `engine` keys set, `drop`'s engine keys removed, only its first
    `nodes` nodes, and `parallel` and `model` keys set."""
    doc = load_stack_doc(stack)
    config = doc["config"]
    config[NS + "engine"].update(engine or {})
    for key in drop:
        config[NS + "engine"].pop(key)
    if nodes is not None:
        config[NS + "nodes"] = config[NS + "nodes"][:nodes]
    config[NS + "parallel"].update(parallel or {})
    config[NS + "model"].update(model or {})
    return load_stack(str(write_stack(tmp_path, "case", doc)))


def problems_of(tmp_path: Path, stack: str, **changes) -> list[Problem]:
    try:
        loaded_case(tmp_path, stack, **changes)
    except StackError as error:
        return error.problems
    return []


def config_edits(loaded, index: int = 0) -> dict[str, object]:
    """MindIE's config.json edits of node `index`, {key path: value}."""
    files = render_node(loaded, index).files
    [text] = [t for name, t in files.items() if name.endswith("config-edits.json")]
    return {path: value for path, value in json.loads(text)["edits"]}


SMALL_MODEL = {"parameters_b": 100, "expert_parameters_b": 90}


# --- MindIE ------------------------------------------------------------------------

def test_mindie_without_a_port_serves_on_runbook_001s_1025(tmp_path):
    loaded = loaded_case(tmp_path, "tp16-mindie", drop=("port",))
    assert config_edits(loaded)["ServerConfig.port"] == 1025
    assert loaded.spec.engine_plugin.endpoint(loaded.spec).endswith(":1025")


@pytest.mark.parametrize(("nodes", "multi_node"), [(2, True), (1, False)])
def test_mindie_turns_multi_node_inference_on_for_more_than_one_node_only(nodes, multi_node, tmp_path):
    # A 100 B model: one node holds it.
    loaded = loaded_case(tmp_path, "tp16-mindie", nodes=nodes, parallel={"tp": 8 * nodes}, model=SMALL_MODEL)
    assert config_edits(loaded)["BackendConfig.multiNodesInferEnabled"] is multi_node


def test_mindie_names_each_tls_switch_left_unset(tmp_path):
    problems = problems_of(tmp_path, "tp16-mindie", drop=("https_enabled", "inter_node_tls_enabled"))
    assert [p.key for p in problems] == [f"{NS}engine.https_enabled", f"{NS}engine.inter_node_tls_enabled"]
    assert "is not set: MindIE ships ServerConfig.httpsEnabled on" in problems[0].message


def test_mindie_names_only_the_switches_set_false_as_insecure_choices():
    settings = MindieSettings(kind="mindie", https_enabled=None, inter_comm_tls_enabled=False,
                              inter_node_tls_enabled=None)
    assert [key for key, _ in settings.insecure_choices()] == ["engine.inter_comm_tls_enabled"]
