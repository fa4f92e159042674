"""Rollout on a live endpoint: a good version passes smoke + bake; a violation rolls the alias back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.adapters import registry
from autopilot.config import load_config
from autopilot.deploy.history import load_observations
from autopilot.deploy.rollout import MetricsSample, parse_metrics
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.deploy import rollout_version
from autopilot.reports import GateFailure
from autopilot.settings import Settings
from autopilot.versions.promotion import history, promote
from tests.helpers import ADULT_CONFIG, PROJECT
from tests.serving_support import LINEAR, TOKEN, Server, free_port, register_version, snapshots

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


def config_file(tmp_path: Path, **rollout: Any) -> Path:
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz"),
                   "test_source": str(PROJECT / "data/adult/adult_test.csv.gz")}
    raw["deployment"]["serving"] = {"poll_seconds": 30}  # the rollout asks for the swap itself
    raw["deployment"]["rollout"] = {"smoke_rows": 10, "bake_seconds": 2, "bake_interval_seconds": 0.5, **rollout}
    path = tmp_path / "adult_income.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def live(tmp_path: Path, adult_frames: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    cfg = load_config(config_file(tmp_path))
    v1 = register_version(settings, cfg, adult_frames, alias=None)
    promote(settings, cfg.registered_model_name, int(v1.version), actor="test", reason="first")
    v2 = register_version(settings, cfg, adult_frames, params=LINEAR, alias=None)
    server = Server(tmp_path / "adult_income.yaml", home, free_port())
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", server.url)
    monkeypatch.setenv("AUTOPILOT_SERVING_TOKEN", TOKEN)
    try:
        server.wait_ready()
        yield {"settings": settings, "v1": int(v1.version), "v2": int(v2.version), "server": server,
               "snapped": snapshots(settings, cfg, adult_frames), "tmp": tmp_path}
    finally:
        server.kill()


def plan_for(version: int) -> dict[str, Any]:
    return {"version": version, "instance": "c6i.large", "predicted_p95_ms": 5.0, "predicted_rss_mb": 300.0}


def serving_version(server: Server) -> int:
    return int(httpx.get(server.url + "/health").json()["model_version"])


def test_a_good_version_rolls_out_and_its_cost_is_recorded(live: dict[str, Any]) -> None:
    settings, server = live["settings"], live["server"]
    cfg = load_config(config_file(live["tmp"]))
    promote(settings, cfg.registered_model_name, live["v2"], actor="test", reason="better")
    assert serving_version(server) == live["v1"]  # polls every 30 s: the rollout asks for the swap
    result = rollout_version(cfg, settings, RunContext(run_id="r1"), plan_for(live["v2"]),
                             {"skipped": False, "target": "local"}, live["snapped"])
    assert result["passed"] and serving_version(server) == live["v2"]
    metrics = result["metrics"]
    assert metrics["smoke_rows"] == 10 and metrics["smoke_max_abs_diff"] <= 1e-9
    assert metrics["observed_p95_ms"] > 0 and metrics["observed_rss_mb"] > 50
    observed = load_observations(settings, cfg.name)
    assert len(observed) == 1 and observed[0].predicted_p95_ms == 5.0
    assert observed[0].observed_p95_ms == metrics["observed_p95_ms"]


def test_a_violation_rolls_the_alias_and_the_endpoint_back(live: dict[str, Any]) -> None:
    settings, server = live["settings"], live["server"]
    # A latency limit no HTTP round trip can meet: the smoke test must fail it.
    cfg = load_config(config_file(live["tmp"], max_p95_latency_ms=0.001))
    promote(settings, cfg.registered_model_name, live["v2"], actor="test", reason="better")
    with pytest.raises(GateFailure) as failed:
        rollout_version(cfg, settings, RunContext(run_id="r2", actor="airflow:test"), plan_for(live["v2"]),
                        {"skipped": False, "target": "local"}, live["snapped"])
    report = failed.value.report
    assert not report.passed and report.metrics["rolled_back_to"] == live["v1"]
    assert any("smoke p95 latency" in r for r in report.reasons), report.reasons
    reg = registry.connect(settings)
    assert int(reg.resolve_version(cfg.registered_model_name, "champion").version) == live["v1"]
    last = history(settings, cfg.registered_model_name)[-1]
    assert (last.action, last.from_version, last.to_version) == ("rollback", live["v2"], live["v1"])
    assert "rollout failed" in last.reason
    assert serving_version(server) == live["v1"]  # the endpoint followed at once
    assert load_observations(settings, cfg.name) == []  # a failed rollout is no observation


def test_no_endpoint_means_the_rollout_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", f"http://127.0.0.1:{free_port()}")
    cfg = load_config(config_file(tmp_path))
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    result = rollout_version(cfg, settings, RunContext(run_id="r3"), plan_for(1), {"skipped": False,
                                                                                   "target": "local"}, {})
    assert result["skipped"] and "no serving endpoint answers" in result["reason"]


def test_metrics_parsing_and_p95_bound() -> None:
    text = "\n".join([
        'autopilot_requests_total{endpoint="predict",status="200"} 95.0',
        'autopilot_requests_total{endpoint="predict",status="503"} 5.0',
        'autopilot_requests_total{endpoint="health",status="200"} 50.0',
        *[f'autopilot_request_latency_seconds_bucket{{endpoint="predict",le="{le}"}} {n}'
          for le, n in (("0.005", 80.0), ("0.01", 96.0), ("0.05", 100.0), ("+Inf", 100.0))],
        "autopilot_model_version 3.0",
        "process_resident_memory_bytes 2.097152e+08",
    ]) + "\n"
    sample = parse_metrics(text)
    assert (sample.requests, sample.server_errors, sample.version) == (100.0, 5.0, 3.0)
    assert sample.p95_ms() == 10.0 and sample.rss_bytes == 209715200.0
    assert sample.since(sample).p95_ms() is None and MetricsSample().p95_ms() is None
    assert json.dumps(sample.buckets)  # plain floats
