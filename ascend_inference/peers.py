"""Which peers each node pings before HCCL starts (`hccn_tool -ping`).

Small clusters get the runbook's check: every node pings every peer, device
d to device d (the same network plane). That is N*(N-1) pings, and a ping
script that grows with the cluster on every node, so beyond
ALL_PAIRS_UP_TO nodes each node pings only its two ring neighbours and the
master: at most 3 peers per node whatever the size. Every node is then
pinged by at least two others and pings at least two, so the faults that
belong to one node (a wrong or undeclared device IP, a link that is down,
a wrong netmask or gateway on one device) are still caught before HCCL
starts; a route broken only between two nodes that are not neighbours is
left to HCCL's own connect timeout.

Pure: no Pulumi import.
"""
from __future__ import annotations

# Up to 16 nodes (128 NPUs, beyond every runbook's cluster) the all-pairs
# check costs a node at most 15 sequential pings per device; past that it
# grows with the cluster on every node, and so would the preview's graph.
ALL_PAIRS_UP_TO = 16


def ping_targets(count: int, index: int, all_pairs_up_to: int = ALL_PAIRS_UP_TO) -> list[int]:
    """Indices of the nodes that node `index` of `count` pings, ascending."""
    if not 0 <= index < count:
        raise ValueError(f"node index {index} is not in a cluster of {count}")
    if count <= all_pairs_up_to:
        return [j for j in range(count) if j != index]
    targets = {(index - 1) % count, (index + 1) % count, 0}
    targets.discard(index)
    return sorted(targets)


def shape(count: int, all_pairs_up_to: int = ALL_PAIRS_UP_TO) -> str:
    """What the peer check does for a cluster of `count` nodes, in words."""
    if count < 2:
        return "no peers"
    if count <= all_pairs_up_to:
        return "all pairs"
    return "ring neighbours and the master"
