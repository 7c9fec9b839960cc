"""A stack's offline `preview` and `diff`: the real Pulumi program run under
the SDK's mocks with the stack's config (secrets as marked placeholders,
never decrypted), the synthetic node facts of `facts.py` as the nodes'
answers, and the result printed or compared."""

from __future__ import annotations

import os
from typing import Any

from ascend_inference.loaded import LoadedStack
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import (
    load_stack,
    read_config,
    resolve_stack,
)
from ascendctl.preview.config import apply_change
from ascendctl.preview.diff import Change, diff_graphs
from ascendctl.preview.facts import mock_outputs
from ascendctl.preview.graph import Graph
from ascendctl.preview.printer import format_diff, format_tree
from ascendctl.preview.providers import replace_keys
from ascendctl.preview.recorder import record_graph
from ascendctl.preview.values import Secret


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
    try:
        return record_graph(run, config_for(loaded, config), project=NAMESPACE, stack=loaded.name,
                            outputs_for=mock_outputs(loaded),
                            not_echoed=SCRIPTS_NOT_ECHOED if not_echoed is None else not_echoed)
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
        return graph.to_json()
    missing = [k for k in loaded.spec.secret_keys() if k not in loaded.secrets_present]
    header = [f"Previewing stack {loaded.name} ({loaded.file}) offline, under the Pulumi SDK's mocks:",
              f"{len(graph.resources)} resources, longest dependency chain {graph.longest_chain()}."]
    header += [line[0].upper() + line[1:] for line in loaded.spec.insecure_warnings()]
    if missing:
        header.append("Note: secret(s) not set yet, placeholders used: "
                      + ", ".join(f"{NAMESPACE}:{k}" for k in missing)
                      + " (`pulumi up` refuses to run without them).")
    return "\n".join(header) + "\n\n" + format_tree(graph, show_inputs=show_inputs)


def diff_stack(name_or_path: str, assignments: list[str]) -> str:
    """What `python -m ascendctl diff --set ...` prints."""
    name, _ = resolve_stack(name_or_path)
    head = f"Changes to stack {name} from {', '.join(assignments)} (offline, under mocks):\n"
    return head + format_diff(changes_for(name_or_path, assignments))


def changes_for(name_or_path: str, assignments: list[str]) -> list[Change]:
    """Per-resource changes that `assignments` make to the stack's graph."""
    name, path = resolve_stack(name_or_path)
    changed = read_config(path)
    for assignment in assignments:
        changed = apply_change(changed, assignment, str(path))
    before = record_stack(load_stack(name_or_path))
    after = record_stack(_loaded_from_config(name, str(path), changed), changed)
    return diff_graphs(before, after, replace_keys=replace_keys)


def _loaded_from_config(name: str, file: str, config: dict[str, Any]) -> LoadedStack:
    from ascend_inference.stackfile import _split_config, spec_from_sections

    sections, others, problems = _split_config(config, file)
    return spec_from_sections(name, file, sections, others, problems=problems, raw_config=config)


def loaded_with_config(loaded: LoadedStack, config: dict[str, Any]) -> LoadedStack:
    """`loaded`'s stack as if its file held `config`."""
    return _loaded_from_config(loaded.name, loaded.file, config)
