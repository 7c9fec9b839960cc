"""A 4-node rollout by the real `pulumi` CLI (emulator/userpath.py
PulumiRollout, the README's user path): the TP16 vLLM-MindSpore stack widened
to TP32 over four emulated servers, as a user with four servers edits it
(`pulumi config set --path` of the name and host of nodes[2] and nodes[3] and
of `parallel.tp=32`, then `python -m emulator configure`). The DP4/EP32 GPUStack stack needs GPUStack's
own image, which cannot be had here; its graph is covered by the graph tests."""
from __future__ import annotations

import pytest

from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"


def test_four_node_rollout_and_teardown(tmp_path):
    with own_cluster(4, "rollout-4", prefix="ptfour", subnet=243) as cluster:
        # The stack names two nodes: the other two are added as a user adds them (a name
        # and an address each; configure then pins their host keys and device IPs), with
        # the TP over all 32 NPUs (the stack is refused while tp x pp x dp is not the world).
        added = [f"nodes[{i}].{key}={value}" for i in (2, 3)
                 for key, value in (("name", cluster.nodes[i].name), ("host", cluster.nodes[i].address))]
        rollout = PulumiRollout(cluster, STACK, tmp_path, log=print, settings=[*added, "parallel.tp=32"])
        try:
            report = rollout.up()
            assert report.error is None, report.error
            assert {f"node{i}-container" for i in range(4)} <= set(report.did("create"))
            assert {"node1-ray-worker", "node2-ray-worker", "node3-ray-worker"} <= set(report.did("create"))
            status = node_ssh(cluster, "node0", "docker exec mindspore_vllm ray status")
            assert "32.0 NPU" in status, status
            assert '"choices"' in rollout.outputs("smoke-test-request")["stdout"]
            assert rollout.stack_output("world_size") == 32
        finally:
            gone = rollout.destroy()
        assert gone.error is None, gone.error
        assert rollout.resources() == {}
        for node in cluster.nodes:
            assert node_ssh(cluster, node.name, "docker ps -aq").strip() == ""
