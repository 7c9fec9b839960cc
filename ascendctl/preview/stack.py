"""A stack's offline `preview` and `diff`: the real Pulumi program run under
the SDK's mocks with the stack's config (secrets as marked placeholders,
never decrypted), the synthetic node facts of `facts.py` as the nodes'
answers, and the result printed or compared."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ascend_inference.loaded import LoadedStack
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import (
    load_stack,
    read_config,
    resolve_stack,
)
from ascendctl.preview.config import apply_change
from ascendctl.preview.diff import Change, diff_graphs, merge_preview, spread_delete_before_replace
from ascendctl.preview.facts import CREATED, UPDATED, mock_calls, mock_outputs
from ascendctl.preview.graph import Graph
from ascendctl.preview.picture import Picture, build_picture
from ascendctl.preview.printer import format_diff, format_plan
from ascendctl.preview.providers import COMMAND, deletes_first, replace_keys
from ascendctl.preview.recorder import record_graph
from ascendctl.preview.unknowns import annotated_json, mock_values_of
from ascendctl.preview.values import Secret

if TYPE_CHECKING:
    from pulumi.runtime import MockResourceArgs


def config_for(loaded: LoadedStack, config: dict[str, Any]) -> dict[str, Any]:
    """Stack config as the Pulumi engine would hand it to the program; the
    stack's secrets as secret placeholders (never decrypted here)."""
    values: dict[str, Any] = {k: v for k, v in config.items()
                              if not (isinstance(v, dict) and set(v) == {"secure"})}
    for key in loaded.spec.secret_keys():
        values[f"{NAMESPACE}:{key}"] = Secret(f"<{key}: encrypted in the stack file>")
    return values


# A command's scripts, which the mocks do not hand back as its outputs (they
# are unknown in the recording): the program never reads a script back, and
# the SDK would keep more copies of each for every command (a preview of
# 1,000 LMDeploy nodes peaked at 1,850 MB with them, 1,640 MB without; a real
# `pulumi preview` does keep them). The recorded graph is the same either way
# (tests/test_preview_memory.py records every stack both ways).
SCRIPTS_NOT_ECHOED: dict[str, frozenset[str]] = {
    "command:remote:Command": frozenset({"create", "update", "delete", "stdin"}),
}


def record_stack(loaded: LoadedStack, config: dict[str, Any] | None = None, *,
                 not_echoed: dict[str, frozenset[str]] | None = None,
                 unknown: Mapping[str, str] | None = None) -> Graph:
    """The graph of `loaded` (or of `config`, when given, read from
    `loaded`'s file) as `pulumi preview` would build it. `not_echoed`:
    the outputs the mocks leave unknown (default `SCRIPTS_NOT_ECHOED`);
    `unknown`: the resources whose outputs a real preview does not know yet
    (`facts.mock_outputs`)."""
    from components.program import run

    config = loaded.raw_config if config is None else config
    previous = os.environ.get("ASCEND_INFERENCE_STACK_FILE")
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = loaded.file
    answers = mock_outputs(loaded, unknown) if unknown else mock_outputs(loaded)
    made_up: set[str] = set()

    def outputs_for(args: MockResourceArgs) -> dict[str, Any]:
        answer = answers(args)
        made_up.update(mock_values_of(answer))
        return answer

    try:
        graph = record_graph(run, config_for(loaded, config), project=NAMESPACE, stack=loaded.name,
                             outputs_for=outputs_for, call_for=mock_calls(outputs_for),
                             not_echoed=SCRIPTS_NOT_ECHOED if not_echoed is None else not_echoed)
        graph.mock_values = made_up
        return graph
    finally:
        if previous is None:
            os.environ.pop("ASCEND_INFERENCE_STACK_FILE", None)
        else:
            os.environ["ASCEND_INFERENCE_STACK_FILE"] = previous


def preview_stack(name_or_path: str, *, as_json: bool = False, show_inputs: bool = True) -> str:
    """What `python -m ascendctl preview` prints."""
    loaded = load_stack(name_or_path)
    graph = record_stack(loaded)
    if as_json:
        return json.dumps(annotated_json(graph), indent=2, default=str)
    missing = [k for k in loaded.spec.secret_keys() if k not in loaded.secrets_present]
    header = [f"Previewing stack {loaded.name} ({loaded.file}) offline, under the Pulumi SDK's mocks:",
              f"{len(graph.resources)} resources, longest dependency chain {graph.longest_chain()}."]
    from ascend_inference.host_keys import insecure_host_keys_warning, missing_host_keys

    if loaded.spec.ssh.insecure_ignore_host_keys:
        header.append(f"Warning: {insecure_host_keys_warning(loaded.file)}")
    elif unpinned := missing_host_keys(loaded.spec, loaded.file):
        header.append(f"Note: {len(unpinned)} SSH host key(s) not pinned yet (`pulumi up` refuses to run without "
                      "them): python3 -m ascendctl hostkeys --stack NAME")
    header += [line[0].upper() + line[1:] for line in loaded.spec.insecure_warnings()]
    if missing:
        header.append("Note: secret(s) not set yet, placeholders used: "
                      + ", ".join(f"{NAMESPACE}:{k}" for k in missing)
                      + " (`pulumi up` refuses to run without them).")
    return "\n".join(header) + "\n\n" + format_plan(graph, [n.name for n in loaded.spec.nodes],
                                                       show_inputs=show_inputs)


def diff_stack(name_or_path: str, assignments: list[str]) -> str:
    """What `python -m ascendctl diff --set ...` prints."""
    name, _ = resolve_stack(name_or_path)
    head = f"Changes to stack {name} from {', '.join(assignments)} (offline, under mocks):\n"
    changes, before, after = recorded_changes(name_or_path, assignments)
    return head + format_diff(changes, before=before, after=after)


def changes_for(name_or_path: str, assignments: list[str]) -> list[Change]:
    """Per-resource changes that `assignments` make to the stack's graph."""
    return recorded_changes(name_or_path, assignments)[0]


# Recordings of the preview's unknowns before giving up on a fixed point:
# each adds at least one resource, and the chains are about 15 steps long.
PREVIEW_ROUNDS = 32


def recorded_changes(name_or_path: str, assignments: list[str]) -> tuple[list[Change], Graph, Graph]:
    """The changes `assignments` make, with the recordings before and after.

    Two views, as the real engine has them (docs/cli.md, "What a change
    redoes"): by value (every output a step gives taken as the mocks
    give it, i.e. as the nodes give it now), and as `pulumi preview` sees it:
    the outputs of what the change creates, replaces or updates are unknown
    there, and an input computed from one counts as changed (recorded again
    with those outputs unknown until nothing more changes). Both then get
    the engine's delete-before-replace spreading. Where the two differ the
    change's `unless_changed` says what `up` does if those values come out
    as they are now."""
    name, path = resolve_stack(name_or_path)
    changed = read_config(path)
    for assignment in assignments:
        changed = apply_change(changed, assignment, str(path))
    before = record_stack(load_stack(name_or_path))
    loaded_after = _loaded_from_config(name, str(path), changed)
    after = record_stack(loaded_after, changed)
    by_value = _engine_changes(before, after)
    unknown = _unknown_in_preview(by_value, {})
    preview, seen = by_value, after
    for _ in range(PREVIEW_ROUNDS):
        if not unknown:
            break
        seen = record_stack(loaded_after, changed, unknown=unknown)
        preview = _engine_changes(before, seen)
        grown = _unknown_in_preview(preview, unknown)
        if grown == unknown:
            break
        unknown = grown
    if preview is by_value:
        return by_value, before, after
    return merge_preview(by_value, preview), before, after


def _engine_changes(before: Graph, after: Graph) -> list[Change]:
    changes = diff_graphs(before, after, replace_keys=replace_keys)
    return spread_delete_before_replace(before, after, changes, replace_keys=replace_keys,
                                        deletes_first=deletes_first)


def _unknown_in_preview(changes: list[Change], known: Mapping[str, str]) -> dict[str, str]:
    """`known` with the resources whose outputs `changes` leave unknown in a preview."""
    out = dict(known)
    for ch in changes:
        if ch.action in ("create", "replace"):
            out[ch.name] = CREATED
        elif ch.action == "update" and ch.type == COMMAND:
            out.setdefault(ch.name, UPDATED)
    return out


def _loaded_from_config(name: str, file: str, config: dict[str, Any]) -> LoadedStack:
    from ascend_inference.stackfile import _split_config, spec_from_sections

    sections, others, problems = _split_config(config, file)
    return spec_from_sections(name, file, sections, others, problems=problems, raw_config=config)


def loaded_with_config(loaded: LoadedStack, config: dict[str, Any]) -> LoadedStack:
    """`loaded`'s stack as if its file held `config`."""
    return _loaded_from_config(loaded.name, loaded.file, config)


def picture_of(name_or_path: str, assignments: list[str]) -> Picture:
    """The resource graph to draw (`python -m ascendctl graph`): the stack as
    it is, or as `assignments` change it, with what they change marked."""
    loaded = load_stack(name_or_path)
    nodes = [n.name for n in loaded.spec.nodes]
    if not assignments:
        return build_picture(record_stack(loaded), nodes, f"stack {loaded.name}: resource graph")
    changes, _before, after = recorded_changes(name_or_path, assignments)
    keys = ", ".join(a.split("=", 1)[0] for a in assignments)  # the keys only: a value may be a secret
    counts = {a: sum(1 for c in changes if c.action == a) for a in ("replace", "update", "create", "delete")}
    summary = ", ".join(f"{n} to {a}" for a, n in counts.items() if n) or "no changes"
    return build_picture(after, nodes, f"stack {loaded.name}, changing {keys}: {summary}", changes)
