"""Pinned SSH host keys on the emulated cluster, under the real `pulumi` CLI:
`python -m emulator configure` pins each node's real sshd key
(emulator/userpath.py machine_settings), and a node whose sshd key was
replaced is refused by `pulumi up` before any step or node check runs on it,
with one line naming both fingerprints (components/program.py _host_keys)."""
from __future__ import annotations

import pytest

from ascend_inference.spec import NAMESPACE, host_key_fingerprint
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster, program_error_lines

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "host-keys", prefix="ptkeys", subnet=222) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack selected and configured for the cluster, not rolled out."""
    return PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("host-keys"), log=print)


def configured(rollout: PulumiRollout, key: str) -> str:
    return rollout.ok("config", "get", "--path", f"{NAMESPACE}:{key}").strip()


def offered_key(host: str) -> str:
    """The ed25519 key the sshd at `host` offers now (`ssh-keyscan`)."""
    from ascend_inference.host_keys import scan

    return scan([(host, 22)], "ssh-ed25519")[(host, 22)][0]


def test_the_emulated_stack_pins_every_nodes_real_key(cluster, rollout):
    from ascend_inference.host_keys import scan

    pinned = {configured(rollout, f"nodes[{i}].host"): configured(rollout, f"nodes[{i}].host_key")
              for i in range(len(cluster.nodes))}
    offered = scan([(host, 22) for host in pinned], "ssh-ed25519")
    for host, key in pinned.items():
        assert key and offered[(host, 22)] == [key], host


def test_a_node_whose_host_key_changed_is_refused_before_anything_runs(cluster, rollout):
    host = cluster.nodes[1].address
    pinned = configured(rollout, "nodes[1].host_key")
    assert offered_key(host) == pinned  # the stack pins the key node1 has now
    # The node's sshd gets a new host key (as a reinstalled node, or another
    # machine at its address, would have); SIGHUP makes sshd read it.
    node_ssh(cluster, "node1", "set -e; cd /run/ascemu; rm -f ssh_host_ed25519_key ssh_host_ed25519_key.pub; "
                               "ssh-keygen -q -t ed25519 -N '' -C replaced -f ssh_host_ed25519_key; "
                               "kill -HUP \"$(cat /run/sshd.pid)\"")
    # The new key as node1's sshd holds it (read without ssh, which still trusts the old one).
    done = cluster.exec("node1", ["cat", "/run/ascemu/ssh_host_ed25519_key.pub"], check=True)
    new = " ".join(done.stdout.split()[:2])
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
    report = rollout.up()
    assert report.error is not None
    # The program's one line; the engine adds its own "program exited" line after it.
    lines = program_error_lines(report)
    assert len(lines) == 1, report.error
    assert lines[0].startswith("node node1: SSH host key changed: "), lines[0]
    assert host_key_fingerprint(pinned) in lines[0] and host_key_fingerprint(new) in lines[0], lines[0]
    # Before anything ran: no resource step and no node check, on any node,
    # though the cluster's ssh (which trusts the new key) would have connected.
    assert report.actions == [], report.actions
    assert report.checks == [], report.checks
    assert cluster.ssh("node1", "true", timeout=120).returncode == 0
