"""Offline `preview` and `diff`: the real Pulumi program under the SDK's mocks.

There is no Pulumi engine here, so remote commands do not run. The mocks
answer the way healthy nodes matching the stack would: preflight prints the
real tools' formats (`npu-smi info`, `hccn_tool`) with the stack's declared
hostnames and device IPs, so the facts parser, the checks and the rank table
run on them exactly as in a rollout. Secrets get placeholders that are marked
secret and printed as `[secret]`.
"""
from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import yaml

from ascend_inference.errors import Problem, StackError
from ascendctl.graph import Graph, Secret, diff_graphs, format_diff, format_tree, record_graph
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack, read_config, resolve_stack

# What a provider replaces rather than updates (not visible in the request).
# pulumi-command replaces only on `triggers` (declared in the request as
# replace_on_changes); the program puts the connection identity there.
PROVIDER_REPLACES = {
    "docker:index/remoteImage:RemoteImage": {"name"},
}
# pulumi-docker (terraform-provider-docker underneath) recreates a container
# on any input change except these, which it applies to the running
# container or only to how it waits for it.
DOCKER_CONTAINER_IN_PLACE = {"restart", "maxRetryCount", "mustRun", "wait", "waitTimeout", "start", "attach",
                             "logs", "rm", "destroyGraceSeconds"}


def _replace_keys(record) -> set[str]:
    if record.type == "docker:index/container:Container":
        keys = set(record.inputs) - DOCKER_CONTAINER_IN_PLACE
        return keys | {f"{key}.**" for key in keys} | {f"{key}[*]" for key in keys} | {f"{key}[*].**" for key in keys}
    return PROVIDER_REPLACES.get(record.type, set())


# --- what healthy nodes would answer -------------------------------------

def synthetic_npu_smi(devices: int, name: str, hbm_mb: int) -> str:
    """`npu-smi info` in the 23.0.x layout (shared/reference/ascend-formats.md §1a)."""
    sep = "+===========================+===============+====================================================+"
    lines = [
        "+------------------------------------------------------------------------------------------------+",
        "| npu-smi 23.0.7                   Version: 23.0.7                                               |",
        "+---------------------------+---------------+----------------------------------------------------+",
        "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
        "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
        sep,
    ]
    for i in range(devices):
        lines.append(f"| {i:<5} {name:<19} | OK            | 96.5        36                0    / 0             |")
        lines.append(f"| 0                         | 0000:{i:02X}:00.0  | 0           0    / 0          3347 / {hbm_mb:<10}|")
        lines.append(sep)
    return "\n".join(lines)


def synthetic_preflight(loaded: LoadedStack, node_name: str) -> str:
    spec = loaded.spec
    node = next(n for n in spec.nodes if n.name == node_name)
    profile = spec.profile
    devices = profile.devices_per_node
    ips = node.device_ips or [f"198.18.{spec.nodes.index(node)}.{d + 1}" for d in range(devices)]
    tls = 1 if spec.network.hccl_tls == "enabled" else 0
    out = ["### hostname", node.hostname or f"{node.name}-host",
           "### npu-smi-info", synthetic_npu_smi(devices, f"{profile.chip}", profile.device_memory_gb * 1024),
           "### driver-version", "Version=24.1.rc3", "### firmware-version", "Version=7.5.0.1.129",
           "### cann-version", "version=8.0.0"]
    for d in range(devices):
        out += [f"### device {d} ip", f"ipaddr:{ips[d]}", "netmask:255.255.255.0",
                f"### device {d} link", "link status: UP",
                f"### device {d} net_health", "net health status: Success",
                f"### device {d} lldp", f"\tIfname: 400GE1/1/{d}:1",
                f"### device {d} netdetect", "netdetect address: 198.51.100.254",
                f"### device {d} gateway", f"default gateway:198.51.100.254, Iface:eth{d}",
                f"### device {d} tls",
                f"dev_id:{d}, tls switch[{tls}](0:disable, 1:enable), tls preconfigured[1](0:non-preset, 1:preset), "
                "tls alarm time threshold[60]days"]
    out += ["### hccl-rootinfo", "absent", "### model-path", "present", "### end"]
    return "\n".join(out) + "\n"


def mock_outputs(loaded: LoadedStack):
    node_names = {n.name for n in loaded.spec.nodes}

    def outputs_for(args) -> dict:
        return {"__id__": f"{args.name}-{_input_digest(_identity_inputs(args))}", **_outputs(args)}

    def _outputs(args) -> dict:
        name = args.name
        if args.typ == "docker:index/remoteImage:RemoteImage":
            return {"imageId": "sha256:" + _input_digest({"name": args.inputs.get("name")}) * 8}
        if args.typ != "command:remote:Command":
            return {}
        if name.endswith("-preflight") and name[: -len("-preflight")] in node_names:
            return {"stdout": synthetic_preflight(loaded, name[: -len("-preflight")]), "stderr": ""}
        if name.endswith("-weights"):
            node = name[: -len("-weights")]
            return {"stdout": json.dumps({"node": node, "path": loaded.spec.model.path, "files": 163,
                                          "bytes": 0, "fingerprint": "0" * 64}) + "\n", "stderr": ""}
        if name == "gpustack-token":
            return {"stdout": "mock-registration-token\n", "stderr": ""}
        if name == "gpustack-admin-password":
            return {"stdout": "mock-admin-password\n", "stderr": ""}
        return {"stdout": "", "stderr": ""}

    return outputs_for


def _identity_inputs(args) -> Any:
    """The inputs whose change gives a resource a new id. The providers keep
    the id on an in-place update and mint one only when they create (a new
    resource, or a replacement): for a command that is its `triggers`, for a
    container every input but the ones it updates in place."""
    if args.typ == "command:remote:Command":
        return args.inputs.get("triggers")
    if args.typ == "docker:index/container:Container":
        return {k: v for k, v in args.inputs.items() if k not in DOCKER_CONTAINER_IN_PLACE}
    return args.inputs


def _input_digest(inputs) -> str:
    import hashlib

    def stable(value):  # unknowns print with their address; make them equal
        return "<unknown>" if type(value).__name__ == "Unknown" else str(value)

    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=stable).encode()).hexdigest()[:8]


# --- running the program ---------------------------------------------------

def config_for(loaded: LoadedStack, config: dict) -> dict[str, Any]:
    """Stack config as the Pulumi engine would hand it to the program; the
    stack's secrets as secret placeholders (never decrypted here)."""
    values: dict[str, Any] = {k: v for k, v in config.items()
                              if not (isinstance(v, dict) and set(v) == {"secure"})}
    for key in loaded.spec.secret_keys():
        values[f"{NAMESPACE}:{key}"] = Secret(f"<{key}: encrypted in the stack file>")
    return values


def record_stack(loaded: LoadedStack, config: dict | None = None) -> Graph:
    from components.program import run

    config = loaded.raw_config if config is None else config
    previous = os.environ.get("ASCEND_INFERENCE_STACK_FILE")
    os.environ["ASCEND_INFERENCE_STACK_FILE"] = loaded.file
    try:
        return record_graph(run, config_for(loaded, config), project=NAMESPACE, stack=loaded.name,
                            outputs_for=mock_outputs(loaded))
    finally:
        if previous is None:
            os.environ.pop("ASCEND_INFERENCE_STACK_FILE", None)
        else:
            os.environ["ASCEND_INFERENCE_STACK_FILE"] = previous


def preview_stack(name_or_path: str, *, as_json: bool = False, show_inputs: bool = True) -> str:
    loaded = load_stack(name_or_path)
    graph = record_stack(loaded)
    if as_json:
        return graph.to_json()
    missing = [k for k in loaded.spec.secret_keys() if k not in loaded.secrets_present]
    header = [f"Previewing stack {loaded.name} ({loaded.file}) offline, under the Pulumi SDK's mocks:",
              f"{len(graph.resources)} resources, longest dependency chain {graph.longest_chain()}."]
    if missing:
        header.append("Note: secret(s) not set yet, placeholders used: "
                      + ", ".join(f"{NAMESPACE}:{k}" for k in missing)
                      + " (`pulumi up` refuses to run without them).")
    return "\n".join(header) + "\n\n" + format_tree(graph, show_inputs=show_inputs)


# --- diff ------------------------------------------------------------------

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


def apply_change(config: dict, assignment: str, file: str) -> dict:
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
        raise StackError([Problem(file, key, "no such path in the stack", "check the key against the stack file")]) from None
    return out


def diff_stack(name_or_path: str, assignments: list[str]) -> str:
    name, _ = resolve_stack(name_or_path)
    head = f"Changes to stack {name} from {', '.join(assignments)} (offline, under mocks):\n"
    return head + format_diff(changes_for(name_or_path, assignments))


def changes_for(name_or_path: str, assignments: list[str]):
    """Per-resource changes that `assignments` make to the stack's graph."""
    name, path = resolve_stack(name_or_path)
    changed = read_config(path)
    for assignment in assignments:
        changed = apply_change(changed, assignment, str(path))
    before = record_stack(load_stack(name_or_path))
    after = record_stack(_loaded_from_config(name, str(path), changed), changed)
    return diff_graphs(before, after, replace_keys=_replace_keys)


def _loaded_from_config(name: str, file: str, config: dict) -> LoadedStack:
    from ascend_inference.stackfile import _split_config, spec_from_sections

    sections, others, problems = _split_config(config, file)
    return spec_from_sections(name, file, sections, others, problems=problems, raw_config=config)


# --- generated stacks (depth tests, scaling benchmark) -----------------------

def scaled_config(loaded: LoadedStack, nodes: int) -> dict:
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


def loaded_with_config(loaded: LoadedStack, config: dict) -> LoadedStack:
    return _loaded_from_config(loaded.name, loaded.file, config)
