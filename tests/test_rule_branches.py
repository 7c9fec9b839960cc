"""Rules of the topology and the engines' settings checks that branch
coverage found no fast test reaching (issue 24). Each bad value is refused
with file, key and fix; each good one is rendered as the engine reads it."""
from __future__ import annotations

import json

import pytest

from ascend_inference.errors import StackError
from ascend_inference.render import render_node
from ascend_inference.stackfile import LoadedStack, load_stack
from ascend_inference.topology import weights_gb
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure

NS = "ascend-inference:"


def with_config(stack: str, **sections: dict) -> LoadedStack:
    loaded = load_stack(stack)
    config = json.loads(json.dumps(loaded.raw_config))
    for section, values in sections.items():
        config[NS + section] = {**config.get(NS + section, {}), **values}
    return loaded_with_config(loaded, config)


def refused(stack: str, **sections: dict) -> list[tuple[str, str, str]]:
    with pytest.raises(StackError) as raised:
        with_config(stack, **sections)
    return [(p.key, p.message, p.fix) for p in raised.value.problems]


def test_expert_parallel_on_a_dense_model_is_refused():
    assert (NS + "parallel.ep", "ep is 32 but the model has no experts", "set ep: 1 for a dense model") in refused(
        "dp4-ep32-gpustack", model={"experts": 0})


def test_more_pipeline_stages_than_layers_is_refused():
    problems = refused("tp8-pp2-300iduo", model={"layers": 1}, parallel={"pp_layer_split": None})
    assert (NS + "parallel.pp", "pp 2 exceeds the model's 1 layers", "use pp <= 1") in problems


def test_declared_weights_size_is_what_the_memory_fit_uses():
    loaded = with_config("tp16-mindie", model={"weights_gb": 700})
    assert weights_gb(loaded.spec) == 700
    assert loaded.plan.memory.weights_gb == 700


def test_ranks_of_a_node():
    plan = load_stack("tp16-vllm-mindspore").plan
    assert [r.rank for r in plan.ranks_of(1)] == list(range(8, 16))
    assert {r.node_index for r in plan.ranks_of(0)} == {0}


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_mindie_npu_memory_fraction_outside_0_1_is_refused(fraction):
    assert refused("tp16-mindie", engine={"npu_memory_fraction": fraction}) == [
        (NS + "engine.npu_memory_fraction", f"{fraction} is not in (0, 1]", "use 0.95 (runbook 001)")]


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_vllm_gpu_memory_utilization_outside_0_1_is_refused(fraction):
    assert refused("tp16-vllm-mindspore", engine={"gpu_memory_utilization": fraction}) == [
        (NS + "engine.gpu_memory_utilization", f"{fraction} is not in (0, 1]", "use e.g. 0.9 (runbook 000)")]


def test_gpustack_across_nodes_of_a_profile_without_distributed_mindie_is_refused():
    loaded = load_stack("dp4-ep32-gpustack")
    config = json.loads(json.dumps(loaded.raw_config))
    config[NS + "hardware"] = {"profile": "atlas-300i-duo"}
    for node in config[NS + "nodes"]:
        node.pop("device_ips")  # a card without a RoCE fabric has none
    with pytest.raises(StackError) as raised:
        loaded_with_config(loaded, config)
    problems = [(p.key, p.message, p.fix) for p in raised.value.problems]
    assert (NS + "hardware.profile", "GPUStack's distributed MindIE backend does not run on atlas-300i-duo",
            "use Atlas 800T/800I A2 servers (runbook 002)") in problems


def test_an_env_entry_set_to_null_drops_the_engines_variable():
    default = render_node(load_stack("tp16-vllm-mindspore"), 0).env_text
    assert "export MS_ENABLE_LCCL=off" in default
    dropped = render_node(with_config("tp16-vllm-mindspore", engine={"env": {"MS_ENABLE_LCCL": None}}), 0).env_text
    assert "MS_ENABLE_LCCL" not in dropped
    assert dropped.replace("\n", "") in default.replace("\nexport MS_ENABLE_LCCL=off", "").replace("\n", "")


def test_vllm_pipeline_stages_on_a2_pass_the_layer_partition():
    loaded = with_config("tp16-vllm-mindspore", parallel={"tp": 8, "pp": 2})
    env = render_node(loaded, 0).env_text
    assert f"export VLLM_PP_LAYER_PARTITION={','.join(str(n) for n in loaded.plan.pp_layer_split)}" in env
    assert "VLLM_PP_LAYER_PARTITION" not in render_node(load_stack("tp16-vllm-mindspore"), 0).env_text


# Found by mutation testing (tools/mutation.py, docs/testing.md): these
# messages were checked only through the CLI's subprocess, or with numbers
# for which a wrong formula gives the same answer.

def test_a_layout_whose_product_is_not_the_world_quotes_the_product():
    problems = refused("tp8-pp2-300iduo", parallel={"tp": 2, "pp": 2, "dp": 3, "pp_layer_split": None})
    assert (NS + "parallel", "tp x pp x dp = 2 x 2 x 3 = 12, but the world is 2 nodes x 8 NPUs = 16",
            "choose tp, pp, dp whose product is 16, or change the number of nodes") in problems


def test_an_ep_that_does_not_divide_the_experts_suggests_every_divisor_up_to_the_world():
    problems = refused("dp4-ep32-gpustack", model={"experts": 16}, parallel={"ep": 3})
    assert (NS + "parallel.ep", "ep 3 does not divide the model's 16 experts",
            "use an ep that divides 16 (e.g. 1, 2, 4, 8, 16)") in problems


def test_a_layer_split_is_compared_with_the_layers_by_value_above_256_too():
    # CPython keeps one object of each small int only: an identity test passes below 257.
    assert with_config("tp8-pp2-300iduo", model={"layers": 300},
                       parallel={"pp_layer_split": [150, 150]}).plan.pp_layer_split == (150, 150)
    assert refused("tp8-pp2-300iduo", model={"layers": 300}, parallel={"pp_layer_split": [150, 149]}) == [
        (NS + "parallel.pp_layer_split", "[150, 149] sums to 299 but the model has 300 layers",
         "make the stages sum to 300, e.g. [150, 150]")]


def test_as_many_pipeline_stages_as_layers_is_accepted():
    assert with_config("tp8-pp2-300iduo", model={"layers": 2},
                       parallel={"pp_layer_split": None}).plan.pp_layer_split == (1, 1)


def test_a_model_that_does_not_fit_names_the_largest_stage_only_under_pipeline_parallel():
    [(key, staged, _)] = refused("tp8-pp2-300iduo", parallel={"pp_layer_split": [60, 1]})
    assert key == NS + "model" and staged.endswith("; the largest pipeline stage needs 396 GB of 297 GB")
    [(key, whole, fix)] = refused("tp16-mindie", model={"quantization": "bf16"})
    assert key == NS + "model" and "pipeline stage" not in whole
    assert fix == "add nodes (at least 4 x atlas-800i-a2) or use a smaller quantization"
