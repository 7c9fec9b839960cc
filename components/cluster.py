"""Components between the nodes and the serving process: peer checks, model
weights, the rank table and the containers."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from ascend_inference.container import ContainerSpec
from ascend_inference.errors import NodeFactError
from ascend_inference.facts import check_cluster, raise_first
from ascend_inference.ranktable import rank_table_digest, rank_table_json
from ascend_inference.render import LoadedStack, check_rank_table, rank_table, render_node, render_template
from components.common import TOKEN, clearly, digest, remote_step
from components.node import AscendNode, facts_from_json


class PeerCheck(pulumi.ComponentResource):
    """After every preflight: refuse cross-node contradictions (duplicate
    hostnames, differing versions or TLS switches, a device IP used twice),
    then ping every peer's NPU device IPs from each node (`hccn_tool -ping`).
    This is the check whose absence turns a wrong IP into a 7200 s HCCL
    timeout."""

    def __init__(self, name: str, loaded: LoadedStack, nodes: list[AscendNode],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:cluster:PeerCheck", name, None, opts)

        def cross_checked(all_facts: list) -> dict:
            raise_first(check_cluster([facts_from_json(f) for f in all_facts]))
            return {f["node"]: [d["ip"] for d in f["devices"]] for f in all_facts}

        self.device_ips = pulumi.Output.all(*[n.facts for n in nodes]).apply(clearly(cross_checked))
        self.pings = []
        if loaded.spec.network.ping_peers and len(nodes) > 1:
            for index, node in enumerate(nodes):
                script = self.device_ips.apply(
                    lambda ips, i=index: render_node(loaded, i, ips).scripts.peer_ping.command)
                self.pings.append(remote_step(
                    f"{node.node.name}-peer-ping", connection=node.connection, create=script, parent=self,
                    timeout="10m", every_up=True))
        self.register_outputs({"device_ips": self.device_ips})

    def gate(self, loaded: LoadedStack, master: AscendNode, weights: "ModelWeights") -> pulumi.Resource:
        """One step that waits for every node's checks and records what was
        verified on the master (`<remote_dir>/<stack>/cluster-verified.json`).
        Later steps wait for it alone, so the graph has O(nodes) edges here
        instead of every container waiting for every node's checks."""
        path = f"{loaded.spec.paths.remote_dir}/{loaded.name}/cluster-verified.json"
        content = pulumi.Output.all(self.device_ips, weights.fingerprint).apply(
            lambda v: json.dumps({"device_ips": v[0], "weights_fingerprint": v[1]}, indent=2, sort_keys=True) + "\n")
        script = content.apply(lambda text: render_template(
            "install-file.sh.j2", purpose="Record the verified cluster facts", stack=loaded.name, node=master.node,
            path=path, content=text, mode="644"))
        remove = render_template("remove-file.sh.j2", purpose="Remove the verified cluster facts", stack=loaded.name,
                                 node=master.node, path=path)
        self.verified = remote_step(
            "cluster-verified", connection=master.connection, create=script, delete=remove, parent=self,
            depends_on=[*self.pings, *weights.checks])
        return self.verified


class ModelWeights(pulumi.ComponentResource):
    """The weights exist at the same path on every node with the same files
    (a fingerprint of names and sizes), with the runbook's permissions
    (MindIE: 750). The weights themselves are never created nor deleted by
    the program: destroying a stack leaves them in place."""

    def __init__(self, name: str, loaded: LoadedStack, nodes: list[AscendNode],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:model:ModelWeights", name, None, opts)
        self.checks = []
        for index, node in enumerate(nodes):
            script = render_node(loaded, index).scripts.weights.command
            self.checks.append(remote_step(
                f"{node.node.name}-weights", connection=node.connection, create=script, parent=self,
                depends_on=[node.preflight], timeout="30m", retain_on_delete=True))

        def same_everywhere(outputs: list) -> str:
            prints = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
            first = prints[0]
            for other in prints[1:]:
                if (other["fingerprint"], other["files"], other["bytes"]) != (first["fingerprint"], first["files"], first["bytes"]):
                    raise NodeFactError(other["node"], "model weights",
                                        f"{other['path']} has {other['files']} files / {other['bytes']} bytes, "
                                        f"{first['node']} has {first['files']} files / {first['bytes']} bytes",
                                        "copy the same weights to every node (rsync from the master)")
            return first["fingerprint"]

        self.fingerprint = pulumi.Output.all(*[c.stdout for c in self.checks]).apply(clearly(same_everywhere))
        self.register_outputs({"fingerprint": self.fingerprint})


class RankTable(pulumi.ComponentResource):
    """One HCCL rank table, from the plan and the discovered device IPs,
    written atomically with mode 640 to the same path on every node; replaced
    when its digest changes."""

    def __init__(self, name: str, loaded: LoadedStack, nodes: list[AscendNode], device_ips: pulumi.Output,
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:ranktable:RankTable", name, None, opts)
        path = loaded.spec.engine_plugin.rank_table_path(loaded.spec)

        def table_for(ips: dict) -> str:
            table = rank_table(loaded, ips)
            problems = check_rank_table(loaded, table, f"rank table for stack {loaded.name}")
            if problems:
                raise NodeFactError(nodes[0].node.name, "rank table", "; ".join(str(p) for p in problems))
            return rank_table_json(table)

        self.content = device_ips.apply(clearly(table_for))
        self.digest = self.content.apply(lambda text: rank_table_digest(json.loads(text)))
        self.path = path
        self.copies = []
        for node in nodes:
            script = self.content.apply(lambda text, n=node.node: render_template(
                "install-file.sh.j2", purpose="Install the HCCL rank table", stack=loaded.name, node=n,
                path=path, content=text, mode="640"))
            remove = render_template("remove-file.sh.j2", purpose="Remove the HCCL rank table", stack=loaded.name,
                                     node=node.node, path=path)
            self.copies.append(remote_step(
                f"{node.node.name}-rank-table", connection=node.connection, create=script, delete=remove,
                parent=self, triggers=[self.digest], depends_on=after))
        self.register_outputs({"digest": self.digest, "path": path})


@dataclass
class ContainerInputs:
    """What an InferenceContainer needs beyond the rendered node."""

    after: list[pulumi.Resource]
    # Redo the container when these change (e.g. the rank table digest for engines that read it at start).
    extra_labels: Optional[dict] = None
    # Secret values for ContainerSpec.secret_args (GPUStack's token).
    secrets: Optional[dict[str, pulumi.Output]] = None


class InferenceContainer(pulumi.ComponentResource):
    """The runbook's `docker run`, as a pulumi_docker Container on a
    per-node Provider over `ssh://`. The env file and the engine's files are
    installed on the host first (mounted read-only); their digest is a label,
    so an env change recreates the container, and with it Ray."""

    def __init__(self, name: str, loaded: LoadedStack, node: AscendNode, index: int, inputs: ContainerInputs,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:container:InferenceContainer", name, None, opts)
        spec = loaded.spec
        rendered = render_node(loaded, index)
        cspec: ContainerSpec = rendered.container
        remote_dir = rendered.ctx.remote_dir
        files = {f"{remote_dir}/env.sh": rendered.env_text, **rendered.files}
        self.env_digest = digest(rendered.env_text)
        self.files = []
        for n, (path, content) in enumerate(sorted(files.items())):
            script = render_template("install-file.sh.j2", purpose=f"Install {path}", stack=loaded.name,
                                     node=node.node, path=path, content=content, mode="644")
            is_env = path == f"{remote_dir}/env.sh"
            # The env file goes last on destroy (everything else needs it), so
            # its undo also removes the run directory and the emptied stack dir.
            remove = render_template("remove-file.sh.j2", purpose=f"Remove {path}", stack=loaded.name,
                                     node=node.node, path=path,
                                     remove_dirs=[rendered.ctx.run_dir] if is_env else [],
                                     prune_dirs=[path.rsplit("/", 1)[0], remote_dir, spec.paths.remote_dir])
            role = "env" if is_env else f"file-{n}"
            self.files.append(remote_step(
                f"{name}-{role}", connection=node.connection, create=script, delete=remove, parent=self,
                depends_on=[node.preflight]))
        node_spec = spec.nodes[index]
        user = node_spec.user or spec.ssh.user
        port = node_spec.port or spec.ssh.port
        ssh_opts = ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]
        if spec.ssh.jump_host:
            ssh_opts += ["-J", spec.ssh.jump_host]
        self.provider = docker.Provider(
            f"{name}-docker", host=f"ssh://{user}@{node_spec.host}:{port}", ssh_opts=ssh_opts,
            opts=pulumi.ResourceOptions(parent=self))
        image_script = rendered.scripts.image.command
        if spec.container.image_tar:
            # Runbook 001: `docker load -i <tar>`; the image stays on the node on destroy.
            self.image = remote_step(f"{name}-image", connection=node.connection, create=image_script, parent=self,
                                     depends_on=[node.preflight], timeout="60m",
                                     retain_on_delete=True)
            image_ref = spec.container.image
        else:
            self.image = docker.RemoteImage(
                f"{name}-image", name=spec.container.image, keep_locally=True,
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[node.preflight],
                                            custom_timeouts=pulumi.CustomTimeouts(create="60m")))
            image_ref = self.image.image_id
        args = cspec.pulumi_docker_args()
        args["image"] = image_ref
        labels = {"ascend-inference/stack": loaded.name, "ascend-inference/env-sha256": self.env_digest,
                  **(inputs.extra_labels or {})}
        args["labels"] = [docker.ContainerLabelArgs(label=k, value=v) for k, v in labels.items()]
        args["devices"] = [docker.ContainerDeviceArgs(**d) for d in args["devices"]]
        args["volumes"] = [docker.ContainerVolumeArgs(**v) for v in args["volumes"]]
        if cspec.secret_args:
            secrets = inputs.secrets or {}
            args["command"] = [secrets[cspec.secret_args[a]] if a in cspec.secret_args else a for a in cspec.command]
        self.name_check = remote_step(
            f"{name}-name-free", connection=node.connection, create=rendered.scripts.container_name_free.command, parent=self,
            depends_on=[node.preflight])
        self.container = docker.Container(
            f"{name}-container", **args,
            opts=pulumi.ResourceOptions(
                parent=self, provider=self.provider,
                depends_on=[*self.files, self.image, self.name_check, *inputs.after],
                # The name and host ports are fixed: the old container must go first.
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create="20m")))
        self.container_id = self.container.id
        self.register_outputs({"container_id": self.container_id, "env_digest": self.env_digest})
