"""DAG run notes: a rejected version's reasons, where an operator opening the run sees them.

Airflow 3's task SDK cannot write a run's note, so the task asks the Airflow REST API
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`) with a JWT from `/auth/token`, using the
Airflow connection `autopilot_airflow_api` (host, port, login, password; never logged).
Setting the note is best effort: without the connection, or when the API is unreachable,
the reasons are still in the task log and the decision record, and the task's outcome is
unchanged.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["CONN_ID", "set_run_note"]

CONN_ID = "autopilot_airflow_api"
MAX_NOTE = 1000  # the API's limit
log = logging.getLogger(__name__)


def _request(url: str, method: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read() or b"{}"))


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
        token = _request(f"{base}/auth/token", "POST", {"username": conn.login, "password": conn.password})
        path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}?update_mask=note"
        _request(base + path, "PATCH", {"note": note[:MAX_NOTE]}, token=str(token["access_token"]))
    except Exception as exc:  # the API is down or refused us: the task log has the reasons anyway
        log.warning("DAG run note not set: %s", type(exc).__name__)
        return False
    return True
