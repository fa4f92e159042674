"""The state database's schema: made and kept current by the Alembic migrations in `migrations/versions/`.

`upgrade(engine)` runs when the state database is first opened in a process (`engines.engine`):
one transaction brings it from whatever it is (empty, made before migrations, an older revision)
to the newest revision, so every state table exists before any module uses one.

- Concurrent openers: the whole upgrade is one transaction that first takes the database's
  write lock (SQLite: every transaction begins IMMEDIATE) or a transaction-scoped advisory lock
  (PostgreSQL, where two concurrent `CREATE TABLE`s of one name fail on `pg_type`), so a second
  opener waits, then finds the schema current and changes nothing. A failure that a lock could
  not prevent is forgiven when the database is at the newest revision afterwards.
- A database made before migrations (by `create_all`) has state tables and no version table:
  it is stamped at the baseline, which IS that schema, then upgraded. Such a database may lack
  the tables of modules that never ran (they were created on first use): the baseline then runs
  and creates only those.
- The version table is `autopilot_state_version`, not Alembic's default `alembic_version`, which
  MLflow, Optuna and Airflow keep for their own schemas in databases one may share.

A new revision: a file in `migrations/versions/` (`alembic.command.revision(alembic_config(), "...")`
writes one from `migrations/script.py.mako`), with `down_revision` the previous head, and the
matching change in `tables.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from autopilot.adapters.state_db.migrations.versions import v0001_baseline

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["BASELINE", "VERSION_TABLE", "alembic_config", "current", "head", "upgrade"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "autopilot_state_version"
BASELINE = v0001_baseline.revision
# Any constant: the transaction-scoped advisory lock that serializes schema changes across processes.
DDL_LOCK_KEY = 0x6175746F70696C6F  # "autopilo"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the state database; its migrations run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))  # ConfigParser interpolates %
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")  # a new revision's file: a module name
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision of the state database's schema."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None, f"no migration in {MIGRATIONS}"
    return found


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: not under migrations, e.g. empty or made by `create_all`)."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the state database to the newest revision; safe when many processes open it at once."""
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DDL_LOCK_KEY})
            config = alembic_config(conn)
            _adopt_unversioned(conn, config)
            command.upgrade(config, "head")
    except DBAPIError as exc:
        # E.g. another process created a table between our check and our CREATE on a backend
        # the locks above do not cover: what matters is that the schema is current now.
        with engine.connect() as conn:
            now = current(conn)
        if now != head():
            raise
        log.info("another process migrated the state database meanwhile (%s); it is at %s", exc, now)


def _adopt_unversioned(conn: Connection, config: Config) -> None:
    """Stamp a database made before migrations at the baseline (its schema), when it has every baseline table."""
    present = set(inspect(conn).get_table_names())
    if VERSION_TABLE in present or not present & v0001_baseline.TABLES:
        return  # under migrations already, or empty
    missing = v0001_baseline.TABLES - present
    if missing:
        log.info("state database made before migrations, without %s: the baseline creates them",
                 ", ".join(sorted(missing)))
        return
    log.info("state database made before migrations: stamping it at the baseline %s", BASELINE)
    command.stamp(config, BASELINE)
