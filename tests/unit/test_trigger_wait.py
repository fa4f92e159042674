"""`autopilot trigger --wait` rides out a busy or restarting API server, and gives up on a lasting outage.

A local HTTP server plays Airflow's REST API (token, unpause, trigger, read the run) over real
sockets, so the client's transport and status handling run exactly as against Airflow.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from autopilot.adapters import airflow_api
from autopilot.adapters.airflow_api import AirflowApi, TransientError
from autopilot.trigger import TriggerError, trigger


class FakeAirflow:
    """Answers the run's GETs from a script: an int is that HTTP status, "stall" sleeps past the timeout.

    `busy` POSTs of a run are first answered as SQLite's lock makes the api-server answer them.
    """

    def __init__(self, script: list[Any], busy: int = 0, busy_detail: Any = None) -> None:
        self.script = list(script)
        self.gets = 0
        self.busy = busy
        self.posts = 0
        busy_detail = busy_detail or {"reason": "Database error", "statement": "hidden",
                                      "message": "Something went wrong"}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/auth/token":
                    self._answer(201, {"access_token": "t0k3n"})
                    return
                fake.posts += 1
                if fake.posts <= fake.busy:
                    self._answer(500, {"detail": busy_detail})
                else:
                    self._answer(200, {"dag_run_id": "r1", "state": "queued"})

            def do_PATCH(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(200, {"is_paused": False})

            def do_GET(self) -> None:
                if "/dagRuns/" not in self.path:  # the DAG, read before unpausing it
                    self._answer(200, {"dag_id": "d", "is_paused": True})
                    return
                fake.gets += 1
                step = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
                if step == "stall":
                    time.sleep(1.0)
                    step = 200
                if isinstance(step, int) and step != 200:
                    self._answer(step, {"detail": "upstream busy"})
                else:
                    self._answer(200, {"dag_run_id": "r1", "state": step if isinstance(step, str) else "running"})

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake() -> Iterator[Any]:
    made: list[FakeAirflow] = []

    def make(script: list[Any], **kwargs: Any) -> FakeAirflow:
        made.append(FakeAirflow(script, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.server.shutdown()


def test_wait_retries_502_503_504_and_reports_the_outcome(fake: Any) -> None:
    api = fake([503, 502, 504, "running", "success"])
    lines: list[str] = []
    result = trigger(api.url, "admin", "pw", "d", run_id="r1", wait=True, timeout=30, poll=0.05, say=lines.append)
    assert result.state == "success" and api.gets == 5
    assert sum("API not answering, retrying" in line for line in lines) == 3, lines
    assert lines[-1] == "d r1: success"


def test_a_lasting_outage_ends_the_wait_with_a_clear_error(fake: Any) -> None:
    api = fake([503])
    with pytest.raises(TriggerError, match=r"\(503\).*unreachable for 1 s while waiting for run 'r1'") as caught:
        trigger(api.url, "admin", "pw", "d", run_id="r1", wait=True, timeout=30, poll=0.05, unreachable_limit=1)
    assert not isinstance(caught.value, TransientError)  # final: the caller must not retry it as transient
    assert api.gets >= 2


def test_an_error_that_is_not_transient_still_fails_at_once(fake: Any) -> None:
    api = fake([500])
    with pytest.raises(TriggerError, match=r"read the run .* failed \(500\): upstream busy"):
        trigger(api.url, "admin", "pw", "d", run_id="r1", wait=True, timeout=30, poll=0.05)
    assert api.gets == 1


def test_a_timed_out_answer_is_transient() -> None:
    server = FakeAirflow(["stall"])
    try:
        api = AirflowApi(server.url, "admin", "pw", timeout=0.2)
        with pytest.raises(TransientError, match=f"cannot reach Airflow at {server.url}: ReadTimeout"):
            api.call("GET", "/api/v2/dags/d/dagRuns/r1", "read the run", "d")
        api.close()
    finally:
        server.server.shutdown()


def test_a_locked_sqlite_database_is_asked_again_before_the_run(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow on SQLite answers 500 "Database error" while another writer holds the lock: retried."""
    monkeypatch.setattr(airflow_api, "RETRY_DELAYS", (0.01, 0.01))
    api = fake(["success"], busy=2)
    result = trigger(api.url, "admin", "pw", "d", run_id="r1")
    assert result.created and api.posts == 3
    api = fake(["success"], busy=3)
    with pytest.raises(TransientError, match=r"trigger a run .* failed \(500\).*Database error"):
        trigger(api.url, "admin", "pw", "d", run_id="r1")
    assert api.posts == 3  # bounded: three attempts


def test_another_500_before_the_run_is_not_retried(fake: Any) -> None:
    api = fake(["success"], busy=1, busy_detail="Internal Server Error")
    with pytest.raises(TriggerError, match=r"trigger a run .* failed \(500\): Internal Server Error"):
        trigger(api.url, "admin", "pw", "d", run_id="r1")
    assert api.posts == 1
