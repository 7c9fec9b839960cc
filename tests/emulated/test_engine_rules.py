"""The program under the engine's real rules (issue 21, item 3): the real
`pulumi` CLI with the stand-in plugins (docs/standin-plugins.md) on an
emulated cluster of its own, one rollout shared by every test, made through
a bastion (`ssh.jump_host`: the nodes' sshd answers the bastion alone), in order:

* a failing step's error shows the line naming the node and the fault
  first (the first `up` meets a container of the stack's name that the
  stack did not make), then the good `up`, through the jump host only;
* after a node reboot (its container stopped) and a container removed by
  hand on the other node, `pulumi refresh` then `pulumi up` serve again with
  one container per node, only what depends on the containers redone;
* a node's SSH port changed: the node's steps are replaced (their undo on
  the old port), its container too, and the stack serves again;
* `container.restart` is a container update in place, nothing else redone."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from emulator import image as imagelib
from emulator.userpath import PulumiRollout, node_host_key, write_sandbox
from tests.emulated.conftest import own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING = {"node0-serve", "serving-ready", "smoke-test-request"}
# The port node1's sshd also answers on for the port-change test.
SECOND_PORT = 2222
RAY_WAIT = {"RAY_raylet_start_wait_time_s": "600"}


@pytest.fixture(scope="module")
def whole_cluster():
    """Two nodes and the bastion (the third emulated node: it runs the sshd
    the stack's `ssh.jump_host` names; its docker is never used)."""
    with own_cluster(3, "engine-rules", prefix="ptrule", subnet=228) as c:
        yield c


class StackNodes:
    """The emulated cluster as the stack sees it: its nodes without the bastion."""

    def __init__(self, cluster, bastion):
        self._cluster = cluster
        self.nodes = [n for n in cluster.nodes if n is not bastion]

    def __getattr__(self, name):
        return getattr(self._cluster, name)


@pytest.fixture(scope="module")
def bastion(whole_cluster):
    return whole_cluster.nodes[-1]


@pytest.fixture(scope="module")
def cluster(whole_cluster, bastion):
    return StackNodes(whole_cluster, bastion)


def on(cluster, node: str, command: str) -> str:
    """stdout of a command run inside a node (nsenter, no ssh: the control host
    cannot reach the nodes' sshd directly); fails the test if it fails."""
    done = cluster.node(node).exec("DOCKER_HOST=unix:///run/docker.sock; export DOCKER_HOST; " + command,
                                   timeout=120)
    assert done.returncode == 0, f"{node}: {command}: {done.stderr}"
    return done.stdout


def only_from(cluster, bastion, ports) -> None:
    """In each stack node's network namespace: its sshd ports answer the
    bastion alone; anyone else (the control host) gets a TCP reset."""
    for node in cluster.nodes:
        for port in ports:
            on(cluster, node.name, f"iptables -I INPUT -p tcp --dport {port} ! -s {bastion.address} "
                                   "-j REJECT --reject-with tcp-reset")


@pytest.fixture(scope="module")
def second_sshd(cluster):
    """node1's sshd answering on SECOND_PORT too (same host key and keys), as
    while an admin moves a server's sshd; stopped by its PID after the
    rollout is destroyed."""
    node = cluster.node("node1")
    config = f"/run/ascemu/sshd_config-{SECOND_PORT}"
    pid_file = f"/run/sshd-{SECOND_PORT}.pid"
    started = node.exec(
        f"sed -e 's/^ListenAddress .*/ListenAddress {node.address}:{SECOND_PORT}/' "
        f"-e 's#^PidFile .*#PidFile {pid_file}#' /run/ascemu/sshd_config > {config} && "
        f"$(command -v sshd || echo /usr/sbin/sshd) -f {config}")
    assert started.returncode == 0, started.stderr
    try:
        yield SECOND_PORT
    finally:
        node.exec(f"kill $(cat {pid_file})")


@pytest.fixture(scope="module")
def rolled_out(cluster, bastion, second_sshd, tmp_path_factory):
    """(rollout, the failed first up, the good up): the first `up` meets a
    container named as the stack's on node1 that the stack did not create."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("rules"), log=print)
    # Sandbox mapping, not the stack: `ray start` gives up when its raylet has not
    # registered within RAY_raylet_start_wait_time_s, which a machine shared by
    # many emulated clusters can take longer than; the engine's image gets more.
    write_sandbox(cluster, by_image={rollout.base.spec.container.image: {"env": RAY_WAIT}})
    # Every step, docker and check reaches the nodes through the bastion.
    rollout.ok("config", "set", "--path", "ascend-inference:ssh.jump_host", f"root@{bastion.address}:22")
    rollout.ok("config", "set", "--path", "ascend-inference:ssh.jump_host_key", node_host_key(bastion))
    only_from(cluster, bastion, (22, second_sshd))
    name = rollout.base.spec.container.name
    on(cluster, "node1", f"docker create --name {name} {imagelib.IMAGE} true")
    failed = rollout.up()
    on(cluster, "node1", f"docker rm -f {name}")
    good = rollout.up()
    try:
        yield rollout, failed, good
    finally:
        rollout.destroy()


def container_ids(cluster, name) -> dict:
    return {n.name: on(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {name}").strip() for n in cluster.nodes}


def reboot(cluster, node: str) -> None:
    """What a reboot does to the node's containers: killed, and with the
    restart policy "no" they stay stopped (Ray and the engine with them).
    The node's `reboot` stand-in gives it a new boot id (emulator/standins/host_tools.py)."""
    on(cluster, node, "/usr/local/sbin/reboot && for c in $(docker ps -q); do docker kill \"$c\" >/dev/null; done")


def dependents(rollout: PulumiRollout, name: str) -> set[str]:
    """Every resource that depends on `name` in the state, directly or not."""
    state = json.loads(rollout.ok("stack", "export"))["deployment"]["resources"]
    by_urn = {r["urn"]: r["urn"].rsplit("::", 1)[-1] for r in state}
    waits = {by_urn[r["urn"]]: {by_urn[d] for d in r.get("dependencies") or [] if d in by_urn}
             | {by_urn[d] for deps in (r.get("propertyDependencies") or {}).values() for d in deps if d in by_urn}
             for r in state}
    found: set[str] = set()
    frontier = {name}
    while frontier:
        frontier = {r for r, on in waits.items() if on & frontier} - found
        found |= frontier
    return found


def plain(value):
    """A state value as `stack export --show-secrets` shows it: a secret's plaintext is JSON."""
    if isinstance(value, dict) and "plaintext" in value:
        return json.loads(value["plaintext"])
    return value


def serving_again(cluster, rollout: PulumiRollout) -> None:
    """One running container of the stack per node, and the smoke test's reply."""
    name = rollout.base.spec.container.name
    for node in cluster.nodes:
        listed = on(cluster, node.name, f"docker ps -a --filter label=ascend-inference/stack={STACK} "
                                         "--format '{{.Names}} {{.State}}'").split("\n")
        assert [line for line in listed if line] == [f"{name} running"], (node.name, listed)
    assert '"choices"' in rollout.outputs("smoke-test-request")["stdout"]


def test_a_failing_step_names_the_node_and_the_fault_first(rolled_out):
    """pulumi-command's failure text quotes the command before the output
    (commandOutputs.go `run`): the command is the short `bash -s`, so the
    line after `error:` is the script's own, naming the node and the fault."""
    _, failed, good = rolled_out
    assert failed.error is not None
    output = failed.output
    fault = re.search(r"^\s*node \"?node1\"?: a container named \S+ .* exists that stack", output, re.M)
    assert fault, output[-4000:]
    before = output[:fault.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
    assert before == 'error: Process exited with status 7: running "bash -s":', before[:300]
    assert "#!/usr/bin/env bash" not in output, output[-4000:]
    # Fixed as the line says, the next up rolls out.
    assert good.error is None, good.error


def test_the_rollout_went_through_the_jump_host(cluster, bastion, rolled_out):
    """`ssh.jump_host`: pulumi-command's `proxy`, docker's ProxyCommand and
    the checks' system ssh all go through the bastion; the control host's own
    connections to the nodes' sshd are reset (only_from), so the good `up`
    could only have gone that way."""
    rollout, _, good = rolled_out
    assert good.error is None, good.error
    for node in cluster.nodes:
        direct = cluster.ssh(node.name, "true", timeout=60)
        assert direct.returncode == 255, (node.name, direct.returncode, direct.stderr)
    resources = rollout.resources()
    proxies = {plain(r["outputs"]["connection"])["proxy"]["host"] for r in resources.values()
               if r["type"] == "command:remote:Command"}
    assert proxies == {bastion.address}
    state = json.loads(rollout.ok("stack", "export", "--show-secrets"))["deployment"]["resources"]
    docker_opts = [plain(r["inputs"].get("sshOpts")) for r in state if r["type"] == "pulumi:providers:docker"]
    assert docker_opts and all(f"root@{bastion.address}" in json.dumps(o) and "ProxyCommand=" in json.dumps(o)
                               for o in docker_opts), docker_opts


def test_after_a_reboot_and_a_container_removed_by_hand_refresh_then_up_serve_again(cluster, rolled_out):
    """node1 rebooted (its container stopped) and node0's container removed by
    hand: one `pulumi refresh` drops both (docker_container's Read), one
    `pulumi up` makes both again and redoes only what depends on them."""
    rollout, _, good = rolled_out
    assert good.error is None, good.error
    name = rollout.base.spec.container.name
    before = container_ids(cluster, name)
    redone_if_gone = dependents(rollout, "node0-container") | dependents(rollout, "node1-container")
    reboot(cluster, "node1")
    on(cluster, "node0", f"docker rm -f {name}")
    report = rollout.refresh()
    assert report.error is None, report.output[-3000:]
    # Read: a missing container, and a stopped one that must run (removed), are dropped.
    assert not {"node0-container", "node1-container"} & set(rollout.resources())
    assert on(cluster, "node1", f"docker ps -aq --filter name=^{name}$").strip() == ""
    report = rollout.up()
    assert report.error is None, report.output[-3000:]
    changed = report.changed()
    assert (changed.pop("node0-container"), changed.pop("node1-container")) == ("create", "create")
    # Nothing upstream of the containers (files, weights, rank tables, the gate) is redone.
    assert set(changed) <= redone_if_gone, sorted(set(changed) - redone_if_gone)
    assert SERVING <= set(changed)
    after = container_ids(cluster, name)
    assert all(after[n] != before[n] for n in before)
    serving_again(cluster, rollout)


def test_a_changed_ssh_port_redoes_the_node_on_the_new_port(cluster, rolled_out, second_sshd):
    """docs/rollout.md "A node's address or port changed": every step of the
    node is replaced, its undo first over the old connection, and its
    container is made again through the new `ssh://` (a label carries it)."""
    rollout, _, good = rolled_out
    assert good.error is None, good.error
    address = cluster.node("node1").address
    node1_steps = {n for n, r in rollout.resources().items()
                   if r["type"] == "command:remote:Command"
                   and (plain(r["outputs"].get("connection")) or {}).get("host") == address}
    assert node1_steps
    name = rollout.base.spec.container.name
    before = container_ids(cluster, name)
    report = rollout.up([f"nodes[1].port={second_sshd}"])
    assert report.error is None, report.output[-3000:]
    changed = report.changed()
    assert {n: changed.get(n) for n in node1_steps} == dict.fromkeys(node1_steps, "replace")
    assert changed.get("node1-container") == "replace" and "node0-container" not in changed
    resources = rollout.resources()
    assert {plain(resources[n]["outputs"]["connection"])["port"] for n in node1_steps} == {second_sshd}
    label = on(cluster, "node1", f"docker inspect -f '{{{{index .Config.Labels \"ascend-inference/docker-host\"}}}}' "
                                  f"{shlex.quote(name)}")
    assert label.strip() == f"ssh://root@{address}:{second_sshd}"
    after = container_ids(cluster, name)
    assert after["node0"] == before["node0"] and after["node1"] != before["node1"]
    serving_again(cluster, rollout)


def test_a_restart_policy_change_updates_the_container_in_place(cluster, rolled_out):
    rollout, _, good = rolled_out
    assert good.error is None, good.error
    name = rollout.base.spec.container.name
    ids = container_ids(cluster, name)
    # up() states the whole difference from the stack: the port test's change
    # (the test before this one on the shared rollout) stays as it is.
    report = rollout.up([f"nodes[1].port={SECOND_PORT}", "container.restart=unless-stopped"])
    assert report.error is None, report.output[-3000:]
    # resourceDockerContainerUpdate: a `docker update` of the restart policy, nothing else redone.
    assert report.changed() == {"node0-container": "update", "node1-container": "update"}
    for node in cluster.nodes:
        got = on(cluster, node.name, f"docker inspect -f '{{{{.HostConfig.RestartPolicy.Name}}}}' {name}")
        assert got.strip() == "unless-stopped", (node.name, got)
    assert container_ids(cluster, name) == ids
