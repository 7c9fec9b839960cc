"""A rank table the user brings (`network.rank_table_file`, or `validate
--rank-table FILE`): read, checked against HCCL's rules, the engine's and the
stack's, and later against the device IPs preflight finds.

Pure: no Pulumi import.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascend_inference.errors import Problem, StackError
from ascend_inference.ranktable import StackServer, check_rank_table_for_stack, validate_rank_table
from ascend_inference.safe_values import NotARegularFile, read_bounded

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan

KEY = "ascend-inference:network.rank_table_file"
# A table for 1,000 nodes of 16 NPUs, indented, is about 3 MB.
MAX_RANK_TABLE_BYTES = 16 * 2**20


def stack_servers(spec: ClusterSpec, found_device_ips: dict[str, list[str]] | None = None) -> list[StackServer]:
    """The stack's nodes as the checks see them; `found_device_ips` (by node
    name) replaces what the stack declares, once preflight has run."""
    servers = []
    for node in spec.nodes:
        assert node.address is not None, "check_spec requires an address per node"
        ips = (found_device_ips or {}).get(node.name) or node.device_ips or []
        servers.append(StackServer(node.name, node.address, tuple(ips), node.container_ip))
    return servers


def load_brought_table(spec: ClusterSpec, plan: Plan, stack_file: str, path: Path,
                       key: str = KEY) -> tuple[dict[str, Any], list[str]]:
    """The table at `path`, checked; returns it with its notes (what HCCL
    accepts that the tables this program writes do not do). Raises
    StackError with one problem per fault, each naming server, device and field."""
    source = str(path)
    engine = spec.engine_plugin
    if not engine.uses_rank_table:
        in_stack = key == KEY
        raise StackError([Problem(stack_file, key if in_stack else "ascend-inference:engine.kind",
                                  f"engine {spec.engine.kind} uses no HCCL rank table",
                                  f"drop {'network.rank_table_file' if in_stack else '--rank-table'}, or use an "
                                  "engine that reads one (mindie, lmdeploy)")])
    try:
        table = json.loads(read_bounded(path, MAX_RANK_TABLE_BYTES).decode("utf-8"))
    except NotARegularFile as error:
        raise StackError([Problem(stack_file, key, str(error),
                                  "give the path of the rank table JSON file, a regular file (1,000 A3 nodes "
                                  "take about 3 MB)")]) from None
    except OSError as error:
        raise StackError([Problem(stack_file, key, f"{path} cannot be read: {error.strerror}",
                                  "give the path of the rank table JSON file (relative paths are relative "
                                  "to the stack file)")]) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError: JSONDecodeError, or a number of more digits than Python
        # converts; RecursionError: nesting deeper than the parser goes.
        where = f"line {error.lineno} column {error.colno}: " if isinstance(error, json.JSONDecodeError) else ""
        what = ("is JSON nested too deeply to read" if isinstance(error, RecursionError)
                else f"is not JSON ({where}{getattr(error, 'msg', error)})")
        not_json = Problem(source, "(file)", what,
                           "a rank table is one JSON object; start from `python -m ascendctl render`")
        raise StackError([not_json]) from None
    options = engine.rank_table_options(spec)
    notes: list[str] = []
    problems = validate_rank_table(
        table, source=source, devices_per_node=spec.profile.devices_per_node,
        version=spec.profile.rank_table_version, require_container_ip=options.container_ip,
        every_device=False, notes=notes)
    if not problems:
        problems = check_rank_table_for_stack(table, source=source, stack_file=stack_file,
                                              servers=stack_servers(spec), world_size=plan.world_size,
                                              rules=options)
    if problems:
        raise StackError(problems)
    return table, notes


def found_ip_problems(table: dict[str, Any], spec: ClusterSpec, plan: Plan, source: str,
                      found_device_ips: dict[str, list[str]]) -> list[Problem]:
    """The brought table against the device IPs preflight found: a table
    whose device_ip is not the NPU's would cost an HCCL timeout."""
    return check_rank_table_for_stack(table, source=source, stack_file=source,
                                      servers=stack_servers(spec, found_device_ips), world_size=plan.world_size,
                                      rules=spec.engine_plugin.rank_table_options(spec), ips_found_by_preflight=True)


def found_sdid_problems(table: dict[str, Any], spec: ClusterSpec, source: str,
                        super_pods: dict[str, dict[str, Any]]) -> list[Problem]:
    """A brought rank table 1.2 (Atlas A3) against the SDIDs preflight found
    (`facts.super_pods_of`): a `super_device_id` that is not its die's SDID
    points HCCL at another die."""
    problems: list[Problem] = []
    node_at = {n.address: n.name for n in spec.nodes}
    for s, server in enumerate(table.get("server_list") or []):
        node = node_at.get(server.get("server_id")) if isinstance(server, dict) else None
        if node is None or node not in super_pods:
            continue
        found = super_pods[node]["super_device_ids"]
        for d, device in enumerate(server.get("device") or []):
            device_id = device.get("device_id") if isinstance(device, dict) else None
            if not isinstance(device_id, str) or not device_id.isdigit() or int(device_id) >= len(found):
                continue
            sdid = found[int(device_id)]
            if device.get("super_device_id") != sdid:
                problems.append(Problem(
                    source, f"server_list[{s}].device[{d}].super_device_id",
                    f"server {server.get('server_id')} device {device_id} has super_device_id "
                    f"{device.get('super_device_id')}, but preflight found SDID {sdid} on {node} die {device_id}",
                    "use the SDID `npu-smi info -t spod-info -i NPU -c CHIP` prints on that node"))
    return problems
