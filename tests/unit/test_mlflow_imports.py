"""No module imports mlflow but the registry adapter (`autopilot.adapters.registry`, its model door included).

A static check over the package's syntax trees: every MLflow call goes through one adapter, built
from the settings, so no module can reach a store that a global URI happens to name. It fails
naming the file, line and import.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "autopilot"
ADAPTER = ("adapters/registry/",)


def _mlflow_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] == "mlflow"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow" and not node.level:
            found.append((node.lineno, f"from {node.module} import ..."))
    return found


def test_only_the_registry_adapter_imports_mlflow() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(ADAPTER):
            continue
        found += [f"{relative}:{line}: {text}" for line, text in _mlflow_imports(ast.parse(path.read_text()))]
    assert not found, "mlflow imported outside autopilot.adapters.registry:\n" + "\n".join(found)


def test_the_check_sees_every_form_of_import() -> None:
    tree = ast.parse("import mlflow\nimport mlflow.sklearn as s\nfrom mlflow.entities import Run\n"
                     "def f():\n    from mlflow import MlflowClient\nimport mlflowish\nfrom .mlflow import x\n")
    assert [line for line, _ in _mlflow_imports(tree)] == [1, 2, 3, 5]


def test_the_exceptions_exist() -> None:
    for folder in ADAPTER:
        assert (SRC / folder).exists(), folder
