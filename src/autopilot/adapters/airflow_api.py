"""Airflow's REST API v2: the one client of it (a JWT from `/auth/token`, retries of transient answers).

Plain HTTP (httpx), no Airflow import: `autopilot trigger` runs in CI jobs that need only the
API's URL and a user (or a token), not an Airflow installation that matches the server's; the
tasks set their DAG run's note through it too (Airflow 3's task SDK cannot).

`AirflowApi` logs in (POST `/auth/token` with a user and password, or takes a token issued
elsewhere) and turns every failure into an `AirflowApiError` whose message names the problem and
never a secret: the token lives only in the client's header. When asking again may help, by
the kind of call:

- `AirflowApi.call`, the trigger's calls: the server not reached (refused, DNS, TLS, timeout), a
  502/503/504, or a 500 "Database error" (on SQLite the api-server answers so while another writer
  holds the lock; seen with two CI jobs unpausing at once) raise `TransientError`, which
  `call_retrying` asks again after `RETRY_DELAYS`. Any other 500 is final.
- `dag`, `unpause`, `trigger_run` (optionally with a data interval), `run`, `task_instance`, `xcom`, what
  `autopilot demo` and `autopilot up` ask of the embedded Airflow: as `call_retrying`; a 404 of
  `dag` or `run` is None (not parsed yet, no such run), and their transient answers raise
  `TransientError` for the caller's own polling to ask again.
- `patch_run_note`, a run's note (an idempotent PATCH): every 5xx and 429 as well, each attempt
  with a fresh token, after `RETRY_DELAYS` (on SQLite the api-server answers 500 "database is
  locked" while the scheduler writes; seen in CI).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["MAX_NOTE", "RETRY_DELAYS", "AirflowApi", "AirflowApiError", "NoteNotSet", "TransientError",
           "patch_run_note"]

RETRY_DELAYS = (1.0, 3.0)  # seconds before the 2nd and 3rd attempt of a call that may be asked again
MAX_NOTE = 1000  # the API's limit on a run's note
NOTE_TIMEOUT = 10.0  # seconds for one request of a note: the task that sets it has its own work to do
_TRANSIENT_STATUS = (502, 503, 504)  # a proxy or a restarting api-server: worth asking again
_DATABASE_BUSY = "Database error"  # the `reason` of a 500 while SQLite's lock is held: transient too
_INVALID_TOKEN = "Invalid JWT token"  # Airflow's 403 detail for a token its key did not sign (or `alg: none`)
_BEFORE_THE_RUN = ("unpause", "trigger a run")  # a refusal here means no run exists from this call


class AirflowApiError(RuntimeError):
    """A call to Airflow's REST API failed; the message names the problem (never a secret).

    Attributes:
        status: the HTTP status of the answer, None when there was none (or it was not an error).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(AirflowApiError):
    """The API was not reached or answered 502/503/504 (or SQLite's busy 500): asking again later may succeed."""


class NoteNotSet(AirflowApiError):
    """A run's note was not set: after how many attempts, and why in a word (`HTTP 403`, `URLError`)."""

    def __init__(self, attempts: int, kind: str) -> None:
        super().__init__(f"after {attempts} attempt(s): {kind}")
        self.attempts = attempts
        self.kind = kind


class AirflowApi:
    """A JWT-authenticated client of Airflow's public REST API that turns every failure into an AirflowApiError.

    Args:
        base_url: the API server's address (`http://host:8080`).
        username, password: the user to log in as (not needed with `token`).
        timeout: seconds for one request.
        token: a JWT issued elsewhere, used as it is (the API judges it on the first call).
    """

    def __init__(self, base_url: str, username: str | None, password: str | None, timeout: float = 30.0,
                 token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=timeout)
        if token:  # issued elsewhere: the API judges it on the first call
            self.http.headers["Authorization"] = f"Bearer {token}"
            return
        try:
            self._log_in(username, password)
        except BaseException:
            self.http.close()
            raise

    def _log_in(self, username: str | None, password: str | None) -> None:
        response = self.send("POST", "/auth/token", json={"username": username, "password": password})
        if response.status_code in (400, 401, 403):
            raise AirflowApiError(f"Airflow refused the credentials for user {username!r} at {self.base} "
                                  f"({response.status_code})", response.status_code)
        token = self.json_of(response, "POST /auth/token").get("access_token")
        if not token:
            raise AirflowApiError(f"{self.base}/auth/token answered without an access token")
        # The token lives only in this header: it is never printed or put in a message.
        self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close the client's connections."""
        self.http.close()

    def __enter__(self) -> AirflowApi:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, its answer whatever the status; not reaching the server raises TransientError."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, DNS, TLS, timeout: the server was not reached
            raise TransientError(f"cannot reach Airflow at {self.base}: {type(exc).__name__}: {exc}") from exc

    def json_of(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The answer's JSON object; an error status, or an answer that is not JSON, raises AirflowApiError."""
        if response.is_error:
            raise AirflowApiError(f"{what} at {self.base} failed ({response.status_code}): {_detail(response)}",
                                  response.status_code)
        try:
            return dict(response.json())
        except ValueError as exc:  # e.g. a proxy's HTML page at the wrong URL
            raise AirflowApiError(f"{what} at {self.base} did not answer JSON ({response.status_code}); "
                                  "is AIRFLOW_API_URL the API server's address?") from exc

    def call(self, method: str, path: str, what: str, dag_id: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One request about `dag_id` (`what` names it in errors).

        404 names the DAG, 409 is returned to the caller, other errors raise (TransientError when
        asking again may help).
        """
        response = self.send(method, path, **kwargs)
        status = response.status_code
        started = "" if what not in _BEFORE_THE_RUN else "; no run was started"
        if status == 401:  # no token, or one that expired (e.g. during a very long wait)
            raise AirflowApiError(f"Airflow refused the token at {self.base} (401: {_detail(response)}) during "
                                  f"{what}{started}: get a new token, or log in with AIRFLOW_USERNAME/"
                                  "AIRFLOW_PASSWORD", status)
        if status == 403 and _detail(response) == _INVALID_TOKEN:
            raise AirflowApiError(f"Airflow rejected the token at {self.base} as invalid (403: {_INVALID_TOKEN}) "
                                  f"during {what}{started}: it was not signed with this Airflow's key (or not "
                                  "issued for this API)", status)
        if status == 403:
            raise AirflowApiError(f"the Airflow user may not {what} of DAG {dag_id!r} at {self.base} "
                                  f"(403: {_detail(response)})", status)
        if status == 404:
            raise AirflowApiError(f"not found at {self.base} (404) during {what}: {_detail(response)} "
                                  f"(is DAG {dag_id!r} deployed and parsed without import errors?)", status)
        if status == 409:
            return 409, {}
        if status in _TRANSIENT_STATUS or _database_busy(response):
            raise TransientError(f"{what} at {self.base} failed ({status}): {_detail(response)}", status)
        return status, self.json_of(response, what)

    def call_retrying(self, method: str, path: str, what: str, dag_id: str,
                      **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """`call`, asked again after `RETRY_DELAYS` while the answer is transient.

        Safe for every call the trigger makes: GET and the unpause PATCH are idempotent, and a
        repeated trigger POST with the same run id meets the first one's run (409, conf compared).
        """
        for delay in RETRY_DELAYS:
            try:
                return self.call(method, path, what, dag_id, **kwargs)
            except TransientError:
                time.sleep(delay)
        return self.call(method, path, what, dag_id, **kwargs)

    # ------------------------------------------------------------------ DAGs and their runs

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API shows it, or None while it is not (yet) parsed (404)."""
        response = self.send("GET", _dag_path(dag_id))
        if response.status_code == 404:
            return None
        if response.status_code in _TRANSIENT_STATUS or _database_busy(response):
            raise TransientError(f"read DAG {dag_id!r} at {self.base} failed ({response.status_code})",
                                 response.status_code)
        return self.json_of(response, f"read DAG {dag_id!r}")

    def unpause(self, dag_id: str) -> bool:
        """Unpause the DAG; True when it was paused (an unpaused DAG gets no write: fewer SQLite lock waits)."""
        _, found = self.call_retrying("GET", _dag_path(dag_id), "unpause", dag_id)
        if not found.get("is_paused", True):
            return False
        self.call_retrying("PATCH", _dag_path(dag_id), "unpause", dag_id, json={"is_paused": False})
        return True

    def trigger_run(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None,
                    data_interval: tuple[datetime, datetime] | None = None) -> tuple[bool, dict[str, Any]]:
        """Start a run of `dag_id` named `run_id`; return (created, the run).

        Without `data_interval` the run is a manual run with no logical date (Airflow 3 wants
        `logical_date: null` said). With one, the run covers exactly that interval: its logical
        date is the interval's start, as a scheduled run of a data-interval timetable has, and
        the tasks read `data_interval_start`/`_end` as in a scheduled run. Both ends must carry
        a time zone. A run that already has `run_id` (409) is read and returned with created False.
        """
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        if data_interval is not None:
            start, end = data_interval
            if start.tzinfo is None or end.tzinfo is None or end <= start:
                raise ValueError(f"a data interval needs two time-zone-aware ends, start before end: {start}, {end}")
            body.update(logical_date=start.isoformat(), data_interval_start=start.isoformat(),
                        data_interval_end=end.isoformat())
        status, run = self.call_retrying("POST", f"{_dag_path(dag_id)}/dagRuns", "trigger a run", dag_id, json=body)
        if status == 409:
            found = self.run(dag_id, run_id)
            if found is None:  # a 409 for another reason than this run id (e.g. the logical date is taken)
                raise AirflowApiError(f"DAG {dag_id!r} refused run {run_id!r} (409): a run with its logical date "
                                      "exists", 409)
            return False, found
        return True, run

    def run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The DAG run (`state`, `note`, `conf`, dates...), or None when there is no such run (404)."""
        response = self.send("GET", _run_path(dag_id, run_id))
        if response.status_code == 404:
            return None
        if response.status_code in _TRANSIENT_STATUS or _database_busy(response):
            raise TransientError(f"read run {run_id!r} of DAG {dag_id!r} at {self.base} failed "
                                 f"({response.status_code})", response.status_code)
        return self.json_of(response, f"read run {run_id!r} of DAG {dag_id!r}")

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """A task instance of a run (`state`: e.g. `running`, or `awaiting_input` for a human's answer)."""
        path = f"{_run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}"
        return self.call_retrying("GET", path, f"read task {task_id!r}", dag_id)[1]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """A task's XCom value as JSON (a task's returned dict comes back as that dict).

        Raises:
            AirflowApiError: 404 when the task pushed no such value (it failed, was skipped, or has not run).
        """
        path = f"{_run_path(dag_id, run_id)}/taskInstances/{quote(task_id, safe='')}/xcomEntries/{quote(key, safe='')}"
        _, entry = self.call_retrying("GET", path, f"read the XCom {key!r} of task {task_id!r}", dag_id,
                                      params={"map_index": map_index})
        value = entry.get("value")
        if isinstance(value, str):  # stored as a JSON string by some writers: the value is what it encodes
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


def _dag_path(dag_id: str) -> str:
    return f"/api/v2/dags/{quote(dag_id, safe='')}"


def _run_path(dag_id: str, run_id: str) -> str:
    return f"{_dag_path(dag_id)}/dagRuns/{quote(run_id, safe='')}"


def _database_busy(response: httpx.Response) -> bool:
    if response.status_code != 500:
        return False
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return False
    return isinstance(detail, dict) and detail.get("reason") == _DATABASE_BUSY


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return str(detail)[:300]


# ---------------------------------------------------------------------------- run notes


def patch_run_note(base_url: str, username: str | None, password: str | None, dag_id: str, run_id: str,
                   note: str) -> None:
    """Set a DAG run's note (cut to the API's `MAX_NOTE` characters), logging in afresh for each attempt.

    A 5xx, a 429, a timeout or a refused connection is asked again after `RETRY_DELAYS`.

    Raises:
        NoteNotSet: after the last attempt, or at once for an answer that asking again cannot
            change (a refused login, a 403, a 404).
    """
    path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}?update_mask=note"
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
        time.sleep(delay)
        try:
            with AirflowApi(base_url, username, password, timeout=NOTE_TIMEOUT) as api:
                response = api.send("PATCH", path, json={"note": note[:MAX_NOTE]})
            if not response.is_success:
                raise AirflowApiError(f"HTTP {response.status_code}", response.status_code)
            return
        except Exception as exc:  # the API is down or refused us
            if not _note_retryable(exc) or attempt > len(RETRY_DELAYS):
                raise NoteNotSet(attempt, _note_failure(exc)) from exc


def _note_retryable(exc: Exception) -> bool:
    if isinstance(exc, AirflowApiError) and exc.status is not None:
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, TransientError)


def _note_failure(exc: Exception) -> str:
    """The failure in a word, never its URL or body (no credentials in the log).

    The words are those the note's log line has always used (urllib's): `HTTP <status>` for an
    answer, `TimeoutError` when the answer did not come in time, `URLError` when the server was
    not reached.
    """
    if isinstance(exc, AirflowApiError) and exc.status is not None:
        return f"HTTP {exc.status}"
    cause = exc.__cause__
    if isinstance(exc, TransientError):
        return "TimeoutError" if isinstance(cause, httpx.ReadTimeout) else "URLError"
    return type(cause).__name__ if cause is not None else type(exc).__name__
