"""The import graph: layers that point one way, no cycle between modules, no hidden imports.

`lint-imports` (pyproject.toml's contract, run by `make lint`) checks the layers; these tests
check what it does not (cycles inside a layer, imports placed inside functions) and show that
each check fails when the rule is broken.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGES = ("workers", "tasks", "services", "models")
# Where the house rule (no import inside a function) holds: the packages, and the code that
# drives them.
ALL_CODE = (*PACKAGES, "bench", "tools", "tests")
ROOT = Path(__file__).resolve().parents[1]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of modules that import each other, directly or not (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_two_modules_import_each_other() -> None:
    assert import_cycles(grimp.build_graph(*PACKAGES)) == []


def test_the_cycle_check_finds_a_cycle_through_three_modules() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a.app", "a.runtime"), ("a.runtime", "a.consumer"),
                               ("a.consumer", "a.app"), ("a.app", "a.settings")]:  # fmt: skip
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["a.app", "a.consumer", "a.runtime"]]


def nested_imports(source: str) -> list[int]:
    """Lines of imports inside a function or class, other than `if TYPE_CHECKING:` ones."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lines.append(inner.lineno)
    return sorted(lines)


def test_no_import_is_placed_inside_a_function() -> None:
    hidden = {
        str(path.relative_to(ROOT)): lines
        for package in ALL_CODE
        for path in sorted((ROOT / package).rglob("*.py"))
        if "node_modules" not in path.parts and (lines := nested_imports(path.read_text()))
    }
    assert hidden == {}
    assert nested_imports("def f():\n    from workers.app import app\n") == [2]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_layer_contract_is_kept_and_breaks_on_an_upward_import(tmp_path: Path) -> None:
    kept = lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout

    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "services" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom workers.app import app  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode == 1
    assert "services.errors -> workers.app" in broken.stdout
