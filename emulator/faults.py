"""Injected node faults: schema, parsing, and making a running node match them.

A node's faults are one JSON object in <state>/nodes/<name>/run/faults.json,
seen inside the node (and in containers started with the emulator's base
mounts) as /run/ascemu/faults.json. The stand-in tools read it on every call.

Faults that have a real effect are also *applied* to the node, so that tools
other than the stand-ins see them too:

    link_down          the device's IP is removed from the node: peers really
                       cannot ping it, and `hccn_tool -link -g` says DOWN
    unreachable        blackhole routes in the node: pings really fail
    missing_devices    /dev/davinciN is removed from the node (and npu-smi
                       omits the device)
    driver_version     driver version.info is rewritten (and npu-smi reports it)
    stale_rootinfo     /etc/hccl_rootinfo.json exists
    missing_model      the model directory is gone
    model_file_differs one weight shard differs from the other nodes'
    lfs_pointer_shard  one weight shard is a git-lfs pointer file
    truncated_shard    one weight shard is shorter than the manifest says
    full_disk          a 16 KiB tmpfs mounted at the given path (a real full
                       filesystem: df and writes both see it)
    hostname           the node's UTS hostname (e.g. another node's: duplicate)
    image_engine_version, image_differs
                       the node's runtime image is reloaded as another variant
                       (emulator/image.py), and the tags that named the old one
                       follow it: the stack's image has another id on this node
    missing_vnpu_cfg   /etc/vnpu.cfg is removed
    gateway_unreachable a blackhole route to the devices' gateway: its ping fails
    docker             'missing': the docker commands are gone from the node;
                       'stopped': its daemon's socket is gone (docker cannot connect)

Applying is a reconcile (desired state), so clearing a fault restores the node.

This module is the fault job of the emulator, apart from provisioning
(provision.py makes the nodes) and the node handle (node.py runs things on
them). Cluster.set_fault / clear_faults / faults are thin calls into
set_faults / clear / read here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import subprocess
from pathlib import Path

from . import image as imagelib
from . import network
from .node import ClusterError, Node
from .nodefs import VNPU_CFG, Hardware, Layout, NodeRoot, driver_version_info, model_fixture

HEALTH_VALUES = ("OK", "Warning", "Alarm", "Critical")

# key -> (kind, help)
FAULT_KEYS: dict[str, tuple[str, str]] = {
    "link_down": ("devices", "devices whose NIC link is DOWN (device IP removed from the node)"),
    "tls_on": ("devices", "devices whose TLS switch is 1 (`hccn_tool -tls -s enable 0` clears it)"),
    "net_health_fail": ("devices", "devices whose `-net_health -g` says Fault"),
    "missing_devices": ("devices", "devices absent from npu-smi and /dev"),
    "unhealthy_devices": ("health", "devices whose npu-smi Health is not OK (list -> Alarm, or {dev: Warning})"),
    "driver_version": ("string", "driver version reported by npu-smi and version.info"),
    "unreachable": ("ips", "IP addresses this node cannot reach (blackhole routes; -ping fails)"),
    "wrong_device_ip": ("device_ips", "{dev: ip}: what `-ip -g` reports instead of the real device IP"),
    "stale_rootinfo": ("bool", "leave a stale /etc/hccl_rootinfo.json on the node"),
    "missing_model": ("bool", "the model directory is missing on this node"),
    "model_file_differs": ("bool", "one weight shard differs from the other nodes'"),
    "lfs_pointer_shard": ("bool", "one weight shard is a git-lfs pointer file (a clone without git-lfs)"),
    "truncated_shard": ("bool", "one weight shard is shorter than the manifest says (an interrupted copy)"),
    "full_disk": ("string", "a 16 KiB filesystem (tmpfs) is mounted at this path: nothing of size fits there"),
    "hostname": ("string", "this node's hostname (use another node's to make a duplicate)"),
    "server_index": ("number", "A3 nodes: the Server Index `npu-smi info -t spod-info` reports, and the server "
                                "bits of each SDID (another node's index: the same SDIDs in one super pod)"),
    "image_engine_version": ("string", "the engines' version in this node's runtime image (another image id too)"),
    "image_differs": ("bool", "this node's runtime image differs from the others' (same versions, another id)"),
    "missing_vnpu_cfg": ("bool", "/etc/vnpu.cfg (a `-v` source of runbook 000) is missing on this node"),
    "lldp_missing": ("devices", "devices whose `-lldp -g` finds no neighbour (no switch port)"),
    "netdetect_fail": ("devices", "devices without a netdetect address (`-net_health -g` then says Init)"),
    "gateway_unreachable": ("bool", "the device gateway does not answer (a blackhole route to it on the node)"),
    "engine_ready_delay": ("number", "stand-in engine: seconds before it listens/reports ready"),
    "engine_crash_after": ("number", "stand-in engine: exit with status 1 after this many seconds"),
    "docker": ("docker", "'missing' (no docker command on the node) or 'stopped' (its daemon does not answer)"),
    "acl_missing": ("bool", "containers on this node cannot `import acl` (an image without pyACL)"),
}

# Where a node finds the docker command (the host's, through the overlay's lower layer).
DOCKER_COMMANDS = ("/usr/bin/docker", "/usr/local/bin/docker")
DOCKER_SOCKET = "/run/docker.sock"


class FaultError(ValueError):
    pass


def _devices(key, value, npu_count):
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple, set)):
        raise FaultError(f"{key}: expected a device number or a list of them, got {value!r}")
    out = []
    for v in value:
        try:
            dev = int(v)
        except (TypeError, ValueError):
            raise FaultError(f"{key}: {v!r} is not a device number") from None
        if not 0 <= dev < npu_count:
            raise FaultError(f"{key}: device {dev} out of range 0..{npu_count - 1}")
        out.append(dev)
    return sorted(set(out))


def normalize(faults: dict, npu_count: int = 8) -> dict:
    """Validate and canonicalize a fault dict (unknown keys are an error)."""
    out = {}
    for key, value in faults.items():
        if key not in FAULT_KEYS:
            raise FaultError(f"unknown fault {key!r}; valid faults: {', '.join(FAULT_KEYS)}")
        kind = FAULT_KEYS[key][0]
        if value is None or value is False or value == [] or value == {} or value == "":
            continue  # "not set"
        if kind == "devices":
            out[key] = _devices(key, value, npu_count)
        elif kind == "health":
            if isinstance(value, dict):
                health = {}
                for dev, h in value.items():
                    if h not in HEALTH_VALUES:
                        raise FaultError(f"{key}: health {h!r} is not one of {HEALTH_VALUES}")
                    health[str(_devices(key, dev, npu_count)[0])] = h
                out[key] = health
            else:
                out[key] = {str(d): "Alarm" for d in _devices(key, value, npu_count)}
        elif kind == "ips":
            if isinstance(value, str):
                value = [value]
            try:
                out[key] = sorted({str(ipaddress.ip_address(v)) for v in value})
            except ValueError as exc:
                raise FaultError(f"{key}: {exc}") from None
        elif kind == "device_ips":
            if not isinstance(value, dict):
                raise FaultError(f"{key}: expected {{device: ip}}, got {value!r}")
            try:
                out[key] = {str(_devices(key, d, npu_count)[0]): str(ipaddress.ip_address(ip))
                            for d, ip in value.items()}
            except ValueError as exc:
                raise FaultError(f"{key}: {exc}") from None
        elif kind == "bool":
            if value not in (True, 1, "1", "true", "yes"):
                raise FaultError(f"{key}: expected true/false, got {value!r}")
            out[key] = True
        elif kind == "string":
            out[key] = str(value)
        elif kind == "docker":
            if value not in ("missing", "stopped"):
                raise FaultError(f"{key}: expected 'missing' or 'stopped', got {value!r}")
            out[key] = value
            if key == "full_disk" and not out[key].startswith("/"):
                raise FaultError(f"{key}: expected an absolute path, got {value!r}")
        elif kind == "number":
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                raise FaultError(f"{key}: expected a number of seconds, got {value!r}") from None
    return out


def parse_assignment(text: str):
    """KEY=VALUE from the command line. VALUE is JSON if it parses, a comma
    list otherwise: link_down=3, link_down=3,5, stale_rootinfo=true,
    unhealthy_devices='{"2": "Warning"}', hostname=ascend-node0."""
    if "=" not in text:
        raise FaultError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, str) and "," in value and FAULT_KEYS.get(key, ("",))[0] in ("devices", "ips", "health"):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return key, value


def read(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "faults.json").read_text())
    except FileNotFoundError:
        return {}


def write(run_dir: Path, faults: dict) -> None:
    tmp = run_dir / "faults.json.tmp"
    tmp.write_text(json.dumps(faults, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / "faults.json")  # readers never see half a file


def set_faults(node: Node, layout: Layout, hardware: Hardware, **changes) -> dict:
    """Add or change faults on a running node (a value of None/False/[] removes that one).

    Returns the node's full fault set. Raises FaultError on a bad key/value."""
    merged = normalize({**read(node.run_dir), **changes}, hardware.npu_count)
    return _reconcile(node, layout, hardware, merged)


def clear(node: Node, layout: Layout, hardware: Hardware) -> dict:
    """Remove every fault from a running node and restore what they changed."""
    return _reconcile(node, layout, hardware, {})


def _reconcile(node: Node, layout: Layout, hardware: Hardware, wanted: dict) -> dict:
    if not node.is_running():
        raise ClusterError(f"{node.name} is not running (run `python -m emulator status`)")
    write(node.run_dir, wanted)
    apply(node, layout, hardware.npu_count, hardware.driver_version, wanted)
    return wanted


def apply(node: Node, layout: Layout, npu_count: int, default_driver: str, faults: dict) -> list[str]:
    """Make the running node match `faults`; returns what changed (for logs)."""
    changed = []
    root = NodeRoot(node.holder_pid)
    netns = node.netns

    link_down = set(faults.get("link_down", []))
    addresses = network.netns_addresses(netns)
    for dev, ip in enumerate(node.device_ips):
        want = dev not in link_down
        if (ip in addresses) != want:
            network.set_device_address(netns, ip, present=want)
            changed.append(f"device {dev} link {'up' if want else 'down'}")

    targets = set(faults.get("unreachable", []))
    if faults.get("gateway_unreachable"):
        targets.add(network.DEVICE_GATEWAY)
    if targets != network.blackholes(netns):
        changed.append(f"unreachable = {sorted(targets)}")
    network.set_blackholes(netns, targets)

    missing = set(faults.get("missing_devices", []))
    for dev in range(npu_count):
        if root.ensure_char_device(f"/dev/davinci{dev}", present=dev not in missing):
            changed.append(f"/dev/davinci{dev} {'removed' if dev in missing else 'restored'}")

    version = faults.get("driver_version", default_driver)
    if root.write_if_changed(f"{layout.driver_dir}/version.info", driver_version_info(version).encode()):
        changed.append(f"driver version {version}")

    if faults.get("stale_rootinfo"):
        stale = json.dumps({"rootinfo": "stale from a previous run", "pid": 4242}).encode()
        if root.write_if_changed(layout.rootinfo, stale):
            changed.append(f"{layout.rootinfo} created")
    elif root.remove(layout.rootinfo):
        changed.append(f"{layout.rootinfo} removed")

    files = model_fixture(differs=bool(faults.get("model_file_differs")),
                          lfs_pointer=bool(faults.get("lfs_pointer_shard")),
                          truncated=bool(faults.get("truncated_shard")))
    for model_dir in layout.model_dirs:
        if faults.get("missing_model"):
            if root.remove(model_dir):
                changed.append(f"{model_dir} removed")
            continue
        for name, data in files.items():
            if root.write_if_changed(f"{model_dir}/{name}", data):
                changed.append(f"{model_dir}/{name} written")

    if faults.get("missing_vnpu_cfg"):
        if root.remove(layout.vnpu_cfg):
            changed.append(f"{layout.vnpu_cfg} removed")
    elif root.write_if_changed(layout.vnpu_cfg, VNPU_CFG.encode()):
        changed.append(f"{layout.vnpu_cfg} restored")

    variant = imagelib.Variant(engine_version=faults.get("image_engine_version"),
                               marker="differs" if faults.get("image_differs") else "")
    if _load_image_variant(node, variant):
        changed.append(f"runtime image: {variant}")
    changed += _apply_docker(root, faults.get("docker"))
    changed += _full_disk(node, faults.get("full_disk"))

    hostname = faults.get("hostname", node.hostname)
    current = node.current_hostname()
    if current != hostname:
        subprocess.run(["nsenter", "-t", str(node.holder_pid), "--uts", "hostname", hostname], check=True)
        root.write_if_changed("/etc/hostname", (hostname + "\n").encode())
        changed.append(f"hostname {current} -> {hostname}")
    return changed


def _docker(node: Node, *args: str) -> str:
    got = node.exec(["docker", "-H", "unix:///run/docker.sock", *args], timeout=120)
    if got.returncode != 0:
        raise ClusterError(f"{node.name}: docker {' '.join(args)} failed: {got.stderr.strip()}")
    return got.stdout


def _load_image_variant(node: Node, variant: imagelib.Variant) -> bool:
    """Reload the node's runtime image as `variant` when it holds another;
    every tag that named the old image (the stacks' image names the stand-in
    docker plugin or a `docker load` gave it) is moved to the new one. Returns whether it
    changed anything. The default variant is built byte for byte as at
    provisioning, so clearing the fault gives back the cluster's image id."""
    # The variant loaded by a fault, if any (none: the provisioned image).
    record = node.run_dir.parent / "image-variant.json"
    loaded = json.loads(record.read_text()) if record.exists() else None
    wanted = None if variant == imagelib.Variant() else dataclasses.asdict(variant)
    if loaded == wanted:
        return False
    # One file per variant, never rewritten with other content: the node
    # sees the host's files through an overlay, which may keep serving a
    # replaced file's old content.
    archive = node.run_dir.parent / f"image-{variant.engine_version or 'default'}-{variant.marker or 'same'}.tar"
    if not archive.exists():
        imagelib.build_image(archive, imagelib.IMAGE, variant)
    current = _docker(node, "image", "inspect", "-f", "{{.Id}}", imagelib.IMAGE).strip()
    tags = [line.split()[0] for line in _docker(node, "images", "--no-trunc", "--format",
                                                 "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
            if line.split()[1:] == [current] and line.split()[0] != imagelib.IMAGE]
    _docker(node, "load", "-i", str(archive))
    # `docker load` of an image the node still holds (untagged, from before
    # the fault) does not move the tag: name it by its id.
    loaded_id = imagelib.image_id(archive)
    for tag in [imagelib.IMAGE, *tags]:
        _docker(node, "tag", loaded_id, tag)
    if wanted is None:
        record.unlink()
    else:
        record.write_text(json.dumps(wanted) + "\n")
    return True
def _apply_docker(root: NodeRoot, fault: str | None) -> list[str]:
    """'missing': the docker commands are removed from the node (a whiteout in
    its overlay; the host keeps its own), and copied back from the host when
    the fault is cleared. 'stopped': the daemon's socket is moved aside, so
    `docker` fails as it does with no daemon ("Cannot connect to the Docker
    daemon"); dockerd itself and its containers keep running and the socket
    is moved back when the fault is cleared."""
    import shutil

    changed = []
    for command in DOCKER_COMMANDS:
        present = root.path(command).exists()
        if fault == "missing" and present:
            root.path(command).unlink()
            changed.append(f"{command} removed")
        elif fault != "missing" and not present and os.path.exists(command):
            shutil.copy2(command, root.path(command))
            changed.append(f"{command} restored")
    socket, aside = root.path(DOCKER_SOCKET), root.path(DOCKER_SOCKET + ".stopped")
    if fault == "stopped" and socket.exists():
        os.replace(socket, aside)
        changed.append("docker daemon socket moved aside")
    elif fault != "stopped" and aside.exists() and not socket.exists():
        os.replace(aside, socket)
        changed.append("docker daemon socket back")
    return changed


# The source name of the small filesystems `full_disk` mounts: how a later
# reconcile finds them again (in the node's own mount namespace).
FULL_DISK_SOURCE = "ascemu-full-disk"


def _full_disk(node: Node, wanted: str | None) -> list[str]:
    """Mount a 16 KiB tmpfs at `wanted` in the node's mount namespace (and
    unmount any other the fault left); the directory is made if missing and
    left in place afterwards."""
    ns = ["nsenter", "-t", str(node.holder_pid), "-m"]
    # The holder's view is the node's mount namespace.
    mounts = Path(f"/proc/{node.holder_pid}/mounts").read_text()
    present = [line.split()[1] for line in mounts.splitlines() if line.split()[0] == FULL_DISK_SOURCE]
    changed = []
    for path in present:
        if path != wanted:
            subprocess.run(ns + ["umount", path], check=True)
            changed.append(f"{path}: full filesystem unmounted")
    if wanted and wanted not in present:
        subprocess.run(ns + ["mkdir", "-p", wanted], check=True)
        subprocess.run(ns + ["mount", "-t", "tmpfs", "-o", "size=16k,mode=755", FULL_DISK_SOURCE, wanted], check=True)
        changed.append(f"{wanted}: a 16 KiB filesystem mounted")
    return changed
