"""One truth for "what a change redoes": the offline `python -m ascendctl diff`
and the real `pulumi preview --diff` (the real CLI and engine, the stand-in
plugins of emulator/plugins) on the same changes of one rolled-out stack must
say the same replace / update / create / delete / no-change per resource.

Where the offline diff cannot know (what a step does depends on what only the
nodes or the rollout give), it says so: its action is then `replace-or-update`,
`replace-or-same` or `update-or-same`, and the real engine's action must be one
of the two. Nothing else is accepted.

One emulated cluster of three nodes (the third is reachable for "node added":
a preview runs the node checks on every node), one `pulumi up` of the 2-node
stack, then per change: arrange the nodes (what the new setting needs there,
e.g. the re-addressed NPU of a new device IP), set the config with
`pulumi config`, preview, compare, and restore the stack file and the nodes.
The table and its outcome are in docs/cli.md ("What a change redoes").
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ascend_inference.spec import NAMESPACE
from emulator.userpath import PulumiRollout, UserPathError, read_events, write_sandbox
from tests.emulated.conftest import own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-lmdeploy"
NEW_DEVICE_IP = "198.19.1.101"   # node1 device 0 re-addressed (the emulator's device IPs are 198.19.<node>.<dev+1>)
NEW_SSH_PORT = 2222
NEW_MODEL_PATH = "/data/models/deepseek-r1-b"


class TwoNodes:
    """The cluster as the 2-node stack sees it: its first two nodes."""

    def __init__(self, cluster):
        self._cluster = cluster
        self.nodes = cluster.nodes[:2]

    def __getattr__(self, name):
        return getattr(self._cluster, name)


@dataclass
class Case:
    name: str
    sets: list[str] = field(default_factory=list)          # KEY=VALUE, as `--set` and `config set --path`
    removes: list[str] = field(default_factory=list)       # KEY, as `config rm --path`
    arrange: Callable[[object], contextlib.AbstractContextManager] | None = None


# ----------------------------------------------------------------- arrangements

@contextlib.contextmanager
def readdressed_device(cluster) -> Iterator[None]:
    """node1's NPU 0 re-addressed by its administrator: the new address on the node, in /etc/hccn.conf."""
    node = cluster.nodes[1]
    old = node.device_ips[0]
    node.exec(f"ip addr add {NEW_DEVICE_IP}/32 dev eth0 && sed -i 's/^address_0=.*/address_0={NEW_DEVICE_IP}/' "
              "/etc/hccn.conf", check=True)
    try:
        yield
    finally:
        node.exec(f"ip addr del {NEW_DEVICE_IP}/32 dev eth0; sed -i 's/^address_0=.*/address_0={old}/' /etc/hccn.conf",
                  check=True)


@contextlib.contextmanager
def second_sshd(cluster) -> Iterator[None]:
    """node1's sshd also listening on the new port (same host key), as an administrator moves it."""
    node = cluster.nodes[1]
    config = (Path(node.run_dir) / "sshd_config").read_text()
    moved = config.replace(f"ListenAddress {node.address}:{node.ssh_port}",
                           f"ListenAddress {node.address}:{NEW_SSH_PORT}").replace(
        "PidFile /run/sshd.pid", "PidFile /run/sshd-moved.pid")
    (Path(node.run_dir) / "sshd_config_moved").write_text(moved)
    node.exec("/usr/sbin/sshd -f /run/ascemu/sshd_config_moved", check=True)
    try:
        yield
    finally:
        # The sshd started above, by the PID it wrote.
        node.exec("kill $(cat /run/sshd-moved.pid)", check=True)


@contextlib.contextmanager
def tls_switched_on(cluster) -> Iterator[None]:
    """Every NPU's TLS switch on, as `hccl_tls: enabled` expects."""
    for node in cluster.nodes[:2]:
        cluster.set_fault(node.name, tls_on=list(range(8)))
    try:
        yield
    finally:
        for node in cluster.nodes[:2]:
            cluster.clear_faults(node.name)


@contextlib.contextmanager
def second_model_dir(cluster) -> Iterator[None]:
    """The weights at the new path too (the same files, as a copy would have them)."""
    for node in cluster.nodes[:2]:
        node.exec(f"ln -sfn /data/models/deepseek-r1 {NEW_MODEL_PATH}", check=True)
    try:
        yield
    finally:
        for node in cluster.nodes[:2]:
            node.exec(f"rm -f {NEW_MODEL_PATH}", check=True)


def node_added(cluster) -> list[str]:
    from emulator.userpath import node_host_key

    node = cluster.nodes[2]
    sets = [f"nodes[2].name={node.name}", f"nodes[2].host={node.address}", f"nodes[2].hostname={node.hostname}",
            f"nodes[2].host_key={node_host_key(node)}"]
    sets += [f"nodes[2].device_ips[{d}]={ip}" for d, ip in enumerate(node.device_ips)]
    return sets + ["parallel.tp=24"]


CASES = [
    Case("serve flag", ["engine.cache_max_entry_count=0.7"]),
    Case("env var", ["engine.env.LMDEPLOY_LOG_LEVEL=INFO"]),
    Case("image", ["container.image=lmdeploy_dlinfer:a2-v0.14.0-rebuilt"]),
    Case("device IP", [f"nodes[1].device_ips[0]={NEW_DEVICE_IP}"], arrange=readdressed_device),
    Case("ray_port", ["engine.ray_port=6380"]),
    Case("ssh port", [f"nodes[1].port={NEW_SSH_PORT}"], arrange=second_sshd),
    Case("restart policy", ["container.restart=unless-stopped"]),
    Case("node added", []),             # its sets come from the cluster (node_added)
    Case("node removed", ["parallel.tp=8", "model.quantization=a8w4"], removes=["nodes[1]"]),
    Case("TLS policy", ["network.hccl_tls=enabled"], arrange=tls_switched_on),
    Case("model path", [f"model.path={NEW_MODEL_PATH}"], arrange=second_model_dir),
    Case("rank-table path", ["engine.rank_table_path=/data/hm/rank_table_b.json"]),
]

# The real engine's step ops (apitype.OpType) as the actions compared.
ENGINE_ACTION = {"same": "same", "read": "same", "refresh": "same", "update": "update", "create": "create",
                 "delete": "delete", "replace": "replace", "create-replacement": "replace",
                 "delete-replaced": "replace", "discard": "delete", "discard-replaced": "replace"}
RANK = {"same": 0, "update": 1, "delete": 2, "create": 3, "replace": 4}


def engine_actions(events: Path) -> dict[str, str]:
    """Per custom resource (providers left out), its strongest step in one preview's event log."""
    actions: dict[str, str] = {}
    gone: set[str] = set()
    for event in read_events(events):
        body = event.get("resourcePreEvent")
        if not body:
            continue
        meta = body["metadata"]
        state = meta.get("new") or meta.get("old") or {}
        if not state.get("custom", False) or meta.get("type", "").startswith("pulumi:providers:"):
            continue
        name = meta["urn"].rsplit("::", 1)[-1]
        if meta["op"] == "remove-pending-replace":
            # Deleted first for a delete-before-replace, then not registered again: gone.
            gone.add(name)
            continue
        action = ENGINE_ACTION[meta["op"]]
        if RANK[action] >= RANK[actions.get(name, "same")]:
            actions[name] = action
    return {**actions, **{name: "delete" for name in gone}}


def offline_actions(stack_file: Path, assignments: list[str]) -> dict[str, str]:
    """Per custom resource (providers left out), what `python -m ascendctl diff` says."""
    from ascendctl.preview.stack import recorded_changes

    changes, before, after = recorded_changes(str(stack_file), assignments)
    custom = {r.name for g in (before, after) for r in g.resources
              if r.custom and not r.type.startswith("pulumi:providers:")}
    actions = {name: "same" for name in custom}
    actions.update({c.name: c.outcome for c in changes if c.name in custom})
    return actions


def agrees(offline: str, real: str) -> bool:
    """`replace-or-update` (the offline diff cannot know which) accepts either."""
    return real in offline.split("-or-")


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(3, "diff-table", prefix="ptdiff", subnet=225) as c:
        yield c


@pytest.fixture(scope="module")
def rolled_out(cluster, tmp_path_factory):
    started = time.monotonic()
    rollout = PulumiRollout(TwoNodes(cluster), STACK, tmp_path_factory.mktemp("difftable"), log=print)
    # Ray's own wait for its raylet (60 s by default, RAY_raylet_start_wait_time_s) bounded
    # by the work, not by a busy machine: the containers get a longer one (the sandbox
    # mapping's env, docs/standin-plugins.md). Only the one `up` starts Ray.
    write_sandbox(cluster, by_image={rollout.base.spec.container.image: {
        "env": {"RAY_raylet_start_wait_time_s": "900"}}})
    report = rollout.up()
    assert report.error is None, report.error
    print(f"diff table: cluster and `pulumi up` ready after {time.monotonic() - started:.0f}s")
    try:
        yield rollout
    finally:
        rollout.destroy()


def stack_file(rollout: PulumiRollout) -> Path:
    return rollout.project / "stacks" / f"Pulumi.{rollout.stack}.yaml"


def offline_removal(rollout: PulumiRollout, key: str) -> str:
    """`config rm --path KEY` as an offline `--set` (it has no removal): the list without that element."""
    head, _, index = key.rpartition("[")
    config = yaml.safe_load(stack_file(rollout).read_text())["config"]
    items = list(config[f"{NAMESPACE}:{head}"])
    del items[int(index.rstrip("]"))]
    return f"{head}={json.dumps(items)}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_offline_diff_says_what_the_real_preview_does(cluster, rolled_out, case):
    rollout = rolled_out
    sets = node_added(cluster) if case.name == "node added" else case.sets
    path = stack_file(rollout)
    saved = path.read_text()
    offline = offline_actions(path, sets + [offline_removal(rollout, key) for key in case.removes])
    arrange = case.arrange(cluster) if case.arrange else contextlib.nullcontext()
    started = time.monotonic()
    try:
        with arrange:
            if sets:
                argv = ["config", "set-all", "--path"]
                for assignment in sets:
                    argv += ["--plaintext", f"{NAMESPACE}:{assignment}"]
                rollout.ok(*argv)
            for key in case.removes:
                rollout.ok("config", "rm", "--path", f"{NAMESPACE}:{key}")
            report = rollout.operation("preview", "--diff")
            assert rollout.last_events is not None
            real = engine_actions(rollout.last_events)
    finally:
        path.write_text(saved)
    print(f"diff table: {case.name}: preview in {time.monotonic() - started:.0f}s")
    if report.error is not None:
        raise UserPathError(f"{case.name}: pulumi preview failed:\n{report.error}")
    names = sorted(set(offline) | set(real))
    disagreements = [f"  {name}: offline {offline.get(name, 'absent')}, real {real.get(name, 'absent')}"
                     for name in names if not agrees(offline.get(name, "same"), real.get(name, "same"))]
    assert not disagreements, (f"{case.name} ({', '.join(sets + case.removes)}): the offline diff and the real "
                               "`pulumi preview --diff` disagree:\n" + "\n".join(disagreements))
