"""Graph tier: the image steps in the program under the SDK's mocks. Every
node's image check answers before the cluster gate; an image that differs
(another id under the same tag, another engine version) fails the program
with one NodeFactError naming node, found and expected, before any
container is registered; the verified image id labels the container and
the found versions are a stack output."""
from __future__ import annotations

import copy
import json

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.stackfile import load_stack
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.values import contains_secret
from tests.conftest import NS
from tests.step_script import step_script

pytestmark = pytest.mark.graph

CONTAINER = "docker:index/container:Container"


def patched_image_check(monkeypatch, node: str, **changes: str) -> None:
    """Make `node`'s image check print the healthy answer with `changes`."""
    original = preview_stack.mock_outputs

    def mock_outputs(ld):
        inner = original(ld)

        def outputs_for(args):
            out = inner(args)
            if args.name == f"{node}-image-check":
                facts = {**json.loads(out["stdout"]), **changes}
                out = {**out, "stdout": json.dumps(facts) + "\n"}
            return out

        return outputs_for

    monkeypatch.setattr(preview_stack, "mock_outputs", mock_outputs)


def with_container(stack: str, **container):
    base = load_stack(stack)
    config = json.loads(json.dumps(base.raw_config))
    config[NS + "container"] = {**config[NS + "container"], **container}
    return loaded_with_config(base, config), config


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-mindie"])
def test_every_container_waits_for_every_image_check(stack):
    g = record_stack(load_stack(stack))
    # The image checks are node checks (invokes, no resources), each after its node's image.
    checks = [c for c in g.checks if c.name.endswith("-image-check")]
    assert not [r for r in g.resources if r.name.endswith("-image-check")]
    containers = [r for r in g.resources if r.type == CONTAINER]
    assert len(checks) == len(containers) == len(load_stack(stack).spec.nodes)
    for check in checks:
        assert check.ran and g.check_waits_for(check, g.by_name(f"{check.node}-image"))
    for container in containers:
        # Every image check and the gate (which records what they found).
        gate = g.by_name("cluster-verified")
        assert g.depends_on(container, gate)
        for check in checks:
            assert check.name in g.checks_before(container), f"{container.name} does not wait for {check.name}"
            assert check.name in g.checks_before(gate)
        mounts = next(r for r in g.resources if r.name == container.name.replace("-container", "-mounts"))
        assert g.depends_on(container, mounts)
        labels = {label["label"]: label["value"] for label in container.inputs["labels"]}
        assert labels["ascend-inference/image-id"].startswith("sha256:")


def test_another_image_id_on_one_node_stops_before_any_container(monkeypatch):
    stack = "tp16-vllm-mindspore"
    patched_image_check(monkeypatch, "node1", id="sha256:" + "ab" * 32)
    with pytest.raises(NodeFactError) as info:
        record_stack(load_stack(stack))
    assert (info.value.node, info.value.fact) == ("node1", "image")
    image = load_stack(stack).spec.container.image
    assert str(info.value).startswith(f"node node1: image: {image} is sha256:abababababab, node0 has sha256:")


def test_an_engine_version_other_than_declared_stops_the_program(monkeypatch):
    loaded, config = with_container("tp16-vllm-mindspore", engine_version="0.3.0")
    patched_image_check(monkeypatch, "node0", engine_version="0.4.1")
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded, config)
    assert str(info.value) == (
        "node node0: engine version: image hub.oepkgs.net/oedeploy/openeuler/aarch64/mindspore:latest has "
        "vllm-mindspore 0.4.1, the stack expects 0.3.0 (ascend-inference:container.engine_version) "
        "(fix: set ascend-inference:container.engine_version to 0.4.1)")


def test_the_found_versions_are_a_stack_output():
    loaded, config = with_container("tp16-mindie", engine_version="2.0.T9.B020", cann_version="8.0.0")
    images = record_stack(loaded, config).outputs["images"]
    assert set(images) == {n.name for n in loaded.spec.nodes}
    assert {(v["engine_version"], v["cann_version"]) for v in images.values()} == {("2.0.T9.B020", "8.0.0")}


# --- container.image_url: fetched once on the master, copied to the others ------------

TAR = "/data/images/mindie.tar"
URL = "https://images.example.com/mindie.tar"


def named(g, name: str):
    found = [r for r in g.resources if r.name == name]
    assert len(found) == 1, f"{name}: {len(found)} resources"
    return found[0]


def image_steps(g) -> set[str]:
    return {r.name for r in g.resources if r.custom and r.name.rsplit("-image", 1)[-1] in ("", "-copy")
            and "-image" in r.name}


def test_with_image_url_the_master_fetches_and_the_others_copy_from_it():
    sha = "ab" * 32
    loaded, config = with_container("tp16-mindie", image_tar=TAR, image_url=URL, image_sha256=sha)
    g = record_stack(loaded, config)
    assert image_steps(g) == {"node0-image", "node1-image-copy", "node1-image"}
    fetch, copy_step, load = named(g, "node0-image"), named(g, "node1-image-copy"), named(g, "node1-image")
    # Only the master downloads; node1 loads what the copy put there.
    assert URL in step_script(fetch.inputs) and "curl " in step_script(fetch.inputs)
    assert URL not in step_script(load.inputs) and "curl " not in step_script(load.inputs)
    assert URL not in step_script(copy_step.inputs)
    assert g.depends_on(copy_step, fetch) and "node1-preflight" in g.checks_before(copy_step)
    assert g.depends_on(load, copy_step) and not g.depends_on(fetch, copy_step)
    # The copy pulls the master's tar over the cluster network and checks it
    # against the stack's sha256 (the mocks print 0 bytes).
    create = step_script(copy_step.inputs)
    assert f"root@192.0.2.11:{TAR} " in create and f"SHA256={sha}\n" in create and "BYTES=0\n" in create
    # The SSH key reaches the copy only as secret stdin, never in a script.
    assert contains_secret(copy_step.inputs["stdin"])
    assert all("PRIVATE KEY" not in str(step_script(r.inputs) or "") for r in g.resources if r.custom)
    # The tar and the image stay on destroy.
    assert copy_step.options["retain_on_delete"] and load.options["retain_on_delete"]
    assert fetch.options["retain_on_delete"]


def test_without_image_url_every_node_loads_its_own_tar_and_nothing_is_copied():
    loaded, config = with_container("tp16-mindie", image_tar=TAR, image_sha256="ab" * 32)
    g = record_stack(loaded, config)
    assert image_steps(g) == {"node0-image", "node1-image"}
    for name in ("node0-image", "node1-image"):
        assert "ab" * 32 in step_script(named(g, name).inputs) and "curl " not in step_script(named(g, name).inputs)


def test_copies_wait_for_the_master_only():
    """8 nodes: each copy waits for the master's fetch, not for the other copies."""
    loaded, config = with_container("tp16-vllm-mindspore", image_tar=TAR, image_url=URL)
    config = scaled_config(loaded, 8)
    g = record_stack(loaded_with_config(loaded, config), copy.deepcopy(config))
    copies = [r for r in g.resources if r.name.endswith("-image-copy")]
    assert sorted(r.name for r in copies) == [f"node{i}-image-copy" for i in range(1, 8)]
    fetch = named(g, "node0-image")
    for one in copies:
        assert g.depends_on(one, fetch)
        assert all(not g.depends_on(one, other) for other in copies if other is not one)
    # No image_sha256: the copies are checked against the sha256 the master printed.
    assert "SHA256_FROM='the tar on node0'" in step_script(copies[0].inputs)
