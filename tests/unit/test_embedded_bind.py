"""`autopilot up` binds loopback unless AUTOPILOT_BIND_ADDRESS says otherwise: the exact commands and
environment each embedded server gets. The real start, with its listening sockets read from the
kernel, is tests/e2e/test_embedded_services.py; here the detector it uses is shown to catch a
server listening on every interface.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopilot.orchestration.embedded import Embedded, _stop_group, bind_address_from_env
from autopilot.settings import Settings
from tests.e2e.test_embedded_services import free_port, listening_sockets
from tests.helpers import PROJECT


def embedded(tmp_path: Path, **kwargs: object) -> Embedded:
    """An embedded set-up whose commands are only built here (nothing starts, so fixed ports are fine)."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})
    return Embedded(settings=settings, project=PROJECT, airflow_port=18080, mlflow_port=15001, **kwargs)  # type: ignore[arg-type]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_server_binds_loopback_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPILOT_BIND_ADDRESS", raising=False)
    setup = embedded(tmp_path, celery_workers=2)
    services = setup._services()
    assert flag(services["api-server"][0], "--host") == "127.0.0.1"
    assert flag(services["mlflow"][0], "--host") == "127.0.0.1"
    # Airflow's log server binds every interface (no host setting): never started here.
    for name in ("scheduler", "triggerer", "celery-worker-1", "celery-worker-2"):
        assert "--skip-serve-logs" in services[name][0], name
    assert services["dag-processor"][0] == ["airflow", "dag-processor"]  # serves nothing
    env = setup.env()
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["AUTOPILOT_MLFLOW_UI_URL"] == "http://127.0.0.1:15001"


@pytest.mark.parametrize(("address", "clients"), [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"),
                                                   ("::1", "[::1]"), ("192.0.2.7", "192.0.2.7")])
def test_the_bind_address_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str,
                                       clients: str) -> None:
    monkeypatch.setenv("AUTOPILOT_BIND_ADDRESS", address)
    setup = embedded(tmp_path)
    services = setup._services()
    assert flag(services["api-server"][0], "--host") == flag(services["mlflow"][0], "--host") == address
    assert setup.env()["AIRFLOW__API__HOST"] == address
    # This machine's own clients (health checks, the REST connection, links) use an address that answers.
    assert setup.airflow_url == f"http://{clients}:18080"
    assert setup.env()["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://{clients}:18080/execution/"


def test_a_bad_bind_address_is_refused_by_name(tmp_path: Path) -> None:
    assert bind_address_from_env({}) == "127.0.0.1"
    assert bind_address_from_env({"AUTOPILOT_BIND_ADDRESS": " 0.0.0.0 "}) == "0.0.0.0"
    for bad in ("everywhere", "127.0.0.1:8080", "localhost"):
        with pytest.raises(ValueError, match="AUTOPILOT_BIND_ADDRESS="):
            bind_address_from_env({"AUTOPILOT_BIND_ADDRESS": bad})


def test_the_socket_check_catches_a_server_on_every_interface(tmp_path: Path) -> None:
    """The detector the e2e test relies on: a real server of a started group, on 0.0.0.0, is reported as such."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not listening_sockets({process.pid}):
            time.sleep(0.2)
        assert [(address, found) for address, found, _ in listening_sockets({process.pid})] == [("0.0.0.0", port)]
    finally:
        _stop_group(process.pid, grace=5)
