"""A cut `pulumi up` repaired by the documented next step (docs/recovery.md),
under the real `pulumi` CLI on the emulated cluster.

One stack, one cluster, one chain of operations: each case starts where the
last one left the stack (an `up` cut at the next stage), so the whole issue
costs about three full rollouts. A stage is hit from the engine's own event
log (`--event-log`, read while `pulumi up` runs): the signal goes to the CLI
the moment the engine announces the step (its resourcePreEvent), by PID.

- SIGINT is a user's Ctrl-C: it reaches the CLI alone (the engine starts its
  plugins in their own process group), which cancels the update and ends.
- SIGKILL is the control host dying: the CLI and every process under it
  (language host, program, plugins, their ssh clients) are killed at once,
  so a step on a node is cut wherever it was.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.userpath import PulumiRollout, Report, RunningOperation, read_events
from tests.emulated.conftest import REPO, node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
LABEL = "ascend-inference/stack"
ssh = node_ssh


# --- driving a cut `pulumi up` -------------------------------------------------

def named(metadata: dict, resource: str) -> bool:
    """`resource` is a resource's name, or TYPE::NAME with the type's last part
    (`AscendNode::node0`: a component and a container step share the name node0)."""
    kind, _, name = resource.rpartition("::")
    urn_name = metadata["urn"].rsplit("::", 1)[-1]
    return urn_name == name and (not kind or metadata.get("type", "").endswith(f":{kind}"))


def step_started(running: RunningOperation, resource: str) -> bool:
    """Wait until the engine starts `resource`'s step in this operation (not in its
    preview); False when the operation ends first. Bounded by the operation: the
    CLI either reaches the step or exits. The whole log is read each round: `up`
    writes its preview's events, then truncates the file for the update's."""
    while True:
        ended = running.process.poll() is not None
        for event in read_events(running.events):
            body = event.get("resourcePreEvent")
            if body and not body.get("planning") and named(body["metadata"], resource):
                return True
        if ended:
            return False
        time.sleep(0.1)


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL the CLI and everything it started, at once: stopped first (none can
    start another), then killed. Only processes this test started."""
    stopped: set[int] = set()
    while True:
        tree = {pid, *descendants(pid)} - stopped
        if not tree:
            break
        for p in tree:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        stopped |= tree
    for p in stopped:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cut_up(rollout: PulumiRollout, resource: str, sig: signal.Signals) -> Report:
    """`pulumi up --yes`, cut with `sig` when the engine starts `resource`. Its
    preview is skipped (`--skip-preview`): it runs the same node checks and
    changes nothing, and the cut lands in the update either way."""
    running = rollout.start("up", "--yes", "--skip-preview")
    reached = step_started(running, resource)
    if reached:
        if sig == signal.SIGKILL:
            kill_tree(running.process.pid)
        else:
            running.process.send_signal(sig)
    report = rollout.finish(running)
    assert reached, f"the up ended before it started {resource}:\n{report.output[-3000:]}"
    return report


def pending_operations(rollout: PulumiRollout) -> list[dict]:
    state = json.loads(rollout.ok("stack", "export"))
    return state["deployment"].get("pending_operations") or []


def locks(rollout: PulumiRollout) -> list[str]:
    """The file backend's update locks of the stack (.pulumi/locks/...)."""
    return [p.name for p in (rollout.workdir / "backend" / ".pulumi" / "locks").rglob("*.json")]


def leftovers(rollout: PulumiRollout, *extra: str, state: str | None = None) -> subprocess.CompletedProcess:
    """`python3 -m ascendctl leftovers --stack FILE [--state -] ...` as docs/recovery.md
    runs it, with the user's ssh (the cluster's wrapper on PATH) and the stack file
    `pulumi config` wrote."""
    stack_file = rollout.project / "stacks" / f"Pulumi.{rollout.stack}.yaml"
    argv = [sys.executable, "-m", "ascendctl", "leftovers", "--stack", str(stack_file), *extra]
    if state is not None:
        argv += ["--state", "-"]
    done = subprocess.run(argv, cwd=REPO, env=rollout.env, input=state, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


# docs/recovery.md: a checkpoint the killed CLI was writing, restored from the file
# backend's backup of the one before (`<stack>.json.bak`, in the checkpoint's own
# format: its `checkpoint.latest` is what `pulumi stack import` takes as `deployment`).
RESTORE = ("import json, sys; c = json.load(sys.stdin); "
           "json.dump({'version': c['version'], 'deployment': c['checkpoint']['latest']}, sys.stdout)")


def stacks_dir(rollout: PulumiRollout) -> Path:
    return rollout.workdir / "backend" / ".pulumi" / "stacks" / "ascend-inference"


def drop_empty_checkpoint_metadata(rollout: PulumiRollout) -> bool:
    """docs/recovery.md, "A cut checkpoint": the file backend's metadata beside the
    checkpoint (`<stack>.json.attrs`) left empty by the kill, the checkpoint whole.
    Removes it and the cut write's temporary file; False when that is not the case."""
    attrs = stacks_dir(rollout) / f"{rollout.stack}.json.attrs"
    if not attrs.exists() or attrs.stat().st_size:
        return False
    attrs.unlink()
    for temporary in stacks_dir(rollout).glob(f"{rollout.stack}.json.*.tmp"):
        temporary.unlink()
    return True


def restore_checkpoint_backup(rollout: PulumiRollout) -> None:
    backup = stacks_dir(rollout) / f"{rollout.stack}.json.bak"
    restored = rollout.workdir / "restored-state.json"
    with open(backup) as source, open(restored, "w") as out:
        subprocess.run([sys.executable, "-c", RESTORE], stdin=source, stdout=out, check=True)
    rollout.ok("stack", "import", "--file", str(restored))


def repair_cut_checkpoint(rollout: PulumiRollout, stderr: str) -> None:
    """docs/recovery.md, "A cut checkpoint": the kill landed while the CLI wrote the
    checkpoint (a race; seen here), and every command fails until it is repaired."""
    assert "failed to load checkpoint" in stderr, stderr
    if drop_empty_checkpoint_metadata(rollout):
        print("the killed CLI left the checkpoint's metadata empty: removed it")
        rollout.ok("stack", "export")
    else:
        print("the killed CLI left a cut checkpoint: restoring its backup")
        # `pulumi stack import` takes the stack's lock, and `pulumi cancel` cannot
        # load the stack to remove the dead CLI's: its lock files go by hand
        # (pulumi/pulumi pkg/backend/diy/backend.go ImportDeployment -> Lock).
        for lock in (rollout.workdir / "backend" / ".pulumi" / "locks").rglob("*.json"):
            lock.unlink()
        restore_checkpoint_backup(rollout)


def recover_from_kill(rollout: PulumiRollout) -> None:
    """docs/recovery.md, "killed": the lock the dead CLI left, a checkpoint it was
    writing (repaired when cut: `pulumi cancel` itself cannot load it then), its
    pending operations, then whatever it left on the nodes outside the state."""
    cancelled = rollout.run("cancel", "--yes")
    if cancelled.returncode != 0:
        repair_cut_checkpoint(rollout, cancelled.stderr)
        rollout.ok("cancel", "--yes")
    exported = rollout.run("stack", "export")
    if exported.returncode != 0:
        repair_cut_checkpoint(rollout, exported.stderr)
    report = rollout.operation("refresh", "--yes", "--clear-pending-creates")
    assert report.error is None, report.output[-3000:]
    leftovers(rollout, "--remove", state=rollout.ok("stack", "export"))
    assert pending_operations(rollout) == []
    assert locks(rollout) == []


def stack_containers(cluster) -> dict[str, list[str]]:
    return {n.name: ssh(cluster, n.name, f"docker ps -aq --filter label={LABEL}={STACK}").split()
            for n in cluster.nodes}


# --- the chain -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "recovery", prefix="ptrecov", subnet=234) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    started = time.monotonic()
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("recovery"), log=print)
    try:
        yield rollout
    finally:
        rollout.destroy()
        # The module's cost in CI (reported, never asserted).
        print(f"test_recovery: {time.monotonic() - started:.0f} s of rollouts")


def test_ctrl_c_during_the_node_checks_cancels_cleanly(rollout):
    report = cut_up(rollout, "AscendNode::node0", signal.SIGINT)
    assert "update canceled" in report.error, report.output[-3000:]
    # Ctrl-C lets the engine finish and record what it started: nothing pending, no lock.
    assert pending_operations(rollout) == []
    assert locks(rollout) == []


def test_killed_during_the_node_checks_then_cancel_and_refresh(rollout):
    report = cut_up(rollout, "AscendNode::node0", signal.SIGKILL)
    assert report.error is not None
    assert locks(rollout), "a killed CLI leaves its lock"
    # The next up is refused by the lock, with the backend's message.
    refused = rollout.run("up", "--yes")
    assert refused.returncode != 0
    assert "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete " \
           "the lock file with `pulumi cancel`." in refused.stderr, refused.stderr
    recover_from_kill(rollout)


def test_killed_during_container_creation_then_recovered(cluster, rollout):
    cut_up(rollout, "node0-container", signal.SIGKILL)
    recover_from_kill(rollout)
    # Whatever the cut `docker create` left is gone with the leftovers; the state holds no container of node0.
    assert "node0-container" not in rollout.resources()
    assert stack_containers(cluster)["node0"] == []


def test_ctrl_c_during_container_creation(cluster, rollout):
    report = cut_up(rollout, "node0-container", signal.SIGINT)
    assert "update canceled" in report.error, report.output[-3000:]
    assert pending_operations(rollout) == [] and locks(rollout) == []


def test_ctrl_c_during_ray_start(rollout):
    report = cut_up(rollout, "node0-ray-head", signal.SIGINT)
    assert "update canceled" in report.error, report.output[-3000:]
    assert pending_operations(rollout) == [] and locks(rollout) == []


def test_killed_during_ray_start_then_recovered(rollout):
    cut_up(rollout, "node1-ray-worker", signal.SIGKILL)
    recover_from_kill(rollout)


def test_killed_during_serving_start_then_recovered(rollout):
    cut_up(rollout, "node0-serve", signal.SIGKILL)
    recover_from_kill(rollout)


def test_ctrl_c_during_the_serving_readiness_wait(rollout):
    report = cut_up(rollout, "serving-ready", signal.SIGINT)
    assert "update canceled" in report.error, report.output[-3000:]
    assert pending_operations(rollout) == [] and locks(rollout) == []


def serving_processes(cluster, container: str) -> list[str]:
    """The engine's processes in node0's container (runbook 000's `vllm-mindspore serve ...`)."""
    lines = ssh(cluster, "node0", f"docker exec {container} ps -eo pid,args").splitlines()[1:]
    return [line for line in lines if "vllm-mindspore serve " in line and "ps -eo" not in line]


def test_the_next_up_completes_with_one_of_each(cluster, rollout):
    """After the cuts: `pulumi up` ends with a smoke-tested deployment, one
    container per node, one Ray node per node, one serving process, nothing
    pending. A second `up` while it runs is refused by the lock."""
    running = rollout.start("up", "--yes")
    assert step_started(running, "AscendNode::node0")
    # The first `up` holds its lock while it is stopped: on a busy machine it once ended
    # before the second CLI had started, and the second then ran (35 unchanged).
    os.kill(running.process.pid, signal.SIGSTOP)
    try:
        second = rollout.run("up", "--yes")
    finally:
        os.kill(running.process.pid, signal.SIGCONT)
    report = rollout.finish(running)
    assert report.error is None, report.output[-3000:]
    assert second.returncode != 0
    assert "error: the stack is currently locked by 1 lock(s)." in second.stderr, second.stderr
    resources = rollout.resources()
    assert '"choices"' in resources["smoke-test-request"]["outputs"]["stdout"]
    assert pending_operations(rollout) == [] and locks(rollout) == []
    containers = stack_containers(cluster)
    assert {n: len(ids) for n, ids in containers.items()} == {"node0": 1, "node1": 1}, containers
    container = rollout.base.spec.container.name
    status = ssh(cluster, "node0", f"docker exec {container} ray status")
    assert "/16.0 NPU" in status, status  # two Ray nodes of 8 NPUs, no third
    assert len(serving_processes(cluster, container)) == 1, serving_processes(cluster, container)


def test_a_killed_serving_process_is_restarted_by_the_next_up_once(cluster, rollout):
    """The engine killed after a good `up`: `pulumi preview` shows its start
    replaced, the next plain `pulumi up` restarts it (the readiness wait and
    the smoke test again, no container), and the `up` after that changes
    nothing (`--expect-no-changes`): the healthy engine is not restarted again
    (components/serving.py ServingProcess, serve-alive.sh.j2)."""
    container = rollout.base.spec.container.name
    [engine] = serving_processes(cluster, container)
    ssh(cluster, "node0", f"docker exec {container} kill -9 {engine.split()[0]}")
    assert serving_processes(cluster, container) == []
    preview = rollout.preview()
    assert preview.error is None, preview.output[-3000:]
    # A preview's events are all "planning" (Report leaves them out): its printed plan.
    planned = [line.split()[:4] for line in preview.output.splitlines() if "command:remote:Command" in line]
    assert ["+-", "command:remote:Command", "node0-serve", "replace"] in planned, preview.output[-3000:]
    report = rollout.up([])
    assert report.error is None, report.output[-3000:]
    assert {"node0-serve", "serving-ready", "smoke-test-request"} <= set(report.did("replace"))
    assert not any(r.endswith("-container") for r in report.changed()), report.changed()
    [restarted] = serving_processes(cluster, container)
    again = rollout.up([], "--expect-no-changes")
    assert again.error is None and again.changed() == {}, (again.changed(), again.output[-3000:])
    assert serving_processes(cluster, container) == [restarted]


def test_lost_state_leftovers_listed_removed_and_the_next_up_starts_clean(cluster, rollout):
    stack_dir = f"/etc/ascend-inference/{STACK}"
    rollout.ok("stack", "rm", "--force", "--yes", "--preserve-config")
    listed = leftovers(rollout).stdout.splitlines()
    containers = stack_containers(cluster)
    for node in cluster.nodes:
        [ident] = containers[node.name]
        assert any(line.startswith(f"{node.name}: container mindspore_vllm ({ident[:12]})") for line in listed), listed
        assert f"{node.name}: directory {stack_dir}" in listed
    # One container and the stack's directory per node, nothing else.
    assert listed[-1] == f"4 left by stack {STACK} outside its state; remove them with --remove", listed
    removed = leftovers(rollout, "--remove").stdout
    assert "node0: removed" in removed and "node1: removed" in removed, removed
    assert stack_containers(cluster) == {"node0": [], "node1": []}
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"test -e {stack_dir} && echo left || echo gone").strip() == "gone"
    assert leftovers(rollout).stdout.strip() == f"nothing of stack {STACK} on its nodes outside its state"
    rollout.ok("stack", "select", "--create", STACK)
    report = rollout.up()
    assert report.error is None, report.output[-3000:]
    assert {n: len(ids) for n, ids in stack_containers(cluster).items()} == {"node0": 1, "node1": 1}
    assert len(serving_processes(cluster, rollout.base.spec.container.name)) == 1
