"""Ray cluster, serving process, smoke test, and GPUStack's server secrets
and model deployment.

Where a step's triggers already carry an upstream resource (its id), that
resource is not repeated in `depends_on`: the SDK walks every declared
dependency's whole upstream graph, so each repeat costs time that grows with
the cluster."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from ascend_inference.render import serve_record_line
from ascend_inference.templating import render_template
from components.cluster import InferenceContainer
from components.common import TOKEN, after, digest, node_check, remote_step
from components.gpustack_model import GpustackModel, GpustackModelArgs
from components.node import AscendNode


@dataclass(frozen=True)
class RayClusterArgs:
    nodes: list[AscendNode]
    containers: list[InferenceContainer]
    # Per node, already wrapped to run inside the container.
    start_scripts: list[str]
    stop_scripts: list[str]
    # On the master, inside its container.
    verify_script: str
    # Values the head waits for besides its own container: every node's
    # in-container checks (a constant once they pass, so nothing is redone).
    checked: list[pulumi.Input] = field(default_factory=list)


class RayCluster(pulumi.ComponentResource):
    """Head on the master, then workers, all inside the containers; a verify
    step fails unless `ray status` shows world-size NPUs on every node.

    Every Ray step has every node's env digest and container id among its
    triggers: the runbooks require `ray stop` on all nodes and a new cluster
    after any env change. Deleting a step runs `ray stop` on its node."""

    def __init__(self, name: str, args: RayClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:ray:RayCluster", name, None, opts)
        nodes, containers = args.nodes, args.containers
        cluster_env = digest("".join(c.env_digest for c in containers))
        self.head = remote_step(
            f"{nodes[0].node.name}-ray-head", connection=nodes[0].connection, parent=self,
            create=args.start_scripts[0], delete=args.stop_scripts[0],
            triggers=[cluster_env, containers[0].container_id, *args.checked], timeout="10m")
        self.workers = [
            remote_step(
                f"{nodes[i].node.name}-ray-worker", connection=nodes[i].connection, parent=self,
                create=args.start_scripts[i], delete=args.stop_scripts[i],
                triggers=[cluster_env, containers[i].container_id, self.head.id], timeout="10m")
            for i in range(1, len(nodes))]
        self.verify = remote_step(
            f"{name}-verify", connection=nodes[0].connection, parent=self, create=args.verify_script,
            triggers=[self.head.id, *[w.id for w in self.workers]], timeout="10m")
        self.status = self.verify.stdout
        self.register_outputs({"status": self.status})


@dataclass(frozen=True)
class ServeScripts:
    """One node's serving process, wrapped to run inside its container."""

    start: str
    stop: str
    # Digest of the engine files the process reads at start (MindIE's config.json).
    files_digest: str
    # The liveness check (serve-alive, run on the host) and the run directory it reads.
    alive: str
    run_dir: str


@dataclass(frozen=True)
class ServingProcessArgs:
    nodes: list[AscendNode]
    containers: list[InferenceContainer]
    # Per node; None where the engine runs nothing (the head-only engines' workers).
    serve: list[ServeScripts | None]
    ready_script: str
    ready_timeout_s: int
    endpoint: str
    # Resources every start waits for (MindIE: every rank-table copy).
    after: list[pulumi.Resource]
    # Values whose change restarts the process (weights, rank table, Ray).
    started_by: list[pulumi.Input]


def _recorded_start(serve: ServeScripts) -> Callable[[str], str]:
    """The start's script, with what the liveness check said first (serve_record_line)."""
    return lambda said: serve_record_line(serve.run_dir, said) + serve.start


class ServingProcess(pulumi.ComponentResource):
    """The engine's serving process: started on the head (vLLM-MindSpore,
    LMDeploy) or on every node with the master first (MindIE), with a log and
    a pid file; then a readiness wait on the master that shows the last log
    lines on failure. Deleting it stops the process. Triggers: the serve
    command and whatever the process reads at start (Ray, rank table).

    A process that died after a good `up` is started again by the next
    `pulumi up` (and shown by `pulumi preview`): pulumi-command's `Command`
    has no read, so no refresh would notice. Each start's script begins with
    what its node's liveness check (a node check, run at every preview and
    up) printed; the check prints the value the running engine's start
    recorded, and a value no start recorded once the process is gone, so the
    start is replaced exactly once per death (see serve-alive.sh.j2)."""

    def __init__(self, name: str, args: ServingProcessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:serving:ServingProcess", name, None, opts)
        self.starts: list[remote.Command] = []
        for i, (node, serve) in enumerate(zip(args.nodes, args.serve, strict=True)):
            if serve is None:
                continue
            # MindIE: the master's daemon first, then the others.
            previous = self.starts[:1]
            container = args.containers[i]
            # It waits for nothing: on a node with no record yet it prints "not started" without
            # asking docker, and where the container is being made or replaced the start is redone
            # anyway (its container id is a trigger), recording what the check said before.
            alive = node_check(
                f"{node.node.name}-serve-alive", node=node.node.name, connection=node.connection, parent=self,
                script=serve.alive)
            create = alive.apply(_recorded_start(serve))
            self.starts.append(remote_step(
                f"{node.node.name}-serve", connection=node.connection, parent=self,
                create=create, delete=serve.stop,
                triggers=[serve.files_digest, container.container_id, *args.started_by],
                depends_on=[*args.after, *previous, after(alive)], timeout="10m"))
        self.ready = remote_step(
            f"{name}-ready", connection=args.nodes[0].connection, parent=self, create=args.ready_script,
            triggers=[s.id for s in self.starts], timeout=f"{args.ready_timeout_s + 60}s")
        self.endpoint = args.endpoint
        self.register_outputs({"endpoint": self.endpoint})


@dataclass(frozen=True)
class SmokeTestArgs:
    master: AscendNode
    script: str
    # What it tests: redone whenever that was redone.
    ready: pulumi.CustomResource
    stdin: pulumi.Input[str] | None = None


class SmokeTest(pulumi.ComponentResource):
    """The runbook's completion request through the served endpoint; the
    reply is an output. Redone whenever what it tests was redone."""

    def __init__(self, name: str, args: SmokeTestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:smoke:SmokeTest", name, None, opts)
        self.request = remote_step(
            f"{name}-request", connection=args.master.connection, parent=self, create=args.script,
            triggers=[args.ready.id], timeout="15m", stdin=args.stdin)
        self.reply = self.request.stdout
        self.register_outputs({"reply": self.reply})


def _stripped(text: str | None) -> str:
    return (text or "").strip()


@dataclass(frozen=True)
class GpustackServerArgs:
    stack: str
    master: AscendNode
    server: InferenceContainer
    container_name: str


class GpustackServer(pulumi.ComponentResource):
    """Runbook 002's server secrets: the registration token and the initial
    admin password, read back from the server container as secret outputs.

    (Its type token keeps the name it had when it also held the model
    deployment, so that rolled-out stacks keep their state.)"""

    def __init__(self, name: str, args: GpustackServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:gpustack:GpustackModel", name, None, opts)
        master, server = args.master, args.server
        common = {"stack": args.stack, "node": master.node, "container": args.container_name, "timeout_s": 300}
        self.token_reader = remote_step(
            f"{name}-token", connection=master.connection, parent=self, secret_stdout=True,
            create=render_template("gpustack-secret.sh.j2", purpose="Read the worker registration token",
                                   path="/var/lib/gpustack/token", **common),
            triggers=[server.container_id])
        self.password_reader = remote_step(
            f"{name}-admin-password", connection=master.connection, parent=self, secret_stdout=True,
            create=render_template("gpustack-secret.sh.j2", purpose="Read the initial admin password",
                                   path="/var/lib/gpustack/initial_admin_password", **common),
            triggers=[server.container_id])
        self.token: pulumi.Output[str] = pulumi.Output.secret(self.token_reader.stdout.apply(_stripped))
        self.admin_password: pulumi.Output[str] = pulumi.Output.secret(self.password_reader.stdout.apply(_stripped))
        self.register_outputs({"token": self.token, "admin_password": self.admin_password})


@dataclass(frozen=True)
class GpustackDeploymentArgs:
    server: GpustackServer
    workers: list[InferenceContainer]
    server_url: str
    # The `POST /v2/models` body (without cluster_id).
    request: dict
    # [{"name", "npus"}]: the workers that must be Ready first.
    expected_workers: list[dict]
    worker_timeout_s: int
    ready_timeout_s: int
    # Every GPUStack node (the server's too) with its container: on destroy, each node's
    # backend containers are waited for and removed between the model and that container.
    backends_on: list[tuple[AscendNode, InferenceContainer]] = field(default_factory=list)
    stack: str = ""
    # The worker stops them within seconds of the model's delete (its 3 s sync, then `docker stop`);
    # when a container is replaced (the model stays) nothing stops them and this is the whole wait.
    backend_removal_wait_s: int = 30
    # The CA bundle (PEM) the control host checks an https server against; None for http.
    ca_pem: str | None = None


class GpustackDeployment(pulumi.ComponentResource):
    """The model deployment: a GPUStack model resource that the control host
    creates, reads, updates and deletes through GPUStack's HTTP API
    (components/gpustack_model.py), logged in as admin with the password the
    server wrote (a secret). Redeployed in place when the server or any worker
    container was recreated (their ids are its triggers)."""

    def __init__(self, name: str, args: GpustackDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:gpustack:GpustackDeployment", name, None, opts)
        model_name = args.request["name"]
        # GPUStack's workers remove a deleted model's backend containers a few seconds later,
        # asynchronously; without this the workers' containers go first and the backends stay.
        self.backend_removal = [
            remote_step(f"{node.node.name}-gpustack-backends", connection=node.connection, parent=self,
                        create=render_template("gpustack-workloads-remove.sh.j2", undo=False, **common,
                                               purpose="Nothing at create (its undo removes the backends)"),
                        delete=render_template("gpustack-workloads-remove.sh.j2", undo=True, **common,
                                               purpose="Remove the model's backend containers GPUStack started"),
                        # A replaced container (a new worker) takes the old worker's backends with it.
                        triggers=[container.container_id])
            for node, container in args.backends_on
            for common in [{"stack": args.stack, "node": node.node, "model_name": model_name,
                            "wait_s": args.backend_removal_wait_s}]]
        self.deployment = GpustackModel(f"{name}-deploy", GpustackModelArgs(
            server_url=args.server_url, ca_pem=args.ca_pem, password=args.server.admin_password, model=args.request,
            workers=args.expected_workers, worker_timeout_s=args.worker_timeout_s,
            ready_timeout_s=args.ready_timeout_s,
            triggers=[args.server.token_reader.id, *[w.container_id for w in args.workers]]),
            pulumi.ResourceOptions(parent=self, depends_on=self.backend_removal))
        self.register_outputs({"deployment_id": self.deployment.id})
