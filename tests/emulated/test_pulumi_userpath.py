"""A stack rolled out onto the emulated cluster by the real `pulumi` CLI, the
way the README's user path runs it: `pulumi stack select --create`,
`python -m emulator configure` (config set-all --path, config set --secret),
`pulumi preview --diff`, `pulumi up --yes`, `pulumi refresh --yes`,
`pulumi destroy --yes`. The `command` and `docker` plugins are the test
stand-ins of emulator/plugins (docs/standin-plugins.md); the engine, the
language host and the program are the real ones."""
from __future__ import annotations

import json

import pytest

from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING = {"node0-serve", "serving-ready", "smoke-test-request"}
ssh = node_ssh


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "pulumi-userpath", prefix="ptreal", subnet=223) as c:
        yield c


@pytest.fixture(scope="module")
def rolled_out(cluster, tmp_path_factory):
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("userpath"), log=print)
    report = rollout.up()
    try:
        yield rollout, report
    finally:
        rollout.destroy()


def container_ids(cluster, name) -> dict:
    return {n.name: ssh(cluster, n.name, f"docker inspect -f '{{{{.Id}}}}' {name}").strip() for n in cluster.nodes}


def test_pulumi_up_rolls_the_stack_out(cluster, rolled_out):
    rollout, report = rolled_out
    assert report.error is None, report.error
    done = set(report.did("create"))
    for node in ("node0", "node1"):
        # The node checks (preflight, peer pings, image check) are invokes, no resources.
        assert {f"{node}-weights", f"{node}-env", f"{node}-container"} <= done
    assert {"node0-ray-head", "node1-ray-worker", "ray-verify", *SERVING} <= done
    # The stand-ins were the plugins the engine used, and said so.
    assert "using pulumi-resource-command from $PATH" in report.output
    assert "using pulumi-resource-docker from $PATH" in report.output
    resources = rollout.resources()
    # What the preflight checks read on the nodes, as the stack exports it.
    facts = json.loads(rollout.ok("stack", "output", "node_facts", "--json"))
    assert {name: f["hostname"] for name, f in facts.items()} == {n.name: n.hostname for n in cluster.nodes}
    assert '"choices"' in resources["smoke-test-request"]["outputs"]["stdout"]
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        info = json.loads(ssh(cluster, node.name, f"docker inspect {container}"))[0]
        assert info["State"]["Running"]
        assert info["Config"]["Labels"]["ascend-inference/stack"] == STACK
        assert resources[f"{node.name}-container"]["id"] == info["Id"]
    status = ssh(cluster, "node0", f"docker exec {container} ray status")
    assert "16.0 NPU" in status, status


def test_preview_of_the_rolled_out_stack_expects_no_changes(rolled_out):
    rollout, _ = rolled_out
    report = rollout.preview("--diff", "--expect-no-changes")
    assert report.error is None, report.output[-3000:]


def test_an_unchanged_stack_updates_with_no_changes(rolled_out):
    """The node checks run at every `up` (invokes), yet an unchanged stack is no change."""
    rollout, _ = rolled_out
    report = rollout.up([], "--expect-no-changes")
    assert report.error is None, report.output[-3000:]
    assert report.changed() == {}


def test_a_rewritten_check_script_redoes_nothing(rolled_out):
    """A new preflight script (an upgrade of this project) with the same facts
    replaces no container, Ray or serving step: facts flow by value."""
    rollout, _ = rolled_out
    template = rollout.project / "ascend_inference" / "templates" / "preflight.sh.j2"
    original = template.read_text()
    template.write_text(original + "\n# a line an upgrade of this project might add\n")
    try:
        report = rollout.up([], "--expect-no-changes")
    finally:
        template.write_text(original)
    assert report.error is None, report.output[-3000:]
    assert report.changed() == {}


def test_a_link_down_after_a_good_up_stops_the_next_up_naming_it(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    cluster.set_fault("node1", link_down=[3])
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node1")
    assert report.error is not None
    # The cause, from node1's own preflight first, not a peer's failed ping.
    assert report.error.startswith("node node1: device 3 link: is DOWN"), report.error
    assert "FAILED" not in report.error and "peer-ping" not in report.error, report.error
    assert report.changed() == {}
    # Fixed: the next up passes without --replace and redoes nothing.
    report = rollout.up([], "--expect-no-changes")
    assert report.error is None, report.output[-3000:]
    assert container_ids(cluster, container) == ids


def test_a_serve_flag_change_replaces_only_serving(cluster, rolled_out):
    rollout, _ = rolled_out
    container = rollout.base.spec.container.name
    ids = container_ids(cluster, container)
    report = rollout.up(["engine.max_num_seqs=128"])
    assert report.error is None, report.error
    assert set(report.did("replace")) == SERVING
    assert not any(r.endswith(("-container", "-ray-head", "-ray-worker", "-env")) for r in report.changed())
    assert container_ids(cluster, container) == ids
    assert "--max-num-seqs=128" in ssh(cluster, "node0", f"docker exec {container} ps -eo args")


def test_destroy_leaves_no_container(cluster, rolled_out):
    rollout, _ = rolled_out
    report = rollout.destroy()
    assert report.error is None, report.error
    assert rollout.resources() == {}
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"docker ps -aq --filter name=^{container}$").strip() == ""
