"""A node's faults during `pulumi up`, repaired by the documented next step
(docs/recovery.md), under the real `pulumi` CLI on the emulated cluster:

* a node rebooted while the first `up` runs its steps (every process of the
  node killed, sshd and dockerd started again, its container left exited:
  Cluster.reboot), then `pulumi refresh` and `pulumi up`;
* a node unreachable for 60 s (its link down) while an `up` works on it, then
  back: the `up` survives, or fails naming the node, and `pulumi up` repairs.

Each case ends with a smoke-tested deployment, one container per node, one Ray
node per node, one serving process, nothing pending. One stack, one chain: the
second case starts from the first one's repaired deployment. The fault lands
when the engine announces the step (its event log, as in test_recovery.py).
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster
from tests.emulated.test_recovery import pending_operations, serving_processes, stack_containers, step_started

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
# How long the second case's node stays unreachable (the fault's length, not a test timeout).
UNREACHABLE_S = 60


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "recovery-faults", prefix="ptrbt", subnet=239) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    started = time.monotonic()
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("recovery-faults"), log=print)
    try:
        yield rollout
    finally:
        # No `pulumi destroy`: the cluster's teardown removes the nodes with all
        # the rollout left on them (destroy has its tests elsewhere; it cost 43 s here).
        # The module's cost in CI (reported, never asserted).
        print(f"test_recovery_faults: {time.monotonic() - started:.0f} s of rollouts")


def one_of_each(cluster, rollout: PulumiRollout) -> None:
    """A smoke-tested deployment: one container per node, one Ray node per node,
    one serving process, nothing pending."""
    assert '"choices"' in rollout.resources()["smoke-test-request"]["outputs"]["stdout"]
    assert pending_operations(rollout) == []
    containers = stack_containers(cluster)
    assert {n: len(ids) for n, ids in containers.items()} == {"node0": 1, "node1": 1}, containers
    container = rollout.base.spec.container.name
    status = node_ssh(cluster, "node0", f"docker exec {container} ray status")
    assert "/16.0 NPU" in status, status  # two Ray nodes of 8 NPUs, no third
    assert len(serving_processes(cluster, container)) == 1, serving_processes(cluster, container)


def test_a_node_rebooted_mid_rollout_then_refresh_and_up(cluster, rollout):
    running = rollout.start("up", "--yes", "--skip-preview")
    reached = step_started(running, "node1-ray-worker")
    if reached:
        cluster.reboot("node1")
    cut = rollout.finish(running)
    assert reached, f"the up ended before it started node1-ray-worker:\n{cut.output[-3000:]}"
    # The node came back as from a power cycle: its container exited, no Ray, a new sshd.
    name = rollout.base.spec.container.name
    assert node_ssh(cluster, "node1", f"docker inspect -f '{{{{.State.Running}}}}' {name}").strip() == "false"
    print("the up during the reboot:", "FAILED: " + (cut.error or "")[-1500:] if cut.error else "done")
    # docs/recovery.md: a refresh drops the exited container from the state (and the
    # stopped one from the node: docker_container's Read), the up makes it again.
    refreshed = rollout.refresh()
    assert refreshed.error is None, refreshed.output[-3000:]
    assert "node1-container" not in rollout.resources()
    report = rollout.up()
    assert report.error is None, report.output[-3000:]
    assert "node1-container" in report.did("create")
    one_of_each(cluster, rollout)


def set_link(cluster, node: str, state: str) -> None:
    """The node's cable: the host side of its veth on the cluster's bridge."""
    subprocess.run(["ip", "link", "set", cluster.node(node).veth, state], check=True)


def test_a_node_unreachable_for_a_minute_mid_rollout_then_up(cluster, rollout):
    """node1's container replaced (`up --replace`: the steps on node1 run again), its
    link down for a minute when the engine starts that replacement, then up again."""
    urn = next(r["urn"] for r in json.loads(rollout.ok("stack", "export"))["deployment"]["resources"]
               if r["urn"].endswith("::node1-container"))
    running = rollout.start("up", "--yes", "--skip-preview", "--replace", urn)
    reached = step_started(running, "node1-container")
    try:
        if reached:
            set_link(cluster, "node1", "down")
            time.sleep(UNREACHABLE_S)
    finally:
        set_link(cluster, "node1", "up")
    report = rollout.finish(running)
    assert reached, f"the up ended before it started node1-container:\n{report.output[-3000:]}"
    if report.error is not None:
        # It failed: the error names the node (its resource, and its address), and the
        # documented next step is the same `pulumi up` again.
        print("the up during the outage failed:", report.error[-1500:])
        failed = rollout.failed_steps()
        assert failed and failed[0].startswith("node1-"), (failed, report.output[-3000:])
        assert cluster.node("node1").address in report.output, report.output[-3000:]
        report = rollout.up()
        assert report.error is None, report.output[-3000:]
    else:
        print("the up survived the outage")
    one_of_each(cluster, rollout)
