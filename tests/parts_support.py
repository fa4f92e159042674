"""The installable parts of the package (pyproject.toml's extras), as the tests see them.

A part is the set of autopilot modules reachable from its entry modules by any import, lazy ones
inside functions included (a request may run them), `if TYPE_CHECKING:` blocks excluded. Used by
tests/unit/test_declared_dependencies.py (every import declared where it runs),
tests/unit/test_part_imports.py (each part imports with only its distributions present) and the
fresh-venv tests of tests/install/.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import PROJECT

SRC = PROJECT / "src" / "autopilot"
PYPROJECT = PROJECT / "pyproject.toml"

# part -> (its entry modules, its extra). The Airflow image runs everything, DAG files and plugins too.
PARTS: dict[str, tuple[tuple[str, ...], str]] = {
    "serving": (("autopilot.serving",), "serving"),
    "ci": (("autopilot.trigger",), "ci"),
    "aws": (("autopilot.adapters.aws", "autopilot.deploy.aws"), "aws"),
    "airflow": (("autopilot",), "airflow"),
}


def module_name(path: Path) -> str:
    """`src/autopilot/a/b.py` -> `autopilot.a.b` (a package's `__init__` is the package)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped |= {id(inner) for inner in ast.walk(child)}
    return skipped


def _walk(tree: ast.AST, *, into_functions: bool) -> list[ast.AST]:
    """The nodes under `tree`; without `into_functions`, function bodies (run only when called) are left out."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if into_functions or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo.extend(ast.iter_child_nodes(node))
    return found


def imports(path: Path, package: str, *, top_level_only: bool = False) -> set[str]:
    """Dotted names `path` imports (`from a import b` gives `a` and `a.b`), relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in _walk(tree, into_functions=not top_level_only):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([module] if module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


@cache
def graph(top_level_only: bool = False) -> dict[str, set[str]]:
    """Each autopilot module -> every module name it imports."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found[name] = imports(path, package, top_level_only=top_level_only)
    return found


def reachable(roots: tuple[str, ...], *, top_level_only: bool = False) -> set[str]:
    """The autopilot modules importing `roots` loads (their parent packages included)."""
    edges = graph(top_level_only)
    todo = [m for m in edges if any(m == r or m.startswith(r + ".") for r in roots)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in edges]
        todo += [name for name in edges[module] if name in edges]
    return seen


def third_party(names: set[str]) -> set[str]:
    """The top-level names among `names` that are neither the standard library nor autopilot."""
    tops = {name.split(".")[0] for name in names}
    return {t for t in tops if t and t not in sys.stdlib_module_names and t not in {"autopilot", "__future__"}}


@cache
def distributions() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it."""
    return metadata.packages_distributions()


@cache
def project() -> dict[str, Any]:
    """pyproject.toml's [project] table."""
    return tomllib.loads(PYPROJECT.read_text())["project"]


def part_requirements(extra: str | None) -> list[Requirement]:
    """The base requirements and those of `extra`, with the extras it names (`autopilot[serving]`) expanded."""
    own = canonicalize_name(project()["name"])
    todo = [*project()["dependencies"], *([f"{own}[{extra}]"] if extra else [])]
    found: list[Requirement] = []
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        if canonicalize_name(req.name) == own:
            for inner in req.extras - seen:
                seen.add(inner)
                todo += project()["optional-dependencies"][inner]
        else:
            found.append(req)
    return found


def declared(extra: str | None) -> set[str]:
    """Canonical names of the distributions the base and `extra` declare."""
    return {canonicalize_name(req.name) for req in part_requirements(extra)}


def installed_closure(extra: str | None) -> set[str]:
    """Canonical names of the installed distributions a fresh install of the part would bring.

    Follows each declared requirement's own requirements (and the extras named, such as
    `uvicorn[standard]`) through the installed metadata: what `pip install autopilot[extra]` pulls in.
    """
    todo: list[tuple[Requirement, frozenset[str]]] = [(req, frozenset(req.extras)) for req in part_requirements(extra)]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        names.add(key[0])
        for line in dist.requires or []:
            inner = Requirement(line)
            envs = [{"extra": e} for e in ("", *extras)]
            if inner.marker is None or any(inner.marker.evaluate(env) for env in envs):
                todo.append((inner, frozenset(inner.extras)))
    return names


def blocked_modules(extra: str | None) -> set[str]:
    """Top-level modules installed here that a fresh install of the part would not have."""
    allowed = installed_closure(extra) | {"autopilot"}
    return {top for top, dists in distributions().items()
            if top.isidentifier() and top not in sys.stdlib_module_names
            and not {canonicalize_name(d) for d in dists} & allowed}
