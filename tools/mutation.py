#!/usr/bin/env python3
"""Mutation testing of the rule modules with cosmic-ray (not in CI: slow).

    python3 tools/mutation.py [MODULE ...] [--graph] [--timeout S] [--work DIR]

MODULE is a path under the repository (default: every rule module, the
`rules` groups of [tool.ascend-inference.coverage-floors] in pyproject.toml).
For each module cosmic-ray (pinned in requirements-dev.txt) changes one
operator, constant or comparison at a time and runs only the fast tests that
import that module (pure tier; `--graph` adds graph-tier modules), stopping at
the first failure (`-x`). A mutant no test notices "survived": either a test
is missing or the change cannot alter behaviour (an equivalent mutant).

The work happens in a copy of the committed tree (`git archive HEAD`), never
in the checkout, so the checkout's files are never mutated. Per module it
prints the kill rate and every survivor as a diff; the figures and the
survivors' verdicts are kept in docs/testing.md ("Mutation testing and
coverage"). Each mutant's test run is bounded by `--timeout` (cosmic-ray
kills it and counts the mutant as killed when it hangs, the way an infinite
loop it introduced would be noticed), so the whole run is bounded too.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rule_modules() -> list[str]:
    floors = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ascend-inference"]["coverage-floors"]
    modules: list[str] = []
    for group in floors["groups"]:
        if group.get("rules"):
            if group.get("module"):
                modules.append(group["module"])
            for pattern in group["paths"]:
                modules += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern) if p.name != "__init__.py")
    return modules


def tier_of(test: Path) -> str | None:
    found = re.search(r"^pytestmark\s*=\s*pytest\.mark\.(\w+)", test.read_text(encoding="utf-8"), re.M)
    return found.group(1) if found else None


def tests_for(module: str, tiers: set[str]) -> list[str]:
    """The test modules of `tiers` that import `module` (by its dotted name or `from package import name`)."""
    dotted = module.removesuffix(".py").replace("/", ".")
    package, _, name = dotted.rpartition(".")
    imports = re.compile(rf"(\b{re.escape(dotted)}\b|from {re.escape(package)} import [^\n]*\b{name}\b)")
    return sorted(str(t.relative_to(ROOT)) for t in (ROOT / "tests").glob("test_*.py")
                  if tier_of(t) in tiers and imports.search(t.read_text(encoding="utf-8")))


def export_tree(work: Path) -> None:
    """The committed tree (HEAD) into `work`."""
    archive = work / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "tree", filter="data")
    archive.unlink()


def run_module(module: str, tree: Path, tests: list[str], timeout: float) -> dict:
    session = tree / f"mutation-{module.replace('/', '-')}.sqlite"
    config = tree / f"mutation-{module.replace('/', '-')}.toml"
    command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -o addopts= {' '.join(tests)}"
    config.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\nexcluded-modules = []\n'
                      f'test-command = "{command}"\n\n[cosmic-ray.distributor]\nname = "local"\n')
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(config), str(session)], cwd=tree, check=True)
    baseline = subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "baseline", str(config)], cwd=tree,
                              capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{module}: the selected tests fail on the unmutated tree:\n"
                         f"{baseline.stdout}{baseline.stderr}")
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "exec", str(config), str(session)], cwd=tree, check=True)
    dump = subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "dump", str(session)], cwd=tree, check=True,
                          capture_output=True, text=True).stdout
    mutants = [json.loads(line) for line in dump.splitlines() if line.strip()]
    survivors = []
    killed = 0
    for item, result in mutants:
        if result is None:
            continue
        if result.get("test_outcome") == "survived":
            mutation = item["mutations"][0]
            survivors.append({"line": mutation["start_pos"][0], "operator": mutation["operator_name"],
                              "diff": result.get("diff", "")})
        else:
            killed += 1
    return {"module": module, "tests": tests, "mutants": killed + len(survivors), "killed": killed,
            "survivors": survivors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: every rule module)")
    parser.add_argument("--graph", action="store_true", help="also run the graph-tier tests that import it")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's test run")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    modules = args.modules or rule_modules()
    tiers = {"pure", "graph"} if args.graph else {"pure"}
    work = args.work or Path(tempfile.mkdtemp(prefix="mutation-"))
    results = []
    try:
        export_tree(work)
        for module in modules:
            tests = tests_for(module, tiers)
            if not tests:
                print(f"{module}: no {'/'.join(sorted(tiers))} test imports it; skipped")
                continue
            print(f"== {module}: {len(tests)} test module(s): {' '.join(tests)}", flush=True)
            result = run_module(module, work / "tree", tests, args.timeout)
            results.append(result)
            rate = 100 * result["killed"] / result["mutants"] if result["mutants"] else 100
            print(f"{module}: {result['killed']} of {result['mutants']} mutants killed ({rate:.1f}%)")
            for s in result["survivors"]:
                print(f"  survived: line {s['line']} {s['operator']}\n" +
                      "\n".join("    " + line for line in s["diff"].splitlines() if line.startswith(("+", "-"))))
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    total = sum(r["mutants"] for r in results)
    killed = sum(r["killed"] for r in results)
    if total:
        print(f"total: {killed} of {total} mutants killed ({100 * killed / total:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
