"""Every table of the state database, in one `MetaData` (the live model the domain modules query).

The schema itself is made by the migrations (`migrations/versions/`), never by `create_all`: a
change here needs a new revision, and `tests/unit/test_state_db.py` fails when the two differ.
Times are stored timezone-aware on PostgreSQL; SQLite drops the zone, so readers re-attach UTC.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

__all__ = [
    "ALERT_OUTBOX",
    "ALIAS_HISTORY",
    "ALIAS_INTENTS",
    "ANOMALY_POINTS",
    "ANOMALY_STATE",
    "DEPLOY_OBSERVATIONS",
    "METADATA",
    "MONITORING_WINDOWS",
    "RETRAIN_TRIGGERS",
]

METADATA = MetaData()

# --- promotion (`autopilot.versions.promotion`) --------------------------------------------------

# Completed alias moves, one row each (promote, forced promote, rollback).
ALIAS_HISTORY = Table(
    "alias_history", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("action", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("decision_ref", String(512), nullable=True),
    Column("idempotency_key", String(512), nullable=True, unique=True),
    Index("ix_alias_history_model_alias", "model", "alias", "id"),
)
# Moves that were decided and may have reached MLflow, not yet recorded: settled by the next move.
ALIAS_INTENTS = Table(
    "alias_intents", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False, index=True),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("decision_ref", String(512), nullable=True),
    Column("idempotency_key", String(512), nullable=True),
)

# --- alerts (`autopilot.alerts.ledger`) ----------------------------------------------------------

ALERT_OUTBOX = Table(
    "alert_outbox", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("conn_id", String(250), nullable=False),  # the Airflow connection of the webhook (never its URL)
    Column("status", String(16), nullable=False),  # sending | pending | sent | skipped | rejected | expired
    Column("claim", String(64), nullable=False),  # the current holder's token (compare-and-set)
    Column("lease_until", DateTime(timezone=True), nullable=False),  # a `sending` claim is abandoned after
    Column("attempts", Integer, nullable=False),  # deliveries tried (one per claim)
    Column("payload", Text, nullable=False),  # the message as JSON, already scrubbed and escaped
    Column("task_id", String(250), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("error", String(512), nullable=True),
    UniqueConstraint("dag_id", "run_id", "outcome", name="uq_alert_outbox_key"),
    Index("ix_alert_outbox_status_next", "status", "next_attempt_at"),
)

# --- monitoring (`autopilot.monitoring.state`, `autopilot.monitoring.anomaly`) ---------------------

MONITORING_WINDOWS = Table(
    "monitoring_windows", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=True),
    Column("action", String(32), nullable=False),
    Column("report", Text, nullable=False),
    UniqueConstraint("model", "window_end", name="uq_monitoring_window"),
)
RETRAIN_TRIGGERS = Table(
    "retrain_triggers", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("run_id", String(256), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("model", "run_id", name="uq_retrain_trigger"),
)
ANOMALY_STATE = Table(
    "anomaly_state", METADATA,
    Column("model", String(256), primary_key=True),
    Column("series", String(128), primary_key=True),
    Column("state", Text, nullable=True),  # SeriesState.as_dict() as JSON; NULL until the first point
    Column("updated_at", DateTime(timezone=True), nullable=True),
)
ANOMALY_POINTS = Table(
    "anomaly_points", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("series", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("value", Float, nullable=False),
    Column("alarms", Text, nullable=False),  # JSON list of Alarm.as_dict()
    UniqueConstraint("model", "series", "at", name="uq_anomaly_point"),
    Index("ix_anomaly_points_model_series_at", "model", "series", "at"),
)

# --- deployment (`autopilot.deploy.history`) -----------------------------------------------------

DEPLOY_OBSERVATIONS = Table(
    "deploy_observations", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("instance", String(64), nullable=False),
    Column("predicted_p95_ms", Float, nullable=False),
    Column("observed_p95_ms", Float, nullable=False),
    Column("predicted_rss_mb", Float, nullable=False),
    Column("observed_rss_mb", Float, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_deploy_observations_model", "model"),
)
