"""Graph tier: the in-container steps in the program under the SDK's mocks.

`<node>-container-check` (`import acl`, the MindFormers yaml) and MindIE's
`<node>-config-edit` run in the started container, before anything else
starts in any container; a bad report from one node stops the program there
with one NodeFactError line, before Ray's head or any serving process is
registered; the edit list is in the preview, one trigger per edit.
"""
from __future__ import annotations

import copy
import functools
import json

import pytest

from ascend_inference.errors import NodeFactError
from ascend_inference.spec import NAMESPACE
from ascend_inference.stackfile import LoadedStack, load_stack
from ascendctl.preview import stack as preview_stack
from ascendctl.preview.stack import loaded_with_config, record_stack
from ascendctl.preview.stack import preview_stack as preview_text
from tests.step_script import step_script

pytestmark = pytest.mark.graph

NS = f"{NAMESPACE}:"
CMD = "command:remote:Command"
# Registered only after every container's in-container steps passed.
LATER = ("-ray-head", "-ray-worker", "ray-verify", "-serve", "serving-ready", "smoke-test-request")


@functools.cache
def loaded(stack: str) -> LoadedStack:
    return load_stack(stack)


def by_name(graph, name: str):
    (rec,) = [r for r in graph.resources if r.name == name and r.custom]
    return rec


@pytest.mark.parametrize("stack,first", [("tp16-vllm-mindspore", "node0-ray-head"),
                                         ("tp16-lmdeploy", "node0-ray-head"),
                                         ("tp8-pp2-300iduo", "node0-ray-head"),
                                         ("tp16-mindie", "node0-serve")])
def test_nothing_starts_in_a_container_before_every_node_is_checked(stack, first):
    graph = record_stack(loaded(stack))
    role = "config-edit" if stack == "tp16-mindie" else "container-check"
    start = by_name(graph, first)
    for node in loaded(stack).spec.nodes:
        step = by_name(graph, f"{node.name}-{role}")
        assert graph.by_urn[step.parent_urn].name == node.name  # a child of the node's InferenceContainer
        assert graph.depends_on(step, by_name(graph, f"{node.name}-container"))
        assert graph.depends_on(start, step), f"{first} does not wait for {step.name}"


def recording(monkeypatch, bad: dict[str, str]) -> list[str]:
    """Mocks that answer `bad[name]` as that step's stdout; returns the list
    of resource names registered, in order."""
    original = preview_stack.mock_outputs
    registered: list[str] = []

    def mock_outputs(ld):
        inner = original(ld)

        def outputs_for(args):
            registered.append(args.name)
            out = inner(args)
            return {**out, "stdout": bad[args.name]} if args.name in bad else out

        return outputs_for

    monkeypatch.setattr(preview_stack, "mock_outputs", mock_outputs)
    return registered


def test_a_container_without_acl_stops_the_program_before_ray(monkeypatch):
    stack = "tp16-vllm-mindspore"
    container = loaded(stack).spec.container.name
    report = {"python3": True, "acl": "ModuleNotFoundError: No module named 'acl'", "files": {}}
    registered = recording(monkeypatch, {"node1-container-check": json.dumps(report) + "\n"})
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert (info.value.node, info.value.fact) == ("node1", f"container {container}")
    assert str(info.value).startswith(
        f"node node1: container {container}: cannot import acl (ModuleNotFoundError: No module named 'acl')")
    assert "node1-container-check" in registered
    assert not [n for n in registered if n.endswith(LATER)], registered


def test_an_image_config_lacking_a_key_stops_the_program_before_serving(monkeypatch):
    stack = "tp16-mindie"
    spec = loaded(stack).spec
    target = f"{spec.engine.install_path}/conf/config.json"
    report = {"target": target, "missing": ["ServerConfig.interCommTLSEnabled"], "edited": []}
    registered = recording(monkeypatch, {"node1-config-edit": json.dumps(report) + "\n"})
    with pytest.raises(NodeFactError) as info:
        record_stack(loaded(stack))
    assert str(info.value).startswith(
        f"node node1: MindIE config.json: image {spec.container.image}'s {target} has no key "
        "ServerConfig.interCommTLSEnabled (set by engine.inter_comm_tls_enabled); nothing was changed (fix: ")
    assert not [n for n in registered if n.endswith(LATER)], registered


def test_the_preview_shows_each_edit():
    text = preview_text("tp16-mindie")
    block = text.split("Command node1-config-edit", 1)[1].split("\n    + ", 1)[0]
    for line in ('"ServerConfig.ipAddress = \\"192.0.2.12\\""', '"BackendConfig.ScheduleConfig.maxIterTimes = 8192"',
                 '"BackendConfig.npuDeviceIds = [[0, 1, 2, 3, 4, 5, 6, 7]]"'):
        assert line in block, block


@pytest.mark.parametrize("stack,check_acl,expect", [
    ("tp16-vllm-mindspore", False, "python3 - 0 MINDFORMERS_MODEL_CONFIG <<"),
    ("tp16-mindie", True, "python3 - 1 <<"),
])
def test_check_acl_overrides_the_engines_default(stack, check_acl, expect):
    ld = loaded(stack)
    config = copy.deepcopy(ld.raw_config)
    config[f"{NS}container"]["check_acl"] = check_acl
    graph = record_stack(loaded_with_config(ld, config), config)
    step = by_name(graph, "node0-container-check")
    assert expect in step_script(step.inputs)
