"""No module but `autopilot.adapters.aws` imports boto3: every AWS session and client is made there.

A static check over the package's syntax trees (imports at any depth, inside functions too). It
fails naming the file and line. botocore is not checked: its exceptions and service models are
not clients, and the modules that need them may import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "autopilot"
ADAPTER = SRC / "adapters" / "aws.py"


def boto3_imports(tree: ast.AST) -> list[int]:
    """Line numbers of the `import boto3...` and `from boto3... import ...` statements in `tree`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "boto3" or name.startswith("boto3.") for name in names):
            lines.append(node.lineno)
    return lines


def test_only_the_aws_adapter_imports_boto3() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == ADAPTER:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        found += [f"{path.relative_to(SRC)}:{line}" for line in boto3_imports(tree)]
    assert not found, "boto3 imported outside autopilot.adapters.aws:\n" + "\n".join(found)


def test_the_adapter_is_where_boto3_is_imported() -> None:
    assert boto3_imports(ast.parse(ADAPTER.read_text()))


def test_the_check_sees_every_form_of_import() -> None:
    tree = ast.parse("import boto3\ndef f():\n    import boto3.session as s\n    from boto3 import client\n"
                     "from botocore.config import Config\n")
    assert boto3_imports(tree) == [1, 3, 4]
