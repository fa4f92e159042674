"""Case 24: quiet traffic raises (almost) no alarm, and every window's result is stored.

Input: a real champion (an Adult HistGradientBoosting on the whole train file, its explainability
report, its monitoring reference built and stored once) serves traffic logged to the inference
log as the endpoint logs it: rows drawn from the Adult test file (the same population, other
people), scored by the champion, with noisy latencies. No label feedback arrives, so
performance is the label-free estimate. Each window goes through the monitoring stage
(`monitoring_stages.monitor_window`, as the monitoring DAG's task calls it): drift against the
reference, estimated performance, attribution drift, the anomaly detectors over the windows'
series, the decision, the stored report.
- plain: 50 hourly windows of 2,000 rows (one of them a quiet hour of 300 rows, under the
  large-sample threshold: its drift is decided by tests, and it must stay quiet too);
- weekday mixture: 50 daily windows of 2,000 rows, each drawn from its weekday's mixture of the
  same population: on Saturdays and Sundays part-time workers (< 35 h a week) and the
  self-employed are 1.5 times as likely to be served, on Fridays part-time workers 1.2 times.
  Daily monitoring, anomaly baselines by day of week. (Twice as likely on weekends is a real
  change of the traffic, and the monitor flags it as drift: 0.27 of the importance moves.)

The Evidently HTML report is switched off (`monitoring.drift.evidently_report: false`, 2-5 s a
window here; decisions never read it; the monitoring e2e tests draw it), and so is the list of
changed predictions (`monitoring.changed_predictions.top_n: 0`, 1-2 s a window of LIME and SHAP on
the listed rows; also for people only, checked by tests/e2e/test_monitoring_loop.py).

Invariant: at most 2 of the 50 windows of each variant decide anything but `none`; every window
is stored once in the state database's `monitoring_windows` table with its action, series and
decision, and its JSON report in the artifact store; a rerun of a window replaces its row; the
stored reference is read, never rebuilt (found here: a wrong path made every window rebuild and
re-log it, silently).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import LoadedConfig
from autopilot.monitoring import state
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.monitoring import monitor_window
from tests.reliability.monitoring_support import Champion, make_champion
from tests.serving_support import adult_cfg

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

WINDOWS = 50
ROWS = 2000
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def configured(cfg: LoadedConfig, **monitoring: Any) -> LoadedConfig:
    """`cfg` with `monitoring` sections replaced (dicts are merged into the section)."""
    current = cfg.monitoring
    updates = {key: getattr(current, key).model_copy(update=value) if isinstance(value, dict) else value
               for key, value in monitoring.items()}
    return cfg.model_copy(update={"monitoring": current.model_copy(update=updates)})


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Iterator[
        Champion]:
    cfg = configured(adult_cfg(), drift={"evidently_report": False}, changed_predictions={"top_n": 0})
    yield make_champion(tmp_path_factory.mktemp("r24"), cfg, adult_frames)


@pytest.fixture
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")  # no error-rate series from a live endpoint


def monitor(champion: Champion, cfg: LoadedConfig, windows: list[tuple[datetime, datetime]],
            traffic: Callable[[int, np.random.Generator], pd.DataFrame], caplog: pytest.LogCaptureFixture) -> list[
        dict[str, Any]]:
    """Serve each window's traffic, then monitor each window as the DAG would, in order."""
    rng = np.random.default_rng(24)
    for k, (start, end) in enumerate(windows):
        champion.serve(cfg.name, traffic(k, rng), start, end, rng, f"{cfg.name}-{k}")
    caplog.set_level(logging.INFO, logger="autopilot.pipeline.monitoring")
    results = [monitor_window(cfg, champion.settings, RunContext(run_id=f"{cfg.name}-{k}", actor="test"), start, end)
               for k, (start, end) in enumerate(windows)]
    assert not [r for r in caplog.records if "building the monitoring reference" in r.getMessage()]
    return results


def assert_quiet_and_stored(champion: Champion, cfg: LoadedConfig, windows: list[tuple[datetime, datetime]],
                            results: list[dict[str, Any]]) -> None:
    alarms = [(k, r["action"], r["reasons"]) for k, r in enumerate(results) if r["action"] != "none"]
    assert len(alarms) <= 2, alarms
    stored = state.last_windows(champion.settings, cfg.name, limit=10 * WINDOWS)
    assert [(w["window_start"], w["window_end"]) for w in stored] == windows
    assert [w["action"] for w in stored] == [r["action"] for r in results]
    for window, result in zip(stored, results, strict=True):
        report = window["report"]
        assert report["decision"]["action"] == result["action"] and "series" in report
        assert report["rows"] == result["rows"] and Path(report["report_uri"]).is_file()
    # A rerun of a window (a retried task) replaces its row: still one per window, same verdict.
    start, end = windows[-1]
    again = monitor_window(cfg, champion.settings, RunContext(run_id=f"{cfg.name}-rerun", actor="test"), start, end)
    assert again["action"] == results[-1]["action"]
    assert len(state.last_windows(champion.settings, cfg.name, limit=10 * WINDOWS)) == WINDOWS


def test_fifty_quiet_hours(champion: Champion, no_endpoint: None, caplog: pytest.LogCaptureFixture) -> None:
    cfg = champion.cfg
    windows = [(START + timedelta(hours=k), START + timedelta(hours=k + 1)) for k in range(WINDOWS)]
    quiet_hour = 20

    def traffic(k: int, rng: np.random.Generator) -> pd.DataFrame:
        return champion.draw(rng, 300 if k == quiet_hour else ROWS)

    results = monitor(champion, cfg, windows, traffic, caplog)
    assert results[quiet_hour]["rows"] == 300 and results[quiet_hour]["action"] == "none"
    quiet = json.loads(Path(results[quiet_hour]["report_uri"]).read_text())["drift"]
    assert quiet["sufficient"] and quiet["decided_by"] == "test", quiet["reasons"]
    # The multivariate check ran in every window, from the reference fitted once and read back from the run.
    for result in results:
        multivariate = json.loads(Path(result["report_uri"]).read_text())["drift"]["multivariate"]
        assert multivariate["checked"] and multivariate["components"] > 0, multivariate["reason"]
    assert_quiet_and_stored(champion, cfg, windows, results)


def weekday_weights(population: pd.DataFrame, weekday: int) -> np.ndarray:
    """How likely each person is to be served on a weekday (Monday = 0)."""
    part_time = (population["hours_per_week"] < 35).to_numpy()
    self_employed = population["workclass"].astype(str).str.startswith("Self-emp").to_numpy()
    weights = np.ones(len(population))
    if weekday >= 5:
        weights *= np.where(part_time, 1.5, 1.0) * np.where(self_employed, 1.5, 1.0)
    elif weekday == 4:
        weights *= np.where(part_time, 1.2, 1.0)
    return weights


def test_fifty_days_of_weekday_mixtures(champion: Champion, no_endpoint: None,
                                        caplog: pytest.LogCaptureFixture) -> None:
    cfg = configured(champion.cfg.model_copy(update={"name": "adult_weekdays"}), schedule="@daily",
                     anomaly={"seasonality": "day_of_week"})
    windows = [(START + timedelta(days=k), START + timedelta(days=k + 1)) for k in range(WINDOWS)]
    weights = {day: weekday_weights(champion.population, day) for day in range(7)}

    def traffic(k: int, rng: np.random.Generator) -> pd.DataFrame:
        return champion.draw(rng, ROWS, weights[windows[k][0].weekday()])

    weekend = champion.draw(np.random.default_rng(0), 20_000, weights[5])
    everyday = champion.draw(np.random.default_rng(0), 20_000)
    assert (weekend["hours_per_week"] < 35).mean() > 1.3 * (everyday["hours_per_week"] < 35).mean()
    results = monitor(champion, cfg, windows, traffic, caplog)
    assert_quiet_and_stored(champion, cfg, windows, results)
