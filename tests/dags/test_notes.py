from __future__ import annotations

import json
import socket

import pytest

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
    assert set_run_note("dag", "run", "why") is False
    assert secret not in caplog.text  # the password never reaches the log
