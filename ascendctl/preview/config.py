"""Stack configs edited offline: a `--set KEY=VALUE` applied to a copy of a
stack's config, typed as `pulumi config set --path` types it, and the
generated configs of any number of nodes that depth tests and the scaling
benchmark preview."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from ascend_inference.errors import Problem, StackError
from ascend_inference.loaded import LoadedStack
from ascend_inference.spec import NAMESPACE

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_CLI_INT = re.compile(r"^[+-]?\d+$")


def cli_typed(raw: str, current: Any) -> Any:
    """VALUE as `pulumi config set --path KEY VALUE` stores it: a key that
    holds a string keeps a string; otherwise `true`/`false` become booleans
    and an integer an integer; everything else (0.5 included) is a string.
    The one extension: a value starting with `[` or `{` is read as YAML, to
    set a list or a node in one go (the CLI needs one --path per element)."""
    if raw.startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            return raw
    if isinstance(current, str):
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    if _CLI_INT.match(raw):
        return int(raw)
    return raw


def apply_change(config: dict[str, Any], assignment: str, file: str) -> dict[str, Any]:
    """`engine.max_num_seqs=128` applied to a copy of the stack's config."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise StackError([Problem(file, assignment, "not of the form KEY=VALUE",
                                  "e.g. --set engine.max_num_seqs=128")])
    parts = [(m.group(1), m.group(2)) for m in _PART.finditer(key)]
    if not parts or parts[0][0] is None:
        raise StackError([Problem(file, key, "not a config key path", "e.g. engine.max_num_seqs")])
    out = copy.deepcopy(config)
    top = f"{NAMESPACE}:{parts[0][0]}"
    if top not in out:
        if len(parts) == 1:
            out[top] = cli_typed(raw, None)
            return out
        out[top] = {}
    target: Any = out
    path = [top] + [p[0] if p[0] is not None else int(p[1]) for p in parts[1:]]
    for i, step in enumerate(path[:-1]):
        nxt = path[i + 1]
        try:
            if isinstance(target, dict) and step not in target:
                target[step] = [] if isinstance(nxt, int) else {}
            elif isinstance(target, list) and step == len(target):
                # One past the end appends, as `pulumi config set --path 'nodes[2].name'` does.
                target.append([] if isinstance(nxt, int) else {})
            target = target[step]
        except (KeyError, IndexError, TypeError):
            raise StackError([Problem(file, key, f"no such path in the stack ('{step}')",
                                      "check the key against the stack file")]) from None
    last = path[-1]
    value = cli_typed(raw, target.get(last) if isinstance(target, dict) else None)
    try:
        if isinstance(target, list) and isinstance(last, int) and last == len(target):
            target.append(value)
        else:
            target[last] = value
    except (KeyError, IndexError, TypeError):
        raise StackError([Problem(file, key, "no such path in the stack",
                                  "check the key against the stack file")]) from None
    return out


def scaled_config(loaded: LoadedStack, nodes: int) -> dict[str, Any]:
    """The stack's config with `nodes` nodes (generated addresses in the
    benchmarking range 198.18.0.0/15) and tp widened to the new world, so
    a graph of any size can be previewed. Only for vLLM-MindSpore/LMDeploy/
    MindIE layouts (tp over the whole world)."""
    config = copy.deepcopy(loaded.raw_config)
    devices = loaded.spec.profile.devices_per_node
    generated = []
    for i in range(nodes):
        generated.append({
            "name": f"node{i}",
            "host": f"198.18.{i // 250}.{i % 250 + 1}",
            "hostname": f"ascend-{i}",
            "device_ips": [f"198.19.{(i * devices + d) // 250}.{(i * devices + d) % 250 + 1}" for d in range(devices)],
        })
    config[f"{NAMESPACE}:nodes"] = generated
    parallel = dict(config.get(f"{NAMESPACE}:parallel") or {})
    parallel.update({"tp": nodes * devices // (parallel.get("pp", 1) * parallel.get("dp", 1))})
    config[f"{NAMESPACE}:parallel"] = parallel
    return config

