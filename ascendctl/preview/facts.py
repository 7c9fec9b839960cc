"""What healthy nodes matching a stack would answer, for the offline preview.

There is no cluster offline, so remote commands do not run. These mock
outputs answer the way healthy nodes matching the stack would: preflight
prints the real tools' formats (`npu-smi info`, `hccn_tool`) with the
stack's declared hostnames and device IPs, so the facts parser, the checks
and the rank table run on them exactly as in a rollout; resource ids change
exactly when the provider would mint a new one (`providers.identity_inputs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from ascend_inference.loaded import LoadedStack
from ascendctl.preview.providers import COMMAND, REMOTE_IMAGE, identity_inputs

if TYPE_CHECKING:
    from pulumi.runtime import MockCallArgs, MockResourceArgs


def synthetic_npu_smi(devices: int, name: str, hbm_mb: int, chips_per_npu: int = 1) -> str:
    """`npu-smi info` in the 23.0.x layout the facts parser reads; with two
    chips per NPU (Atlas A3), each NPU id twice, as docs/formats.md §1c."""
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
        npu, chip = divmod(i, chips_per_npu)
        lines.append(f"| {npu:<5} {name:<19} | OK            | 96.5        36                0    / 0             |")
        lines.append(f"| {chip:<25} | 0000:{i:02X}:00.0  | 0           0    / 0          "
                     f"3347 / {hbm_mb:<10}|")
        lines.append(sep)
    return "\n".join(lines)


def synthetic_npu_smi_cards(devices: int, chips: int, name: str, hbm_mb: int) -> str:
    """`npu-smi info` of cards with several chips (the 310P3 layout of
    docs/formats.md §1d): device d is chip d % chips of card d // chips."""
    thin = "+" + "-" * 31 + "+" + "-" * 17 + "+" + "-" * 54 + "+"
    thick = "+" + "=" * 31 + "+" + "=" * 17 + "+" + "=" * 54 + "+"
    lines = ["+" + "-" * 104 + "+",
             f"| npu-smi {'24.1.0.1':<41}Version: {'24.1.0.1':<45}|",
             thin,
             "| NPU     Name                  | Health          | "
             "Power(W)     Temp(C)           Hugepages-Usage(page) |",
             "| Chip    Device                | Bus-Id          | "
             "AICore(%)    Memory-Usage(MB)                        |",
             thick]
    for d in range(devices):
        card, chip = divmod(d, chips)
        memory = f"3347 / {hbm_mb}"
        lines += [f"| {card:<8}{name:<22}| {'OK':<16}| {'NA':<13}{62:<18}{0:<6}/ {0:<14}|",
                  f"| {chip:<8}{d:<22}| {f'0000:{card + 1:02X}:00.0':<16}| {0:<13}{memory:<40}|",
                  thick if chip == chips - 1 else thin]
    return "\n".join(lines)


def synthetic_preflight(loaded: LoadedStack, node_name: str) -> str:
    spec = loaded.spec
    node = next(n for n in spec.nodes if n.name == node_name)
    profile = spec.profile
    devices = profile.devices_per_node
    ips = node.device_ips or [f"198.18.{spec.nodes.index(node)}.{d + 1}" for d in range(devices)]
    tls = 1 if spec.network.hccl_tls == "enabled" else 0
    chips = profile.chips_per_npu
    out = ["### hostname", node.hostname or f"{node.name}-host",
           "### npu-smi-info",
           # The 310P3 card/chip table (300I Duo) or the 910 one (A3: two dies per NPU).
           synthetic_npu_smi_cards(devices, chips, profile.chip, profile.device_memory_gb * 1024)
           if chips > 1 and not profile.spod_info else
           synthetic_npu_smi(devices, f"{profile.chip}", profile.device_memory_gb * 1024, chips),
           # Nodes matching the stack have the versions it expects (ascend-inference:host).
           "### driver-version", f"Version={spec.host.driver or '24.1.rc3'}",
           "### firmware-version", f"Version={spec.host.firmware or '7.5.0.1.129'}",
           "### cann-version", f"version={spec.host.cann or '8.0.0'}"]
    checks = profile.network
    # Only the sections the profile's preflight prints (none without a fabric).
    for d in range(devices if checks.fabric else 0):
        gateway = ips[d].rsplit(".", 1)[0] + ".254"  # inside the device's /24
        sections = {
            "ip": [f"ipaddr:{ips[d]}", "netmask:255.255.255.0"] if checks.device_ips else None,
            "link": ["link status: UP"] if checks.roce_links else None,
            "net_health": ["net health status: Success"] if checks.roce_links else None,
            "lldp": [f"\tIfname: 400GE1/1/{d}:1"] if checks.lldp else None,
            "netdetect": [f"netdetect address: {gateway}"] if checks.netdetect else None,
            "gateway": [f"default gateway:{gateway}, Iface:eth{d}"] if checks.gateway else None,
            "tls": [f"dev_id:{d}, tls switch[{tls}](0:disable, 1:enable), tls preconfigured[1](0:non-preset, "
                    "1:preset), tls alarm time threshold[60]days"] if checks.tls else None,
            "gateway_ping": ["3 packets transmitted, 3 received, 0.00% packet loss"]
            if checks.gateway and spec.network.gateway != "ignore" else None,
        }
        for section, lines in sections.items():
            if lines is not None:
                out += [f"### device {d} {section}", *lines]
    if profile.spod_info:
        out += synthetic_spod_info(devices, profile.chips_per_npu, server_index=spec.nodes.index(node))
    out += ["### hccl-rootinfo", "absent", "### model-path", "present",
            "### docker", "running 26.1.5", "### reboot-pending", "### end"]
    return "\n".join(out) + "\n"


def synthetic_spod_info(devices: int, chips_per_npu: int, *, server_index: int, super_pod_id: int = 0) -> list[str]:
    """`npu-smi info -t spod-info` of every die of an Atlas A3 server, printed
    as npu-smi prints it ("\t%-30s : %u"), with the SDID laid out as Ascend's
    A3 DCMI reference gives it (server index, chip, die, device)."""
    out = []
    for d in range(devices):
        npu, chip = divmod(d, chips_per_npu)
        sdid = (server_index << 22) | (npu << 18) | (chip << 16) | d
        out += [f"### device {d} spod", f"\t{'SDID':<30} : {sdid}", f"\t{'Super Pod Size':<30} : 384",
                f"\t{'Super Pod ID':<30} : {super_pod_id}", f"\t{'Server Index':<30} : {server_index}"]
    return out


# How a resource's outputs look in a real `pulumi preview` that creates or
# replaces it (`CREATED`: id and computed outputs unknown; pulumi-command
# `infer/resource.go` markComputed, the bridge's planned state, the engine's
# invoke gate for checks waiting for it), or updates it (`UPDATED`: a
# command's stdout and stderr unknown, docs/standin-plugins.md C8; a
# container or image keeps its outputs).
CREATED = "created"
UPDATED = "updated"


def mock_outputs(loaded: LoadedStack, unknown: Mapping[str, str] | None = None,
                 ) -> Callable[[MockResourceArgs], dict[str, Any]]:
    """The `outputs_for` of `recorder.record_graph` for this stack: an id per
    resource that changes when the provider would mint a new one, and the
    stdout the program reads from preflight, weights, image checks and GPUStack commands.
    `unknown`: resource name -> CREATED or UPDATED, whose outputs are left
    unknown as a real preview has them."""
    node_names = {n.name for n in loaded.spec.nodes}
    unknown = unknown or {}

    def outputs_for(args: MockResourceArgs) -> dict[str, Any]:
        how = unknown.get(args.name)
        if how == CREATED:
            return {"__id__": None}
        answer = {"__id__": f"{args.name}-{_input_digest(identity_inputs(args.typ, args.inputs))}", **_outputs(args)}
        if how == UPDATED and args.typ == COMMAND:
            answer.pop("stdout", None)
            answer.pop("stderr", None)
        return answer

    def _outputs(args: MockResourceArgs) -> dict[str, Any]:
        name = args.name
        if args.typ == REMOTE_IMAGE:
            return {"imageId": "sha256:" + _input_digest({"name": args.inputs.get("name")}) * 8}
        if args.typ != COMMAND:
            return {}
        if name.endswith("-preflight") and name[: -len("-preflight")] in node_names:
            return {"stdout": synthetic_preflight(loaded, name[: -len("-preflight")]), "stderr": ""}
        if name.endswith("-weights"):
            node = name[: -len("-weights")]
            return {"stdout": json.dumps({"node": node, "path": loaded.spec.model.path, "files": 163,
                                          "bytes": 0, "disk_bytes": 0, "manifest": "",
                                          "fingerprint": "0" * 64}) + "\n", "stderr": ""}
        if name.endswith("-image") and name[: -len("-image")] in node_names:
            # What the image step prints: the image id, and with image_url on
            # the master the tar the other nodes' copies are checked against.
            container = loaded.spec.container
            printed: dict[str, Any] = {"image": container.image,
                                       "id": "sha256:" + _input_digest({"name": container.image}) * 4}
            if container.image_tar and container.image_url:
                printed.update(tar=container.image_tar, tar_bytes=0,
                               tar_sha256=container.image_sha256 or "0" * 64)
            return {"stdout": json.dumps(printed) + "\n", "stderr": ""}
        if name.endswith("-image-check") and name[: -len("-image-check")] in node_names:
            # The same image everywhere, holding the versions the stack declares
            # (none found where it declares none: reported, not compared).
            container = loaded.spec.container
            return {"stdout": json.dumps({
                "node": name[: -len("-image-check")], "image": container.image,
                "id": "sha256:" + _input_digest({"name": container.image}) * 4,
                "engine_version": loaded.spec.engine_plugin.engine_version(loaded.spec) or "",
                "cann_version": container.cann_version or ""})
                + "\n", "stderr": ""}
        if name.endswith("-pyacl-install"):
            return {"stdout": json.dumps({"installed": "no", "reason": "acl imports already"}) + "\n", "stderr": ""}
        if name.endswith("-container-check"):
            return {"stdout": json.dumps({"python3": True, "acl": "ok", "files": {}}) + "\n", "stderr": ""}
        if name.endswith("-config-edit"):
            return {"stdout": json.dumps({"target": "", "missing": [], "edited": []}) + "\n", "stderr": ""}
        if name == "gpustack-token":
            return {"stdout": "mock-registration-token\n", "stderr": ""}
        if name == "gpustack-admin-password":
            return {"stdout": "mock-admin-password\n", "stderr": ""}
        return {"stdout": "", "stderr": ""}

    return outputs_for


def _input_digest(inputs: object) -> str:
    def stable(value: object) -> str:  # unknowns print with their address; make them equal
        return "<unknown>" if type(value).__name__ == "Unknown" else str(value)

    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=stable).encode()).hexdigest()[:8]


# pulumi-command's invoke that runs the node checks (components.common.node_check).
LOCAL_RUN = "command:local:run"
# The environment variable a check is named by (components.common.CHECK_ENV; the
# offline tooling does not import the program's modules at load time).
CHECK_ENV = "ASCEND_INFERENCE_CHECK"


def mock_calls(outputs: Callable[[MockResourceArgs], dict[str, Any]]) -> Callable[[MockCallArgs], dict[str, Any]]:
    """The `call_for` of `recorder.record_graph` beside `outputs` (a stack's
    `mock_outputs`): the node checks (`local.run` invokes, named by CHECK_ENV in
    their environment) print what a mock step of the same name would."""

    def call_for(args: MockCallArgs) -> dict[str, Any]:
        if args.token != LOCAL_RUN:
            return {}
        name = (args.args.get("environment") or {}).get(CHECK_ENV, "")
        printed = outputs(cast("MockResourceArgs", _CheckAsCommand(name, args.args)))
        return {"stdout": printed.get("stdout", "").removesuffix("\n"), "stderr": ""}

    return call_for


class _CheckAsCommand:
    """The fields of MockResourceArgs that `mock_outputs` reads, for a check named like its step."""

    typ = COMMAND

    def __init__(self, name: str, inputs: dict[str, Any]):
        self.name, self.inputs = name, inputs
