"""Engine branches that only a parallel shape no committed stack has reaches:
pipeline parallel under vllm-ascend's Ray form and under vllm-mindspore on
Atlas 800I A2, a 300I Duo stack without pipeline parallel, vllm-ascend without
expert parallel, single-node LMDeploy out of eager mode. Each is the stack as
committed with one setting changed, rendered, the flag or variable it becomes
checked both ways (so a branch taken the wrong way fails). Shapes that hold the
whole model on fewer NPUs declare a smaller model (`model.weights_gb`), which
the memory fit would otherwise refuse."""
from __future__ import annotations

import copy

import pytest

from ascend_inference.render import render_node
from ascend_inference.stackfile import load_stack
from ascendctl.preview.stack import loaded_with_config

pytestmark = pytest.mark.pure

NS = "ascend-inference:"
SMALL = {"weights_gb": 60}  # a model that fits on one node of any profile here


def rendered(stack: str, *, nodes: int | None = None, **sections: dict):
    """Node 0 of `stack` with each section's keys replaced (a key set to None is removed)."""
    loaded = load_stack(stack)
    config = copy.deepcopy(loaded.raw_config)
    if nodes is not None:
        config[NS + "nodes"] = config[NS + "nodes"][:nodes]
    for section, values in sections.items():
        merged = {**config.get(NS + section, {}), **values}
        config[NS + section] = {k: v for k, v in merged.items() if v is not None}
    return render_node(loaded_with_config(loaded, config), 0)


def serve(node) -> str:
    assert node.scripts.serve_start is not None
    return node.scripts.serve_start.command


def env(node) -> dict[str, str]:
    return dict(node.env.variables)


def test_vllm_ascend_ray_with_pipeline_parallel_passes_its_size():
    # ray.md's other shape over the same two servers: TP8/PP2.
    node = rendered("tp16-vllm-ascend-ray", parallel={"tp": 8, "pp": 2, "ep": 8})
    argv = serve(node)
    assert "--distributed-executor-backend ray" in argv
    assert "--tensor-parallel-size 8" in argv and "--pipeline-parallel-size 2" in argv
    assert "--pipeline-parallel-size" not in serve(rendered("tp16-vllm-ascend-ray"))


def test_vllm_ascend_without_expert_parallel_leaves_out_its_flag():
    assert "--enable-expert-parallel" in serve(rendered("dp2-tp8-ep16-vllm-ascend"))
    node = rendered("dp2-tp8-ep16-vllm-ascend", parallel={"ep": 1}, model=SMALL)
    assert "--enable-expert-parallel" not in serve(node)


def test_vllm_mindspore_on_a2_with_pipeline_parallel_sets_the_layer_partition():
    assert "VLLM_PP_LAYER_PARTITION" not in env(rendered("tp16-vllm-mindspore"))
    node = rendered("tp16-vllm-mindspore", parallel={"tp": 8, "pp": 2, "pp_layer_split": [31, 30]})
    assert env(node)["VLLM_PP_LAYER_PARTITION"] == "31,30"


def test_vllm_mindspore_on_300i_duo_without_pipeline_parallel_has_no_layer_partition():
    assert env(rendered("tp8-pp2-300iduo"))["VLLM_PP_LAYER_PARTITION"] == "31,30"
    node = rendered("tp8-pp2-300iduo", nodes=1, parallel={"tp": 8, "pp": None, "pp_layer_split": None},
                    model=SMALL)
    assert "VLLM_PP_LAYER_PARTITION" not in env(node)


def test_single_node_lmdeploy_out_of_eager_mode_leaves_out_the_flag():
    assert "--eager-mode" in serve(rendered("tp16-lmdeploy"))
    node = rendered("tp16-lmdeploy", nodes=1, parallel={"tp": 8}, engine={"eager_mode": False},
                    model=SMALL)
    assert "--eager-mode" not in serve(node) and "--tp 8" in serve(node)
