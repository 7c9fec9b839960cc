"""The parallel plan: world size, rank layout, pipeline split and memory fit.

`plan_for(spec, file)` returns a `Plan` or raises `StackError` listing every
layout problem with the numbers, so an impossible layout is refused before a
node is touched rather than found after a two-hour HCCL timeout.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ascend_inference.errors import Problem, StackError

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec

# Bytes per parameter of the weights as stored. W8A8 and A8W4 checkpoints keep
# embeddings, norms, gates and MLA projections in BF16, so they are larger than
# 1 and 0.5 bytes per parameter (R1 W8A8 is ~700 GB on disk, A8W4 ~400 GB).
BYTES_PER_PARAMETER = {"bf16": 2.0, "w8a8": 1.06, "a8w4": 0.6}
GB = 10**9


@dataclass(frozen=True)
class Rank:
    rank: int
    node: str
    node_index: int
    device: int
    tp_rank: int
    pp_stage: int
    dp_rank: int


@dataclass(frozen=True)
class MemoryFit:
    weights_gb: float
    required_gb: float          # weights as laid out (replicas included)
    usable_gb: float            # devices x memory x engine fraction
    available_for_weights_gb: float  # usable minus KV headroom
    per_stage_required_gb: tuple[float, ...]
    per_stage_available_gb: float
    fits: bool

    def summary(self) -> str:
        return (f"weights {self.weights_gb:.0f} GB laid out as {self.required_gb:.0f} GB; "
                f"usable {self.usable_gb:.0f} GB, of which {self.available_for_weights_gb:.0f} GB "
                f"may hold weights after the KV-cache headroom")


@dataclass(frozen=True)
class Plan:
    nodes: int
    devices_per_node: int
    world_size: int
    tp: int
    pp: int
    dp: int
    ep: int
    moe_tp: int
    pp_layer_split: tuple[int, ...]
    ranks: tuple[Rank, ...]
    memory: MemoryFit

    def ranks_of(self, node_index: int) -> list[Rank]:
        return [r for r in self.ranks if r.node_index == node_index]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ranks"] = [asdict(r) for r in self.ranks]
        data["memory"] = asdict(self.memory)
        data["pp_layer_split"] = list(self.pp_layer_split)
        return data


def default_layer_split(layers: int, stages: int) -> tuple[int, ...]:
    """Earlier stages take the remainder: 61 layers in 2 stages -> (31, 30),
    as runbook 003's VLLM_PP_LAYER_PARTITION."""
    base, extra = divmod(layers, stages)
    return tuple(base + (1 if s < extra else 0) for s in range(stages))


def weights_gb(spec: ClusterSpec) -> float:
    if spec.model.weights_gb is not None:
        return spec.model.weights_gb
    return spec.model.parameters_b * BYTES_PER_PARAMETER[spec.model.quantization]


def rank_layout(nodes: list[str], devices_per_node: int, tp: int, pp: int, dp: int) -> tuple[Rank, ...]:
    """Global ranks in node order, device order within a node (the order HCCL
    rank tables use). TP is innermost, then DP, then PP stage, so a TP group
    stays on as few nodes as possible and PP stages split across nodes."""
    ranks = []
    for node_index, node in enumerate(nodes):
        for device in range(devices_per_node):
            rank = node_index * devices_per_node + device
            ranks.append(Rank(
                rank=rank, node=node, node_index=node_index, device=device,
                tp_rank=rank % tp, dp_rank=(rank // tp) % dp, pp_stage=rank // (tp * dp),
            ))
    return tuple(ranks)


def plan_for(spec: ClusterSpec, file: str) -> Plan:
    problems: list[Problem] = []
    p = spec.parallel
    key = "ascend-inference:parallel"
    profile = spec.profile
    engine = spec.engine_plugin
    n_nodes = len(spec.nodes)
    per_node = profile.devices_per_node
    world = n_nodes * per_node

    if p.tp * p.pp * p.dp != world:
        problems.append(Problem(
            file, key,
            f"tp x pp x dp = {p.tp} x {p.pp} x {p.dp} = {p.tp * p.pp * p.dp}, but the world is "
            f"{n_nodes} nodes x {per_node} NPUs = {world}",
            f"choose tp, pp, dp whose product is {world}, or change the number of nodes"))
    if p.pp > 1 and not engine.supports_pp:
        problems.append(Problem(file, f"{key}.pp", f"engine {engine.kind} does not run pipeline parallel here",
                                "set pp: 1 or use engine kind vllm-mindspore"))
    if p.dp > 1 and not engine.supports_dp:
        problems.append(Problem(file, f"{key}.dp", f"engine {engine.kind} does not run data parallel here",
                                "set dp: 1 or use engine kind gpustack"))
    if p.ep > 1 and not engine.supports_ep:
        problems.append(Problem(file, f"{key}.ep", f"engine {engine.kind} does not run expert parallel here",
                                "set ep: 1 or use engine kind gpustack"))

    moe_tp = p.moe_tp if p.moe_tp is not None else (p.tp if p.ep == 1 else 1)
    experts = spec.model.experts
    if p.ep > 1:
        if experts == 0:
            problems.append(Problem(file, f"{key}.ep", f"ep is {p.ep} but the model has no experts",
                                    "set ep: 1 for a dense model"))
        elif experts % p.ep:
            problems.append(Problem(
                file, f"{key}.ep", f"ep {p.ep} does not divide the model's {experts} experts",
                f"use an ep that divides {experts} "
                f"(e.g. {', '.join(str(d) for d in _divisors(experts) if d <= world)})"))
        stage_world = p.tp * p.dp
        if stage_world % (p.ep * moe_tp):
            problems.append(Problem(
                file, f"{key}.ep",
                f"ep x moe_tp = {p.ep} x {moe_tp} = {p.ep * moe_tp} "
                f"does not divide the {stage_world} NPUs of a pipeline stage (tp x dp)",
                "make ep x moe_tp a divisor of tp x dp"))
    if p.moe_tp is not None and p.ep == 1 and p.moe_tp != p.tp:
        problems.append(Problem(file, f"{key}.moe_tp",
                                f"moe_tp {p.moe_tp} differs from tp {p.tp} without expert parallel",
                                "drop moe_tp or set ep"))

    layers = spec.model.layers
    if p.pp_layer_split is not None:
        split = tuple(p.pp_layer_split)
        if len(split) != p.pp:
            problems.append(Problem(file, f"{key}.pp_layer_split",
                                    f"has {len(split)} stages but pp is {p.pp}",
                                    f"give {p.pp} numbers, e.g. {list(default_layer_split(layers, p.pp))}"))
        elif sum(split) != layers:
            problems.append(Problem(file, f"{key}.pp_layer_split",
                                    f"{list(split)} sums to {sum(split)} but the model has {layers} layers",
                                    f"make the stages sum to {layers}, e.g. {list(default_layer_split(layers, p.pp))}"))
    else:
        split = default_layer_split(layers, p.pp)
    if p.pp > layers:
        problems.append(Problem(file, f"{key}.pp", f"pp {p.pp} exceeds the model's {layers} layers",
                                f"use pp <= {layers}"))

    problems.extend(engine.check(spec, None, file))
    if problems:
        raise StackError(problems)

    memory = memory_fit(spec, world, moe_tp, split)
    if not memory.fits:
        worst = max(memory.per_stage_required_gb)
        raise StackError([Problem(
            file, "ascend-inference:model",
            f"{spec.model.name} {spec.model.quantization.upper()} does not fit: {memory.summary()}"
            + (f"; the largest pipeline stage needs {worst:.0f} GB of {memory.per_stage_available_gb:.0f} GB"
               if p.pp > 1 else ""),
            f"add nodes (at least {minimum_nodes(spec, memory)} x {spec.hardware.profile}) "
            f"or use a smaller quantization")])

    ranks = rank_layout([n.name for n in spec.nodes], per_node, p.tp, p.pp, p.dp)
    plan = Plan(n_nodes, per_node, world, p.tp, p.pp, p.dp, p.ep, moe_tp, split, ranks, memory)
    late = engine.check(spec, plan, file)
    if late:
        raise StackError(late)
    return plan


def memory_fit(spec: ClusterSpec, world: int, moe_tp: int, split: tuple[int, ...]) -> MemoryFit:
    p = spec.parallel
    weights = weights_gb(spec)
    # At most 1: the spec refuses more expert parameters than parameters.
    expert_share = spec.model.expert_parameters_b / spec.model.parameters_b if spec.model.experts else 0.0
    dense, experts = weights * (1 - expert_share), weights * expert_share
    # Per pipeline stage: dense weights are replicated in every DP group;
    # expert weights are replicated (tp*dp)/(ep*moe_tp) times (once with EP
    # over the whole stage, dp times with plain TP).
    stage_world = p.tp * p.dp
    expert_replicas = max(1, stage_world // (p.ep * moe_tp)) if spec.model.experts else 1
    stages = []
    for layers in split:
        share = layers / spec.model.layers
        stages.append(share * (dense * p.dp + experts * expert_replicas))
    fraction = spec.engine_plugin.memory_fraction(spec)
    device_gb = spec.profile.device_memory_gb * 2**30 / GB
    usable = world * device_gb * fraction
    available = usable * (1 - spec.model.kv_headroom)
    per_stage_available = available / p.pp
    fits = all(s <= per_stage_available for s in stages)
    return MemoryFit(round(weights, 1), round(sum(stages), 1), round(usable, 1), round(available, 1),
                     tuple(round(s, 1) for s in stages), round(per_stage_available, 1), fits)


def minimum_nodes(spec: ClusterSpec, memory: MemoryFit) -> int:
    per_node_available = memory.available_for_weights_gb / len(spec.nodes)
    needed = math.ceil(memory.required_gb / per_node_available)
    # Layouts want a power-of-two node count.
    return 1 << (needed - 1).bit_length()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
