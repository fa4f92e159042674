"""The REST calls `autopilot demo` and `autopilot up` make: read a DAG, unpause, trigger a run with a data
interval, read a run, read a task's XCom.

A local HTTP server plays Airflow's API over real sockets and records every request, so the
client's paths, bodies and status handling are checked as they go on the wire.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from autopilot.adapters.airflow_api import AirflowApi, AirflowApiError, TransientError

Answer = tuple[int, Any]


class Recorder:
    """Answers each (method, path without query) from `routes`; records (method, path with query, body)."""

    def __init__(self, routes: dict[tuple[str, str], Answer | Callable[[], Answer]]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                if self.path == "/auth/token":
                    status, answer = 201, {"access_token": "t0k3n"}
                else:
                    recorder.requests.append((self.command, self.path, body))
                    assert self.headers["Authorization"] == "Bearer t0k3n"
                    found = recorder.routes.get((self.command, self.path.split("?")[0]), (404, {"detail": "none"}))
                    status, answer = found() if callable(found) else found
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def airflow() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(routes: dict[tuple[str, str], Any]) -> Recorder:
        made.append(Recorder(routes))
        return made[-1]

    yield make
    for server in made:
        server.server.shutdown()


DAG = "/api/v2/dags/autopilot_monitoring__m"
START = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)


def test_a_run_over_a_data_interval_sends_the_interval_and_its_start_as_logical_date(airflow: Any) -> None:
    server = airflow({("POST", f"{DAG}/dagRuns"): (200, {"dag_run_id": "w1", "state": "queued"})})
    with AirflowApi(server.url, "admin", "pw") as api:
        created, run = api.trigger_run("autopilot_monitoring__m", "w1", conf={"a": 1}, data_interval=(START, END))
    assert created and run["state"] == "queued"
    assert server.requests == [("POST", f"{DAG}/dagRuns", {
        "dag_run_id": "w1", "conf": {"a": 1}, "logical_date": "2026-12-07T02:00:00+00:00",
        "data_interval_start": "2026-12-07T02:00:00+00:00", "data_interval_end": "2026-12-07T02:05:00+00:00"})]


def test_a_manual_run_says_logical_date_null_and_no_interval(airflow: Any) -> None:
    server = airflow({("POST", f"{DAG}/dagRuns"): (200, {"dag_run_id": "r1", "state": "queued"})})
    with AirflowApi(server.url, "admin", "pw") as api:
        api.trigger_run("autopilot_monitoring__m", "r1")
    assert server.requests[0][2] == {"dag_run_id": "r1", "logical_date": None, "conf": {}}


def test_an_interval_without_time_zone_or_backwards_is_refused_before_any_request(airflow: Any) -> None:
    server = airflow({})
    with AirflowApi(server.url, "admin", "pw") as api:
        for interval in ((START.replace(tzinfo=None), END), (END, START)):
            with pytest.raises(ValueError, match="time-zone-aware ends, start before end"):
                api.trigger_run("autopilot_monitoring__m", "w1", data_interval=interval)
    assert server.requests == []


def test_a_run_id_that_exists_is_read_and_returned_as_not_created(airflow: Any) -> None:
    server = airflow({("POST", f"{DAG}/dagRuns"): (409, {"detail": "exists"}),
                      ("GET", f"{DAG}/dagRuns/w1"): (200, {"dag_run_id": "w1", "state": "success"})})
    with AirflowApi(server.url, "admin", "pw") as api:
        created, run = api.trigger_run("autopilot_monitoring__m", "w1", data_interval=(START, END))
    assert not created and run["state"] == "success"


def test_a_409_for_a_taken_logical_date_is_an_error_naming_it(airflow: Any) -> None:
    server = airflow({("POST", f"{DAG}/dagRuns"): (409, {"detail": "unique constraint"})})
    with AirflowApi(server.url, "admin", "pw") as api, pytest.raises(AirflowApiError, match="logical date exists"):
        api.trigger_run("autopilot_monitoring__m", "w1", data_interval=(START, END))


def test_unpause_writes_only_when_paused(airflow: Any) -> None:
    paused = {"is_paused": True}
    server = airflow({("GET", DAG): lambda: (200, dict(paused)),
                      ("PATCH", DAG): lambda: (paused.update(is_paused=False), (200, {"is_paused": False}))[1]})
    with AirflowApi(server.url, "admin", "pw") as api:
        assert api.unpause("autopilot_monitoring__m") is True
        assert api.unpause("autopilot_monitoring__m") is False
    assert [(m, p, b) for m, p, b in server.requests if m == "PATCH"] == [("PATCH", DAG, {"is_paused": False})]
    assert len(server.requests) == 3  # GET, PATCH, GET


def test_a_dag_or_run_not_there_is_none_and_a_busy_answer_is_transient(airflow: Any) -> None:
    busy = (500, {"detail": {"reason": "Database error"}})
    server = airflow({("GET", f"{DAG}/dagRuns/busy"): busy, ("GET", DAG): (200, {"dag_id": "autopilot_monitoring__m"})})
    with AirflowApi(server.url, "admin", "pw") as api:
        assert api.dag("autopilot_training__m") is None
        assert api.dag("autopilot_monitoring__m") == {"dag_id": "autopilot_monitoring__m"}
        assert api.run("autopilot_monitoring__m", "gone") is None
        with pytest.raises(TransientError):
            api.run("autopilot_monitoring__m", "busy")


def test_xcom_reads_the_tasks_return_value_as_json(airflow: Any) -> None:
    result = {"action": "retrain", "reasons": ["age drifted"], "trigger_run_id": "retrain__m__x"}
    path = f"{DAG}/dagRuns/w%3A1/taskInstances/monitor/xcomEntries/return_value"
    stringly = f"{DAG}/dagRuns/w%3A1/taskInstances/stringly/xcomEntries/return_value"
    server = airflow({("GET", path): (200, {"key": "return_value", "value": result}),
                      ("GET", stringly): (200, {"value": json.dumps(result)})})
    with AirflowApi(server.url, "admin", "pw") as api:
        assert api.xcom("autopilot_monitoring__m", "w:1", "monitor") == result
        assert api.xcom("autopilot_monitoring__m", "w:1", "stringly") == result
        with pytest.raises(AirflowApiError, match=r"not found .*404"):
            api.xcom("autopilot_monitoring__m", "w:1", "skipped")
    assert server.requests[0][1] == path + "?map_index=-1"
