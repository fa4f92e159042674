"""The Slack notifier against a local webhook receiver: one message per outcome, retries, no leaks.

A threaded HTTP server on 127.0.0.1 stands in for Slack (`AIRFLOW_CONN_AUTOPILOT_SLACK` points
the real provider hook at it); the callback contexts are small stand-ins with the attributes the
notifier reads (`dag_run`, `ti` with `xcom_pull`, `exception`, `reason`), the state database is
SQLite under a temporary home.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

TOKEN_PATH = "/services/T000/B000/XXXX"
BASE = "http://airflow.example:8080"
TRAINING = "autopilot_training__adult_income"
MONITORING = "autopilot_monitoring__adult_income"
RUN = "manual__2026-01-01T00:00:00+00:00"


@dataclass
class Receiver:
    """Records what was POSTed; answers from `script` (a status, "sleep" to time out, "slow"), then 200.

    `messages` are the bodies it accepted (answered 200), `bodies` every body it was sent, whatever
    it answered, `requests` every path. `headers` are added to a non-200 answer (e.g. Retry-After).
    """

    url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)
    always: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> int | str:
        with self.lock:
            if self.always is not None:
                return self.always
            return self.script.pop(0) if self.script else 200


@contextlib.contextmanager
def slack_receiver(path: str = TOKEN_PATH) -> Iterator[Receiver]:
    """A local stand-in for Slack's Incoming Webhook on a free loopback port; its URL ends with `path`."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(self.path)
                state.bodies.append(body)
            answer = state.answer()
            if answer in ("sleep", "slow"):  # past the client's timeout, or just slow
                time.sleep(2.0 if answer == "sleep" else 0.5)
                answer = 200
            status = int(answer)
            if status == 200:  # recorded before answering, as Slack posts before it answers
                with state.lock:
                    state.messages.append(json.loads(body))
            reply = b"ok" if status == 200 else b"internal_error"
            try:
                self.send_response(status)
                for key, value in ({} if status == 200 else state.headers).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with slack_receiver() as state:
        # The provider takes a full URL from `password` (anything with "://"); host is then ignored.
        monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                                       "password": state.url}))
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
        monkeypatch.delenv("AUTOPILOT_MLFLOW_UI_URL", raising=False)
        yield state


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    note: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskInstance:
    """The part of Airflow's RuntimeTaskInstance the notifier uses."""

    dag_id: str
    run_id: str
    task_id: str
    xcoms: dict[str, Any]
    try_number: int = 1

    def xcom_pull(self, task_ids: str | None = None, **kwargs: Any) -> Any:
        return self.xcoms.get(str(task_ids))


def context(dag_id: str, task_id: str, xcoms: dict[str, Any], *, reason: str | None = None,
            exception: BaseException | None = None, run_id: str = RUN, note: str | None = None,
            try_number: int = 1) -> dict[str, Any]:
    """A callback context: DAG-level ones carry `reason`, task-level failures carry `exception`."""
    found: dict[str, Any] = {
        "dag_run": DagRun(dag_id, run_id, note=note), "run_id": run_id,
        "ti": TaskInstance(dag_id, run_id, task_id, xcoms, try_number=try_number)}
    found["task_instance"] = found["ti"]
    if reason is not None:
        found["reason"] = reason
    if exception is not None:
        found["exception"] = exception
    return found


GATES = {
    "quality": {"name": "quality", "passed": True, "reasons": [], "requires_review": False, "champion_version": 6},
    "explainability_and_fairness": {
        "explainability": {"name": "explainability", "passed": True, "reasons": [], "requires_review": False},
        "fairness": {"name": "fairness", "passed": True, "reasons": [], "requires_review": False}},
    "infra": {"name": "infra", "passed": True, "reasons": [], "requires_review": False},
}
REGISTERED = {"name": "adult_income", "version": 7, "run_id": "0123abcd", "model_uri": "models:/adult_income/7",
              "source": "x", "metrics": {"roc_auc": 0.927}}
PROMOTED_XCOMS = {
    "train_and_register": REGISTERED, **GATES,
    "decide": {"decision": "promote", "reasons": [], "version": 7, "champion_version": 6},
    "promote": {"promoted": True, "decision": "promote", "version": 7, "from": 6, "retired": []},
    "deploy": {"skipped": False, "target": "local", "version": 7, "endpoint": "http://127.0.0.1:8000",
               "action": "follows the champion alias"},
    "rollout": {"skipped": False, "passed": True, "version": 7, "metrics": {}},
}


@pytest.fixture
def make_notifier(settings: Any) -> Callable[..., Any]:
    from autopilot.orchestration.notifier import outcome_notifier

    def make(kind: str, **options: Any) -> Any:
        # retry_seconds=0: a message kept in the outbox is due again at once (production waits a minute)
        defaults: dict[str, Any] = {"settings": settings, "backoff_seconds": 0.05, "total_seconds": 5.0,
                                        "attempt_seconds": 2.0, "retry_seconds": 0.0}
        return outcome_notifier(kind, **{**defaults, **options})

    return make


def body(message: dict[str, Any]) -> str:
    parts = [message["text"]]
    for block in message["blocks"]:
        parts += [block["text"]["text"]] if "text" in block else []
        parts += [e["text"] for e in block.get("elements", []) + block.get("fields", [])]
    return "\n".join(parts)


def ledger(settings: Any) -> list[dict[str, Any]]:
    """The alert outbox's rows, oldest first."""
    from sqlalchemy import select

    from autopilot.adapters.state_db import engine
    from autopilot.adapters.state_db.tables import ALERT_OUTBOX

    with engine(settings).connect() as conn:
        return [dict(row) for row in conn.execute(select(ALERT_OUTBOX).order_by(ALERT_OUTBOX.c.id)).mappings()]


def assert_no_url(text: str, receiver: Receiver) -> None:
    assert receiver.url not in text
    assert TOKEN_PATH not in text and "XXXX" not in text


def test_training_promoted_once_across_retries(receiver: Receiver, make_notifier: Callable[..., Any],
                                               settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = make_notifier("training")
    ctx = context(TRAINING, "rollout", PROMOTED_XCOMS, reason="success")
    notifier(ctx)  # Airflow's entry point (BaseNotifier.__call__)
    notifier.notify(ctx)  # the same outcome again: a rerun, or the task-level and DAG-level callbacks
    make_notifier("training", outcome="success")(ctx)
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert set(message) == {"text", "blocks"} and message["blocks"][0]["type"] == "header"
    assert message["text"] == "adult_income v7: promoted to champion"
    text = body(message)
    assert "Gates (4/4 passed)" in text and "champion v6" in text
    assert "Deployed v7 to local (http://127.0.0.1:8000): follows the champion alias" in text
    assert "Rollout passed smoke test and bake" in text
    assert f"<{BASE}/dags/{TRAINING}/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00|Airflow run>" in text
    assert "<http://mlflow.example:5000/#/runs/0123abcd|MLflow run>" in text
    assert [(r["outcome"], r["status"], r["attempts"]) for r in ledger(settings)] == [("success", "sent", 1)]
    assert_no_url(caplog.text, receiver)


def test_reject_then_dag_level_failure_sends_one(receiver: Receiver, make_notifier: Callable[..., Any]) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    xcoms = {**PROMOTED_XCOMS, "infra": {"name": "infra", "passed": False, "reasons": ["p95 latency 80 ms > 50 ms"]}}
    for task in ("decide", "promote", "deploy", "rollout"):
        xcoms.pop(task)
    error = AirflowFailException("decision gate FAILED: infra: p95 latency 80 ms > 50 ms; missing fairness report")
    # the task-level callback of `decide` first (it has the exception), then the DAG-level one
    make_notifier("training", outcome="failed")(context(TRAINING, "decide", xcoms, exception=error))
    make_notifier("training")(context(TRAINING, "decide", xcoms, reason="task_failure"))
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert message["blocks"][0]["text"]["text"] == ":no_entry: adult_income v7 rejected"
    text = body(message)
    assert "• infra: p95 latency 80 ms &gt; 50 ms\n• missing fairness report" in text
    assert ":x: *infra* FAILED" in text and "Gates (3/4 passed)" in text


def test_failure_names_task_and_links_its_log(receiver: Receiver, make_notifier: Callable[..., Any],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    xcoms = {"train_and_register": None}
    # an error message that happens to carry the webhook URL must not carry it to Slack
    error = RuntimeError(f"optuna storage unreachable; webhook {receiver.url} postgresql://u:hunter2@db/x")
    make_notifier("training")(context(TRAINING, "tune", xcoms, exception=error, try_number=3))
    make_notifier("training")(context(TRAINING, "tune", xcoms, reason="task_failure"))  # DAG level: deduplicated
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert message["blocks"][0]["text"]["text"] == ":x: adult_income training failed at tune"
    text = body(message)
    assert "*Failed task:* `tune` (try 3)" in text
    assert "RuntimeError: optuna storage unreachable" in text
    assert f"<{BASE}/dags/{TRAINING}/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/tune|Task log>" in text
    raw = json.dumps(message)
    assert_no_url(raw, receiver)
    assert "hunter2" not in raw
    assert_no_url(caplog.text, receiver)


def test_dag_level_failure_uses_the_run_note(receiver: Receiver, make_notifier: Callable[..., Any]) -> None:
    note = "Stopped by a gate: validation gate FAILED: 12% of rows miss `age`"
    make_notifier("training")(context(TRAINING, "validate", {}, reason="task_failure", note=note))
    text = body(receiver.messages[0])
    assert "failed at validate" in text and "12% of rows miss `age`" in text.replace("'", "`")


def test_monitoring_retrain_with_report(receiver: Receiver, make_notifier: Callable[..., Any],
                                        tmp_path: Path) -> None:
    report = tmp_path / "window.json"
    report.write_text(json.dumps({
        "drift": {"rows": 900, "sufficient": True, "severity": "retrain", "weighted_share": 0.5,
                  "columns": [{"column": "age", "method": "wasserstein", "effect": 0.3, "threshold": 0.1,
                               "drifted": True, "importance": 0.4}]},
        "performance": {"realized": None, "estimated": {"roc_auc": {"value": 0.85, "low": 0.83, "high": 0.87}},
                        "reference_metric": 0.927}}))
    xcoms = {"monitor": {"action": "retrain", "strategy": "refit", "reasons": ["age drifted (0.30 >= 0.10)"],
                         "rows": 900, "version": 7, "window_start": "2026-01-01T00:00:00+00:00",
                         "window_end": "2026-01-01T01:00:00+00:00", "trigger_run_id": "retrain__w1",
                         "report_uri": str(report), "html_uri": None, "blocked_by": None}}
    notifier = make_notifier("monitoring")
    notifier(context(MONITORING, "trigger_retraining", xcoms, reason="success"))
    notifier(context(MONITORING, "trigger_retraining", xcoms, reason="success"))
    assert len(receiver.messages) == 1
    text = body(receiver.messages[0])
    assert "retraining (refit)" in text
    assert "`age` wasserstein: effect 0.3 ≥ threshold 0.1 · importance 0.4" in text
    assert "Estimated (label-free): roc_auc 0.85 [0.83, 0.87]" in text
    assert f"<{BASE}/dags/{TRAINING}/runs/retrain__w1|Retraining run>" in text


def test_monitoring_healthy(receiver: Receiver, make_notifier: Callable[..., Any], settings: Any,
                            tmp_path: Path) -> None:
    xcoms = {"monitor": {"action": "none", "strategy": None, "reasons": ["no drift"], "rows": 10, "version": 7,
                         "report_uri": "/nonexistent/window.json"}}
    config = tmp_path / "adult_income.yaml"
    config.write_text("name: adult_income\nalerts:\n  skip_healthy: true\n")
    make_notifier("monitoring", config_path=config)(context(MONITORING, "healthy", xcoms, reason="success"))
    assert receiver.messages == [] and receiver.requests == []
    assert [r["status"] for r in ledger(settings)] == ["skipped"]
    make_notifier("monitoring")(context(MONITORING, "healthy", xcoms, run_id="scheduled__2", reason="success"))
    assert len(receiver.messages) == 1 and receiver.messages[0]["text"] == "adult_income: healthy"


def test_retries_5xx_then_delivers(receiver: Receiver, make_notifier: Callable[..., Any], settings: Any) -> None:
    receiver.script = [500, 503]
    started = time.monotonic()
    make_notifier("generic")(context("some_dag", "load", {}, reason="success"))
    assert len(receiver.requests) == 3 and len(receiver.messages) == 1
    assert time.monotonic() - started < 3
    assert [(r["status"], r["error"]) for r in ledger(settings)] == [("sent", None)]


def test_slack_down_never_raises_nor_leaks(receiver: Receiver, make_notifier: Callable[..., Any], settings: Any,
                                           caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.always = 500
    notifier = make_notifier("generic", total_seconds=1.0)
    started = time.monotonic()
    notifier(context("some_dag", "load", {}, reason="task_failure"))  # returns normally
    assert time.monotonic() - started < 2.5
    assert receiver.messages == [] and len(receiver.requests) >= 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not delivered" in r.getMessage() and "HTTP 500" in r.getMessage() for r in warnings)
    assert [(r["status"], r["error"][:8]) for r in ledger(settings)] == [("pending", "HTTP 500")]
    assert any("kept in the alert outbox" in r.getMessage() for r in warnings)
    # Slack is back: the next callback for the same outcome drains the outbox, which delivers it once
    receiver.always = None
    notifier(context("some_dag", "load", {}, reason="task_failure"))
    assert len(receiver.messages) == 1
    assert [(r["status"], r["attempts"]) for r in ledger(settings)] == [("sent", 2)]
    notifier(context("some_dag", "load", {}, reason="task_failure"))
    assert len(receiver.messages) == 1
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert_no_url(text, receiver)


def test_timeouts_are_bounded(receiver: Receiver, make_notifier: Callable[..., Any],
                              caplog: pytest.LogCaptureFixture) -> None:
    receiver.script = ["sleep"] * 10
    notifier = make_notifier("generic", total_seconds=1.0, attempt_seconds=0.3)
    started = time.monotonic()
    notifier(context("some_dag", "load", {}, reason="success"))
    assert time.monotonic() - started < 2.0
    assert any("not delivered" in r.getMessage() and "imeout" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert_no_url(caplog.text, receiver)


def test_client_errors_are_not_retried(receiver: Receiver, make_notifier: Callable[..., Any]) -> None:
    receiver.always = 404  # Slack's `no_service`: the webhook was revoked; retrying cannot help
    make_notifier("generic")(context("some_dag", "load", {}, reason="success"))
    assert len(receiver.requests) == 1


def test_missing_connection_or_ledger_never_raises(receiver: Receiver, make_notifier: Callable[..., Any],
                                                   monkeypatch: pytest.MonkeyPatch, settings: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    make_notifier("generic", slack_conn_id="not_configured")(context("some_dag", "load", {}, reason="success"))
    assert receiver.requests == []
    assert any("connection 'not_configured' is not defined: Slack alerts are off" in r.getMessage()
               for r in caplog.records)
    assert [(r["status"], r["error"][:36]) for r in ledger(settings)] == [
        ("skipped", "connection 'not_configured' is not d")]  # alerts off: nothing piles up in the outbox
    # the state database is unusable: the alert goes out anyway, without deduplication
    broken = replace(settings, state_db="sqlite:////proc/autopilot-nowhere/state.db")
    make_notifier("generic", settings=broken)(context("other_dag", "load", {}, reason="success"))
    assert len(receiver.messages) == 1
    assert any("outbox unavailable" in r.getMessage() for r in caplog.records)


def test_config_names_the_connection(receiver: Receiver, make_notifier: Callable[..., Any], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TEAM_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                              "password": receiver.url.replace("XXXX", "TEAM")}))
    config = tmp_path / "m.yaml"
    config.write_text("name: m\nalerts:\n  slack_conn_id: team_slack\n")
    make_notifier("generic", config_path=config)(context("some_dag", "load", {}, reason="success"))
    assert receiver.requests == ["/services/T000/B000/TEAM"]


def test_concurrent_callbacks_send_one(receiver: Receiver, make_notifier: Callable[..., Any]) -> None:
    receiver.script = ["slow"]  # the first sender is slow: the others find its claim in flight
    notifiers = [make_notifier("generic") for _ in range(4)]
    threads = [threading.Thread(target=n, args=(context("some_dag", "t", {}, reason="success"),)) for n in notifiers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(receiver.requests) == 1 and len(receiver.messages) == 1


def test_abandoned_claim_is_taken_over(receiver: Receiver, make_notifier: Callable[..., Any], settings: Any) -> None:
    from autopilot.alerts.ledger import Key, claim_new

    claim = claim_new(settings, Key("some_dag", "t-run", "success"), kind="generic", conn_id="autopilot_slack",
                      payload={"text": "stored"}, task_id="t", token="crashed-sender", lease_seconds=1.0,
                      expiry_seconds=3600)
    assert claim.ours  # then it "crashed"
    make_notifier("generic")(context("some_dag", "t", {}, run_id="t-run", reason="success"))
    assert receiver.messages == []  # within the lease: maybe still sending
    time.sleep(1.2)
    make_notifier("generic")(context("some_dag", "t", {}, run_id="t-run", reason="success"))
    assert len(receiver.messages) == 1 and receiver.messages[0]["text"] == "some_dag succeeded"


def test_dag_processor_style_context(receiver: Receiver, make_notifier: Callable[..., Any]) -> None:
    class SerializedDag:  # what dag.test() hands DAG callbacks: no get_template_env (the notes' trap 7)
        dag_id = "some_dag"

    ctx = {"dag": SerializedDag(), "run_id": "r1", "reason": "success"}  # no last task: minimal context
    make_notifier("generic")(ctx)
    assert receiver.messages[0]["text"] == "some_dag succeeded"
