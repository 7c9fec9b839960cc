"""Graph tier: the image steps in the program under the SDK's mocks. Every
node's image check answers before the cluster gate; an image that differs
(another id under the same tag, another engine version) fails the program
with one NodeFactError naming node, found and expected, before any
container is registered; the verified image id labels the container and
the found versions are a stack output."""
from __future__ import annotations

import json

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.stackfile import load_stack
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from tests.conftest import NS

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
    checks = [r for r in g.resources if r.name.endswith("-image-check")]
    containers = [r for r in g.resources if r.type == CONTAINER]
    assert len(checks) == len(containers) == len(load_stack(stack).spec.nodes)
    for container in containers:
        for check in checks:
            assert g.depends_on(container, check), f"{container.name} does not wait for {check.name}"
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
    loaded, config = with_container("tp16-mindie", engine_version="2.0.T3.B010", cann_version="8.0.0")
    images = record_stack(loaded, config).outputs["images"]
    assert set(images) == {n.name for n in loaded.spec.nodes}
    assert {(v["engine_version"], v["cann_version"]) for v in images.values()} == {("2.0.T3.B010", "8.0.0")}
