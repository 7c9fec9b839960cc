"""A stack file read and checked: its name, file, spec and plan.

A leaf module (only type-checking imports), so that the renderer can take a
`LoadedStack` without importing the YAML loader in stackfile.py, which
imports the engines, which use the renderer's templating.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ascend_inference.spec import ClusterSpec
    from ascend_inference.topology import Plan


@dataclass(frozen=True)
class LoadedStack:
    name: str
    file: str
    spec: ClusterSpec
    plan: Plan
    # Secret config keys present in the file (encrypted `secure:` values).
    secrets_present: frozenset[str]
    raw_config: dict[str, Any]
    # `network.rank_table_file`, read and checked; installed instead of the
    # table the program would make (None: the program makes one).
    brought_rank_table: dict[str, Any] | None = None
