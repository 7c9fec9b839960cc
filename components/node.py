"""AscendNode: one server reached over SSH, with its preflight facts."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from ascend_inference.facts import NodeFacts, check_node, parse_preflight, raise_first
from ascend_inference.render import NodeRender
from components.common import TOKEN, clearly, connection_for, remote_step
from ascend_inference.spec import ClusterSpec


@dataclass(frozen=True)
class AscendNodeArgs:
    spec: ClusterSpec
    rendered: NodeRender
    private_key: pulumi.Input[str]


class AscendNode(pulumi.ComponentResource):
    """SSH connection, an optional TLS fix, and the read-only preflight.

    Outputs: `facts` (parsed and checked against the stack: a contradiction
    fails the rollout here, naming the node and the fact), `hostname`,
    `device_ips` (as discovered, they feed the rank table).
    """

    facts: pulumi.Output[dict]
    hostname: pulumi.Output[str]
    device_ips: pulumi.Output[list]

    def __init__(self, name: str, args: AscendNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:node:AscendNode", name, None, opts)
        spec, rendered = args.spec, args.rendered
        node = rendered.ctx.node
        self.node = node
        self.connection = connection_for(spec, node, args.private_key)
        before = []
        if rendered.scripts.fix_tls is not None:
            # Runbook 001: set every TLS switch to 0; preflight then reads the result.
            before.append(remote_step(
                f"{name}-fix-tls", connection=self.connection, create=rendered.scripts.fix_tls.command, parent=self,
                every_up=True))
        self.preflight = remote_step(
            f"{name}-preflight", connection=self.connection, create=rendered.scripts.preflight.command, parent=self,
            depends_on=before, timeout="5m",
            # Day-2: a link that went down after a good rollout stops the next `up` here.
            every_up=True)
        devices = spec.profile.devices_per_node

        def checked(stdout: str) -> dict:
            facts = parse_preflight(node.name, stdout or "", devices)
            raise_first(check_node(
                facts, devices=devices, tls_policy=spec.network.hccl_tls, declared_ips=node.device_ips,
                expected_hostname=node.hostname, model_path=spec.model.path,
                profile=spec.profile))
            return facts.to_json()

        self.facts = self.preflight.stdout.apply(clearly(checked))
        self.hostname = self.facts.apply(lambda f: f["hostname"])
        self.device_ips = self.facts.apply(lambda f: [d["ip"] for d in f["devices"]])
        self.register_outputs({"facts": self.facts, "hostname": self.hostname, "device_ips": self.device_ips})


def facts_from_json(data: dict) -> NodeFacts:
    from ascend_inference.facts import DeviceFacts

    raw = dict(data)
    raw["devices"] = [DeviceFacts(**d) for d in raw["devices"]]
    return NodeFacts(**raw)
