"""Components: every child created in the constructor, before
`register_outputs`; typed arguments; the GPUStack deployment step keeps its
old identity through an alias."""
from __future__ import annotations

import dataclasses

import pulumi
import pytest

import components.cluster
import components.node
import components.serving
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import record_stack
from tests.conftest import STACK_RUNBOOK

pytestmark = pytest.mark.graph

STACKS = sorted(STACK_RUNBOOK)


@pytest.mark.parametrize("stack", STACKS)
def test_every_child_exists_before_register_outputs(stack, monkeypatch):
    counted: dict[int, tuple[pulumi.ComponentResource, int]] = {}
    real = pulumi.ComponentResource.register_outputs

    def counting(self, outputs):
        counted[id(self)] = (self, len(self._childResources))
        return real(self, outputs)

    monkeypatch.setattr(pulumi.ComponentResource, "register_outputs", counting)
    graph = record_stack(load_stack(stack))
    late = [(type(c).__name__, before, len(c._childResources)) for c, before in counted.values()
            if len(c._childResources) != before]
    assert not late, f"children created after register_outputs (component, before, after): {late}"
    # Every component of the graph registered its outputs (the root Stack aside).
    ours = [c for c, _ in counted.values() if type(c).__module__.startswith("components.")]
    assert len(ours) == len([r for r in graph.resources if not r.custom])


def test_component_args_are_frozen_dataclasses():
    args = [components.node.AscendNodeArgs, components.cluster.ModelWeightsArgs, components.cluster.PeerCheckArgs,
            components.cluster.RankTableArgs, components.cluster.InferenceContainerArgs,
            components.serving.RayClusterArgs, components.serving.ServingProcessArgs,
            components.serving.SmokeTestArgs, components.serving.GpustackServerArgs,
            components.serving.GpustackDeploymentArgs]
    for cls in args:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls.__name__
        # Only what the component uses: never the whole loaded stack or spec.
        names = {f.name for f in dataclasses.fields(cls)}
        assert not names & {"loaded", "spec"}, (cls.__name__, names)


def test_gpustack_model_is_a_dynamic_resource_not_a_remote_command():
    """The model deployment moved from an SSH-run script to the control host's
    GPUStack model resource: a new type, so no alias could carry the old
    command's state over (a stack rolled out before redeploys its model once)."""
    g = record_stack(load_stack("dp4-ep32-gpustack"))
    step = g.by_name("gpustack-model-deploy")
    assert step.type == "pulumi-python:dynamic:Resource"
    assert not step.options.get("aliases")
