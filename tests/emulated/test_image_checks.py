"""The image steps on the emulated cluster: the image check reads the id and
the engine and CANN versions out of the real image in each node's dockerd;
a node whose image differs (another id under the same tag, another engine
version) or that lacks a bind-mount source stops the rollout before anything
starts there, with one line naming node, found and expected; an image whose
engine takes the 0.4.0 env rolls out with that env, and a second `up`
repeats only the checks; an image tar fetched by every node from a URL is
checked against its sha256 before `docker load`."""
from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
import time

import pytest

from ascend_inference.stackfile import load_stack
from emulator import image as imagelib
from emulator import network
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
LATER = {"node1-container", "node0-ray-head", "node1-ray-worker", "ray-verify", "node0-serve", "serving-ready",
         "smoke-test-request"}
# The node checks: local.run invokes at every `up` (report.checks), never a change.
# With the engine's liveness check where it starts (node0).
NODE_CHECKS = {f"{node}-{check}" for node in ("node0", "node1")
               for check in ("preflight", "peer-ping", "image-check")} | {"node0-serve-alive"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "image-checks", prefix="ptimg", subnet=226) as c:
        yield c


@pytest.fixture(scope="module")
def rollout(cluster, tmp_path_factory):
    """The stack's one project and state for the module: each test rolls out (with its
    own changes; `up` reverts the changes a later call leaves out) and destroys."""
    return PulumiRollout(cluster, STACK, tmp_path_factory.mktemp("image-checks"), log=print)


def image_facts(rollout: PulumiRollout, node: str) -> dict:
    # The image checks are invokes: what they verified is the stack output `images`.
    return rollout.stack_output("images")[node]


FAULTS = [
    # (fault on node1, stack changes, (the step that failed or None for a check, the start of its line))
    ({"image_differs": True}, [], (None, "node node1: image: {image} is sha256:")),
    ({"image_engine_version": "0.4.1"}, ["container.engine_version=0.3.0"],
     (None, "node node1: engine version: image {image} has vllm-mindspore 0.4.1, the stack expects 0.3.0 "
            "(ascend-inference:container.engine_version) (fix: set ascend-inference:container.engine_version "
            "to 0.4.1)")),
    # As shipped: the stack pins runbook 000's 0.3.0 (its env), which a 0.4.1 image would refuse.
    ({"image_engine_version": "0.4.1"}, [],
     (None, "node node1: engine version: image {image} has vllm-mindspore 0.4.1, the stack expects 0.3.0 "
            "(ascend-inference:container.engine_version)")),
    ({"missing_vnpu_cfg": True}, [],
     ("node1-mounts", "node node1: mount sources: missing on the host: /etc/vnpu.cfg (fix: ")),
]


@pytest.mark.parametrize("fault,changes,expected", FAULTS,
                         ids=["image differs", "engine version declared", "engine version as shipped",
                              "mount source missing"])
def test_an_image_fault_stops_the_rollout_before_serving(cluster, rollout, fault, changes, expected):
    step, start = expected
    cluster.set_fault("node1", **fault)
    try:
        began = time.monotonic()
        report = rollout.up(changes)
        detected = time.monotonic() - began
        failed = rollout.failed_steps()
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    expected_line = start.format(image=rollout.base.spec.container.image)
    if step is None:
        # A check's judgement (a NodeFactError of the program): its one line first.
        assert report.error is not None and report.error.startswith(expected_line), report.error
    else:
        # A step's failure: the first line its script printed, and the engine names the step.
        assert report.failed_step_output()[0].startswith(expected_line), report.error
        assert failed[:1] == [step], (failed, report.error)
    assert "Traceback" not in report.error
    ran = {a.resource for a in report.actions}
    assert not ran & LATER, sorted(ran & LATER)
    print(f"time to detect {next(iter(fault))}: {detected:.1f} s")


def test_clearing_an_image_fault_gives_back_the_clusters_image(cluster):
    runtime_id = node_ssh(cluster, "node0", f"docker image inspect -f '{{{{.Id}}}}' {imagelib.IMAGE}").strip()
    cluster.set_fault("node1", image_differs=True)
    try:
        other = node_ssh(cluster, "node1", f"docker image inspect -f '{{{{.Id}}}}' {imagelib.IMAGE}").strip()
        assert other != runtime_id
    finally:
        cluster.clear_faults("node1")
    back = node_ssh(cluster, "node1", f"docker image inspect -f '{{{{.Id}}}}' {imagelib.IMAGE}").strip()
    assert back == runtime_id


def test_an_image_with_vllm_mindspore_0_4_rolls_out_with_its_env_and_its_engine_refuses_the_old_one(
        cluster, rollout):
    """A 0.4.1 image declared as such rolls out with the env 0.4 takes, and a
    second `up` changes nothing. Then what the image check prevents, shown by
    the stand-in engine on the same stack: the runbooks' MINDFORMERS_MODEL_CONFIG
    added back through engine.env (the check passes: 0.4.1 is declared) fails
    the engine's start with vllm-mindspore 0.4's ValueError."""
    for node in cluster.nodes:
        cluster.set_fault(node.name, image_engine_version="0.4.1")
    changes = ["container.engine_version=0.4.1"]
    try:
        report = rollout.up(changes)
        assert report.error is None, report.error
        for node in cluster.nodes:
            facts = image_facts(rollout, node.name)
            assert (facts["engine_version"], facts["cann_version"]) == ("0.4.1", imagelib.CANN_VERSION)
            assert facts["id"].startswith("sha256:")
        assert image_facts(rollout, "node0")["id"] == image_facts(rollout, "node1")["id"]
        env = node_ssh(cluster, "node0", f"cat /etc/ascend-inference/{STACK}/env.sh")
        # The stand-in engine raises vllm-mindspore 0.4's ValueError when MINDFORMERS_MODEL_CONFIG is
        # set with the MindFormers backend: it served, so the env was the one 0.4 takes.
        assert "export VLLM_MS_MODEL_BACKEND=MindFormers" in env and "MINDFORMERS_MODEL_CONFIG" not in env
        assert "smoke-test-request" in report.did("create")
        # The checks run again (invokes, never a change); no resource changes.
        again = rollout.up(changes, "--expect-no-changes")
        assert again.error is None, again.output[-3000:]
        assert again.changed() == {}
        assert set(again.checks) == NODE_CHECKS

        refused = rollout.up([*changes, "engine.env.MINDFORMERS_MODEL_CONFIG=/w/p.yaml"])
        failed = rollout.failed_steps()
        assert refused.error is not None
        assert "MINDFORMERS_MODEL_CONFIG is not supported" in refused.error, refused.error
        # A step failed (the engine's start), not a check.
        assert failed, refused.error
    finally:
        assert rollout.destroy().error is None
        for node in cluster.nodes:
            cluster.clear_faults(node.name)


@pytest.fixture
def tar_server(cluster, tmp_path):
    """The stack's image as a tar, served over HTTP from the host on the cluster's bridge."""
    image = load_stack("tp16-mindie").spec.container.image
    root = tmp_path / "served"
    archive = imagelib.build_image(root / "mindie.tar", image)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((network.bridge_address(cluster.subnet), 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield (f"http://{server.server_address[0]}:{server.server_address[1]}/mindie.tar",
               hashlib.sha256(archive.read_bytes()).hexdigest())
    finally:
        server.shutdown()


def test_the_image_tar_is_sha_checked_and_ends_loaded_on_every_node(cluster, tmp_path, tar_server):
    url, sha = tar_server
    tar = "/data/images/fetched/mindie.tar"
    rollout = PulumiRollout(cluster, "tp16-mindie", tmp_path / "pulumi", log=print)
    image = rollout.base.spec.container.image
    for node in cluster.nodes:
        node_ssh(cluster, node.name, f"docker rmi {image} >/dev/null 2>&1 || true; rm -f {tar}")
    base = [f"container.image_tar={tar}", f"container.image_url={url}"]
    try:
        wrong = rollout.up([*base, "container.image_sha256=" + "f" * 64])
        assert wrong.error is not None
        # The first line the failed step printed names the node, what it found and what the stack expects.
        fault = re.fullmatch(rf"node (node[01]): image tar: {tar} has sha256 {sha}, the stack expects {'f' * 64}.*",
                             wrong.failed_step_output()[0])
        assert fault, wrong.error
        assert f"{fault.group(1)}-image" in rollout.failed_steps(), rollout.failed_steps()
        assert not {a.resource for a in wrong.actions} & (LATER | {"node0-container"})
        right = rollout.up([*base, f"container.image_sha256={sha}"])
        assert right.error is None, right.error
        for node in cluster.nodes:
            assert node_ssh(cluster, node.name, f"sha256sum {tar}").split()[0] == sha
        assert image_facts(rollout, "node0")["id"] == image_facts(rollout, "node1")["id"]
        assert "smoke-test-request" in right.did("create")
    finally:
        rollout.destroy()
        for node in cluster.nodes:
            node_ssh(cluster, node.name, "rm -rf /data/images/fetched")
