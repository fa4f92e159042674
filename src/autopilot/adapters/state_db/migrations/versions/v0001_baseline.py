"""Baseline: the state database as `create_all` made it before migrations (autopilot 0.1.0).

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Each table is created only when missing: a database made before migrations holds the tables of
the modules that had used it (each created its own on first use), and gets the others here.
Frozen: a later schema change is a new revision, never an edit of this one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _alias_history() -> None:
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer, nullable=True),
        sa.Column("to_version", sa.Integer, nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision_ref", sa.String(512), nullable=True),
        sa.Column("idempotency_key", sa.String(512), nullable=True, unique=True),
    )
    op.create_index("ix_alias_history_model_alias", "alias_history", ["model", "alias", "id"])


def _alias_intents() -> None:
    op.create_table(
        "alias_intents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer, nullable=True),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision_ref", sa.String(512), nullable=True),
        sa.Column("idempotency_key", sa.String(512), nullable=True),
    )
    op.create_index("ix_alias_intents_model", "alias_intents", ["model"])


def _alert_outbox() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claim", sa.String(64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(512), nullable=True),
        sa.UniqueConstraint("dag_id", "run_id", "outcome", name="uq_alert_outbox_key"),
    )
    op.create_index("ix_alert_outbox_status_next", "alert_outbox", ["status", "next_attempt_at"])


def _anomaly_points() -> None:
    op.create_table(
        "anomaly_points",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("series", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("alarms", sa.Text, nullable=False),
        sa.UniqueConstraint("model", "series", "at", name="uq_anomaly_point"),
    )
    op.create_index("ix_anomaly_points_model_series_at", "anomaly_points", ["model", "series", "at"])


def _anomaly_state() -> None:
    op.create_table(
        "anomaly_state",
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("series", sa.String(128), primary_key=True),
        sa.Column("state", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )


def _deploy_observations() -> None:
    op.create_table(
        "deploy_observations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("predicted_p95_ms", sa.Float, nullable=False),
        sa.Column("observed_p95_ms", sa.Float, nullable=False),
        sa.Column("predicted_rss_mb", sa.Float, nullable=False),
        sa.Column("observed_rss_mb", sa.Float, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_deploy_observations_model", "deploy_observations", ["model"])


def _monitoring_windows() -> None:
    op.create_table(
        "monitoring_windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.UniqueConstraint("model", "window_end", name="uq_monitoring_window"),
    )


def _retrain_triggers() -> None:
    op.create_table(
        "retrain_triggers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("run_id", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.UniqueConstraint("model", "run_id", name="uq_retrain_trigger"),
    )


CREATE: dict[str, Callable[[], None]] = {
    "alias_history": _alias_history,
    "alias_intents": _alias_intents,
    "alert_outbox": _alert_outbox,
    "anomaly_points": _anomaly_points,
    "anomaly_state": _anomaly_state,
    "deploy_observations": _deploy_observations,
    "monitoring_windows": _monitoring_windows,
    "retrain_triggers": _retrain_triggers,
}
TABLES = frozenset(CREATE)


def upgrade() -> None:
    """Create the state tables that are missing."""
    present = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in CREATE.items():
        if name not in present:
            create()


def downgrade() -> None:
    """Drop every state table (their rows too)."""
    for name in reversed(list(CREATE)):
        op.drop_table(name)
