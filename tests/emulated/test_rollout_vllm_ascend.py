"""vllm-ascend's multi-node data parallel stack (DP2/TP8/EP16) rolled out for
real onto two emulated servers: a fault caught at preflight, the full rollout
(`vllm serve` on both nodes, node1 `--headless` joining node0's DP
coordinator, no Ray, no rank table), a serve-flag change redoing only serving,
and destroy leaving nothing.

Driven through StackRollout's interface only (up / destroy, Report.did and
Report.actions), so it runs the same under whichever engine performs the
program.
"""
from __future__ import annotations

import pytest

from emulator.rollout import StackRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "dp2-tp8-ep16-vllm-ascend"
SERVING = {"node0-serve", "node1-serve", "serving-ready", "smoke-test-request"}
CONTAINER = "vllm-ascend"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-vllm-ascend", prefix="ptvas", subnet=221) as c:
        yield c


def container_ids(cluster) -> dict:
    return {n.name: node_ssh(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {CONTAINER}").strip()
            for n in cluster.nodes}


def serve_args(cluster, node: str) -> str:
    return node_ssh(cluster, node, f"docker exec {CONTAINER} ps -eo args")


def test_a_link_down_is_caught_at_preflight_before_any_container(cluster, tmp_path):
    cluster.set_fault("node1", link_down=[3])
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    try:
        report = rollout.up()
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert "node node1: device 3 link: is DOWN" in str(report.error), report.error
    started = {a.resource for a in report.actions}
    assert not started & {"node0-container", "node1-container", *SERVING}, started


@pytest.fixture(scope="module")
def rolled_out(cluster, tmp_path_factory):
    rollout = StackRollout(cluster, STACK, tmp_path_factory.mktemp("state") / "state.json", log=print)
    report = rollout.up()
    try:
        yield rollout, report
    finally:
        rollout.destroy()


def test_full_rollout(cluster, rolled_out):
    rollout, report = rolled_out
    assert report.error is None, report.error
    done = set(report.did("create"))
    for node in ("node0", "node1"):
        assert {f"{node}-weights", f"{node}-env", f"{node}-container"} <= done
        # The node checks are invokes: they ran, no resources.
        assert {f"{node}-preflight", f"{node}-peer-ping"} <= set(report.checks)
    assert SERVING <= done
    # Neither Ray nor a rank table: vLLM's own DP coordinator joins the nodes.
    assert not [r for r in done if "ray" in r or "rank-table" in r], sorted(done)
    master = cluster.nodes[0].address
    head, worker = serve_args(cluster, "node0"), serve_args(cluster, "node1")
    assert f"--data-parallel-address {master} --data-parallel-rpc-port 13389" in head, head
    assert "--headless" not in head and "--data-parallel-start-rank" not in head, head
    assert "--headless" in worker and "--data-parallel-start-rank 1" in worker, worker
    env = node_ssh(cluster, "node1", f"docker exec {CONTAINER} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                     " && echo $HCCL_IF_IP $HCCL_BUFFSIZE $VLLM_ASCEND_BALANCE_SCHEDULING'")
    assert env.split() == [cluster.nodes[1].address, "200", "1"]
    models = node_ssh(cluster, "node0", f"curl -sS http://{master}:8000/v1/models")
    assert '"deepseek_r1"' in models, models
    reply = node_ssh(cluster, "node0", f"curl -sS -H 'Content-Type: application/json' -d "
                                       f"'{{\"model\": \"deepseek_r1\", \"prompt\": \"hi\"}}' "
                                       f"http://{master}:8000/v1/completions")
    assert '"choices"' in reply, reply


def test_serve_flag_change_redoes_only_serving(cluster, rolled_out):
    rollout, _ = rolled_out
    ids = container_ids(cluster)
    report = rollout.up(["engine.max_num_seqs=32"])
    assert report.error is None, report.error
    assert set(report.did("replace")) == SERVING
    assert not {a.resource for a in report.actions if a.kind not in ("same", "replace", "update")}
    assert container_ids(cluster) == ids
    for node in ("node0", "node1"):
        assert "--max-num-seqs 32" in serve_args(cluster, node)


def test_destroy_leaves_nothing(cluster, rolled_out):
    rollout, _ = rolled_out
    assert rollout.destroy().error is None
    for node in cluster.nodes:
        assert node_ssh(cluster, node.name, "docker ps -aq").strip() == ""
        names = node_ssh(cluster, node.name, "ps -eo comm").split()
        assert not [n for n in names if n.startswith("vllm")], names
        assert node_ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"


def test_four_node_dp4_ep32_rollout_and_teardown(tmp_path):
    """The 4-node stack on its own cluster: nodes 1-3 headless with start
    ranks 1, 2, 3; the master answers only once all three have joined."""
    with own_cluster(4, "rollout-vllm-ascend-4", prefix="ptvas4", subnet=220) as four:
        rollout = StackRollout(four, "dp4-tp8-ep32-vllm-ascend", tmp_path / "state.json", log=print)
        report = rollout.up()
        try:
            assert report.error is None, report.error
            assert {f"node{i}-serve" for i in range(4)} | {"serving-ready", "smoke-test-request"} <= set(
                report.did("create"))
            for i in range(1, 4):
                assert f"--headless --data-parallel-size 4 --data-parallel-size-local 1 " \
                       f"--data-parallel-start-rank {i}" in serve_args(four, f"node{i}")
        finally:
            assert rollout.destroy().error is None
        for node in four.nodes:
            assert node_ssh(four, node.name, "docker ps -aq").strip() == ""
