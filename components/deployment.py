"""Deployment: the whole rollout for one stack, wired in dependency order.

    AscendNode[i] (fix-tls?, preflight)           -- independent per node
      -> ModelWeights (model.source: download on the master, copy to the
         others; same files everywhere, 750 for MindIE)
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pulumi

from ascend_inference.brought_table import found_ip_problems, found_sdid_problems
from ascend_inference.engines.base import ClusterStyle
from ascend_inference.engines.gpustack import WORKER_TOKEN_SECRET, Gpustack
from ascend_inference.errors import NodeFactError
from ascend_inference.facts import NetworkPolicies
from ascend_inference.images import ImageExpectations
from ascend_inference.incontainer import judge_config_edit, judge_container_check, judge_pyacl_install
from ascend_inference.loaded import LoadedStack
from ascend_inference.peers import ping_targets
from ascend_inference.ranktable import rank_table_json
from ascend_inference.render import (
    NodeScripts,
    Script,
    check_rank_table,
    host_step_undo,
    image_fetched_once,
    rank_table,
    render_image_copy,
    render_node,
    render_peer_ping,
    render_weights_copy,
)
from components.cluster import (
    ContainerStep,
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
from components.common import TOKEN, connection_for, digest, from_checks, node_checks_of, system_ssh_options
from components.images import ContainerImages, ContainerImagesArgs, NodeImageArgs
from components.node import AscendNode, AscendNodeArgs, FactExpectations, HostStep, HostSteps
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
    # model.source.token_secret's value, as a Pulumi secret.
    hub_token: pulumi.Output[str] | None = None


class Deployment(pulumi.ComponentResource):
    endpoint: str
    world_size: int
    rank_table_digest: pulumi.Output
    node_facts: pulumi.Output
    image_facts: pulumi.Output

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
        # The system ssh's options (docker's ssh://, the node checks), and the
        # known_hosts file of the pinned keys they read: made once per run.
        self.ssh_options = system_ssh_options(spec, loaded.name)
        expect = FactExpectations(devices=spec.profile.devices_per_node, tls_policy=spec.network.hccl_tls,
                                  model_path=spec.model.path, profile=spec.profile,
                                  network_policies=NetworkPolicies(spec.network.lldp, spec.network.netdetect,
                                                                   spec.network.gateway),
                                  host_versions={"driver": spec.host.driver, "firmware": spec.host.firmware,
                                                 "cann": spec.host.cann})
        self.nodes = [
            AscendNode(n.name, AscendNodeArgs(
                node=n, connection=connection_for(spec, n, args.ssh_private_key, self.ssh_options),
                preflight_script=r.scripts.preflight.command,
                expect=replace(expect, model_path_required=spec.model.source.kind == "local" or (
                    i == 0 and spec.model.source.kind == "copy")),
                fix_tls_script=r.scripts.fix_tls.command if r.scripts.fix_tls else None,
                host_steps=host_steps(loaded, i, r.scripts)),
                child)
            for i, (n, r) in enumerate(zip(spec.nodes, self.rendered, strict=True))]
        download = self.rendered[0].scripts.weights_download
        self.weights = ModelWeights("model-weights", ModelWeightsArgs(
            self.nodes, [r.scripts.weights.command for r in self.rendered], source=spec.model.source.kind,
            download_script=download.command if download else None,
            download_stdin=args.hub_token.apply(lambda token: token.strip() + "\n") if args.hub_token else "\n",
            copy_script=lambda i, master: render_weights_copy(loaded, i, master).command,
            ssh_private_key=args.ssh_private_key), child)
        self.images = ContainerImages("images", ContainerImagesArgs(
            image=spec.container.image,
            nodes=[NodeImageArgs(node=n, docker_host=self._docker_host(i), ssh_opts=self.ssh_options,
                                 load_script=r.scripts.image.command if spec.container.image_tar else None,
                                 check_script=self._command(r.scripts.image_check),
                                 copy_script=self._image_copy(i) if i > 0 and image_fetched_once(loaded) else None)
                   for i, (n, r) in enumerate(zip(self.nodes, self.rendered, strict=True))],
            ssh_private_key=args.ssh_private_key,
            expect=ImageExpectations(image=spec.container.image, package=engine.image_package,
                                     engine_version=spec.container.engine_version,
                                     cann_version=spec.container.cann_version, env_era=engine.env_era,
                                     rendered_version=engine.engine_version(spec),
                                     refusal=lambda version: engine.version_refusal(spec, version))), child)
        count = len(self.nodes)
        # A profile without a fabric (300I Duo) has no device IPs to ping.
        pinging = spec.network.ping_peers and spec.profile.network.peer_ping and count > 1
        self.peer_check = PeerCheck("peer-check", PeerCheckArgs(
            stack=loaded.name, nodes=self.nodes,
            ping_targets=[ping_targets(count, i) if pinging else [] for i in range(count)],
            ping_script=lambda i, ips: render_peer_ping(loaded, i, ips).command, weights=self.weights,
            record_path=f"{spec.paths.remote_dir}/{loaded.name}/cluster-verified.json",
            images=self.images.verified), child)
        gate = self.peer_check.verified
        # Values whose change must redo the containers' consumers.
        started_by: list = [self.weights.fingerprint]
        self.rank_table = None
        if engine.uses_rank_table:
            table_path = engine.rank_table_path(spec)
            assert table_path is not None, "an engine that uses a rank table names its path"
            self.rank_table = RankTable("rank-table", RankTableArgs(
                stack=loaded.name, nodes=self.nodes, device_ips=self.peer_check.verified_device_ips,
                table_json=self._rank_table_json, path=table_path,
                super_pods=(self.peer_check.verified_super_pods
                            if spec.profile.rank_table_version == "1.2" else None), gate=gate), child)
            started_by.append(self.rank_table.digest)

        def container_args(i: int, **extra) -> InferenceContainerArgs:
            # Each container waits for the gate and its own node's rank-table copy;
            # what needs every copy (the serving processes) waits for them itself.
            after: list[pulumi.Resource] = [gate]
            if self.rank_table:
                after.append(self.rank_table.copies[i])
            return self._container_args(i, after, **extra)

        if engine.cluster_style_for(spec) is ClusterStyle.GPUSTACK:
            self._gpustack(container_args, child)
            return

        self.containers = [InferenceContainer(n.node.name, container_args(i), child)
                           for i, n in enumerate(self.nodes)]
        serve_after: list[pulumi.Resource] = []
        # Nothing starts in any container (Ray's head, MindIE's daemons)
        # until every node's in-container steps have been judged good: a
        # container without acl on node1 stops the rollout before node0's
        # Ray head. A constant once they pass, so it redoes nothing.
        checked: list[pulumi.Input] = [pulumi.Output.all(*[c.container_id for c in self.containers]).apply(
            lambda _: "every container checked")] if any(c.steps for c in self.containers) else []
        started_by += checked
        self.ray = None
        if engine.uses_ray(spec):
            self.ray = RayCluster("ray", RayClusterArgs(
                nodes=self.nodes, containers=self.containers,
                start_scripts=[self._command(r.scripts.ray_start) for r in self.rendered],
                stop_scripts=[self._command(r.scripts.ray_stop) for r in self.rendered],
                verify_script=self._command(self.rendered[0].scripts.ray_verify), checked=checked), child)
            started_by.append(self.ray.verify.id)
        elif self.rank_table is not None:
            serve_after += self.rank_table.copies
        serve = [ServeScripts(start=r.scripts.serve_start.command, stop=self._command(r.scripts.serve_stop),
                              files_digest=digest(json.dumps(r.files, sort_keys=True)),
                              alive=self._command(r.scripts.serve_alive), run_dir=r.ctx.run_dir)
                 if r.scripts.serve_start else None
                 for r in self.rendered]
        self.serving = ServingProcess("serving", ServingProcessArgs(
            nodes=self.nodes, containers=self.containers, serve=serve,
            ready_script=self._command(self.rendered[0].scripts.serve_ready),
            ready_timeout_s=spec.engine.ready_timeout_s, endpoint=engine.endpoint(spec),
            after=serve_after, started_by=started_by), child)
        # The serving API key on the smoke request's stdin (a secret input).
        api_key = engine.api_key_secret(spec)
        self.smoke = SmokeTest("smoke-test", SmokeTestArgs(
            master=self.nodes[0], script=self._command(self.rendered[0].scripts.smoke), ready=self.serving.ready,
            stdin=self.engine_secrets[api_key].apply(lambda key: key.strip() + "\n") if api_key else None),
            child)
        self._finish(self.smoke.reply)

    @staticmethod
    def _command(script: Script | None) -> str:
        """A script the engine's cluster style needs: it is always rendered."""
        assert script is not None, "render_node renders every script of the engine's cluster style"
        return script.command

    def _rank_table_json(self, device_ips: dict[str, list[str]],
                         super_pods: dict[str, dict[str, Any]] | None = None) -> str:
        loaded = self.loaded
        table = rank_table(loaded, device_ips, super_pods)
        # Called only for an engine that uses a rank table (see __init__).
        assert table is not None, "the engine uses a rank table"
        if loaded.brought_rank_table is not None:
            # The user's table against what preflight found on the nodes.
            problems = found_ip_problems(table, loaded.spec, loaded.plan, str(loaded.spec.network.rank_table_file),
                                         device_ips)
            if super_pods is not None:
                problems += found_sdid_problems(table, loaded.spec, str(loaded.spec.network.rank_table_file),
                                                super_pods)
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

        # The verified image id as a label: an image that changed under the
        # same tag (a new tar, a re-pushed :latest) redoes the container.
        image_id = self.peer_check.verified_images.apply(lambda images: str(images[node_spec.name]["id"]))
        # The daemon it runs on as a label too: a new host or port for the node
        # is an update of the docker provider (pulumi-docker bridges no
        # provider attribute as forcing a replacement), which alone would leave
        # the container where it was while every step of the node is redone
        # at the new address; `labels` is ForceNew, so the container is made
        # again through the new `ssh://` (docs/rollout.md).
        labels = {"ascend-inference/image-id": image_id, "ascend-inference/docker-host": self._docker_host(i),
                  **extra.pop("extra_labels", {})}
        return InferenceContainerArgs(
            stack=loaded.name, node=self.nodes[i],
            env_file=host_file(f"{remote_dir}/env.sh", rendered.env_text, remove_dirs=[rendered.ctx.run_dir]),
            files=[host_file(path, content) for path, content in rendered.files.items()],
            container=rendered.container, image=spec.container.image,
            image_load_script=None, prepared=self.images.prepared[i],
            name_check_script=rendered.scripts.container_name_free.command,
            mount_check_script=self._command(rendered.scripts.mount_sources),
            docker_host=self._docker_host(i), ssh_opts=self.ssh_options, after=after, extra_labels=labels,
            secret_env=extra.pop("secret_env", self.engine_secrets), steps=self._container_steps(i), **extra)

    def _image_copy(self, i: int) -> Callable[[dict], str]:
        """Node i's copy of the master's image tar, from what the master's image step printed."""
        return lambda master_image: render_image_copy(self.loaded, i, master_image).command

    def _docker_host(self, i: int) -> str:
        spec = self.loaded.spec
        node = spec.nodes[i]
        return f"ssh://{node.user or spec.ssh.user}@{node.host}:{node.port or spec.ssh.port}"

    def _container_steps(self, i: int) -> list[ContainerStep]:
        """Node i's in-container steps, as rendered: pyACL from the nnrt .run
        (container.nnrt_run), the container check, then the engine's config
        edit (MindIE's config.json)."""
        rendered, spec = self.rendered[i], self.loaded.spec
        scripts, node, container = rendered.scripts, spec.nodes[i].name, spec.container.name
        steps: list[ContainerStep] = []
        nnrt_run = spec.container.nnrt_run
        if scripts.pyacl_install is not None and scripts.pyacl_remove is not None and nnrt_run is not None:
            steps.append(ContainerStep(
                "pyacl-install", scripts.pyacl_install.command,
                lambda report: judge_pyacl_install(node, container, nnrt_run, report),
                delete=scripts.pyacl_remove.command))
        if scripts.container_check is not None:
            steps.append(ContainerStep(
                "container-check", scripts.container_check.command,
                lambda report: judge_container_check(node, container, report)))
        edit = spec.engine_plugin.config_edit(rendered.ctx)
        if edit is not None and scripts.config_edit is not None and scripts.config_restore is not None:
            set_by = dict(edit.set_by)
            steps.append(ContainerStep(
                "config-edit", scripts.config_edit.command,
                lambda report: judge_config_edit(node, spec.container.image, edit.label, report, set_by),
                # The edits themselves (one trigger each), so a preview and a
                # diff show which key the step sets to what.
                delete=scripts.config_restore.command, reads=edit.edit_lines()))
        return steps

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
        # The registration token reaches each worker as its secret GPUSTACK_TOKEN env.
        worker_secrets = {**self.engine_secrets, WORKER_TOKEN_SECRET: self.gpustack.token}
        workers = [InferenceContainer(n.node.name, container_args(i, secret_env=worker_secrets), child)
                   for i, n in enumerate(self.nodes) if i > 0]
        self.containers = [server, *workers]
        self.gpustack_model = GpustackDeployment("gpustack-model", GpustackDeploymentArgs(
            server=self.gpustack, workers=workers, server_url=engine.server_url(spec),
            request=engine.deployment_request(spec, loaded.plan), expected_workers=engine.expected_workers(spec),
            worker_timeout_s=engine.worker_ready_timeout_s(spec), ready_timeout_s=spec.engine.ready_timeout_s,
            backends_on=list(zip(self.nodes, self.containers, strict=True)), stack=loaded.name,
            ca_pem=engine.control_ca_pem(spec, loaded.file)),
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
        # Marked with the checks they come from (facts flow by value, without resources):
        # what only a rollout learns, as the offline preview shows it.
        preflights = [name for n in self.nodes for name in node_checks_of(n.facts)]
        self.node_facts = from_checks(pulumi.Output.all(*[n.facts for n in self.nodes]).apply(
            lambda facts: {f.node: {"hostname": f.hostname, "driver": f.driver_version,
                                    "device_ips": f.device_ips()} for f in facts}), preflights)
        self.smoke_reply = reply
        # What each node's image holds: id, engine and CANN versions (the stack output `images`).
        self.image_facts = from_checks(self.peer_check.verified_images,
                                       [*preflights, *node_checks_of(self.images.verified)])
        self.register_outputs({"endpoint": self.endpoint, "world_size": self.world_size,
                               "rank_table_digest": self.rank_table_digest, "node_facts": self.node_facts,
                               "images": self.image_facts})


def host_steps(loaded: LoadedStack, index: int, scripts: NodeScripts) -> HostSteps:
    """ascend-inference:host's provisioning steps of node `index`, from its rendered scripts."""
    host = loaded.spec.host

    def step(script: Script | None, what: str) -> HostStep | None:
        if script is None:
            return None
        return HostStep(create=script.command, delete=host_step_undo(loaded, index, what))

    return HostSteps(
        driver=step(scripts.install_driver, f"NPU driver {host.driver}"),
        firmware=step(scripts.install_firmware, f"NPU firmware {host.firmware}"),
        reboot=step(scripts.host_reboot, "the reboot"),
        docker_runtime=step(scripts.install_docker_runtime, "the Ascend docker runtime"),
        runc_owner=step(scripts.fix_runc_owner, "runc's owner root:root"))
