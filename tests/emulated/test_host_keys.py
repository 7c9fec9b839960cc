"""Pinned SSH host keys on the emulated cluster: the rollout pins each node's
real sshd key (emulator/rollout.py emulated_config), and a node whose sshd
key was replaced is refused before any step runs on it, with one line naming
both fingerprints (components/program.py _host_keys)."""
from __future__ import annotations

import pytest

from ascend_inference.spec import host_key_fingerprint
from emulator.rollout import StackRollout, node_host_key
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "host-keys", prefix="ptkeys", subnet=222) as c:
        yield c


def test_the_emulated_stack_pins_every_nodes_real_key(cluster, tmp_path):
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    loaded, _ = rollout.loaded()
    from ascend_inference.host_keys import scan

    offered = scan([(n.host, 22) for n in loaded.spec.nodes], "ssh-ed25519")
    for node in loaded.spec.nodes:
        assert node.host_key and offered[(node.host, 22)] == [node.host_key], node.name


def test_a_node_whose_host_key_changed_is_refused_before_anything_runs(cluster, tmp_path):
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    pinned = node_host_key(cluster.nodes[1])
    # The node's sshd gets a new host key (as a reinstalled node, or another
    # machine at its address, would have); SIGHUP makes sshd read it.
    node_ssh(cluster, "node1", "set -e; cd /run/ascemu; rm -f ssh_host_ed25519_key ssh_host_ed25519_key.pub; "
                               "ssh-keygen -q -t ed25519 -N '' -C replaced -f ssh_host_ed25519_key; "
                               "kill -HUP \"$(cat /run/sshd.pid)\"")
    new = node_host_key(cluster.nodes[1])
    assert new != pinned
    # The cluster's own ssh (used below to look at the node) trusts the new key.
    known = cluster.known_hosts_path.read_text().replace(pinned, new)
    cluster.known_hosts_path.write_text(known)
    import time

    # sshd re-executes on SIGHUP: wait until it answers with the new key
    # (the cluster's ssh checks it strictly), a bounded number of tries.
    for _ in range(120):
        if cluster.ssh("node1", "true", timeout=120).returncode == 0:
            break
        time.sleep(0.5)
    rollout.config["ascend-inference:nodes"][1]["host_key"] = pinned  # the stack still pins the old key
    report = rollout.up()
    assert report.error is not None
    lines = str(report.error).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("node node1: SSH host key changed: "), lines[0]
    assert host_key_fingerprint(pinned) in lines[0] and host_key_fingerprint(new) in lines[0], lines[0]
    # Before anything ran: the executor ran no step at all, on any node,
    # though its own ssh (which trusts the new key) would have connected.
    assert report.actions == [], report.actions
    assert cluster.ssh("node1", "true", timeout=120).returncode == 0
