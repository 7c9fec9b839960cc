"""Facts read off a node by the preflight script, and the contradictions the
program refuses before anything is started.

The preflight script prints the tools' own output in `### <section>` blocks;
parsing happens here, on the control host, in one tested place, against the
real formats of `npu-smi info` and `hccn_tool` (the samples, with their public
sources, are in tests/fixtures/tool-output/). Pure: no Pulumi import.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ascend_inference.errors import NodeFactError
from ascend_inference.hardware import HardwareProfile
from ascend_inference.spec import is_ip

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
    return d


def parse_preflight(node: str, stdout: str, devices: int) -> NodeFacts:
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
    if expected_hostname and facts.hostname != expected_hostname:
        errors.append(NodeFactError(node, "hostname", f"is '{facts.hostname}', the stack expects '{expected_hostname}'",
                                    f"run `hostname {expected_hostname}` on the node or update nodes[].hostname"))
    want_tls = 1 if tls_policy == "enabled" else 0
    for d in facts.devices:
        if d.link != "UP":
            errors.append(NodeFactError(node, f"device {d.index} link", f"is {d.link or 'unknown'}",
                                        f"check the cable/optics (`hccn_tool -i {d.index} -link -g`)"))
        if d.net_health is not None and d.net_health not in ("Success",):
            errors.append(NodeFactError(node, f"device {d.index} net_health", f"is {d.net_health}",
                                        f"check netdetect/gateway (`hccn_tool -i {d.index} -net_health -g`)"))
        if d.tls_switch is not None and d.tls_switch != want_tls:
            errors.append(NodeFactError(node, f"device {d.index} tls",
                                        f"switch is {d.tls_switch}, the stack's policy is {tls_policy}",
                                        "set network.fix_tls: true (runs `hccn_tool -i N -tls -s enable 0`) "
                                        "or change network.hccl_tls"))
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
    return errors


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
    return errors


def raise_first(errors: list[NodeFactError]) -> None:
    """One clear message: all problems, one per line, under the first's type."""
    if errors:
        if len(errors) == 1:
            raise errors[0]
        first = errors[0]
        combined = NodeFactError(first.node, first.fact, str(first).split(": ", 2)[-1])
        combined.args = ("\n".join(str(e) for e in errors),)
        raise combined
