"""components/source_positions.py sends the engine the same stack trace and
source position as the SDK's own `_get_stack_trace`: from the same frames,
for the shapes the SDK distinguishes, and for every resource of a recorded
stack."""
from __future__ import annotations

import pytest
from pulumi.runtime import resource as sdk_resource

from ascend_inference.stackfile import load_stack
from ascendctl.preview.config import scaled_config
from ascendctl.preview.stack import loaded_with_config, record_stack
from components import source_positions

pytestmark = pytest.mark.graph

SDK = source_positions._SDK_FUNCTION


def both() -> tuple:
    # One call site for both: the frames outside this one are the same.
    return SDK(), source_positions.stack_trace()


class Base:
    def __init__(self) -> None:
        self.traces = both()


class Middle(Base):
    def __init__(self) -> None:
        super().__init__()


class Concrete(Middle):
    def __init__(self) -> None:
        self._internal_init()

    def _internal_init(self) -> None:
        super().__init__()


def made_by_a_user_function() -> Concrete:
    return Concrete()


def test_same_trace_below_three_constructors():
    theirs, ours = made_by_a_user_function().traces
    assert ours == theirs
    # The trace starts at the code that made the resource, innermost first.
    assert ours.frames[0].pc.uri.endswith("/tests/test_source_positions.py")
    assert ours.frames[0].pc.line == made_by_a_user_function.__code__.co_firstlineno + 1
    assert len(ours.frames) > 3


def test_same_empty_trace_with_fewer_than_three_constructors():
    theirs, ours = Middle().traces
    assert ours == theirs
    assert len(ours.frames) == 0


def test_same_trace_through_code_without_a_file():
    # exec'd code has the file name "<string>", which is no URI: no position.
    scope: dict = {"Concrete": Concrete}
    exec("def make():\n    return Concrete()\n", scope)  # noqa: S102
    theirs, ours = scope["make"]().traces
    assert ours == theirs
    assert not ours.frames[0].HasField("pc")


def test_a_recorded_stack_sends_the_sdks_traces(monkeypatch):
    compared = []

    def compare() -> object:
        theirs, ours = SDK(), source_positions.stack_trace()
        compared.append(ours == theirs)
        return ours

    monkeypatch.setattr(sdk_resource, "_get_stack_trace", compare)
    base = load_stack("tp16-vllm-mindspore")
    config = scaled_config(base, 4)
    graph = record_stack(loaded_with_config(base, config), config)
    assert len(compared) == len(graph.resources) + 1  # and the stack itself
    assert all(compared)
