"""The state database's migrations on PostgreSQL: a pre-migration database keeps its rows, a fresh one
gets every table at head, and concurrent openers of a fresh database all succeed."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select

from autopilot.adapters import state_db
from autopilot.adapters.state_db import schema, tables
from autopilot.settings import Settings
from tests.state_db_support import ROWS, T1, contents, make_legacy, revision_of, schema_of

pytestmark = pytest.mark.integration


@pytest.fixture
def settings_for(tmp_path: Path) -> Iterator[Callable[[str], Settings]]:
    def make(url: str) -> Settings:
        return replace(Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")}), state_db=url)

    yield make
    state_db.reset_engines()  # close pooled connections before the databases are dropped


def test_a_database_made_before_migrations_keeps_every_row(postgres_factory: Callable[[], str],
                                                           settings_for: Callable[[str], Settings]) -> None:
    url = postgres_factory()
    legacy = create_engine(url)
    make_legacy(legacy)
    before = contents(legacy)
    legacy.dispose()
    assert {name: len(rows) for name, rows in before.items()} == {name: len(rows) for name, rows in ROWS.items()}

    engine = state_db.engine(settings_for(url))
    assert revision_of(engine) == schema.head()
    assert contents(engine) == before
    # The id sequences carry on after the adopted rows.
    history = tables.ALIAS_HISTORY
    with engine.begin() as conn:
        conn.execute(history.insert().values(model="churn", alias="champion", from_version=2, to_version=1,
                                             action="rollback", actor="ops", reason="after upgrade", at=T1))
        assert conn.execute(select(history.c.id).order_by(history.c.id)).scalars().all() == [1, 2, 3]


def test_a_database_with_some_tables_gets_the_others(postgres_factory: Callable[[], str],
                                                      settings_for: Callable[[str], Settings]) -> None:
    url = postgres_factory()
    legacy = create_engine(url)
    make_legacy(legacy, only={"alias_history", "alias_intents", "alert_outbox"})
    before = contents(legacy)
    legacy.dispose()

    engine = state_db.engine(settings_for(url))
    assert revision_of(engine) == schema.head()
    after = contents(engine)
    assert set(after) == set(tables.METADATA.tables)
    assert {name: after[name] for name in before} == before


def test_a_fresh_database_gets_every_table_at_head(postgres_factory: Callable[[], str],
                                                    settings_for: Callable[[str], Settings]) -> None:
    engine = state_db.engine(settings_for(postgres_factory()))
    assert revision_of(engine) == schema.head()
    assert set(inspect(engine).get_table_names()) == set(tables.METADATA.tables) | {schema.VERSION_TABLE}
    legacy = create_engine(postgres_factory())
    make_legacy(legacy)
    assert schema_of(engine) == schema_of(legacy)  # the baseline is exactly what `create_all` made
    legacy.dispose()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE}),
                                tables.METADATA) == []


def _open(url: str, barrier: Any) -> None:
    settings = replace(Settings.from_env({}), state_db=url)
    barrier.wait()
    state_db.engine(settings)
    state_db.reset_engines()


def test_concurrent_openers_of_a_fresh_database_all_succeed(postgres_factory: Callable[[], str],
                                                            settings_for: Callable[[str], Settings]) -> None:
    url = postgres_factory()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    openers = [ctx.Process(target=_open, args=(url, barrier)) for _ in range(8)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(120)
    assert [opener.exitcode for opener in openers] == [0] * 8
    assert revision_of(state_db.engine(settings_for(url))) == schema.head()
