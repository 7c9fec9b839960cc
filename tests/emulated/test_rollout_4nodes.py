"""A 4-node rollout: the TP16 vLLM-MindSpore stack widened to TP32 over four
emulated servers (the DP4/EP32 GPUStack stack needs GPUStack's own image,
which cannot be had here; its graph is covered by the graph tests)."""
from __future__ import annotations

import pytest

from emulator import Cluster
from emulator.rollout import StackRollout
from tests.emulated.conftest import fresh_state_dir, require_prerequisites

pytestmark = pytest.mark.emulated


def test_four_node_rollout_and_teardown(tmp_path):
    require_prerequisites()
    state = fresh_state_dir("rollout-4")
    cluster = Cluster.up(4, state, log=lambda m: None, prefix="ptfour", subnet=243)
    try:
        rollout = StackRollout(cluster, "tp16-vllm-mindspore", tmp_path / "state.json", log=print)
        report = rollout.up(["parallel.tp=32"])
        try:
            assert report.error is None, report.error
            assert {f"node{i}-container" for i in range(4)} <= set(report.did("create"))
            assert {"node1-ray-worker", "node2-ray-worker", "node3-ray-worker"} <= set(report.did("create"))
            status = cluster.ssh("node0", "docker exec mindspore_vllm ray status", timeout=60).stdout
            assert "32.0 NPU" in status, status
            smoke = rollout.executor.state["resources"]["command:remote:Command::smoke-test-request"]
            assert '"choices"' in smoke["outputs"]["stdout"]
        finally:
            assert rollout.destroy().error is None
        for node in cluster.nodes:
            assert cluster.ssh(node.name, "docker ps -aq", timeout=60).stdout.strip() == ""
    finally:
        assert not Cluster.down_state_dir(state, log=print)
