"""DAG run notes: a rejected version's reasons, where an operator opening the run sees them.

Airflow 3's task SDK cannot write a run's note, so the task asks the Airflow REST API
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`, through `autopilot.adapters.airflow_api`) with
a JWT from `/auth/token`, using the Airflow connection `autopilot_airflow_api` (host, port, login,
password; never logged). Setting the note is best effort: without the connection, or when the
API is unreachable, the reasons are still in the task log and the decision record, and the
task's outcome is unchanged. A busy API is asked again: a 5xx, a 429, a timeout or a refused
connection is retried after `autopilot.adapters.airflow_api.RETRY_DELAYS` (on SQLite the
api-server answers 500 "database is locked" while the scheduler writes; seen in CI).
"""

from __future__ import annotations

import logging

from autopilot.adapters.airflow_api import NoteNotSet, patch_run_note

__all__ = ["CONN_ID", "set_run_note"]

CONN_ID = "autopilot_airflow_api"
log = logging.getLogger(__name__)


def set_run_note(dag_id: str, run_id: str, note: str, conn_id: str = CONN_ID) -> bool:
    """Set a DAG run's note through the REST API; return whether it was set."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # not configured: the note is optional
        log.warning("DAG run note not set: Airflow connection %r is not configured", conn_id)
        return False
    base = f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8080}"
    try:
        patch_run_note(base, conn.login, conn.password, dag_id, run_id, note)
    except NoteNotSet as exc:  # the API is down or refused us: the task log has the reasons anyway
        log.warning("DAG run note not set after %d attempt(s): %s", exc.attempts, exc.kind)
        return False
    return True
