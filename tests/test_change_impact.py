"""Graph tier: what a config change does to the resource graph, as a table.

Each row is a change (`KEY=VALUE`, as `python -m ascendctl diff --set`)
on a stack; `ascendctl.preview.stack.changes_for` gives the per-resource changes. Each kind
of change has one rule, stated in terms of resource roles and of the
dependency graph after the change (recorded here too), so the expectation
follows from the stack and the graph rather than from a printout:

* serve flag: only the serving process, its readiness wait and the smoke
  test (plus MindIE's config.json edit list and its in-place edit, which is
  where MindIE takes the flag from) and all of them are redone;
* env var: the env files, then containers, Ray, serving, smoke; nothing
  before (no preflight, weights, peer ping, gate, rank table, image);
* image: images and containers, and everything after the containers;
  nothing before;
* adding a node: the new node's resources are created, the rank table and
  what follows it change, the existing nodes' preflight and weights do not;
* a declared device IP: the rank table and its dependents and the gate that
  records the verified IPs; the peer pings that target the IP ping it (node
  checks: they run at every preview and up and are never a change); not
  preflight, weights, env, images or containers.

Two rewrites that change no fact (issue 21, 3): a rewritten node-check script
changes no resource at all, and a gate rewritten with the same facts is
replaced alone, no container, Ray or serving input reaching it (so the
engine's delete-before-replace does not spread from it either).
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ascend_inference.stackfile import LoadedStack, load_stack, stack_names
from ascendctl.preview.config import apply_change
from ascendctl.preview.diff import Change, diff_graphs
from ascendctl.preview.graph import CheckRecord, Graph, ResourceRecord
from ascendctl.preview.providers import replace_keys
from ascendctl.preview.stack import changes_for, loaded_with_config, record_stack

pytestmark = pytest.mark.graph

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STACKS = stack_names()
CONTAINER = "docker:index/container:Container"
DOCKER_PROVIDER = "pulumi:providers:docker"

RANK_TABLE_ENGINES = {"mindie", "lmdeploy"}
RAY_ENGINES = {"vllm-mindspore", "lmdeploy"}
RAY_STACKS = {"tp16-vllm-ascend-ray"}  # vllm-ascend's Ray form (tests/test_graph_stacks.py)

# Role of a custom resource, from its name (see tests/test_graph_stacks.py
# for the inventory that pins these names per stack).
ROLES = [
    ("preflight", r".+-preflight"), ("fix-tls", r".+-fix-tls"), ("peer-ping", r".+-peer-ping"),
    ("gate", r"cluster-verified"), ("weights", r".+-weights"), ("rank-table", r".+-rank-table"),
    ("env", r".+-env"), ("file", r".+-file-\d+"), ("image", r".+-image"), ("container", r".+-container"),
    ("name-free", r".+-name-free"), ("image-check", r".+-image-check"), ("mounts", r".+-mounts"),
    ("container-check", r".+-container-check"), ("config-edit", r".+-config-edit"),
    ("ray", r".+-ray-head|.+-ray-worker|ray-verify"), ("serve", r".+-serve"),
    ("serve-alive", r".+-serve-alive"), ("ready", r"serving-ready"),
    ("smoke", r"smoke-test-request"), ("gpustack-secret", r"gpustack-(token|admin-password)"),
    ("gpustack-model", r"gpustack-model-deploy"), ("gpustack-backends", r".+-gpustack-backends"),
]
# Everything up to and including the cluster checks: no later change may touch these.
BEFORE_CONTAINERS = {"preflight", "fix-tls", "weights", "peer-ping", "gate", "rank-table"}
# What a serving process is, per engine family.
SERVING_ROLES = {"serve", "ready", "gpustack-model", "smoke"}


def role(rec: ResourceRecord | Change | CheckRecord) -> str:
    if isinstance(rec, CheckRecord):
        return next(name for name, pattern in ROLES if re.fullmatch(pattern, rec.name))
    if not rec.type.startswith(("command:", "docker:", "pulumi:providers:", "pulumi-python:dynamic:")):
        return "component"
    if rec.type == DOCKER_PROVIDER:
        return "provider"
    for name, pattern in ROLES:
        if re.fullmatch(pattern, rec.name):
            return name
    raise AssertionError(f"no role for {rec.type} {rec.name}")


@functools.cache
def loaded(stack: str) -> LoadedStack:
    return load_stack(stack)


def after_graph(stack: str, assignments: list[str]) -> Graph:
    """The graph with the change applied (for dependency questions)."""
    ld = loaded(stack)
    config = ld.raw_config
    for a in assignments:
        config = apply_change(config, a, ld.file)
    return record_stack(loaded_with_config(ld, config), config)


def customs(g: Graph) -> list[ResourceRecord]:
    return [r for r in g.resources if r.custom]


def depends_on_any(g: Graph, rec: ResourceRecord, others: list[ResourceRecord]) -> bool:
    return any(g.depends_on(rec, o) for o in others)


@dataclass
class Impact:
    stack: str
    assignments: list[str]
    changes: list[Change]
    after: Graph

    @property
    def kind(self) -> str:
        return loaded(self.stack).spec.engine.kind

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in loaded(self.stack).spec.nodes]

    def named(self, action: str | None = None) -> set[str]:
        return {c.name for c in self.touched() if action is None or c.if_facts_unchanged == action}

    def by_role(self, *roles: str) -> list[ResourceRecord]:
        return [r for r in customs(self.after) if role(r) in roles]

    def touched(self) -> list[Change]:
        """What `pulumi up` changes when the nodes report what they report now
        (the preview may show more: `Change.unless_changed`)."""
        return [c for c in self.changes if role(c) != "component" and c.if_facts_unchanged != "same"]

    def replaced(self) -> set[str]:
        return {c.name for c in self.touched() if c.if_facts_unchanged == "replace"}

    def redone(self) -> set[str]:
        """Replaced, or for GPUStack's model resource updated: its update puts
        the deployment again (PUT /v2/models/{id}) and waits for it to run."""
        return self.replaced() | {c.name for c in self.touched()
                                  if c.if_facts_unchanged == "update" and role(c) == "gpustack-model"}


def describe(changes: list[Change]) -> str:
    return "\n".join(f"  {c.action} {c.type} {c.name}: {c.reason}" for c in changes)


# --- the rules ----------------------------------------------------------------

def serve_flag(imp: Impact) -> None:
    allowed = set(SERVING_ROLES)
    if imp.kind == "mindie":
        # MindIE reads its serve settings from config.json: the edit list and its edit.
        allowed |= {"file", "config-edit"}
    stray = [c for c in imp.touched() if role(c) not in allowed]
    assert not stray, "a serve flag touched more than the serving process:\n" + describe(stray)
    must = {r.name for r in imp.by_role(*SERVING_ROLES)}
    missing = must - imp.redone()
    assert not missing, (f"a serve flag must redo the serving process, its readiness wait and the smoke "
                         f"test; not redone: {sorted(missing)}\nchanges:\n{describe(imp.changes)}")


def _redo_from(imp: Impact, first_roles: set[str], records: frozenset[str] = frozenset()) -> None:
    """Every changed resource is a `first_roles` resource or comes after one;
    nothing before the containers changes (but the `records` roles, which
    record what changed); every resource after a container is redone."""
    g = imp.after
    firsts = imp.by_role(*first_roles)
    assert firsts
    not_replaced = [f"{c.name}: {c.action}" for c in imp.touched() if c.name not in imp.redone()]
    assert not not_replaced, f"expected replacements only: {not_replaced}"
    unrelated = [c.name for c in imp.touched()
                 if role(c) not in first_roles and not depends_on_any(g, g.by_urn[c.urn], firsts)]
    assert not unrelated, f"changed but not after any of {sorted(first_roles)}: {unrelated}"
    early = [c.name for c in imp.touched() if role(c) in (BEFORE_CONTAINERS | {"provider"}) - records]
    assert not early, f"touched although before the change: {early}"
    containers = imp.by_role("container")
    must = {r.name for r in firsts} | {r.name for r in containers}
    must |= {r.name for r in customs(g) if depends_on_any(g, r, containers)}
    missing = must - imp.redone()
    assert not missing, (f"not redone although after a replaced container: {sorted(missing)}\n"
                         f"changes:\n{describe(imp.changes)}")
    # The roles the rule names are all there.
    expected_roles = {"container", "smoke"} | ({"ray"} if imp.kind in RAY_ENGINES or imp.stack in RAY_STACKS else set())
    expected_roles |= {"gpustack-model"} if imp.kind == "gpustack" else {"serve", "ready"}
    assert expected_roles <= {role(c) for c in imp.touched()}


def env_var(imp: Impact) -> None:
    assert {r.name for r in imp.by_role("env")} <= imp.replaced()
    assert not [c for c in imp.touched() if role(c) in {"image", "file"}]
    _redo_from(imp, {"env"})


def image(imp: Impact) -> None:
    assert {r.name for r in imp.by_role("image", "image-check")} <= imp.replaced()
    assert not [c for c in imp.touched() if role(c) in {"env", "file", "preflight", "weights", "peer-ping"}]
    # The gate records every node's image id: it is redone with the image.
    _redo_from(imp, {"image"}, records=frozenset({"gate"}))


def add_node(imp: Impact) -> None:
    g = imp.after
    old, new = imp.nodes, NEW_NODE["name"]
    assert new not in old
    created = {c.name for c in imp.changes if c.action == "create"}
    # Everything of the new node, and nothing else, is created.
    new_resources = {r.name for r in g.resources
                     if r.name == new or r.name.startswith(f"{new}-")}
    assert new_resources and created == new_resources, f"created {sorted(created)}, expected {sorted(new_resources)}"
    assert not [c for c in imp.changes if c.action == "delete"]
    # The existing nodes' own checks are untouched.
    for n in old:
        for own in (f"{n}-preflight", f"{n}-fix-tls", f"{n}-weights"):
            assert own not in imp.named(), f"{own} changed when a node was added"
    # The rank table changes, and what follows it; the peer check (new peers) too.
    copies = imp.by_role("rank-table")
    assert {f"{n}-rank-table" for n in old} <= imp.replaced()
    unrelated = [c.name for c in imp.touched() if c.action != "create"
                 and role(c) not in {"peer-ping", "gate", "rank-table"}
                 and not depends_on_any(g, g.by_urn[c.urn], copies)]
    assert not unrelated, f"changed but neither part of the peer check nor after the rank table: {unrelated}"
    assert {r.name for r in imp.by_role("serve", "ready", "smoke")} - created <= imp.replaced()


def device_ip(imp: Impact, node_index: int) -> None:
    g = imp.after
    node = imp.nodes[node_index]
    copies = imp.by_role("rank-table")
    assert copies and {r.name for r in copies} <= imp.replaced()
    # The peer pings are node checks (invokes, never a change): those that
    # target the node ping the new IP (it is in their script), the others do not.
    new_ip = imp.assignments[0].partition("=")[2]
    pings = {c.name for c in g.checks if role(c) == "peer-ping" and new_ip in str(c.args.get("stdin", ""))}
    assert pings == {f"{n}-peer-ping" for n in imp.nodes if n != node}, \
        f"peer pings with {new_ip}: {sorted(pings)} (only those that target {node}'s device IPs should)"
    assert not [c.name for c in imp.touched() if role(c) in {"peer-ping", "preflight", "image-check"}]
    forbidden = [c.name for c in imp.touched()
                 if role(c) in {"preflight", "fix-tls", "weights", "env", "file", "image", "container", "provider"}]
    assert not forbidden, f"changed for a declared device IP: {forbidden}"
    # The gate records the verified device IPs (cluster-verified.json), so it changes with them.
    unrelated = [c.name for c in imp.touched() if role(c) not in {"peer-ping", "gate", "rank-table"}
                 and not depends_on_any(g, g.by_urn[c.urn], copies)]
    assert not unrelated, f"changed but not after the rank table: {unrelated}"
    # The engine reads the table at start: it is restarted and re-tested.
    assert {r.name for r in imp.by_role("ready", "smoke")} <= imp.replaced()


# --- the table ---------------------------------------------------------------

# A third Atlas 800T A2 for tp16-lmdeploy, in the stack's address plan
# (documentation ranges; device IPs not used by node0/node1).
NEW_NODE = {"name": "node2", "host": "192.0.2.13", "hostname": "atlas-800t-a2-2",
            "device_ips": [f"198.51.100.{33 + d}" for d in range(8)]}


@dataclass(frozen=True)
class Row:
    what: str
    stack: str
    assignments: tuple[str, ...]
    rule: Callable[[Impact], None]

    @property
    def id(self) -> str:
        return f"{self.what}:{self.stack}"


ROWS = [
    Row("serve flag", "tp16-vllm-mindspore", ("engine.max_num_seqs=128",), serve_flag),
    Row("serve flag", "tp16-mindie", ("engine.max_batch_size=100",), serve_flag),
    Row("serve flag", "tp16-lmdeploy", ("engine.cache_max_entry_count=0.5",), serve_flag),
    *[Row("env var", s, ('engine.env.MS_ENABLE_LCCL="on"',), env_var) for s in STACKS],
    *[Row("image", s, ("container.image=example/x:2.1.RC1",), image) for s in STACKS],
    # tp 24 = 3 nodes x 8 NPUs: the layout check accepts it for LMDeploy.
    Row("add node", "tp16-lmdeploy", (f"nodes[2]={json.dumps(NEW_NODE)}", "parallel.tp=24"), add_node),
    Row("device ip", "tp16-mindie", ("nodes[1].device_ips[0]=198.51.100.99",),
        lambda imp: device_ip(imp, 1)),
    Row("device ip", "tp16-lmdeploy", ("nodes[1].device_ips[0]=198.51.100.99",),
        lambda imp: device_ip(imp, 1)),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_change_impact(row: Row):
    changes = changes_for(row.stack, list(row.assignments))
    assert changes, f"{row.assignments} changed nothing on {row.stack}"
    imp = Impact(row.stack, list(row.assignments), changes, after_graph(row.stack, list(row.assignments)))
    row.rule(imp)


def test_serve_flag_rows_cover_every_serving_engine():
    """The serve-flag rows name a real flag of each engine with a serving process."""
    kinds = {loaded(r.stack).spec.engine.kind for r in ROWS if r.what == "serve flag"}
    assert kinds == {"vllm-mindspore", "mindie", "lmdeploy"}
    for r in ROWS:
        if r.what == "serve flag":
            key, _, _ = r.assignments[0].partition("=")
            field = key.split(".", 1)[1]
            settings = loaded(r.stack).spec.engine
            assert field in type(settings).model_fields, f"{field} is not a setting of {settings.kind}"


def test_diff_cli_reports_what_changes_for_reports():
    """`python -m ascendctl diff --stack tp16-vllm-mindspore --set
    engine.max_num_seqs=128` (issue 4's "done when") lists exactly the
    resources of `changes_for`, and they are serving and smoke only."""
    stack, change = "tp16-vllm-mindspore", "engine.max_num_seqs=128"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-m", "ascendctl", "diff", "--stack", stack, "--set", change],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    listed = {m.group(2) for m in re.finditer(r"^(\+-|~|\+|-)\s+\w+\s+\S+\s+(\S+)$", result.stdout, re.M)}
    expected = {c.name for c in changes_for(stack, [change])}
    assert listed == expected
    assert {role(c) for c in changes_for(stack, [change])} <= SERVING_ROLES


# --- rewrites that change no fact ----------------------------------------------

REWRITTEN = "\n# rewritten by an upgrade of this project\n"


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-lmdeploy", "dp4-ep32-gpustack"])
def test_a_rewritten_check_script_changes_nothing(stack, monkeypatch):
    """Every node check's script rewritten (an upgrade that touches its
    template; the facts it prints stay the same): not one resource changes,
    since the checks are invokes and their facts flow on by value."""
    import components.cluster
    import components.images
    import components.node
    import components.serving
    from components.common import node_check

    before = after_graph(stack, [])

    def rewritten(name, *, script, **kwargs):
        import pulumi
        return node_check(name, script=pulumi.Output.from_input(script).apply(lambda text: text + REWRITTEN),
                          **kwargs)

    for module in (components.node, components.cluster, components.images, components.serving):
        monkeypatch.setattr(module, "node_check", rewritten)
    after = after_graph(stack, [])
    assert all(REWRITTEN in str(c.args["stdin"]) for c in after.checks) and after.checks
    assert diff_graphs(before, after, replace_keys=replace_keys) == []


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-lmdeploy", "dp4-ep32-gpustack"])
def test_a_gate_rewritten_with_the_same_facts_is_replaced_alone(stack, monkeypatch):
    """The gate's install script rewritten, the facts it records the same:
    the gate is replaced and nothing else changes; no input of any other
    resource reaches it (its readers take the record by value and wait for it
    with depends_on), so the engine's delete-before-replace, which redoes the
    dependents whose inputs reach a replaced resource, redoes nothing either."""
    import components.cluster

    before = after_graph(stack, [])
    render = components.cluster.render_template

    def rewritten(template, **kwargs):
        text = render(template, **kwargs)
        return text + REWRITTEN if kwargs.get("purpose") == "Record the verified cluster facts" else text

    monkeypatch.setattr(components.cluster, "render_template", rewritten)
    after = after_graph(stack, [])
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    assert [(c.name, c.action) for c in changes] == [("cluster-verified", "replace")]
    gate = after.by_name("cluster-verified")
    reaching = [r.name for r in after.resources
                if any(gate.urn in urns for urns in r.property_dependencies.values())]
    assert reaching == []
    # Still waited for: the containers (and so Ray and serving) and the rank tables.
    for r in after.resources:
        if role(r) in {"container", "rank-table"}:
            assert gate.urn in r.dependencies, r.name
