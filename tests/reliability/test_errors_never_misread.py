"""Errors are never misread (issue 11, point 3), against a real MLflow server behind a failing proxy.

Fault: the MLflow server answers 503 (through `FaultProxy`) while a gate looks up the champion,
while `decide` reads the gate reports, and while an alias is resolved; and a live endpoint that
answered in the previous window is killed with SIGKILL before the next monitoring window.
Invariant: an outage is an error that retries (the stage raises; nothing is recorded as a verdict),
never "first run", a failed gate, a missing report, "no such alias" or a healthy window; once the
registry answers again the same stages decide on the real state (the champion is compared with).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autopilot.adapters import registry
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.reports import GateFailure
from autopilot.settings import Settings
from tests.reliability.inject import FaultProxy, free_port, mlflow_server
from tests.serving_support import LINEAR, Server, adult_cfg, register_version, snapshots

pytestmark = pytest.mark.usefixtures("mlflow_clean")
MLFLOW_CALL = r"/api/2\.0/mlflow/"


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultProxy, Settings]]:
    home = tmp_path_factory.mktemp("misread")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    # A bounded client: one retry, no backoff, so a 503 surfaces in seconds, not minutes.
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
                      MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    with (mlflow_server(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts", home / "mlflow.log") as server,
          FaultProxy(server.url) as proxy):
        settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "MLFLOW_TRACKING_URI": proxy.url,
                                      "AUTOPILOT_MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/"})
        yield proxy, settings
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def two_versions(behind_proxy: tuple[FaultProxy, Settings], adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    proxy, settings = behind_proxy
    cfg = adult_cfg()
    champion = register_version(settings, cfg, adult_frames, params=LINEAR, rows=1500, alias="champion")
    challenger = register_version(settings, cfg, adult_frames, params=LINEAR, rows=1200, alias="challenger")
    snapped = snapshots(settings, cfg, adult_frames)
    return cfg, champion, challenger, snapped


def _registered(version: Any) -> dict[str, Any]:
    return {"name": version.name, "version": int(version.version), "run_id": version.run_id,
            "model_uri": f"models:/{version.name}/{version.version}", "source": version.source}


def test_a_registry_outage_during_a_gate_is_an_error_not_a_first_run_or_a_failed_gate(
        behind_proxy: tuple[FaultProxy, Settings], two_versions: Any) -> None:
    proxy, settings = behind_proxy
    reg = registry.connect(settings)
    cfg, champion, challenger, snapped = two_versions
    ctx = RunContext(run_id="misread-1", dag_id="autopilot_training__adult_income", actor="test")
    proxy.set("status", status=503, path=r"registered-models/(get|alias)")  # the champion lookup fails
    with pytest.raises(Exception) as raised:
        gate_stages.quality_gate(cfg, settings, ctx, _registered(challenger), snapped)
    assert not isinstance(raised.value, GateFailure)
    assert proxy.count("status") >= 1
    proxy.set("pass")
    stored = {Path(f.path).name for f in reg.client.list_artifacts(challenger.run_id, "gates")}
    assert "quality.json" not in stored, "an outage was recorded as the quality gate's verdict"
    with pytest.raises(Exception) as unresolved:  # an outage is not "no such alias"
        proxy.set("status", status=503, path=MLFLOW_CALL)
        reg.resolve_version(cfg.registered_model_name, "champion")
    assert not isinstance(unresolved.value, LookupError)
    proxy.set("pass")
    # The registry answers again: the gate compares with the real champion, not "first run".
    summary = gate_stages.quality_gate(cfg, settings, ctx, _registered(challenger), snapped)
    assert summary["champion_version"] == int(champion.version), summary


def test_an_outage_while_decide_reads_the_reports_is_not_a_reject(
        behind_proxy: tuple[FaultProxy, Settings], two_versions: Any) -> None:
    proxy, settings = behind_proxy
    reg = registry.connect(settings)
    cfg, champion, challenger, snapped = two_versions
    ctx = RunContext(run_id="misread-2", dag_id="autopilot_training__adult_income", actor="test")
    registered = _registered(challenger)
    quality = gate_stages.quality_gate(cfg, settings, ctx, registered, snapped)
    proxy.set("status", status=503, path=r"mlflow-artifacts/artifacts|artifacts/list")
    with pytest.raises(Exception) as raised:
        gate_stages.decide_version(cfg, settings, ctx, registered, snapped, quality)
    assert not isinstance(raised.value, GateFailure), "an outage became a permanent reject"
    proxy.set("pass")
    tags = reg.client.get_model_version(challenger.name, challenger.version).tags
    assert "autopilot.decision" not in tags  # no decision was recorded on the outage
    # Recovered: the reports that really are missing (only quality ran) now reject the version.
    with pytest.raises(GateFailure, match="did not report"):
        gate_stages.decide_version(cfg, settings, ctx, registered, snapped, quality)


def test_a_dead_endpoint_alerts_instead_of_looking_quiet(tmp_path: Path, settings: Settings,
                                                         adult_frames: tuple[pd.DataFrame, pd.DataFrame],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from autopilot.monitoring import state
    from autopilot.pipeline.monitoring import monitor_window

    cfg = adult_cfg()
    reg = registry.connect(settings)
    version = register_version(settings, cfg, adult_frames, params=LINEAR, rows=1500, alias="champion")
    snapped = snapshots(settings, cfg, adult_frames)["snapshots"]
    for split in ("train", "test"):
        reg.client.set_model_version_tag(version.name, version.version, f"autopilot.snapshot.{split}",
                                         f"sha256:{snapped[split]['digest']}")
    assert cfg.path is not None
    server = Server(cfg.path, settings.home, free_port())
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", server.url)
    ctx = RunContext(run_id="monitor", dag_id="autopilot_monitoring__adult_income", actor="test")
    start = datetime(2026, 12, 6, 10, tzinfo=UTC)
    caplog.set_level(logging.INFO, logger="autopilot")
    try:
        server.wait_ready()
        first = monitor_window(cfg, settings, ctx, start, start + timedelta(hours=1))
        assert first["action"] == "none", first  # alive, no traffic: nothing to judge
    finally:
        server.kill()  # SIGKILL: the endpoint dies between two windows
    second = monitor_window(cfg, settings, ctx, start + timedelta(hours=1), start + timedelta(hours=2))
    assert second["action"] == "alert", second
    assert "stopped answering" in second["reasons"][0] and server.url in second["reasons"][0]
    third = monitor_window(cfg, settings, ctx, start + timedelta(hours=2), start + timedelta(hours=3))
    assert third["action"] == "alert", third  # still down: the alarm repeats until it answers again
    built = [r for r in caplog.records if "building the monitoring reference" in r.getMessage()]
    assert len(built) == 1, "the stored reference was not read back: it was rebuilt for the second window"
    windows = state.last_windows(settings, cfg.name, limit=5)
    assert [w["action"] for w in windows] == ["none", "alert", "alert"]
    assert windows[-1]["report"]["endpoint_unreachable"] and windows[0]["report"]["counters"]
    assert [w["report"]["endpoint_down"] for w in windows] == [False, True, True]
