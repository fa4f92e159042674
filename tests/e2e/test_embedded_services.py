"""`make up` / `make down`: the embedded services and MLflow UI start, serve, listen on loopback only, stop;
`up` unpauses every model's training and monitoring DAG and says so."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autopilot.cli.services import bring_up
from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from tests.helpers import PROJECT, adult_config_dict

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_sockets(groups: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket in LISTEN state held by a process of `groups`."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) not in groups:
                continue
            found += [(c.laddr.ip, c.laddr.port, process.name()) for c in process.net_connections(kind="tcp")
                      if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue  # gone in between
    return found


def assert_loopback_only(embedded: Embedded) -> None:
    """Every server of every started service group listens on loopback; the two UIs are among them."""
    groups = {int(p.read_text()) for p in embedded.run_dir.glob("*.pid")}
    sockets = listening_sockets(groups)
    assert {embedded.airflow_port, embedded.mlflow_port} <= {port for _, port, _ in sockets}, sockets
    exposed = [s for s in sockets if s[0] not in ("127.0.0.1", "::1")]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def request(url: str, data: dict[str, object] | None = None, token: str | None = None,
            method: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    # 30 s: on a loaded 2-core machine the SQLite-backed api-server can stall while the scheduler writes.
    with urllib.request.urlopen(urllib.request.Request(url, body, headers, method=method), timeout=30) as response:
        return dict(json.loads(response.read()))


class Receiver:
    """A local stand-in for Slack's webhook: records every JSON body POSTed to it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_up_serves_the_training_dag_and_down_stops_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              small_adult: Callable[..., Path]) -> None:
    # The services run `airflow` from PATH: make it this interpreter's.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    # A model whose data lacks a column: its run stops at `validate`, and the reasons land on the run's note.
    # Monitored by hand only: `up` unpauses its monitoring DAG too, and an hourly window of a model with
    # no champion would be a second outcome for "Slack".
    monitoring = {**adult_config_dict()["monitoring"], "schedule": None}
    small_adult(name="broken", mutate_train=lambda f: f.drop(columns=["sex"]), monitoring=monitoring)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})
    slack = Receiver()  # the run's outcome must reach "Slack" exactly once, from the real scheduler's run
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK", json.dumps({"conn_type": "slackwebhook", "password": slack.url}))
    embedded = Embedded(settings=settings, project=PROJECT, airflow_port=free_port(), mlflow_port=free_port())
    started = ["api-server", "scheduler", "dag-processor", "triggerer", "mlflow"]
    said: list[str] = []
    try:
        assert bring_up(embedded, settings, 180, out=said.append) == 0, (
            said, (embedded.run_dir / "api-server.log").read_text()[-2000:])
        assert said[0].startswith(f"started: {', '.join(started)}; "), said
        assert_loopback_only(embedded)  # nothing of `up` is reachable from another machine by default
        # The scheduler imported the task layer's libraries before Airflow started (`orchestration/preloaded.py`):
        # the LocalExecutor's workers, and each task forked from them, start with them loaded.
        scheduler_maps = Path(f"/proc/{int((embedded.run_dir / 'scheduler.pid').read_text())}/maps").read_text()
        assert "/sklearn/" in scheduler_maps and "/pandas/_libs/" in scheduler_maps
        password = embedded.admin_password()
        assert password and password != "admin"
        base = f"http://127.0.0.1:{embedded.airflow_port}"
        token = str(request(f"{base}/auth/token", {"username": "admin", "password": password})["access_token"])
        deadline = time.monotonic() + 120
        dag: dict[str, object] = {}
        dag_url = f"{base}/api/v2/dags/autopilot_training__broken"
        while time.monotonic() < deadline and not dag:  # the DAG processor parses the file first
            try:
                dag = request(dag_url, token=token)
            except OSError:
                time.sleep(3)
        assert dag.get("dag_id") == "autopilot_training__broken", "the DAG never appeared in the API"
        assert "model:broken" in {t["name"] for t in dag["tags"]}
        assert embedded.start() == []  # already running: nothing started twice
        # `up` unpaused both DAGs of the model (new DAGs start paused: a triggered run would wait forever).
        assert dag["is_paused"] is False
        assert request(f"{base}/api/v2/dags/autopilot_monitoring__broken", token=token)["is_paused"] is False
        assert ("DAGs     unpaused: autopilot_training__broken, autopilot_monitoring__broken; they run on their "
                "schedules") in said[-1], said
        assert f"Airflow  {base}  (user admin, password {password})" in said
        run = request(f"{dag_url}/dagRuns", {"logical_date": None, "dag_run_id": "broken-1"}, token=token)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run["state"] not in ("success", "failed"):
            time.sleep(3)
            try:
                run = request(f"{dag_url}/dagRuns/broken-1", token=token)
            except TimeoutError:  # a slow answer is asked again; the run's outcome is what is tested
                continue
        assert run["state"] == "failed", run
        assert run["note"] and "Stopped by a gate" in run["note"] and "missing column 'sex'" in run["note"], run
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not slack.bodies:
            time.sleep(1)
        time.sleep(10)  # the DAG-level callback comes later, from the DAG processor: it must not send twice
        assert len(slack.bodies) == 1, slack.bodies
        assert_loopback_only(embedded)  # still, after the scheduler ran tasks
        message = json.dumps(slack.bodies[0])
        assert "broken" in message and "validate" in message and "secret" not in message
    finally:
        pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
        stopped = embedded.stop()
    assert sorted(stopped) == sorted(started)
    assert not any(_alive(pid) for pid in pids)
