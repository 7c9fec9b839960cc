"""Deployment: the whole rollout for one stack, wired in dependency order.

    AscendNode[i] (fix-tls?, preflight)           -- independent per node
      -> PeerCheck (cross-node facts, hccn_tool -ping of every peer)
         + ModelWeights (same files everywhere, 750 for MindIE)
      -> cluster-verified (one gate on the master: later steps wait for it alone)
      -> RankTable (mindie, lmdeploy: one table, 640, on every node)
      -> InferenceContainer[i] (env + files on the host, image, container)
      -> RayCluster (vllm-mindspore, lmdeploy) | GPUStack server/workers
      -> ServingProcess (start, ready) | GPUStack model deployment
      -> SmokeTest

Nodes proceed in parallel until the peer check and the Ray join, so the
longest chain does not grow with the node count.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from ascend_inference.engines.base import ClusterStyle
from ascend_inference.render import LoadedStack, render_node
from components.cluster import ContainerInputs, InferenceContainer, ModelWeights, PeerCheck, RankTable
from components.common import TOKEN
from components.node import AscendNode, AscendNodeArgs
from components.serving import GpustackModel, RayCluster, ServingProcess, SmokeTest


@dataclass(frozen=True)
class DeploymentArgs:
    loaded: LoadedStack
    ssh_private_key: pulumi.Input[str]


class Deployment(pulumi.ComponentResource):
    endpoint: str
    world_size: int
    rank_table_digest: pulumi.Output
    node_facts: pulumi.Output

    def __init__(self, name: str, args: DeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:deployment:Deployment", name, None, opts)
        loaded = args.loaded
        spec = loaded.spec
        engine = spec.engine_plugin
        child = pulumi.ResourceOptions(parent=self)

        self.nodes = [
            AscendNode(n.name, AscendNodeArgs(spec, render_node(loaded, i), args.ssh_private_key), child)
            for i, n in enumerate(spec.nodes)]
        self.peer_check = PeerCheck("peer-check", loaded, self.nodes, child)
        self.weights = ModelWeights("model-weights", loaded, self.nodes, child)
        ready_nodes = [self.peer_check.gate(loaded, self.nodes[0], self.weights)]
        # Values whose change must redo the containers' consumers.
        self.rank_table = None
        started_by: list = [self.weights.fingerprint]
        container_after: list[pulumi.Resource] = [*ready_nodes]
        if engine.uses_rank_table:
            self.rank_table = RankTable("rank-table", loaded, self.nodes, self.peer_check.device_ips,
                                        after=ready_nodes, opts=child)
            container_after += self.rank_table.copies
            started_by.append(self.rank_table.digest)

        self.gpustack = None
        if engine.cluster_style is ClusterStyle.GPUSTACK:
            self._gpustack(loaded, container_after, child)
            return

        self.containers = [
            InferenceContainer(f"{n.node.name}", loaded, n, i, ContainerInputs(after=container_after), child)
            for i, n in enumerate(self.nodes)]
        serve_after: list[pulumi.Resource] = []
        self.ray = None
        if engine.uses_ray:
            self.ray = RayCluster("ray", loaded, self.nodes, self.containers, child)
            serve_after.append(self.ray.verify)
            started_by.append(self.ray.verify.id)
        elif self.rank_table is not None:
            serve_after += self.rank_table.copies
        self.serving = ServingProcess("serving", loaded, self.nodes, self.containers, serve_after, started_by, child)
        self.smoke = SmokeTest("smoke-test", loaded, self.nodes[0], self.serving.ready, opts=child)
        self._finish(loaded, self.smoke.reply)

    def _gpustack(self, loaded: LoadedStack, container_after: list, child: pulumi.ResourceOptions) -> None:
        master = self.nodes[0]
        server = InferenceContainer(master.node.name, loaded, master, 0, ContainerInputs(after=container_after), child)
        self.gpustack = GpustackModel("gpustack", loaded, master, server, child)
        workers = [
            InferenceContainer(n.node.name, loaded, n, i,
                               ContainerInputs(after=container_after, secrets={"GPUSTACK_TOKEN": self.gpustack.token}),
                               child)
            for i, n in enumerate(self.nodes) if i > 0]
        self.containers = [server, *workers]
        deployment = self.gpustack.deploy(loaded, master, workers)
        self.smoke = SmokeTest("smoke-test", loaded, master, deployment,
                               stdin=self.gpustack.admin_password.apply(lambda p: p + "\n"), opts=child)
        self._finish(loaded, self.smoke.reply)

    def _finish(self, loaded: LoadedStack, reply) -> None:
        spec = loaded.spec
        self.endpoint = spec.engine_plugin.endpoint(spec)
        self.world_size = loaded.plan.world_size
        self.rank_table_digest = self.rank_table.digest if self.rank_table else pulumi.Output.from_input("")
        self.node_facts = pulumi.Output.all(*[n.facts for n in self.nodes]).apply(
            lambda facts: {f["node"]: {"hostname": f["hostname"], "driver": f["driver_version"],
                                       "device_ips": [d["ip"] for d in f["devices"]]} for f in facts})
        self.smoke_reply = reply
        self.register_outputs({"endpoint": self.endpoint, "world_size": self.world_size,
                               "rank_table_digest": self.rank_table_digest, "node_facts": self.node_facts})
