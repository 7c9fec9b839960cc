"""Which recorded values only a rollout can know.

The offline preview answers every resource with made-up outputs (ids, image
ids, what preflight, the weights and image steps print: `facts.py`), so
that the program's checks, the rank table and the diffs run on something.
A real `pulumi preview` has none of them: an output of a resource still to
be created is unknown there, and so is every input computed from one
(the CLI prints `output<string>`). The printouts mark such values the same
way instead of printing the mocks' inventions as facts:

* a stack output is unknown when it was computed from a custom resource
  (`Graph.output_dependencies`, the Output's own resource set);
* in a resource's input that the request says was computed from other
  resources' outputs (its property dependencies), a leaf is unknown when it
  is a value the mocks made up (`Graph.mock_values`), or is derived data the
  request cannot tell apart from them: a script or file (several lines or
  long), a JSON record, a hex digest. The short plain strings beside them
  (a connection identity, "key = value" lines) stay known. This errs
  towards unknown: a digest of known data in such an input is marked too.

The check per leaf is a set lookup or a short match, so this stays linear in
what is printed (the preview is measured at 1,000 nodes:
benchmarks/preview_scaling.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ascendctl.preview.graph import Graph, ResourceRecord
from ascendctl.preview.paths import PathPart, format_path
from ascendctl.preview.values import ResourceReference, Secret, Unknown, contains_secret, is_asset_or_archive

_HEX_DIGEST = re.compile(r"(sha256:)?[0-9a-f]{16,}")
_LONG = 200


class AfterApply:
    """A value only a rollout learns; printed as `pulumi preview` prints one."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"output<{self.kind}>"

    __str__ = __repr__


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def mock_values_of(answer: dict[str, Any]) -> Iterable[str]:
    """The made-up values in one mock answer (`RecordingMocks` state): its
    id, every string output, and the ids and digests in a JSON line a step
    prints (image ids, weights fingerprints)."""
    for key, value in answer.items():
        if not isinstance(value, str) or not value.strip():
            continue
        yield value
        if key == "stdout":
            yield value.strip()
            try:
                printed = json.loads(value)
            except ValueError:
                continue
            if isinstance(printed, dict):
                yield from (v for v in printed.values() if isinstance(v, str) and _HEX_DIGEST.fullmatch(v))


def _derived_looking(value: str) -> bool:
    return ("\n" in value.rstrip("\n") or len(value) > _LONG or value[:1] in "{["
            or _HEX_DIGEST.fullmatch(value) is not None)


def _mask(value: Any, mock: set[str], computed: bool) -> Any:
    if isinstance(value, (Secret, Unknown, ResourceReference)):
        return value
    if isinstance(value, str):
        if value in mock or computed and _derived_looking(value):
            return AfterApply("string")
        return value
    if isinstance(value, dict):
        if is_asset_or_archive(value):
            return AfterApply("asset") if computed else value
        return {k: _mask(v, mock, computed) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, mock, computed) for v in value]
    return value


def known_inputs(record: ResourceRecord, mock: set[str]) -> dict[str, Any]:
    """`record.inputs` with what only a rollout knows as `AfterApply`."""
    computed = {key for key, urns in record.property_dependencies.items() if urns}
    if not computed and not mock:
        return record.inputs
    return {key: _mask(value, mock, key in computed) for key, value in record.inputs.items()}


def known_outputs(graph: Graph) -> dict[str, Any]:
    """The stack outputs, each one computed from a resource unknown as a
    whole (its shape too comes from the rollout); secrets stay masked."""
    return {key: (value if contains_secret(value) else AfterApply(_kind(value)))
            if graph.output_dependencies.get(key) else _mask(value, graph.mock_values, False)
            for key, value in graph.outputs.items()}


def after_apply_paths(value: Any, parts: list[PathPart] | None = None) -> list[str]:
    """The paths of the `AfterApply` leaves in a masked value (for `--json`)."""
    parts = parts or []
    if isinstance(value, AfterApply):
        return [format_path(parts)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in after_apply_paths(v, parts + [k])]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in after_apply_paths(v, parts + [i])]
    return []


def annotated_json(graph: Graph) -> dict[str, Any]:
    """`Graph.to_dict` (every value as recorded, the mocks' made-up ones
    included) with, per resource, the input paths that only a rollout knows
    (`after_apply`), and the stack outputs computed from resources."""
    doc = graph.to_dict()
    for rec, entry in zip(graph.resources, doc["resources"], strict=True):
        paths = after_apply_paths(known_inputs(rec, graph.mock_values))
        if paths:
            entry["after_apply"] = paths
    doc["outputs_after_apply"] = sorted(k for k, v in graph.output_dependencies.items() if v)
    doc["note"] = ("offline preview under mocks: the values at each resource's after_apply paths and the "
                   "outputs_after_apply are the mocks' stand-ins for what only a rollout learns "
                   "(ids, image ids, node facts, command output), not facts")
    return doc
