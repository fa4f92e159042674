"""The layout rules of docs/architecture.md, checked on the source so they stay true.

The layers themselves (cli > orchestration > pipeline > domain > adapters > foundation, and no
Airflow below orchestration) are import-linter contracts in pyproject.toml, run by `make lint`;
this file checks what import-linter does not: module and function size, private names reached
across modules, and what the DAG files may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import PROJECT

SRC = PROJECT / "src" / "autopilot"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
MAX_LONG_FUNCTIONS = 3  # a few long functions may stay when splitting them would hide their story


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_no_module_is_over_600_lines() -> None:
    """A module longer than a screenful of screens does more than one thing."""
    long = {str(path.relative_to(SRC)): n for path in _modules()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_at_most_three_functions_are_over_60_lines() -> None:
    """Long functions are counted from `def` to their last line, nested functions included."""
    long = []
    for path in _modules():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.name} ({lines} lines)")
    assert len(long) <= MAX_LONG_FUNCTIONS, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_is_imported_across_modules() -> None:
    """`from autopilot.x import _name` reaches into another module's insides: make it public there."""
    found = []
    for path in [*_modules(), *(PROJECT / "dags").glob("*.py"), *(PROJECT / "plugins").glob("*.py")]:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autopilot"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                if private:
                    found.append(f"{path.relative_to(PROJECT)}: from {node.module} import {', '.join(private)}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_dag_files_import_only_the_orchestration_layer() -> None:
    """DAG files are wiring: everything they use comes through `autopilot.orchestration`."""
    found = []
    for path in (PROJECT / "dags").glob("*.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autopilot"):
                if not (node.module or "").startswith("autopilot.orchestration"):
                    found.append(f"{path.name}: {node.module}")
            if isinstance(node, ast.Import):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("autopilot")
                          and not a.name.startswith("autopilot.orchestration")]
    assert not found, found
