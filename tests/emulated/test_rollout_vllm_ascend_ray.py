"""vllm-ascend's Ray form (TP16 across two servers, stack tp16-vllm-ascend-ray)
rolled out for real onto two emulated servers by the real `pulumi` CLI
(emulator/userpath.py PulumiRollout): Ray's head on node0, node1 joining it
with `--node-ip-address`, `ray status` showing 16 NPUs, one `vllm serve
--distributed-executor-backend ray` on node0 only (the stand-in `vllm` parses
it with vLLM 0.23.0's options and asks the real Ray for 16 NPUs), the smoke
request answered, a serve-flag change redoing only the serve process and what
follows it (Ray stays), and destroy leaving nothing.
"""
from __future__ import annotations

import pytest

from tests.emulated.conftest import node_ssh, own_cluster, processes_in, rolled_out_stack

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-ascend-ray"
CONTAINER = "vllm-ascend"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-vllm-ascend-ray", prefix="ptvray", subnet=219) as c:
        yield c


def test_full_rollout_over_ray_then_destroy(cluster, tmp_path):
    with rolled_out_stack(cluster, STACK, tmp_path) as (rollout, report):
        assert report.error is None, report.error
        done = set(report.did("create"))
        assert {"node0-ray-head", "node1-ray-worker", "ray-verify", "node0-serve", "serving-ready",
                "smoke-test-request"} <= done, sorted(done)
        assert "node1-serve" not in done and not [r for r in done if "rank-table" in r], sorted(done)
        head = processes_in(cluster, "node0", CONTAINER)
        assert "--distributed-executor-backend ray --tensor-parallel-size 16" in head, head
        assert "vllm serve" not in processes_in(cluster, "node1", CONTAINER)
        status = node_ssh(cluster, "node0", f"docker exec {CONTAINER} ray status")
        assert "16.0 NPU" in status, status
        echo = "echo $HCCL_IF_IP $RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"
        env = node_ssh(cluster, "node1",
                       f"docker exec {CONTAINER} bash -c 'source /etc/ascend-inference/{STACK}/env.sh && {echo}'")
        assert env.split() == [cluster.nodes[1].address, "1"]
        # A serve flag redoes the serve process and what follows it, not Ray.
        again = rollout.up(["engine.max_num_seqs=32"])
        assert again.error is None, again.error
        assert set(again.did("replace")) == {"node0-serve", "serving-ready", "smoke-test-request"}
        assert not [a.resource for a in again.actions if a.kind not in ("same", "replace", "update")]
        assert "--max-num-seqs 32" in processes_in(cluster, "node0", CONTAINER)
        gone = rollout.destroy()
    assert gone.error is None, gone.error
    for node in cluster.nodes:
        assert node_ssh(cluster, node.name, "docker ps -aq").strip() == ""
