"""Trigger a DAG run through Airflow's REST API, for CI: `autopilot trigger <dag_id> [--wait]`.

Through `autopilot.adapters.airflow_api` (plain HTTP, no Airflow import): a CI job needs only
the API's URL and a user (or a token), not an Airflow installation that matches the server's.
The run id derives from the commit, so a CI job that is re-run for the same commit finds the
run it already started (409) and reports that run instead of training twice, provided it asks
for the same conf: a run id names one request, and the same id with a different conf is refused
(`ConfConflict`) rather than silently reported as the other request's run."""

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

from autopilot.adapters.airflow_api import AirflowApi, AirflowApiError, TransientError

__all__ = ["ConfConflict", "TriggerError", "TriggerResult", "credentials_from_env", "run_cli", "run_id_for",
           "trigger"]

FINISHED = ("success", "failed")
# Airflow's default `[scheduler] allowed_run_id_pattern` is ^[A-Za-z0-9_.~:+-]+$.
_NOT_IN_RUN_ID = re.compile(r"[^A-Za-z0-9_.~:+-]")
_MAX_POLL = 30.0  # backoff ceiling: a long training run is not polled every few seconds for an hour

# Triggering or following a DAG run failed; the message names the problem (never a secret). The
# command's own errors (missing credentials, a conf conflict, a wait that ran out) and the API
# client's (a refused login, an unknown DAG, an unreachable server: `TransientError`) are one family.
TriggerError = AirflowApiError


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
    api = AirflowApi(base_url, username, password, token=token)
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


def _unpause(api: AirflowApi, dag_path: str, dag_id: str) -> None:
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


def _wait(api: AirflowApi, run_path: str, dag_id: str, run: dict[str, Any], timeout: float, poll: float,
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


def _failed_tasks(api: AirflowApi, run_path: str, dag_id: str) -> list[str]:
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
