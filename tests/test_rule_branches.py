"""Rules of the topology and the engines' settings checks that branch
coverage found no fast test reaching (issue 24). Each bad value is refused
with file, key and fix; each good one is rendered as the engine reads it."""
from __future__ import annotations

import json
import math

import pytest

from ascend_inference.errors import StackError
from ascend_inference.render import render_node
from ascend_inference.stackfile import LoadedStack, load_stack
from ascend_inference.topology import MemoryFit, Plan, rank_layout, weights_gb
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


def test_data_parallel_on_an_engine_without_it_is_refused_from_dp_2():
    assert (NS + "parallel.dp", "engine mindie does not run data parallel here",
            "set dp: 1 or use engine kind gpustack") in refused("tp16-mindie", parallel={"tp": 8, "dp": 2})


def test_ep_times_moe_tp_must_divide_the_npus_of_a_stage():
    assert refused("dp4-ep32-gpustack", parallel={"ep": 64}) == [
        (NS + "parallel.ep", "ep x moe_tp = 64 x 1 = 64 does not divide the 32 NPUs of a pipeline stage (tp x dp)",
         "make ep x moe_tp a divisor of tp x dp")]


@pytest.mark.parametrize("moe_tp", [8, 32])
def test_moe_tp_other_than_tp_without_expert_parallel_is_refused(moe_tp):
    assert refused("tp16-vllm-mindspore", parallel={"moe_tp": moe_tp}) == [
        (NS + "parallel.moe_tp", f"moe_tp {moe_tp} differs from tp 16 without expert parallel",
         "drop moe_tp or set ep")]
    assert with_config("tp16-vllm-mindspore", parallel={"moe_tp": 16}).plan.moe_tp == 16


# A small MoE model (100 B parameters, 90 B of them experts, BF16: 20 GB dense,
# 180 GB experts) on dp 4 x tp 8: dense weights once per DP group, expert
# weights once per (tp x dp) / (ep x moe_tp) NPUs.
SMALL_MOE = {"parameters_b": 100, "expert_parameters_b": 90}


@pytest.mark.parametrize("parallel, model, required", [
    ({"ep": 16}, SMALL_MOE, 20 * 4 + 180 * 2),                        # EP over half a stage: experts twice
    ({"ep": 32}, SMALL_MOE, 20 * 4 + 180 * 1),                        # EP over the stage: experts once
    ({"ep": 1, "moe_tp": None}, SMALL_MOE, 20 * 4 + 180 * 4),         # plain TP (moe_tp = tp = 8): once per DP group
    ({"ep": 1, "moe_tp": None}, {"parameters_b": 100, "experts": 0, "expert_parameters_b": 0}, 200 * 4),  # dense
])
def test_memory_fit_counts_the_replicas_of_dense_and_expert_weights(parallel, model, required):
    memory = with_config("dp4-ep32-gpustack", parallel=parallel, model=model).plan.memory
    assert memory.weights_gb == 200 and memory.required_gb == required
    assert memory.per_stage_required_gb == (required,)


def test_expert_parameters_above_the_models_count_are_refused():
    # Once taken and capped at the whole model by the memory fit; a typo (6540 for 654) sized the
    # fit from a model that does not exist. Equal is a model of experts only, which fits.
    problems = refused("dp4-ep32-gpustack", model={"parameters_b": 100, "expert_parameters_b": 150})
    assert [(key, words) for key, words, _ in problems] == [
        (NS + "model", "expert_parameters_b 150 is more than parameters_b 100; the routed experts are a share "
                       "of the model's parameters")]
    memory = with_config("dp4-ep32-gpustack", parallel={"ep": 16},
                         model={"parameters_b": 100, "expert_parameters_b": 100}).plan.memory
    assert memory.weights_gb == 200 and memory.required_gb == 200 * 2
    assert memory.per_stage_required_gb == (400,)


def test_weights_that_need_exactly_what_a_stage_has_fit_and_a_hair_more_do_not():
    # A dense model on one stage needs its weights; what the stage has is the NPUs' memory times
    # the engine's share less the KV headroom, worked out in the memory fit's order so that the
    # float is the same. Found by mutation testing (`<=` -> `<` passed every test).
    loaded = load_stack("tp16-mindie")
    spec = loaded.spec
    have = (16 * (spec.profile.device_memory_gb * 2**30 / 10**9) * spec.engine_plugin.memory_fraction(spec)
            * (1 - spec.model.kv_headroom) / spec.parallel.pp)
    dense = {"experts": 0, "expert_parameters_b": 0}
    assert with_config("tp16-mindie", model={**dense, "weights_gb": have}).plan.memory.fits
    problems = refused("tp16-mindie", model={**dense, "weights_gb": math.nextafter(have, math.inf)})
    assert [key for key, _, _ in problems] == [NS + "model"]


def test_rank_numbers_run_on_across_nodes_whose_npu_count_is_no_power_of_two():
    from ascend_inference.topology import rank_layout

    ranks = rank_layout(["node0", "node1"], 3, 6, 1, 1)
    assert [(r.rank, r.node_index, r.device, r.tp_rank) for r in ranks] == [
        (0, 0, 0, 0), (1, 0, 1, 1), (2, 0, 2, 2), (3, 1, 0, 3), (4, 1, 1, 4), (5, 1, 2, 5)]


@pytest.mark.parametrize("required, available, nodes", [
    (10.0, 5.5, 4),   # 2.75 GB a node (not 2): 4 nodes, not 8
    (8.0, 4.0, 4),    # exactly 4 nodes' worth: 4, not the next power of two
    (8.1, 4.0, 8),    # a little more: 5 nodes' worth, rounded up to 8
])
def test_minimum_nodes_is_the_next_power_of_two_of_what_the_weights_need(required, available, nodes):
    from ascend_inference.topology import MemoryFit, minimum_nodes

    spec = load_stack("tp16-mindie").spec  # 2 nodes
    memory = MemoryFit(0.0, required, 0.0, available, (required,), available, False)
    assert minimum_nodes(spec, memory) == nodes


@pytest.mark.parametrize("stack", ["tp16-mindie", "dp4-ep32-gpustack", "tp8-pp2-300iduo", "tp32-a3-mindie"])
def test_the_memory_figures_are_given_to_a_tenth_of_a_gb(stack):
    # plan.json and the messages show them; found by mutation testing (rounding to 0.01 passed every test).
    memory = load_stack(stack).plan.memory
    figures = (memory.weights_gb, memory.required_gb, memory.usable_gb, memory.available_for_weights_gb,
               memory.per_stage_available_gb, *memory.per_stage_required_gb)
    assert all(round(f, 1) == f for f in figures), figures


def test_a_layer_split_with_fewer_stages_than_pp_is_refused():
    assert refused("tp8-pp2-300iduo", parallel={"pp_layer_split": [61]}) == [
        (NS + "parallel.pp_layer_split", "has 1 stages but pp is 2", "give 2 numbers, e.g. [31, 30]")]


def test_a_layer_split_over_the_models_layers_is_refused():
    assert refused("tp8-pp2-300iduo", parallel={"pp_layer_split": [31, 31]}) == [
        (NS + "parallel.pp_layer_split", "[31, 31] sums to 62 but the model has 61 layers",
         "make the stages sum to 61, e.g. [31, 30]")]


def test_a_layer_split_with_more_stages_than_pp_is_refused():
    assert refused("tp8-pp2-300iduo", parallel={"pp_layer_split": [20, 20, 21]}) == [
        (NS + "parallel.pp_layer_split", "has 3 stages but pp is 2", "give 2 numbers, e.g. [31, 30]")]


def test_the_ranks_of_a_node_are_found_by_its_index_above_256_too():
    nodes = [f"node{i}" for i in range(300)]
    memory = MemoryFit(1.0, 1.0, 1.0, 1.0, (1.0,), 1.0, True)
    plan = Plan(300, 1, 300, 300, 1, 1, 1, 300, (61,), rank_layout(nodes, 1, 300, 1, 1), memory)
    assert [(r.rank, r.node) for r in plan.ranks_of(299)] == [(299, "node299")]


def test_the_world_is_compared_with_tp_pp_dp_by_value_above_256_npus_too():
    loaded = load_stack("dp4-ep32-gpustack")
    config = json.loads(json.dumps(loaded.raw_config))
    config[NS + "nodes"] = [{"name": f"node{i}", "host": f"192.0.2.{i + 11}"} for i in range(36)]
    config[NS + "parallel"] = {**config[NS + "parallel"], "dp": 36}
    assert loaded_with_config(loaded, config).plan.world_size == 288


def test_pipeline_parallel_on_an_engine_without_it_is_refused_from_pp_2():
    assert (NS + "parallel.pp", "engine mindie does not run pipeline parallel here",
            "set pp: 1 or use engine kind vllm-mindspore") in refused("tp16-mindie", parallel={"tp": 8, "pp": 2})


def test_the_ep_suggestion_stops_at_the_world_and_includes_it():
    problems = refused("dp4-ep32-gpustack", model={"experts": 64}, parallel={"ep": 3})
    assert (NS + "parallel.ep", "ep 3 does not divide the model's 64 experts",
            "use an ep that divides 64 (e.g. 1, 2, 4, 8, 16, 32)") in problems


def test_expert_parallel_on_an_engine_without_it_is_refused_from_ep_2():
    assert (NS + "parallel.ep", "engine mindie does not run expert parallel here",
            "set ep: 1 or use engine kind gpustack") in refused("tp16-mindie", parallel={"ep": 2})


@pytest.mark.parametrize("ep, moe_tp", [(2, 1), (4, 4)])
def test_an_ep_that_divides_the_experts_and_whose_product_with_moe_tp_divides_a_stage_is_accepted(ep, moe_tp):
    # 256 experts, 32 NPUs a stage: 4 x 4 = 16 divides 32 (4 ** 4 would not). Small weights: the
    # expert replicas of a small ep fit.
    plan = with_config("dp4-ep32-gpustack", model={"weights_gb": 100}, parallel={"ep": ep, "moe_tp": moe_tp}).plan
    assert (plan.ep, plan.moe_tp) == (ep, moe_tp)


def test_ep_times_moe_tp_is_quoted_as_their_product():
    assert refused("dp4-ep32-gpustack", parallel={"ep": 4, "moe_tp": 16}) == [
        (NS + "parallel.ep", "ep x moe_tp = 4 x 16 = 64 does not divide the 32 NPUs of a pipeline stage (tp x dp)",
         "make ep x moe_tp a divisor of tp x dp")]


def test_a_layout_larger_than_the_world_is_refused():
    assert (NS + "parallel", "tp x pp x dp = 32 x 1 x 1 = 32, but the world is 2 nodes x 8 NPUs = 16",
            "choose tp, pp, dp whose product is 16, or change the number of nodes") in refused(
        "tp16-mindie", parallel={"tp": 32})


def test_expert_parallel_of_2_on_a_dense_model_is_refused():
    assert (NS + "parallel.ep", "ep is 2 but the model has no experts", "set ep: 1 for a dense model") in refused(
        "dp4-ep32-gpustack", model={"experts": 0}, parallel={"ep": 2})


def test_a_layout_with_pipeline_stages_quotes_the_product_of_all_three():
    assert (NS + "parallel", "tp x pp x dp = 4 x 2 x 1 = 8, but the world is 2 nodes x 8 NPUs = 16",
            "choose tp, pp, dp whose product is 16, or change the number of nodes") in refused(
        "tp8-pp2-300iduo", parallel={"tp": 4})


def test_the_ep_suggestion_of_an_odd_expert_count_includes_the_count():
    problems = refused("dp4-ep32-gpustack", model={"experts": 9}, parallel={"ep": 2})
    assert (NS + "parallel.ep", "ep 2 does not divide the model's 9 experts",
            "use an ep that divides 9 (e.g. 1, 3, 9)") in problems
