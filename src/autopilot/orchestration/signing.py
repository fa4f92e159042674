"""The settings a task runs with: the environment's, plus the model signing key and, where their
connections exist, the database URLs and object-store credentials from Airflow
(`autopilot.orchestration.connections`).

The signing key (see `autopilot.adapters.registry.model_loading`) comes from `AUTOPILOT_SIGNING_KEY` when the
environment sets it, else from the password of the Airflow connection `autopilot_signing_key`
(any secrets backend Airflow is configured with: a vault, the metadata DB, `AIRFLOW_CONN_*`).
Airflow masks a connection's password in task logs. Every task process also switches MLflow's own
pickle deserialization off: autopilot loads models only through its verified door.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["SIGNING_CONN_ID", "task_settings"]

SIGNING_CONN_ID = "autopilot_signing_key"


def task_settings() -> Settings:
    """Settings for a task: the environment's, with the signing key from Airflow when it has none,
    and the databases and object store of their Airflow connections where those exist."""
    from autopilot.adapters.registry.model_loading import harden_process
    from autopilot.orchestration.connections import connection_settings
    from autopilot.settings import Settings, quiet_credential_loggers

    harden_process()
    quiet_credential_loggers()
    settings = connection_settings(Settings.from_env())
    if settings.signing_key:
        return settings
    key = _connection_key()
    return dataclasses.replace(settings, signing_key=key) if key else settings


def _connection_key() -> str | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(SIGNING_CONN_ID)
    except AirflowNotFoundException:  # not configured: manifests are not signed (the doctor warns)
        return None
    return (conn.password or "").strip() or None
