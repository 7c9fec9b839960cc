"""The peer-check topology (`ascend_inference.peers`) and the peer-ping
script rendered from it: the runbook's all-pairs check for small clusters,
ring neighbours plus the master beyond ALL_PAIRS_UP_TO nodes."""
from __future__ import annotations

import re

import pytest

from ascend_inference.peers import ALL_PAIRS_UP_TO, ping_targets, shape
from ascend_inference.render import declared_device_ips, render_node, render_peer_ping
from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure


def links(count: int) -> set[tuple[int, int]]:
    return {(i, j) for i in range(count) for j in ping_targets(count, i)}


@pytest.mark.parametrize("count", [2, 3, 4, 9, ALL_PAIRS_UP_TO])
def test_small_clusters_ping_every_peer(count):
    assert links(count) == {(i, j) for i in range(count) for j in range(count) if i != j}
    assert shape(count) == "all pairs"


@pytest.mark.parametrize("count", [ALL_PAIRS_UP_TO + 1, 40, 257, 1000])
def test_large_clusters_ping_ring_neighbours_and_the_master(count):
    assert shape(count) == "ring neighbours and the master"
    for i in range(count):
        targets = ping_targets(count, i)
        expected = {(i - 1) % count, (i + 1) % count, 0} - {i}
        assert set(targets) == expected, i
        assert targets == sorted(targets) and i not in targets
    pinged_by = {j: {i for i, t in links(count) if t == j} for j in range(count)}
    # Every node is checked from at least two others; the master from everyone.
    assert min(len(v) for v in pinged_by.values()) >= 2
    assert pinged_by[0] == set(range(1, count))
    # Linear: at most three pings per node.
    assert len(links(count)) <= 3 * count


def test_large_cluster_links_connect_every_node():
    count = 100
    reached, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for j in ping_targets(count, i):
            if j not in reached:
                reached.add(j)
                frontier.append(j)
    assert reached == set(range(count))


def test_single_node_has_no_peers():
    assert ping_targets(1, 0) == [] and shape(1) == "no peers"
    with pytest.raises(ValueError):
        ping_targets(4, 4)


@pytest.mark.parametrize("index", [-1, 4, 5, 100])
def test_an_index_outside_the_cluster_is_refused(index):
    with pytest.raises(ValueError, match=f"node index {index} is not in a cluster of 4"):
        ping_targets(4, index)


def test_the_all_pairs_limit_is_16_nodes():
    # The docstring's figure (128 NPUs, 15 sequential pings per device): 16 nodes all pairs, 17 the ring.
    assert ALL_PAIRS_UP_TO == 16
    assert len(ping_targets(16, 5)) == 15 and shape(16) == "all pairs"
    assert ping_targets(17, 5) == [0, 4, 6] and shape(17) == "ring neighbours and the master"


def pinged_ips(script: str) -> list[tuple[str, str]]:
    """(peer, ip) lines of the here-documents the script feeds to ping_peers."""
    return re.findall(r"^(node\d+) (\S+)$", script, flags=re.M)


def scaled(count: int):
    base = load_stack("tp16-vllm-mindspore")
    return loaded_with_config(base, scaled_config(base, count))


def test_rendered_ping_script_names_exactly_the_targets():
    """Beyond the threshold the script holds 3 peers x 8 devices whatever the
    size, each device pinging the same device index of the peer."""
    loaded = scaled(40)
    ips = declared_device_ips(loaded)
    for index in (0, 1, 20, 39):
        script = render_node(loaded, index).scripts.peer_ping.text
        targets = [loaded.spec.nodes[j].name for j in ping_targets(40, index)]
        expected = [(name, ips[name][d]) for d in range(8) for name in targets]
        assert pinged_ips(script) == expected, index
        # Rendering from only the targets' IPs gives the same script.
        assert render_peer_ping(loaded, index, {name: ips[name] for name in targets}).text == script


def test_small_stack_ping_script_is_all_pairs():
    loaded = load_stack("tp16-vllm-mindspore")
    ips = declared_device_ips(loaded)
    names = [n.name for n in loaded.spec.nodes]
    for index, name in enumerate(names):
        script = render_node(loaded, index).scripts.peer_ping.text
        peers = [p for p in names if p != name]
        assert pinged_ips(script) == [(p, ips[p][d]) for d in range(8) for p in peers]
