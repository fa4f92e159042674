"""DAG run notes: a rejected version's reasons, where an operator opening the run sees them.

Airflow 3's task SDK cannot write a run's note, so the task asks the Airflow REST API
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`) with a JWT from `/auth/token`, using the
Airflow connection `autopilot_airflow_api` (host, port, login, password; never logged).
Setting the note is best effort: without the connection, or when the API is unreachable,
the reasons are still in the task log and the decision record, and the task's outcome is
unchanged. A busy API is asked again: a 5xx, a 429, a timeout or a refused connection is retried
after `RETRY_DELAYS` (on SQLite the api-server answers 500 "database is locked" while the
scheduler writes; seen in CI).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["CONN_ID", "set_run_note"]

CONN_ID = "autopilot_airflow_api"
MAX_NOTE = 1000  # the API's limit
RETRY_DELAYS = (1.0, 3.0)  # seconds before the second and third attempt
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
    path = f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns/{urllib.parse.quote(run_id)}?update_mask=note"
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
        time.sleep(delay)
        try:
            token = _request(f"{base}/auth/token", "POST", {"username": conn.login, "password": conn.password})
            _request(base + path, "PATCH", {"note": note[:MAX_NOTE]}, token=str(token["access_token"]))
            return True
        except Exception as exc:  # the API is down or refused us: the task log has the reasons anyway
            if not _transient(exc) or attempt > len(RETRY_DELAYS):
                log.warning("DAG run note not set after %d attempt(s): %s", attempt, _describe(exc))
                return False
    return False


def _transient(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(exc, urllib.error.URLError | TimeoutError | ConnectionError)


def _describe(exc: Exception) -> str:
    """The error's kind and status, never its URL or body (no credentials in the log)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    return type(exc).__name__
