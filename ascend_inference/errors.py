"""Errors that reach a user: each names the stack file, the key and the fix.

The CLI and the Pulumi program print these as plain lines (never a traceback)
before anything touches a node; `python -m ascendctl` then exits with status 3
for a StackError and 4 for a NodeFactError (docs/cli.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack, located precisely enough to fix it."""

    file: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        from ascend_inference.safe_values import masked

        text = f"{self.file}: {self.key}: {self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        # A value that looks like a credential is quoted only by its first
        # characters, whichever check quotes it.
        # One line, whatever the value held (a newline would split it).
        return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], masked(text))


class StackError(Exception):
    """A stack that cannot work. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NodeFactError(Exception):
    """A fact read off a node contradicts the stack or another node (preflight)."""

    def __init__(self, node: str, fact: str, message: str, fix: str = ""):
        self.node, self.fact, self.fix = node, fact, fix
        text = f"node {node}: {fact}: {message}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)
