"""components/cycle_check.py answers the SDK's dependency-cycle question
exactly as the SDK's own walk does, on random sequences of declarations
(cycles, repeats and self edges included), and a stack recorded with it has
the same graph as one recorded with the SDK's walk."""
from __future__ import annotations

import random

import pytest
from pulumi.runtime import resource_cycle_breaker, rpc

from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack
from components import cycle_check

pytestmark = pytest.mark.graph


class Thing:
    """Stands for a Resource: both checks only set and read attributes."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def declarations(seed: int, count: int, edges: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(edges):
        a, b = rng.randrange(count), rng.randrange(count)
        # Mostly "later depends on earlier", as programs do, plus the rest.
        if rng.random() < 0.7 and a < b:
            a, b = b, a
        out.append((a, b))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_same_answers_as_the_sdk(seed):
    count = 6 + seed
    sdk_things = [Thing(f"r{i}") for i in range(count)]
    our_things = [Thing(f"r{i}") for i in range(count)]
    answers = []
    for a, b in declarations(seed, count, edges=4 * count):
        theirs = resource_cycle_breaker.declare_dependency(sdk_things[a], sdk_things[b])
        ours = cycle_check.declare_dependency(our_things[a], our_things[b])
        answers.append(theirs)
        assert ours == theirs, f"declaring r{a} -> r{b}"
        # The SDK's own record of dependencies is the same too.
        assert ({t.name for t in resource_cycle_breaker._deps(our_things[a])}
                == {t.name for t in resource_cycle_breaker._deps(sdk_things[a])})
    # Both outcomes occurred: the sequences test cycles, not only their absence.
    assert True in answers
    assert False in answers


def test_a_chain_closed_into_a_ring_is_refused():
    things = [Thing(f"r{i}") for i in range(50)]
    for i in range(1, 50):
        assert cycle_check.declare_dependency(things[i], things[i - 1])
    assert not cycle_check.declare_dependency(things[0], things[49])
    assert not cycle_check.declare_dependency(things[7], things[7])


def test_installed_by_the_program_and_same_graph_as_the_sdk_walk(monkeypatch):
    base = load_stack("tp16-vllm-mindspore")
    config = scaled_config(base, 20)
    with_ours = record_stack(loaded_with_config(base, config), config)
    assert rpc.declare_dependency is cycle_check.declare_dependency
    # The same run with the SDK's walk: install() leaves any other function alone.
    monkeypatch.setattr(rpc, "declare_dependency", lambda a, b: resource_cycle_breaker.declare_dependency(a, b))
    with_sdk = record_stack(loaded_with_config(base, config), config)
    assert rpc.declare_dependency is not cycle_check.declare_dependency
    # (Not the order of registrations: the SDK waits on sets of tasks, whose
    # order follows object addresses, so independent resources interleave
    # differently from run to run.)
    assert ({r.urn: sorted(r.dependencies) for r in with_ours.resources}
            == {r.urn: sorted(r.dependencies) for r in with_sdk.resources})


@pytest.mark.parametrize("stack", ["tp16-vllm-mindspore", "tp16-lmdeploy", "dp4-ep32-gpustack"])
def test_no_declaration_of_a_stack_needs_a_search(stack, monkeypatch):
    """Construction order is a valid order for every dependency the program
    declares, so each check is one comparison: nothing of the graph is
    walked, whatever the node count (the times: benchmarks/preview_scaling.py)."""
    searches: list[object] = []
    real_reach = cycle_check._reach
    monkeypatch.setattr(cycle_check, "_reach", lambda *a, **k: searches.append(a[0]) or real_reach(*a, **k))
    base = load_stack(stack)
    config = scaled_config(base, 24)
    graph = record_stack(loaded_with_config(base, config), config)
    assert len(graph.resources) > 200
    assert searches == []
