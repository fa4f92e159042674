"""Every third-party import is declared where it runs (pyproject.toml's base and extras).

The package installs in parts (README "Install only what runs there"): `[serving]` for the
endpoint, `[ci]` for `autopilot trigger`, `[aws]` for deploying to AWS, `[airflow]` for the Airflow
image. Each part is the set of modules reachable from its entry modules by any import, lazy ones
inside functions included (a request may run them), `if TYPE_CHECKING:` blocks excluded. Each
third-party module a part imports must come from a distribution declared in the base dependencies
or in the part's extra (with the extras it names, e.g. `autopilot[serving]`), found through
`importlib.metadata.packagesdistributions()`. Relying on a transitive dependency is the bug this
catches: it disappears when the package that brought it changes.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.parts_support import (
    PARTS,
    PROJECT,
    PYPROJECT,
    declared,
    distributions,
    graph,
    imports,
    reachable,
    third_party,
)


def _part_imports(part: str) -> dict[str, set[str]]:
    """Third-party top-level module -> the files of the part that import it."""
    roots, _ = PARTS[part]
    edges = graph()
    users: dict[str, set[str]] = {}
    for module in reachable(roots):
        for top in third_party(edges[module]):
            users.setdefault(top, set()).add(module)
    if part == "airflow":
        for path in [*(PROJECT / "dags").glob("*.py"), *(PROJECT / "plugins").glob("*.py")]:
            for top in third_party(imports(path, "")):
                users.setdefault(top, set()).add(str(path.relative_to(PROJECT)))
    return users


def _missing(part: str) -> list[str]:
    _, extra = PARTS[part]
    names = declared(extra)
    missing = []
    for top, users in sorted(_part_imports(part).items()):
        dists = {canonicalize_name(d) for d in distributions().get(top, [])}
        if not dists:
            missing.append(f"{top}: no installed distribution provides it (imported by {sorted(users)[:3]})")
        elif not dists & names:
            missing.append(f"{top} ({', '.join(sorted(dists))}): not in the base or [{extra}] "
                           f"(imported by {sorted(users)[:3]})")
    return missing


def test_each_part_declares_what_it_imports() -> None:
    """serving, ci, aws and airflow: every third-party import is declared in the base or the part's extra."""
    problems = {part: missing for part in PARTS if (missing := _missing(part))}
    assert not problems, problems


def test_the_parts_are_what_the_readme_says() -> None:
    """The endpoint's part reaches no Airflow, GX, Evidently, Optuna or Celery; CI's only its REST client."""
    serving = set(_part_imports("serving"))
    assert not serving & {"airflow", "great_expectations", "evidently", "optuna", "celery"}, serving
    assert {"mlflow", "fastapi", "uvicorn", "sklearn"} <= serving  # the closure is real, not empty
    assert set(_part_imports("ci")) == {"httpx"}
    assert {"airflow", "great_expectations", "evidently", "optuna"} <= set(_part_imports("airflow"))


def test_the_command_line_module_tops_need_only_the_base() -> None:
    """`import autopilot.cli` (what the console script does first) imports nothing outside the base."""
    edges = graph(top_level_only=True)
    tops = {top for module in reachable(("autopilot.cli",), top_level_only=True)
            for top in third_party(edges[module])}
    base = declared(None)
    outside = {top for top in tops if not {canonicalize_name(d) for d in distributions().get(top, [])} & base}
    assert not outside, f"autopilot.cli imports at module level, outside the base dependencies: {outside}"


def test_the_checker_catches_an_undeclared_import(tmp_path: Path) -> None:
    """The check is real: a module importing an undeclared distribution is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import yaml\n\ndef later() -> None:\n    import pytest\n")
    names = third_party(imports(probe, ""))
    assert names == {"yaml", "pytest"}
    assert third_party(imports(probe, "", top_level_only=True)) == {"yaml"}
    assert "pytest" not in declared("all")  # a dev tool: importing it from src would be reported


REQUIREMENT = re.compile(r'^\s*"([^"]+)",?\s*(#.*)?$')


def test_every_upper_bound_says_why() -> None:
    """A `<` or `==` pin carries a comment on its line or on the comment lines right above it."""
    lines = PYPROJECT.read_text().splitlines()
    unexplained = []
    for index, line in enumerate(lines):
        match = REQUIREMENT.match(line)
        if not match or not re.search(r"<|==", match[1].split(";")[0]):
            continue
        above = lines[index - 1].strip() if index else ""
        if not match[2] and not above.startswith("#"):
            unexplained.append(match[1])
    assert not unexplained, f"upper bounds without a reason: {unexplained}"
