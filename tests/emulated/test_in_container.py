"""The in-container steps on the emulated cluster: a container that cannot
`import acl` or lacks the MindFormers yaml stops the rollout before Ray
starts, with one line; MindIE's config.json is the image's own, edited in
place (keys the stack does not set stay), a second `up` does nothing,
destroy puts the image's file back, and an image whose config.json lacks a
key the stack sets stops the rollout before any daemon starts."""
from __future__ import annotations

import json
import shutil

import pytest

from ascend_inference.config_edit import apply_edits
from ascend_inference.render import node_context
from ascend_inference.stackfile import load_stack
from emulator import image as imagelib
from emulator.userpath import PulumiRollout
from tests.emulated.conftest import node_ssh, own_cluster

pytestmark = pytest.mark.emulated

VLLM = "tp16-vllm-mindspore"
MINDIE = "tp16-mindie"
CONF = "/usr/local/Ascend/mindie/latest/mindie-service/conf/config.json"
# Nothing of this may run once a container check fails.
LATER = {"node0-ray-head", "node1-ray-worker", "ray-verify", "node0-serve", "node1-serve", "serving-ready",
         "smoke-test-request"}


@pytest.fixture(scope="module")
def cluster():
    with own_cluster(2, "in-container", prefix="ptincon", subnet=227) as c:
        yield c


@pytest.fixture(scope="module")
def vllm(cluster, tmp_path_factory):
    """tp16-vllm-mindspore's one project and state for the module: each test rolls out
    (with its own changes; `up` reverts the changes a later call leaves out) and destroys."""
    return PulumiRollout(cluster, VLLM, tmp_path_factory.mktemp("vllm"), log=print)


@pytest.fixture(scope="module")
def mindie(cluster, tmp_path_factory):
    """tp16-mindie's (its image tar placed on the nodes, as a registry would hold it)."""
    return PulumiRollout(cluster, MINDIE, tmp_path_factory.mktemp("mindie"), log=print)


def in_container(cluster, node: str, container: str, command: str) -> str:
    return node_ssh(cluster, node, f"docker exec {container} sh -c '{command}'")


def image_config(cluster, node: str, image: str) -> str:
    """MindIE's config.json as the image holds it (the image has no `cat`:
    copied out of a created, never started container)."""
    return node_ssh(cluster, node, f"cid=$(docker create {image} true); docker cp $cid:{CONF} - | tar -xO; "
                                   "docker rm $cid >/dev/null")


def test_a_container_without_acl_stops_the_rollout_before_ray(cluster, vllm):
    rollout = vllm
    cluster.set_fault("node1", acl_missing=True)
    container = rollout.base.spec.container.name
    try:
        report = rollout.up()
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")
    assert report.error is not None
    # The program's judgement of the check step's facts (a NodeFactError): its one line first.
    message = report.error
    assert message.startswith(f"node node1: container {container}: cannot import acl (ModuleNotFoundError: "
                              "No module named 'acl'); runbook 000 installs pyACL for Ray on Ascend (fix: "), message
    assert "Traceback" not in message
    done = {a.resource for a in report.actions}
    assert {"node0-container-check", "node1-container-check"} <= done
    assert not done & LATER, done


def test_pyacl_from_the_nnrt_run_makes_a_container_without_acl_serve(cluster, vllm):
    """container.nnrt_run: node1's container has no acl; pyACL is installed
    there from the nnrt .run (runbook 000's commands), node0's image has it
    and is left alone; the rollout serves, and a second `up` does nothing."""
    import base64
    import platform

    nnrt = f"/data/packages/Ascend-cann-nnrt_8.0.RC1_linux-{platform.machine()}.run"
    packed = base64.b64encode(imagelib.nnrt_run_standin().encode()).decode()
    for node in cluster.nodes:
        node_ssh(cluster, node.name, f"mkdir -p /data/packages && echo {packed} | base64 -d > {nnrt}")
    cluster.set_fault("node1", acl_missing=True)
    rollout = vllm
    container = rollout.base.spec.container.name
    change = [f"container.nnrt_run={nnrt}"]
    try:
        report = rollout.up(change)
        assert report.error is None, report.error
        assert {"node0-pyacl-install", "node1-pyacl-install", "smoke-test-request"} <= set(report.did("create"))
        outputs = {name: r["outputs"]["stdout"] for name, r in rollout.resources().items()
                   if name.endswith("-pyacl-install")}
        assert json.loads(outputs["node0-pyacl-install"]) == {"installed": "no", "reason": "acl imports already"}
        installed = json.loads(outputs["node1-pyacl-install"])
        assert installed["installed"] == "yes"
        assert installed["site"] == "/usr/local/Ascend/pyACL/CANN-8.0.RC1/python/site-packages"
        where = in_container(cluster, "node1", container, "python3 -c \"import acl; print(acl.__file__)\"")
        assert where.strip() == f"{installed['site']}/acl/__init__.py"
        again = rollout.up(change, "--expect-no-changes")
        assert again.error is None, again.output[-3000:]
        assert again.changed() == {}
    finally:
        rollout.destroy()
        cluster.clear_faults("node1")


def test_a_missing_mindformers_yaml_stops_the_rollout_before_ray(cluster, vllm):
    rollout = vllm
    try:
        report = rollout.up(["engine.mindformers_model_config=/path/to/research/predict.yaml"])
    finally:
        rollout.destroy()
    assert report.error is not None
    message = report.error
    assert "MINDFORMERS_MODEL_CONFIG names /path/to/research/predict.yaml, which does not exist in the container" \
        in message
    assert message.startswith("node node0: ") or message.startswith("node node1: ")
    assert not {a.resource for a in report.actions} & LATER


def one_image_everywhere(cluster, image: str, tag: str) -> None:
    """`docker commit` gives each node's variant its own image id (its
    creation time), and the image check refuses nodes whose ids differ: make
    node0's variant the one every node holds. node0 saves it into its overlay
    (its upper dir on the host); the copy goes to a new file under node0's
    state directory, which every node sees through the overlay's lower layer."""
    first = cluster.nodes[0]
    node_ssh(cluster, first.name, f"docker save -o /var/tmp/{tag}.tar {image}")
    node_dir = first.run_dir.parent
    shared = node_dir / f"variant-{tag}.tar"
    shutil.copyfile(node_dir / "upper" / "var" / "tmp" / f"{tag}.tar", shared)
    for node in cluster.nodes[1:]:
        node_ssh(cluster, node.name, f"docker load -i {shared} >/dev/null")


def test_mindie_config_is_the_images_own_edited_in_place(cluster, mindie):
    """The image's file gains a key only it has; after the rollout that key
    is still there, the runbook's 16 keys hold the stack's values, a second
    `up` runs nothing but the node checks, and destroy restores the file."""
    rollout = mindie
    # The stack file as `pulumi config set` left it in the project: the nodes are the emulated cluster's.
    loaded = load_stack(str(rollout.project / "stacks" / f"Pulumi.{MINDIE}.yaml"))
    container, image = loaded.spec.container.name, loaded.spec.container.image
    marker = "imageOnlyKey"
    # The stack's image as another MindIE version: a key the bundled default lacks.
    node_ssh(cluster, "node0", imagelib.mindie_config_variant_script(image, add={f"ServerConfig.{marker}": 42}))
    one_image_everywhere(cluster, image, "image-only-key")
    try:
        report = rollout.up()
        assert report.error is None, report.error
        for i, node in enumerate(cluster.nodes):
            on_node = json.loads(in_container(cluster, node.name, container, f"cat {CONF}"))
            original = json.loads(in_container(cluster, node.name, container, f"cat {CONF}.ascend-inference-orig"))
            assert on_node["ServerConfig"][marker] == 42
            edit = loaded.spec.engine_plugin.config_edit(node_context(loaded, i))
            assert on_node == apply_edits(original, [list(e) for e in edit.edits])
            assert on_node["ServerConfig"]["ipAddress"] == node.address
            assert in_container(cluster, node.name, container, f"stat -c %a {CONF}").strip() == "640"
        assert {"node0-config-edit", "node1-config-edit", "smoke-test-request"} <= set(report.did("create"))
        # Nothing changes; the node checks run again (invokes, never a change).
        again = rollout.up([], "--expect-no-changes")
        assert again.error is None, again.output[-3000:]
        assert again.changed() == {}
        assert {f"{n.name}-preflight" for n in cluster.nodes} <= set(again.checks)
    finally:
        rollout.destroy()
    # Destroy removed the containers; the image's own file is what a new one gets.
    for node in cluster.nodes:
        fresh = json.loads(image_config(cluster, node.name, image))
        assert fresh["ServerConfig"][marker] == 42
        node_ssh(cluster, node.name, f"docker rmi {image} >/dev/null")


def test_an_image_config_lacking_a_stack_key_stops_before_the_daemons(cluster, mindie):
    rollout = mindie
    loaded = rollout.base
    image = loaded.spec.container.image
    # Every node's image lacks the key (one image everywhere: the image check
    # would otherwise stop the rollout first); node0's step reports it first.
    node_ssh(cluster, "node0", imagelib.mindie_config_variant_script(
        image, drop=("BackendConfig.ScheduleConfig.maxIterTimes",)))
    one_image_everywhere(cluster, image, "lacking-max-iter-times")
    container = loaded.spec.container.name
    try:
        report = rollout.up()
        assert report.error is not None
        # The line naming the node comes first: "node <name>: ...".
        reported = report.error.split(":", 1)[0].removeprefix("node ")
        assert reported in {n.name for n in cluster.nodes}, report.error
        # The step ran on the node it names, reported, and left the image's file as it was.
        assert f"{reported}-config-edit" in report.did("create")
        assert in_container(cluster, reported, container, f"cat {CONF}") == image_config(cluster, reported, image)
        assert in_container(cluster, reported, container,
                            f"ls {CONF}.ascend-inference-orig 2>/dev/null || true") == ""
    finally:
        rollout.destroy()
        for node in cluster.nodes:
            node_ssh(cluster, node.name, f"docker rmi {image} >/dev/null")
    message = report.error
    assert message.startswith(f"node {reported}: MindIE config.json: image {image}'s {CONF} has no key "
                              "BackendConfig.ScheduleConfig.maxIterTimes (set by engine.max_iter_times); "
                              "nothing was changed (fix: "), message
    assert not {a.resource for a in report.actions} & LATER
