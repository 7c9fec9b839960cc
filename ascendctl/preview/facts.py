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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ascend_inference.loaded import LoadedStack
from ascendctl.preview.providers import COMMAND, REMOTE_IMAGE, identity_inputs

if TYPE_CHECKING:
    from pulumi.runtime import MockResourceArgs


def synthetic_npu_smi(devices: int, name: str, hbm_mb: int) -> str:
    """`npu-smi info` in the 23.0.x layout the facts parser reads."""
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
        lines.append(f"| 0                         | 0000:{i:02X}:00.0  | 0           0    / 0          "
                     f"3347 / {hbm_mb:<10}|")
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


def mock_outputs(loaded: LoadedStack) -> Callable[[MockResourceArgs], dict[str, Any]]:
    """The `outputs_for` of `recorder.record_graph` for this stack: an id per
    resource that changes when the provider would mint a new one, and the
    stdout the program reads from preflight, weights and GPUStack commands."""
    node_names = {n.name for n in loaded.spec.nodes}

    def outputs_for(args: MockResourceArgs) -> dict[str, Any]:
        return {"__id__": f"{args.name}-{_input_digest(identity_inputs(args.typ, args.inputs))}", **_outputs(args)}

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
                                          "bytes": 0, "fingerprint": "0" * 64}) + "\n", "stderr": ""}
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
