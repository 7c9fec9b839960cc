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
import json
import threading
import time

import pytest

from ascend_inference.errors import NodeFactError
from emulator import image as imagelib
from emulator import network
from emulator.executor import StepFailed
from emulator.rollout import StackRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

STACK = "tp16-vllm-mindspore"
LATER = {"node1-container", "node0-ray-head", "node1-ray-worker", "ray-verify", "node0-serve", "serving-ready",
         "smoke-test-request"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "image-checks", prefix="ptimg", subnet=226) as c:
        yield c


def image_facts(rollout: StackRollout, node: str) -> dict:
    # A node check (an invoke): what it printed in the latest run.
    stdout = rollout.executor.check_outputs[f"{node}-image-check"]
    return json.loads(stdout.strip().splitlines()[-1])


FAULTS = [
    # (fault on node1, stack changes, the start of the one line)
    ({"image_differs": True}, [], (NodeFactError, "node node1: image: {image} is sha256:")),
    ({"image_engine_version": "0.4.1"}, ["container.engine_version=0.3.0"],
     (NodeFactError, "node node1: engine version: image {image} has vllm-mindspore 0.4.1, the stack expects 0.3.0 "
                     "(ascend-inference:container.engine_version) (fix: set ascend-inference:container.engine_version "
                     "to 0.4.1)")),
    # As shipped: the stack pins runbook 000's 0.3.0 (its env), which a 0.4.1 image would refuse.
    ({"image_engine_version": "0.4.1"}, [],
     (NodeFactError, "node node1: engine version: image {image} has vllm-mindspore 0.4.1, the stack expects 0.3.0 "
                     "(ascend-inference:container.engine_version)")),
    ({"missing_vnpu_cfg": True}, [],
     (StepFailed, "node node1: mount sources: missing on the host: /etc/vnpu.cfg (fix: ")),
]


@pytest.mark.parametrize("fault,changes,expected", FAULTS,
                         ids=["image differs", "engine version declared", "engine version as shipped",
                              "mount source missing"])
def test_an_image_fault_stops_the_rollout_before_serving(cluster, tmp_path, fault, changes, expected):
    kind, start = expected
    cluster.set_fault("node1", **fault)
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    try:
        began = time.monotonic()
        report = rollout.up(changes)
        detected = time.monotonic() - began
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert isinstance(report.error, kind), report.error
    message = str(report.error)
    assert start.format(image=rollout.base.spec.container.image) in message, message
    assert "Traceback" not in message
    if kind is NodeFactError:
        assert len(message.splitlines()) == 1, message
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


def test_an_image_with_vllm_mindspore_0_4_rolls_out_with_its_env(cluster, tmp_path):
    for node in cluster.nodes:
        cluster.set_fault(node.name, image_engine_version="0.4.1")
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
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
        again = rollout.up(changes)
        assert again.error is None, again.error
        checks = {f"{n}-{step}" for n in ("node0", "node1") for step in ("preflight", "peer-ping", "image-check")}
        # The checks ran again (invokes, never a change); no resource changed.
        assert set(again.checks) == checks
        assert {a.resource: a.kind for a in again.actions if a.kind != "same"} == {}
    finally:
        rollout.destroy()
        for node in cluster.nodes:
            cluster.clear_faults(node.name)


def test_the_engine_refuses_the_old_env_in_a_0_4_image(cluster, tmp_path):
    """What the image check prevents, shown by the stand-in engine: the
    runbooks' MINDFORMERS_MODEL_CONFIG in a 0.4.1 image fails at start with
    vllm-mindspore's ValueError (the check is bypassed by declaring 0.4.1
    and adding the variable back through engine.env)."""
    for node in cluster.nodes:
        cluster.set_fault(node.name, image_engine_version="0.4.1")
    rollout = StackRollout(cluster, STACK, tmp_path / "state.json", log=lambda m: None)
    try:
        report = rollout.up(["container.engine_version=0.4.1", "engine.env.MINDFORMERS_MODEL_CONFIG=/w/p.yaml"])
    finally:
        rollout.destroy()
        for node in cluster.nodes:
            cluster.clear_faults(node.name)
    assert isinstance(report.error, StepFailed), report.error
    assert "MINDFORMERS_MODEL_CONFIG is not supported" in str(report.error)


@pytest.fixture
def tar_server(cluster, tmp_path):
    """The stack's image as a tar, served over HTTP from the host on the cluster's bridge."""
    image = StackRollout(cluster, "tp16-mindie", tmp_path / "unused.json").base.spec.container.image
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
    rollout = StackRollout(cluster, "tp16-mindie", tmp_path / "state.json", log=lambda m: None)
    image = rollout.base.spec.container.image
    for node in cluster.nodes:
        node_ssh(cluster, node.name, f"docker rmi {image} >/dev/null 2>&1 || true; rm -f {tar}")
    base = [f"container.image_tar={tar}", f"container.image_url={url}"]
    try:
        wrong = rollout.up([*base, "container.image_sha256=" + "f" * 64])
        assert isinstance(wrong.error, StepFailed), wrong.error
        assert f"image tar: {tar} has sha256 {sha}, the stack expects {'f' * 64}" in str(wrong.error)
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
