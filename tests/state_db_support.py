"""The state database as autopilot made it before migrations, for the upgrade tests (SQLite and PostgreSQL).

`make_legacy` builds one from the frozen DDL in `tests/data/state_db/` (the statements `create_all`
emitted at BASE 5ee36c9) and fills every table; `contents` and `schema_of` describe a database so a
test can compare it before and after the new code opened it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine

from autopilot.adapters.state_db import schema, tables
from tests.helpers import PROJECT

LEGACY_DDL = PROJECT / "tests" / "data" / "state_db"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2025, 6, 1, 13, 0, tzinfo=UTC)

# Two rows per table, every column set (nullable ones once NULL where the schema allows).
ROWS: dict[str, list[dict[str, Any]]] = {
    "alias_history": [
        {"model": "churn", "alias": "champion", "from_version": None, "to_version": 1, "action": "promote",
         "actor": "dag", "reason": "first", "at": T0, "decision_ref": "run-1", "idempotency_key": "run-1/promote"},
        {"model": "churn", "alias": "champion", "from_version": 1, "to_version": 2, "action": "force_promote",
         "actor": "ops", "reason": "hotfix", "at": T1, "decision_ref": None, "idempotency_key": None},
    ],
    "alias_intents": [
        {"model": "churn", "alias": "champion", "from_version": 2, "to_version": 3, "action": "promote",
         "actor": "dag", "reason": "interrupted", "at": T1, "decision_ref": "run-3", "idempotency_key": "run-3/p"},
        {"model": "fraud", "alias": "challenger", "from_version": None, "to_version": 1, "action": "promote",
         "actor": "dag", "reason": "interrupted", "at": T1, "decision_ref": None, "idempotency_key": None},
    ],
    "alert_outbox": [
        {"dag_id": "etl", "run_id": "r1", "outcome": "failed", "kind": "generic", "conn_id": "slack",
         "status": "sent", "claim": "a", "lease_until": T0, "attempts": 1, "payload": '{"text": "x"}',
         "task_id": "t", "created_at": T0, "next_attempt_at": None, "expires_at": T1, "sent_at": T0, "error": None},
        {"dag_id": "etl", "run_id": "r2", "outcome": "success", "kind": "generic", "conn_id": "slack",
         "status": "pending", "claim": "b", "lease_until": T0, "attempts": 2, "payload": "{}", "task_id": None,
         "created_at": T0, "next_attempt_at": T1, "expires_at": T1, "sent_at": None, "error": "HTTP 503"},
    ],
    "anomaly_points": [
        {"model": "churn", "series": "latency_p95_ms", "at": T0, "value": 50.5, "alarms": "[]"},
        {"model": "churn", "series": "latency_p95_ms", "at": T1, "value": 500.0, "alarms": '[{"detector": "spike"}]'},
    ],
    "anomaly_state": [
        {"model": "churn", "series": "latency_p95_ms", "state": '{"points_seen": 2}', "updated_at": T1},
        {"model": "churn", "series": "error_rate", "state": None, "updated_at": None},
    ],
    "deploy_observations": [
        {"model": "churn", "instance": "ml.m5.large", "predicted_p95_ms": 12.5, "observed_p95_ms": 14.0,
         "predicted_rss_mb": 300.0, "observed_rss_mb": 280.5, "at": T0},
        {"model": "churn", "instance": "ml.c5.xlarge", "predicted_p95_ms": 8.0, "observed_p95_ms": 9.5,
         "predicted_rss_mb": 310.0, "observed_rss_mb": 305.0, "at": T1},
    ],
    "monitoring_windows": [
        {"model": "churn", "window_start": T0, "window_end": T1, "version": 2, "action": "none",
         "report": '{"drift": 0.1}'},
        {"model": "churn", "window_start": T1, "window_end": datetime(2025, 6, 1, 14, tzinfo=UTC), "version": None,
         "action": "retrain", "report": "{}"},
    ],
    "retrain_triggers": [
        {"model": "churn", "run_id": "monitor-1", "at": T1, "strategy": "drift", "reason": "feature drift"},
        {"model": "fraud", "run_id": "monitor-2", "at": T1, "strategy": "performance", "reason": "auc dropped"},
    ],
}


def legacy_statements(dialect: str, only: set[str] | None = None) -> list[str]:
    """The frozen CREATE statements of the pre-migration schema (`only`: those of these tables)."""
    text = (LEGACY_DDL / f"legacy_{dialect}.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]
    if only is None:
        return statements
    return [s for s in statements if _table_of(s) in only]


def _table_of(statement: str) -> str:
    words = statement.split()
    return words[2] if words[1] == "TABLE" else words[words.index("ON") + 1]


def make_legacy(engine: Engine, only: set[str] | None = None) -> None:
    """Create the pre-migration schema (or the tables in `only`) and fill each of its tables."""
    with engine.begin() as conn:
        for statement in legacy_statements(engine.dialect.name, only):
            conn.exec_driver_sql(statement)
        for name, rows in ROWS.items():
            if only is None or name in only:
                conn.execute(tables.METADATA.tables[name].insert(), rows)


def contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every state table the database holds, in primary-key order."""
    present = set(inspect(engine).get_table_names())
    found = {}
    with engine.connect() as conn:
        for name, table in tables.METADATA.tables.items():
            if name in present:
                found[name] = [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key))]
    return found


def schema_of(engine: Engine) -> dict[str, Any]:
    """The reflected schema (columns, keys, unique constraints, indexes) of the state tables."""
    found: dict[str, Any] = {}
    inspector = inspect(engine)
    for name in sorted(set(inspector.get_table_names()) - {schema.VERSION_TABLE}):
        found[name] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                        for c in inspector.get_columns(name)],
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "unique": sorted((u["name"] or "", tuple(u["column_names"]))
                             for u in inspector.get_unique_constraints(name)),
            "indexes": sorted((i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(name)),
        }
    return found


def revision_of(engine: Engine) -> str | None:
    """The schema revision the database is at."""
    with engine.connect() as conn:
        return schema.current(conn)
