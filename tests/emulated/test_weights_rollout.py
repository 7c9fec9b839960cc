"""model.source on the emulated cluster: the weights copied from the master
to the other node over the cluster network (rsync over the nodes' own sshd,
the stack's key in an ssh-agent on node1 only for the copy), a second `up`
that does nothing, weights kept on destroy; and the weight faults (a git-lfs
pointer file, a truncated shard, a full filesystem) each stopping the
rollout with one line naming node, what was found and what was expected,
before any container starts."""
from __future__ import annotations

import re

import pytest

from emulator.userpath import MODEL_FIXTURE, PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
COPY = "/data/models/r1-copy"
AS_COPY = [f"model.path={COPY}", "model.source.kind=copy"]
# What comes after the weights: none of it may run when they are wrong.
LATER = {"node0-container", "node1-container", "node0-ray-head", "node1-ray-worker", "node0-serve",
         "cluster-verified", "serving-ready", "smoke-test-request"}
# The node checks: local.run invokes at every `up` (report.checks), never a change.
NODE_CHECKS = {"node0-preflight", "node1-preflight", "node0-peer-ping", "node1-peer-ping",
               "node0-image-check", "node1-image-check", "node0-serve-alive"}  # liveness: where the engine starts

ssh = node_ssh


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "weights", prefix="ptwts", subnet=237) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack's one project and state for the module: each test rolls out (with its
    own changes; `up` reverts the changes a later call leaves out) and destroys."""
    return PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("weights"), log=print)


@pytest.fixture
def master_only(cluster):
    """The weights at COPY on the master only, as a copy source starts."""
    ssh(cluster, "node0", f"rm -rf {COPY} && cp -a {MODEL_FIXTURE} {COPY}")
    ssh(cluster, "node1", f"rm -rf {COPY}")
    yield
    for node in ("node0", "node1"):
        ssh(cluster, node, f"rm -rf {COPY}")


def listing(cluster, node: str) -> str:
    return ssh(cluster, node, f"cd {COPY} && find . -type f -printf '%P %s %m\\n' | sort && "
                              "find . -type f -exec sha256sum {} + | sort")


def test_copy_fans_out_from_the_master_and_a_second_up_does_nothing(cluster, master_only, rollout):
    """node1 starts half-copied (a copy cut short: a truncated config.json) and
    the copy completes it from the master instead of failing on it; node0, the
    source, copies nothing."""
    ssh(cluster, "node1", f"mkdir -p {COPY} && head -c 4 {MODEL_FIXTURE}/config.json > {COPY}/config.json")
    try:
        report = rollout.up(AS_COPY)
        assert report.error is None, report.error
        assert "node1-weights-copy" in report.did("create")
        assert "node0-weights-copy" not in {a.resource for a in report.actions}
        assert listing(cluster, "node1") == listing(cluster, "node0")
        # The key went to an ssh-agent that ended with the copy: no agent nor
        # its socket is left on node1, and no file the rollout wrote holds the key.
        key_line = cluster.ssh_key_path.read_text().splitlines()[1]
        left = ssh(cluster, "node1", f"grep -rlF -- {key_line} {COPY} /etc/ascend-inference /var/tmp 2>/dev/null; "
                                     "ls -d /tmp/ssh-* 2>/dev/null; pgrep -x ssh-agent; true").strip()
        assert left == "", left

        # Only the node checks run again (invokes, never a change); the copy is not redone.
        again = rollout.up(AS_COPY, "--expect-no-changes")
        assert again.error is None, again.output[-3000:]
        assert again.changed() == {}
        assert set(again.checks) == NODE_CHECKS
    finally:
        assert rollout.destroy().error is None
    # Weights stay on destroy, on every node.
    assert listing(cluster, "node1") == listing(cluster, "node0") != ""


def assert_stopped_with_one_line(report, step: str, failed: list[str], words: list[str]) -> None:
    """The rollout stopped at `step` (the step the engine's events name), the
    first line its script printed naming node, found and expected, before
    anything later started. pulumi-command's `running "<the command>":` line
    comes first (Report.failed_step_output); the command is the short `bash -s`
    for every step, the copy that takes the SSH key on stdin too
    (components/common.py remote_step), so the node's line follows a short line,
    not kilobytes of quoted script."""
    printed = report.failed_step_output()
    head = report.error.splitlines()[0]
    assert re.fullmatch(r'Process exited with status \d+: running "bash -s":', head), head[:300]
    # The console the user reads: `error:` and that short line, then the node's own.
    lines = [line.strip() for line in report.output.splitlines()]
    assert f"error: {head}" in lines, report.output[-3000:]
    assert lines[lines.index(f"error: {head}") + 1] == printed[0].strip(), report.output[-3000:]
    assert "Traceback" not in report.error, report.error
    assert printed and printed[0].startswith(words[0]), report.error
    for word in words:
        assert word in printed[0], f"{word!r} not in {printed[0]!r}"
    assert failed[:1] == [step], (failed, report.error)
    started = {a.resource for a in report.actions}
    assert not started & LATER, started & LATER


WEIGHT_FAULTS = [
    ({"lfs_pointer_shard": True}, "node1-weights",
     ["node node1: model weights: model-00001-of-00002.safetensors is a git-lfs pointer file (",
      "bytes), expected the file itself (fix: `git lfs pull`"]),
    ({"truncated_shard": True}, "node1-weights",
     ["node node1: model weights: model-00002-of-00002.safetensors is 4 bytes, the manifest says 10 "]),
]


@pytest.mark.parametrize("fault,step,words", WEIGHT_FAULTS, ids=[next(iter(f)) for f, _, _ in WEIGHT_FAULTS])
def test_weight_fault_stops_the_rollout_before_serving(cluster, rollout, fault, step, words):
    cluster.set_fault("node1", **fault)
    try:
        report = rollout.up()
        failed = rollout.failed_steps()
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert_stopped_with_one_line(report, step, failed, words)


def test_a_full_disk_stops_the_copy_before_it_starts(cluster, master_only, rollout):
    cluster.set_fault("node1", full_disk=COPY)
    try:
        needed = sum(-(-int(size) // 4096) * 4096 for size in
                     ssh(cluster, "node0", f"find {COPY} -type f -printf '%s\\n'").split())
        report = rollout.up(AS_COPY)
        failed = rollout.failed_steps()
        # Nothing was written to the full filesystem.
        assert ssh(cluster, "node1", f"ls -A {COPY}").strip() == ""
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert_stopped_with_one_line(report, "node1-weights-copy", failed, [
        f"node node1: free space: 16384 bytes free at {COPY}, the copy needs {needed} (fix: free space there"])
    # The key the copy took on its (secret) stdin is in no printout.
    key_line = cluster.ssh_key_path.read_text().splitlines()[1]
    assert key_line not in report.output and key_line not in report.error
    assert "node1-weights" not in {a.resource for a in report.actions}


def test_weights_that_differ_from_the_masters_are_named(cluster, rollout):
    """A node with another version of a shard and its own, consistent
    manifest passes its own check; the cross-node comparison names it (the
    manifest itself is not counted among the 8 files)."""
    cluster.set_fault("node1", model_file_differs=True)
    try:
        report = rollout.up()
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert report.error is not None
    # The program's cross-node judgement (a NodeFactError): its one line comes first.
    message, line = report.error, report.error.splitlines()[0]
    assert line.startswith(f"node node1: model weights: {MODEL_FIXTURE} has 8 files / "), message
    assert ", node0 has 8 files / " in line, message
    assert not {a.resource for a in report.actions} & LATER
