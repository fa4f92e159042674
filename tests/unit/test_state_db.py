"""The state database (`autopilot.adapters.state_db`) on SQLite: migrations from a fresh or a pre-migration
database, concurrent openers, and the one-owner rule (no other module makes an engine or a state table).

PostgreSQL: `tests/integration/test_state_db_postgres.py`.
"""

from __future__ import annotations

import ast
import multiprocessing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from autopilot.adapters import state_db
from autopilot.adapters.state_db import schema, tables
from autopilot.settings import Settings
from tests.state_db_support import ROWS, contents, make_legacy, revision_of, schema_of

SRC = Path(__file__).resolve().parents[2] / "src" / "autopilot"
OWNER = SRC / "adapters" / "state_db"
# Modules allowed to define a `Table` besides the owner: the inference log is its own database
# (`Settings.inference_db`, opened through `state_db.open_engine`), not a state table.
TABLE_EXCEPTIONS = {"serving/inference_log.py"}


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    yield replace(Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")}),
                  state_db=f"sqlite:///{tmp_path / 'state' / 'autopilot.db'}")
    state_db.reset_engines()


def sqlite_master(url: str) -> list[tuple[str, str, str]]:
    """What SQLite stores of the schema (type, name, the CREATE statement), but the version table's."""
    plain = create_engine(url)
    try:
        with plain.connect() as conn:
            rows = conn.execute(text("SELECT type, name, sql FROM sqlite_master WHERE tbl_name != :v ORDER BY name"),
                                {"v": schema.VERSION_TABLE}).all()
    finally:
        plain.dispose()
    return [tuple(row) for row in rows]


def test_a_database_made_before_migrations_keeps_every_row(settings: Any) -> None:
    legacy = create_engine(settings.state_db)
    Path(legacy.url.database or "").parent.mkdir(parents=True)
    make_legacy(legacy)
    before = contents(legacy)
    assert {name: len(rows) for name, rows in before.items()} == {name: len(rows) for name, rows in ROWS.items()}
    with legacy.connect() as conn:
        assert schema.current(conn) is None and schema.VERSION_TABLE not in inspect(conn).get_table_names()
    legacy.dispose()

    engine = state_db.engine(settings)
    assert revision_of(engine) == schema.head()
    assert contents(engine) == before
    # The domain modules read the adopted rows.
    from autopilot.alerts.ledger import counts
    from autopilot.deploy.history import load_observations
    from autopilot.monitoring.state import last_windows

    assert counts(settings) == {"sent": 1, "pending": 1}
    assert [o.instance for o in load_observations(settings, "churn")] == ["ml.m5.large", "ml.c5.xlarge"]
    assert [w["action"] for w in last_windows(settings, "churn")] == ["none", "retrain"]


def test_a_database_with_some_tables_gets_the_others(settings: Any) -> None:
    """Before migrations each module created its tables on first use: a database may hold only some."""
    legacy = create_engine(settings.state_db)
    Path(legacy.url.database or "").parent.mkdir(parents=True)
    make_legacy(legacy, only={"alias_history", "alias_intents"})
    before = contents(legacy)
    legacy.dispose()

    engine = state_db.engine(settings)
    assert revision_of(engine) == schema.head()
    assert set(inspect(engine).get_table_names()) == set(tables.METADATA.tables) | {schema.VERSION_TABLE}
    after = contents(engine)
    assert {name: after[name] for name in before} == before
    assert all(after[name] == [] for name in set(after) - set(before))


def test_a_fresh_database_gets_every_table_at_head(settings: Any, tmp_path: Path) -> None:
    engine = state_db.engine(settings)
    assert revision_of(engine) == schema.head()
    assert set(inspect(engine).get_table_names()) == set(tables.METADATA.tables) | {schema.VERSION_TABLE}
    # The baseline is exactly the schema `create_all` made: the same CREATE statements, stored by SQLite.
    legacy_url = f"sqlite:///{tmp_path / 'legacy.db'}"
    legacy = create_engine(legacy_url)
    make_legacy(legacy)
    assert schema_of(engine) == schema_of(legacy)
    legacy.dispose()
    assert sqlite_master(settings.state_db) == sqlite_master(legacy_url)
    # ... and `tables.py` (what the code queries) matches the migrations (what the database has).
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE}),
                                tables.METADATA) == []
    # Opening it again (another process, a restart) changes nothing.
    state_db.reset_engines()
    assert revision_of(state_db.engine(settings)) == schema.head()


def _open(url: str, barrier: Any) -> None:
    settings = replace(Settings.from_env({}), state_db=url)
    barrier.wait()
    state_db.engine(settings)


def test_concurrent_openers_of_a_fresh_database_all_succeed(settings: Any) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(6)
    openers = [ctx.Process(target=_open, args=(settings.state_db, barrier)) for _ in range(6)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(120)
    assert [opener.exitcode for opener in openers] == [0] * 6
    assert revision_of(state_db.engine(settings)) == schema.head()


def test_the_version_table_is_autopilots_own(settings: Any) -> None:
    """MLflow, Optuna and Airflow keep `alembic_version`: a shared database must not mix them up."""
    engine = state_db.engine(settings)
    assert "alembic_version" not in inspect(engine).get_table_names()


# ---------------------------------------------------------------------------- one owner


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_only_the_state_db_package_makes_engines_and_tables() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        where = path.relative_to(SRC).as_posix()
        if path.is_relative_to(OWNER):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _called(node)
            if name == "create_engine":
                found.append(f"{where}:{node.lineno}: create_engine")
            if name == "Table" and where not in TABLE_EXCEPTIONS:
                found.append(f"{where}:{node.lineno}: Table")
    assert not found, "engines or tables outside autopilot.adapters.state_db:\n" + "\n".join(found)


def test_the_check_sees_an_engine_and_a_table() -> None:
    tree = ast.parse("import sqlalchemy as sa\nsa.create_engine(u)\nfrom sqlalchemy import Table\nTable('t', m)\n")
    assert {_called(n) for n in ast.walk(tree) if isinstance(n, ast.Call)} == {"create_engine", "Table"}
