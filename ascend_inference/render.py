"""Everything a node receives, rendered from the spec and plan: env file,
engine files, container settings, node scripts, and the rank table.

The Pulumi resources run exactly these scripts; `python -m ascendctl render`
writes them to a directory so a person can read what would be sent where.
Pure: no Pulumi import.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import posixpath
import shlex
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ascend_inference import config_edit
from ascend_inference.container import ContainerSpec
from ascend_inference.engines.base import EnvFile, NodeContext
from ascend_inference.errors import NodeFactError, Problem, StackError
from ascend_inference.images import probe_script
from ascend_inference.loaded import LoadedStack
from ascend_inference.peers import ping_targets
from ascend_inference.ranktable import DISCOVERED, SPOD_DISCOVERED, rank_table_for, rank_table_json, validate_rank_table
from ascend_inference.templating import render_template, wrap

Place = Literal["host", "container"]

# Where pyacl-install puts pyACL in the container (runbook 000's
# `--install-path=<install_path>`, which it leaves to the reader).
PYACL_INSTALL_PATH = "/usr/local/Ascend/pyACL"


@dataclass(frozen=True)
class Script:
    """One node script: `render --out` writes `text` to scripts/<name>.sh;
    the program runs `command` on the node's host over SSH."""

    name: str
    text: str
    place: Place
    # The container a "container" script runs in.
    container: str
    # An undo (a step's delete) of something in the container: see `wrap`.
    undo: bool = False

    @property
    def command(self) -> str:
        """The text as run from the host: as it is, or fed to `docker exec`."""
        return wrap(self.text, self.place, self.container, undo=self.undo)


@dataclass(frozen=True, kw_only=True)
class NodeScripts:
    """A node's scripts, in the order they run; None where the node has no
    such step (fix-tls off, no Ray, serving and smoke test on the master only)."""

    # Host provisioning (ascend-inference:host), each opt-in; they run before
    # the preflight, which then checks their result.
    install_driver: Script | None = None
    install_firmware: Script | None = None
    host_reboot: Script | None = None
    install_docker_runtime: Script | None = None
    fix_runc_owner: Script | None = None
    preflight: Script
    fix_tls: Script | None = None
    peer_ping: Script
    weights: Script
    # model.source huggingface: the download, on the master only.
    weights_download: Script | None = None
    image: Script
    # Always rendered; None only for a NodeScripts built by hand.
    image_check: Script | None = None
    container_name_free: Script
    mount_sources: Script | None = None
    # In the started container, before Ray or the engine (None: nothing to check or edit).
    pyacl_install: Script | None = None
    pyacl_remove: Script | None = None
    container_check: Script | None = None
    config_edit: Script | None = None
    config_restore: Script | None = None
    ray_start: Script | None = None
    ray_stop: Script | None = None
    ray_verify: Script | None = None
    # Read-only, at every preview and up (a node check): is the engine the start step ran still running?
    serve_alive: Script | None = None
    serve_start: Script | None = None
    serve_stop: Script | None = None
    serve_ready: Script | None = None
    smoke: Script | None = None

    def present(self) -> list[Script]:
        return [script for f in fields(self) if (script := getattr(self, f.name)) is not None]


@dataclass
class NodeRender:
    ctx: NodeContext
    env: EnvFile
    env_text: str
    container: ContainerSpec
    # Engine files: absolute path on the node -> content.
    files: dict[str, str]
    # Env variables whose values differ between nodes.
    per_node_variables: list[str]
    scripts: NodeScripts


def declared_device_ips(loaded: LoadedStack) -> dict[str, list[str]]:
    """Device IPs as declared, or placeholders that preflight fills in."""
    out = {}
    per_node = loaded.spec.profile.devices_per_node
    for node in loaded.spec.nodes:
        out[node.name] = list(node.device_ips) if node.device_ips else [
            DISCOVERED.format(device=d, node=node.name) for d in range(per_node)]
    return out


def node_context(loaded: LoadedStack, index: int) -> NodeContext:
    spec = loaded.spec
    return NodeContext(spec=spec, plan=loaded.plan, index=index, node=spec.nodes[index], stack=loaded.name,
                       rank_table_path=spec.engine_plugin.rank_table_path(spec))


def declared_super_pods(loaded: LoadedStack) -> dict[str, dict[str, Any]]:
    """Rank table 1.2 (Atlas A3) before preflight: placeholders for what
    `npu-smi info -t spod-info` prints on each node."""
    profile = loaded.spec.profile
    return {node.name: {
        # One placeholder for all: the servers of one stack are expected in one super pod.
        "super_pod_id": SPOD_DISCOVERED.format(what="Super Pod ID", npu=0, chip=0, node="each node"),
        "super_device_ids": [SPOD_DISCOVERED.format(what="SDID", npu=d // profile.chips_per_npu,
                                                    chip=d % profile.chips_per_npu, node=node.name)
                             for d in range(profile.devices_per_node)]} for node in loaded.spec.nodes}


def rank_table(loaded: LoadedStack, device_ips: dict[str, list[str]],
               super_pods: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    spec = loaded.spec
    engine = spec.engine_plugin
    if not engine.uses_rank_table:
        return None
    if loaded.brought_rank_table is not None:
        # network.rank_table_file: checked when the stack was loaded, and
        # against the found device IPs by the program.
        return loaded.brought_rank_table
    servers = [{"server_id": n.address, "device_ips": device_ips[n.name],
                "container_ip": n.container_ip or n.address} for n in spec.nodes]
    if spec.profile.rank_table_version == "1.2":
        pods = super_pods or declared_super_pods(loaded)
        for server, n in zip(servers, spec.nodes, strict=True):
            server.update(pods[n.name])
    options = engine.rank_table_options(spec)
    return rank_table_for(
        servers, spec.profile.devices_per_node, version=spec.profile.rank_table_version,
        with_container_ip=options.container_ip, device_port=options.device_port)


def check_rank_table(loaded: LoadedStack, table: dict[str, Any], source: str) -> list[Problem]:
    spec = loaded.spec
    return validate_rank_table(
        table, source=source, devices_per_node=spec.profile.devices_per_node,
        version=spec.profile.rank_table_version, server_count=len(spec.nodes),
        require_container_ip=spec.engine_plugin.rank_table_options(spec).container_ip)


# Long steps (the readiness wait, copies and downloads) print a progress line
# this often: pulumi-command shows a step's output while it runs, so these
# lines are what `pulumi up` shows during an hour-long wait.
PROGRESS_EVERY_S = 30
# How often the readiness wait asks the endpoint.
READY_POLL_S = 2


def render_node(loaded: LoadedStack, index: int, device_ips: dict[str, list[str]] | None = None) -> NodeRender:
    spec, plan = loaded.spec, loaded.plan
    engine = spec.engine_plugin
    ctx = node_context(loaded, index)
    device_ips = device_ips or declared_device_ips(loaded)
    env = engine.env(ctx)
    per_node = _per_node_variables(loaded, index)
    env_text = render_template("env.sh.j2", stack=loaded.name, node=ctx.node, engine_kind=engine.kind,
                               env=env, per_node_vars=per_node)
    container = engine.container(ctx)
    files = engine.files(ctx)
    common = {"stack": loaded.name, "node": ctx.node, "devices": spec.profile.devices_per_node,
              "remote_dir": ctx.remote_dir, "model_path": spec.model.path}
    scripts: dict[str, Script] = {}

    def script(name: str, purpose: str, place: Place = "host", template: str = "", undo: bool = False,
               **extra: Any) -> None:
        text = render_template(template or f"{name}.sh.j2", purpose=purpose, **common, **extra)
        scripts[name.replace("-", "_")] = Script(name, text, place, spec.container.name, undo)

    _host_scripts(loaded, script)
    # Atlas A3: the SDID, super pod and server index of every die (rank table 1.2).
    spod_chips = spec.profile.chips_per_npu if spec.profile.spod_info else 0
    script("preflight", "Preflight facts (read-only)", spod_chips=spod_chips, checks=spec.profile.network,
           gateway_policy=spec.network.gateway)
    if spec.network.fix_tls:
        script("fix-tls", "Set every NPU's HCCL TLS switch to 0")
    scripts["peer_ping"] = render_peer_ping(loaded, index, device_ips)
    script("weights", "Check the model weights", weights_mode=engine.weights_mode, manifest_name=MANIFEST_NAME)
    source = spec.model.source
    if source.kind == "huggingface" and ctx.is_master:
        script("weights-download", "Download the model weights", repo=source.repo, revision=source.revision,
               endpoint=source.endpoint or HF_ENDPOINT, python=source.python, manifest_name=MANIFEST_NAME,
               marker="ASCEND_INFERENCE_HUB", progress_every_s=PROGRESS_EVERY_S)
    fetched_once = image_fetched_once(loaded)
    script("image", "Make the container image present", image=spec.container.image,
           image_tar=spec.container.image_tar,
           # With image_url only the master fetches; the others copy its tar.
           image_url=spec.container.image_url if ctx.is_master else None,
           image_sha256=None if fetched_once and not ctx.is_master else spec.container.image_sha256,
           keep_tar=fetched_once and ctx.is_master,
           copied_from=spec.nodes[0].name if fetched_once and not ctx.is_master else None)
    script("image-check", "Read the image id and the engine and CANN versions in the image",
           image=spec.container.image, image_json=json.dumps(spec.container.image),
           node_json=json.dumps(ctx.node.name), probe=probe_script(engine.image_package))
    script("container-name-free", "Check that the container name is free", container_name=spec.container.name)
    script("mount-sources", "Check that every bind-mount source exists on the host",
           sources=mount_sources(container, ctx.remote_dir))
    checks = engine.container_checks(ctx)
    if checks.nnrt_run:
        script("pyacl-install", "Install pyACL from the nnrt .run where acl does not import", "container",
               nnrt_run=checks.nnrt_run, install_path=PYACL_INSTALL_PATH)
        script("pyacl-remove", "Remove the pyACL this stack installed", "container", undo=True,
               install_path=PYACL_INSTALL_PATH)
    if checks:
        script("container-check", "Check the container before anything starts in it", "container",
               acl=checks.acl, files_from_env=checks.files_from_env)
    edit = engine.config_edit(ctx)
    if edit is not None:
        script("config-edit", f"Edit the image's {edit.label} in place", "container", label=edit.label,
               target=edit.target, edits_file=edit.edits_file, source=config_edit_source())
        script("config-restore", f"Put the image's own {edit.label} back", "container", undo=True,
               label=edit.label, target=edit.target)
    if engine.uses_ray(spec):
        port = engine.ray_port(spec)
        script("ray-start", "Start Ray (head)" if ctx.is_master else "Join Ray", "container", head=ctx.is_master,
               ray_port=port, head_address=spec.nodes[0].address)
        script("ray-stop", "Stop Ray on this node", "container", undo=True)
        if ctx.is_master:
            script("ray-verify", "Verify the Ray cluster", "container", world_size=plan.world_size,
                   nodes=len(spec.nodes), timeout_s=300)
    serve = engine.serve(spec, plan, loaded.name)
    if serve.where == "every-node" or (serve.where == "head" and ctx.is_master):
        pre_start = engine.pre_start(ctx)
        run_dir = ctx.run_dir
        script("serve-start", f"Start {engine.kind}", "container", run_dir=run_dir, log_file=serve.log_file,
               workdir=serve.workdir, command=serve.per_node.get(ctx.node.name, serve.command),
               pre_start=pre_start)
        script("serve-stop", f"Stop {engine.kind}", "container", undo=True, run_dir=run_dir)
        script("serve-alive", f"Is the {engine.kind} this stack started still running (read-only)",
               run_dir=run_dir, container_name=spec.container.name)
        if ctx.is_master:
            script("serve-ready", f"Wait for {engine.kind} to answer", "container", run_dir=run_dir,
                   log_file=serve.log_file, ready=engine.readiness(spec), progress_every_s=PROGRESS_EVERY_S,
                   poll_s=READY_POLL_S)
    if ctx.is_master:
        script("smoke", "Smoke request", template=engine.smoke_template, smoke=engine.smoke_request(spec),
               **engine.smoke_context(spec))
    return NodeRender(ctx=ctx, env=env, env_text=env_text, container=container, files=files,
                      per_node_variables=per_node, scripts=NodeScripts(**scripts))


def serve_record_line(run_dir: str, said: str) -> str:
    """The host line the engine start runs first: it keeps `said`, what the
    node's liveness check (serve-alive) printed when the step was made, in
    the run directory, so that the check prints the same while the engine this
    start began runs (see serve-alive.sh.j2). The step's script carries the
    value, so a new value replaces the step."""
    record = shlex.quote(posixpath.join(run_dir, "serve.record"))
    return (f"mkdir -p {shlex.quote(run_dir)} && printf '%s\\n' {shlex.quote(said)} > {record} || exit 1"
            "  # what serve-alive said\n")


def mount_sources(container: ContainerSpec, stack_dir: str) -> list[str]:
    """The host paths of the container's bind mounts that must exist before
    `docker run`; named volumes and the stack's own directory (made by the
    stack's file steps) are left out."""
    return [m.host for m in container.mounts
            if not m.is_named_volume and m.host.rstrip("/") != stack_dir and not m.host.startswith(stack_dir + "/")]
# Runbook 001 §2.1: the driver first (`--upgrade`), then the firmware (`--full`).
HOST_PACKAGE_PARTS = (("driver", "/usr/local/Ascend/driver/version.info"),
                      ("firmware", "/usr/local/Ascend/firmware/version.info"))


def _host_scripts(loaded: LoadedStack, script: Any) -> None:
    """The opt-in host provisioning steps of `ascend-inference:host`."""
    host = loaded.spec.host
    for part, version_file in HOST_PACKAGE_PARTS:
        package = getattr(host.packages, part)
        if package:
            script(f"install-{part}", f"Install the NPU {part} {getattr(host, part)} if it is not",
                   template="install-host-package.sh.j2", part=part, package=package, want=getattr(host, part),
                   version_file=version_file)
    if host.allow_reboot and (host.packages.driver or host.packages.firmware):
        script("host-reboot", "Reboot the node if a driver or firmware install waits for it")
    if host.packages.docker_runtime:
        script("install-docker-runtime", "Install the Ascend docker runtime if docker lacks it",
               package=host.packages.docker_runtime)
    if host.fix_runc_owner:
        script("fix-runc-owner", "Give runc back to root:root if it is not")


def host_step_undo(loaded: LoadedStack, index: int, what: str) -> str:
    """The delete of a host provisioning step: it keeps what it installed."""
    return render_template("host-step-kept.sh.j2", purpose=f"Keep {what}", stack=loaded.name,
                           node=loaded.spec.nodes[index], what=what)


def config_edit_source() -> str:
    """The source of `ascend_inference.config_edit`, which config-edit.sh
    runs with the container's python3 (the module imports only the stdlib)."""
    return inspect.getsource(config_edit)


def render_peer_ping(loaded: LoadedStack, index: int, device_ips: dict[str, list[str]]) -> Script:
    """Node `index`'s peer-ping script: its peers (`peers.ping_targets`)
    with their device IPs; `device_ips` needs only those peers' entries."""
    spec = loaded.spec
    ctx = node_context(loaded, index)
    peers = [{"name": spec.nodes[j].name, "device_ips": device_ips[spec.nodes[j].name]}
             for j in ping_targets(len(spec.nodes), index)]
    text = render_template("peer-ping.sh.j2", purpose="Ping the peers' NPU device IPs", stack=loaded.name,
                           node=ctx.node, devices=spec.profile.devices_per_node, remote_dir=ctx.remote_dir,
                           model_path=spec.model.path, peers=peers)
    return Script("peer-ping", text, "host", spec.container.name)


# Beside the weights, in the model directory: `size sha256 path` per file
# (weights_hub.py writes it; the weights check reads it on every node).
MANIFEST_NAME = ".ascend-inference-manifest"
HF_ENDPOINT = "https://huggingface.co"


def render_weights_copy(loaded: LoadedStack, index: int, master_weights: dict[str, Any], *,
                        progress_every_s: int = PROGRESS_EVERY_S) -> Script:
    """Node `index`'s copy of the weights from the master, from what the
    master's weights check printed (`disk_bytes`, `fingerprint`)."""
    spec = loaded.spec
    master = spec.nodes[0]
    login = f"{master.user or spec.ssh.user}@{master.address or master.host}"
    text = render_template(
        "weights-copy.sh.j2", purpose="Copy the model weights from the master", stack=loaded.name,
        node=spec.nodes[index], master=master, model_path=spec.model.path,
        model_path_slash=spec.model.path.rstrip("/") + "/", needed_bytes=int(master_weights["disk_bytes"]),
        master_fingerprint=master_weights["fingerprint"], master_login=login,
        master_port=master.port or spec.ssh.port, progress_every_s=progress_every_s,
        **_master_key(loaded))
    return Script("weights-copy", text, "host", spec.container.name)


def _master_key(loaded: LoadedStack) -> dict[str, Any]:
    """The master's pinned host key for the node-to-master copies (None:
    the stack opted out of host keys; `pulumi up` refuses a stack that
    neither pins nor opts out)."""
    from ascend_inference.host_keys import MASTER_ALIAS

    spec = loaded.spec
    key = None if spec.ssh.insecure_ignore_host_keys else spec.nodes[0].host_key
    return {"master_host_key": key, "master_alias": MASTER_ALIAS}


def image_fetched_once(loaded: LoadedStack) -> bool:
    """container.image_url on a stack of more than one node: the master
    fetches the tar and every other node copies it from the master."""
    return loaded.spec.container.image_url is not None and len(loaded.spec.nodes) > 1


def render_image_copy(loaded: LoadedStack, index: int, master_image: dict[str, Any], *,
                      progress_every_s: int = PROGRESS_EVERY_S) -> Script:
    """Node `index`'s copy of the image tar from the master, from what the
    master's image step printed (`tar_bytes`, `tar_sha256`)."""
    spec = loaded.spec
    master = spec.nodes[0]
    missing = [key for key in ("tar_bytes", "tar_sha256") if key not in master_image]
    if missing:
        # Not from this program's image step (whose changed script redoes it
        # before any copy reads it): say so rather than copy blind.
        raise NodeFactError(master.name, "image tar", f"{master.name}-image printed no {', '.join(missing)}",
                            f"pulumi up --replace the {master.name}-image step")
    login = f"{master.user or spec.ssh.user}@{master.address or master.host}"
    text = render_template(
        "image-copy.sh.j2", purpose="Copy the image tar from the master", stack=loaded.name,
        node=spec.nodes[index], master=master, image=spec.container.image, image_tar=spec.container.image_tar,
        tar_bytes=int(master_image["tar_bytes"]), tar_sha256=str(master_image["tar_sha256"]),
        sha256_from="container.image_sha256" if spec.container.image_sha256 else f"the tar on {master.name}",
        master_login=login, master_port=master.port or spec.ssh.port, progress_every_s=progress_every_s,
        **_master_key(loaded))
    return Script("image-copy", text, "host", spec.container.name)


def _per_node_variables(loaded: LoadedStack, index: int) -> list[str]:
    """Env variables whose values differ between nodes (all others must match)."""
    engine = loaded.spec.engine_plugin
    if len(loaded.spec.nodes) < 2:
        return []
    mine = engine.env(node_context(loaded, index)).as_dict()
    other = engine.env(node_context(loaded, 1 if index == 0 else 0)).as_dict()
    return sorted(k for k in mine if mine.get(k) != other.get(k))


def plan_document(loaded: LoadedStack) -> dict[str, Any]:
    spec, plan = loaded.spec, loaded.plan
    engine = spec.engine_plugin
    doc = {
        "stack": loaded.name,
        "stack_file": loaded.file,
        "engine": engine.kind,
        "hardware": spec.hardware.profile,
        "model": {"name": spec.model.name, "path": spec.model.path, "quantization": spec.model.quantization},
        **plan.to_json(),
        "nodes": [{"name": n.name, "host": n.host, "ip": n.address, "role": "master" if i == 0 else "worker"}
                  for i, n in enumerate(spec.nodes)],
        "endpoint": engine.endpoint(spec),
        "rank_table_path": engine.rank_table_path(spec),
        "cluster": engine.cluster_style_for(spec).value,
    }
    doc["node_count"] = doc.pop("nodes_count", plan.nodes)
    return doc


# Written last into every render's directory: the render's own id (the
# digest of what it wrote) and every file it wrote. `render --out DIR` replaces DIR only when this file is there
# and DIR holds nothing it does not list, so it never deletes what it did not write.
RENDER_MARKER = ".ascend-inference-render.json"


def foreign_content(out_dir: Path) -> str | None:
    """Why `out_dir` may not be replaced by a render, or None: it is missing
    or empty, or exactly what an earlier render wrote (its marker's list)."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return None
    marker = out_dir / RENDER_MARKER
    try:
        listed = set(json.loads(marker.read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"has content and no {RENDER_MARKER} of an earlier render"
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_symlink() or (not path.is_dir() and rel not in listed and rel != RENDER_MARKER):
            return f"holds {rel}, which no earlier render wrote"
    return None


def render_stack(loaded: LoadedStack, out_dir: Path) -> list[Path]:
    """Write plan.json, rank_table.json (when used) and DIR/<node>/...; return
    the files written. Writes into a temp dir first, so a failure leaves
    nothing half-written."""
    out_dir = Path(out_dir)
    foreign = foreign_content(out_dir)
    if foreign is not None:
        raise StackError([Problem(str(out_dir), "render --out", foreign,
                                  "pass a new or empty directory, or one an earlier render wrote")])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=out_dir.parent))
    try:
        written = _write_all(loaded, staging)
        marker = staging / RENDER_MARKER
        files = [p.relative_to(staging).as_posix() for p in written]
        # The id is the digest of what was written, so equal renders are
        # byte-for-byte equal, marker included.
        content = hashlib.sha256()
        for rel, path in zip(files, written, strict=True):
            content.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        marker.write_text(json.dumps({"render_id": content.hexdigest()[:32], "stack": loaded.name,
                                      "files": files}, indent=1) + "\n", encoding="utf-8")
        written.append(marker)
        staging.chmod(0o755)  # mkdtemp makes it 0700
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / p.relative_to(staging) for p in written]


def _write_all(loaded: LoadedStack, root: Path) -> list[Path]:
    written: list[Path] = []

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        # Node paths come from the stack: normalised, and confined to the
        # output directory whatever they hold (the spec refuses `..` too).
        normal = posixpath.normpath("/" + rel).lstrip("/")
        if not normal or normal.startswith("../") or normal != rel.lstrip("/") or normal == RENDER_MARKER:
            raise StackError([Problem(loaded.file, "(render)", f"the rendered path {rel!r} is not a plain path "
                                      "inside the output directory", "write the stack's node paths as absolute "
                                      "paths without `..` or `.`")])
        path = root / normal
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        written.append(path)

    put("plan.json", json.dumps(plan_document(loaded), indent=2) + "\n")
    ips = declared_device_ips(loaded)
    table = rank_table(loaded, ips)
    if table is not None:
        # 640 as runbook 001 requires on the nodes.
        put("rank_table.json", rank_table_json(table), 0o640)
    for index, node in enumerate(loaded.spec.nodes):
        rendered = render_node(loaded, index, ips)
        base = node.name
        put(f"{base}/env.sh", rendered.env_text, 0o600)
        put(f"{base}/docker-run.sh", "#!/usr/bin/env bash\n# Equivalent of the container resource.\n"
            + rendered.container.docker_run_line() + "\n", 0o755)
        for path, content in rendered.files.items():
            put(f"{base}/files{path}", content)
        for script in rendered.scripts.present():
            put(f"{base}/scripts/{script.name}.sh", script.text, 0o755)
        if table is not None:
            put(f"{base}/files{loaded.spec.engine_plugin.rank_table_path(loaded.spec)}", rank_table_json(table), 0o640)
    return written
