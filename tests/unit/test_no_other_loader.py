"""No module but `autopilot.adapters.registry.model_loading` deserializes a model, and nothing unpickles at all.

A static check over the package's syntax trees: a call to a model loader or an unpickler anywhere
else would bypass the verification (signature, manifest, format, reviewed types) that the one door
enforces. It fails naming the file, line and call.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "autopilot"
DOOR = SRC / "adapters" / "registry" / "model_loading.py"
FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
    ("joblib", "load"), ("sio", "load"), ("sio", "loads"), ("io", "load"), ("pandas", "read_pickle"),
    ("pd", "read_pickle"), ("sklearn", "load_model"), ("pyfunc", "load_model"), ("mlflow", "load_model"),
}


def _dotted(node: ast.AST) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute):
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        return name, node.attr
    return None


def test_only_the_door_deserializes_models() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func) in FORBIDDEN and path != DOOR:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node.func)}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "read_pickle":
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node.func)}")
    assert not found, "deserialization outside autopilot.adapters.registry.model_loading:\n" + "\n".join(found)


def test_the_check_sees_a_loader_call() -> None:
    tree = ast.parse("import mlflow\nmlflow.sklearn.load_model(path)\nimport pickle\npickle.loads(b)\n")
    calls = [_dotted(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert ("sklearn", "load_model") in calls and ("pickle", "loads") in calls
