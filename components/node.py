"""AscendNode: one server reached over SSH, with its preflight facts."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from ascend_inference.facts import DeviceFacts, NodeFacts, check_node, parse_preflight, raise_first
from ascend_inference.hardware import HardwareProfile
from ascend_inference.spec import Node
from components.common import TOKEN, NodeConnection, clearly, remote_step


@dataclass(frozen=True)
class FactExpectations:
    """What a node's preflight facts are checked against."""

    devices: int
    tls_policy: str
    model_path: str
    # The chip the NPUs must be (npu-smi's name column), among others.
    profile: HardwareProfile
    # False where model.source brings the weights after preflight (a copy
    # from the master, a download): the model path may be absent then.
    model_path_required: bool = True


@dataclass(frozen=True)
class AscendNodeArgs:
    node: Node
    connection: NodeConnection
    preflight_script: str
    expect: FactExpectations
    # Runbook 001's TLS fix, when the stack asks for it.
    fix_tls_script: str | None = None


class AscendNode(pulumi.ComponentResource):
    """SSH connection, an optional TLS fix, and the read-only preflight.

    Outputs: `facts` (parsed and checked against the stack: a contradiction
    fails the rollout here, naming the node and the fact), `hostname`,
    `device_ips` (as discovered, they feed the peer check and the rank table).
    """

    facts: pulumi.Output[dict]
    hostname: pulumi.Output[str]
    device_ips: pulumi.Output[list]

    def __init__(self, name: str, args: AscendNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:node:AscendNode", name, None, opts)
        node, expect = args.node, args.expect
        self.node = node
        self.connection = args.connection
        before = []
        if args.fix_tls_script is not None:
            # Runbook 001: set every TLS switch to 0; preflight then reads the result.
            before.append(remote_step(
                f"{name}-fix-tls", connection=self.connection, create=args.fix_tls_script, parent=self,
                every_up=True))
        self.preflight = remote_step(
            f"{name}-preflight", connection=self.connection, create=args.preflight_script, parent=self,
            depends_on=before, timeout="5m",
            # Day-2: a link that went down after a good rollout stops the next `up` here.
            every_up=True)

        def checked(stdout: str) -> dict:
            facts = parse_preflight(node.name, stdout or "", expect.devices)
            problems = check_node(
                facts, devices=expect.devices, tls_policy=expect.tls_policy, declared_ips=node.device_ips,
                expected_hostname=node.hostname, model_path=expect.model_path, profile=expect.profile)
            if not expect.model_path_required:
                problems = [p for p in problems if p.fact != "model path"]
            raise_first(problems)
            return facts.to_json()

        self.facts = self.preflight.stdout.apply(clearly(checked))
        self.hostname = self.facts.apply(lambda f: f["hostname"])
        self.device_ips = self.facts.apply(lambda f: [d["ip"] for d in f["devices"]])
        self.register_outputs({"facts": self.facts, "hostname": self.hostname, "device_ips": self.device_ips})


def facts_from_json(data: dict) -> NodeFacts:
    raw = dict(data)
    raw["devices"] = [DeviceFacts(**d) for d in raw["devices"]]
    return NodeFacts(**raw)
