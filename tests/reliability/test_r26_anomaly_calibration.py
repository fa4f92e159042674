"""Case 26: the anomaly detector on a year of an hourly metric with a weekly season.

Input: for each of 10 seeds, a year (8,760 hourly points) of a prediction-mean-like metric: a
daily cycle, a weekend bump of 3 noise sd (the weekly season) and Gaussian noise
(`tests/unit/test_anomaly.seasonal`), judged with the shipped thresholds (`monitoring.anomaly`
of the Adult config: z 4, EWMA 3.5, CUSUM h 7, cooldown 6, min history 24) and the weekly
profile the series needs (`seasonality: hour_of_week`). Every point goes through
`anomaly.update`, the judgement `observe` applies and stores; the first three weeks of one
seed also go through `observe` itself (state database, one transaction per point), which must
give the same alarms.

Found here: until three weeks of history give the hour-of-week profile, the detector judged on
the daily profile, where every weekend looked like a sustained shift: 16-18 false alarms in the
first month of each seed. The warm-up rule (`monitoring/anomaly.py`: only spikes, against a scale
that counts the unmodelled weekly part as noise, until the configured profile is known) removes
them.

Asserted, precisely:
- false alarms: mean at most 1.0 per 30-day month over the 10 x 12 months (the config documents
  about 0.5 for these thresholds), none above 3 in any month, the first month included
  (measured: mean 0.44, at most 2);
- a step of 1 sd of the metric (its standard deviation over the year, the seasonal swing
  included: about 3.9 noise sd) added at the end of the year is found within 10 points for
  every seed (measured: 0-2 points);
- the stricter reading, a step of 1 sd of the noise only (a quarter of the metric's sd), is
  found within 48 points for every seed, half of them within 24 (measured: median 18.5, at most
  28). "About 10 points" does not hold for so small a step at this false-alarm rate: the mean of
  10 points has a standard error of 0.32 noise sd.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autopilot.adapters import state_db
from autopilot.config import AnomalyConfig
from autopilot.monitoring.anomaly import SeriesState, history, observe, update
from autopilot.settings import Settings
from tests.serving_support import adult_cfg
from tests.unit.test_anomaly import NOISE, hour, seasonal

SEEDS = 10
YEAR = 365 * 24
MONTH = 30 * 24
WARM_UP = 3 * 7 * 24  # until the hour-of-week profile has three points per phase


@pytest.fixture(scope="module")
def cfg() -> AnomalyConfig:
    return adult_cfg().monitoring.anomaly.model_copy(update={"seasonality": "hour_of_week"})


def run_year(values: np.ndarray, cfg: AnomalyConfig) -> tuple[SeriesState, list[int]]:
    """Judge the year point by point; the final state and the indexes of the alarmed points."""
    state: SeriesState | None = None
    alarmed = []
    for i in range(YEAR):
        state, alarms = update(state, "prediction_mean", hour(i), float(values[i]), cfg)
        alarmed.extend(i for _ in alarms)
    assert state is not None
    return state, alarmed


def delay(state: SeriesState, values: np.ndarray, step: float, cfg: AnomalyConfig, horizon: int = 48) -> float:
    """Points after a level step (added at the year's end) until the first alarm; inf if none."""
    for offset in range(horizon):
        state, alarms = update(state, "prediction_mean", hour(YEAR + offset), float(values[YEAR + offset] + step), cfg)
        if alarms:
            return offset
    return math.inf


@pytest.fixture(scope="module")
def years(cfg: AnomalyConfig) -> list[tuple[np.ndarray, SeriesState, list[int]]]:
    out = []
    for seed in range(SEEDS):
        values = seasonal(seed, YEAR + 48)
        state, alarmed = run_year(values, cfg)
        out.append((values, state, alarmed))
    return out


def test_false_alarms_a_month_over_a_year(years: list[tuple[np.ndarray, SeriesState, list[int]]]) -> None:
    per_month = np.array([np.bincount(np.array(alarmed, dtype=int) // MONTH, minlength=13)[:12]
                          for _, _, alarmed in years])
    assert per_month.mean() <= 1.0, per_month
    assert per_month.max() <= 3, per_month
    assert per_month[:, 0].max() <= 3, per_month[:, 0]  # the warm-up month, where weekends alarmed before


def test_a_step_of_one_sd_of_the_metric_is_found_within_10_points(
        years: list[tuple[np.ndarray, SeriesState, list[int]]], cfg: AnomalyConfig) -> None:
    delays = [delay(state, values, float(np.std(values[:YEAR])), cfg) for values, state, _ in years]
    assert all(d < 10 for d in delays), delays


def test_a_step_of_one_sd_of_the_noise_is_found_within_48_points(
        years: list[tuple[np.ndarray, SeriesState, list[int]]], cfg: AnomalyConfig) -> None:
    delays = [delay(state, values, NOISE, cfg) for values, state, _ in years]
    assert all(d < 48 for d in delays), delays
    assert np.median(delays) <= 24, delays


def test_the_stored_path_judges_the_warm_up_the_same(tmp_path: Path, cfg: AnomalyConfig,
                                                      years: list[tuple[np.ndarray, SeriesState, list[int]]]) -> None:
    values, _, alarmed = years[0]
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    try:
        stored = [i for i in range(WARM_UP)
                  for _ in observe(settings, "r26", hour(i), {"prediction_mean": float(values[i])}, cfg)]
        points = history(settings, "r26", "prediction_mean", limit=WARM_UP + 1)
    finally:
        state_db.reset_engines()
    assert stored == [i for i in alarmed if i < WARM_UP]
    assert len(points) == WARM_UP and [i for i, p in enumerate(points) if p[2]] == stored
    assert len(stored) <= 2, stored  # the first three weeks, where every weekend alarmed before
