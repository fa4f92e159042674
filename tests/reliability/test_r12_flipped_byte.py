"""Case 12: one byte of a registered model flipped in the artifact store.

Fault: a real `autopilot serve` process follows `champion` (v1). v2 is registered, then one byte
of its stored model file is flipped in place (a bad disk, or someone writing to the store).
1. v2 goes through the promotion gates as the DAG runs them: every gate that loads it fails
   closed naming the changed file, the decision rejects it, and nothing moves the alias.
2. The alias is then moved to v2 anyway (an operator forcing it through MLflow): the endpoint
   refuses the swap before deserializing anything and keeps serving v1; the refusal is reported
   (`/model` names the changed file, `/metrics` counts a failed swap), and the monitoring stage
   fails on that champion instead of judging its traffic.
Invariant: the champion recorded by autopilot stays v1 and every answer comes from v1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import ModelRefused
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.reports import GateFailure
from autopilot.settings import Settings
from autopilot.versions.promotion import current, history
from tests.reliability.inject import free_port
from tests.serving_support import LINEAR, TOKEN, Server, adult_cfg, corrupt_version, feature_rows, register_version
from tests.serving_support import snapshots as make_snapshots

pytestmark = pytest.mark.usefixtures("mlflow_clean")
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def serving(settings: Settings, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Iterator[tuple[Server, Any]]:
    from autopilot.versions.promotion import promote

    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames, params=LINEAR, rows=1500, alias=None)
    promote(settings, cfg.registered_model_name, int(v1.version), actor="test", reason="first champion")
    assert cfg.path is not None
    server = Server(cfg.path, settings.home, free_port())
    try:
        server.wait_ready()
        yield server, v1
    finally:
        server.kill()


def _predict(server: Server, rows: list[dict[str, Any]]) -> int:
    answer = httpx.post(server.url + "/predict", json={"records": rows}, headers=HEADERS, timeout=30)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["model_version"])


def test_a_flipped_byte_is_refused_everywhere_and_v1_keeps_serving(
        reg: registry.Registry, serving: tuple[Server, Any], settings: Settings,
        adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    server, v1 = serving
    cfg = adult_cfg()
    rows = feature_rows(adult_frames, cfg, n=5)
    assert _predict(server, rows) == 1
    v2 = register_version(settings, cfg, adult_frames, params=LINEAR, rows=1200, alias="challenger")
    corrupt_version(reg, v2)

    # 1. Through the gates: each load refuses the changed file; the decision rejects; no alias moves.
    snapped = make_snapshots(settings, cfg, adult_frames)
    ctx = RunContext(run_id="flipped", dag_id="autopilot_training__adult_income", actor="test")
    registered = {"name": v2.name, "version": int(v2.version), "run_id": v2.run_id, "source": v2.source,
                  "model_uri": f"models:/{v2.name}/{v2.version}"}
    quality = gate_stages.quality_gate(cfg, settings, ctx, registered, snapped)
    explain = gate_stages.explainability_and_fairness_gates(cfg, settings, ctx, registered, snapped)
    infra = gate_stages.infra_gate(cfg, settings, ctx, registered, snapped)
    for summary in (quality, infra, *([explain] if "passed" in explain else explain.values())):
        assert not summary["passed"] and "changed file model.skops" in " ".join(summary["reasons"]), summary
    with pytest.raises(GateFailure, match="changed file model.skops"):
        gate_stages.decide_version(cfg, settings, ctx, registered, snapped, quality)
    assert current(cfg.registered_model_name, "champion", reg) == 1
    assert [m.to_version for m in history(settings, cfg.registered_model_name)] == [1]

    # 2. The alias forced onto v2 through MLflow: the endpoint refuses it and keeps answering from v1.
    reg.client.set_registered_model_alias(cfg.registered_model_name, "champion", str(v2.version))
    reloaded = httpx.post(server.url + "/reload", headers=HEADERS, timeout=60).json()
    assert reloaded["model_version"] == 1 and "changed file model.skops" in reloaded["error"], reloaded
    model = httpx.get(server.url + "/model", headers=HEADERS, timeout=10).json()
    assert model["model_version"] == 1 and model["last_swap_failure"]["version"] == 2, model
    assert "changed file model.skops" in model["last_swap_failure"]["error"], model
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'autopilot_model_swaps_total{outcome="failed"}' in metrics
    failed = [line for line in metrics.splitlines() if line.startswith('autopilot_model_swaps_total{outcome="failed"}')]
    assert float(failed[0].split()[-1]) >= 1, failed
    assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    assert {_predict(server, rows) for _ in range(5)} == {1}

    # Monitoring does not judge traffic against a champion it cannot verify: the task fails (and alerts).
    from autopilot.pipeline.monitoring import monitor_window

    for split in ("train", "test"):  # v2 looks complete to monitoring: only its bytes are wrong
        reg.client.set_model_version_tag(v2.name, v2.version, f"autopilot.snapshot.{split}",
                                         f"sha256:{snapped['snapshots'][split]['digest']}")
    start = datetime(2026, 12, 6, 10, tzinfo=UTC)
    with pytest.raises(ModelRefused, match="changed file model.skops"):
        monitor_window(cfg, settings, ctx, start, start + timedelta(hours=1))
    assert {_predict(server, rows) for _ in range(3)} == {1}
