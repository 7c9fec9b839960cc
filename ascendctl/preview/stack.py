"""A stack's offline `preview` and `diff`: the real Pulumi program run under
the SDK's mocks with the stack's config (secrets as marked placeholders,
never decrypted), the synthetic node facts of `facts.py` as the nodes'
answers, and the result printed or compared."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ascend_inference.loaded import LoadedStack
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import (
    load_stack,
    read_config,
    resolve_stack,
)
from ascendctl.preview.config import apply_change
from ascendctl.preview.diff import Change, diff_graphs
from ascendctl.preview.facts import mock_calls, mock_outputs
from ascendctl.preview.graph import Graph
from ascendctl.preview.picture import Picture, build_picture
from ascendctl.preview.printer import format_diff, format_plan
from ascendctl.preview.providers import replace_keys
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
                 not_echoed: dict[str, frozenset[str]] | None = None) -> Graph:
    """The graph of `loaded` (or of `config`, when given, read from
    `loaded`'s file) as `pulumi preview` would build it. `not_echoed`:
    the outputs the mocks leave unknown (default `SCRIPTS_NOT_ECHOED`)."""
    from components.program import run

    config = loaded.raw_config if config is None else config
    previous = os.environ.get("ASCEND_INFERENCE_STACK_FILE")
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = loaded.file
    answers = mock_outputs(loaded)
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


def recorded_changes(name_or_path: str, assignments: list[str]) -> tuple[list[Change], Graph, Graph]:
    """The changes `assignments` make, with the recordings before and after."""
    name, path = resolve_stack(name_or_path)
    changed = read_config(path)
    for assignment in assignments:
        changed = apply_change(changed, assignment, str(path))
    before = record_stack(load_stack(name_or_path))
    after = record_stack(_loaded_from_config(name, str(path), changed), changed)
    return diff_graphs(before, after, replace_keys=replace_keys), before, after


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
