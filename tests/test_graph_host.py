"""ascend-inference:host, graph tier: the program under the SDK's mocks. The
provisioning steps exist exactly when the stack asks for them, run before
the preflight that checks their result (driver before firmware before the
reboot, as runbook 001 orders them), keep what they installed on delete,
and a changed package or version redoes the step; the preflight refuses a
node whose versions differ from the stack's, naming node, found, expected."""
from __future__ import annotations

import functools

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.stackfile import LoadedStack, load_stack
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.config import apply_change
from ascendctl.preview.diff import diff_graphs
from ascendctl.preview.graph import Graph
from ascendctl.preview.providers import replace_keys
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.step_script import undo_script

pytestmark = pytest.mark.graph

DRIVER_RUN = "/root/Ascend-hdk-910b-npu-driver_24.1.rc3_linux-aarch64.run"
FIRMWARE_RUN = "/root/Ascend-hdk-910b-npu-firmware_7.5.0.1.129.run"
RUNTIME_RUN = "/root/Ascend-docker-runtime_6.0.0_linux-aarch64.run"
ALL_STEPS = ("host.driver=24.1.rc3", "host.firmware=7.5.0.1.129",
             f"host.packages.driver={DRIVER_RUN}", f"host.packages.firmware={FIRMWARE_RUN}",
             f"host.packages.docker_runtime={RUNTIME_RUN}", "host.fix_runc_owner=true", "host.allow_reboot=true")
ROLES = ("install-driver", "install-firmware", "host-reboot", "install-docker-runtime", "fix-runc-owner")


def with_changes(stack: str, *changes: str) -> LoadedStack:
    base = load_stack(stack)
    config = base.raw_config
    for change in changes:
        config = apply_change(config, change, base.file)
    return loaded_with_config(base, config)


@functools.cache
def graph(stack: str, *changes: str) -> Graph:
    return record_stack(with_changes(stack, *changes))


def names(g: Graph) -> set[str]:
    return {r.name for r in g.resources}


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-vllm-mindspore", "dp4-ep32-gpustack"])
def test_no_step_unless_the_stack_asks(stack):
    present = names(graph(stack))
    assert not {n for n in present if n.endswith(ROLES)}, present


@pytest.mark.parametrize("stack", ["tp16-mindie", "tp16-lmdeploy"])
def test_every_step_on_every_node_before_its_preflight(stack):
    g = graph(stack, *ALL_STEPS)
    nodes = [n.name for n in load_stack(stack).spec.nodes]
    for node in nodes:
        steps = {role: g.by_name(f"{node}-{role}") for role in ROLES}
        # The preflight is a node check (an invoke): it runs after every step.
        preflight = g.check(f"{node}-preflight")
        assert preflight.node == node and preflight.ran
        for role, step in steps.items():
            assert step.type == "command:remote:Command", role
            assert g.check_waits_for(preflight, step), f"{node}-preflight does not wait for {node}-{role}"
            # Under the node's component, next to its preflight.
            assert step.parent_urn == preflight.parent_urn, role
        # Runbook 001 §2.1: the driver, then the firmware; the reboot after both.
        assert g.depends_on(steps["install-firmware"], steps["install-driver"])
        assert g.depends_on(steps["host-reboot"], steps["install-firmware"])
        # runc's owner after the docker runtime (whose install restarts docker).
        assert g.depends_on(steps["fix-runc-owner"], steps["install-docker-runtime"])
        # Another node's steps are not waited for: nodes provision in parallel.
        for other in nodes:
            if other != node:
                assert not g.depends_on(steps["install-firmware"], g.by_name(f"{other}-install-driver"))
                assert not g.check_waits_for(preflight, g.by_name(f"{other}-install-driver"))


def test_the_undo_keeps_what_was_installed():
    g = graph("tp16-mindie", *ALL_STEPS)
    for role in ("install-driver", "install-firmware", "install-docker-runtime", "fix-runc-owner"):
        step = g.by_name(f"node0-{role}")
        # Its only command says so: nothing is removed or run.
        commands = [line for line in undo_script(step.inputs).splitlines() if line and not line.startswith("#")]
        assert commands[0] == "set -euo pipefail" and len(commands) == 2, (role, commands)
        assert commands[1].startswith("echo ") and commands[1].endswith(': kept on the node"'), (role, commands)
        # Nothing to undo before a replacement: the new package installs over the old.
        assert step.options["delete_before_replace"] is False, role
    reboot = g.by_name("node0-host-reboot")
    assert "delete" not in reboot.inputs or not reboot.inputs["delete"]


def test_a_new_package_or_version_redoes_the_step_and_not_the_others():
    packages = (f"host.packages.driver={DRIVER_RUN}", f"host.packages.firmware={FIRMWARE_RUN}")
    newer = "/root/Ascend-hdk-910b-npu-driver_24.1.0_linux-aarch64.run"
    # The preview's healthy nodes have the stack's versions, so only the step itself differs.
    after = graph("tp16-mindie", *packages, f"host.packages.driver={newer}", "host.driver=24.1.0")
    changes = {c.name: c.action for c in diff_graphs(graph("tp16-mindie", *packages), after,
                                                     replace_keys=replace_keys)}
    assert changes.get("node0-install-driver") == "replace" and changes.get("node1-install-driver") == "replace"
    assert changes.get("node0-install-firmware") != "replace"
    assert not {n for n, action in changes.items() if action == "replace" and n.endswith(("-serve", "-container"))}


def test_a_node_with_another_driver_stops_at_its_preflight(monkeypatch):
    original = preview_stack.mock_outputs

    def mock_outputs(ld):
        inner = original(ld)

        def outputs_for(args):
            out = inner(args)
            if args.name == "node1-preflight":
                out = {**out, "stdout": out["stdout"].replace("Version=24.1.rc3", "Version=23.0.3")}
            return out

        return outputs_for

    monkeypatch.setattr(preview_stack, "mock_outputs", mock_outputs)
    with pytest.raises(NodeFactError) as info:
        record_stack(load_stack("tp16-mindie"))
    assert str(info.value).splitlines()[0] == (
        "node node1: driver version: 23.0.3 found, the stack expects 24.1.rc3 (ascend-inference:host.driver) "
        "(fix: install it with host.packages.driver, or change host.driver)")
