"""Multivariate drift end to end (issue 16.4): `decorrelate` traffic through the monitoring stage.

A real registered Adult champion (`tests/reliability/monitoring_support.make_champion`: trained,
explainability-gated, its monitoring reference with the fitted PCA reconstruction check built
and stored by the monitoring stage) is served two windows of the Adult test population, logged
as the endpoint logs them:

- `none`: a plain resample -> the multivariate check is within its bounds, nothing decided;
- `decorrelate` (the simulator's scenario: the named columns shuffled apart within the window,
  every column's values as before) on race, native country, workclass and occupation, ties the
  champion hardly uses -> the per-column check and the score check find nothing, the
  multivariate check is above its upper bound, and the window's decision (an alert, by default)
  names it as its only reason;
- `decorrelate` with its default columns (relationship and marital status) and
  `monitoring.drift.multivariate.action: retrain` -> a refit; no drifted column either, though
  the champion's scores move (it uses both columns), which alone would be an alert.

The Evidently HTML report and the changed-predictions list are off (people-only outputs, seconds a
window; tests/e2e/test_monitoring_loop.py draws them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import LoadedConfig
from autopilot.data.sources import canonicalize
from autopilot.monitoring import state
from autopilot.monitoring.simulate import shift_frame
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.monitoring import monitor_window
from tests.reliability.monitoring_support import Champion, make_champion
from tests.serving_support import adult_cfg

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

ROWS = 1500
QUIET_TIES = ["workclass", "occupation", "native_country", "education"]
START = datetime(2026, 9, 7, tzinfo=UTC)


def configured(cfg: LoadedConfig, *, top_n: int | None = None, **drift: Any) -> LoadedConfig:
    """`cfg` with `monitoring.drift` updated (a dict merged into its subsection) and `changed_predictions.top_n`."""
    section = cfg.monitoring.drift
    updates = {k: getattr(section, k).model_copy(update=v) if isinstance(v, dict) else v for k, v in drift.items()}
    monitoring: dict[str, Any] = {"drift": section.model_copy(update=updates)}
    if top_n is not None:
        monitoring["changed_predictions"] = cfg.monitoring.changed_predictions.model_copy(update={"top_n": top_n})
    return cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update=monitoring)})


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Iterator[
        Champion]:
    cfg = configured(adult_cfg(), top_n=0, evidently_report=False)
    yield make_champion(tmp_path_factory.mktemp("multivariate"), cfg, adult_frames)


@pytest.fixture
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")  # no error-rate series from a live endpoint


def traffic(champion: Champion, frames: tuple[pd.DataFrame, pd.DataFrame], scenario: str, seed: int,
            features: list[str] | None = None) -> pd.DataFrame:
    """`ROWS` labelled rows of the Adult test file, shifted by the simulator's `scenario`."""
    cfg = champion.cfg
    test = canonicalize(frames[1], cfg)
    sample = test[test[cfg.target.column].notna()].sample(ROWS, random_state=seed)
    shifted, _, _ = shift_frame(sample, cfg, scenario, seed=seed, features=features)
    return shifted


def window(champion: Champion, cfg: LoadedConfig, rows: pd.DataFrame, k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Serve `rows` in hour `k`, monitor the hour as the DAG would: (the task's result, the stored report)."""
    start, end = START + timedelta(hours=k), START + timedelta(hours=k + 1)
    champion.serve(cfg.name, rows, start, end, np.random.default_rng(k), f"{cfg.name}-{k}")
    result = monitor_window(cfg, champion.settings, RunContext(run_id=f"{cfg.name}-{k}", actor="test"), start, end)
    return result, json.loads(Path(result["report_uri"]).read_text())


def test_decorrelated_traffic_is_multivariate_drift_that_no_column_shows(
        champion: Champion, adult_frames: tuple[pd.DataFrame, pd.DataFrame], no_endpoint: None) -> None:
    cfg = champion.cfg
    calm, calm_report = window(champion, cfg, traffic(champion, adult_frames, "none", 1), 0)
    assert calm["rows"] == ROWS and calm["action"] == "none", calm["reasons"]
    quiet = calm_report["drift"]["multivariate"]
    assert quiet["checked"] and not quiet["drifted"], quiet["reason"]
    assert quiet["lower"] <= quiet["error"] <= quiet["upper"]

    # Ties the champion hardly uses shuffled apart (race-country, workclass-occupation): every column as it
    # was, the per-column check and the scores find nothing; the reconstruction check does, and alone decides.
    broken, report = window(champion, cfg, traffic(champion, adult_frames, "decorrelate", 2, QUIET_TIES), 1)
    drift = report["drift"]
    assert drift["sufficient"] and drift["drifted_columns"] == [] and drift["severity"] == "none", drift["reasons"]
    found = drift["multivariate"]
    assert found["checked"] and found["drifted"] and found["error"] > found["upper"], found
    assert found["change"] > 0.06 and found["reason"].startswith("multivariate drift: reconstruction error")
    assert broken["action"] == "alert" and broken["strategy"] is None, broken
    assert broken["reasons"] == [found["reason"]]
    assert report["decision"]["action"] == "alert"
    # The state database keeps the check for the Models page's chart (ui/multivariate.py).
    stored = state.last_windows(champion.settings, cfg.name)[-1]["report"]["multivariate"]
    assert stored["drifted"] and stored["error"] == found["error"] and stored["upper"] == found["upper"]

    # The scenario's default (relationship and marital status, ~+15%), with the check configured to act:
    # a refit. Still no drifted column; the champion's scores move too (it uses both), an alert on its own.
    acting = configured(cfg, multivariate={"action": "retrain"})
    retrain, report = window(champion, acting, traffic(champion, adult_frames, "decorrelate", 3), 2)
    assert report["drift"]["drifted_columns"] == [] and report["drift"]["multivariate"]["drifted"], report["drift"]
    assert retrain["action"] == "retrain" and retrain["strategy"] == "refit", retrain
    assert any(r.startswith("multivariate drift: reconstruction error") for r in retrain["reasons"])
