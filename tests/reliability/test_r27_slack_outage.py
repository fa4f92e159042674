"""Case 27: Slack answers 500, 429 (Retry-After) or times out; alerts are kept, then delivered exactly once.

Fault: a local Slack stand-in (the receiver of `tests/integration/test_slack_alerts.py`, which
counts what it accepts) behind `FaultProxy`, which answers 500, answers 429 with a Retry-After,
or hangs past the client's timeout, without passing the post on. The real notifier posts through
the real Slack provider hook to the proxy (`AIRFLOW_CONN_AUTOPILOT_SLACK`). Crashes are real:
a sender or drainer process is killed with SIGKILL at its crash point, after its claim and before
its post; two drainer processes are released at the same instant on one outbox (SQLite and
PostgreSQL). A real `airflow dags test` runs a small DAG wired with the notifiers, with Slack
down and with Slack up.

Invariant: the notifier retries with backoff within its budget (never before a Retry-After) and
returns normally; the undelivered message is kept in the alert outbox (payload, attempts, next
attempt, expiry); the DAG run's and its tasks' states are what they are with Slack up; after
recovery the receiver gets each message exactly once, whoever drains it (the next notifier call,
two racing drainers, the drainer after a killed one); a message past its expiry is never sent
and is logged as dropped, with its key.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters.state_db import engine
from autopilot.adapters.state_db.tables import ALERT_OUTBOX
from autopilot.alerts.ledger import counts
from autopilot.orchestration.notifier import outcome_notifier
from autopilot.orchestration.slack import drain_outbox
from tests.integration.test_slack_alerts import TOKEN_PATH, Receiver, context, slack_receiver
from tests.reliability.inject import PROJECT, FaultProxy, armed_env, kill9, run_child, wait_for_marker

pytestmark = pytest.mark.integration

# Short budgets, so a test waits seconds where production waits minutes.
FAST = {"backoff_seconds": 0.2, "total_seconds": 2.5, "attempt_seconds": 0.5, "retry_seconds": 1.0,
        "drain_seconds": 5.0}


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Receiver, FaultProxy]]:
    """The receiver behind a fault proxy; the webhook connection points at the proxy."""
    with slack_receiver() as receiver, FaultProxy(receiver.url.removesuffix(TOKEN_PATH)) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                                       "password": proxy.url + TOKEN_PATH}))
        yield receiver, proxy


def rows(settings: Any) -> list[dict[str, Any]]:
    """The outbox, oldest first."""
    from sqlalchemy import select

    with engine(settings).connect() as conn:
        return [dict(r) for r in conn.execute(select(ALERT_OUTBOX).order_by(ALERT_OUTBOX.c.id)).mappings()]


def texts(receiver: Receiver) -> list[str]:
    """The fallback text of every message the receiver accepted."""
    return [m["text"] for m in receiver.messages]


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- outages


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_outage_is_retried_kept_and_delivered_once(fault: str, slack: tuple[Receiver, FaultProxy],
                                                   settings: Any) -> None:
    receiver, proxy = slack
    if fault == "500":
        proxy.set("status", status=500)
    else:  # the post never gets an answer within the client's timeout, and never reaches Slack
        proxy.set("hang", hang_seconds=5.0)
    notifier = outcome_notifier("generic", settings=settings, **FAST)
    started = time.monotonic()
    notifier(context("etl", "load", {}, run_id="r1", reason="task_failure"))  # returns: never raises
    elapsed = time.monotonic() - started
    tried = proxy.count("status") + proxy.count("hang")
    # Backoff 0.2 s doubling (±20%) within 2.5 s: 3 to 5 attempts, at least 1.0 s of waits between them.
    assert 3 <= tried <= 5 and elapsed >= 1.0, (tried, elapsed)
    assert elapsed < 8.0  # the budget (2.5 s) bounds a hanging Slack too; generous for a loaded machine
    assert receiver.messages == []
    [row] = rows(settings)
    assert (row["status"], row["attempts"], row["dag_id"], row["run_id"], row["outcome"]) == (
        "pending", 1, "etl", "r1", "failed")
    assert json.loads(row["payload"])["text"] == "etl failed at load"
    assert aware(row["next_attempt_at"]) > aware(row["created_at"])
    assert aware(row["expires_at"]) - aware(row["created_at"]) == timedelta(days=1)  # the config's default
    assert ("HTTP 500" if fault == "500" else "imeout") in row["error"]

    # Slack is back. Another outcome of another DAG drains the outbox once the retry delay passed.
    proxy.set("pass")
    time.sleep(1.1)
    outcome_notifier("generic", settings=settings, **FAST)(context("other_dag", "t", {}, run_id="r2",
                                                                   reason="success"))
    assert sorted(texts(receiver)) == ["etl failed at load", "other_dag succeeded"]
    # Every later path finds it delivered: the same outcome's callback again, a drain, the monitoring DAG's task.
    notifier(context("etl", "load", {}, run_id="r1", reason="task_failure"))
    assert drain_outbox(settings, now=datetime.now(UTC) + timedelta(hours=2)) == {
        "sent": 0, "failed": 0, "rejected": 0, "skipped": 0, "expired": 0}
    assert sorted(texts(receiver)) == ["etl failed at load", "other_dag succeeded"]
    assert [(r["run_id"], r["status"], r["attempts"]) for r in rows(settings)] == [("r1", "sent", 2),
                                                                                   ("r2", "sent", 1)]


def test_429_retry_after_is_honoured(slack: tuple[Receiver, FaultProxy], settings: Any) -> None:
    receiver, proxy = slack
    # Within the budget: the next attempt waits for the Retry-After, not the (shorter) backoff.
    proxy.set("status", status=429, headers={"Retry-After": "1.5"}, remaining=2)
    started = time.monotonic()
    outcome_notifier("generic", settings=settings, **{**FAST, "total_seconds": 6.0})(
        context("etl", "load", {}, run_id="r1", reason="success"))
    assert proxy.count("status") == 2 and texts(receiver) == ["etl succeeded"]
    assert time.monotonic() - started >= 3.0  # two waits of 1.5 s, where backoff alone would wait 0.6 s

    # Past the budget: one attempt, and the outbox does not try before Slack said.
    proxy.set("status", status=429, headers={"Retry-After": "30"})
    before = datetime.now(UTC)
    outcome_notifier("generic", settings=settings, **FAST)(context("etl", "load", {}, run_id="r2", reason="success"))
    assert proxy.count("status") == 3
    row = rows(settings)[-1]
    assert row["status"] == "pending" and aware(row["next_attempt_at"]) >= before + timedelta(seconds=30)
    proxy.set("pass")
    assert drain_outbox(settings)["sent"] == 0  # Slack asked for 30 s: not yet
    assert drain_outbox(settings, now=datetime.now(UTC) + timedelta(seconds=25))["sent"] == 0
    assert proxy.count("pass") == 1  # only the first message's delivery got through
    assert drain_outbox(settings, now=datetime.now(UTC) + timedelta(seconds=31))["sent"] == 1
    assert texts(receiver) == ["etl succeeded", "etl succeeded"] and len(receiver.requests) == 2
    assert [r["status"] for r in rows(settings)] == ["sent", "sent"]


def test_expired_message_is_dropped_and_logged(slack: tuple[Receiver, FaultProxy], settings: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    receiver, proxy = slack
    proxy.set("status", status=503)
    started = time.monotonic()
    outcome_notifier("generic", settings=settings, expiry_seconds=8.0, **FAST)(  # the call itself takes ~2.5 s
        context("etl", "load", {}, run_id="r1", reason="task_failure"))
    assert counts(settings) == {"pending": 1}
    proxy.set("pass")
    time.sleep(max(0.0, 8.2 - (time.monotonic() - started)))
    caplog.set_level(logging.WARNING)
    assert drain_outbox(settings)["expired"] == 1
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "etl/r1/failed" in dropped[0] and "HTTP 503" in dropped[0], dropped
    assert drain_outbox(settings) == {"sent": 0, "failed": 0, "rejected": 0, "skipped": 0, "expired": 0}
    assert receiver.messages == [] and counts(settings) == {"expired": 1}


# ---------------------------------------------------------------------------- the DAG's outcome


DAG_FILE = '''
"""Airflow DAG for case 27: a task that fails, wired with autopilot's notifiers (dag)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from autopilot.orchestration.notifier import outcome_notifier, task_failure_notifier

FAST = {fast}


@dag(dag_id="r27_outcome", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     default_args={{"retries": 0, "on_failure_callback": task_failure_notifier("generic", **FAST)}},
     on_success_callback=outcome_notifier("generic", outcome="success", **FAST),
     on_failure_callback=outcome_notifier("generic", outcome="failed", **FAST))
def r27_outcome():
    @task
    def extract() -> int:
        return 1

    @task
    def load(value: int) -> None:
        raise RuntimeError("the load failed on its own")

    @task
    def report() -> str:
        return "done"

    load(extract()) >> report()


r27_outcome()
'''


def dags_test(folder: Path, home: Path, log: Path) -> dict[str, str]:
    """`airflow dags test r27_outcome` in a fresh Airflow home; the run's and each task's state."""
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": str(Path(sys.executable).parent) + os.pathsep
           + os.environ["PATH"], "PYTHONPATH": f"{PROJECT / 'src'}{os.pathsep}{PROJECT}"}
    airflow = str(Path(sys.executable).parent / "airflow")
    with log.open("ab") as out:
        if not (home / "airflow.db").exists():
            subprocess.run([airflow, "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=300)
        subprocess.run([airflow, "dags", "test", "r27_outcome"], env=env, stdout=out, stderr=subprocess.STDOUT,
                       timeout=300, check=False)
    with sqlite3.connect(home / "airflow.db") as conn:
        [(run_id, state)] = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'r27_outcome' "
                                         "ORDER BY id DESC LIMIT 1").fetchall()
        tasks = dict(conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id = 'r27_outcome' "
                                  "AND run_id = ?", (run_id,)).fetchall())
    return {"run": state, **tasks, "run_id": run_id}


def test_the_dag_outcome_does_not_depend_on_slack(slack: tuple[Receiver, FaultProxy], settings: Any,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, proxy = slack
    monkeypatch.setenv("AUTOPILOT_STATE_DB", settings.state_db)
    folder = tmp_path / "dags"
    folder.mkdir()
    fast = {**FAST, "retry_seconds": 0.0}
    (folder / "r27_outcome.py").write_text(DAG_FILE.format(fast=repr(fast)))
    log = tmp_path / "dags-test.log"

    proxy.set("status", status=500)  # Slack down for the whole run
    down = dags_test(folder, tmp_path / "airflow", log)
    assert receiver.messages == [] and proxy.count("status") >= 2, log.read_text()[-3000:]
    held = rows(settings)
    assert [(r["run_id"], r["outcome"], r["status"]) for r in held] == [(down["run_id"], "failed", "pending")]

    proxy.set("pass")  # Slack up: the same DAG, another run
    up = dags_test(folder, tmp_path / "airflow", log)
    states = {k: v for k, v in down.items() if k != "run_id"}
    assert states == {k: v for k, v in up.items() if k != "run_id"}, log.read_text()[-3000:]
    assert states == {"run": "failed", "extract": "success", "load": "failed", "report": "upstream_failed"}
    # The second run's notifier delivered its own message and drained the first run's: once each.
    assert texts(receiver) == ["r27_outcome failed at load: RuntimeError: the load failed on its own"] * 2
    assert {r["run_id"]: r["status"] for r in rows(settings)} == {down["run_id"]: "sent", up["run_id"]: "sent"}


# ---------------------------------------------------------------------------- concurrency and crashes


N_RACE = 40  # messages both drainers go for at once: every claim is contested
DRAINER = '''
import os, sys, time
from pathlib import Path
from autopilot.orchestration.slack import drain_outbox
from autopilot.settings import Settings

go = Path(sys.argv[1])
Path(sys.argv[2]).touch()  # imported and ready
while not go.exists():  # released together with the other drainer
    time.sleep(0.005)
print(drain_outbox(Settings.from_env(), budget_seconds=60, limit=100, lease_seconds=60), flush=True)
'''


def drainer(settings: Any, go: Path, ready: Path, log: Path) -> subprocess.Popen[bytes]:
    """A drainer process that says it is `ready`, waits for `go` to exist, then drains the outbox of `settings`."""
    env = {**os.environ, "AUTOPILOT_STATE_DB": settings.state_db, "AUTOPILOT_HOME": str(settings.home),
           "PYTHONPATH": f"{PROJECT / 'src'}{os.pathsep}{PROJECT}"}
    return subprocess.Popen([sys.executable, "-c", DRAINER, str(go), str(ready)], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=str(PROJECT))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_drainers_deliver_each_message_once(database: str, slack: tuple[Receiver, FaultProxy], settings: Any,
                                                 request: pytest.FixtureRequest, tmp_path: Path) -> None:
    receiver, proxy = slack
    if database == "postgresql":
        settings = replace(settings, state_db=request.getfixturevalue("postgres_db"))
    proxy.set("status", status=500)
    for index in range(N_RACE):  # outcomes of as many runs, all kept while Slack is down
        outcome_notifier("generic", settings=settings, **{**FAST, "max_attempts": 1, "retry_seconds": 0.0})(
            context("etl", "load", {}, run_id=f"run-{index}", reason="success"))
    assert counts(settings) == {"pending": N_RACE}
    proxy.set("pass")
    go = tmp_path / "go"
    procs = [drainer(settings, go, tmp_path / f"ready-{k}", tmp_path / f"drainer-{k}.log") for k in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{k}").exists() for k in range(2)):  # both imported, waiting at the line
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a drainer did not start"
        time.sleep(0.05)
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    outputs = [(tmp_path / f"drainer-{k}.log").read_text() for k in range(2)]
    # exactly once: ten posts, one per run, whatever each drainer got
    assert len(receiver.requests) == N_RACE, outputs
    assert texts(receiver) == ["etl succeeded"] * N_RACE
    assert {r["run_id"] for r in rows(settings)} == {f"run-{index}" for index in range(N_RACE)}
    assert counts(settings) == {"sent": N_RACE}
    summaries = [ast.literal_eval(out.strip().splitlines()[-1]) for out in outputs]
    assert sum(s["sent"] for s in summaries) == N_RACE, outputs
    assert all(s["sent"] >= 1 for s in summaries), f"no race: one drainer sent everything {summaries}"


def _child_notifier(lease: float) -> str:
    return textwrap.dedent(f'''
        from autopilot.orchestration.notifier import outcome_notifier
        from autopilot.settings import Settings
        from tests.integration.test_slack_alerts import context

        settings = Settings.from_env()
        notifier = outcome_notifier("generic", settings=settings, lease_seconds={lease}, total_seconds=2.5,
                                    attempt_seconds=0.5, backoff_seconds=0.2)
        notifier(context("etl", "load", {{}}, run_id="killed", reason="success"))
        print("sent", flush=True)
    ''')


@pytest.mark.parametrize("point", ["alerts.send.claimed", "alerts.drain.claimed"])
def test_sender_killed_after_its_claim(point: str, slack: tuple[Receiver, FaultProxy], settings: Any,
                                       fault_dir: Path, tmp_path: Path) -> None:
    receiver, proxy = slack
    env = armed_env(fault_dir, point, AUTOPILOT_STATE_DB=settings.state_db, AUTOPILOT_HOME=str(settings.home))
    log = tmp_path / "child.log"
    if point == "alerts.send.claimed":  # the notifier itself: claimed its new message, then killed
        child = run_child(_child_notifier(lease=3.0), env, log)
    else:  # a drainer: claimed a kept message, then killed
        proxy.set("status", status=500)
        outcome_notifier("generic", settings=settings, **{**FAST, "max_attempts": 1, "retry_seconds": 0.0})(
            context("etl", "load", {}, run_id="killed", reason="success"))
        proxy.set("pass")
        child = run_child("from autopilot.orchestration.slack import drain_outbox\n"
                          "from autopilot.settings import Settings\n"
                          "drain_outbox(Settings.from_env(), lease_seconds=3.0)\n", env, log)
    pid = wait_for_marker(fault_dir, point, child, log=log)
    kill9(pid)
    child.wait(timeout=30)
    assert receiver.messages == []
    [row] = rows(settings)
    assert row["status"] == "sending" and json.loads(row["payload"])["text"] == "etl succeeded"
    # Within the lease the claim may still be alive: nobody else sends it.
    assert drain_outbox(settings)["sent"] == 0 and receiver.requests == []
    time.sleep(max(0.0, (aware(row["lease_until"]) - datetime.now(UTC)).total_seconds()) + 0.2)
    # After the lease: the next drainer (here the monitoring DAG's task would be one) sends it, once.
    assert drain_outbox(settings)["sent"] == 1
    assert drain_outbox(settings, now=datetime.now(UTC) + timedelta(hours=1))["sent"] == 0
    assert texts(receiver) == ["etl succeeded"]
    assert [(r["status"], r["attempts"]) for r in rows(settings)] == [
        ("sent", 2 if point == "alerts.send.claimed" else 3)]


def test_claims_do_not_block_others(slack: tuple[Receiver, FaultProxy], settings: Any) -> None:
    """A message held by a live claim does not hold up the others behind it."""
    from autopilot.alerts.ledger import Key, claim_new

    receiver, _ = slack
    claim_new(settings, Key("etl", "held", "success"), kind="generic", conn_id="autopilot_slack",
              payload={"text": "held"}, task_id=None, token="alive", lease_seconds=300, expiry_seconds=3600)
    outcome_notifier("generic", settings=settings, **FAST)(context("etl", "load", {}, run_id="free", reason="success"))
    assert texts(receiver) == ["etl succeeded"]
    assert {r["run_id"]: r["status"] for r in rows(settings)} == {"held": "sending", "free": "sent"}

