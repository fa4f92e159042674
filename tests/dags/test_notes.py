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
