"""The difference between two recordings of a program (before and after a
config change): per resource, created, deleted, updated in place or replaced,
with the changed input paths and why. Update-or-replace follows the request's
`replace_on_changes` plus a caller-supplied `replace_keys` table of what the
provider itself forces to replace (`providers.replace_keys` for this
program's providers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ascendctl.preview.graph import Graph, ResourceRecord, alias_urns
from ascendctl.preview.paths import PathPart, format_path, parse_path, path_matches
from ascendctl.preview.values import (
    SECRET_MASK,
    Secret,
    Unknown,
    contains_secret,
    is_asset_or_archive,
    masked,
)


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


MISSING = _Missing()


@dataclass
class Change:
    """What a config change does to one resource."""

    urn: str
    type: str
    name: str
    action: str  # "create" | "delete" | "update" | "replace"
    paths: list[str] = field(default_factory=list)  # changed input paths
    replace_paths: list[str] = field(default_factory=list)  # the ones forcing replacement
    reason: str = ""
    details: list[tuple[str, Any, Any]] = field(default_factory=list)  # (path, old, new)
    # Set where the offline diff cannot know: `action` is what `pulumi
    # preview` shows (an input it cannot know yet counts as changed), and
    # `unless_changed` what `pulumi up` does when the values that only the
    # nodes and the rollout give come out as they are now ("same" or
    # "update"); `up` does `action` when they change.
    unless_changed: str | None = None

    @property
    def if_facts_unchanged(self) -> str:
        """What `pulumi up` does when what the nodes report comes out as it is now."""
        return self.unless_changed or self.action

    @property
    def outcome(self) -> str:
        """`action`, or `<action>-or-<unless_changed>` where it depends on what the nodes report."""
        return f"{self.action}-or-{self.unless_changed}" if self.unless_changed else self.action

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; values that are or contain secrets become ``"[secret]"``."""
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "action": self.action,
            "paths": list(self.paths),
            "replace_paths": list(self.replace_paths),
            "reason": self.reason,
            "unless_changed": self.unless_changed,
            "details": [
                {"path": p, "old": _diff_json(o), "new": _diff_json(n)} for p, o, n in self.details
            ],
        }


def _diff_json(v: Any) -> Any:
    if v is MISSING:
        return {"$absent": True}
    if contains_secret(v):
        return SECRET_MASK
    return masked(v)


def _diff_values(old: Any, new: Any, parts: list[PathPart], out: list[tuple[list[PathPart], Any, Any]]) -> None:
    if isinstance(old, Secret) or isinstance(new, Secret):
        if not (isinstance(old, Secret) and isinstance(new, Secret) and old == new):
            out.append((parts, old, new))
        return
    if (isinstance(old, dict) and isinstance(new, dict)
            and not is_asset_or_archive(old) and not is_asset_or_archive(new)):
        for k in list(old.keys()) + [k for k in new.keys() if k not in old]:
            _diff_values(old.get(k, MISSING), new.get(k, MISSING), parts + [k], out)
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _diff_values(old[i] if i < len(old) else MISSING, new[i] if i < len(new) else MISSING, parts + [i], out)
        return
    if old is MISSING and new is MISSING:
        return
    if isinstance(new, Unknown):
        # An unknown new value is a change whatever the old one was: the
        # providers diff it so (pulumi-go-provider infer/resource.go `diff`,
        # the bridge's `(*Provider).Diff`; docs/standin-plugins.md C5, D6).
        out.append((parts, old, new))
        return
    if type(old) is not type(new) or old != new:
        # 1 == 1.0 and True == 1 are not changes worth reporting, but "1" vs 1 is.
        both_numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
        if not (both_numbers and old == new):
            out.append((parts, old, new))


def _aliases_map(after: Graph, before: Graph) -> dict[str, str]:
    """after-URN -> before-URN for resources that moved with an alias."""
    out = {}
    for r in after.resources:
        if r.urn in before.by_urn:
            continue
        for a in alias_urns(r):
            if a in before.by_urn:
                out[r.urn] = a
                break
    return out


def diff_graphs(
    before: Graph,
    after: Graph,
    *,
    replace_keys: Callable[[ResourceRecord], set[str]] | None = None,
) -> list[Change]:
    """Per-resource changes from ``before`` to ``after`` (matched by URN, or URN alias).

    * ``create`` / ``delete``: URN only in one graph.
    * ``update``: some input path differs (``ignore_changes`` paths removed).
    * ``replace``: a changed path matches the request's ``replace_on_changes``
      (e.g. pulumi-command's ``triggers[*]``) or a pattern from
      ``replace_keys(after_record)`` (what the provider would force-replace), or
      the resource's explicit provider is replaced.
    * A changed input whose property dependencies include a replaced resource gets
      "because X is replaced" in its reason.  Resources whose inputs do not change
      are not listed, even when they depend on a replaced resource: under mocks the
      outputs they consume are known and compared by value.  (A real preview shows
      such inputs as unknown and lists more resources: `stack.recorded_changes`
      records again with those outputs unknown and merges both views,
      `merge_preview`; the engine's delete-before-replace spreading is
      `spread_delete_before_replace`.)

    Unchanged resources are omitted.  Order: after-graph registration order, then
    deletions in before-graph order.
    """
    alias = _aliases_map(after, before)
    matched_before: set[str] = set()
    changes: list[Change] = []
    replaced: set[str] = set()
    by_after: dict[str, Change] = {}

    for rec in after.resources:
        old_urn = rec.urn if rec.urn in before.by_urn else alias.get(rec.urn)
        if old_urn is None:
            ch = Change(rec.urn, rec.type, rec.name, "create", reason="new resource")
            changes.append(ch)
            by_after[rec.urn] = ch
            continue
        matched_before.add(old_urn)
        old = before.by_urn[old_urn]
        raw: list[tuple[list[PathPart], Any, Any]] = []
        _diff_values(old.inputs, rec.inputs, [], raw)
        ignore = rec.options.get("ignore_changes") or []
        raw = [d for d in raw if not any(path_matches(p, d[0], within_only=True) for p in ignore)]

        patterns: list[tuple[str, str]] = [(p, "replace_on_changes")
                                           for p in rec.options.get("replace_on_changes") or []]
        if replace_keys is not None:
            patterns += [(p, "provider forces replacement") for p in sorted(replace_keys(rec) or ())]

        paths = [format_path(p) for p, _, _ in raw]
        replace_paths: list[str] = []
        why: list[str] = []
        for parts, _, _ in raw:
            for pat, src in patterns:
                if path_matches(pat, parts):
                    replace_paths.append(format_path(parts))
                    rule = f"{src}: {pat}" if src == "replace_on_changes" else src
                    why.append(f"{format_path(parts)} changed ({rule})")
                    break
        provider_changed = (old.provider_urn or None) != (rec.provider_urn or None)
        if provider_changed:
            paths.append("provider")
            replace_paths.append("provider")
            why.append("provider reference changed")
        if not raw and not provider_changed:
            continue
        if old_urn != rec.urn:
            why.insert(0, f"aliased from {old_urn}")
        action = "replace" if replace_paths else "update"
        ch = Change(
            rec.urn,
            rec.type,
            rec.name,
            action,
            paths=paths,
            replace_paths=replace_paths,
            reason="; ".join(why) if why else "inputs changed: " + ", ".join(paths),
            details=[(format_path(p), o, n) for p, o, n in raw],
        )
        changes.append(ch)
        by_after[rec.urn] = ch
        if action == "replace":
            replaced.add(rec.urn)

    # A resource whose explicit provider is replaced is replaced too (registration
    # order is topological, so one pass suffices).
    for rec in after.resources:
        p = rec.provider_urn
        if p and p in replaced:
            pname = after.by_urn[p].name if p in after.by_urn else p
            ch = by_after.get(rec.urn) or Change(rec.urn, rec.type, rec.name, "replace", reason="")
            if rec.urn not in by_after:
                changes.append(ch)
                by_after[rec.urn] = ch
            if ch.action in ("update", "replace"):
                ch.action = "replace"
                ch.replace_paths.append("provider")
                ch.reason = (ch.reason + "; " if ch.reason else "") + f"provider {pname} is replaced"
                replaced.add(rec.urn)

    # Annotate data flow from replaced resources.
    for ch in changes:
        if ch.action not in ("update", "replace"):
            continue
        rec = after.by_urn[ch.urn]
        causes = []
        for path in ch.paths:
            top = parse_path(path)[0] if path != "provider" else None
            for dep in rec.property_dependencies.get(str(top), []) if top is not None else []:
                if dep in replaced and dep != rec.urn:
                    name = after.by_urn[dep].name
                    if name not in causes:
                        causes.append(name)
        if causes:
            ch.reason += "; because " + ", ".join(causes) + (" is" if len(causes) == 1 else " are") + " replaced"

    # Keep registration order for updates/creates even when added by propagation.
    order = {r.urn: i for i, r in enumerate(after.resources)}
    changes.sort(key=lambda c: order[c.urn])
    for rec in before.resources:
        if rec.urn not in matched_before and rec.urn not in after.by_urn:
            changes.append(Change(rec.urn, rec.type, rec.name, "delete", reason="no longer in the program"))
    return changes



def _top_key(pattern: str) -> str:
    """The input a replace pattern is about: `triggers[*]` -> `triggers`, `labels.**` -> `labels`."""
    return pattern.split(".", 1)[0].split("[", 1)[0]


def spread_delete_before_replace(
    before: Graph,
    after: Graph,
    changes: list[Change],
    *,
    replace_keys: Callable[[ResourceRecord], set[str]] | None = None,
    deletes_first: Callable[[ResourceRecord], bool] | None = None,
) -> list[Change]:
    """`changes` with what the engine deletes first when it replaces a
    resource delete-before-replace, added as replacements.

    The engine (pulumi/pulumi pkg/resource/deploy/step_generator.go,
    `calculateDependentReplacements`, called from `continueStepsFromDiff`
    when a replacement is delete-before-replace) walks the old state's
    dependents of the replaced resource (`DependencyGraph.DependingOn`:
    dependencies, property dependencies and provider; not children) in
    order and, for each one whose inputs depend on a resource in its
    replace set, diffs it with those inputs unknown; one that would be
    replaced joins the set and is deleted before the root. Whatever the new
    values turn out to be, such a resource is then recreated. A dependent
    whose provider is in the set is replaced too. `deletes_first(record)`
    says whether a replacement of that resource is delete-before-replace
    (default: its `delete_before_replace` option)."""
    by_urn = {c.urn: c for c in changes}
    index = {r.urn: i for i, r in enumerate(before.resources)}
    first = deletes_first or (lambda rec: bool(rec.options.get("delete_before_replace")))
    roots = [c for c in changes if c.action == "replace" and c.urn in index
             and first(after.by_urn.get(c.urn) or before.by_urn[c.urn])]
    for root in sorted(roots, key=lambda c: index[c.urn]):
        replace_set = {root.urn}
        dependents = {root.urn}
        for rec in before.resources[index[root.urn] + 1:]:
            inputs_from = {k: set(urns) for k, urns in rec.property_dependencies.items()}
            edges = set(rec.dependencies).union(*inputs_from.values()) if inputs_from else set(rec.dependencies)
            if rec.provider_urn:
                edges.add(rec.provider_urn)
            if not edges & dependents:
                continue
            dependents.add(rec.urn)
            if not rec.custom:
                continue
            ignored = {_top_key(p) for p in rec.options.get("ignore_changes") or []}
            keys = sorted(k for k, urns in inputs_from.items() if urns & replace_set and k not in ignored)
            forcing = {_top_key(p) for p in rec.options.get("replace_on_changes") or []}
            if replace_keys is not None:
                forcing |= {_top_key(p) for p in replace_keys(rec) or ()}
            cause = ""
            if rec.provider_urn in replace_set:
                cause = "its provider is"
            elif any(k in forcing for k in keys):
                cause = f"its {', '.join(k for k in keys if k in forcing)} come(s) from what is"
            if not cause:
                continue
            replace_set.add(rec.urn)
            if rec.urn not in after.by_urn:
                continue  # no longer in the program: deleted anyway
            why = (f"deleted before {root.name} is replaced ({cause} replaced delete-before-replace, "
                   "so the engine recreates it whatever the new values)")
            ch = by_urn.get(rec.urn)
            if ch is None:
                ch = Change(rec.urn, rec.type, rec.name, "replace", reason=why)
                changes.append(ch)
                by_urn[rec.urn] = ch
            elif ch.action != "replace":
                ch.action = "replace"
                ch.reason = (ch.reason + "; " if ch.reason else "") + why
    order = {r.urn: i for i, r in enumerate(after.resources)}
    created = [c for c in changes if c.urn in order]
    created.sort(key=lambda c: order[c.urn])
    return created + [c for c in changes if c.urn not in order]


_STRENGTH = {"update": 1, "create": 2, "delete": 2, "replace": 3}


def merge_preview(by_value: list[Change], preview: list[Change]) -> list[Change]:
    """One list from the by-value diff (the values only the rollout gives
    taken as they are now) and the preview diff (those values unknown, as
    `pulumi preview` has them): the preview's action, and where the two
    differ, `unless_changed` = the by-value action ("same" when it lists
    nothing) with the reason."""
    value_of = {c.urn: c for c in by_value}
    out = []
    for ch in preview:
        known = value_of.get(ch.urn)
        known_action = known.action if known is not None else "same"
        if known_action != ch.action and _STRENGTH.get(ch.action, 0) > _STRENGTH.get(known_action, 0):
            unknown = ", ".join(p for p, _, new in ch.details if isinstance(new, Unknown)) or "its inputs"
            ch.unless_changed = known_action
            ch.reason = ((known.reason + "; " if known is not None and known.reason else "")
                         + f"depends on what the nodes report: the preview cannot know {unknown}"
                         f" (computed from steps the change redoes, known only once they have run), so it shows "
                         f"{ch.action}; `pulumi up` does {known_action if known_action != 'same' else 'nothing'} "
                         f"when those values come out as they are now")
        out.append(ch)
    return out
