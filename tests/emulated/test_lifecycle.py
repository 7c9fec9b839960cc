"""`up` is idempotent and refuses what it cannot reuse; `down` removes
everything (also after a failed `up`). These tests make their own clusters
on other subnets, beside the shared one."""

import subprocess
import sys
from pathlib import Path

import pytest

from emulator import Cluster, ClusterError, image, network, provision
from emulator.node import process_alive

from .conftest import REPO, fresh_state_dir, require_prerequisites

pytestmark = pytest.mark.emulated


def cli(state, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "emulator", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)


def leftovers(prefix: str, state: Path, pids: list[int]) -> list[str]:
    found = [f"netns {ns}" for ns in network.netns_list() if ns.startswith(prefix + "-")]
    found += [f"link {name}" for name in (f"{prefix}-br0", f"{prefix}-n0", f"{prefix}-n1")
              if network.link_exists(name)]
    found += [f"pid {pid}" for pid in pids if process_alive(pid)]
    mountinfo = Path("/proc/self/mountinfo").read_text()
    found += [f"mount under {state}" for line in mountinfo.splitlines() if str(state) in line.split()[4]]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{prefix}-node*")]
    if state.exists():
        found.append(f"state dir {state}")
    return found


def test_up_is_idempotent_and_down_removes_everything():
    require_prerequisites()
    state = fresh_state_dir("lifecycle")
    prefix = "ptlife"
    args = ["--prefix", prefix, "--subnet", "251"]
    pids = []
    got = cli(state, "up", "--nodes", "2", *args)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "cluster up: 2 nodes" in got.stdout
    try:
        again = cli(state, "up", "--nodes", "2", *args)
        assert again.returncode == 0 and "already up in" in again.stdout and "reusing" in again.stdout
        other = cli(state, "up", "--nodes", "3", *args)
        assert other.returncode == 1 and "it has 2 nodes, not 3" in other.stderr and "emulator down" in other.stderr
        assert cli(state, "status").returncode == 0

        cluster = Cluster.load(state)
        # leave real work behind on each node: a running container and an ssh-started background job
        for node in cluster.nodes:
            assert cluster.ssh(node, "docker run -d --name busy --network host "
                               + " ".join(image.base_docker_args())
                               + " ascemu/runtime:latest sleep infinity").returncode == 0
            assert cluster.ssh(node, "nohup sleep 1000 >/dev/null 2>&1 &").returncode == 0
        pids = [int(p) for n in cluster.nodes for p in network.netns_pids(n.netns)]
        assert len(pids) > 10  # holders, sshd, dockerd, containerd, shims, containers, sleeps
    finally:
        down = cli(state, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(prefix, state, pids) == []
    assert cli(state, "down").stdout.startswith("nothing to tear down")


def test_failed_up_tears_down_what_it_made():
    require_prerequisites()
    state = fresh_state_dir("failed-up")
    logs = []
    # a 100-character hostname is refused by sethostname() in node1's holder
    with pytest.raises(ClusterError) as err:
        Cluster.up(2, state, prefix="ptfail", subnet=252, hostnames=["ascend-node0", "x" * 100], log=logs.append)
    message = str(err.value)
    assert message.startswith("emulator up failed: node1: node setup failed")
    assert "cannot set hostname 'xxxx" in message and "at most 64 characters" in message
    assert any("tearing down what was made" in line for line in logs)
    assert leftovers("ptfail", state, []) == []


def test_up_refuses_a_second_cluster_on_the_same_names(cluster):
    with pytest.raises(ClusterError) as err:
        Cluster.up(1, cluster.state_dir.parent / "clash", prefix=cluster.prefix, subnet=cluster.subnet,
                   log=lambda m: None)
    assert "another emulated cluster" in str(err.value) and f"{cluster.prefix}-br0" in str(err.value)


def test_up_without_root_says_so(monkeypatch):
    monkeypatch.setattr(provision.os, "geteuid", lambda: 1000)  # preflight checks root
    with pytest.raises(ClusterError, match="needs root"):
        Cluster.up(1, "/nonexistent-state", log=lambda m: None)
