"""`make up` / `make down`: the embedded Airflow services and MLflow UI start, serve, and stop."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from tests.conftest import PROJECT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, data: dict[str, str] | None = None, token: str | None = None) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as response:
        return dict(json.loads(response.read()))


def test_up_serves_the_training_dag_and_down_stops_everything(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The services run `airflow` from PATH: make it this interpreter's.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"),
                                  "AUTOPILOT_CONFIG_DIR": str(PROJECT / "config" / "models")})
    embedded = Embedded(settings=settings, project=PROJECT, airflow_port=free_port(), mlflow_port=free_port())
    started = embedded.start()
    try:
        assert started == ["api-server", "scheduler", "dag-processor", "triggerer", "mlflow"]
        assert embedded.wait_healthy(timeout=180), (embedded.run_dir / "api-server.log").read_text()[-2000:]
        password = embedded.admin_password()
        assert password and password != "admin"
        base = f"http://127.0.0.1:{embedded.airflow_port}"
        token = str(request(f"{base}/auth/token", {"username": "admin", "password": password})["access_token"])
        deadline = time.monotonic() + 120
        dag: dict[str, object] = {}
        while time.monotonic() < deadline and not dag:  # the DAG processor parses the file first
            try:
                dag = request(f"{base}/api/v2/dags/autopilot_training__adult_income", token=token)
            except OSError:
                time.sleep(3)
        assert dag.get("dag_id") == "autopilot_training__adult_income", "the DAG never appeared in the API"
        assert "model:adult_income" in {t["name"] for t in dag["tags"]}  # type: ignore[union-attr]
        assert embedded.start() == []  # already running: nothing started twice
    finally:
        pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
        stopped = embedded.stop()
    assert sorted(stopped) == sorted(started)
    assert not any(_alive(pid) for pid in pids)
