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
import re
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


# Where the judgements below come from. HCCL: the rank-table reader of CANN's
# open-source HCCL (gitee ascend/hccl; read in its GitHub copy
# HongminTan/ACNC2025-HCCL at f85b7e6), under
# src/domain/collective_communication/framework/common/src/:
#   topo/topoinfo_ranktableParser.cc  GetJsonProperty / GetJsonArrayMemberProperty
#       (every value a JSON string: "... is not string!"), CheckUniqueAndInsertPool
#       (server_id, device_ip, super_pod_id each used once; a name at most 63 characters)
#   topo/topoinfo_ranktableConcise.cc GetServerList (server_count optional: "not found,
#       set server_count to server_list size"), GetSingleDevice / GetSingleDeviceIp
#       (device_ip split on commas), GetDeviceList (as many device IPs on every device),
#       GetSingleSuperPod / GetSingleSuperPodSever / CheckSuperPodInfo (rank table 1.2)
#   config.cc CheckRankIpFamily ("device ip family[..] is not same as others", more
#       than one server), CheckRankListInfo (rank_id runs 0..ranks-1)
# and SalStrToULong (hcomm sal.cc): std::stoull(text, nullptr, 10), at most 0xFFFFFFFF.

# HCCL reads every number with std::stoull, which knows only ASCII digits:
# "²", "¹⁵" and "١٥" are refused (Python's str.isdigit() accepts the first two and
# int() reads the last). stoull would also skip leading blanks and a sign and stop
# at a trailing character ("1a" reads as 1); such text is refused here as well,
# since HCCL would then use another number than the table shows.
_HCCL_DIGITS = re.compile(r"[0-9]+")
_HCCL_NUMBER_MAX = 0xFFFFFFFF
# CheckUniquePara: server_id and super_pod_id longer than this are refused.
_HCCL_NAME_MAX = 63


def hccl_number(value: object) -> int | None:
    """The number HCCL reads from `value` (a JSON string of ASCII digits up to
    0xFFFFFFFF), or None where HCCL refuses it or would read another number."""
    if isinstance(value, str) and _HCCL_DIGITS.fullmatch(value):
        # Longer than 0xFFFFFFFF's 10 digits is out of range (and int() of
        # thousands of digits would raise).
        digits = value.lstrip("0") or "0"
        if len(digits) <= 10 and int(digits) <= _HCCL_NUMBER_MAX:
            return int(digits)
    return None


# Control characters and line separators in a table's strings, written as
# escapes: a message is one line (also for str.splitlines).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str, limit: int = 400) -> str:
    """`text` for a message: control characters escaped, at most `limit` characters."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= limit else text[:limit] + "..."


def json_kind(value: object) -> str:
    """What a JSON value is, for a message: "the JSON number 1.0", "'abc'"."""
    if isinstance(value, bool):
        return f"the JSON boolean {json.dumps(value)}"
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value) if value.bit_length() < 200 else "(long)"
        return f"the JSON number {text}"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"'{value}'"


def as_string_fix(key: str, value: object) -> str:
    """The fix for a number (or other value) where HCCL reads a string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = json_kind(value).removeprefix("the JSON number ")
        return f'write "{key}": "{number}" (HCCL reads every value as a JSON string)'
    return f'write "{key}" as a JSON string'


def split_device_ip(text: str) -> list[str]:
    """`device_ip` as HCCL splits it (GetSingleDeviceIp -> SplitString on ","):
    "a,b" is two addresses; a trailing comma adds none; "" is no address."""
    if text == "":
        return []
    parts = text.split(",")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


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

    The rules are HCCL's (sources above), and no stricter but where said:
    every value is a JSON string, numbers are ASCII digits, `device_id` is
    an NPU of the server (0 .. devices_per_node-1, each once), `device_ip`
    is one or more comma-separated IPv4 or IPv6 addresses, each used once,
    one family across servers, `rank_id` runs over 0 .. ranks-1 with each
    value once, `server_id` is a unique string of at most 63 characters.
    A missing `server_count` (HCCL counts server_list), a server that lists
    only some of its NPUs, or ranks that are not numbered in server-then-
    device order are accepted (HCCL accepts them); each is reported in
    `notes`. `every_device` (the tables this program writes) also requires
    all of each server's NPUs. What an engine requires beyond HCCL is
    `check_rank_table_for_stack`'s."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, one_line(message), one_line(fix)))

    def note(text: str) -> None:
        if notes is not None:
            notes.append(f"{source}: {one_line(text)}")

    if not isinstance(table, dict):
        bad("(root)", f"is {json_kind(table)}, but a rank table is a JSON object",
            "start from `python -m ascendctl render`")
        return problems
    want_version = version or "1.0"
    if "version" not in table:
        bad("version", "missing; without it HCCL reads the table in its older 'Standard' format",
            f'add "version": "{want_version}"')
    elif not isinstance(table["version"], str):
        bad("version", f"is {json_kind(table['version'])}, but HCCL reads version only as a string",
            f'write "version": "{want_version}"')
    elif table["version"] not in HCCL_VERSIONS:
        bad("version", f"is '{table['version']}', which HCCL does not read (it reads {', '.join(HCCL_VERSIONS)})",
            f'set "version": "{want_version}"')
    elif version is not None and table["version"] != version:
        bad("version", f"is '{table['version']}' but this chip generation reads version '{version}'",
            f'set "version": "{version}"')
    if "status" not in table:
        bad("status", "missing; HCCL reads a table only once its status is \"completed\"",
            'add "status": "completed"')
    elif table["status"] != "completed":
        bad("status", f"is {json_kind(table['status'])}; HCCL reads a table only once its status is "
            "\"completed\"", 'set "status": "completed"')
    if "server_list" not in table:
        bad("server_list", "missing", 'add "server_list": [{"server_id": ..., "device": [...]}, ...]')
        return problems
    servers = table["server_list"]
    if not isinstance(servers, list) or not servers:
        bad("server_list", f"is {json_kind(servers)}, but it must be a non-empty list of servers",
            "list every server once, master first")
        return problems
    if "server_count" not in table:
        note(f"has no server_count; HCCL counts server_list ({len(servers)}) and warns, "
             "LMDeploy does not read it, MindIE requires it")
    elif not isinstance(table["server_count"], str):
        bad("server_count", f"is {json_kind(table['server_count'])}, but HCCL reads it only as a string",
            f'write "server_count": "{len(servers)}"')
    elif hccl_number(table["server_count"]) != len(servers):
        bad("server_count", f"says '{table['server_count']}' but server_list has {len(servers)} servers",
            f'set "server_count": "{len(servers)}"')
    if server_count is not None and len(servers) != server_count:
        bad("server_list", f"has {len(servers)} servers but the stack has {server_count} nodes",
            "list every node once, master first")

    several_servers = len(servers) > 1
    seen_servers: dict[str, int] = {}
    # Each device address (normalised) -> the device that has it.
    seen_ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    # (family, device) of the first device IP and host_ip: HCCL wants one family each.
    device_family: tuple[int, str] | None = None
    host_family: tuple[int, str] | None = None
    # (number of addresses in device_ip, device) of the first device.
    ip_count: tuple[int, str] | None = None
    # rank_id -> the device that has it; ranks in the order they appear.
    rank_owner: dict[int, str] = {}
    ranks_in_order: list[int] = []
    for s, server in enumerate(servers):
        where = f"server_list[{s}]"
        if not isinstance(server, dict):
            bad(where, f"is {json_kind(server)}, but each server is an object with server_id and device",
                'write {"server_id": "<node IP>", "device": [...]}')
            continue
        server_id = server.get("server_id")
        key = f"{where}.server_id"
        if "server_id" not in server:
            bad(key, "missing", "set it to the node's IP")
        elif not isinstance(server_id, str):
            bad(key, f"is {json_kind(server_id)}, but HCCL reads server_id only as a string",
                as_string_fix("server_id", server_id))
        elif not server_id:
            bad(key, "is empty", "set it to the node's IP")
        elif len(server_id) > _HCCL_NAME_MAX:
            bad(key, f"server {server_id[:20]}... is {len(server_id)} characters; HCCL allows {_HCCL_NAME_MAX}",
                "use the node's IP")
        elif server_id in seen_servers:
            bad(key, f"server {server_id} is listed twice (also server_list[{seen_servers[server_id]}])",
                "list each server once")
        else:
            seen_servers[server_id] = s
        label = f"server {server_id}" if isinstance(server_id, str) and server_id else where
        container_ip = server.get("container_ip")
        if require_container_ip and not container_ip:
            bad(f"{where}.container_ip", f"{label} has no container_ip, which MindIE's service needs",
                "add \"container_ip\" (the server's IP unless the container has its own)")
        elif "container_ip" in server and not isinstance(container_ip, str):
            bad(f"{where}.container_ip", f"{label}: container_ip is {json_kind(container_ip)}, not a string",
                as_string_fix("container_ip", container_ip))
        if "host_ip" in server:
            host_ip = server["host_ip"]
            try:
                if not isinstance(host_ip, str):
                    raise ValueError
                host_address = ipaddress.ip_address(host_ip)
            except ValueError:
                bad(f"{where}.host_ip", f"{label}: host_ip {json_kind(host_ip)} is not an IP address",
                    "use the node's address, or drop host_ip")
            else:
                if host_family is None:
                    host_family = (host_address.version, label)
                elif several_servers and host_address.version != host_family[0]:
                    bad(f"{where}.host_ip", f"{label}: host_ip {host_ip} is IPv{host_address.version} but "
                        f"{host_family[1]}'s is IPv{host_family[0]}; HCCL refuses mixed families",
                        "give every server a host_ip of the same family")
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            bad(f"{where}.device", f"{label} has no devices" if devices is None or devices == []
                else f"{label}: device is {json_kind(devices)}, not a list of devices",
                'list the server\'s NPUs: "device": [{"device_id": "0", "device_ip": ..., "rank_id": ...}, ...]')
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
        seen_device_ids: dict[int, int] = {}
        for d, device in enumerate(devices):
            dwhere = f"{where}.device[{d}]"
            if not isinstance(device, dict):
                bad(dwhere, f"{label} device {d} is {json_kind(device)}, but each device is an object",
                    'write {"device_id": "0", "device_ip": ..., "rank_id": ...}')
                continue
            for field in ("device_id", "device_ip", "rank_id"):
                if field not in device:
                    bad(f"{dwhere}.{field}", f"{label} device {d}: missing", f'add "{field}"')
                elif not isinstance(device[field], str):
                    bad(f"{dwhere}.{field}", f"{label} device {d}: {field} is {json_kind(device[field])}, "
                        "but HCCL reads it only as a string", as_string_fix(field, device[field]))
            device_id, device_ip, rank_id = device.get("device_id"), device.get("device_ip"), device.get("rank_id")
            if isinstance(device_id, str):
                limit = devices_per_node
                number = hccl_number(device_id)
                if number is None:
                    bad(f"{dwhere}.device_id",
                        f"{label} device {d}: device_id '{device_id}' is not a number as HCCL reads one "
                        "(ASCII digits 0-9)", "device_id is the NPU's number on its server, as `npu-smi info` "
                        "lists it")
                elif limit is not None and number >= limit:
                    bad(f"{dwhere}.device_id",
                        f"{label} device {d}: device_id '{device_id}' is not an NPU of the server (0..{limit - 1})",
                        "device_id is the NPU's number on its server, as `npu-smi info` lists it")
                elif number in seen_device_ids:
                    bad(f"{dwhere}.device_id", f"{label} device {d}: device_id '{device_id}' is listed twice "
                        f"(also device[{seen_device_ids[number]}])", "list each NPU of the server once")
                else:
                    seen_device_ids[number] = d
            here = f"{label} device {device_id if isinstance(device_id, str) else d}"
            if isinstance(device_ip, str):
                parts = split_device_ip(device_ip)
                if not parts and several_servers:
                    bad(f"{dwhere}.device_ip", f"{here}: device_ip is empty; a table of several servers needs "
                        "every NPU's address", "use the address `hccn_tool -i N -ip -g` prints")
                count = max(len(parts), 1)
                if ip_count is None:
                    ip_count = (count, here)
                elif count != ip_count[0]:
                    bad(f"{dwhere}.device_ip", f"{here} has {count} device IP{'s' if count != 1 else ''} but "
                        f"{ip_count[1]} has {ip_count[0]}; HCCL wants as many on every device",
                        "give every device the same number of comma-separated addresses")
                for part in parts:
                    shown = f"'{part}'" + (f" (in '{device_ip}')" if len(parts) > 1 else "")
                    try:
                        address = ipaddress.ip_address(part)
                    except ValueError:
                        bad(f"{dwhere}.device_ip", f"{here}: {shown} is not an IP address",
                            "use the address `hccn_tool -i N -ip -g` prints"
                            + ("; separate several with commas, without spaces" if "," in device_ip else ""))
                        continue
                    if address in seen_ips:
                        bad(f"{dwhere}.device_ip", f"{here} has device IP {part}, already used by {seen_ips[address]}",
                            "every NPU has its own IP; re-read them with `hccn_tool -i N -ip -g`")
                    else:
                        seen_ips[address] = here
                    if device_family is None:
                        device_family = (address.version, here)
                    elif several_servers and address.version != device_family[0]:
                        bad(f"{dwhere}.device_ip", f"{here}: device IP {part} is IPv{address.version} but "
                            f"{device_family[1]}'s is IPv{device_family[0]}; HCCL refuses a table of several "
                            "servers whose device IPs mix families (\"device ip family ... is not same as others\")",
                            "use the NPUs' addresses of one family (`hccn_tool -i N -ip -g`, or -inet6)")
            if isinstance(rank_id, str):
                rank = hccl_number(rank_id)
                if rank is None:
                    bad(f"{dwhere}.rank_id", f"{here}: rank_id '{rank_id}' is not a number as HCCL reads one "
                        "(ASCII digits 0-9)", "number the ranks from 0 in ASCII digits")
                elif rank in rank_owner:
                    bad(f"{dwhere}.rank_id", f"{here}: rank_id '{rank_id}' is already used by {rank_owner[rank]}",
                        "give every device its own rank_id, from 0")
                else:
                    rank_owner[rank] = here
                    ranks_in_order.append(rank)
    if table.get("version") == "1.2":
        problems.extend(_super_pod_problems(table, source, servers))
    if rank_owner:
        total = sum(len(s["device"]) for s in servers if isinstance(s, dict) and isinstance(s.get("device"), list))
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
    """Version 1.2, as HCCL reads it (topoinfo_ranktableConcise.cc GetSuperPodList,
    GetSingleSuperPod, GetSingleSuperPodSever, CheckSuperPodInfo): every
    `super_pod_id` a non-empty string used once; every server a pod lists is
    in server_list ("is not found in server_list"); every server in a pod;
    every device a `super_device_id`, unique within its pod ("superDeviceId
    ... is already exist"). A server listed twice in one pod is accepted, as
    HCCL accepts it. Two departures, both stricter: a table without
    `super_pod_list` is refused (HCCL warns and treats the servers as outside
    any super pod, which is not the A3 networking the profile plans), and a
    server in two pods is refused (HCCL silently keeps it in the last)."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, one_line(message), one_line(fix)))

    pods = table.get("super_pod_list")
    if not isinstance(pods, list) or not pods:
        bad("super_pod_list", "version 1.2 needs a super_pod_list" if pods is None
            else f"is {json_kind(pods)}, but it must be a non-empty list of super pods",
            'add "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": ...}]}]')
        return problems
    listed = {server["server_id"] for server in servers
              if isinstance(server, dict) and isinstance(server.get("server_id"), str)}
    pod_ids: dict[str, int] = {}
    # server_id -> (super_pod_id, index in super_pod_list) of the pod that first lists it.
    pod_of: dict[str, tuple[str, int]] = {}
    for p, pod in enumerate(pods):
        where = f"super_pod_list[{p}]"
        if not isinstance(pod, dict):
            bad(where, f"is {json_kind(pod)}, but each super pod is an object with super_pod_id and server_list",
                'write {"super_pod_id": "0", "server_list": [{"server_id": ...}]}')
            continue
        pod_id = pod.get("super_pod_id")
        if "super_pod_id" not in pod:
            bad(f"{where}.super_pod_id", "missing", "use the Super Pod ID `npu-smi info -t spod-info` prints")
            pod_id = None
        elif not isinstance(pod_id, str):
            bad(f"{where}.super_pod_id", f"is {json_kind(pod_id)}, but HCCL reads super_pod_id only as a string",
                as_string_fix("super_pod_id", pod_id))
            pod_id = None
        elif not pod_id:
            bad(f"{where}.super_pod_id", "is empty; HCCL refuses an empty super_pod_id",
                "use the Super Pod ID `npu-smi info -t spod-info` prints")
            pod_id = None
        elif len(pod_id) > _HCCL_NAME_MAX:
            bad(f"{where}.super_pod_id", f"is {len(pod_id)} characters; HCCL allows {_HCCL_NAME_MAX}",
                "use the Super Pod ID `npu-smi info -t spod-info` prints")
            pod_id = None
        elif pod_id in pod_ids:
            bad(f"{where}.super_pod_id", f"super pod {pod_id} is listed twice "
                f"(also super_pod_list[{pod_ids[pod_id]}]); HCCL refuses a repeated super_pod_id",
                "list each super pod once, with all its servers")
            pod_id = None
        else:
            pod_ids[pod_id] = p
        members = pod.get("server_list")
        if not isinstance(members, list) or not members:
            bad(f"{where}.server_list", f"super pod {pod_id or p} lists no servers" if members in (None, [])
                else f"is {json_kind(members)}, but it must be a list of {{\"server_id\": ...}}",
                'list the pod\'s servers: "server_list": [{"server_id": ...}, ...]')
            continue
        for m, member in enumerate(members):
            mwhere = f"{where}.server_list[{m}].server_id"
            server_id = member.get("server_id") if isinstance(member, dict) else None
            if not isinstance(server_id, str):
                bad(mwhere, "missing" if server_id is None else
                    f"is {json_kind(server_id)}, but HCCL reads server_id only as a string",
                    "name a server of server_list: {\"server_id\": ...}")
                continue
            if server_id not in listed:
                bad(mwhere, f"server {server_id} is not in server_list; HCCL refuses it "
                    "(\"server_id ... is not found in server_list\")",
                    "list the server in server_list too, or drop it from the super pod")
                continue
            if pod_id is None:
                continue
            first = pod_of.setdefault(server_id, (pod_id, p))
            if first[0] != pod_id:
                bad(mwhere, f"server {server_id} is in super pod {first[0]} (super_pod_list[{first[1]}]) and "
                    f"in {pod_id}; HCCL would silently keep it in the last", "put each server in one super pod")
    seen: dict[tuple[str, int], str] = {}
    named = {member["server_id"] for pod in pods if isinstance(pod, dict) and isinstance(pod.get("server_list"), list)
             for member in pod["server_list"] if isinstance(member, dict) and isinstance(member.get("server_id"), str)}
    for s, server in enumerate(servers):
        if not isinstance(server, dict) or not isinstance(server.get("server_id"), str):
            continue
        server_id = server["server_id"]
        if server_id not in pod_of:
            # Listed only under a pod refused above: that problem is reported already.
            if server_id not in named:
                bad(f"server_list[{s}]", f"server {server_id} is in no super pod",
                    "list it under super_pod_list[].server_list")
            continue
        pod = pod_of[server_id][0]
        devices = server.get("device")
        for d, device in enumerate(devices if isinstance(devices, list) else []):
            if not isinstance(device, dict):
                continue
            sdid = device.get("super_device_id")
            here = f"server {server_id} device {device.get('device_id', d)}"
            number = hccl_number(sdid)
            if number is None:
                bad(f"server_list[{s}].device[{d}].super_device_id",
                    f"{here}: version 1.2 needs super_device_id as a string of ASCII digits"
                    + ("" if sdid is None else f", not {json_kind(sdid)}"),
                    "use the SDID `npu-smi info -t spod-info -i NPU -c CHIP` prints")
            elif (pod, number) in seen:
                bad(f"server_list[{s}].device[{d}].super_device_id",
                    f"{here} has super_device_id {sdid}, already used by {seen[(pod, number)]} in super pod {pod}",
                    "re-read the SDIDs with `npu-smi info -t spod-info`")
            else:
                seen[(pod, number)] = here
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
    # The engine reads `server_count` itself and refuses a table without it
    # (HCCL does not need it).
    server_count_required: bool = False
    # Every server lists as many devices as the first.
    same_devices_per_server: bool = False
    # `device_ip` is one address, not 0.0.0.0 or :: (HCCL also takes a comma-separated list).
    single_device_ip: bool = False
    max_rank_id: int | None = None
    # The engine finds its master by comparing rank_id with the text "0".
    rank_zero_as_text: bool = False
    # Each server's container_ip is the address its engine looks itself up by
    # (MindIE: MIES_CONTAINER_IP, which the program sets to the node's
    # container_ip, or its address when the stack declares none).
    container_ip_finds_the_server: bool = False
    # The engine places rank k on the k-th device listed (server then device
    # order) and opens the NPU at the device's position in its server's list
    # (the container sees every NPU of the node, /dev/davinci0..N-1, so that
    # position is the NPU's number).
    ranks_follow_the_listing: bool = False


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
    as many ranks as the plan's world size, and the engine's own rules."""
    problems: list[Problem] = []

    def bad(key: str, message: str, fix: str = "") -> None:
        problems.append(Problem(source, key, one_line(message), one_line(fix)))

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
    position = 0  # the device's place in the whole listing, server then device
    for index, server in enumerate(listed):
        node = by_address.get(server.get("server_id"))
        label = f"server {server.get('server_id')}"
        devices = server.get("device") or []
        first_rank = position
        for d, device in enumerate(devices):
            position += 1
            if not isinstance(device, dict):
                continue
            rank_id, device_id = device.get("rank_id"), device.get("device_id")
            dwhere = f"server_list[{index}].device[{d}]"
            rank = hccl_number(rank_id)
            if rank == 0 and server.get("server_id") != master.address:
                bad(f"{dwhere}.rank_id",
                    f"rank 0 is {label} device {device_id}, "
                    f"but the stack's master is {master.name} ({master.address}); "
                    f"{rules.engine} makes the server holding rank 0 its master",
                    f"give rank_id 0 to a device of {master.address}")
            if rank == 0 and rules.rank_zero_as_text and rank_id != "0":
                bad(f"{dwhere}.rank_id",
                    f"{label} device {device_id}: rank_id '{rank_id}' is rank 0 for HCCL, but {rules.engine} finds "
                    "its master by the text \"0\" and would find none", 'write "rank_id": "0"')
            if rules.max_rank_id is not None and rank is not None and rank > rules.max_rank_id:
                bad(f"{dwhere}.rank_id", f"{label} device {device_id}: rank_id {rank_id}, but {rules.engine} accepts "
                    f"0..{rules.max_rank_id}", f"use at most {rules.max_rank_id + 1} ranks")
            if rules.ranks_follow_the_listing:
                if rank is not None and not first_rank <= rank < first_rank + len(devices):
                    bad(f"{dwhere}.rank_id",
                        f"{label} device {device_id} has rank_id {rank_id}, but {rules.engine} puts rank {rank} on "
                        f"the server of the device listed at place {rank} (server then device order), which is not "
                        f"{label}", "number the ranks in server then device order, from 0 (as merge_hccl.py does)")
                if hccl_number(device_id) is not None and hccl_number(device_id) != d:
                    bad(f"{dwhere}.device_id",
                        f"{label}: device_id '{device_id}' is listed at place {d}, and {rules.engine} opens the "
                        f"NPU at the device's place in the list (NPU {d}), where HCCL expects NPU {device_id}",
                        f"list {label}'s NPUs in order from device_id 0, each at its own place")
            device_ip = device.get("device_ip")
            if rules.single_device_ip and isinstance(device_ip, str):
                parts = split_device_ip(device_ip)
                if len(parts) > 1:
                    bad(f"{dwhere}.device_ip",
                        f"{label} device {device_id}: device_ip '{device_ip}' has {len(parts)} addresses; "
                        f"{rules.engine} reads it as one address", "keep one address per device")
                elif parts and _is_unspecified(parts[0]):
                    bad(f"{dwhere}.device_ip",
                        f"{label} device {device_id}: device_ip {device_ip} is not an NPU's address, "
                        f"and {rules.engine} refuses it", "use the address `hccn_tool -i N -ip -g` prints")
            if node is None or not node.device_ips or not isinstance(device_id, str):
                continue
            number = hccl_number(device_id)
            # HCCL's first address of a comma-separated device_ip is the NPU's own.
            first_ip = split_device_ip(device_ip)[:1] if isinstance(device_ip, str) else []
            if number is not None and number < len(node.device_ips) and first_ip != [node.device_ips[number]]:
                bad(f"{dwhere}.device_ip",
                    f"{label} device {device_id} has device_ip {device_ip}, but "
                    + (f"preflight found {node.device_ips[number]} on {node.name} device {device_id}"
                       if ips_found_by_preflight else
                       f"stack {stack_file} declares {node.device_ips[number]} for {node.name} device {device_id}"),
                    "use the address `hccn_tool -i N -ip -g` prints on that node, in both places")
        if node is None:
            continue
        container_ip = server.get("container_ip")
        if rules.container_ip_finds_the_server:
            engine_ip = node.container_ip or node.address
            if container_ip is not None and container_ip != engine_ip:
                whose = ("its container_ip" if node.container_ip else
                         "its address, since the stack declares no container_ip")
                bad(f"server_list[{index}].container_ip",
                    f"{label} has container_ip {container_ip}, but {rules.engine} on {node.name} looks itself up "
                    f"by {engine_ip} ({whose}) and would find no entry for its server",
                    f"set \"container_ip\": \"{engine_ip}\", or declare nodes[].container_ip: {container_ip} "
                    "if the container has that address")
        elif node.container_ip and container_ip not in (None, node.container_ip):
            bad(f"server_list[{index}].container_ip",
                f"{label} has container_ip {container_ip}, but stack {stack_file} declares "
                f"{node.container_ip} for {node.name}", "use the same container IP in both places")
    if rules.first_server_is_master and listed and listed[0].get("server_id") != master.address:
        bad("server_list[0].server_id",
            f"the first server is {listed[0].get('server_id')}, but {rules.engine} requires the first server to be "
            f"Ray's head, the stack's master {master.name} ({master.address})", "list the master first")
    if rules.server_count_required and "server_count" not in table:
        bad("server_count", f"missing; {rules.engine} reads server_count itself and refuses a table without it "
            "(HCCL alone would count server_list)", f'add "server_count": "{len(table["server_list"])}"')
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
    if rules.same_devices_per_server and listed:
        first = len(listed[0].get("device") or [])
        for index, server in enumerate(listed[1:], start=1):
            count = len(server.get("device") or [])
            if count != first:
                bad(f"server_list[{index}].device",
                    f"server {server.get('server_id')} lists {count} devices but server "
                    f"{listed[0].get('server_id')} lists {first}; {rules.engine} requires as many on every server",
                    "list the same number of NPUs on every server")
    return problems


def _is_unspecified(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_unspecified
    except ValueError:
        return False
