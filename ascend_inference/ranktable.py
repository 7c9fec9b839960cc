"""HCCL rank tables: built from the plan and the device IPs, and checked.

The format is the one of runbooks 001 (MindIE: `container_ip` per server) and
004 (LMDeploy: `device_port` per device): every number is a string,
`server_list` is in node order with the master first, `device_id` is the local
index, `rank_id` the global one. `validate_rank_table` also checks tables that
users bring (the ones merged by hand today).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from ascend_inference.errors import Problem

# The rank table versions HCCL reads; any other is rejected at start.
HCCL_VERSIONS = ("1.0", "1.1", "1.2", "Standard")

# Placeholder shown by `render` for a device IP that preflight discovers.
DISCOVERED = "<discovered by preflight: hccn_tool -i {device} -ip -g on {node}>"
# ... and for an A3 die's SDID / super pod id (rank table 1.2).
SPOD_DISCOVERED = "<discovered by preflight: {what} of npu-smi info -t spod-info -i {npu} -c {chip} on {node}>"


def rank_table_for(
    servers: list[dict[str, Any]],
    devices_per_node: int,
    *,
    version: str,
    with_container_ip: bool = False,
    device_port: str | None = None,
) -> dict[str, Any]:
    """servers: [{"server_id": ip, "device_ips": [...], "container_ip": ip}] in
    node order (master first). Returns the rank table as a JSON-ready dict.

    Version "1.2" (Atlas A3, CANN's HCCL guide "rank table配置资源信息 (Atlas A3)")
    adds, per server, `host_ip` and per device `super_device_id` (the die's
    SDID from `npu-smi info -t spod-info`), and a top-level `super_pod_list`
    grouping the servers by `super_pod_id`; each server dict then also carries
    "super_device_ids" (one per device) and "super_pod_id"."""
    server_list = []
    rank = 0
    for server in servers:
        devices: list[dict[str, str]] = []
        for device_id in range(devices_per_node):
            entry = {"device_id": str(device_id)}
            if version == "1.2":
                entry["super_device_id"] = str(server["super_device_ids"][device_id])
            entry["device_ip"] = server["device_ips"][device_id]
            if device_port is not None:
                entry["device_port"] = str(device_port)
            entry["rank_id"] = str(rank)
            devices.append(entry)
            rank += 1
        item: dict[str, Any] = {"device": devices, "server_id": server["server_id"]}
        if version == "1.2":
            item["host_ip"] = server["server_id"]
        if with_container_ip:
            item["container_ip"] = server.get("container_ip") or server["server_id"]
        server_list.append(item)
    table: dict[str, Any] = {
        "server_count": str(len(servers)),
        "server_list": server_list,
        "status": "completed",
        "version": version,
    }
    if version == "1.2":
        pods: dict[str, list[dict[str, Any]]] = {}
        for server in servers:
            pods.setdefault(str(server["super_pod_id"]), []).append({"server_id": server["server_id"]})
        table["super_pod_list"] = [{"super_pod_id": pod, "server_list": members} for pod, members in pods.items()]
    return table


def rank_table_json(table: dict[str, Any]) -> str:
    """Canonical text: the same table always gives the same bytes (and digest)."""
    return json.dumps(table, indent=4, ensure_ascii=False) + "\n"


def rank_table_digest(table: dict[str, Any]) -> str:
    return hashlib.sha256(rank_table_json(table).encode()).hexdigest()


def validate_rank_table(
    table: object,
    *,
    source: str,
    devices_per_node: int | None = None,
    version: str | None = None,
    server_count: int | None = None,
    require_container_ip: bool = False,
    every_device: bool = True,
    notes: list[str] | None = None,
) -> list[Problem]:
    """Every problem in a rank table, each naming the server and device.

    The rules are HCCL's, and no stricter: numbers are strings, `device_id`
    is an NPU of the server (0 .. devices_per_node-1, each once), `device_ip`
    is an IPv4 or IPv6 address used once, `rank_id` runs over 0 .. ranks-1
    with each value once, `server_id` is unique and shorter than 64
    characters. A server that lists only some of its NPUs, or ranks that are
    not numbered in server-then-device order, are accepted (HCCL accepts
    them); each is reported in `notes`. `every_device` (the tables this
    program writes) also requires all of each server's NPUs."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, message, fix))

    def note(text: str) -> None:
        if notes is not None:
            notes.append(f"{source}: {text}")

    if not isinstance(table, dict):
        bad("(root)", "a rank table is a JSON object", "start from `python -m ascendctl render`")
        return problems
    for field in ("server_count", "server_list", "status", "version"):
        if field not in table:
            bad(field, "missing", f"add \"{field}\"")
    if problems:
        return problems
    if table["status"] != "completed":
        bad("status", f"is '{table['status']}'", 'set "status": "completed"')
    if table["version"] not in HCCL_VERSIONS:
        bad("version", f"is '{table['version']}', which HCCL does not read (it reads {', '.join(HCCL_VERSIONS)})",
            f'set "version": "{version or "1.0"}"')
    elif version is not None and table["version"] != version:
        bad("version", f"is '{table['version']}' but this chip generation reads version '{version}'",
            f'set "version": "{version}"')
    servers = table["server_list"]
    if not isinstance(servers, list) or not servers:
        bad("server_list", "must be a non-empty list")
        return problems
    if not isinstance(table["server_count"], str):
        bad("server_count", "must be a string (HCCL reads every number as a string)",
            f'write "server_count": "{table["server_count"]}"')
    elif table["server_count"] != str(len(servers)):
        bad("server_count", f"says {table['server_count']} but server_list has {len(servers)} servers",
            f'set "server_count": "{len(servers)}"')
    if server_count is not None and len(servers) != server_count:
        bad("server_list", f"has {len(servers)} servers but the stack has {server_count} nodes",
            "list every node once, master first")

    seen_servers: dict[str, int] = {}
    seen_ips: dict[str, str] = {}
    # rank_id -> (where, label) of its first use; ranks in the order they appear.
    rank_owner: dict[int, str] = {}
    ranks_in_order: list[int] = []
    for s, server in enumerate(servers):
        where = f"server_list[{s}]"
        if not isinstance(server, dict):
            bad(where, "must be an object")
            continue
        server_id = server.get("server_id")
        if not isinstance(server_id, str) or not server_id:
            bad(f"{where}.server_id", "missing", "set it to the node's IP")
        elif len(server_id) >= 64:
            bad(f"{where}.server_id", f"server {server_id[:20]}... is {len(server_id)} characters; HCCL allows 63",
                "use the node's IP")
        elif server_id in seen_servers:
            bad(f"{where}.server_id",
                f"server {server_id} is listed twice (also server_list[{seen_servers[server_id]}])",
                "list each server once")
        else:
            seen_servers[server_id] = s
        label = f"server {server_id}" if server_id else where
        if require_container_ip and not server.get("container_ip"):
            bad(f"{where}.container_ip", f"{label} has no container_ip, which MindIE's service needs",
                "add \"container_ip\" (the server's IP unless the container has its own)")
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            bad(f"{where}.device", f"{label} has no devices")
            continue
        if devices_per_node is not None and len(devices) > devices_per_node:
            bad(f"{where}.device", f"{label} lists {len(devices)} devices but the node has {devices_per_node}",
                "list each NPU of the server once")
        elif devices_per_node is not None and len(devices) < devices_per_node:
            if every_device:
                bad(f"{where}.device", f"{label} lists {len(devices)} devices but the node has {devices_per_node}",
                    "list every NPU of the server")
            else:
                note(f"{label} uses {len(devices)} of its {devices_per_node} NPUs "
                     f"(device_id {', '.join(str(d.get('device_id')) for d in devices if isinstance(d, dict))})")
        seen_device_ids: dict[str, int] = {}
        for d, device in enumerate(devices):
            dwhere = f"{where}.device[{d}]"
            if not isinstance(device, dict):
                bad(dwhere, "must be an object")
                continue
            for field in ("device_id", "device_ip", "rank_id"):
                value = device.get(field)
                if value is None:
                    bad(f"{dwhere}.{field}", f"{label} device {d}: missing")
                elif not isinstance(value, str):
                    bad(f"{dwhere}.{field}", f"{label} device {d}: {field} must be a string", f'write "{value}"')
            device_id, device_ip, rank_id = device.get("device_id"), device.get("device_ip"), device.get("rank_id")
            if isinstance(device_id, str):
                limit = devices_per_node
                if not device_id.isdigit() or (limit is not None and int(device_id) >= limit):
                    bad(f"{dwhere}.device_id",
                        f"{label} device {d}: device_id '{device_id}' is not an NPU of the server"
                        + (f" (0..{limit - 1})" if limit is not None else ""),
                        "device_id is the NPU's number on its server, as `npu-smi info` lists it")
                elif device_id in seen_device_ids:
                    bad(f"{dwhere}.device_id", f"{label} device {d}: device_id '{device_id}' is listed twice "
                        f"(also device[{seen_device_ids[device_id]}])", "list each NPU of the server once")
                else:
                    seen_device_ids[device_id] = d
            name = device_id if isinstance(device_id, str) else d
            here = f"{label} device {name}"
            if isinstance(device_ip, str):
                try:
                    ipaddress.ip_address(device_ip)
                except ValueError:
                    bad(f"{dwhere}.device_ip", f"{here}: '{device_ip}' is not an IP address",
                        "use the address `hccn_tool -i N -ip -g` prints")
                else:
                    if device_ip in seen_ips:
                        bad(f"{dwhere}.device_ip",
                            f"{here} has device IP {device_ip}, already used by {seen_ips[device_ip]}",
                            "every NPU has its own IP; re-read them with `hccn_tool -i N -ip -g`")
                    else:
                        seen_ips[device_ip] = here
            if isinstance(rank_id, str):
                if not rank_id.isdigit():
                    bad(f"{dwhere}.rank_id", f"{here}: rank_id '{rank_id}' is not a number", "number the ranks from 0")
                elif int(rank_id) in rank_owner:
                    bad(f"{dwhere}.rank_id",
                        f"{here}: rank_id '{rank_id}' is already used by {rank_owner[int(rank_id)]}",
                        "give every device its own rank_id, from 0")
                else:
                    rank_owner[int(rank_id)] = here
                    ranks_in_order.append(int(rank_id))
    if table["version"] == "1.2":
        problems.extend(_super_pod_problems(table, source, servers))
    if rank_owner:
        total = sum(len(s.get("device") or []) for s in servers if isinstance(s, dict))
        missing = sorted(set(range(total)) - set(rank_owner))
        beyond = sorted(r for r in rank_owner if r >= total)
        for rank in beyond:
            bad("rank_id", f"{rank_owner[rank]}: rank_id '{rank}' is beyond the {total} ranks of the table"
                + (f" (rank {', '.join(map(str, missing))} is unused)" if missing else ""),
                f"number the ranks 0..{total - 1}")
        if not beyond and ranks_in_order != sorted(ranks_in_order):
            note("rank_id is not numbered in server then device order; HCCL accepts any order, "
                 "and the first server in the list need not hold rank 0")
    return problems


def _super_pod_problems(table: dict[str, Any], source: str, servers: list[Any]) -> list[Problem]:
    """Version 1.2: every device has a `super_device_id`, unique within its
    super pod (HCCL refuses "devices have same superDeviceId in superPod"),
    and every server is in exactly one entry of `super_pod_list`."""
    problems: list[Problem] = []
    pods = table.get("super_pod_list")
    if not isinstance(pods, list) or not pods:
        return [Problem(source, "super_pod_list", "version 1.2 needs a super_pod_list",
                        'add "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": ...}]}]')]
    pod_of: dict[str, str] = {}
    for p, pod in enumerate(pods):
        members = pod.get("server_list") if isinstance(pod, dict) else None
        pod_id = pod.get("super_pod_id") if isinstance(pod, dict) else None
        if not isinstance(pod_id, str) or not isinstance(members, list):
            problems.append(Problem(source, f"super_pod_list[{p}]", "needs a super_pod_id string and a server_list"))
            continue
        for member in members:
            server_id = member.get("server_id") if isinstance(member, dict) else None
            if server_id in pod_of:
                problems.append(Problem(source, f"super_pod_list[{p}]", f"server {server_id} is in super pod "
                                        f"{pod_of[server_id]} and {pod_id}", "put each server in one super pod"))
            else:
                pod_of[str(server_id)] = pod_id
    seen: dict[tuple[str, str], str] = {}
    for s, server in enumerate(servers):
        if not isinstance(server, dict):
            continue
        server_id = str(server.get("server_id"))
        if server_id not in pod_of:
            problems.append(Problem(source, f"server_list[{s}]", f"server {server_id} is in no super pod",
                                    "list it under super_pod_list[].server_list"))
            continue
        for d, device in enumerate(server.get("device") or []):
            if not isinstance(device, dict):
                continue
            sdid = device.get("super_device_id")
            here = f"server {server_id} device {device.get('device_id', d)}"
            if not isinstance(sdid, str) or not sdid.isdigit():
                problems.append(Problem(source, f"server_list[{s}].device[{d}].super_device_id",
                                        f"{here}: version 1.2 needs super_device_id as a string of digits",
                                        "use the SDID `npu-smi info -t spod-info -i NPU -c CHIP` prints"))
            elif (pod_of[server_id], sdid) in seen:
                problems.append(Problem(source, f"server_list[{s}].device[{d}].super_device_id",
                                        f"{here} has super_device_id {sdid}, already used by "
                                        f"{seen[(pod_of[server_id], sdid)]} in super pod {pod_of[server_id]}",
                                        "re-read the SDIDs with `npu-smi info -t spod-info`"))
            else:
                seen[(pod_of[server_id], sdid)] = here
        host_ip = server.get("host_ip")
        if host_ip is not None:
            try:
                ipaddress.ip_address(str(host_ip))
            except ValueError:
                problems.append(Problem(source, f"server_list[{s}].host_ip",
                                        f"server {server_id}: host_ip '{host_ip}' is not an IP address"))
    return problems


@dataclass(frozen=True)
class StackServer:
    """A node as the stack declares it, for checking a table someone brings."""

    name: str
    address: str
    # Declared device IPs by NPU number (empty: found by preflight, not declared).
    device_ips: tuple[str, ...] = ()
    container_ip: str | None = None


@dataclass(frozen=True)
class RankTableOptions:
    """What an engine's HCCL rank table carries beyond the common format, and
    what the engine requires of one beyond HCCL's rules."""

    # Named in messages ("mindie requires ...").
    engine: str = "the engine"
    # Every server has `container_ip`, and a table without it is refused (runbook 001).
    container_ip: bool = False
    # Every device has this `device_port` (runbook 004).
    device_port: str | None = None
    # The first server of the table must be the master (LMDeploy: Ray's head).
    first_server_is_master: bool = False
    # (min, max) servers the engine accepts in one table.
    server_count_range: tuple[int, int] | None = None
    max_devices_per_server: int | None = None


def check_rank_table_for_stack(
    table: dict[str, Any],
    *,
    source: str,
    stack_file: str,
    servers: list[StackServer],
    world_size: int,
    rules: RankTableOptions,
    ips_found_by_preflight: bool = False,
) -> list[Problem]:
    """A table that passed `validate_rank_table`, against the stack that will
    use it: the same servers (rank 0 on the master), the declared device IPs,
    as many ranks as the plan's world size, and the engine's own limits."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, message, fix))

    by_address: dict[object, StackServer] = {s.address: s for s in servers}
    master = servers[0]
    listed = [s for s in table["server_list"] if isinstance(s, dict)]
    for index, server in enumerate(listed):
        server_id = server.get("server_id")
        if server_id not in by_address:
            bad(f"server_list[{index}].server_id",
                f"server {server_id} is not a node of stack {stack_file} "
                f"(nodes: {', '.join(f'{s.name} {s.address}' for s in servers)})",
                "use the nodes' addresses (`nodes[].ip` or `host`) as server_id")
    present = {s.get("server_id") for s in listed}
    for expected in servers:
        if expected.address not in present:
            bad("server_list", f"node {expected.name} ({expected.address}) of stack {stack_file} is not in the table",
                f"add a server with \"server_id\": \"{expected.address}\"")
    ranks = sum(len(s.get("device") or []) for s in listed)
    if ranks != world_size:
        bad("server_list", f"the table has {ranks} ranks but the stack's plan has world size {world_size}",
            "list as many devices as the plan uses (tp x pp x dp)")
    for index, server in enumerate(listed):
        node = by_address.get(server.get("server_id"))
        label = f"server {server.get('server_id')}"
        for d, device in enumerate(server.get("device") or []):
            if not isinstance(device, dict):
                continue
            rank_id, device_id = device.get("rank_id"), device.get("device_id")
            if rank_id == "0" and server.get("server_id") != master.address:
                bad(f"server_list[{index}].device[{d}].rank_id",
                    f"rank 0 is {label} device {device_id}, "
                    f"but the stack's master is {master.name} ({master.address}); "
                    f"{rules.engine} makes the server holding rank 0 its master",
                    f"give rank_id 0 to a device of {master.address}")
            if node is None or not node.device_ips or not isinstance(device_id, str) or not device_id.isdigit():
                continue
            number = int(device_id)
            if number < len(node.device_ips) and device.get("device_ip") != node.device_ips[number]:
                bad(f"server_list[{index}].device[{d}].device_ip",
                    f"{label} device {device_id} has device_ip {device.get('device_ip')}, but "
                    + (f"preflight found {node.device_ips[number]} on {node.name} device {device_id}"
                       if ips_found_by_preflight else
                       f"stack {stack_file} declares {node.device_ips[number]} for {node.name} device {device_id}"),
                    "use the address `hccn_tool -i N -ip -g` prints on that node, in both places")
        if node is not None and node.container_ip and server.get("container_ip") not in (None, node.container_ip):
            bad(f"server_list[{index}].container_ip",
                f"{label} has container_ip {server.get('container_ip')}, but stack {stack_file} declares "
                f"{node.container_ip} for {node.name}", "use the same container IP in both places")
    if rules.first_server_is_master and listed and listed[0].get("server_id") != master.address:
        bad("server_list[0].server_id",
            f"the first server is {listed[0].get('server_id')}, but {rules.engine} requires the first server to be "
            f"Ray's head, the stack's master {master.name} ({master.address})", "list the master first")
    if rules.server_count_range is not None:
        low, high = rules.server_count_range
        if not low <= len(listed) <= high:
            bad("server_count",
                f"{len(listed)} server{'s' if len(listed) != 1 else ''}, "
                f"but {rules.engine} accepts {low} to {high} in one rank table",
                f"use {low} to {high} servers")
    if rules.max_devices_per_server is not None:
        for index, server in enumerate(listed):
            count = len(server.get("device") or [])
            if count > rules.max_devices_per_server:
                bad(f"server_list[{index}].device",
                    f"server {server.get('server_id')} lists {count} devices; {rules.engine} accepts at most "
                    f"{rules.max_devices_per_server}", "split the devices over more servers")
    return problems
