"""Pulumi property paths (`a.b[0]`, `a["x.y"]`, `triggers[*]`): formatting,
parsing and matching them the way `replaceOnChanges` and `ignoreChanges` do."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
PathPart = str | int


def format_path(parts: Iterable[PathPart]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p == "*":
            out += "[*]"
        elif _IDENT.match(p):
            out += ("." if out else "") + p
        else:
            out += "[" + json.dumps(p) + "]"
    return out


_PATH_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_\-]*|\*)|\[(\d+|\*|"(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> list[PathPart]:
    """Parse a Pulumi property path (``a.b[0]``, ``a["x.y"]``, ``triggers[*]``)."""
    parts: list[PathPart] = []
    pos = 0
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad property path {path!r} at {pos}")
        if m.group(1) is not None:
            parts.append(m.group(1))
        else:
            tok = m.group(2)
            if tok == "*":
                parts.append("*")
            elif tok.startswith('"'):
                parts.append(json.loads(tok))
            else:
                parts.append(int(tok))
        pos = m.end()
    return parts


def path_matches(pattern: str | list[PathPart], path: str | list[PathPart], *, within_only: bool = False) -> bool:
    """Whether a changed ``path`` is covered by ``pattern`` (``*`` matches one step).

    By default prefix semantics in both directions, as for replaceOnChanges:
    ``triggers[*]`` covers ``triggers[0]``, ``triggers[0].x`` and a change of
    ``triggers`` as a whole.  ``within_only=True`` (used for ignoreChanges) only
    covers paths at or below the pattern: ignoring ``environment.A`` does not hide
    a change of ``environment`` as a whole.
    """
    pat = parse_path(pattern) if isinstance(pattern, str) else pattern
    pth = parse_path(path) if isinstance(path, str) else path
    if within_only and len(pth) < len(pat):
        return False
    for a, b in zip(pat, pth, strict=False):  # prefix semantics: the shorter one decides
        if a == "*" or b == "*":
            continue
        if a != b and str(a) != str(b):
            return False
    return True

