"""Injected node faults stop a rollout by the real `pulumi` CLI
(emulator/userpath.py PulumiRollout, the README's user path) before serving,
with one message naming node and cause; MindIE's rank table, its TLS fix and
a clean teardown on the emulated cluster. (Kept apart from test_rollout.py:
these tests roll the same stacks out and tear them down, and must not share
nodes with its long-lived rollout.)

One configured stack serves the whole module: most faults stop `pulumi up` at
the node checks of its own preview, before anything is created, so the next
fault starts from the same empty stack; a fault found by a step (the weights)
leaves what that up created, which is destroyed before the next one."""
from __future__ import annotations

import json
import time

import pytest

from emulator.image import IMAGE as RUNTIME_IMAGE
from emulator.userpath import PulumiRollout
from tests.conftest import temp_files_holding
from tests.emulated.conftest import changed, node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
SERVING_AND_CONTAINERS = {"node0-serve", "node0-container", "node1-container", "node0-ray-head"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "rollout-faults", prefix="ptfault", subnet=242) as c:
        yield c


ssh = node_ssh


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack selected and configured for the cluster (rolled out by the tests); destroyed at the end."""
    rollout = PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("faults"), log=print)
    try:
        yield rollout
    finally:
        rollout.destroy()


def test_a_container_left_by_a_manual_run_is_named_not_a_docker_error(cluster, rollout):
    name = rollout.base.spec.container.name
    ssh(cluster, "node1", f"docker create --name {name} {RUNTIME_IMAGE} true >/dev/null")
    try:
        report = rollout.up()
        failed = rollout.failed_steps()
    finally:
        # What this up did create goes too: the fault tests start from an empty stack.
        rollout.destroy()
        ssh(cluster, "node1", f"docker rm -f {name} >/dev/null")
    message = str(report.error)
    assert f"node node1: a container named {name} ({RUNTIME_IMAGE}) exists that stack {STACK} did not create" in message
    assert f"fix: remove it with `docker rm -f {name}` on node1" in message
    assert "node1-name-free" in failed, failed
    assert "node1-container" not in changed(report), report.changed()


# --- faults ---------------------------------------------------------------

FAULTS = [
    # (fault on node1, words the message must contain)
    ({"link_down": [3]}, ["node1", "device 3 link", "DOWN"]),
    ({"tls_on": [2]}, ["node1", "device 2 tls", "switch is 1"]),
    ({"net_health_fail": [5]}, ["node1", "device 5 net_health", "Fault"]),
    ({"unhealthy_devices": [4]}, ["node1", "npu-smi info", "7 healthy NPUs"]),
    ({"missing_devices": [7]}, ["node1", "npu-smi info", "1 missing"]),
    ({"driver_version": "23.0.6"}, ["node1", "driver version", "23.0.6"]),
    # node1 cannot send to node0's device 0, so node0's ping from that device
    # gets no reply either: whichever ping fails first is named (a tuple: any of).
    ({"unreachable": ["198.19.0.1"]}, ["node1", "device 0", "node0", ("198.19.0.1", "198.19.1.1")]),
    ({"stale_rootinfo": True}, ["node1", "/etc/hccl_rootinfo.json"]),
    ({"missing_model": True}, ["node1", "model path"]),
    ({"model_file_differs": True}, ["node1", "model weights"]),
    ({"hostname": "ascend-node0"}, ["node1", "hostname", "ascend-node0"]),
    ({"wrong_device_ip": {"6": "198.19.9.9"}}, ["node1", "device 6 ip", "198.19.9.9"]),
    ({"lldp_missing": [3]}, ["node node1: device 3 lldp: no neighbour", "network.lldp: warn"]),
    ({"netdetect_fail": [4]}, ["node node1: device 4 netdetect: no netdetect address",
                               "node node1: device 4 net_health: is Init"]),
    ({"gateway_unreachable": True}, ["node node1: device 0 gateway: 198.19.255.254 does not answer",
                                     "100.00% packet loss"]),
]


@pytest.mark.parametrize("fault,words", FAULTS, ids=[next(iter(f)) for f, _ in FAULTS])
def test_fault_stops_the_rollout_before_serving(cluster, rollout, fault, words):
    cluster.set_fault("node1", **fault)
    try:
        start = time.monotonic()
        report = rollout.up()
        detected = time.monotonic() - start
    finally:
        cluster.clear_faults("node1")
    if changed(report):
        # A fault a step found (the weights, compared once they were read) leaves what
        # this up created, its outputs holding the fault: the next fault starts empty.
        assert rollout.destroy().error is None
    # The program's own message (a fact judged wrong, or a node check whose
    # script failed on the node, its lines first), never a traceback.
    assert report.error is not None
    message = report.error
    for word in words:
        options = word if isinstance(word, tuple) else (word,)
        assert any(option in message for option in options), f"{word!r} not in {message!r}"
    assert "Traceback" not in message, message
    assert not changed(report) & SERVING_AND_CONTAINERS, report.changed()
    # How fast is measured by benchmarks/rollout.py --faults; printed here for the log.
    print(f"time to detect {next(iter(fault))}: {detected:.1f} s (runbooks: HCCL_CONNECT_TIMEOUT=7200 s)")


def test_engine_crash_is_reported_with_its_log(cluster, rollout):
    # The engine dies while "loading" (it would listen only after 600 s): with
    # a crash alone, an engine that got to listen first could answer the
    # readiness check and the smoke test in the second before it died.
    cluster.set_fault("node0", engine_crash_after=1, engine_ready_delay=600)
    try:
        report = rollout.up()
    finally:
        cluster.clear_faults("node0")
    assert report.error is not None
    # The step that failed, as the engine's events name it, and the engine's log in its message.
    failed = rollout.failed_steps()
    assert set(failed) & {"node0-serve", "serving-ready"}, failed
    assert "last log lines" in report.error, report.error


def urn_of(rollout, name: str) -> str:
    """The URN of resource `name`, as docs/recovery.md has a user look it up."""
    state = json.loads(rollout.ok("stack", "export"))
    return next(r["urn"] for r in state["deployment"]["resources"] if r["urn"].endswith(f"::{name}"))


def test_teardown_leaves_nothing(cluster, rollout):
    """After the crash above, whose engine start had succeeded: no `up` notices a dead
    engine by itself, so the recovery docs/recovery.md gives ("The serving process died
    after a good `up`": `pulumi up --replace` of the engine's start) serves again, with
    the containers and Ray kept; then destroy removes it all."""
    # (An engine start that itself saw the crash is not in the state: a plain `up` redoes it.)
    started = "node0-serve" in rollout.resources()
    report = rollout.up([], *(("--replace", urn_of(rollout, "node0-serve")) if started else ()))
    assert report.error is None, report.error
    assert not {"node0-container", "node1-container", "node0-ray-head"} & changed(report), report.changed()
    # The SSH key the program's steps carry is a secret: never in clear in the state.
    key = cluster.ssh_key_path.read_text()
    assert key.strip().splitlines()[1] not in rollout.ok("stack", "export")
    gone = rollout.destroy()
    assert gone.error is None, gone.error
    assert rollout.resources() == {}
    for node in cluster.nodes:
        assert ssh(cluster, node.name, "docker ps -aq").strip() == ""
        names = ssh(cluster, node.name, "ps -eo comm").split()
        assert not [n for n in names if n in ("raylet", "gcs_server") or n.startswith(("ray::", "vllm"))], names
        assert ssh(cluster, node.name, "test -e /etc/ascend-inference && echo left || echo gone").strip() == "gone"
    assert temp_files_holding(key) == []


# --- MindIE (last: it rolls out on nodes the stack above has left) ----------------

@pytest.fixture(scope="module")
def mindie(cluster, rollout, tmp_path_factory):
    """TP16 MindIE rolled out once with a TLS switch left on on node1 (fix_tls is on in
    this stack): (rollout, report of that up). Torn down by the rank table's test."""
    assert rollout.destroy().error is None  # nothing of the other stack left on the nodes
    mindie = PulumiRollout(cluster, "tp16-mindie", tmp_path_factory.mktemp("mindie"), log=print)
    cluster.set_fault("node1", tls_on=[1, 2])
    try:
        report = mindie.up()
    finally:
        cluster.clear_faults("node1")
    try:
        yield mindie, report
    finally:
        mindie.destroy()


def test_fix_tls_repairs_a_tls_switch(cluster, mindie):
    """One `up` repairs it: the preflight waits for the fix, at the up's preview too."""
    _, report = mindie
    assert report.error is None, report.error
    assert "node1-fix-tls" in report.did("create")
    assert "tls switch[0]" in ssh(cluster, "node1", "hccn_tool -i 2 -tls -g")


def test_mindie_rank_table_config_and_teardown(cluster, mindie):
    """TP16 MindIE: the rank table lands at the same path on every node with
    mode 640, the daemons start on every node, and destroy removes it all."""
    rollout, report = mindie
    assert report.error is None, report.error
    table_path = "/data/hm/hccl_2s_16p.json"
    tables = set()
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"stat -c %a {table_path}").strip() == "640"
        tables.add(ssh(cluster, node.name, f"cat {table_path}"))
        assert ssh(cluster, node.name, "stat -c %a /data/models/deepseek-r1").strip() == "750"
    assert len(tables) == 1
    table = json.loads(tables.pop())
    assert [s["server_id"] for s in table["server_list"]] == [n.address for n in cluster.nodes]
    assert [d["device_ip"] for d in table["server_list"][1]["device"]] == list(cluster.nodes[1].device_ips)
    assert {"node0-serve", "node1-serve", "serving-ready", "smoke-test-request"} <= set(report.did("create"))
    gone = rollout.destroy()
    assert gone.error is None, gone.error
    container = rollout.base.spec.container.name
    for node in cluster.nodes:
        assert ssh(cluster, node.name, f"docker ps -aq --filter name={container}").strip() == ""
        assert ssh(cluster, node.name, f"test -e {table_path} && echo left || echo gone").strip() == "gone"
        assert ssh(cluster, node.name, "find /etc/ascend-inference 2>/dev/null || true").strip() == ""
