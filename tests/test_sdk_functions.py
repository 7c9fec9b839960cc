"""components/sdk_functions.py through each stand-in that uses it
(`source_positions`, `linear_wait`, `debug_log`): installed over the exact
SDK function it was written against, under the pulumi release it was
written for, and never over any other."""
from __future__ import annotations

import types

import pytest
from pulumi import log as sdk_log
from pulumi.runtime import resource as sdk_resource
from pulumi.runtime import stack as sdk_stack

from components import debug_log, linear_wait, source_positions

pytestmark = pytest.mark.graph

# (the stand-in's module, what holds the SDK function, its name, the stand-in)
STAND_INS = [
    (source_positions, sdk_resource, "_get_stack_trace", source_positions.stack_trace),
    (linear_wait, sdk_stack, "wait_for_rpcs", linear_wait.wait_for_rpcs),
    (debug_log, sdk_log, "debug", debug_log.debug),
]


@pytest.mark.parametrize("module,owner,name,ours", STAND_INS, ids=[m.__name__.split(".")[-1] for m, *_ in STAND_INS])
def test_installed_only_over_the_sdk_function_it_was_written_for(monkeypatch, module: types.ModuleType,
                                                                 owner: object, name: str, ours: object):
    sdk = module._SDK_FUNCTION
    monkeypatch.setattr(owner, name, sdk)
    assert module.install()
    assert getattr(owner, name) is ours
    assert module.install()  # again: already there

    def another_sdk_function(*args, **kwargs):
        raise AssertionError("not called")

    monkeypatch.setattr(owner, name, another_sdk_function)
    assert not module.install()
    assert getattr(owner, name) is another_sdk_function

    monkeypatch.setattr(owner, name, sdk)
    monkeypatch.setattr(module, "WRITTEN_FOR", "3.0.0")
    assert not module.install()
    assert getattr(owner, name) is sdk
