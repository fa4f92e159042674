from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from autopilot.adapters import airflow_api
from autopilot.orchestration.notes import set_run_note
from autopilot.task_ids import TaskId


def test_without_the_connection_the_note_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API", raising=False)
    assert set_run_note("dag", "run", "why") is False


def test_an_unreachable_api_does_not_raise(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "s3cr3t-pass"
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "admin", "password": secret}))
    monkeypatch.setattr(airflow_api, "RETRY_DELAYS", (0.0, 0.0))
    assert set_run_note("dag", "run", "why") is False
    assert "after 3 attempt(s): URLError" in caplog.text  # a refused connection is retried
    assert secret not in caplog.text  # the password never reaches the log


class FakeApi:
    """Answers /auth/token, then each PATCH with the next status of `statuses` (the last repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.patches: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self._answer(201, {"access_token": "t"})

            def do_PATCH(self) -> None:
                api.patches.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._answer(statuses[min(len(api.patches), len(statuses)) - 1], {})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(airflow_api, "RETRY_DELAYS", (0.0, 0.0))
    made: list[FakeApi] = []

    def make(statuses: list[int]) -> FakeApi:
        made.append(FakeApi(statuses))
        port = made[-1].server.server_address[1]
        monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API", json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "admin", "password": "pw"}))
        return made[-1]

    yield make
    for fake in made:
        fake.server.shutdown()


def test_a_busy_api_is_asked_again(api: Any) -> None:
    fake = api([500, 503, 200])  # SQLite's "database is locked" comes back as a 500
    assert set_run_note("dag", "run", "Stopped by a gate") is True
    assert fake.patches == [{"note": "Stopped by a gate"}] * 3


def test_a_refusal_is_not_retried(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    fake = api([403])
    assert set_run_note("dag", "run", "why") is False
    assert len(fake.patches) == 1 and "after 1 attempt(s): HTTP 403" in caplog.text


# ---------------------------------------------------------------------------- what the tasks write


class FakeTi:
    """XCom as the training tasks see it: each earlier task's return value by task id."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        assert key == "return_value"
        return self.values.get(task_ids)


class FakeRun:
    dag_id, run_id = "autopilot_training__m", "retrain__m__20261207T020000"
    conf = {"strategy": "refit", "reason": "drift: age", "window_start": "2026-12-07T01:00:00+00:00",
            "window_end": "2026-12-07T02:00:00+00:00"}


def decided(decision: str = "promote") -> dict[str, Any]:
    """A decision record as `decide` stores it (`autopilot.gates.decision.decision_record`)."""
    from autopilot.gates.decision import decision_record
    from autopilot.reports import GateReport

    quality = GateReport(name="quality", passed=decision == "promote", reasons=[] if decision == "promote" else [
        "roc_auc 0.7100 vs 0.9300 for champion v1 on the same 800 holdout rows: worse by 0.2200"], metrics={
        "roc_auc": 0.93}, thresholds={"metric": "roc_auc", "confidence": 0.95}, details={"baseline": {
            "metric": "roc_auc", "champion_version": 1, "metrics": {"roc_auc": 0.92}, "difference": 0.01,
            "ci": [0.001, 0.02], "status": "pass"}})
    others = [GateReport(name=name, passed=True) for name in ("explainability", "fairness", "infra")]
    return decision_record("m", 2, [quality, *others], run_id="r", data_snapshot="d", actor="a", dag_run="x",
                           baseline_version=1)


@pytest.fixture
def task_context(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A training task's context, the decision record `decide` stored (read from MLflow in a real run)."""
    from autopilot.orchestration import notes

    record = {"value": decided()}
    monkeypatch.setattr(notes, "_decision_record", lambda settings, registered: record["value"])
    values = {"train_and_register": {"name": "m", "version": 2, "run_id": "r"},
              "promote": {"promoted": True, "decision": "promote", "version": 2, "from": 1, "retired": []}}
    context = {"ti": FakeTi(values), "dag_run": FakeRun()}
    context["record"] = record
    return context


def test_decide_then_promote_then_rollout_update_the_note(api: Any, task_context: Any) -> None:
    from autopilot.orchestration.notes import write_stage_note, write_training_note

    fake = api([200])
    write_stage_note(TaskId.DECIDE, task_context, None, {"decision": "promote"})  # the promotion XCom is not read
    write_stage_note(TaskId.PROMOTE, task_context, None, task_context["ti"].values["promote"])
    write_stage_note(TaskId.ROLLOUT, task_context, None, {"version": 2, "metrics": {}})
    write_stage_note(TaskId.TUNE, task_context, None, {})  # a task that does not change the outcome writes nothing
    assert len(fake.patches) == 3
    notes = [patch["note"] for patch in fake.patches]
    assert [note.splitlines()[0] for note in notes] == [
        "v2 passed every gate: to be promoted over v1", "v2 promoted over v1: every gate passed",
        "v2 promoted over v1: every gate passed"]
    for note in notes:
        assert "quality: passed - roc_auc 0.9300 vs v1 0.9200 (diff +0.0100, 95% CI [+0.0010, +0.0200])" in note
        assert "Retrain asked by monitoring window 2026-12-07 01:00-02:00: drift: age" in note
    assert notes[-1].endswith("rollout: smoke test and bake passed on the live endpoint")
    assert write_training_note(task_context, None, pull=(TaskId.REVIEW, TaskId.PROMOTE), rollout={"passed": True})
    assert fake.patches[-1]["note"] == notes[-1]  # a retry writes the same note


def test_a_rejection_by_decide_keeps_the_gate_prefix_and_fails_the_task(api: Any, task_context: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.orchestration import factory
    from autopilot.orchestration.notes import failure_note_writer
    from autopilot.reports import GateFailure, GateReport

    fake = api([200])
    task_context["record"]["value"] = decided("reject")

    def reject() -> None:
        raise GateFailure(GateReport.failed("decision", ["quality: roc_auc 0.7100 vs 0.9300"]))

    with pytest.raises(AirflowFailException):
        factory._gate(reject, noted=failure_note_writer(TaskId.DECIDE, task_context, None))
    note = fake.patches[-1]["note"]
    assert note.startswith("Stopped by a gate: v2 rejected: quality failed\n\n"
                           "- quality: failed - roc_auc 0.7100 vs 0.9300")


def test_an_unreadable_record_falls_back_and_a_missing_one_writes_nothing(
        api: Any, task_context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.orchestration import notes

    fake = api([200])

    def unreachable(settings: Any, registered: Any) -> Any:
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr(notes, "_decision_record", unreachable)
    assert notes.write_training_note(task_context, None, fallback="Stopped by a gate: decision gate FAILED") is True
    assert fake.patches == [{"note": "Stopped by a gate: decision gate FAILED"}]
    assert notes.write_training_note(task_context, None) is False and len(fake.patches) == 1


def test_a_run_on_data_already_trained_on_says_so(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from autopilot.orchestration import factory
    from autopilot.pipeline import training

    fake = api([200])
    monkeypatch.setattr(factory, "get_current_context", lambda: {"dag_run": FakeRun()})
    monkeypatch.setattr(training, "trained_on", lambda cfg, settings, snapped: 2)
    cfg = type("Cfg", (), {"registered_model_name": "m"})()
    with pytest.raises(AirflowSkipException, match="version 2 of m was already trained on"):
        factory._skip_known_data(cfg, None, {})
    assert fake.patches == [{"note": "no new version: this data was already trained on (v2)"}]
