"""The parallel plan: pipeline layer splits, rank layout and the memory fit.

Expected memory numbers are computed here from the formula documented in
ascend_inference/topology.py (weights = parameters x bytes per parameter of the
quantization; per pipeline stage, dense weights replicated per DP group and
expert weights replicated tp*dp/(ep*moe_tp) times, scaled by the stage's share
of the layers; usable = devices x device memory x the engine's memory
fraction; minus the KV-cache headroom; each stage must fit in its share) and
the runbooks' numbers, not copied from the program's output.
"""
from __future__ import annotations

import itertools
import math
import re

import pytest

from ascend_inference.errors import StackError
from ascend_inference.stackfile import load_stack
from ascend_inference.topology import default_layer_split, rank_layout
from tests.conftest import NS, STACKS, load_stack_doc, run_cli, write_stack

pytestmark = pytest.mark.pure

GB = 10**9
GIB = 2**30
# Bytes per parameter as stored (topology.py: W8A8/A8W4 keep embeddings,
# norms, gates and MLA in BF16; R1 W8A8 ~700 GB on disk, A8W4 ~400 GB).
BYTES = {"bf16": 2.0, "w8a8": 1.06, "a8w4": 0.6}
# HBM per device (hardware.py; npu-smi reports 65536 MB on 910B).
DEVICE_GIB = {"atlas-800i-a2": 64, "atlas-800t-a2": 64, "atlas-300i-duo": 48,
              # Atlas A3: per die, 16 dies a server (vLLM-Ascend: "Atlas 800 A3 (64G x 16)").
              "atlas-800i-a3": 64}
DEVICES_PER_NODE = {"atlas-800i-a3": 16}
R1_PARAMETERS_B, R1_EXPERT_PARAMETERS_B, R1_LAYERS, KV_HEADROOM = 671.0, 654.0, 61, 0.1


# --------------------------------------------------------------------------
# Pipeline layer split
# --------------------------------------------------------------------------

def test_runbook_003_split():
    assert default_layer_split(61, 2) == (31, 30)


@pytest.mark.parametrize("layers, stages, split", [
    (61, 1, (61,)),
    (61, 2, (31, 30)),
    (61, 3, (21, 20, 20)),
    (61, 4, (16, 15, 15, 15)),
    (60, 4, (15, 15, 15, 15)),
    (10, 3, (4, 3, 3)),
    (8, 8, (1,) * 8),
])
def test_layer_splits(layers, stages, split):
    assert default_layer_split(layers, stages) == split


def test_layer_split_properties():
    for layers in range(1, 130):
        for stages in range(1, min(layers, 16) + 1):
            split = default_layer_split(layers, stages)
            assert len(split) == stages
            assert sum(split) == layers
            assert max(split) - min(split) <= 1
            assert list(split) == sorted(split, reverse=True), "earlier stages take the remainder"
            assert min(split) >= 1


# --------------------------------------------------------------------------
# Rank layout
# --------------------------------------------------------------------------

def test_rank_layout_tp16_on_two_nodes():
    ranks = rank_layout(["node0", "node1"], 8, tp=16, pp=1, dp=1)
    assert [r.rank for r in ranks] == list(range(16))
    assert [(r.node, r.device) for r in ranks] == [(n, d) for n in ("node0", "node1") for d in range(8)]
    assert [r.tp_rank for r in ranks] == list(range(16))
    assert {r.pp_stage for r in ranks} == {0} and {r.dp_rank for r in ranks} == {0}


def test_rank_layout_tp8_pp2_puts_one_stage_per_node():
    ranks = rank_layout(["node0", "node1"], 8, tp=8, pp=2, dp=1)
    for r in ranks:
        assert r.pp_stage == r.node_index
        assert r.tp_rank == r.device


def test_rank_layout_dp4_tp8_puts_one_dp_group_per_node():
    nodes = [f"node{i}" for i in range(4)]
    ranks = rank_layout(nodes, 8, tp=8, pp=1, dp=4)
    for r in ranks:
        assert r.dp_rank == r.node_index and r.tp_rank == r.device and r.pp_stage == 0


@pytest.mark.parametrize("n_nodes, devices", [(1, 8), (2, 8), (4, 8), (3, 4), (8, 16), (2, 1)])
def test_rank_layout_properties(n_nodes, devices):
    nodes = [f"n{i}" for i in range(n_nodes)]
    world = n_nodes * devices
    for tp, pp in itertools.product(range(1, world + 1), repeat=2):
        if world % (tp * pp):
            continue
        dp = world // (tp * pp)
        ranks = rank_layout(nodes, devices, tp=tp, pp=pp, dp=dp)
        assert [r.rank for r in ranks] == list(range(world))
        assert [r.node for r in ranks] == [n for n in nodes for _ in range(devices)]
        assert [r.device for r in ranks] == list(range(devices)) * n_nodes
        coordinates = {(r.pp_stage, r.dp_rank, r.tp_rank) for r in ranks}
        assert coordinates == set(itertools.product(range(pp), range(dp), range(tp))), (tp, pp, dp)
        # A TP group is contiguous in rank order.
        for r in ranks:
            assert r.rank == (r.pp_stage * dp + r.dp_rank) * tp + r.tp_rank


# --------------------------------------------------------------------------
# Memory fit
# --------------------------------------------------------------------------

def expected_memory(*, quantization, profile, nodes, fraction, tp, pp=1, dp=1, ep=1, moe_tp=None, split=None):
    devices = DEVICES_PER_NODE.get(profile, 8)
    world = nodes * devices
    moe_tp = moe_tp if moe_tp is not None else (tp if ep == 1 else 1)
    split = split or default_layer_split(R1_LAYERS, pp)
    weights = R1_PARAMETERS_B * BYTES[quantization]
    experts = weights * R1_EXPERT_PARAMETERS_B / R1_PARAMETERS_B
    dense = weights - experts
    replicas = max(1, (tp * dp) // (ep * moe_tp))
    stages = [layers / R1_LAYERS * (dense * dp + experts * replicas) for layers in split]
    usable = world * DEVICE_GIB[profile] * GIB / GB * fraction
    available = usable * (1 - KV_HEADROOM)
    per_stage = available / pp
    return {"weights_gb": weights, "required_gb": sum(stages), "usable_gb": usable,
            "available_for_weights_gb": available, "per_stage_required_gb": stages,
            "per_stage_available_gb": per_stage, "fits": all(s <= per_stage for s in stages)}


# Each stack with the runbook's values: quantization, hardware, nodes, the
# engine's memory fraction (000: --gpu-memory-utilization=0.9; 001/002: 0.95;
# 003: 0.8; LMDeploy: 0.9 documented in its engine), layout.
STACK_MEMORY = {
    "tp16-vllm-mindspore": dict(quantization="w8a8", profile="atlas-800i-a2", nodes=2, fraction=0.9, tp=16),
    "tp16-mindie": dict(quantization="w8a8", profile="atlas-800i-a2", nodes=2, fraction=0.95, tp=16),
    "dp4-ep32-gpustack": dict(quantization="bf16", profile="atlas-800t-a2", nodes=4, fraction=0.95, tp=8, dp=4,
                              ep=32, moe_tp=1),
    "tp8-pp2-300iduo": dict(quantization="a8w4", profile="atlas-300i-duo", nodes=2, fraction=0.8, tp=8, pp=2,
                            split=(31, 30)),
    "tp16-lmdeploy": dict(quantization="w8a8", profile="atlas-800t-a2", nodes=2, fraction=0.9, tp=16),
    # No runbook: MindIE's 0.95 of runbook 001 on 2 x 800I A3, one TP group over 32 dies.
    "tp32-a3-mindie": dict(quantization="w8a8", profile="atlas-800i-a3", nodes=2, fraction=0.95, tp=32),
    # No runbook: vllm-ascend's tutorial, --gpu-memory-utilization 0.92, one DP rank (TP8) per server, EP = DP x TP.
    "dp2-tp8-ep16-vllm-ascend": dict(quantization="w8a8", profile="atlas-800i-a2", nodes=2, fraction=0.92, tp=8,
                                     dp=2, ep=16, moe_tp=1),
    "dp4-tp8-ep32-vllm-ascend": dict(quantization="w8a8", profile="atlas-800i-a2", nodes=4, fraction=0.92, tp=8,
                                     dp=4, ep=32, moe_tp=1),
    # Its Ray form: ray.md's --gpu-memory-utilization 0.9, one TP16 group over both servers, EP = TP.
    "tp16-vllm-ascend-ray": dict(quantization="w8a8", profile="atlas-800i-a2", nodes=2, fraction=0.9, tp=16,
                                 ep=16, moe_tp=1),
}


def test_every_stack_has_a_memory_case():
    assert set(STACK_MEMORY) == set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_memory_fit_of_each_stack(stack):
    loaded = load_stack(stack)
    memory = loaded.plan.memory
    want = expected_memory(**STACK_MEMORY[stack])
    assert want["fits"], f"{stack} should fit by the documented formula"
    assert memory.fits
    for field in ("weights_gb", "required_gb", "usable_gb", "available_for_weights_gb", "per_stage_available_gb"):
        assert getattr(memory, field) == pytest.approx(want[field], abs=0.06), field
    assert list(memory.per_stage_required_gb) == pytest.approx(want["per_stage_required_gb"], abs=0.06)


def test_memory_numbers_of_the_runbooks():
    # 671B x 2 bytes = 1342 GB of BF16 weights (runbook 001: at least 4 servers);
    # W8A8 ~711 GB (runbook 000/001: 2 servers); A8W4 ~403 GB (runbook 003: 2 x 300I Duo).
    assert expected_memory(quantization="bf16", profile="atlas-800i-a2", nodes=2, fraction=0.95, tp=16)[
        "weights_gb"] == pytest.approx(1342)
    assert load_stack("tp16-mindie").plan.memory.weights_gb == pytest.approx(711.3, abs=0.06)
    assert load_stack("tp8-pp2-300iduo").plan.memory.weights_gb == pytest.approx(402.6, abs=0.06)
    # 16 x 64 GiB x 0.95 = 1044 GB usable on two 800I A2.
    assert load_stack("tp16-mindie").plan.memory.usable_gb == pytest.approx(16 * 64 * GIB / GB * 0.95, abs=0.06)


def assert_gb_in(text: str, number: float) -> None:
    """`text` quotes `number` GB (rounded to a whole GB, either way)."""
    quoted = [int(n) for n in re.findall(r"(\d+) GB", text)]
    assert any(abs(n - number) < 1 for n in quoted), f"{number:.1f} GB not in: {text}"


def _mindie_stack(tmp_path, *, nodes: int, quantization: str):
    doc = load_stack_doc("tp16-mindie")
    config = doc["config"]
    base = config[NS + "nodes"][0]
    config[NS + "nodes"] = [
        {"name": f"node{i}", "host": f"192.0.2.{11 + i}", "hostname": f"atlas-800i-a2-{i}",
         "device_ips": [f"198.51.100.{16 * i + d + 1}" for d in range(8)]}
        for i in range(nodes)]
    assert base["name"] == "node0"
    config[NS + "model"]["quantization"] = quantization
    config[NS + "parallel"]["tp"] = nodes * 8  # MindIE: one TP group over every NPU
    return write_stack(tmp_path, f"mindie-{quantization}-{nodes}n", doc)


def test_bf16_on_two_800i_a2_is_refused_with_the_numbers(tmp_path):
    path = _mindie_stack(tmp_path, nodes=2, quantization="bf16")
    want = expected_memory(quantization="bf16", profile="atlas-800i-a2", nodes=2, fraction=0.95, tp=16)
    assert not want["fits"]
    with pytest.raises(StackError) as caught:
        load_stack(str(path))
    text = str(caught.value)
    assert "ascend-inference:model" in text
    for number in (want["weights_gb"], want["usable_gb"], want["available_for_weights_gb"]):
        assert_gb_in(text, number)
    # Minimum node count: required / per-node available, rounded up to a power of two.
    per_node = want["available_for_weights_gb"] / 2
    needed = math.ceil(want["required_gb"] / per_node)
    minimum = 1 << (needed - 1).bit_length()
    assert minimum == 4  # runbook 001: "16浮点权重需要至少4台atlas 800 I A2"
    assert "at least 4 x atlas-800i-a2" in text


def test_bf16_on_four_800i_a2_is_accepted(tmp_path):
    path = _mindie_stack(tmp_path, nodes=4, quantization="bf16")
    want = expected_memory(quantization="bf16", profile="atlas-800i-a2", nodes=4, fraction=0.95, tp=32)
    assert want["fits"]
    loaded = load_stack(str(path))
    assert loaded.plan.world_size == 32 and loaded.plan.memory.fits
    assert loaded.plan.memory.required_gb == pytest.approx(want["required_gb"], abs=0.06)
    assert loaded.plan.memory.usable_gb == pytest.approx(want["usable_gb"], abs=0.06)
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 0, result.stderr


def test_w8a8_on_two_800i_a2_fits(tmp_path):
    path = _mindie_stack(tmp_path, nodes=2, quantization="w8a8")
    assert load_stack(str(path)).plan.memory.fits


def test_a_pipeline_stage_that_does_not_fit_is_refused(tmp_path):
    # The whole model fits in the 300I Duo pair, but not with 60 of 61 layers on one stage.
    want = expected_memory(quantization="a8w4", profile="atlas-300i-duo", nodes=2, fraction=0.8, tp=8, pp=2,
                           split=(60, 1))
    assert want["required_gb"] <= want["available_for_weights_gb"] and not want["fits"]
    doc = load_stack_doc("tp8-pp2-300iduo")
    doc["config"][NS + "parallel"]["pp_layer_split"] = [60, 1]
    path = write_stack(tmp_path, "stage", doc)
    result = run_cli("validate", "--stack", path)
    assert result.returncode == 3, result.stdout
    worst = max(want["per_stage_required_gb"])
    match = re.search(r"largest pipeline stage needs (\d+) GB of (\d+) GB", result.stderr)
    assert match, result.stderr
    assert abs(int(match.group(1)) - worst) < 1 and abs(int(match.group(2)) - want["per_stage_available_gb"]) < 1
    assert "Traceback" not in result.stderr


def test_plan_of_each_stack():
    expect = {
        "tp16-vllm-mindspore": (16, 16, 1, 1, 1, (61,)),
        "tp16-mindie": (16, 16, 1, 1, 1, (61,)),
        "dp4-ep32-gpustack": (32, 8, 1, 4, 32, (61,)),
        "tp8-pp2-300iduo": (16, 8, 2, 1, 1, (31, 30)),
        "tp16-lmdeploy": (16, 16, 1, 1, 1, (61,)),
    }
    for stack, (world, tp, pp, dp, ep, split) in expect.items():
        plan = load_stack(stack).plan
        assert (plan.world_size, plan.tp, plan.pp, plan.dp, plan.ep, tuple(plan.pp_layer_split)) == \
            (world, tp, pp, dp, ep, split), stack
        assert plan.tp * plan.pp * plan.dp == plan.world_size
        assert len(plan.ranks) == plan.world_size
    assert load_stack("dp4-ep32-gpustack").plan.moe_tp == 1
