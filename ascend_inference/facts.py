"""Facts read off a node by the preflight script, and the contradictions the
program refuses before anything is started.

The preflight script prints the tools' own output in `### <section>` blocks;
parsing happens here, on the control host, in one tested place, against the
real formats of `npu-smi info` and `hccn_tool` (the samples, with their public
sources, are in tests/fixtures/tool-output/). Pure: no Pulumi import.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ascend_inference.errors import NodeFactError
from ascend_inference.hardware import HardwareProfile
from ascend_inference.spec import NetworkPolicy, is_ip

_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+(\S+)\s*\|\s*(\w+)\s*\|")
_CHIP_ROW = re.compile(r"^\|\s*\d+\s*(?:\d+\s*)?\|\s*[0-9A-Fa-f:.]+|NA\s*\|")


@dataclass
class DeviceFacts:
    index: int
    ip: str | None = None
    link: str | None = None          # "UP" / "DOWN"
    net_health: str | None = None    # "Success" / "Fault" / "Init" ...
    tls_switch: int | None = None    # 0 / 1
    lldp_ifname: str | None = None
    gateway: str | None = None
    netdetect: str | None = None
    # Atlas A3 only, from `npu-smi info -t spod-info -i NPU -c CHIP` of this die.
    sdid: int | None = None
    super_pod_id: int | None = None
    server_index: int | None = None
    super_pod_size: int | None = None
    netmask: str | None = None
    # Last line of `hccn_tool -i N -ping -g address <gateway>` (the loss summary).
    gateway_ping: str | None = None
    # What a network query printed instead of the expected line (first
    # line), for the message: {"lldp": "...", "netdetect": "...", ...}.
    printed: dict[str, str] = field(default_factory=dict)


@dataclass
class NodeFacts:
    node: str
    hostname: str = ""
    # One entry per chip: [{"npu": 0, "chip": 0, "name": "910B2", "health": "OK"}]. A board
    # with two chips (300I Duo, A3) lists its NPU id twice, chip 0 and chip 1.
    npus: list[dict[str, Any]] = field(default_factory=list)
    driver_version: str | None = None
    firmware_version: str | None = None
    cann_version: str | None = None
    devices: list[DeviceFacts] = field(default_factory=list)
    stale_rootinfo: bool = False
    model_present: bool | None = None
    # Preflight's docker line: "missing", "running <server version>" or
    # "not running: <docker's error>"; None when the output has no such section.
    docker: str | None = None
    # Driver/firmware installs of this boot that wait for a reboot ("driver 24.1.rc3").
    reboot_pending: list[str] = field(default_factory=list)

    @property
    def healthy_npus(self) -> int:
        return sum(1 for n in self.npus if n["health"] == "OK")

    def device_ips(self) -> list[str | None]:
        return [d.ip for d in self.devices]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split_sections(stdout: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}


def parse_npu_smi_info(text: str) -> list[dict[str, Any]]:
    """Chip rows of `npu-smi info` (first row of each chip block: NPU id, name,
    health); the chip index counts the blocks of one NPU id."""
    npus: list[dict[str, Any]] = []
    in_process_table = False
    for line in text.splitlines():
        if "Process id" in line:
            in_process_table = True
        if in_process_table:
            continue
        match = _NPU_ROW.match(line.rstrip())
        if match and not line.lstrip("| ").startswith("NPU"):
            npu_id, name, health = match.groups()
            # The second row of a block starts with the chip id and a Bus-Id;
            # it has no health word, so the regex's third group is a number.
            if health.isdigit() or health == "NA":
                continue
            chip = sum(1 for n in npus if n["npu"] == int(npu_id))
            npus.append({"npu": int(npu_id), "chip": chip, "name": name, "health": health})
    return npus


def parse_key_values(text: str, sep: str = "=") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if sep in line:
            key, _, value = line.partition(sep)
            out[key.strip()] = value.strip()
    return out


def parse_device(index: int, sections: dict[str, str]) -> DeviceFacts:
    d = DeviceFacts(index)
    # Kept as printed (check_node refuses what is not an address): a masked
    # or garbled value must not turn into a truncated IP.
    ip = re.search(r"ipaddr:\s*(\S+)", sections.get(f"device {index} ip", ""))
    d.ip = ip.group(1) if ip else None
    link = re.search(r"link status:\s*(\w+)", sections.get(f"device {index} link", ""))
    d.link = link.group(1) if link else None
    health = re.search(r"net health status:\s*(.+)", sections.get(f"device {index} net_health", ""))
    d.net_health = health.group(1).strip() if health else None
    tls = re.search(r"tls switch\[(\d)\]", sections.get(f"device {index} tls", ""))
    d.tls_switch = int(tls.group(1)) if tls else None
    lldp = re.search(r"Ifname:\s*(\S+)", sections.get(f"device {index} lldp", ""))
    d.lldp_ifname = lldp.group(1) if lldp else None
    gateway = re.search(r"default gateway:\s*([0-9a-fA-F.:]+)", sections.get(f"device {index} gateway", ""))
    d.gateway = gateway.group(1) if gateway else None
    netdetect = re.search(r"netdetect address:\s*([0-9a-fA-F.:]+)", sections.get(f"device {index} netdetect", ""))
    d.netdetect = netdetect.group(1) if netdetect else None
    parse_spod_info(d, sections.get(f"device {index} spod", ""))
    netmask = re.search(r"netmask:\s*(\S+)", sections.get(f"device {index} ip", ""))
    d.netmask = netmask.group(1) if netmask else None
    ping = sections.get(f"device {index} gateway_ping", "").strip()
    d.gateway_ping = ping.splitlines()[-1].strip() if ping else None
    for name, value in (("lldp", d.lldp_ifname), ("netdetect", d.netdetect), ("gateway", d.gateway)):
        text = sections.get(f"device {index} {name}", "").strip()
        if value is None and text:
            d.printed[name] = text.splitlines()[0].strip()
    return d


_SPOD_FIELDS = (("SDID", "sdid"), ("Super Pod ID", "super_pod_id"), ("Server Index", "server_index"),
                ("Super Pod Size", "super_pod_size"))


def parse_spod_info(device: DeviceFacts, text: str) -> DeviceFacts:
    """`npu-smi info -t spod-info -i NPU -c CHIP` (Atlas A3): "\tSDID   : N"
    lines as npu-smi prints them ("\t%-30s : %u", docs/formats.md §1i), or
    the single-space form the documentation shows. Other chips answer "This
    device does not support querying spod-info." and leave the fields None."""
    for label, attr in _SPOD_FIELDS:
        match = re.search(rf"^\s*{label}\s*:\s*(\d+)\s*$", text, re.MULTILINE)
        setattr(device, attr, int(match.group(1)) if match else None)
    return device


def sdid_fields(sdid: int) -> dict[str, int]:
    """An SDID's fields (Ascend HDK A3 DCMI reference, dcmi_get_spod_node_status:
    bits 22-31 server_index, 18-21 chip (NPU) id, 16-17 die id, 0-15 device id
    = chip x 2 + die, the die's physical id)."""
    return {"server_index": sdid >> 22, "chip": (sdid >> 18) & 0xF, "die": (sdid >> 16) & 0x3,
            "device": sdid & 0xFFFF}


def parse_preflight(node: str, stdout: str, devices: int) -> NodeFacts:
    """`devices`: how many devices' hccn_tool sections to read (0 on a
    profile without a fabric, whose preflight prints none)."""
    sections = split_sections(stdout)
    facts = NodeFacts(node=node)
    facts.hostname = sections.get("hostname", "").strip()
    facts.npus = parse_npu_smi_info(sections.get("npu-smi-info", ""))
    facts.driver_version = parse_key_values(sections.get("driver-version", "")).get("Version")
    facts.firmware_version = parse_key_values(sections.get("firmware-version", "")).get("Version")
    facts.cann_version = parse_key_values(sections.get("cann-version", "")).get("version")
    facts.devices = [parse_device(i, sections) for i in range(devices)]
    facts.stale_rootinfo = sections.get("hccl-rootinfo", "").strip() == "present"
    model = sections.get("model-path", "").strip()
    facts.model_present = {"present": True, "absent": False}.get(model)
    if "docker" in sections:
        facts.docker = sections["docker"].strip()
    facts.reboot_pending = [line.strip() for line in sections.get("reboot-pending", "").splitlines() if line.strip()]
    return facts


# Where each version is read on the node (preflight.sh.j2), for the messages.
VERSION_SOURCES = {
    "driver": ("driver_version", "/usr/local/Ascend/driver/version.info"),
    "firmware": ("firmware_version", "/usr/local/Ascend/firmware/version.info"),
    "cann": ("cann_version", "ascend-toolkit/latest/*/ascend_toolkit_install.info"),
}
VERSION_LABELS = {"driver": "driver version", "firmware": "firmware version", "cann": "CANN version"}


def check_host_software(facts: NodeFacts, *, expected: dict[str, str | None]) -> list[NodeFactError]:
    """The host's own software against the stack (`ascend-inference:host`):
    docker installed and running, no install waiting for a reboot, and each
    expected version (driver, firmware, CANN; None = not checked) found."""
    node = facts.node
    errors: list[NodeFactError] = []
    if facts.docker == "missing":
        errors.append(NodeFactError(node, "docker", "not installed, the stack runs its engine in docker",
                                    "install docker (`yum install docker-ce docker-ce-cli containerd.io` or "
                                    "`apt-get install docker.io`, runbook 001 §2.2), then `systemctl start docker`"))
    elif facts.docker is not None and not facts.docker.startswith("running"):
        detail = facts.docker.partition(":")[2].strip()
        errors.append(NodeFactError(node, "docker",
                                    "installed, but its daemon is not running" + (f" ({detail})" if detail else ""),
                                    "`systemctl start docker` (and `systemctl enable docker` "
                                    "to keep it across reboots)"))
    if facts.reboot_pending:
        what = ", ".join(facts.reboot_pending)
        errors.append(NodeFactError(node, "reboot", f"{what} installed, reboot required before "
                                    f"{'it is' if len(facts.reboot_pending) == 1 else 'they are'} active",
                                    "set host.allow_reboot or reboot by hand, then pulumi up"))
        # The versions below are the installed ones; the reboot is what is missing.
        return errors
    for key, want in expected.items():
        if want is None:
            continue
        attr, source = VERSION_SOURCES[key]
        found = getattr(facts, attr)
        label = VERSION_LABELS[key]
        fix = (f"install it with host.packages.{key}, or change host.{key}" if key != "cann"
               else "install that CANN toolkit on the node, or change host.cann")
        if not found:
            errors.append(NodeFactError(node, label, f"cannot be read ({source} is missing), the stack expects "
                                        f"{want} (ascend-inference:host.{key})", fix))
        elif found != want:
            errors.append(NodeFactError(node, label, f"{found} found, the stack expects {want} "
                                        f"(ascend-inference:host.{key})", fix))
    return errors



def check_node(facts: NodeFacts, *, devices: int, tls_policy: str, declared_ips: list[str] | None,
               expected_hostname: str | None, model_path: str, profile: HardwareProfile) -> list[NodeFactError]:
    """What one node's facts contradict in the stack. NPUs whose npu-smi name
    lacks the profile's prefix (`910B`, `310P`) mean the stack's profile, and
    so its plan (devices, memory), is wrong for this node."""
    node = facts.node
    errors: list[NodeFactError] = []
    prefix = profile.npu_smi_name_prefix
    foreign = sorted({n["name"] for n in facts.npus if not n["name"].startswith(prefix)})
    if foreign:
        errors.append(NodeFactError(node, "npu-smi info",
                                    f"NPUs are {', '.join(foreign)}, hardware.profile {profile.name} expects {prefix}*",
                                    "set hardware.profile to these servers' model, or take the node out of the stack"))
    if not facts.npus:
        errors.append(NodeFactError(node, "npu-smi info", "no NPU listed",
                                    "check the driver: `npu-smi info` must list the NPUs"))
    elif facts.healthy_npus < devices:
        two_chip = any(n.get("chip", 0) > 0 for n in facts.npus)
        bad = [f"NPU {n['npu']}" + (f" chip {n.get('chip', 0)}" if two_chip else "") + f" {n['health']}"
               for n in facts.npus if n["health"] != "OK"]
        missing = devices - len(facts.npus)
        detail = ", ".join(bad + ([f"{missing} missing"] if missing > 0 else []))
        errors.append(NodeFactError(node, "npu-smi info",
                                    f"{facts.healthy_npus} healthy NPUs, the stack needs {devices} ({detail})",
                                    "replace or reset the NPU (`npu-smi info -t health -i N`), "
                                    "or fix the hardware profile"))
    if not foreign:  # another chip already says the profile is wrong; its chip count would say it twice
        errors += _chips_per_npu(facts, profile)
    if expected_hostname and facts.hostname != expected_hostname:
        errors.append(NodeFactError(node, "hostname", f"is '{facts.hostname}', the stack expects '{expected_hostname}'",
                                    f"run `hostname {expected_hostname}` on the node or update nodes[].hostname"))
    want_tls = 1 if tls_policy == "enabled" else 0
    checks = profile.network
    for d in facts.devices:
        if checks.roce_links and d.link != "UP":
            errors.append(NodeFactError(node, f"device {d.index} link", f"is {d.link or 'unknown'}",
                                        f"check the cable/optics (`hccn_tool -i {d.index} -link -g`)"))
        if checks.roce_links and d.net_health is not None and d.net_health not in ("Success",):
            errors.append(NodeFactError(node, f"device {d.index} net_health", f"is {d.net_health}",
                                        f"check netdetect/gateway (`hccn_tool -i {d.index} -net_health -g`)"))
        if checks.tls and d.tls_switch is not None and d.tls_switch != want_tls:
            errors.append(NodeFactError(node, f"device {d.index} tls",
                                        f"switch is {d.tls_switch}, the stack's policy is {tls_policy}",
                                        "set network.fix_tls: true (runs `hccn_tool -i N -tls -s enable 0`) "
                                        "or change network.hccl_tls"))
        if not checks.device_ips:
            continue
        if d.ip is None:
            errors.append(NodeFactError(node, f"device {d.index} ip", "no IP configured",
                                        f"configure it in /etc/hccn.conf "
                                        f"(`hccn_tool -i {d.index} -ip -s address ... netmask ...`)"))
        elif not is_ip(d.ip):
            errors.append(NodeFactError(node, f"device {d.index} ip", f"hccn_tool printed '{d.ip}', not an IP address",
                                        f"check `hccn_tool -i {d.index} -ip -g` and /etc/hccn.conf on the node"))
    if declared_ips:
        for index, (declared, found) in enumerate(zip(declared_ips, facts.device_ips(), strict=True)):
            if found is not None and declared != found:
                errors.append(NodeFactError(node, f"device {index} ip", f"is {found}, the stack declares {declared}",
                                            f"fix nodes[].device_ips[{index}] or the NPU's address"))
    if facts.stale_rootinfo:
        errors.append(NodeFactError(node, "/etc/hccl_rootinfo.json", "a stale HCCL root info file is present",
                                    "remove /etc/hccl_rootinfo.json left by an earlier job"))
    if facts.model_present is False:
        errors.append(NodeFactError(node, "model path", f"{model_path} does not exist",
                                    "copy the weights to the same path on every node"))
    if profile.spod_info:
        errors.extend(check_super_pod_facts(facts, profile))
    return errors


SERVER_ID_FIX = ("set the server's Server ID (Server Index) the way its documentation says (Redfish or "
                 "Computing Toolkit), then check `npu-smi info -t spod-info -i 0 -c 0`")


def check_super_pod_facts(facts: NodeFacts, profile: HardwareProfile) -> list[NodeFactError]:
    """Atlas A3: every die printed an SDID, all dies of the server report one
    Super Pod ID and one Server Index, and each SDID encodes that Server
    Index and the die's own device number (the SDID layout of Ascend's A3
    DCMI reference). A server whose Server ID was not set after a hardware
    swap fails here instead of in HCCL's rank table parser."""
    node = facts.node
    errors: list[NodeFactError] = []
    per_npu = profile.chips_per_npu
    read = [d for d in facts.devices if d.sdid is not None]
    for d in facts.devices:
        if d.sdid is None:
            npu, chip = divmod(d.index, per_npu)
            errors.append(NodeFactError(
                node, f"device {d.index} spod-info",
                f"`npu-smi info -t spod-info -i {npu} -c {chip}` printed no SDID, which rank table "
                f"{profile.rank_table_version} needs (hardware.profile {profile.name})",
                "check the driver on the node (A3 driver and npu-smi), or set hardware.profile to this server's model"))
    if not read:
        return errors
    first = read[0]
    for d in read[1:]:
        for attr, label in (("super_pod_id", "Super Pod ID"), ("server_index", "Server Index")):
            if getattr(d, attr) != getattr(first, attr):
                errors.append(NodeFactError(
                    node, f"device {d.index} spod-info",
                    f"{label} is {getattr(d, attr)}, "
                    f"device {first.index} of the same server has {getattr(first, attr)}",
                    SERVER_ID_FIX))
    for d in read:
        assert d.sdid is not None
        fields = sdid_fields(d.sdid)
        if fields["device"] != d.index or (d.server_index is not None and fields["server_index"] != d.server_index):
            errors.append(NodeFactError(
                node, f"device {d.index} spod-info",
                f"SDID {d.sdid} encodes server index {fields['server_index']} and device {fields['device']}, "
                f"but it is device {d.index} of a server with Server Index {d.server_index}",
                SERVER_ID_FIX))
    return errors


def check_super_pods(all_facts: list[NodeFacts]) -> list[NodeFactError]:
    """Between A3 nodes: an SDID is used once in a super pod (HCCL refuses a
    1.2 rank table with "devices have same superDeviceId in superPod")."""
    errors: list[NodeFactError] = []
    owner: dict[tuple[int, int], str] = {}
    for f in all_facts:
        for d in f.devices:
            if d.sdid is None or d.super_pod_id is None:
                continue
            key = (d.super_pod_id, d.sdid)
            if key in owner:
                errors.append(NodeFactError(
                    f.node, f"device {d.index} spod-info",
                    f"SDID {d.sdid} in super pod {d.super_pod_id} is also {owner[key]} "
                    f"(Server Index {d.server_index} on both?)",
                    "give every server of a super pod its own Server ID (" + SERVER_ID_FIX + ")"))
            else:
                owner[key] = f"{f.node} device {d.index}"
    return errors


def super_pods_of(all_facts: list[NodeFacts]) -> dict[str, dict[str, Any]] | None:
    """{node: {"super_pod_id": "0", "super_device_ids": ["...", ...]}} for the
    1.2 rank table, or None when no node printed spod-info (not an A3)."""
    if not any(d.sdid is not None for f in all_facts for d in f.devices):
        return None
    return {f.node: {"super_pod_id": str(f.devices[0].super_pod_id if f.devices else ""),
                     "super_device_ids": [str(d.sdid) for d in f.devices]} for f in all_facts}


def _chips_per_npu(facts: NodeFacts, profile: HardwareProfile) -> list[NodeFactError]:
    """Every NPU id of `npu-smi info` lists the profile's chips: a 300I Duo
    card shows two 310P3 chips, an Atlas 300I Pro card one (same chip name,
    half the memory), an A3 NPU two dies, so the chip count tells them apart."""
    want = profile.chips_per_npu
    chips: dict[int, int] = {}
    for n in facts.npus:
        chips[n["npu"]] = chips.get(n["npu"], 0) + 1
    odd = [f"NPU {npu} lists {count}" for npu, count in sorted(chips.items()) if count != want]
    if not odd:
        return []
    return [NodeFactError(facts.node, "npu-smi info",
                          f"{', '.join(odd)} chip(s), hardware.profile {profile.name} has {want} per NPU",
                          "set hardware.profile to these servers' model (chips per NPU differ between models), "
                          "or reseat/replace the card")]


@dataclass(frozen=True)
class NetworkPolicies:
    """network.lldp / netdetect / gateway of the stack."""

    lldp: NetworkPolicy = "require"
    netdetect: NetworkPolicy = "require"
    gateway: NetworkPolicy = "require"


def _printed(d: DeviceFacts, name: str) -> str:
    said = d.printed.get(name)
    return f"printed '{said}'" if said else "printed nothing"


def check_network(facts: NodeFacts, profile: HardwareProfile,
                  policies: NetworkPolicies) -> tuple[list[NodeFactError], list[NodeFactError]]:
    """lldp, netdetect and gateway as runbook 001 §3.1 reads them, judged
    (errors, warnings) per the stack's policies on a profile that has them.
    Healthy (docs/formats.md §2d, §2h): an `Ifname:` line (a switch port is
    cabled), `netdetect address: <ip>`, `default gateway:<ip>, Iface:ethN`
    with the gateway inside the device's subnet and answering its ping."""
    node, checks = facts.node, profile.network
    found: dict[str, list[NodeFactError]] = {"lldp": [], "netdetect": [], "gateway": []}
    for d in facts.devices:
        i = d.index
        if checks.lldp and d.lldp_ifname is None:
            found["lldp"].append(NodeFactError(
                node, f"device {i} lldp", f"no neighbour (`hccn_tool -i {i} -lldp -g` {_printed(d, 'lldp')})",
                "check the cable and the switch port (LLDP on), or set network.lldp: warn"))
        if checks.netdetect and (d.netdetect is None or not is_ip(d.netdetect)):
            found["netdetect"].append(NodeFactError(
                node, f"device {i} netdetect",
                f"no netdetect address (`hccn_tool -i {i} -netdetect -g` {_printed(d, 'netdetect')})",
                f"set one (`hccn_tool -i {i} -netdetect -s address <ip>`, netdetect_{i} in /etc/hccn.conf), "
                "or set network.netdetect: warn"))
        if not checks.gateway:
            continue
        if d.gateway is None or not is_ip(d.gateway):
            found["gateway"].append(NodeFactError(
                node, f"device {i} gateway",
                f"no default gateway (`hccn_tool -i {i} -gateway -g` {_printed(d, 'gateway')})",
                f"set one (`hccn_tool -i {i} -gateway -s gateway <ip>`, gateway_{i} in /etc/hccn.conf), "
                "or set network.gateway: ignore on a fabric without one"))
            continue
        subnet = _subnet(d)
        if subnet is not None and ipaddress.ip_address(d.gateway) not in subnet:
            found["gateway"].append(NodeFactError(
                node, f"device {i} gateway", f"{d.gateway} is outside the device's subnet {subnet}",
                f"fix gateway_{i} or netmask_{i} in /etc/hccn.conf"))
        elif policies.gateway != "ignore" and d.gateway_ping is not None and " 0.00% packet loss" not in (
                " " + d.gateway_ping):
            found["gateway"].append(NodeFactError(
                node, f"device {i} gateway",
                f"{d.gateway} does not answer the device's ping "
                f"(`hccn_tool -i {i} -ping -g address {d.gateway}`: {d.gateway_ping})",
                "check the gateway and the switch port, or set network.gateway: warn"))
    errors: list[NodeFactError] = []
    warnings: list[NodeFactError] = []
    for name, problems in found.items():
        policy = getattr(policies, name)
        if policy == "require":
            errors += problems
        elif policy == "warn":
            warnings += problems
    return errors, warnings


def _subnet(d: DeviceFacts) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not d.ip or not d.netmask:
        return None
    try:
        return ipaddress.ip_interface(f"{d.ip}/{d.netmask}").network
    except ValueError:
        return None


def check_cluster(all_facts: list[NodeFacts]) -> list[NodeFactError]:
    """Contradictions between nodes."""
    errors: list[NodeFactError] = []
    by_hostname: dict[str, str] = {}
    for f in all_facts:
        if f.hostname in by_hostname:
            errors.append(NodeFactError(f.node, "hostname",
                                        f"'{f.hostname}' is also the hostname of {by_hostname[f.hostname]}",
                                        "Ray needs distinct hostnames: `hostname <new-name>` on one of them "
                                        "(runbook 000)"))
        else:
            by_hostname[f.hostname] = f.node
    for attr, label in (("driver_version", "driver version"), ("firmware_version", "firmware version"),
                        ("cann_version", "CANN version")):
        values = {getattr(f, attr) for f in all_facts if getattr(f, attr)}
        if values:
            # A node whose version file is missing cannot be shown to match.
            have = next(f for f in all_facts if getattr(f, attr))
            for f in all_facts:
                if not getattr(f, attr):
                    errors.append(NodeFactError(f.node, label, f"cannot be read (its version file is missing), "
                                                f"{have.node} has {getattr(have, attr)}",
                                                "install the same version on every node"))
        if len(values) > 1:
            first = all_facts[0]
            for f in all_facts[1:]:
                if getattr(f, attr) and getattr(f, attr) != getattr(first, attr):
                    errors.append(NodeFactError(f.node, label,
                                                f"is {getattr(f, attr)}, {first.node} has {getattr(first, attr)}",
                                                "install the same version on every node"))
    tls = {f.node: {d.tls_switch for d in f.devices} for f in all_facts}
    switches = set().union(*tls.values()) if tls else set()
    if len(switches) > 1:
        errors.append(NodeFactError(",".join(sorted(tls)), "tls", f"TLS switches differ across nodes: {tls}",
                                    "set network.fix_tls: true or align `hccn_tool -tls` on every node"))
    owner: dict[str, str] = {}
    for f in all_facts:
        for d in f.devices:
            if d.ip and d.ip in owner:
                errors.append(NodeFactError(f.node, f"device {d.index} ip", f"{d.ip} is also {owner[d.ip]}",
                                            "every NPU needs its own IP (/etc/hccn.conf)"))
            elif d.ip:
                owner[d.ip] = f"{f.node} device {d.index}"
    errors.extend(check_super_pods(all_facts))
    return errors


def raise_first(errors: list[NodeFactError]) -> None:
    """One clear message: all problems, one per line, under the first's type."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        # The first's node and fact (what callers match on), every problem's text.
        combined = NodeFactError(errors[0].node, errors[0].fact, "")
        combined.args = ("\n".join(str(e) for e in errors),)
        raise combined
