"""Printing recorded graphs and their differences as people read them: a
`pulumi preview`-like tree of resources with their dependencies, options and
inputs, and a `pulumi preview --diff`-like list of changes. Secrets print as
`[secret]`, unknowns as `(known after apply)`, long or multi-line strings as
their first line with a length and digest. (`--json` is `Graph.to_json`.)"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from ascendctl.preview.diff import MISSING, Change
from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.paths import PathPart, format_path
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


def format_diff(changes: list[Change]) -> str:
    """Human-readable diff; any value that is or contains a secret prints ``[secret]``."""
    if not changes:
        return "No changes.\n"
    lines = []
    counts: dict[str, int] = {}
    for ch in changes:
        counts[ch.action] = counts.get(ch.action, 0) + 1
        lines.append(f"{_SYMBOL[ch.action]:<2} {ch.action:<7} {ch.type} {ch.name}")
        if ch.reason:
            lines.append(f"           reason: {ch.reason}")
        for path, old, new in ch.details:
            mark = "  (forces replacement)" if path in ch.replace_paths else ""
            lines.append(f"           {path}: {_diff_value(old)} -> {_diff_value(new)}{mark}")
    summary = ", ".join(f"{counts[a]} to {a}" for a in ("create", "update", "replace", "delete") if a in counts)
    lines.append(f"Resources: {summary}")
    return "\n".join(lines) + "\n"


def _diff_value(v: Any) -> str:
    if v is MISSING:
        return "(absent)"
    if contains_secret(v):
        return SECRET_MASK
    return render_value(v)
