"""The import graph of the project's packages, read from the source with `ast`.

Every import counts, including those inside functions (a function-local
import that closes a circle is still a circle, only a later one); imports
under `if TYPE_CHECKING:` do not run and do not count. The pure core imports
no Pulumi and none of the program or the CLI; the program does not import
the CLI.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ascend_inference", "components", "ascendctl")
PULUMI = ("pulumi", "pulumi_command", "pulumi_docker")


def module_files(root: Path, packages) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(module: str, path: Path) -> list[tuple[str, str | None]]:
    """Every import `module` runs (anywhere in the file), as (module name,
    None) for `import a.b` and (package, name) for `from package import name`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: resolved against the importing module's package.
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.extend((target, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, packages) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports, with the packages
    (`__init__`) such an import runs first."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for target, name in imported_names(module, path):
            # `from package import submodule` depends on the submodule;
            # `from module import name` on the module.
            imported = f"{target}.{name}" if name and f"{target}.{name}" in modules else target
            if imported not in modules:
                continue
            edges.add(imported)
            # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless
            # the importer is inside that package (then it is already running).
            parts = imported.split(".")
            for depth in range(1, len(parts)):
                parent = ".".join(parts[:depth])
                if parent in modules and not module.startswith(parent + "."):
                    edges.add(parent)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [m1, m2, ..., m1], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = dfs(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = dfs(module)
            if found:
                return found
    return None


def forbidden_imports(root: Path, packages) -> list[str]:
    """`importer -> imported` for every import the layering forbids."""
    rules = {
        "ascend_inference": (*PULUMI, "components", "ascendctl"),
        "components": ("ascendctl",),
    }
    found = []
    for module, path in module_files(root, packages).items():
        banned = rules.get(module.split(".")[0], ())
        for target, name in imported_names(module, path):
            if target.split(".")[0] in banned:
                imported = f"{target}.{name}" if name else target
                found.append(f"{module} ({path.relative_to(root)}) imports {imported}")
    return sorted(set(found))


# --- the project ---------------------------------------------------------

def test_no_import_circle():
    graph = import_graph(ROOT, PACKAGES)
    # The graph is read from the real tree: the core's modules are all in it.
    assert {"ascend_inference.render", "ascend_inference.spec", "components.deployment", "ascendctl.cli"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layering():
    problems = forbidden_imports(ROOT, PACKAGES)
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


# --- the checker itself, on small made-up packages -------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_function_local_import_closing_a_circle_is_found(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "def thing():\n    from pkg import a\n    return a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set(), "imports under TYPE_CHECKING do not run"
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_importing_a_submodule_runs_its_package_init(tmp_path):
    # x imports y.leaf; y/__init__ imports x: a circle through the package.
    _write(tmp_path, {
        "x/__init__.py": "from y.leaf import f\n",
        "y/__init__.py": "import x\n",
        "y/leaf.py": "from . import other\n",
        "y/other.py": "",
    })
    graph = import_graph(tmp_path, ["x", "y"])
    assert graph["x"] == {"y", "y.leaf"}
    assert graph["y.leaf"] == {"y.other"}, "a module's own package is already running: no edge"
    assert find_cycle(graph) == ["x", "y", "x"]


def test_layering_rules_name_the_importer(tmp_path):
    _write(tmp_path, {
        "ascend_inference/__init__.py": "",
        "ascend_inference/core.py": "def f():\n    import pulumi_docker\n",
        "components/__init__.py": "from ascendctl import cli\n",
        "ascendctl/__init__.py": "import pulumi\nimport components\n",
    })
    assert forbidden_imports(tmp_path, PACKAGES) == [
        "ascend_inference.core (ascend_inference/core.py) imports pulumi_docker",
        "components (components/__init__.py) imports ascendctl.cli",
    ]
