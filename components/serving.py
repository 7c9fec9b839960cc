"""Ray cluster, serving process, smoke test, and GPUStack's server/workers/model."""
from __future__ import annotations

import json

import pulumi

from ascend_inference.render import LoadedStack, render_node, render_template
from components.cluster import InferenceContainer
from components.common import TOKEN, digest, remote_step
from components.node import AscendNode


class RayCluster(pulumi.ComponentResource):
    """Head on the master, then workers, all inside the containers; a verify
    step fails unless `ray status` shows world-size NPUs on every node.

    Every Ray step has every node's env digest and container id among its
    triggers: the runbooks require `ray stop` on all nodes and a new cluster
    after any env change. Deleting a step runs `ray stop` on its node."""

    def __init__(self, name: str, loaded: LoadedStack, nodes: list[AscendNode],
                 containers: list[InferenceContainer], opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:ray:RayCluster", name, None, opts)
        cluster_env = digest("".join(c.env_digest for c in containers))
        rendered = [render_node(loaded, i) for i in range(len(nodes))]
        stop = [r.scripts.ray_stop.command for r in rendered]
        self.head = remote_step(
            f"{nodes[0].node.name}-ray-head", connection=nodes[0].connection, parent=self,
            create=rendered[0].scripts.ray_start.command, delete=stop[0],
            triggers=[cluster_env, containers[0].container_id], depends_on=[containers[0].container], timeout="10m")
        self.workers = []
        for i in range(1, len(nodes)):
            self.workers.append(remote_step(
                f"{nodes[i].node.name}-ray-worker", connection=nodes[i].connection, parent=self,
                create=rendered[i].scripts.ray_start.command, delete=stop[i],
                triggers=[cluster_env, containers[i].container_id, self.head.id],
                depends_on=[containers[i].container, self.head], timeout="10m"))
        self.verify = remote_step(
            f"{name}-verify", connection=nodes[0].connection, parent=self,
            create=rendered[0].scripts.ray_verify.command,
            triggers=[self.head.id, *[w.id for w in self.workers]], depends_on=[self.head, *self.workers],
            timeout="10m")
        self.status = self.verify.stdout
        self.register_outputs({"status": self.status})


class ServingProcess(pulumi.ComponentResource):
    """The engine's serving process: started on the head (vLLM-MindSpore,
    LMDeploy) or on every node with the master first (MindIE), with a log and
    a pid file; then a readiness wait on the master that shows the last log
    lines on failure. Deleting it stops the process. Triggers: the serve
    command and whatever the process reads at start (Ray, rank table)."""

    def __init__(self, name: str, loaded: LoadedStack, nodes: list[AscendNode],
                 containers: list[InferenceContainer], after: list[pulumi.Resource], started_by: list,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:serving:ServingProcess", name, None, opts)
        self.starts = []
        previous: list[pulumi.Resource] = []
        for i, node in enumerate(nodes):
            rendered = render_node(loaded, i)
            if rendered.scripts.serve_start is None:
                continue
            step = remote_step(
                f"{node.node.name}-serve", connection=node.connection, parent=self,
                create=rendered.scripts.serve_start.command,
                delete=rendered.scripts.serve_stop.command,
                # The engine's files (MindIE's config.json) are read at start.
                triggers=[digest(json.dumps(rendered.files, sort_keys=True)),
                          containers[i].container_id, *started_by],
                depends_on=[containers[i].container, *after, *previous], timeout="10m")
            self.starts.append(step)
            # MindIE: the master's daemon first, then the others.
            previous = [self.starts[0]]
        master = render_node(loaded, 0)
        self.ready = remote_step(
            f"{name}-ready", connection=nodes[0].connection, parent=self,
            create=master.scripts.serve_ready.command,
            triggers=[s.id for s in self.starts], depends_on=self.starts,
            timeout=f"{loaded.spec.engine.ready_timeout_s + 60}s")
        self.endpoint = loaded.spec.engine_plugin.endpoint(loaded.spec)
        self.register_outputs({"endpoint": self.endpoint})


class SmokeTest(pulumi.ComponentResource):
    """The runbook's completion request through the served endpoint; the
    reply is an output. Redone whenever what it tests was redone."""

    def __init__(self, name: str, loaded: LoadedStack, master: AscendNode, ready: pulumi.Resource,
                 stdin: pulumi.Input[str] | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:smoke:SmokeTest", name, None, opts)
        script = render_node(loaded, 0).scripts.smoke.command
        self.request = remote_step(
            f"{name}-request", connection=master.connection, parent=self, create=script,
            triggers=[ready.id], depends_on=[ready], timeout="15m", stdin=stdin)
        self.reply = self.request.stdout
        self.register_outputs({"reply": self.reply})


class GpustackModel(pulumi.ComponentResource):
    """Runbook 002's server, its generated secrets, and the model deployment.

    The registration token and initial admin password are read back from the
    server container as secret outputs; the deployment is created, updated
    and deleted through GPUStack's HTTP API by an idempotent command that gets
    the password on stdin."""

    def __init__(self, name: str, loaded: LoadedStack, master: AscendNode, server: InferenceContainer,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:gpustack:GpustackModel", name, None, opts)
        common = {"stack": loaded.name, "node": master.node, "container": loaded.spec.container.name,
                  "timeout_s": 300}
        self.token_reader = remote_step(
            f"{name}-token", connection=master.connection, parent=self, secret_stdout=True,
            create=render_template("gpustack-secret.sh.j2", purpose="Read the worker registration token",
                                   path="/var/lib/gpustack/token", **common),
            triggers=[server.container_id], depends_on=[server.container])
        self.password_reader = remote_step(
            f"{name}-admin-password", connection=master.connection, parent=self, secret_stdout=True,
            create=render_template("gpustack-secret.sh.j2", purpose="Read the initial admin password",
                                   path="/var/lib/gpustack/initial_admin_password", **common),
            triggers=[server.container_id], depends_on=[server.container])
        self.token = pulumi.Output.secret(self.token_reader.stdout.apply(lambda s: (s or "").strip()))
        self.admin_password = pulumi.Output.secret(self.password_reader.stdout.apply(lambda s: (s or "").strip()))
        self.register_outputs({"token": self.token, "admin_password": self.admin_password})

    def deploy(self, loaded: LoadedStack, master: AscendNode, workers: list[InferenceContainer]) -> pulumi.Resource:
        engine = loaded.spec.engine_plugin
        request = engine.deployment_request(loaded.spec, loaded.plan)
        context = {"stack": loaded.name, "node": master.node, "server_url": engine.server_url(loaded.spec),
                   "name": loaded.spec.model.name, "timeout_s": loaded.spec.engine.ready_timeout_s}
        create = render_template("gpustack-deploy.sh.j2", purpose="Deploy the model through GPUStack's API",
                                 request_json=json.dumps(request, indent=2), **context)
        delete = render_template("gpustack-undeploy.sh.j2", purpose="Delete the model deployment", **context)
        self.deployment = remote_step(
            "gpustack-model", connection=master.connection, parent=self, create=create, delete=delete,
            stdin=self.admin_password.apply(lambda p: p + "\n"),
            # Redeploy when the server or any worker container was recreated.
            triggers=[self.token_reader.id, *[w.container_id for w in workers]],
            depends_on=[self.token_reader, *[w.container for w in workers]],
            timeout=f"{loaded.spec.engine.ready_timeout_s + 120}s")
        return self.deployment
