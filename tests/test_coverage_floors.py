"""tools/coverage_floors.py, the checker .ci/run applies to the fast tiers'
coverage: a group's figure is its branches summed, every group is printed,
one below its floor fails naming it, and a missing data file or a group that
matches nothing is one clear message."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.pure

_spec = importlib.util.spec_from_file_location("coverage_floors", PROJECT_ROOT / "tools" / "coverage_floors.py")
assert _spec is not None and _spec.loader is not None
floors = importlib.util.module_from_spec(_spec)
sys.modules["coverage_floors"] = floors
_spec.loader.exec_module(floors)


def summary(branches: int, covered: int, statements: int = 10, lines: int = 10) -> dict:
    return {"num_branches": branches, "covered_branches": covered, "num_statements": statements,
            "covered_lines": lines}


FILES = {
    "ascend_inference/a.py": {"summary": summary(100, 99),
                              "functions": {"Api.wait": {"summary": summary(4, 2)}}},
    "ascend_inference/b.py": {"summary": summary(2, 0)},
}


def test_a_groups_figure_is_its_branches_summed_not_an_average():
    got = floors.group_figures({"name": "g", "paths": ["ascend_inference/*.py"]}, FILES)
    assert (got["covered_branches"], got["branches"]) == (99, 102)
    assert round(got["branch_percent"], 1) == 97.1  # an average of 99% and 0% would be 49.5%


def test_a_group_of_functions_counts_only_them():
    got = floors.group_figures({"name": "g", "functions": ["ascend_inference/a.py:Api.wait"]}, FILES)
    assert (got["covered_branches"], got["branches"], got["branch_percent"]) == (2, 4, 50.0)


def test_a_function_no_longer_there_is_named():
    with pytest.raises(SystemExit, match="coverage group 'g': no function ascend_inference/a.py:Api.gone"):
        floors.group_figures({"name": "g", "functions": ["ascend_inference/a.py:Api.gone"]}, FILES)


def test_a_group_that_matches_nothing_is_named():
    with pytest.raises(SystemExit, match="coverage group 'g' matches no measured file"):
        floors.group_figures({"name": "g", "paths": ["nowhere/*.py"]}, FILES)


def test_every_group_is_printed_and_one_below_its_floor_fails(tmp_path, monkeypatch, capsys):
    data = tmp_path / ".coverage"
    data.write_text("")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.ascend-inference.coverage-floors]\ngroups = [\n'
                         '  { name = "high", paths = ["ascend_inference/a.py"], branch_floor = 95 },\n'
                         '  { name = "low", paths = ["ascend_inference/b.py"], branch_floor = 90 },\n]\n')
    monkeypatch.setattr(floors, "report", lambda data_file: {"files": FILES})
    assert floors.main(["--data-file", str(data), "--pyproject", str(pyproject)]) == 1
    out, err = capsys.readouterr()
    assert "high" in out and "99/100" in out and "99.0%" in out
    assert "low" in out and "0/2" in out and "BELOW THE FLOOR" in out
    assert "low 0.0% < 90%" in err and "high" not in err


def test_no_data_file_says_what_to_run(tmp_path, capsys):
    assert floors.main(["--data-file", str(tmp_path / ".coverage")]) == 2
    assert "run the fast tiers with --cov first" in capsys.readouterr().err


def test_the_projects_groups_cover_the_issues_rule_modules():
    groups = {g["name"]: g for g in floors.load_groups(PROJECT_ROOT / "pyproject.toml")}
    rules = [g for g in groups.values() if g.get("rules")]
    assert all(g["branch_floor"] >= 95 for g in rules) and groups["overall"]["branch_floor"] >= 90
    paths = {p for g in rules for p in g.get("paths", [])} | {g.get("module") for g in rules}
    for module in ("facts.py", "ranktable.py", "brought_table.py", "topology.py", "peers.py", "gpustack_api.py",
                   "engines/*.py"):
        assert f"ascend_inference/{module}" in paths
