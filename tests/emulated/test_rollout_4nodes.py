"""A 4-node rollout: the TP16 vLLM-MindSpore stack widened to TP32 over four
emulated servers (the DP4/EP32 GPUStack stack needs GPUStack's own image,
which cannot be had here; its graph is covered by the graph tests)."""
from __future__ import annotations

import pytest

from emulator.rollout import StackRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated


def test_four_node_rollout_and_teardown(tmp_path):
    with own_cluster(4, "rollout-4", prefix="ptfour", subnet=243) as cluster:
        rollout = StackRollout(cluster, "tp16-vllm-mindspore", tmp_path / "state.json", log=print)
        report = rollout.up(["parallel.tp=32"])
        try:
            assert report.error is None, report.error
            assert {f"node{i}-container" for i in range(4)} <= set(report.did("create"))
            assert {"node1-ray-worker", "node2-ray-worker", "node3-ray-worker"} <= set(report.did("create"))
            status = node_ssh(cluster, "node0", "docker exec mindspore_vllm ray status")
            assert "32.0 NPU" in status, status
            smoke = rollout.executor.state["resources"]["command:remote:Command::smoke-test-request"]
            assert '"choices"' in smoke["outputs"]["stdout"]
        finally:
            assert rollout.destroy().error is None
        for node in cluster.nodes:
            assert node_ssh(cluster, node.name, "docker ps -aq").strip() == ""
