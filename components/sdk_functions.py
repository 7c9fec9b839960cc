"""Putting a cheaper exact stand-in over an SDK function (`cycle_check`'s
SDK, `source_positions`, `linear_wait`, `debug_log`): only over the very function it was
written against, under the pulumi release it was written for; any other SDK
keeps its own."""

from __future__ import annotations

from importlib import metadata
from typing import Any


def replace_sdk_function(owner: Any, name: str, ours: Any, written_against: Any, written_for: str) -> bool:
    """Set `owner.name` to `ours` when it is `written_against` and pulumi is
    `written_for`; True when `ours` is (now or already) in place."""
    current = getattr(owner, name)
    if current is ours:
        return True
    if current is not written_against or metadata.version("pulumi") != written_for:
        return False
    setattr(owner, name, ours)
    return True
