"""AscendNode: one server reached over SSH, with its preflight facts."""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_command import remote

from ascend_inference.facts import (
    NetworkPolicies,
    NodeFacts,
    check_host_software,
    check_network,
    check_node,
    parse_preflight,
    raise_first,
)
from ascend_inference.hardware import HardwareProfile
from ascend_inference.spec import Node
from components.common import (
    TOKEN,
    NodeConnection,
    after,
    by_value,
    clearly,
    from_checks,
    node_check,
    node_checks_of,
    remote_step,
)


@dataclass(frozen=True)
class FactExpectations:
    """What a node's preflight facts are checked against."""

    devices: int
    tls_policy: str
    model_path: str
    # The chip the NPUs must be (npu-smi's name column), among others.
    profile: HardwareProfile
    # network.lldp / netdetect / gateway: require, warn or ignore.
    network_policies: NetworkPolicies = NetworkPolicies()
    # ascend-inference:host's expected versions: {"driver": "24.1.rc3", ...}; None = not checked.
    host_versions: dict[str, str | None] = field(default_factory=dict)
    # False where model.source brings the weights after preflight (a copy
    # from the master, a download): the model path may be absent then.
    model_path_required: bool = True


@dataclass(frozen=True)
class HostStep:
    """One opt-in host provisioning step: its script and its (keeping) undo."""

    create: str
    delete: str


@dataclass(frozen=True)
class HostSteps:
    """ascend-inference:host's provisioning steps of one node (None = not asked for)."""

    driver: HostStep | None = None
    firmware: HostStep | None = None
    reboot: HostStep | None = None
    docker_runtime: HostStep | None = None
    runc_owner: HostStep | None = None


@dataclass(frozen=True)
class AscendNodeArgs:
    node: Node
    connection: NodeConnection
    preflight_script: str
    expect: FactExpectations
    # Runbook 001's TLS fix, when the stack asks for it.
    fix_tls_script: str | None = None
    host_steps: HostSteps = HostSteps()


class AscendNode(pulumi.ComponentResource):
    """SSH connection, the opt-in host provisioning steps, an optional TLS
    fix, and the read-only preflight.

    Outputs: `facts` (parsed and checked against the stack: a contradiction
    fails the rollout here, naming the node and the fact), `hostname`,
    `device_ips` (as discovered, they feed the peer check and the rank table).

    `facts` is an Output of the `NodeFacts` object itself, read only by other
    applies. The SDK turns a dict or list an apply returns into one Output
    per key and element, again in every `Output.all` that takes it: as a
    dict, the facts were two thirds of all the Outputs of a preview (360 per
    node, three times over). An object it passes through whole. The
    component's registered outputs (kept in the state) are the small
    `hostname` and `device_ips`; the stack exports each node's summary.
    """

    facts: pulumi.Output[NodeFacts]
    hostname: pulumi.Output[str]
    device_ips: pulumi.Output[list]

    def __init__(self, name: str, args: AscendNodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN}:node:AscendNode", name, None, opts)
        node, expect = args.node, args.expect
        self.node = node
        self.connection = args.connection
        before = self._host_steps(name, args.host_steps)
        if args.fix_tls_script is not None:
            # Runbook 001: set every TLS switch to 0 (redone when the script changes);
            # preflight then reads the result at every preview and up.
            before.append(remote_step(
                f"{name}-fix-tls", connection=self.connection, create=args.fix_tls_script, parent=self))
        # At every preview and up (an invoke, never a change): a link that went
        # down after a good rollout stops the next `up` here.
        self.preflight_stdout = node_check(f"{name}-preflight", node=node.name, connection=self.connection,
                                           script=args.preflight_script, parent=self, depends_on=before)

        def checked(stdout: str) -> NodeFacts:
            # A profile without a fabric (300I Duo) prints no hccn_tool sections.
            fabric_devices = expect.devices if expect.profile.network.fabric else 0
            facts = parse_preflight(node.name, stdout or "", fabric_devices)
            network_errors, network_warnings = check_network(facts, expect.profile, expect.network_policies)
            for warning in network_warnings:
                pulumi.log.warn(str(warning), resource=self)
            problems = check_node(
                facts, devices=expect.devices, tls_policy=expect.tls_policy, declared_ips=node.device_ips,
                expected_hostname=node.hostname, model_path=expect.model_path, profile=expect.profile)
            if not expect.model_path_required:
                problems = [p for p in problems if p.fact != "model path"]
            raise_first(problems + network_errors + check_host_software(facts, expected=expect.host_versions))
            return facts

        self.facts = from_checks(by_value(self.preflight_stdout.apply(clearly(checked))),
                                 node_checks_of(self.preflight_stdout))
        # What a node's steps wait for: its facts judged good.
        self.preflight = after(self.facts)
        self.hostname = self.facts.apply(lambda f: f.hostname)
        self.device_ips = self.facts.apply(lambda f: f.device_ips())
        self.register_outputs({"hostname": self.hostname, "device_ips": self.device_ips})

    def _host_steps(self, name: str, steps: HostSteps) -> list[pulumi.Resource]:
        """ascend-inference:host's provisioning, before the preflight that
        checks its result. Each step is version-gated in its script (it prints
        "already ..." and does nothing when the node has it) and redone when
        its script (package path, version) changes; its delete keeps what was
        installed. Driver before firmware (runbook 001 §2.1), then the reboot
        when the stack allows it.

        Each runs when it is created or its script changes; the preflight
        reads the versions at every preview and up, so a node that lost one
        since (a driver rolled back by hand) is refused there with the fix.
        The reboot step takes the installs' ids as triggers: a new install is
        followed by the reboot it may need."""
        done: list[pulumi.Resource] = []
        packages: list[pulumi.Resource] = []
        for role, step in (("install-driver", steps.driver), ("install-firmware", steps.firmware)):
            if step is not None:
                packages = [remote_step(f"{name}-{role}", connection=self.connection, create=step.create,
                                        delete=step.delete, parent=self, depends_on=packages, timeout="30m",
                                        replace_to_redo=False)]
                done += packages
        if steps.reboot is not None:
            # It does something only when an install of this boot waits.
            done.append(remote_step(f"{name}-host-reboot", connection=self.connection, create=steps.reboot.create,
                                    parent=self, depends_on=packages,
                                    triggers=[step.id for step in done if isinstance(step, remote.Command)]))
        docker: list[pulumi.Resource] = []
        if steps.docker_runtime is not None:
            docker = [remote_step(f"{name}-install-docker-runtime", connection=self.connection,
                                  create=steps.docker_runtime.create, delete=steps.docker_runtime.delete,
                                  parent=self, timeout="10m", replace_to_redo=False)]
            done += docker
        if steps.runc_owner is not None:
            done.append(remote_step(f"{name}-fix-runc-owner", connection=self.connection,
                                    create=steps.runc_owner.create, delete=steps.runc_owner.delete, parent=self,
                                    depends_on=docker, replace_to_redo=False))
        return done
