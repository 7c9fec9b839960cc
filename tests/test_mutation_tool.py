"""tools/mutation.py's choice of tests per mutant: the tests that executed the
changed statement (any of its lines), every test for a statement run at
import time, none for a statement no test executes; and which annotation
mutants it skips as never evaluated."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure

_spec = importlib.util.spec_from_file_location("mutation_tool", PROJECT_ROOT / "tools" / "mutation.py")
assert _spec is not None and _spec.loader is not None
mutation = importlib.util.module_from_spec(_spec)
sys.modules["mutation_tool"] = mutation
_spec.loader.exec_module(mutation)

SOURCE = '''\
LIMIT = 16


def check(count: int) -> list[str]:
    if count > LIMIT:
        return ["too many",
                "nodes"]
    return []
'''

PLAN = {
    "pristine": SOURCE,
    "tests": ["tests/test_b.py", "tests/test_a.py"],
    # Coverage's data: line 1 ran at import (context ""); line 7, the second line of the
    # `return`, is never recorded, only its first line 6.
    "tests_by_line": {"1": [""], "4": [""], "5": ["tests/test_a.py::test_low", "tests/test_b.py::test_high"],
                      "6": ["tests/test_b.py::test_high"], "8": ["tests/test_a.py::test_low"]},
}


def test_a_mutant_runs_the_tests_that_executed_its_statement_in_the_modules_order():
    mutated = SOURCE.replace("count > LIMIT", "count >= LIMIT")
    assert mutation.tests_to_run(PLAN, mutated) == ["tests/test_b.py::test_high", "tests/test_a.py::test_low"]


def test_a_change_on_a_statements_later_line_runs_the_tests_of_its_first_line():
    mutated = SOURCE.replace('"nodes"]', '"nodes", ""]')
    assert mutation.tests_to_run(PLAN, mutated) == ["tests/test_b.py::test_high"]


def test_a_statement_run_at_import_runs_every_test():
    assert mutation.tests_to_run(PLAN, SOURCE.replace("LIMIT = 16", "LIMIT = 17")) == PLAN["tests"]


def test_a_statement_no_test_executes_runs_nothing():
    plan = dict(PLAN, tests_by_line={"1": [""], "4": [""], "5": ["tests/test_a.py::test_low"]})
    assert mutation.tests_to_run(plan, SOURCE.replace('"too many"', '"too few"')) == []


def test_a_compound_statements_header_is_not_its_body():
    lines = mutation.statement_lines(SOURCE)
    assert lines[5] == range(5, 6)  # the `if` line alone, not the lines of its body
    assert lines[7] == range(6, 8)


def test_annotations_are_skipped_only_where_never_evaluated():
    assert mutation.annotations_never_evaluated("from __future__ import annotations\n" + SOURCE)
    assert not mutation.annotations_never_evaluated(SOURCE)
    assert not mutation.annotations_never_evaluated(
        "from __future__ import annotations\nfrom pydantic import BaseModel\n" + SOURCE)
    spans = mutation.annotation_spans(SOURCE)
    assert sorted(spans) == [((4, 17), (4, 20)), ((4, 25), (4, 34))]  # `int` and `list[str]`
