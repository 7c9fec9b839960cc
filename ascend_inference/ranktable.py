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
from typing import Optional

from ascend_inference.errors import Problem

# Placeholder shown by `render` for a device IP that preflight discovers.
DISCOVERED = "<discovered by preflight: hccn_tool -i {device} -ip -g on {node}>"


def rank_table_for(
    servers: list[dict],
    devices_per_node: int,
    *,
    version: str,
    with_container_ip: bool = False,
    device_port: Optional[str] = None,
) -> dict:
    """servers: [{"server_id": ip, "device_ips": [...], "container_ip": ip}] in
    node order (master first). Returns the rank table as a JSON-ready dict."""
    server_list = []
    rank = 0
    for server in servers:
        devices = []
        for device_id in range(devices_per_node):
            entry = {"device_id": str(device_id), "device_ip": server["device_ips"][device_id]}
            if device_port is not None:
                entry["device_port"] = str(device_port)
            entry["rank_id"] = str(rank)
            devices.append(entry)
            rank += 1
        item = {"device": devices, "server_id": server["server_id"]}
        if with_container_ip:
            item["container_ip"] = server.get("container_ip") or server["server_id"]
        server_list.append(item)
    return {
        "server_count": str(len(servers)),
        "server_list": server_list,
        "status": "completed",
        "version": version,
    }


def rank_table_json(table: dict) -> str:
    """Canonical text: the same table always gives the same bytes (and digest)."""
    return json.dumps(table, indent=4, ensure_ascii=False) + "\n"


def rank_table_digest(table: dict) -> str:
    return hashlib.sha256(rank_table_json(table).encode()).hexdigest()


def validate_rank_table(
    table: object,
    *,
    source: str,
    devices_per_node: Optional[int] = None,
    version: Optional[str] = None,
    server_count: Optional[int] = None,
    require_container_ip: bool = False,
) -> list[Problem]:
    """Every problem in a rank table, each naming the server and device."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, message, fix))

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
    if version is not None and table["version"] != version:
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
    rank_owner: dict[str, str] = {}
    position = 0
    for s, server in enumerate(servers):
        where = f"server_list[{s}]"
        if not isinstance(server, dict):
            bad(where, "must be an object")
            continue
        server_id = server.get("server_id")
        if not isinstance(server_id, str) or not server_id:
            bad(f"{where}.server_id", "missing", "set it to the node's IP")
        elif server_id in seen_servers:
            bad(f"{where}.server_id", f"server {server_id} is listed twice (also server_list[{seen_servers[server_id]}])",
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
        if devices_per_node is not None and len(devices) != devices_per_node:
            bad(f"{where}.device", f"{label} lists {len(devices)} devices but the node has {devices_per_node}",
                "list every NPU of the server")
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
            if isinstance(device_id, str) and device_id != str(d):
                bad(f"{dwhere}.device_id", f"{label} device {d}: device_id is '{device_id}', expected '{d}'",
                    "list the devices in local order; device_id is the index on the server")
            if isinstance(device_ip, str):
                try:
                    ipaddress.ip_address(device_ip)
                except ValueError:
                    bad(f"{dwhere}.device_ip", f"{label} device {device_id}: '{device_ip}' is not an IP address",
                        "use the address `hccn_tool -i N -ip -g` prints")
                else:
                    here = f"{label} device {device_id}"
                    if device_ip in seen_ips:
                        bad(f"{dwhere}.device_ip", f"{here} has device IP {device_ip}, already used by {seen_ips[device_ip]}",
                            "every NPU has its own IP; re-read them with `hccn_tool -i N -ip -g`")
                    else:
                        seen_ips[device_ip] = here
            # Ranks run 0..world-1 in server order, then device order.
            expected = str(position)
            position += 1
            if isinstance(rank_id, str) and rank_id != expected:
                first_use = rank_owner.get(rank_id)
                detail = f", already used by {first_use}" if first_use else ""
                bad(f"{dwhere}.rank_id", f"{label} device {device_id}: rank_id is '{rank_id}', expected '{expected}'{detail}",
                    "renumber rank_id in server order, device order, from 0")
            if isinstance(rank_id, str):
                rank_owner.setdefault(rank_id, f"{label} device {device_id}")
    return problems
