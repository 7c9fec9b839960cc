"""vllm-ascend's multi-node data parallel stack (DP2/TP8/EP16) rolled out for
real onto two emulated servers by the real `pulumi` CLI (emulator/userpath.py
PulumiRollout): a fault caught at preflight, the full rollout (`vllm serve` on
both nodes, node1 `--headless` joining node0's DP coordinator, no Ray, no rank
table), a serve-flag change redoing only serving, and destroy leaving nothing.
"""
from __future__ import annotations

import pytest

from emulator.userpath import PulumiRollout
from tests.emulated.conftest import changed, container_ids, node_ssh, own_cluster, processes_in, rolled_out_stack

pytestmark = pytest.mark.emulated

STACK = "dp2-tp8-ep16-vllm-ascend"
SERVING = {"node0-serve", "node1-serve", "serving-ready", "smoke-test-request"}
CONTAINER = "vllm-ascend"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-vllm-ascend", prefix="ptvas", subnet=221) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack selected and configured (not rolled out); destroyed when the module ends."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("vllm-ascend"), log=print)
    try:
        yield rollout
    finally:
        rollout.destroy()


def test_a_link_down_is_caught_at_preflight_before_any_container(cluster, rollout):
    cluster.set_fault("node1", link_down=[3])
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
    assert report.error is not None and report.error.startswith("node node1: device 3 link: is DOWN"), report.error
    assert not changed(report) & {"node0-container", "node1-container", *SERVING}, report.changed()


@pytest.fixture(scope="module")
def rolled_out(rollout):
    return rollout, rollout.up()


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
    assert not [r for r in rollout.resources() if "ray" in r or "rank-table" in r], sorted(rollout.resources())
    master = cluster.nodes[0].address
    head, worker = processes_in(cluster, "node0", CONTAINER), processes_in(cluster, "node1", CONTAINER)
    assert f"--data-parallel-address {master} --data-parallel-rpc-port 13389" in head, head
    assert "--headless" not in head and "--data-parallel-start-rank" not in head, head
    assert "--headless" in worker and "--data-parallel-start-rank 1" in worker, worker
    env = node_ssh(cluster, "node1", f"docker exec {CONTAINER} bash -c 'source /etc/ascend-inference/{STACK}/env.sh"
                                     " && echo $HCCL_IF_IP $HCCL_BUFFSIZE $VLLM_ASCEND_BALANCE_SCHEDULING'")
    assert env.split() == [cluster.nodes[1].address, "200", "1"]
    # Served behind the stack's API key (engine.api_key_secret): a client sends it.
    key = rollout.ok("config", "get", "ascend-inference:servingApiKey").strip()
    assert "Unauthorized" in node_ssh(cluster, "node0", f"curl -sS http://{master}:8000/v1/models")
    models = node_ssh(cluster, "node0", f"curl -sS -H 'Authorization: Bearer {key}' http://{master}:8000/v1/models")
    assert '"deepseek_r1"' in models, models
    reply = node_ssh(cluster, "node0", f"curl -sS -H 'Authorization: Bearer {key}' "
                                       "-H 'Content-Type: application/json' -d "
                                       f"'{{\"model\": \"deepseek_r1\", \"prompt\": \"hi\"}}' "
                                       f"http://{master}:8000/v1/completions")
    assert '"choices"' in reply, reply


def test_serve_flag_change_redoes_only_serving(cluster, rolled_out):
    rollout, _ = rolled_out
    ids = container_ids(cluster, CONTAINER)
    report = rollout.up(["engine.max_num_seqs=32"])
    assert report.error is None, report.error
    assert set(report.did("replace")) == SERVING
    assert not {a.resource for a in report.actions if a.kind not in ("same", "replace", "update")}
    assert container_ids(cluster, CONTAINER) == ids
    for node in ("node0", "node1"):
        assert "--max-num-seqs 32" in processes_in(cluster, node, CONTAINER)


def test_destroy_leaves_nothing(cluster, rolled_out):
    rollout, _ = rolled_out
    report = rollout.destroy()
    assert report.error is None, report.error
    assert rollout.resources() == {}
    for node in cluster.nodes:
        assert node_ssh(cluster, node.name, "docker ps -aq").strip() == ""
        names = node_ssh(cluster, node.name, "ps -eo comm").split()
        assert not [n for n in names if n.startswith("vllm")], names
        assert node_ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"


def test_four_node_dp4_ep32_rollout_and_teardown(tmp_path):
    """The 4-node stack on its own cluster: nodes 1-3 headless with start
    ranks 1, 2, 3; the master answers only once all three have joined."""
    with own_cluster(4, "rollout-vllm-ascend-4", prefix="ptvas4", subnet=220) as four:
        with rolled_out_stack(four, "dp4-tp8-ep32-vllm-ascend", tmp_path) as (rollout, report):
            assert report.error is None, report.error
            assert {f"node{i}-serve" for i in range(4)} | {"serving-ready", "smoke-test-request"} <= set(
                report.did("create"))
            for i in range(1, 4):
                assert f"--headless --data-parallel-size 4 --data-parallel-size-local 1 " \
                       f"--data-parallel-start-rank {i}" in processes_in(four, f"node{i}", CONTAINER)
            gone = rollout.destroy()
        assert gone.error is None, gone.error
        for node in four.nodes:
            assert node_ssh(four, node.name, "docker ps -aq").strip() == ""
