"""Alembic's environment for the state database: migrate on the connection `schema.upgrade` hands over.

That connection is already in the transaction that holds the migration lock (see `schema`), so
Alembic opens no transaction of its own and every revision commits, or rolls back, with it.
"""

from __future__ import annotations

from alembic import context

from autopilot.adapters.state_db.schema import VERSION_TABLE
from autopilot.adapters.state_db.tables import METADATA

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("migrate the state database with autopilot.adapters.state_db.schema.upgrade(engine), "
                       "or hand a connection to alembic_config(connection)")
context.configure(connection=connection, target_metadata=METADATA, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters a table by copying it
with context.begin_transaction():
    context.run_migrations()
