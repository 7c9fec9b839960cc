#!/usr/bin/env python3
"""Mutation testing of the rule modules with cosmic-ray (not in CI: slow).

    python3 tools/mutation.py [MODULE ...] [--graph] [--timeout S] [--lines FROM-TO] [--work DIR] [--json FILE]

MODULE is a path under the repository (default: every rule module, the
`rules` groups of [tool.ascend-inference.coverage-floors] in pyproject.toml).
For each module cosmic-ray (pinned in requirements-dev.txt) changes one
operator, constant or comparison at a time and the fast tests are run on
each such mutant, stopping at the first failure (`-x`). A mutant no test
notices "survived": either a test is missing or the change cannot alter
behaviour (an equivalent mutant).

The tests of a module are the pure-tier test modules that reach it through
the project's imports, directly or through other modules (`--graph` adds the
graph tier's): an engine module is imported by no test, only by the engine
registry (`ascend_inference/engines/__init__.py`), which the spec, the
renderer and the CLI import. Per mutant only those of them that execute
the mutated statement are run: the unmutated module is run once under
coverage with one context per test (`--cov-context=test`), which gives, for
each line, the tests that executed it. A test that never executes a
statement cannot notice a change to it, so leaving it out drops no kill; a
statement executed at import time (a constant, a default, a decorator) runs
every test of the modules that import it directly, and of the others the
tests that executed any of its statements (a test that runs none of its code
reads its constants only through code it runs); a statement no test executes
survives without a run (reported as such). This is what makes several hundred mutants a module
affordable on 2 cores: a mutant costs one pytest start and the few tests
that reach its line, not the module's whole test set. They run cheapest
first (by their time in that unmutated run), so a killed mutant stops at the
first cheap test that notices it; and pytest starts without the installed
plugins it does not need.

A mutant that does not compile (cosmic-ray turns `{**props}` into `{%props}`)
is skipped and counted apart: every test importing it would fail, which says
nothing of the tests. Mutants inside annotations that are never evaluated
are skipped, not run: in a module that has `from __future__ import
annotations`, the annotations of functions' arguments and returns, and of
annotated assignments too when the module has no pydantic (which evaluates
its models' field annotations); such a mutant is equivalent by construction.
They are counted and printed apart.

The work happens in a copy of the committed tree (`git archive HEAD`), never
in the checkout, so the checkout's files are never mutated. Per module it
prints the kill rate and every survivor as a diff; the figures and the
survivors' verdicts are kept in docs/testing.md ("Mutation testing and
coverage"). Each mutant's test run is bounded by `--timeout`, so the whole
run is bounded too. cosmic-ray kills a run that reaches it and records the
mutant as killed; this script counts and prints such mutants apart ("timed
out"), outside the rate: no test failed on them, and on a busy machine a
slow run times out as readily as a hung one.

`--lines FROM-TO` runs only the mutants that start on those lines of the
module (the others are counted apart, as outside the lines): a module too
large for one sitting is covered in parts, each part complete. (cosmic-ray
runs the pending mutants in random order, so an interrupted run is a random
sample of the module, and a rerun cannot tell which mutants it ran: line
ranges are what parts can be named by.)

`--run-mutant MAP` is the per-mutant test command cosmic-ray runs (not for
use by hand).
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
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


TIERS = ("pure", "graph", "emulated", "realsoftware", "realengine")  # tests/conftest.py's


def tiers_of(source: str) -> set[str]:
    """The tiers a test module's tests are marked with: the module's `pytestmark`, or each
    test's own `@pytest.mark.<tier>` (tests/test_gpustack_tls.py mixes pure and graph)."""
    return {tier for tier in re.findall(r"^\s*(?:pytestmark\s*=\s*|@)pytest\.mark\.(\w+)\b", source, re.M)
            if tier in TIERS}


def dotted_name(path: Path) -> str:
    """`ascend_inference/engines/mindie.py` -> `ascend_inference.engines.mindie` (a package: its name)."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in it (function-local imports too):
    `from package import name` counts `package` and, when it is one, the module `package.name`."""
    # The import reader of the layering test (relative imports resolved, imports under
    # `if TYPE_CHECKING:` left out: they never run).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.test_imports import imported_names

    named: set[str] = set()
    for target, name in imported_names(dotted_name(path), path):
        named.add(target)
        if name is not None:
            named.add(f"{target}.{name}")
    # `import a.b.c` imports the packages a and a.b too (their __init__ runs).
    return {".".join(parts[:i]) for dotted in named for parts in [dotted.split(".")]
            for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules}


def importers(module: str) -> set[str]:
    """Every project module (tests' helpers included) that imports `module`, directly or through
    others: an engine module is reached through its registry (`ascend_inference.engines`
    imports every engine into ENGINES), which the spec, the renderer and the CLI import,
    so a test rendering a MindIE stack reaches `engines/mindie.py` with no import of it."""
    paths = {dotted_name(p): p for top in ("ascend_inference", "components", "ascendctl", "emulator", "tests")
             for p in (ROOT / top).rglob("*.py")}
    graph = {name: project_imports(path, set(paths)) for name, path in paths.items()}
    reached = {module}
    grew = True
    while grew:
        grew = False
        for name, imported in graph.items():
            if name not in reached and imported & reached:
                reached.add(name)
                grew = True
    return reached - {module}


def tests_for(module: str, tiers: set[str]) -> tuple[list[str], list[str]]:
    """The test modules of `tiers` that reach `module` through the project's imports (directly
    or through other modules), and those of them that import it directly (by its dotted name
    or `from package import name`)."""
    dotted = module.removesuffix(".py").replace("/", ".")
    package, _, name = dotted.rpartition(".")
    imports = re.compile(rf"(\b{re.escape(dotted)}\b|from {re.escape(package)} import [^\n]*\b{name}\b)")
    reaching = importers(dotted)
    candidates = [t for t in sorted((ROOT / "tests").glob("test_*.py"))
                  if tiers_of(t.read_text(encoding="utf-8")) & tiers]
    direct = [str(t.relative_to(ROOT)) for t in candidates if imports.search(t.read_text(encoding="utf-8"))]
    reached = [str(t.relative_to(ROOT)) for t in candidates
               if dotted_name(t) in reaching or str(t.relative_to(ROOT)) in direct]
    return reached, direct


def export_tree(work: Path) -> None:
    """The committed tree (HEAD) into `work`."""
    archive = work / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "tree", filter="data")
    archive.unlink()


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
# Per mutant, pytest without its plugins' automatic loading: of the installed
# ones only pytest-xdist (tests/conftest.py uses its hooks) and pytest-timeout
# (the `timeout` setting) are needed; the others (anyio's, which imports
# anyio and trio; pytest-cov) cost about a third of a pytest start (0.4 s of
# CPU of 1.2 s here) and no test here uses them.
MUTANT_PYTEST = [*PYTEST, "-p", "xdist.plugin", "-p", "pytest_timeout"]
MUTANT_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def annotations_never_evaluated(source: str) -> bool:
    """Whether the module's annotations are never evaluated: postponed, and no pydantic to read them."""
    return ("from __future__ import annotations" in source
            and not re.search(r"^\s*(from|import) pydantic\b|get_type_hints", source, re.M))


def unevaluated_annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The annotations of `source` that are never evaluated, so that a mutant in one is
    equivalent. Postponed (`from __future__ import annotations`, and nothing calling
    `get_type_hints` or pydantic's `validate_call`): a function's argument and return
    annotations stay strings; pydantic evaluates its models' field annotations (annotated
    assignments in a class body), so those count only in a module without pydantic."""
    if ("from __future__ import annotations" not in source
            or re.search(r"get_type_hints|validate_call", source)):
        return []
    return annotation_spans(source, assignments=annotations_never_evaluated(source))


def annotation_spans(source: str, assignments: bool = True) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) (line, column) of every argument, return and (with `assignments`)
    annotated-assignment annotation."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            annotations += [a.annotation for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                                    arguments.vararg, arguments.kwarg) if a is not None]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign) and assignments:
            annotations.append(node.annotation)
        spans += [((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0))
                  for a in annotations if a is not None]
    return spans


def compiles(source: str | None) -> bool:
    """Whether a mutant is Python at all: cosmic-ray's operators also make text
    that is not (`{**props, ...}` -> `{%props, ...}`); any test importing it
    would fail, which says nothing of the tests."""
    if source is None:
        return False
    try:
        compile(source, "<mutant>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def statement_lines(source: str) -> dict[int, range]:
    """For each line, the lines of its innermost statement (a compound one's header only).

    Coverage records a statement under one of its lines; a mutant on any line of
    it is reached by the tests that executed any line of it."""
    spans: dict[int, range] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        body = getattr(node, "body", None)
        last = (body[0].lineno - 1 if body and isinstance(body, list) and isinstance(body[0], ast.stmt)
                else node.end_lineno or node.lineno)
        lines = range(node.lineno, max(last, node.lineno) + 1)
        for line in lines:
            if line not in spans or len(lines) <= len(spans[line]):
                spans[line] = lines
    return spans


_DURATION = re.compile(r"^([0-9.]+)s (?:setup|call|teardown)\s+(\S.*)$")


def durations_of(pytest_output: str) -> dict[str, float]:
    """{node id: seconds of its setup, call and teardown} from pytest's `--durations=0 --durations-min=0`."""
    seconds: dict[str, float] = {}
    for line in pytest_output.splitlines():
        found = _DURATION.match(line)
        if found:
            seconds[found.group(2)] = seconds.get(found.group(2), 0.0) + float(found.group(1))
    return seconds


def tests_by_line(module: str, tree: Path, tests: list[str],
                  marker: str) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Run `tests` once on the unmutated tree under coverage with a context per test:
    {line: test node ids that executed it}, "" among them when it ran at import;
    and {node id: seconds it took}."""
    data_file = tree / f".coverage-{module.replace('/', '-')}"
    rcfile = tree / f".coveragerc-{module.replace('/', '-')}"
    rcfile.write_text(f"[run]\nbranch = False\ninclude = {module}\ndata_file = {data_file}\n")
    run = subprocess.run([*PYTEST, f"--cov={module.rpartition('/')[0].replace('/', '.')}", f"--cov-config={rcfile}",
                          "--cov-context=test", "--cov-report=", "--durations=0", "--durations-min=0",
                          "-m", marker, *tests],
                         cwd=tree, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{module}: the selected tests fail on the unmutated tree:\n{run.stdout}{run.stderr}")
    import coverage  # here, not at the top: the per-mutant command (`--run-mutant`) needs neither it nor cosmic-ray

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    measured = [f for f in data.measured_files() if f.endswith("/" + module)]
    if not measured:
        raise SystemExit(f"{module}: its tests never import it from {tree}")
    by_line = data.contexts_by_lineno(measured[0])
    return ({str(line): sorted({c.rpartition("|")[0] if "|" in c else c for c in contexts})
             for line, contexts in by_line.items()}, durations_of(run.stdout))


def tests_to_run(plan: dict, mutated_source: str) -> list[str]:
    """The tests of `plan` that execute a statement `mutated_source` changes ([] when none does)."""
    pristine = plan["pristine"].splitlines()
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(a=pristine, b=mutated_source.splitlines(), autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal":
            changed.update(range(i1 + 1, max(i2, i1 + 1) + 1))
    spans = statement_lines(plan["pristine"])
    lines = {line for c in changed for line in spans.get(c, range(c, c + 1))}
    reached = {t for line in lines for t in plan["tests_by_line"].get(str(line), [])}
    # Cheapest first (as long as the unmutated run took): each run stops at its
    # first failure (`-x`), so a killed mutant costs the cheap tests before the
    # first that fails it rather than an expensive fixture's set-up.
    seconds = plan.get("durations", {})
    modules = plan["tests"]
    if "" in reached:
        # Executed at import (a constant, a default, a decorator): every test of a module that
        # imports it directly may read it; of the modules that reach it through others (an
        # engine through the registry), the tests that executed any of its other statements:
        # a test that runs none of its code sees its constants only through code it runs.
        direct = plan.get("direct", modules)
        users = {t for tests in plan["tests_by_line"].values() for t in tests
                 if t and t.split("::")[0] not in direct}
        chosen = [*direct, *users]
        return sorted(chosen, key=lambda t: (
            sum(v for n, v in seconds.items() if n.split("::")[0] == t) if "::" not in t else seconds.get(t, 0.0),
            modules.index(t.split("::")[0]), t))
    return sorted(reached, key=lambda t: (seconds.get(t, 0.0), modules.index(t.split("::")[0]), t))


def line_range(text: str) -> range:
    """`--lines FROM-TO` (or one line `N`) as the range of lines it names, both ends included."""
    found = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is no line range: give FROM-TO (e.g. 300-450) or one line")
    first, last = int(found.group(1)), int(found.group(2) or found.group(1))
    if first < 1 or last < first:
        raise argparse.ArgumentTypeError(f"{text!r}: the lines run from 1 up, FROM no greater than TO")
    return range(first, last + 1)


def run_mutant(map_file: Path) -> int:
    """The test command of one mutant: the tests that execute the lines the mutant changed."""
    plan = json.loads(map_file.read_text())
    selected = tests_to_run(plan, Path(plan["module"]).read_text(encoding="utf-8"))
    if not selected:
        print("no test executes the changed statement: survives without a run")
        return 0
    # pytest-cov is not needed per mutant: `-p no:cov` saves its import and start.
    env = {**os.environ, **MUTANT_ENV}
    # Only the tiers asked for: a module may mark its tests one by one, some of another tier.
    marker = ["-m", plan["marker"]] if plan.get("marker") else []
    run = subprocess.run([*MUTANT_PYTEST, "-x", *marker, *selected], env=env)
    if run.returncode == 4:  # pytest's usage error (a node id it could not find): not a kill; run them all
        run = subprocess.run([*MUTANT_PYTEST, "-x", *marker, *plan["tests"]], env=env)
    return run.returncode


def tally(mutants: list) -> tuple[int, list[dict], list[dict], int]:
    """cosmic-ray's dump (pairs of work item and result) as killed, survivors, timed out, not made."""
    survivors = []
    timed_out = []
    killed = unmade = 0
    for item, result in mutants:
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        if result.get("worker_outcome") in ("exception", "no-test"):  # cosmic-ray could not make or run it
            unmade += 1
            continue
        # cosmic-ray records a run cut off at --timeout as killed with the output "timeout"
        # (cosmic_ray/testing.py run_tests): no test failed, so it is counted apart, not as a kill.
        if result.get("output") == "timeout":
            timed_out.append(described(item, result))
            continue
        if result.get("test_outcome") == "survived":
            survivors.append({**described(item, result),
                              "unreached": "survives without a run" in (result.get("output") or "")})
        else:
            killed += 1
    return killed, survivors, timed_out, unmade


def described(item: dict, result: dict) -> dict:
    """A mutant as it is reported: its line, its operator and its diff."""
    mutation = item["mutations"][0]
    return {"line": mutation["start_pos"][0], "operator": mutation["operator_name"], "diff": result.get("diff", "")}


def changed_lines(diff: str) -> str:
    """A mutant's diff as printed under its line: the changed lines only, indented."""
    return "\n".join("    " + line for line in diff.splitlines() if line.startswith(("+", "-")))


def run_module(module: str, tree: Path, tests: list[str], timeout: float, lines: range | None = None,
               marker: str = "pure", direct: list[str] | None = None) -> dict:
    name = module.replace("/", "-")
    session = tree / f"mutation-{name}.sqlite"
    config = tree / f"mutation-{name}.toml"
    plan_file = tree / f"mutation-{name}.json"
    source = (tree / module).read_text(encoding="utf-8")
    by_line, durations = tests_by_line(module, tree, tests, marker)
    plan_file.write_text(json.dumps({"module": module, "pristine": source, "tests": tests, "marker": marker,
                                     "direct": tests if direct is None else direct,
                                     "tests_by_line": by_line, "durations": durations}))
    command = f"{sys.executable} {Path(__file__).resolve()} --run-mutant {plan_file}"
    config.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\nexcluded-modules = []\n'
                      f'test-command = "{command}"\n\n[cosmic-ray.distributor]\nname = "local"\n')
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(config), str(session)], cwd=tree, check=True)
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    skipped = uncompilable = outside = 0
    spans = unevaluated_annotation_spans(source)
    with use_db(str(session)) as db:
        for item in db.work_items:
            mutation = item.mutations[0]
            start = tuple(mutation.start_pos)
            if lines is not None and start[0] not in lines:
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                outside += 1
                continue
            if any(a <= start < b for a, b in spans):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
                continue
            operator = get_operator(mutation.operator_name)(**getattr(mutation, "operator_args", {}))
            try:
                mutated = mutate_code(source, operator, mutation.occurrence)
            except Exception:  # noqa: BLE001 (cosmic-ray's own failure to make it: its exec records that)
                continue
            if not compiles(mutated):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                uncompilable += 1
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "exec", str(config), str(session)], cwd=tree, check=True)
    dump = subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "dump", str(session)], cwd=tree, check=True,
                          capture_output=True, text=True).stdout
    mutants = [json.loads(line) for line in dump.splitlines() if line.strip()]
    killed, survivors, timed_out, unmade = tally(mutants)
    return {"module": module, "tests": tests, "generated": len(mutants), "skipped_annotations": skipped,
            "skipped_uncompilable": uncompilable, "outside_lines": outside, "not_made": unmade,
            "mutants": killed + len(survivors), "killed": killed, "survivors": survivors, "timed_out": timed_out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: every rule module)")
    parser.add_argument("--graph", action="store_true", help="also run the graph-tier tests that import it")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's test run")
    parser.add_argument("--lines", type=line_range, metavar="FROM-TO",
                        help="only the mutants starting on these lines of each module (both included)")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--run-mutant", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_mutant:
        return run_mutant(args.run_mutant)
    modules = args.modules or rule_modules()
    tiers = {"pure", "graph"} if args.graph else {"pure"}
    work = args.work or Path(tempfile.mkdtemp(prefix="mutation-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        export_tree(work)
        for module in modules:
            tests, direct = tests_for(module, tiers)
            if not tests:
                print(f"{module}: no {'/'.join(sorted(tiers))} test imports it; skipped")
                continue
            print(f"== {module}: {len(tests)} test module(s) reach it, {len(direct)} directly: "
                  f"{' '.join(tests)}", flush=True)
            result = run_module(module, work / "tree", tests, args.timeout, args.lines, " or ".join(sorted(tiers)),
                                direct)
            results.append(result)
            rate = 100 * result["killed"] / result["mutants"] if result["mutants"] else 100
            print(f"{module}: {result['killed']} of {result['mutants']} mutants killed ({rate:.1f}%); "
                  f"{result['skipped_annotations']} of {result['generated']} in annotations skipped, "
                  f"{result['skipped_uncompilable']} that do not compile skipped, "
                  f"{result['not_made']} cosmic-ray could not make, "
                  f"{len(result['timed_out'])} timed out (not counted)"
                  + (f", {result['outside_lines']} outside lines {args.lines.start}-{args.lines.stop - 1}"
                     if args.lines else ""), flush=True)
            for s in result["survivors"]:
                print(f"  survived: line {s['line']} {s['operator']}"
                      f"{' (no test executes it)' if s['unreached'] else ''}\n" + changed_lines(s["diff"]))
            for s in result["timed_out"]:
                print(f"  timed out: line {s['line']} {s['operator']}\n" + changed_lines(s["diff"]))
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
