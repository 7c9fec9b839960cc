"""Graph tier: the engine's rules the offline diff follows beyond the
providers' own (docs/cli.md, "What a change redoes"), on small hand-made
graphs, and what the printout says where the offline diff cannot know.

* An unknown new value is a change (the providers' Diff).
* Delete-before-replace spreads: the engine deletes first every dependent
  whose inputs come from the replaced resource and that would be replaced
  with those inputs unknown (pulumi/pulumi step_generator.go
  `calculateDependentReplacements`).
* The preview's view and the by-value view merge into one action, with
  `unless_changed` where they differ.

The same rules against the real engine: tests/emulated/test_diff_table.py."""
from __future__ import annotations

import pytest

from ascendctl.preview.diff import Change, diff_graphs, merge_preview, spread_delete_before_replace
from ascendctl.preview.facts import CREATED, UPDATED, mock_outputs
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.printer import format_diff
from ascendctl.preview.providers import CONTAINER, deletes_first, replace_keys
from ascendctl.preview.values import UNKNOWN

pytestmark = pytest.mark.graph

COMMAND = "command:remote:Command"
PROVIDER = "pulumi:providers:docker"
STACK = "urn:pulumi:s::p::pulumi:pulumi:Stack::p-s"


def urn(name: str, typ: str = COMMAND) -> str:
    return f"urn:pulumi:s::p::{typ}::{name}"


def record(name: str, typ: str = COMMAND, *, inputs: dict | None = None, deps: dict | None = None,
           depends_on: list[str] = (), provider: str | None = None, custom: bool = True, **options) -> ResourceRecord:
    """A registration: `deps` maps an input to the names its value came from."""
    property_dependencies = {k: [urn(n) if "::" not in n else n for n in v] for k, v in (deps or {}).items()}
    dependencies = sorted({u for us in property_dependencies.values() for u in us} | {urn(n) for n in depends_on})
    if typ == COMMAND:
        options.setdefault("replace_on_changes", ["triggers[*]"])
    return ResourceRecord(urn(name, typ), typ, name, STACK, custom, dependencies=dependencies,
                          property_dependencies=property_dependencies, inputs=inputs or {}, options=options,
                          provider=f"{provider}::id" if provider else None)


def chain(gate_script: str = "check v1") -> Graph:
    """A gate (delete-before-replace), and after it: a step holding its id in
    its triggers, one reading it only in `create` (an update, no
    replacement), one after it by depends_on only, a container whose label
    comes from it, a component, and a step whose provider is a replaced one."""
    return Graph(resources=[
        record("gate", inputs={"create": gate_script, "triggers": [gate_script]}, delete_before_replace=True),
        record("by-id", inputs={"create": "x", "triggers": ["gate-1"]}, deps={"triggers": ["gate"]},
               delete_before_replace=True),
        record("by-create", inputs={"create": "reads gate", "triggers": ["b"]}, deps={"create": ["gate"]}),
        record("after-only", inputs={"create": "y", "triggers": ["c"]}, depends_on=["gate"]),
        record("ignoring", inputs={"create": "z", "triggers": ["gate-1"]}, deps={"triggers": ["gate"]},
               ignore_changes=["triggers"]),
        record("comp", "p:index:Component", deps={"x": ["by-id"]}, custom=False),
        record("box", CONTAINER, inputs={"image": "i", "labels": [{"label": "k", "value": "gate-1"}],
                                         "restart": "no"}, deps={"labels": ["gate"]}),
        record("box-restart", CONTAINER, inputs={"image": "i", "restart": "gate-1"}, deps={"restart": ["gate"]}),
        record("dockerd", PROVIDER, inputs={"host": "ssh://a"}, deps={"host": ["by-id"]}),
        record("on-dockerd", CONTAINER, inputs={"image": "i"}, provider=urn("dockerd", PROVIDER)),
        # The engine's rule, whatever the provider's type: a provider in the replace set replaces.
        record("on-by-id", CONTAINER, inputs={"image": "i"}, provider=urn("by-id")),
    ])


def test_the_replaced_gates_dependents_that_would_be_replaced_are_deleted_first():
    before, after = chain(), chain("check v2")
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    assert [(c.name, c.action) for c in changes] == [("gate", "replace")]  # by value, nothing else changed
    spread = spread_delete_before_replace(before, after, changes, replace_keys=replace_keys,
                                          deletes_first=deletes_first)
    replaced = {c.name: c.reason for c in spread if c.action == "replace"}
    # Its id in triggers, a container label from it (ForceNew), and what has the
    # replaced `by-id` as its provider.
    assert set(replaced) == {"gate", "by-id", "box", "on-by-id"}, replaced
    assert "deleted before gate is replaced" in replaced["by-id"]
    assert "its provider is replaced" in replaced["on-by-id"]
    # Not: a `create` from it (an update), depends_on only, ignored triggers, a restart
    # policy (in place), a docker provider fed by it (no provider input replaces, D3).
    assert not {"by-create", "after-only", "ignoring", "box-restart", "dockerd", "on-dockerd"} & set(replaced)


def test_a_spread_replacement_of_an_updated_step_makes_it_a_replacement():
    before, after = chain(), chain("check v2")
    by_id = after.by_name("by-id")
    by_id.inputs = {**by_id.inputs, "stdin": "new"}  # an in-place update by value
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    assert {c.name: c.action for c in changes} == {"gate": "replace", "by-id": "update"}
    spread = spread_delete_before_replace(before, after, changes, replace_keys=replace_keys)
    by_name = {c.name: c for c in spread}
    assert by_name["by-id"].action == "replace"
    assert by_name["by-id"].reason.startswith("inputs changed: stdin; deleted before gate")
    # Without the provider's own rule (deletes_first), a container replaced is not a root.
    assert "box" in by_name


def test_no_spread_from_a_create_before_replace_or_a_gone_dependent():
    before, after = chain(), chain("check v2")
    after.by_name("gate").options["delete_before_replace"] = False
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    assert [c.name for c in spread_delete_before_replace(before, after, changes)] == ["gate"]
    # A dependent no longer in the program is deleted anyway: not listed as a replacement.
    after = chain("check v2")
    after.resources = [r for r in after.resources if r.name != "by-id"]
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    spread = spread_delete_before_replace(before, after, changes, replace_keys=replace_keys)
    assert {c.name: c.action for c in spread}["by-id"] == "delete"


def test_an_unknown_new_value_is_a_change_even_against_an_unknown():
    before, after = chain(), chain()
    before.by_name("by-create").inputs["create"] = UNKNOWN
    after.by_name("by-create").inputs["create"] = UNKNOWN
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    assert [(c.name, c.action, c.paths) for c in changes] == [("by-create", "update", ["create"])]


def test_the_preview_and_the_values_merge_into_one_action():
    by_value = [Change("u:a", COMMAND, "a", "replace", reason="triggers changed"),
                Change("u:b", COMMAND, "b", "update", reason="inputs changed: stdin")]
    preview = [Change("u:a", COMMAND, "a", "replace"),
               Change("u:b", COMMAND, "b", "replace", details=[("triggers[1]", "x", UNKNOWN)]),
               Change("u:c", CONTAINER, "c", "replace", details=[("labels[0].value", "x", UNKNOWN)]),
               Change("u:d", COMMAND, "d", "update")]
    merged = {c.name: c for c in merge_preview(by_value, preview)}
    assert {n: c.outcome for n, c in merged.items()} == {
        "a": "replace", "b": "replace-or-update", "c": "replace-or-same", "d": "update-or-same"}
    assert merged["c"].if_facts_unchanged == "same" and merged["a"].if_facts_unchanged == "replace"
    assert "cannot know labels[0].value" in merged["c"].reason and "does nothing" in merged["c"].reason
    assert merged["b"].reason.startswith("inputs changed: stdin; depends on what the nodes report")
    assert "cannot know its inputs" in merged["d"].reason
    assert merged["c"].to_dict()["unless_changed"] == "same"
    text = format_diff(list(merged.values()))
    assert "+- replace or same (depends on what the nodes report) docker:index/container:Container c" in text
    assert text.rstrip().endswith("(3 of them as `pulumi preview` shows them; `pulumi up` does less there when "
                                  "what the nodes report comes out as it is now)")


class _Args:
    def __init__(self, name: str, typ: str = COMMAND):
        self.name, self.typ, self.inputs = name, typ, {"triggers": ["t"]}


def test_the_mocks_leave_unknown_what_a_preview_does_not_know():
    from ascend_inference.stackfile import load_stack

    loaded = load_stack("tp16-lmdeploy")
    known = mock_outputs(loaded)(_Args("node0-weights"))
    assert known["__id__"].startswith("node0-weights-") and '"fingerprint"' in known["stdout"]
    answers = mock_outputs(loaded, {"node0-weights": CREATED, "node1-weights": UPDATED, "box": UPDATED})
    assert answers(_Args("node0-weights")) == {"__id__": None}        # id and output unknown
    updated = answers(_Args("node1-weights"))
    assert updated["__id__"] == mock_outputs(loaded)(_Args("node1-weights"))["__id__"]  # keeps its id
    assert "stdout" not in updated and "stderr" not in updated
    assert answers(_Args("box", CONTAINER)) == mock_outputs(loaded)(_Args("box", CONTAINER))


def test_a_change_that_changes_no_step_is_no_change_in_either_view():
    """The TLS policy set to what it already is: nothing to record again with unknowns."""
    from ascendctl.preview.stack import changes_for, diff_stack

    assert changes_for("tp16-lmdeploy", ["network.hccl_tls=disabled"]) == []
    assert diff_stack("tp16-lmdeploy", ["network.hccl_tls=disabled"]).endswith("No changes.\n")
