"""Deployment: the whole rollout for one stack, wired in dependency order.

    AscendNode[i] (fix-tls?, preflight)           -- independent per node
      -> ModelWeights (same files everywhere, 750 for MindIE)
      -> PeerCheck: <node>-peer-ping (hccn_tool -ping of the node's peers)
         -> cluster-verified (one gate on the master: cross-node checks; the
            verified device IPs are read from it; later steps wait for it alone)
      -> RankTable (mindie, lmdeploy: one table, 640, on every node)
      -> InferenceContainer[i] (env + files on the host, image, container)
      -> RayCluster (vllm-mindspore, lmdeploy) | GPUStack server/workers
      -> ServingProcess (start, ready) | GPUStack model deployment
      -> SmokeTest

Nodes proceed in parallel until the peer check and the Ray join, so the
longest chain does not grow with the node count. Each node is rendered once
here; the components get typed arguments holding only what they use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi

from ascend_inference.brought_table import found_ip_problems
from ascend_inference.engines.base import ClusterStyle
from ascend_inference.engines.gpustack import Gpustack
from ascend_inference.errors import NodeFactError
from ascend_inference.loaded import LoadedStack
from ascend_inference.peers import ping_targets
from ascend_inference.ranktable import rank_table_json
from ascend_inference.render import Script, check_rank_table, rank_table, render_node, render_peer_ping
from components.cluster import (
    HostFile,
    InferenceContainer,
    InferenceContainerArgs,
    ModelWeights,
    ModelWeightsArgs,
    PeerCheck,
    PeerCheckArgs,
    RankTable,
    RankTableArgs,
)
from components.common import TOKEN, connection_for, digest
from components.node import AscendNode, AscendNodeArgs, FactExpectations
from components.serving import (
    GpustackDeployment,
    GpustackDeploymentArgs,
    GpustackServer,
    GpustackServerArgs,
    RayCluster,
    RayClusterArgs,
    ServeScripts,
    ServingProcess,
    ServingProcessArgs,
    SmokeTest,
    SmokeTestArgs,
)


@dataclass(frozen=True)
class DeploymentArgs:
    loaded: LoadedStack
    ssh_private_key: pulumi.Input[str]
    # engine.secret_env's values by config key, as Pulumi secrets.
    engine_secrets: dict[str, pulumi.Output[str]] = field(default_factory=dict)


class Deployment(pulumi.ComponentResource):
    endpoint: str
    world_size: int
    rank_table_digest: pulumi.Output
    node_facts: pulumi.Output

    def __init__(self, name: str, args: DeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:deployment:Deployment", name, None, opts)
        loaded = args.loaded
        self.loaded = loaded
        self.engine_secrets = args.engine_secrets
        spec = loaded.spec
        engine = spec.engine_plugin
        child = pulumi.ResourceOptions(parent=self)
        self.gpustack: GpustackServer | None = None
        self.gpustack_model: GpustackDeployment | None = None
        # Each node rendered once; the components take their parts.
        self.rendered = [render_node(loaded, i) for i in range(len(spec.nodes))]
        expect = FactExpectations(devices=spec.profile.devices_per_node, tls_policy=spec.network.hccl_tls,
                                  model_path=spec.model.path, profile=spec.profile)
        self.nodes = [
            AscendNode(n.name, AscendNodeArgs(
                node=n, connection=connection_for(spec, n, args.ssh_private_key),
                preflight_script=r.scripts.preflight.command, expect=expect,
                fix_tls_script=r.scripts.fix_tls.command if r.scripts.fix_tls else None),
                child)
            for n, r in zip(spec.nodes, self.rendered, strict=True)]
        self.weights = ModelWeights("model-weights", ModelWeightsArgs(
            self.nodes, [r.scripts.weights.command for r in self.rendered]), child)
        count = len(self.nodes)
        pinging = spec.network.ping_peers and count > 1
        self.peer_check = PeerCheck("peer-check", PeerCheckArgs(
            stack=loaded.name, nodes=self.nodes,
            ping_targets=[ping_targets(count, i) if pinging else [] for i in range(count)],
            ping_script=lambda i, ips: render_peer_ping(loaded, i, ips).command, weights=self.weights,
            record_path=f"{spec.paths.remote_dir}/{loaded.name}/cluster-verified.json"), child)
        gate = self.peer_check.verified
        # Values whose change must redo the containers' consumers.
        started_by: list = [self.weights.fingerprint]
        self.rank_table = None
        if engine.uses_rank_table:
            table_path = engine.rank_table_path(spec)
            assert table_path is not None, "an engine that uses a rank table names its path"
            self.rank_table = RankTable("rank-table", RankTableArgs(
                stack=loaded.name, nodes=self.nodes, device_ips=self.peer_check.verified_device_ips,
                table_json=self._rank_table_json, path=table_path), child)
            started_by.append(self.rank_table.digest)

        def container_args(i: int, **extra) -> InferenceContainerArgs:
            # Each container waits for the gate and its own node's rank-table copy;
            # what needs every copy (the serving processes) waits for them itself.
            after: list[pulumi.Resource] = [gate]
            if self.rank_table:
                after.append(self.rank_table.copies[i])
            return self._container_args(i, after, **extra)

        if engine.cluster_style is ClusterStyle.GPUSTACK:
            self._gpustack(container_args, child)
            return

        self.containers = [InferenceContainer(n.node.name, container_args(i), child)
                           for i, n in enumerate(self.nodes)]
        serve_after: list[pulumi.Resource] = []
        self.ray = None
        if engine.uses_ray:
            self.ray = RayCluster("ray", RayClusterArgs(
                nodes=self.nodes, containers=self.containers,
                start_scripts=[self._command(r.scripts.ray_start) for r in self.rendered],
                stop_scripts=[self._command(r.scripts.ray_stop) for r in self.rendered],
                verify_script=self._command(self.rendered[0].scripts.ray_verify)), child)
            started_by.append(self.ray.verify.id)
        elif self.rank_table is not None:
            serve_after += self.rank_table.copies
        serve = [ServeScripts(start=r.scripts.serve_start.command, stop=self._command(r.scripts.serve_stop),
                              files_digest=digest(json.dumps(r.files, sort_keys=True)))
                 if r.scripts.serve_start else None
                 for r in self.rendered]
        self.serving = ServingProcess("serving", ServingProcessArgs(
            nodes=self.nodes, containers=self.containers, serve=serve,
            ready_script=self._command(self.rendered[0].scripts.serve_ready),
            ready_timeout_s=spec.engine.ready_timeout_s, endpoint=engine.endpoint(spec),
            after=serve_after, started_by=started_by), child)
        self.smoke = SmokeTest("smoke-test", SmokeTestArgs(
            master=self.nodes[0], script=self._command(self.rendered[0].scripts.smoke), ready=self.serving.ready),
            child)
        self._finish(self.smoke.reply)

    @staticmethod
    def _command(script: Script | None) -> str:
        """A script the engine's cluster style needs: it is always rendered."""
        assert script is not None, "render_node renders every script of the engine's cluster style"
        return script.command

    def _rank_table_json(self, device_ips: dict[str, list[str]]) -> str:
        loaded = self.loaded
        table = rank_table(loaded, device_ips)
        # Called only for an engine that uses a rank table (see __init__).
        assert table is not None, "the engine uses a rank table"
        if loaded.brought_rank_table is not None:
            # The user's table against what preflight found on the nodes.
            problems = found_ip_problems(table, loaded.spec, loaded.plan, str(loaded.spec.network.rank_table_file),
                                         device_ips)
        else:
            problems = check_rank_table(loaded, table, f"rank table for stack {loaded.name}")
        if problems:
            raise NodeFactError(loaded.spec.nodes[0].name, "rank table", "; ".join(str(p) for p in problems))
        return rank_table_json(table)

    def _container_args(self, i: int, after: list[pulumi.Resource], **extra) -> InferenceContainerArgs:
        loaded, rendered = self.loaded, self.rendered[i]
        spec = loaded.spec
        node_spec = spec.nodes[i]
        remote_dir = rendered.ctx.remote_dir

        def host_file(path: str, content: str, remove_dirs=()) -> HostFile:
            return HostFile(path=path, content=content, remove_dirs=list(remove_dirs),
                            prune_dirs=[path.rsplit("/", 1)[0], remote_dir, spec.paths.remote_dir])

        ssh_opts = ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"]
        if spec.ssh.jump_host:
            ssh_opts += ["-J", spec.ssh.jump_host]
        return InferenceContainerArgs(
            stack=loaded.name, node=self.nodes[i],
            env_file=host_file(f"{remote_dir}/env.sh", rendered.env_text, remove_dirs=[rendered.ctx.run_dir]),
            files=[host_file(path, content) for path, content in rendered.files.items()],
            container=rendered.container, image=spec.container.image,
            image_load_script=rendered.scripts.image.command if spec.container.image_tar else None,
            name_check_script=rendered.scripts.container_name_free.command,
            docker_host=f"ssh://{node_spec.user or spec.ssh.user}@{node_spec.host}:{node_spec.port or spec.ssh.port}",
            ssh_opts=ssh_opts, after=after, secret_env=self.engine_secrets, **extra)

    def _gpustack(self, container_args, child: pulumi.ResourceOptions) -> None:
        loaded = self.loaded
        spec = loaded.spec
        engine = spec.engine_plugin
        # The only engine of the GPUStack cluster style.
        assert isinstance(engine, Gpustack)
        master = self.nodes[0]
        server = InferenceContainer(master.node.name, container_args(0), child)
        self.gpustack = GpustackServer("gpustack", GpustackServerArgs(
            stack=loaded.name, master=master, server=server, container_name=spec.container.name), child)
        workers = [InferenceContainer(n.node.name, container_args(i, secrets={"GPUSTACK_TOKEN": self.gpustack.token}),
                                      child)
                   for i, n in enumerate(self.nodes) if i > 0]
        self.containers = [server, *workers]
        self.gpustack_model = GpustackDeployment("gpustack-model", GpustackDeploymentArgs(
            server=self.gpustack, workers=workers, server_url=engine.server_url(spec),
            request=engine.deployment_request(spec, loaded.plan), expected_workers=engine.expected_workers(spec),
            worker_timeout_s=engine.worker_ready_timeout_s(spec), ready_timeout_s=spec.engine.ready_timeout_s),
            child)
        self.smoke = SmokeTest("smoke-test", SmokeTestArgs(
            master=master, script=self._command(self.rendered[0].scripts.smoke), ready=self.gpustack_model.deployment,
            stdin=self.gpustack.admin_password.apply(lambda p: p + "\n")), child)
        self._finish(self.smoke.reply)

    def _finish(self, reply) -> None:
        spec = self.loaded.spec
        self.endpoint = spec.engine_plugin.endpoint(spec)
        self.world_size = self.loaded.plan.world_size
        self.rank_table_digest = self.rank_table.digest if self.rank_table else pulumi.Output.from_input("")
        self.node_facts = pulumi.Output.all(*[n.facts for n in self.nodes]).apply(
            lambda facts: {f["node"]: {"hostname": f["hostname"], "driver": f["driver_version"],
                                       "device_ips": [d["ip"] for d in f["devices"]]} for f in facts})
        self.smoke_reply = reply
        self.register_outputs({"endpoint": self.endpoint, "world_size": self.world_size,
                               "rank_table_digest": self.rank_table_digest, "node_facts": self.node_facts})
