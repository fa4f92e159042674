"""Trigger a DAG run through Airflow's REST API, for CI: `autopilot trigger <dag_id> [--wait]`.

Plain HTTP (httpx), no Airflow import: a CI job needs only the API's URL and a user (or a
token), not an Airflow installation that matches the server's. The run id derives from the
commit, so a CI job that is re-run for the same commit finds the run it already started (409)
and reports that run instead of training twice, provided it asks for the same conf: a run id
names one request, and the same id with a different conf is refused (`ConfConflict`) rather
than silently reported as the other request's run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["ConfConflict", "TransientError", "TriggerError", "TriggerResult", "credentials_from_env", "run_cli",
           "run_id_for", "trigger"]

FINISHED = ("success", "failed")
# Airflow's default `[scheduler] allowed_run_id_pattern` is ^[A-Za-z0-9_.~:+-]+$.
_NOT_IN_RUN_ID = re.compile(r"[^A-Za-z0-9_.~:+-]")
_MAX_POLL = 30.0  # backoff ceiling: a long training run is not polled every few seconds for an hour


_TRANSIENT_STATUS = (502, 503, 504)  # a proxy or a restarting api-server: worth asking again
# On SQLite the api-server answers 500 {"reason": "Database error"} while another writer holds the
# lock (seen with two CI jobs unpausing at once): transient too. Other 500s are not.
_DATABASE_BUSY = "Database error"
RETRY_DELAYS = (1.0, 3.0)  # before the 2nd and 3rd attempt of a call made before the wait
_INVALID_TOKEN = "Invalid JWT token"  # Airflow's 403 detail for a token its key did not sign (or `alg: none`)
_BEFORE_THE_RUN = ("unpause", "trigger a run")  # a refusal here means no run exists from this call


class TriggerError(RuntimeError):
    """Triggering or following a DAG run failed; the message names the problem (never a secret)."""


class TransientError(TriggerError):
    """The API was not reached or answered 502/503/504: asking again later may succeed."""


class ConfConflict(TriggerError):
    """A run with the requested run id exists, started with a different conf: not the run asked for."""


@dataclass
class TriggerResult:
    """What became of a triggered DAG run.

    Attributes:
        created: False when a run with this id already existed (409): it is reported, not repeated.
        state: the run's state when last seen (`queued`, `running`, `success`, `failed`).
        failed_tasks: ids of the tasks that failed (not those merely `upstream_failed`).
        url: the run's page in the Airflow UI.
        note: the run's note (a failed gate writes its reasons there).
    """

    dag_id: str
    run_id: str
    created: bool
    state: str
    failed_tasks: list[str] = field(default_factory=list)
    url: str = ""
    note: str | None = None


def run_id_for(commit: str | None = None, prefix: str = "ci") -> str:
    """A DAG run id derived from the commit: `<prefix>__<sha[:12]>`.

    The commit comes from `commit`, else `GITHUB_SHA` or `CI_COMMIT_SHA` (GitLab), else
    `git rev-parse HEAD`. With no commit at all, the id falls back to the current UTC time
    (`<prefix>__manual__<timestamp>`), which does not deduplicate re-runs.
    """
    sha = commit or os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or _git_head()
    if sha:
        return _NOT_IN_RUN_ID.sub("", f"{prefix}__{sha.strip()[:12]}")
    return _NOT_IN_RUN_ID.sub("", f"{prefix}__manual__{datetime.now(UTC):%Y%m%dT%H%M%S}")


def _git_head() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or a hung repository
        return None
    if done.returncode != 0:  # not a git checkout
        return None
    return done.stdout.strip() or None


def credentials_from_env(url: str | None = None, username: str | None = None, password: str | None = None,
                         env: Mapping[str, str] | None = None, token: str | None = None) -> tuple[str, str, str]:
    """URL, user and password from the arguments, else `AIRFLOW_API_URL`, `AIRFLOW_USERNAME`, `AIRFLOW_PASSWORD`.

    With a `token` (a JWT issued elsewhere, `AIRFLOW_API_TOKEN`) only the URL is required.

    Raises:
        TriggerError: one of them is missing (named; the password's value is never shown).
    """
    env = os.environ if env is None else env
    found = {"AIRFLOW_API_URL": url or env.get("AIRFLOW_API_URL", ""),
             "AIRFLOW_USERNAME": username or env.get("AIRFLOW_USERNAME", ""),
             "AIRFLOW_PASSWORD": password or env.get("AIRFLOW_PASSWORD", "")}
    missing = [name for name, value in found.items() if not value and (not token or name == "AIRFLOW_API_URL")]
    if missing:
        raise TriggerError(f"missing Airflow credentials: set {', '.join(missing)}"
                           + ("" if token or missing == ["AIRFLOW_API_URL"] else " (or AIRFLOW_API_TOKEN instead)"))
    return found["AIRFLOW_API_URL"].rstrip("/"), found["AIRFLOW_USERNAME"], found["AIRFLOW_PASSWORD"]


class _Api:
    """A JWT-authenticated client of Airflow's public REST API that turns every failure into a TriggerError."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0,
                 token: str | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=timeout)
        if token:  # issued elsewhere: the API judges it on the first call
            self.http.headers["Authorization"] = f"Bearer {token}"
            return
        response = self._send("POST", "/auth/token", json={"username": username, "password": password})
        if response.status_code in (400, 401, 403):
            raise TriggerError(f"Airflow refused the credentials for user {username!r} at {self.base} "
                               f"({response.status_code})")
        token = self._json(response, "POST /auth/token").get("access_token")
        if not token:
            raise TriggerError(f"{self.base}/auth/token answered without an access token")
        # The token lives only in this header: it is never printed or put in a message.
        self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, DNS, TLS, timeout: the server was not reached
            raise TransientError(f"cannot reach Airflow at {self.base}: {type(exc).__name__}: {exc}") from exc

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.is_error:
            raise TriggerError(f"{what} at {self.base} failed ({response.status_code}): {_detail(response)}")
        try:
            return dict(response.json())
        except ValueError as exc:  # e.g. a proxy's HTML page at the wrong URL
            raise TriggerError(f"{what} at {self.base} did not answer JSON ({response.status_code}); "
                               "is AIRFLOW_API_URL the API server's address?") from exc

    def call(self, method: str, path: str, what: str, dag_id: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One request; 404 names the DAG, 409 is returned to the caller, other errors raise."""
        response = self._send(method, path, **kwargs)
        started = "" if what not in _BEFORE_THE_RUN else "; no run was started"
        if response.status_code == 401:  # no token, or one that expired (e.g. during a very long wait)
            raise TriggerError(f"Airflow refused the token at {self.base} (401: {_detail(response)}) during "
                               f"{what}{started}: get a new token, or log in with AIRFLOW_USERNAME/AIRFLOW_PASSWORD")
        if response.status_code == 403 and _detail(response) == _INVALID_TOKEN:
            raise TriggerError(f"Airflow rejected the token at {self.base} as invalid (403: {_INVALID_TOKEN}) "
                               f"during {what}{started}: it was not signed with this Airflow's key (or not issued "
                               "for this API)")
        if response.status_code == 403:
            raise TriggerError(f"the Airflow user may not {what} of DAG {dag_id!r} at {self.base} "
                               f"(403: {_detail(response)})")
        if response.status_code == 404:
            raise TriggerError(f"not found at {self.base} (404) during {what}: {_detail(response)} "
                               f"(is DAG {dag_id!r} deployed and parsed without import errors?)")
        if response.status_code == 409:
            return 409, {}
        if response.status_code in _TRANSIENT_STATUS or _database_busy(response):
            raise TransientError(f"{what} at {self.base} failed ({response.status_code}): {_detail(response)}")
        return response.status_code, self._json(response, what)

    def call_retrying(self, method: str, path: str, what: str, dag_id: str,
                      **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """`call`, asked again after `RETRY_DELAYS` while the answer is transient.

        Safe for every call made here: GET and the unpause PATCH are idempotent, and a repeated
        trigger POST with the same run id meets the first one's run (409, conf compared).
        """
        for delay in RETRY_DELAYS:
            try:
                return self.call(method, path, what, dag_id, **kwargs)
            except TransientError:
                time.sleep(delay)
        return self.call(method, path, what, dag_id, **kwargs)


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


def trigger(base_url: str, username: str, password: str, dag_id: str, conf: dict[str, Any] | None = None,
            run_id: str | None = None, unpause: bool = True, wait: bool = False, timeout: float = 3600,
            poll: float = 5.0, say: Callable[[str], None] | None = None,
            unreachable_limit: float = 300.0, token: str | None = None) -> TriggerResult:
    """Trigger `dag_id` (or find the run that already has `run_id`) and optionally wait for its outcome.

    A run that already has `run_id` (409) is this request's run only when its conf equals `conf`
    (no conf = `{}`): then it is reported (and followed with `wait`), never started twice.

    Args:
        run_id: default `run_id_for()` (from the commit).
        unpause: new DAGs start paused, and a paused DAG's run stays queued forever: unpause first.
        wait: poll the run (every `poll` seconds, backing off to 30 s) until it succeeds or fails.
        timeout: seconds to wait with `wait`.
        say: receives a line on each state change while waiting (e.g. `print`).
        unreachable_limit: while waiting, seconds of back-to-back unanswered polls (timeouts,
            refused connections, 502/503/504) before giving up; shorter outages are retried.
        token: a JWT to use instead of logging in with `username` and `password`.

    Raises:
        ConfConflict: a run with `run_id` exists with a different conf.
        TriggerError: wrong credentials or token, unknown DAG, unreachable server, or no outcome within `timeout`.
    """
    run_id = run_id or run_id_for()
    dag_path = f"/api/v2/dags/{quote(dag_id, safe='')}"
    run_path = f"{dag_path}/dagRuns/{quote(run_id, safe='')}"
    api = _Api(base_url, username, password, token=token)
    try:
        if unpause:
            _unpause(api, dag_path, dag_id)
        # `logical_date: null` is required by Airflow 3: the run is a manual run with no data interval.
        status, run = api.call_retrying("POST", f"{dag_path}/dagRuns", "trigger a run", dag_id,
                                        json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        created = status != 409
        if not created:  # this commit's run exists: report it rather than train twice, if it is this request's
            _, run = api.call_retrying("GET", run_path, "read the run", dag_id)
            _check_same_conf(run, conf or {}, dag_id, run_id)
        if wait:
            run = _wait(api, run_path, dag_id, run, timeout, poll, say, unreachable_limit)
        state = str(run.get("state"))
        failed = _failed_tasks(api, run_path, dag_id) if state == "failed" else []
        return TriggerResult(dag_id=dag_id, run_id=run_id, created=created, state=state, failed_tasks=failed,
                             url=f"{api.base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
                             note=run.get("note"))
    finally:
        api.close()


def _unpause(api: _Api, dag_path: str, dag_id: str) -> None:
    """Unpause the DAG when it is paused; an unpaused DAG gets no write (fewer writes, fewer lock waits)."""
    _, found = api.call_retrying("GET", dag_path, "unpause", dag_id)
    if found.get("is_paused", True):
        api.call_retrying("PATCH", dag_path, "unpause", dag_id, json={"is_paused": False})


def _check_same_conf(run: dict[str, Any], requested: dict[str, Any], dag_id: str, run_id: str) -> None:
    """The existing run was started with the requested conf, else ConfConflict naming the keys that differ.

    Values are compared as JSON (what Airflow stored); they are not printed, only the keys.
    """
    existing = run.get("conf") or {}
    wanted = json.loads(json.dumps(requested))
    if existing == wanted:
        return
    keys = sorted(str(k) for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
    raise ConfConflict(f"run {run_id!r} of DAG {dag_id!r} already exists and its conf differs from the requested "
                       f"one (keys that differ: {', '.join(keys)}); it was not started again. A run id names "
                       "one request: pass a new --run-id to start a run with this conf")


def _wait(api: _Api, run_path: str, dag_id: str, run: dict[str, Any], timeout: float, poll: float,
          say: Callable[[str], None] | None, unreachable_limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delay = max(poll, 0.1)
    seen = ""
    down_since: float | None = None
    while True:
        state = str(run.get("state"))
        if state != seen and say is not None:
            say(f"{dag_id} {run.get('dag_run_id')}: {state}")
        seen = state
        if state in FINISHED:
            return run
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TriggerError(f"run {run.get('dag_run_id')!r} of DAG {dag_id!r} is still {state!r} "
                               f"after {timeout:.0f} s; it keeps running in Airflow")
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, _MAX_POLL)
        try:
            _, run = api.call("GET", run_path, "read the run", dag_id)
            down_since = None
        except TransientError as exc:
            # A busy or restarting api-server must not fail an hour-long wait on one slow answer;
            # the run goes on in Airflow regardless. Only an outage that lasts gives up.
            down_since = down_since if down_since is not None else time.monotonic()
            if time.monotonic() - down_since >= unreachable_limit:
                raise TriggerError(f"{exc}; unreachable for {unreachable_limit:.0f} s while waiting for run "
                                   f"{run.get('dag_run_id')!r}, which keeps running in Airflow") from exc
            if say is not None:
                say(f"{dag_id} {run.get('dag_run_id')}: API not answering, retrying ({exc})")


def _failed_tasks(api: _Api, run_path: str, dag_id: str) -> list[str]:
    # Only `failed`: `upstream_failed` tasks did not fail, they never ran because one did.
    _, found = api.call("GET", f"{run_path}/taskInstances", "list the run's tasks", dag_id,
                        params={"state": "failed", "limit": 100})
    names = [str(ti["task_id"]) for ti in found.get("task_instances", []) if ti.get("state") == "failed"]
    return list(dict.fromkeys(names))  # a mapped task fails once per map index: name it once


def run_cli(dag_id: str, conf: str | None = None, run_id: str | None = None, wait: bool = False,
            timeout: float = 3600, url: str | None = None, username: str | None = None, unpause: bool = True,
            out: Callable[[str], None] = print, err: Callable[[str], None] | None = None) -> int:
    """The `autopilot trigger` command: trigger, print the outcome, return the exit code.

    The password comes only from `AIRFLOW_PASSWORD` (a flag would show in the process list); a
    token issued elsewhere may be given instead in `AIRFLOW_API_TOKEN`.

    Returns:
        0 when the run succeeded (or, without `wait`, was created or found with the same conf),
        1 when it failed (the failed tasks are printed), 2 on a TriggerError (bad credentials or
        token, unknown DAG, the run id taken by a run with another conf, ...).
    """
    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr)

    err = err or to_stderr
    try:
        parsed = json.loads(conf) if conf else None
        if parsed is not None and not isinstance(parsed, dict):
            raise TriggerError(f"--conf must be a JSON object, not {type(parsed).__name__}")
        token = os.environ.get("AIRFLOW_API_TOKEN") or None
        base, user, password = credentials_from_env(url, username, token=token)
        result = trigger(base, user, password, dag_id, conf=parsed, run_id=run_id, unpause=unpause, wait=wait,
                         timeout=timeout, say=out if wait else None, token=token)
    except json.JSONDecodeError as exc:
        err(f"autopilot trigger: --conf is not valid JSON: {exc}")
        return 2
    except TriggerError as exc:
        err(f"autopilot trigger: {exc}")
        return 2
    how = "started" if result.created else "already existed (same run id, same conf): not started again"
    out(f"{result.dag_id} run {result.run_id} {how}; state {result.state}; {result.url}")
    if result.state == "failed":
        out(f"failed tasks: {', '.join(result.failed_tasks) or '(none recorded)'}")
        if result.note:
            out(f"note: {result.note}")
        return 1
    return 0
