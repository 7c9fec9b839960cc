"""Printing recorded graphs and their differences as people read them: a
`pulumi preview`-like tree of resources with their dependencies, options and
inputs, and a `pulumi preview --diff`-like list of changes. Secrets print as
`[secret]`, unknowns as `(known after apply)`, long or multi-line strings as
their first line with a length and digest. (`--json` is `Graph.to_json`.)"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from ascendctl.preview.diff import MISSING, Change
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.paths import PathPart, format_path, parse_path
from ascendctl.preview.unknowns import AfterApply, known_inputs, known_outputs
from ascendctl.preview.values import (
    SECRET_MASK,
    UNKNOWN_TEXT,
    ResourceReference,
    Secret,
    Unknown,
    contains_secret,
    is_asset_or_archive,
)


def _short_string(s: str, limit: int = 100) -> str:
    if "\n" in s.rstrip("\n"):
        lines = s.splitlines()
        first = lines[0] if lines else ""
        if len(first) > limit:
            first = first[:limit] + "…"
        digest = hashlib.sha256(s.encode()).hexdigest()[:8]
        return f"{json.dumps(first, ensure_ascii=False)} ({len(lines)} lines, sha256 {digest})"
    if len(s) > limit:
        digest = hashlib.sha256(s.encode()).hexdigest()[:8]
        return f"{json.dumps(s[:limit], ensure_ascii=False)}… ({len(s)} chars, sha256 {digest})"
    return json.dumps(s, ensure_ascii=False)


def render_value(value: Any) -> str:
    """Compact one-line rendering; secrets as ``[secret]``, unknowns as ``(known after apply)``."""
    if isinstance(value, Secret):
        return SECRET_MASK
    if isinstance(value, Unknown):
        return UNKNOWN_TEXT
    if isinstance(value, AfterApply):
        return repr(value)
    if isinstance(value, ResourceReference):
        return f"<resource {value.urn.rsplit('::', 1)[-1]}>"
    if isinstance(value, str):
        return _short_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return str(value)


def _flatten(value: Any, parts: list[PathPart], inline_limit: int = 100) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value and not is_asset_or_archive(value):
        for k, v in value.items():
            yield from _flatten(v, parts + [k], inline_limit)
        return
    if isinstance(value, list) and value:
        rendered = render_value(value)
        if len(rendered) <= inline_limit and not any(isinstance(v, (dict, list)) for v in value):
            yield format_path(parts), rendered
            return
        for i, v in enumerate(value):
            yield from _flatten(v, parts + [i], inline_limit)
        return
    yield format_path(parts), render_value(value)


def _display_names(graph: Graph) -> dict[str, str]:
    counts: dict[str, int] = {}
    for r in graph.resources:
        counts[r.name] = counts.get(r.name, 0) + 1
    return {r.urn: (r.name if counts[r.name] == 1 else f"{r.type}::{r.name}") for r in graph.resources}


def _option_summary(rec: ResourceRecord) -> str:
    o = rec.options
    bits = []
    if o.get("protect"):
        bits.append("protect")
    if o.get("delete_before_replace"):
        bits.append("delete_before_replace")
    if o.get("retain_on_delete"):
        bits.append("retain_on_delete")
    if o.get("deleted_with"):
        bits.append("deleted_with=" + o["deleted_with"].rsplit("::", 1)[-1])
    if o.get("replace_on_changes"):
        bits.append("replace_on_changes=[" + ", ".join(o["replace_on_changes"]) + "]")
    if o.get("ignore_changes"):
        bits.append("ignore_changes=[" + ", ".join(o["ignore_changes"]) + "]")
    if o.get("custom_timeouts"):
        bits.append("timeouts(" + ", ".join(f"{k}={v}" for k, v in o["custom_timeouts"].items()) + ")")
    if o.get("additional_secret_outputs"):
        bits.append("secret_outputs=[" + ", ".join(o["additional_secret_outputs"]) + "]")
    if o.get("aliases"):
        bits.append(f"aliases={len(o['aliases'])}")
    if o.get("read_id"):
        bits.append(f"read id={o['read_id']}")
    return ", ".join(bits)


def format_tree(graph: Graph, *, show_inputs: bool = True) -> str:
    """A ``pulumi preview``-like tree.  Secrets print as ``[secret]``, unknowns as
    ``(known after apply)``; multi-line strings print as their first line plus
    ``(N lines, sha256 xxxxxxxx)``."""
    names = _display_names(graph)
    children: dict[str | None, list[ResourceRecord]] = {}
    known = graph.by_urn
    for r in graph.resources:
        parent = r.parent_urn if r.parent_urn in known else None
        children.setdefault(parent, []).append(r)

    lines: list[str] = []
    stack_name = graph.stack_urn.rsplit("::", 1)[-1] if graph.stack_urn else "stack"
    lines.append(f"+ pulumi:pulumi:Stack {stack_name}")
    n_custom = sum(1 for r in graph.resources if r.custom)
    # Print in an order that depends on the graph alone, not on the order in
    # which the SDK happened to register independent resources (it varies
    # between runs): by dependency level, then type and name. Two previews of
    # the same stack print the same text, so CI can diff them.
    level: dict[str, int] = {}

    def level_of(urn: str, seen: frozenset[str] = frozenset()) -> int:
        if urn not in level:
            deps = [d for d in known[urn].dependencies if d in known and d not in seen]
            level[urn] = 1 + max((level_of(d, seen | {urn}) for d in deps), default=0)
        return level[urn]

    def order_key(urn: str) -> tuple[int, str, str]:
        rec = known[urn]
        return (level_of(urn), rec.type, rec.name)

    for siblings in children.values():
        siblings.sort(key=lambda r: order_key(r.urn))
    order = {urn: order_key(urn) for urn in known}

    def emit(rec: ResourceRecord, depth: int) -> None:
        ind = "    " * depth
        mark = ">" if rec.options.get("read_id") else "+"
        lines.append(f"{ind}{mark} {rec.type} {rec.name}")
        sub = ind + "      "
        deps = [names.get(u, u.rsplit("::", 1)[-1])
                for u in sorted(rec.dependencies, key=lambda u: order.get(u, (0, "", u)))]
        if deps:
            lines.append(f"{sub}after: {', '.join(deps)}")
        if rec.provider_urn:
            lines.append(f"{sub}provider: {names.get(rec.provider_urn, rec.provider_urn.rsplit('::', 1)[-1])}")
        opts = _option_summary(rec)
        if opts:
            lines.append(f"{sub}options: {opts}")
        if show_inputs and rec.inputs:
            for path, text in _flatten(rec.inputs, []):
                lines.append(f"{sub}{path}: {text}")
        for child in children.get(rec.urn, []):
            emit(child, depth + 1)

    for top in children.get(None, []):
        emit(top, 1)
    if graph.outputs:
        lines.append("Outputs:")
        for path, text in _flatten(graph.outputs, []):
            lines.append(f"    {path}: {text}")
    n_read = sum(1 for r in graph.resources if r.options.get("read_id"))
    lines.append(
        f"Resources: {len(graph.resources) - n_read} to create ({n_custom - n_read} custom, "
        f"{len(graph.resources) - n_custom} components)"
        + (f", {n_read} to read" if n_read else "")
        + f"; longest chain {graph.longest_chain()}"
    )
    return "\n".join(lines) + "\n"


_SYMBOL = {"create": "+", "delete": "-", "update": "~", "replace": "+-"}


# A changed script or file prints as a unified diff of at most this many lines.
DIFF_LINES = 60


def format_diff(changes: list[Change], *, before: Graph | None = None, after: Graph | None = None) -> str:
    """Human-readable diff; any value that is or contains a secret prints
    ``[secret]``. A changed script or file (a string of several lines)
    prints as a unified diff of its lines. Given the two recordings, a value
    only a rollout knows (`unknowns.py`) prints as `output<string>`, never
    as the mocks' stand-in, and gets no line diff."""
    if not changes:
        return "No changes.\n"
    lines = []
    counts: dict[str, int] = {}
    depends = 0
    for ch in changes:
        counts[ch.action] = counts.get(ch.action, 0) + 1
        if ch.unless_changed:
            # The offline diff cannot know: `pulumi preview` shows the action,
            # `pulumi up` does it only if what the nodes report changes.
            depends += 1
            lines.append(f"{_SYMBOL[ch.action]:<2} {ch.action} or {ch.unless_changed} (depends on what the nodes "
                         f"report) {ch.type} {ch.name}")
        else:
            lines.append(f"{_SYMBOL[ch.action]:<2} {ch.action:<7} {ch.type} {ch.name}")
        if ch.reason:
            lines.append(f"           reason: {ch.reason}")
        old_known = _known_of(before, ch.urn)
        new_known = _known_of(after, ch.urn)
        for path, old, new in ch.details:
            mark = "  (forces replacement)" if path in ch.replace_paths else ""
            parts = parse_path(path)
            old_shown = _value_at(old_known, parts, old)
            new_shown = _value_at(new_known, parts, new)
            if _is_text(old_shown) and _is_text(new_shown) and "\n" in old_shown + new_shown:
                old_lines, new_lines = old_shown.splitlines(), new_shown.splitlines()
                lines.append(f"           {path}: changed ({len(old_lines)} -> {len(new_lines)} lines){mark}")
                lines.extend(_unified(old_lines, new_lines, path))
                continue
            lines.append(f"           {path}: {_diff_value(old_shown)} -> {_diff_value(new_shown)}{mark}")
    summary = ", ".join(f"{counts[a]} to {a}" for a in ("create", "update", "replace", "delete") if a in counts)
    if depends:
        summary += (f" ({depends} of them as `pulumi preview` shows them; `pulumi up` does less there when what "
                    "the nodes report comes out as it is now)")
    lines.append(f"Resources: {summary}")
    return "\n".join(lines) + "\n"


def _known_of(graph: Graph | None, urn: str) -> dict[str, Any] | None:
    rec = graph.by_urn.get(urn) if graph is not None else None
    return known_inputs(rec, graph.mock_values) if rec is not None and graph is not None else None


def _value_at(known: dict[str, Any] | None, parts: list[PathPart], recorded: Any) -> Any:
    """The value at `parts` as the preview shows it (`AfterApply` for what
    only a rollout knows), or the recorded one where there is no such view."""
    if known is None or recorded is MISSING:
        return recorded
    value: Any = known
    for part in parts:
        if isinstance(value, AfterApply):
            return value
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return recorded
    return value


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _unified(old: list[str], new: list[str], path: str) -> list[str]:
    body = list(difflib.unified_diff(old, new, f"{path} (now)", f"{path} (after the change)", n=2, lineterm=""))
    shown = body[:DIFF_LINES]
    if len(body) > DIFF_LINES:
        shown.append(f"... {len(body) - DIFF_LINES} more diff lines (python -m ascendctl render shows the files)")
    return ["             | " + line for line in shown]


def _diff_value(v: Any) -> str:
    if v is MISSING:
        return "(absent)"
    if contains_secret(v):
        return SECRET_MASK
    return render_value(v)


# --------------------------------------------------------------------------------------
# The stack preview: steps in the order a rollout runs them, per node
# --------------------------------------------------------------------------------------

# The program's one cross-node step (components/cluster.py): every node's
# steps up to it run first, every step after it waits for it.
CLUSTER_GATE = "cluster-verified"
CLUSTER_WIDE = "cluster-wide"


def node_of(name: str, nodes: set[str]) -> str | None:
    """The node a resource belongs to: the longest node name it starts with
    (`node0-preflight` is node0's); None for cluster-wide resources. A lookup
    per dash, so it does not grow with the number of nodes."""
    found = name if name in nodes else None
    for i, ch in enumerate(name):
        if ch == "-" and name[:i] in nodes:
            found = name[:i]
    return found


def _after_gate(graph: Graph, gate: str | None) -> set[str]:
    """URNs of the resources that wait (directly or not) for the gate."""
    if gate is None:
        return set()
    memo: dict[str, bool] = {gate: True}
    index = graph.by_urn

    def waits(urn: str) -> bool:
        if urn not in memo:
            memo[urn] = False  # a cycle cannot come out of the SDK; stop on one anyway
            memo[urn] = any(waits(e) for e in graph.waits_for(urn) if e in index)
        return memo[urn]

    return {r.urn for r in graph.resources if r.urn != gate and waits(r.urn)}


def _flatten_compact(value: Any, parts: list[PathPart], limit: int = 140) -> Iterator[tuple[str, str]]:
    """Like `_flatten`, but a list's element that is a small object prints
    on one line (`devices[0]: {hostPath: "/dev/davinci0", ...}`)."""
    if isinstance(value, dict) and value and not is_asset_or_archive(value):
        for k, v in value.items():
            yield from _flatten_compact(v, parts + [k], limit)
        return
    if isinstance(value, list) and value:
        rendered = render_value(value)
        if len(rendered) <= limit:
            yield format_path(parts), rendered
            return
        for i, v in enumerate(value):
            one = render_value(v)
            if isinstance(v, dict) and len(one) <= limit and not any(isinstance(x, (dict, list)) for x in v.values()):
                yield format_path(parts + [i]), one
            else:
                yield from _flatten_compact(v, parts + [i], limit)
        return
    yield format_path(parts), render_value(value)


def format_plan(graph: Graph, node_names: list[str], *, show_inputs: bool = True,
                gate_name: str = CLUSTER_GATE) -> str:
    """The stack preview: the steps in the order a rollout runs them (each
    node's steps, the cluster gate, then each node's chain after it), grouped
    per node with a count per node; in each group by dependency level.
    Values only a rollout learns print as `output<string>` (`unknowns.py`),
    secrets as `[secret]`."""
    nodes = set(node_names)
    names = _display_names(graph)
    level = graph.levels()
    gate = next((r.urn for r in graph.resources if r.name == gate_name and r.custom), None)
    after = _after_gate(graph, gate)
    steps = [r for r in graph.resources if r.custom]
    phases: dict[str, dict[str, list[ResourceRecord]]] = {"before": {}, "gate": {}, "after": {}}
    for rec in steps:
        phase = "gate" if rec.urn == gate else "after" if rec.urn in after else "before"
        owner = node_of(rec.name, nodes) or CLUSTER_WIDE
        phases[phase].setdefault(owner, []).append(rec)
    for groups in phases.values():
        for members in groups.values():
            members.sort(key=lambda r: (level.get(r.urn, 0), r.name))

    lines: list[str] = []

    def emit(rec: ResourceRecord) -> None:
        mark = ">" if rec.options.get("read_id") else "+"
        parent = graph.by_urn.get(rec.parent_urn or "")
        lines.append(f"    {mark} {rec.type} {rec.name}" + (f"  (in {parent.name})" if parent else ""))
        sub = "          "
        deps = sorted((u for u in rec.dependencies if u in graph.by_urn),
                      key=lambda u: (level.get(u, 0), names.get(u, u)))
        if deps:
            lines.append(f"{sub}after: {', '.join(names[u] for u in deps)}")
        if rec.provider_urn:
            lines.append(f"{sub}provider: {names.get(rec.provider_urn, rec.provider_urn.rsplit('::', 1)[-1])}")
        opts = _option_summary(rec)
        if opts:
            lines.append(f"{sub}options: {opts}")
        if show_inputs and rec.inputs:
            for path, text in _flatten_compact(known_inputs(rec, graph.mock_values), []):
                lines.append(f"{sub}{path}: {text}")

    def emit_groups(groups: dict[str, list[ResourceRecord]]) -> None:
        order = [n for n in node_names if n in groups] + ([CLUSTER_WIDE] if CLUSTER_WIDE in groups else [])
        for owner in order:
            members = groups[owner]
            lines.append(f"  {owner}: {len(members)} to create")
            for rec in members:
                emit(rec)

    stack_name = graph.stack_urn.rsplit("::", 1)[-1] if graph.stack_urn else "stack"
    lines.append(f"+ pulumi:pulumi:Stack {stack_name}")
    if gate is None:
        lines.append("Steps, per node:")
        emit_groups(phases["before"])
    else:
        lines.append(f"Before the cluster gate ({gate_name}), per node:")
        emit_groups(phases["before"])
        lines.append("The cluster gate: every node's steps above, checked together on the master:")
        for rec in phases["gate"].get(node_of(gate_name, nodes) or CLUSTER_WIDE, []):
            emit(rec)
        lines.append("After the cluster gate, per node:")
        emit_groups(phases["after"])
    if graph.outputs:
        lines.append("Outputs:")
        for path, text in _flatten(known_outputs(graph), []):
            lines.append(f"    {path}: {text}")

    per_owner: dict[str, int] = {}
    for groups in phases.values():
        for owner, members in groups.items():
            per_owner[owner] = per_owner.get(owner, 0) + len(members)
    n_read = sum(1 for r in steps if r.options.get("read_id"))
    n_components = len(graph.resources) - len(steps)
    subtotals = ", ".join(f"{owner} {per_owner[owner]}" for owner in [*node_names, CLUSTER_WIDE] if owner in per_owner)
    if graph.checks:
        # Invokes (components.common.node_check): `pulumi preview` does not list them either.
        lines.append("Node checks, run at every preview and up (no resources): "
                     + ", ".join(check.name for check in graph.checks))
    lines.append(f"Resources: {len(graph.resources) - n_read} to create ({len(steps) - n_read} steps, "
                 f"{n_components} components)" + (f", {n_read} to read" if n_read else "")
                 + f"; steps per node: {subtotals}; longest chain {graph.longest_chain()}")
    return "\n".join(lines) + "\n"
