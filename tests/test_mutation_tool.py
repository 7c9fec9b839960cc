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


def test_the_reached_tests_run_cheapest_first():
    plan = dict(PLAN, durations={"tests/test_b.py::test_high": 15.2, "tests/test_a.py::test_low": 0.01})
    mutated = SOURCE.replace("count > LIMIT", "count >= LIMIT")
    assert mutation.tests_to_run(plan, mutated) == ["tests/test_a.py::test_low", "tests/test_b.py::test_high"]


def test_a_statement_run_at_import_runs_every_module_cheapest_first():
    plan = dict(PLAN, durations={"tests/test_b.py::test_high": 15.2, "tests/test_b.py::test_other": 0.1,
                                 "tests/test_a.py::test_low": 0.01})
    assert mutation.tests_to_run(plan, SOURCE.replace("LIMIT = 16", "LIMIT = 17")) == [
        "tests/test_a.py", "tests/test_b.py"]


def test_durations_are_read_from_pytests_report_setup_call_and_teardown_summed():
    output = """\
============================= slowest durations ==============================
14.89s setup    tests/test_ranktable.py::test_rendered_rank_tables_validate
2.20s call     tests/test_ranktable.py::test_rank_table_properties_random_sample
0.50s call     tests/test_ranktable.py::test_rendered_rank_tables_validate
0.00s teardown tests/test_atlas_a3.py::test_stack_validates[tp32-a3-mindie]
164 passed in 26.89s
"""
    assert mutation.durations_of(output) == {
        "tests/test_ranktable.py::test_rendered_rank_tables_validate": 15.39,
        "tests/test_ranktable.py::test_rank_table_properties_random_sample": 2.2,
        "tests/test_atlas_a3.py::test_stack_validates[tp32-a3-mindie]": 0.0}


def test_a_mutant_that_is_not_python_is_told_apart():
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    # cosmic-ray's operators take the `**` of a dict display for a power.
    mutated = mutate_code("body = {**model, 'cluster_id': 1}\n",
                          get_operator("core/ReplaceBinaryOperator_Pow_Mod")(), 0)
    assert mutated == "body = {%model, 'cluster_id': 1}\n"
    assert not mutation.compiles(mutated) and not mutation.compiles(None)
    assert mutation.compiles("body = {**model, 'cluster_id': 1}\n")


def test_lines_name_a_range_both_ends_included_or_one_line():
    assert mutation.line_range("300-450") == range(300, 451)
    assert mutation.line_range(" 12 - 12 ") == range(12, 13)
    assert mutation.line_range("7") == range(7, 8)


@pytest.mark.parametrize("text", ["", "a-b", "300-", "-5", "450-300", "0-10", "1,5"])
def test_lines_that_name_no_range_are_refused_with_the_form_to_give(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="FROM"):
        mutation.line_range(text)


def test_a_bad_lines_option_is_one_usage_message_not_a_traceback():
    import subprocess

    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "mutation.py"), "--lines", "450-300",
                          "ascend_inference/peers.py"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert run.returncode == 2
    assert "argument --lines: '450-300': the lines run from 1 up, FROM no greater than TO" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_test_module_counts_for_each_tier_its_tests_are_marked_with():
    # tests/test_gpustack_tls.py marks its tests one by one (pure and graph), no `pytestmark`:
    # it went unselected, and its pure tests were the only fast ones over HTTPS.
    assert mutation.tiers_of("import pytest\n\npytestmark = pytest.mark.pure\n") == {"pure"}
    assert mutation.tiers_of("@pytest.mark.pure\ndef test_a():\n    pass\n\n\n@pytest.mark.graph\n"
                             "@pytest.mark.parametrize('x', [1])\ndef test_b(x):\n    pass\n") == {"pure", "graph"}
    assert mutation.tiers_of("@pytest.mark.parametrize('x', [1])\ndef test_c(x):\n    pass\n") == set()
    reached, direct = mutation.tests_for("ascend_inference/gpustack_api.py", {"pure"})
    assert direct == [
        "tests/test_gpustack_api_http.py", "tests/test_gpustack_model.py", "tests/test_gpustack_tls.py"]
    assert set(direct) <= set(reached)


def test_an_engine_module_is_reached_by_the_tests_that_import_its_registry_or_what_imports_it():
    # No test imports MindIE's engine module by name but test_engine_settings_rendered; the
    # registry (engines/__init__.py) imports every engine, and the spec and renderer import
    # the registry: test_mindie_tls renders MindIE stacks through them.
    # (The name is put together so that this file does not name the module itself.)
    engine = "ascend_inference.engines." + "mindie"
    assert "ascend_inference.spec" in mutation.importers(engine)
    assert "ascend_inference.engines" in mutation.importers(engine)
    reached, direct = mutation.tests_for(engine.replace(".", "/") + ".py", {"pure"})
    assert "tests/test_engine_settings_rendered.py" in direct and "tests/test_mindie_tls.py" not in direct
    assert {"tests/test_mindie_tls.py", "tests/test_node_scripts.py", "tests/test_engine_rules.py"} <= set(reached)
    # A graph-only module is not a pure test, whatever it imports.
    assert "tests/test_graph_stacks.py" not in reached


def test_imports_are_read_relative_function_local_and_with_their_packages(tmp_path, monkeypatch):
    package = tmp_path / "ascend_inference"
    (package / "engines").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engines" / "__init__.py").write_text("from . import alpha\n")
    (package / "engines" / "alpha.py").write_text("X = 1\n")
    (package / "render.py").write_text("def render():\n    from ascend_inference.engines import alpha\n")
    (package / "cli.py").write_text("import ascend_inference.engines\n")
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    modules = {"ascend_inference", "ascend_inference.engines", "ascend_inference.engines.alpha",
               "ascend_inference.render", "ascend_inference.cli"}
    assert mutation.project_imports(package / "engines" / "__init__.py", modules) == {
        "ascend_inference", "ascend_inference.engines", "ascend_inference.engines.alpha"}
    assert mutation.project_imports(package / "render.py", modules) == {
        "ascend_inference", "ascend_inference.engines", "ascend_inference.engines.alpha"}
    # The empty package `ascend_inference` imports nothing: it is no importer.
    assert mutation.importers("ascend_inference.engines.alpha") == {
        "ascend_inference.engines", "ascend_inference.render", "ascend_inference.cli"}


def test_a_statement_run_at_import_runs_the_direct_importers_and_the_other_modules_tests_that_ran_its_code():
    # test_c reaches the module through another (the engine registry): of it only the test that
    # executed one of the module's statements runs, not test_c's every test.
    plan = dict(PLAN, tests=["tests/test_b.py", "tests/test_a.py", "tests/test_c.py"], direct=["tests/test_b.py"],
                tests_by_line={**PLAN["tests_by_line"],
                               "8": ["tests/test_a.py::test_low", "tests/test_c.py::test_uses"]},
                durations={"tests/test_b.py::test_high": 15.2, "tests/test_a.py::test_low": 0.01,
                           "tests/test_c.py::test_uses": 0.5, "tests/test_c.py::test_unrelated": 0.1})
    assert mutation.tests_to_run(plan, SOURCE.replace("LIMIT = 16", "LIMIT = 17")) == [
        "tests/test_a.py::test_low", "tests/test_c.py::test_uses", "tests/test_b.py"]


def test_function_annotations_are_skipped_under_postponed_annotations_even_with_pydantic():
    # An engine module's plugin methods (`plan: Plan | None`) are strings at run time;
    # its pydantic settings' field annotations are evaluated, so their mutants run.
    source = ("from __future__ import annotations\nfrom pydantic import BaseModel\n\n\n"
              "class Settings(BaseModel):\n    port: int = 1025\n\n\n"
              "def check(plan: Plan | None) -> list[str]:\n    return []\n")
    assert sorted(mutation.unevaluated_annotation_spans(source)) == [((9, 16), (9, 27)), ((9, 32), (9, 41))]
    # Without pydantic every annotation is skipped; without postponed annotations none is.
    no_pydantic = source.replace("from pydantic import BaseModel\n", "")
    assert ((5, 10), (5, 13)) in mutation.unevaluated_annotation_spans(no_pydantic)
    assert mutation.unevaluated_annotation_spans(source.replace("from __future__ import annotations\n", "")) == []
    assert mutation.unevaluated_annotation_spans(source + "typing.get_type_hints(check)\n") == []


def _dumped(line: int, **result: object) -> list:
    """One line of `cosmic-ray dump`: the work item and its result."""
    item = {"mutations": [{"start_pos": [line, 4], "operator_name": "core/ReplaceComparisonOperator_Gt_Lt"}]}
    return [item, {"diff": f"-line {line}\n+mutant {line}", **result}]


def test_a_mutant_whose_run_timed_out_is_counted_apart_not_as_killed() -> None:
    # cosmic_ray/testing.py run_tests returns (KILLED, "timeout") for a run cut off at its timeout.
    mutants = [
        _dumped(1, worker_outcome="normal", test_outcome="killed", output="1 failed"),
        _dumped(2, worker_outcome="normal", test_outcome="killed", output="timeout"),
        _dumped(3, worker_outcome="normal", test_outcome="survived", output="5 passed"),
        _dumped(4, worker_outcome="normal", test_outcome="survived",
                output="no test executes the changed statement: survives without a run"),
        _dumped(5, worker_outcome="skipped"),
        _dumped(6, worker_outcome="exception", test_outcome="incompetent", output="Traceback"),
        [{"mutations": [{"start_pos": [7, 0], "operator_name": "x"}]}, None],
    ]
    killed, survivors, timed_out, unmade = mutation.tally(mutants)
    assert killed == 1
    assert [(s["line"], s["unreached"]) for s in survivors] == [(3, False), (4, True)]
    assert [(t["line"], t["diff"]) for t in timed_out] == [(2, "-line 2\n+mutant 2")]
    assert unmade == 1
