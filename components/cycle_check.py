"""The SDK's dependency-cycle check, answered in linear time overall.

Before registering a resource, the Python SDK (pulumi 3.272,
`pulumi/runtime/resource_cycle_breaker.py`) asks for each dependency
`from -> to` whether `from` is already reachable from `to`, by walking every
resource `to` depends on, transitively. A cluster gate depends on every
node's checks, and everything after it (the containers, Ray, serving) declares
dependencies on resources behind the gate, so each of those walks covers the
whole graph before it: O(N^2) walks of deep generator chains for N nodes,
about half of a 512-node preview's time.

`declare_dependency` below answers the same question from a topological
order that it keeps up to date as edges are added (Pearce and Kelly, "A
dynamic topological sort algorithm for directed acyclic graphs", JEA 2007):
every resource that depends on another sits later in the order than it, so
`to` can reach `from` only if `to` sits later than `from`; and then only the
resources between the two are searched. In this program resources depend on
resources made before them, so almost every check is one comparison.

It returns what the SDK's own function returns for every sequence of calls
(tests/test_cycle_check.py compares the two on random graphs, cycles
included) and records the edge where the SDK records it, so the SDK's
behaviour is unchanged. It is installed only over the exact function it was
written against; any other SDK keeps its own check.
"""

from __future__ import annotations

import itertools
from typing import Any

import pulumi
import pulumi.runtime
from pulumi.runtime import resource_cycle_breaker, rpc

_ORDER = "_ascend_inference_order"
_DEPENDENTS = "_ascend_inference_dependents"


class _Order:
    """Places in the order. Each resource gets the next place when it is
    constructed (`place`, run by a stack transformation): a program can only
    make a resource depend on one that exists, so construction order is
    almost always a valid order and the checks almost never search. A
    resource seen without one (made before the transformation, like the
    stack itself) gets the next place when first seen; the search below
    corrects any order, so the first place only decides how often it runs."""

    def __init__(self) -> None:
        self._count = itertools.count(1)

    def of(self, resource: Any) -> int:
        order: int | None = getattr(resource, _ORDER, None)
        if order is None:
            order = next(self._count)
            setattr(resource, _ORDER, order)
        return order


_order = _Order()


def _dependents(resource: Any) -> set[Any]:
    return getattr(resource, _DEPENDENTS, set())


def declare_dependency(from_resource: Any, to_resource: Any) -> bool:
    """`resource_cycle_breaker.declare_dependency`: record that
    `from_resource` depends on `to_resource` and return True, unless
    `from_resource` is reachable from `to_resource` (a cycle): then False."""
    if from_resource is to_resource:
        return False
    upper = _order.of(from_resource)
    lower = _order.of(to_resource)
    if lower > upper:
        # `to` sits after `from`: search what lies between them.
        forward = _reach(to_resource, resource_cycle_breaker._deps, lambda r: getattr(r, _ORDER) > upper,
                         stop=from_resource)
        if forward is None:
            return False  # from_resource is among to_resource's dependencies
        backward = _reach(from_resource, _dependents, lambda r: getattr(r, _ORDER) < lower, stop=None)
        assert backward is not None  # a search without a stop always finishes
        # Re-number the two sets within their old numbers: what `to` needs
        # first, then `from` and what needs it.
        numbers = sorted(getattr(r, _ORDER) for r in (*forward, *backward))
        moved = sorted(forward, key=lambda r: getattr(r, _ORDER)) + sorted(
            backward, key=lambda r: getattr(r, _ORDER))
        for resource, number in zip(moved, numbers, strict=True):
            setattr(resource, _ORDER, number)
    resource_cycle_breaker._add_dep(from_resource, to_resource)
    dependents = getattr(to_resource, _DEPENDENTS, None)
    if dependents is None:
        dependents = set()
        setattr(to_resource, _DEPENDENTS, dependents)
    dependents.add(from_resource)
    return True


def _reach(start: Any, step: Any, inside: Any, stop: Any) -> list[Any] | None:
    """Resources reachable from `start` through `step` while `inside` holds
    (start included); None as soon as `stop` is reached."""
    seen = {id(start)}
    found = [start]
    todo = [start]
    while todo:
        for nxt in step(todo.pop()):
            if nxt is stop:
                return None
            if id(nxt) not in seen and inside(nxt):
                seen.add(id(nxt))
                found.append(nxt)
                todo.append(nxt)
    return found


def _place_on_construction(args: pulumi.ResourceTransformationArgs) -> None:
    _order.of(args.resource)
    return None  # the resource as it is


def install() -> bool:
    """Use `declare_dependency` for the SDK's cycle check when the SDK calls
    the function it was written against; True when installed. Call it inside
    the program (it registers a stack transformation that only numbers the
    resources, changing nothing of them)."""
    current = getattr(rpc, "declare_dependency", None)
    if current is not declare_dependency:
        if current is not resource_cycle_breaker.declare_dependency or not hasattr(resource_cycle_breaker,
                                                                                   "_add_dep"):
            return False
        rpc.declare_dependency = declare_dependency  # type: ignore[assignment]
    pulumi.runtime.register_stack_transformation(_place_on_construction)
    return True
