"""Components between the nodes and the serving process: model weights, peer
checks with the one cross-node gate, the rank table and the containers.

Cross-node data flows through one step, `cluster-verified` on the master:
it takes every node's facts and the weights fingerprint, and what it
recorded (`verified_device_ips`, the record by value, without the resources
it came from) is what the rank-table copies read, after the gate. So each
copy depends on that one step rather than on every node, and the graph
(which the Pulumi SDK walks once for every dependency it registers) grows
linearly with the node count."""
from __future__ import annotations

import base64
import json
import lzma
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from ascend_inference.container import ContainerSpec
from ascend_inference.errors import NodeFactError
from ascend_inference.facts import check_cluster, raise_first, super_pods_of
from ascend_inference.ranktable import rank_table_digest
from ascend_inference.spec import Node
from ascend_inference.templating import render_template
from components.common import TOKEN, after, by_value, clearly, copy_from_master, digest, node_check, remote_step
from components.images import PreparedImage
from components.node import AscendNode


@dataclass(frozen=True)
class ModelWeightsArgs:
    nodes: list[AscendNode]
    # The weights check, one script per node in node order.
    scripts: list[str]
    # model.source: local (already on every node), copy (from the master) or
    # huggingface (downloaded on the master, then copied).
    source: str = "local"
    # huggingface: the master's download script, and its stdin (the hub
    # token's line, a secret; "\n" without a token).
    download_script: str | None = None
    download_stdin: pulumi.Input[str] | None = None
    # copy, huggingface: node index and the master's check output -> that
    # node's copy script; the SSH key the copy loads into its ssh-agent.
    copy_script: Callable[[int, dict[str, Any]], str] | None = None
    ssh_private_key: pulumi.Input[str] | None = None


class ModelWeights(pulumi.ComponentResource):
    """The weights exist at the same path on every node with the same files
    (a fingerprint of names and sizes, and of the manifest when there is
    one), with the runbook's permissions (MindIE: 750), no git-lfs pointer
    file and no file shorter than the manifest says.

    With `model.source` `huggingface` the master downloads them first
    (`<master>-weights-download`); with `copy` or `huggingface` every other
    node pulls them from the master (`<node>-weights-copy`, after the
    master's check, sized by it) before its own check. The weights are never
    deleted by the program: destroying a stack leaves them in place."""

    def __init__(self, name: str, args: ModelWeightsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:model:ModelWeights", name, None, opts)
        master = args.nodes[0]
        self.download: remote.Command | None = None
        self.copies: list[remote.Command] = []
        if args.source == "huggingface":
            assert args.download_script is not None, "a hub source renders the master's download"
            self.download = remote_step(
                f"{master.node.name}-weights-download", connection=master.connection, create=args.download_script,
                parent=self, depends_on=[master.preflight], stdin=args.download_stdin, timeout="1440m",
                retain_on_delete=True)
        fanning_out = args.source in ("copy", "huggingface")
        master_check = remote_step(
            f"{master.node.name}-weights", connection=master.connection, create=args.scripts[0], parent=self,
            depends_on=[master.preflight, *([self.download] if self.download else [])], timeout="30m",
            retain_on_delete=True, triggers=[self.download.id] if self.download else None)
        self.checks = [master_check]

        def copy_for(i: int) -> Callable[[str], str]:
            assert args.copy_script is not None, "a fanned-out source renders the copies"
            render = args.copy_script
            return lambda stdout: render(i, json.loads(stdout.strip().splitlines()[-1]))

        for i, (node, script) in enumerate(zip(args.nodes[1:], args.scripts[1:], strict=True), start=1):
            after: list[pulumi.Resource] = [node.preflight]
            triggers = None
            if fanning_out:
                copy = copy_from_master(
                    f"{node.node.name}-weights-copy", node.connection, master_check.stdout.apply(copy_for(i)),
                    after=[node.preflight], ssh_private_key=args.ssh_private_key, parent=self)
                self.copies.append(copy)
                after.append(copy)
                # A new copy is checked again.
                triggers = [copy.id]
            self.checks.append(remote_step(
                f"{node.node.name}-weights", connection=node.connection, create=script, parent=self,
                depends_on=after, timeout="30m", retain_on_delete=True, triggers=triggers))

        def same_everywhere(outputs: list) -> str:
            prints = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
            first = prints[0]
            for other in prints[1:]:
                mine = (other["fingerprint"], other["files"], other["bytes"])
                if mine != (first["fingerprint"], first["files"], first["bytes"]):
                    raise NodeFactError(other["node"], "model weights",
                                        f"{other['path']} has {other['files']} files / {other['bytes']} bytes, "
                                        f"{first['node']} has {first['files']} files / {first['bytes']} bytes",
                                        "copy the same weights to every node (rsync from the master)")
            return first["fingerprint"]

        self.fingerprint = pulumi.Output.all(*[c.stdout for c in self.checks]).apply(clearly(same_everywhere))
        self.register_outputs({"fingerprint": self.fingerprint})


@dataclass(frozen=True)
class PeerCheckArgs:
    stack: str
    nodes: list[AscendNode]
    # Per node, the indices of the peers it pings (`ascend_inference.peers`);
    # all empty when the stack turns the pings off or has one node.
    ping_targets: list[list[int]]
    # Node index and {peer name: device IPs} -> that node's peer-ping script.
    ping_script: Callable[[int, dict[str, list[str]]], str]
    weights: ModelWeights
    # Where the gate records what it verified, on the master.
    record_path: str
    # Every node's checked image facts (components/images.py), recorded by
    # the gate too, so what waits for the gate waits for the image check.
    images: pulumi.Output | None = None


class PeerCheck(pulumi.ComponentResource):
    """After every preflight: ping the peers' NPU device IPs from each node
    (`hccn_tool -ping`; which peers: `ascend_inference.peers`), then one gate
    on the master, `cluster-verified`, that refuses cross-node contradictions
    (duplicate hostnames, differing versions or TLS switches, a device IP used
    twice) and records the verified device IPs and weights fingerprint in
    `<remote_dir>/<stack>/cluster-verified.json`. The ping is the check whose
    absence turns a wrong IP into a 7200 s HCCL timeout; later steps wait for
    the gate alone."""

    def __init__(self, name: str, args: PeerCheckArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:cluster:PeerCheck", name, None, opts)
        nodes = args.nodes
        # Each node's ping output, at every preview and up (node checks, no resources).
        self.pings: list[pulumi.Output[str]] = []

        def ping_script(i: int, names: list[str]) -> Callable[[list[Any]], str]:
            """Node i's ping script from its peers' device IPs (in `names` order),
            once its own facts (the first value) have been judged."""
            return lambda values: args.ping_script(i, dict(zip(names, values[1:], strict=True)))

        for index, (node, targets) in enumerate(zip(nodes, args.ping_targets, strict=True)):
            if not targets:
                continue
            # Only the pinged peers' facts: a ping depends on a bounded number
            # of nodes, not on the whole cluster. Its own facts come first, so a
            # link its preflight finds down is reported as that, never as a
            # peer's failed ping.
            peers = [nodes[j] for j in targets]
            script = pulumi.Output.all(node.facts, *[p.device_ips for p in peers]).apply(
                ping_script(index, [p.node.name for p in peers]))
            # The wait the script's data already implies, said in depends_on
            # too: the recorder reads which checks a ping waited for there.
            self.pings.append(node_check(f"{node.node.name}-peer-ping", node=node.node.name,
                                         connection=node.connection, script=script, parent=self,
                                         depends_on=[node.preflight, *[p.preflight for p in peers]]))

        def cross_checked(all_facts: list) -> dict:
            raise_first(check_cluster(all_facts))
            return {f.node: f.device_ips() for f in all_facts}

        all_facts = pulumi.Output.all(*[n.facts for n in nodes])
        device_ips = all_facts.apply(clearly(cross_checked))
        # Atlas A3: each die's SDID and the super pod (rank table 1.2); None elsewhere,
        # and then the record is what it always was.
        super_pods = all_facts.apply(super_pods_of)
        images = args.images if args.images is not None else pulumi.Output.from_input(None)

        def record_text(v: list[Any]) -> str:
            verified = {"device_ips": v[0], "weights_fingerprint": v[1]}
            if v[2] is not None:
                verified["super_pods"] = v[2]
            if v[3] is not None:
                verified["images"] = v[3]
            return json.dumps(verified, indent=2, sort_keys=True) + "\n"

        record = pulumi.Output.all(device_ips, args.weights.fingerprint, super_pods, images).apply(record_text)
        master = nodes[0]
        install = record.apply(lambda text: render_template(
            "install-file.sh.j2", purpose="Record the verified cluster facts", stack=args.stack, node=master.node,
            path=args.record_path, content=text, mode="600"))
        remove = render_template("remove-file.sh.j2", purpose="Remove the verified cluster facts", stack=args.stack,
                                 node=master.node, path=args.record_path)
        # The record is also the gate's last trigger, so that what it verified
        # can be read back from the gate's own output (below): a reader of it
        # then depends on this one step, not on every node.
        self.verified = remote_step(
            "cluster-verified", connection=master.connection, create=install, delete=remove, parent=self,
            # Every check it records (facts, pings, images) in depends_on too,
            # though the record's data already waits for them: the offline
            # recorder reads a step's checks from depends_on.
            triggers=[record], depends_on=[*[n.preflight for n in nodes], *[after(ping) for ping in self.pings],
                                           *([after(args.images)] if args.images is not None else [])])
        # What the gate verified, by value: its readers wait for the gate
        # (depends_on) and take the record itself, so a gate rewritten with the
        # same facts (a new install script) redoes none of them. One Output
        # without resources: a reader depends on no node's step.
        verified = by_value(record.apply(json.loads))
        self.verified_device_ips = verified.apply(lambda v: v["device_ips"])
        self.verified_super_pods = verified.apply(lambda v: v.get("super_pods"))
        # {node: {image, id, engine_version, cann_version}}, as the gate verified them.
        self.verified_images = verified.apply(lambda v: v.get("images", {}))
        self.register_outputs({"device_ips": self.verified_device_ips})


# Beyond this size (a rank table of about 40 nodes of 8 NPUs) a file goes to
# the nodes xz-compressed: 1,000 nodes' table is 1.7 MB of JSON, 32 KB so
# (base64 included; 73 KB with gzip, whose copies in flight made the peak
# of a 1,000-node preview).
COMPRESS_ABOVE = 64 * 1024


def install_script(text: str, *, purpose: str, stack: str, node: Node | None, path: str, mode: str) -> str:
    """The script that writes `text` to `path` on the node (on any node for
    `node=None`), atomically."""
    if len(text) <= COMPRESS_ABOVE:
        return render_template("install-file.sh.j2", purpose=purpose, stack=stack, node=node, path=path,
                               content=text, mode=mode)
    return render_template("install-file-xz.sh.j2", purpose=purpose, stack=stack, node=node, path=path,
                           content_xz_base64=_packed(text), mode=mode)


def _packed(text: str) -> str:
    """xz+base64. The .xz format holds no time stamp: the same text gives the
    same script, so nothing is redone for nothing. Preset 6 (xz's default):
    0.24 s for 1,000 nodes' table; 9e packs a quarter smaller in ten times that."""
    return base64.encodebytes(lzma.compress(text.encode(), preset=6)).decode()


@dataclass(frozen=True)
class RankTableArgs:
    stack: str
    nodes: list[AscendNode]
    # Read back from the `cluster-verified` gate.
    device_ips: pulumi.Output
    # Device IPs (and, for rank table 1.2, the super pods) -> the checked
    # rank-table JSON (raises NodeFactError).
    table_json: Callable[..., str]
    path: str
    # Rank table 1.2 (Atlas A3): each node's SDIDs and super pod, read back
    # from the same gate.
    super_pods: pulumi.Output | None = None
    # The `cluster-verified` gate: the values above come by value (without
    # it), so each copy waits for it with depends_on.
    gate: pulumi.Resource | None = None


class RankTable(pulumi.ComponentResource):
    """One HCCL rank table, from the plan and the verified device IPs,
    written atomically with mode 640 to the same path on every node; replaced
    when its digest changes."""

    def __init__(self, name: str, args: RankTableArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:ranktable:RankTable", name, None, opts)
        if args.super_pods is None:
            self.content = args.device_ips.apply(clearly(args.table_json))
        else:
            self.content = pulumi.Output.all(args.device_ips, args.super_pods).apply(
                clearly(lambda v: args.table_json(v[0], v[1])))
        self.digest = self.content.apply(lambda text: rank_table_digest(json.loads(text)))
        self.path = args.path
        self.copies: list[remote.Command] = []

        # One script for every node (its text names no node): rendered and
        # packed once, and the offline preview's records keep one copy of it
        # (`ascendctl/preview/sdk.py`, `_shared`) instead of one per node.
        script = self.content.apply(lambda text: install_script(
            text, purpose="Install the HCCL rank table", stack=args.stack, node=None, path=args.path, mode="640"))
        # Its undo names no node either, for the same reason: it rides on the
        # same stdin (`remote_step`), which every node's copy then shares.
        remove = render_template("remove-file.sh.j2", purpose="Remove the HCCL rank table", stack=args.stack,
                                 node=None, path=args.path)
        for node in args.nodes:
            # The content is the gate's record by value: the gate itself is waited for here.
            self.copies.append(remote_step(
                f"{node.node.name}-rank-table", connection=node.connection, create=script, delete=remove,
                parent=self, triggers=[self.digest], depends_on=[args.gate] if args.gate is not None else None))
        self.register_outputs({"digest": self.digest, "path": args.path})


@dataclass(frozen=True)
class HostFile:
    path: str
    content: str
    # Directories its undo removes (the env file's: the run directory)...
    remove_dirs: list[str] = field(default_factory=list)
    # ...and those it removes when they are left empty.
    prune_dirs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ContainerStep:
    """A step run inside the started container before Ray or the engine
    starts there (pyacl-install, container-check, config-edit). It prints one JSON line;
    `judge` raises NodeFactError on it, which stops the rollout there."""

    role: str
    create: str
    judge: Callable[[str], None]
    delete: str | None = None
    # What the step reads besides its script (MindIE's edits, one line each),
    # as triggers: a change redoes the step.
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class InferenceContainerArgs:
    stack: str
    node: AscendNode
    # The env file first, then the engine's files; all mounted read-only.
    env_file: HostFile
    files: list[HostFile]
    container: ContainerSpec
    image: str
    # Runbook 001: `docker load -i <tar>` by this script instead of a pull.
    image_load_script: str | None
    name_check_script: str
    # `ssh://user@host:port` and ssh options for the per-node docker provider.
    docker_host: str
    ssh_opts: list[str]
    # Cluster-wide steps the container waits for (the gate, the node's rank-table copy).
    after: list[pulumi.Resource]
    # Redo the container when these change.
    extra_labels: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    # Secret values for ContainerSpec.secret_args (GPUStack's token).
    secrets: dict[str, pulumi.Output] = field(default_factory=dict)
    # Secret values for ContainerSpec.secret_env, by config key (engine.secret_env).
    secret_env: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    # The provider and image made by components/images.py (otherwise made here).
    prepared: PreparedImage | None = None
    # Checks that every bind-mount source exists on the host, before `docker run`.
    mount_check_script: str | None = None
    # In the started container, in order, before anything else runs there.
    steps: list[ContainerStep] = field(default_factory=list)


class InferenceContainer(pulumi.ComponentResource):
    """The runbook's `docker run`, as a pulumi_docker Container on a
    per-node Provider over `ssh://`. The env file and the engine's files are
    installed on the host first (mounted read-only); their digest is a label,
    so an env change recreates the container, and with it Ray."""

    def __init__(self, name: str, args: InferenceContainerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:container:InferenceContainer", name, None, opts)
        node = args.node
        self.env_digest = digest(args.env_file.content)
        self.files = []
        by_path = sorted([args.env_file, *args.files], key=lambda f: f.path)
        for n, file in enumerate(by_path):
            # The env file may hold anything the stack's env says: root's only;
            # the engine's other files are read by root in the container.
            mode = "600" if file is args.env_file else "640"
            script = render_template("install-file.sh.j2", purpose=f"Install {file.path}", stack=args.stack,
                                     node=node.node, path=file.path, content=file.content, mode=mode)
            # The env file goes last on destroy (everything else needs it), so
            # its undo also removes the run directory and the emptied stack dir.
            remove = render_template("remove-file.sh.j2", purpose=f"Remove {file.path}", stack=args.stack,
                                     node=node.node, path=file.path, remove_dirs=file.remove_dirs,
                                     prune_dirs=file.prune_dirs)
            role = "env" if file is args.env_file else f"file-{n}"
            self.files.append(remote_step(
                f"{name}-{role}", connection=node.connection, create=script, delete=remove, parent=self,
                depends_on=[node.preflight]))
        self.image: remote.Command | docker.RemoteImage
        image_ref: pulumi.Input[str]
        if args.prepared is not None:
            # Made and checked before the cluster gate (components/images.py).
            self.provider, self.image = args.prepared.provider, args.prepared.image
            image_ref = args.prepared.image_ref
        else:
            self.provider = docker.Provider(
                f"{name}-docker", host=args.docker_host, ssh_opts=args.ssh_opts,
                opts=pulumi.ResourceOptions(parent=self))
            if args.image_load_script is not None:
                # The image stays on the node on destroy.
                self.image = remote_step(f"{name}-image", connection=node.connection,
                                         create=args.image_load_script, parent=self, depends_on=[node.preflight],
                                         timeout="60m", retain_on_delete=True)
                image_ref = args.image
            else:
                remote_image = docker.RemoteImage(
                    f"{name}-image", name=args.image, keep_locally=True,
                    opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[node.preflight],
                                                custom_timeouts=pulumi.CustomTimeouts(create="60m")))
                self.image = remote_image
                # The image id input carries the dependency.
                image_ref = remote_image.image_id
        waits: list[pulumi.Resource] = [self.image] if isinstance(self.image, remote.Command) else []
        cspec = args.container
        docker_args = cspec.pulumi_docker_args()
        docker_args["image"] = image_ref
        labels = {"ascend-inference/stack": args.stack, "ascend-inference/env-sha256": self.env_digest,
                  **args.extra_labels}
        docker_args["labels"] = [docker.ContainerLabelArgs(label=k, value=v) for k, v in labels.items()]
        docker_args["devices"] = [docker.ContainerDeviceArgs(**d) for d in docker_args["devices"]]
        docker_args["volumes"] = [docker.ContainerVolumeArgs(**v) for v in docker_args["volumes"]]
        if cspec.secret_env:
            # NAME=<secret>: the value stays a secret input of the container,
            # in no file on the node and masked in every printout.
            docker_args["envs"] = [*docker_args["envs"],
                                   *[pulumi.Output.concat(name, "=", args.secret_env[key])
                                     for name, key in cspec.secret_env]]
        if cspec.secret_args:
            docker_args["command"] = [args.secrets[cspec.secret_args[a]] if a in cspec.secret_args else a
                                      for a in cspec.command]
        self.name_check = remote_step(
            f"{name}-name-free", connection=node.connection, create=args.name_check_script, parent=self,
            depends_on=[node.preflight])
        if args.mount_check_script is not None:
            # After everything the stack installs on the host (the files, the
            # rank table through `after`), so only what it does not make is missing.
            waits.append(remote_step(
                f"{name}-mounts", connection=node.connection, create=args.mount_check_script, parent=self,
                depends_on=[node.preflight, *self.files, *args.after]))
        self.container = docker.Container(
            f"{name}-container", **docker_args,
            opts=pulumi.ResourceOptions(
                parent=self, provider=self.provider,
                depends_on=[*self.files, *waits, self.name_check, *args.after],
                # The name and host ports are fixed: the old container must go first.
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create="20m")))
        # The in-container steps, one after another. What runs in the
        # container later (Ray, serving, GPUStack's readers) takes
        # `container_id`, which passes only once every step's report is
        # judged good: a bad container stops the rollout here, before them.
        self.steps: list[remote.Command] = []
        for step in args.steps:
            self.steps.append(remote_step(
                f"{name}-{step.role}", connection=node.connection, create=step.create, delete=step.delete,
                parent=self, triggers=[self.container.id, *step.reads], depends_on=self.steps[-1:],
                timeout="10m"))
        if self.steps:
            judges = [step.judge for step in args.steps]

            def judged(values: list) -> str:
                container_id, *reports = values
                for judge, report in zip(judges, reports, strict=True):
                    judge(report)
                return container_id

            self.container_id = pulumi.Output.all(self.container.id, *[c.stdout for c in self.steps]).apply(
                clearly(judged))
        else:
            self.container_id = self.container.id
        self.register_outputs({"container_id": self.container_id, "env_digest": self.env_digest})
