#!/usr/bin/env python3
"""Branch coverage per module group, against the floors in pyproject.toml.

    python3 tools/coverage_floors.py [--data-file .coverage]

Reads the coverage data a `pytest --cov` run left (the fast tiers in
.ci/run), prints one line per group of [tool.ascend-inference.coverage-floors]
(branches covered of branches, and lines), and exits 1 when a group is below
its `branch_floor`, naming it; 2 when there is no data to judge.

A group is a list of `paths` (globs from the repository root) and, to judge
part of a file, `functions` ("path:qualified.name", coverage's own
per-function regions of its JSON report). The figure of a group is its
branches summed over its files or functions, not an average of percentages.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_groups(pyproject: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = tomllib.loads(pyproject.read_text(encoding="utf-8"))[
        "tool"]["ascend-inference"]["coverage-floors"]["groups"]
    return groups


def report(data_file: Path) -> dict[str, Any]:
    """coverage's JSON report of `data_file` (files relative to the root)."""
    import coverage

    cov = coverage.Coverage(data_file=str(data_file), config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def _relative(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else path


def group_figures(group: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    """Branches and lines of a group: its `paths` whole plus its `functions`."""
    regions: list[tuple[str, dict[str, Any]]] = []
    matched: set[str] = set()
    for pattern in group.get("paths", []):
        for name, entry in files.items():
            if name not in matched and (fnmatch.fnmatch(name, pattern) or
                                        (pattern.endswith("/**/*.py") and name.startswith(pattern[:-7]))):
                matched.add(name)
                regions.append((name, entry["summary"]))
    for target in group.get("functions", []):
        path, _, function = target.partition(":")
        entry = files.get(path)
        summary = entry and entry.get("functions", {}).get(function, {}).get("summary")
        if summary is None:
            raise SystemExit(f"pyproject.toml: coverage group '{group['name']}': no function {target} in the "
                             "coverage data (renamed? fix [tool.ascend-inference.coverage-floors])")
        regions.append((target, summary))
    if not regions:
        raise SystemExit(f"pyproject.toml: coverage group '{group['name']}' matches no measured file "
                         "(fix its paths in [tool.ascend-inference.coverage-floors])")
    branches = sum(s["num_branches"] for _, s in regions)
    covered_branches = sum(s["covered_branches"] for _, s in regions)
    statements = sum(s["num_statements"] for _, s in regions)
    covered_lines = sum(s["covered_lines"] for _, s in regions)
    return {"branches": branches, "covered_branches": covered_branches, "statements": statements,
            "covered_lines": covered_lines,
            "branch_percent": 100.0 * covered_branches / branches if branches else 100.0,
            "line_percent": 100.0 * covered_lines / statements if statements else 100.0,
            "worst": sorted(((100.0 * s["covered_branches"] / s["num_branches"], name)
                             for name, s in regions if s["num_branches"]))[:3]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-file", type=Path, default=ROOT / ".coverage")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    if not args.data_file.exists():
        print(f"no coverage data at {args.data_file}: run the fast tiers with --cov first "
              "(see .ci/run)", file=sys.stderr)
        return 2
    files = {_relative(name): entry for name, entry in report(args.data_file)["files"].items()}
    below = []
    print(f"{'group':28s} {'branches':>17s} {'floor':>6s} {'lines':>17s}")
    for group in load_groups(args.pyproject):
        f = group_figures(group, files)
        floor = float(group["branch_floor"])
        ok = f["branch_percent"] >= floor
        print(f"{group['name']:28s} {f['covered_branches']:5d}/{f['branches']:<5d} {f['branch_percent']:5.1f}% "
              f"{floor:5.0f}% {f['covered_lines']:5d}/{f['statements']:<5d} {f['line_percent']:5.1f}%"
              f"{'' if ok else '  BELOW THE FLOOR'}")
        if not ok:
            below.append(f"{group['name']} {f['branch_percent']:.1f}% < {floor:g}% (least covered: " +
                         ", ".join(f"{name} {p:.0f}%" for p, name in f["worst"]) + ")")
    if below:
        print("branch coverage below the floor in pyproject.toml [tool.ascend-inference.coverage-floors]: " +
              "; ".join(below) + ". Add tests that reach the missing branches (`coverage report -m` lists them).",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
