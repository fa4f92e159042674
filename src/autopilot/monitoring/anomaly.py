"""Adaptive anomaly detection on the monitor's metric series (baselines learned from history).

Each (model, series) pair, e.g. `prediction_mean` or `latency_p95_ms` of one model, is a time
series with one point per monitoring window. Every threshold comes from `AnomalyConfig`; the
constants below are statistical conventions (Gaussian consistency factors, a minimum sample
for a median), not limits on any metric.

Method, for a new point (t, v) judged against the retained history (never against itself):

- Baseline: the median of the history at the same seasonal phase of t (UTC). `hour_of_week`
  needs at least `MIN_PHASE_POINTS` (3, the smallest sample whose median resists one outlier)
  same-phase points; with fewer it falls back to the same hour of day, then to the median of
  the whole history. `hour_of_day` and `day_of_week` fall back to the whole history directly;
  `none` always uses it. The first weeks of an `hour_of_week` series are therefore judged on
  a daily profile (the weekly part of the pattern then counts as noise: see the warm-up below).
- Scale: the robust sd of the history's residuals, 1.4826 * MAD, where a history point's
  residual is its value minus the median of the OTHER points at its phase (leave-one-out, with
  the same fallback). Leave-one-out makes the residuals out-of-sample like the new point's:
  in-sample residuals of 5-point medians are visibly too small (one of them is always zero),
  which would understate the scale and raise false alarms. When more than half the residuals
  are exactly zero (a quantized or mostly-zero series, e.g. an error rate), the MAD is 0 and the
  first non-zero 75/90/95/99 % quantile of |residual| divided by its Gaussian value is used.
  The scale is then floored at `REL_SCALE_FLOOR` (1e-4) of |baseline| and at `ABS_SCALE_FLOOR`
  (1e-9): a constant series has a scale of 0, and a change smaller than 0.01 % of the level is
  never worth an alarm (it is float rounding); at a level of 0 the absolute floor only keeps
  the division defined, so any change from a constant zero alarms.
- Robust z = (v - baseline) / scale, fed to three detectors:
  `spike` fires when |z| >= z_threshold; `ewma` when the EWMA of z (smoothing ewma_alpha, from 0)
  is beyond ewma_threshold times its asymptotic sd sqrt(alpha / (2 - alpha)); `cusum_up` /
  `cusum_down`: two-sided CUSUM of z, S+ = max(0, S+ + z - k), S- = max(0, S- - z - k), firing
  at cusum_h (k = cusum_k). The spike catches one large outlier, the EWMA moderate recent
  changes, the CUSUM small sustained shifts.
- No detector runs before `min_history` points have been seen (the baseline needs data; the
  EWMA and CUSUM start from zero then).
- Warm-up of a seasonal profile: while the baseline falls back to a coarser level than the
  configured seasonality (the first three weeks of `hour_of_week`, three days of `hour_of_day`),
  the part of the pattern that level cannot see (a weekend, for a daily profile) is noise. The
  MAD ignores it (a weekend is 2/7 of the residuals, a minority), so the scale is then at least
  the residuals' plain standard deviation, and only the spike detector runs: the EWMA and the
  CUSUM, built to accumulate small sustained deviations, would read every weekend as a shift
  (measured: 16-18 false alarms in the first month of an hourly weekly-seasonal series; with the
  warm-up rule none, `tests/reliability/test_r26_anomaly_calibration.py`).
- De-duplication: at most one alarm per point, from the detector furthest past its own threshold
  (`Alarm.score` = statistic / threshold). After an alarm, `cooldown_points` points raise none.
  Any firing, reported or muted by the cooldown, restarts all three detectors from zero: the
  evidence has been acted on, so a change that persists re-alarms at the detectors' own pace
  after the cooldown, and one spike cannot leave the CUSUM primed for a second alarm.

Alarmed points stay in the history, unmodified: the median and the MAD already ignore isolated
outliers (an extreme point moves a same-phase median by one order statistic at most), while a
level shift that persists becomes the baseline once it holds for more than half the retained
same-phase points. Excluding alarmed points would instead make a real shift alarm forever.
The history is bounded to the last `HORIZON_PERIODS` (8) seasonal periods (a week for
`hour_of_week` and `day_of_week`, a day for `hour_of_day` and `none`), at most `MAX_HISTORY`
points (8 weeks of hourly points) and never fewer than `min_history` points. So a sustained
change is learned after about 4 weeks with a weekly profile and about 4 days otherwise; until
then it re-alarms, at most once per cooldown.

Assumptions: the noise is roughly the same at every phase (one scale per series), and the
series has no trend of its own (a median baseline lags a trend, which eventually alarms).

Calibration (hourly series with a daily and weekly pattern plus Gaussian noise, 5 weeks of
history, `hour_of_week`, cooldown 6, 40 seeds; delays count points after a level step, the
first being 0): the robust z of in-control points has sd 1.01. The config defaults
(ewma_threshold 3, cusum_h 5: textbook limits, each with an in-control run length of a few
hundred points) give 2.5 false alarms per 30 days, a 1-sd step found after a median of 8
points (73 % within 12), a 2-sd step after 2. ewma_threshold 3.5 with cusum_h 7 give 0.5 false
alarms per 30 days (none in 25 of 40 months), a 1-sd step found after a median of 12 points
(88 % within 24, all within 48; mostly by the CUSUM), a 2-sd step after 3.5 (all within 9).
Finding a 1-sd step within 12 points 90 % of the time at under one false alarm a month is out
of reach for any detector: the mean of 12 points alone has a standard error of 0.29 sd.

Points not newer than the last one (a late backfill) go into the history for later baselines
but are not judged: the EWMA and CUSUM are sequential. `observe` stores the state per (model,
series) in the state database (`anomaly_state`) and every observed point with its alarms
(`anomaly_points`), so a rerun of the same window returns the alarms of the first run and
never updates a state twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from sqlalchemy import insert, select

from autopilot.adapters import state_db
from autopilot.adapters.state_db.tables import ANOMALY_POINTS as POINTS
from autopilot.adapters.state_db.tables import ANOMALY_STATE as STATES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from numpy.typing import NDArray
    from sqlalchemy.engine import Connection

    from autopilot.config import AnomalyConfig
    from autopilot.settings import Settings

__all__ = ["Alarm", "SeriesState", "history", "observe", "update"]

log = logging.getLogger(__name__)

MIN_PHASE_POINTS: Final = 3  # the smallest sample whose median resists one outlier
MAD_TO_SD: Final = 1.4826  # 1 / Phi^-1(0.75): the MAD of Gaussian noise times this is its sd
# When the MAD is 0: quantiles of |residual| and the same quantiles of |N(0, 1)|.
ZERO_MAD_QUANTILES: Final = ((0.75, 1.1503), (0.90, 1.6449), (0.95, 1.9600), (0.99, 2.5758))
REL_SCALE_FLOOR: Final = 1e-4  # of |baseline|: changes below 0.01 % of the level are rounding
ABS_SCALE_FLOOR: Final = 1e-9  # keeps z defined on a constant series at level 0
HORIZON_PERIODS: Final = 8  # seasonal periods of history kept
MAX_HISTORY: Final = 8 * 7 * 24  # 8 weeks of hourly points
STATE_VERSION: Final = 1

_HOUR = 3600.0
_DAY = 86400.0
_WEEK = 7 * _DAY
_PERIOD = {"hour_of_week": _WEEK, "day_of_week": _WEEK, "hour_of_day": _DAY, "none": _DAY}
# The phase levels tried in order for each seasonality; the last (global) always applies.
_LEVELS = {
    "hour_of_week": ("hour-of-week", "hour-of-day", "global"),
    "day_of_week": ("day-of-week", "global"),
    "hour_of_day": ("hour-of-day", "global"),
    "none": ("global",),
}

Detector = str  # "spike" | "ewma" | "cusum_up" | "cusum_down"


@dataclass(frozen=True)
class Alarm:
    """One anomaly on one series at one point.

    Attributes:
        series: the metric series, e.g. `prediction_mean`.
        at: the point's time (timezone-aware, UTC).
        value: the observed value; baseline: what the history predicted for it; scale: the
            robust sd the deviation is measured in (so z = (value - baseline) / scale).
        score: how far past its threshold the reporting detector is (statistic / threshold,
            >= 1); the strongest of the detectors that fired on the point.
        detector: `spike`, `ewma`, `cusum_up` or `cusum_down`.
        reason: one human-readable sentence.
    """

    series: str
    at: datetime
    value: float
    baseline: float
    scale: float
    score: float
    detector: Detector
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (`at` in ISO 8601)."""
        return {"series": self.series, "at": self.at.isoformat(), "value": self.value, "baseline": self.baseline,
                "scale": self.scale, "score": self.score, "detector": self.detector, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alarm:
        """The alarm `as_dict` described."""
        return cls(series=str(data["series"]), at=_utc(datetime.fromisoformat(data["at"])),
                   value=float(data["value"]), baseline=float(data["baseline"]), scale=float(data["scale"]),
                   score=float(data["score"]), detector=str(data["detector"]), reason=str(data["reason"]))


def _empty() -> NDArray[np.float64]:
    return np.empty(0, dtype=np.float64)


@dataclass(eq=False)
class SeriesState:
    """What the detector remembers of one series between points (JSON via `as_dict`/`from_dict`).

    `update` never changes a state in place; it returns a new one (which may share arrays).

    Attributes:
        series: the series' name.
        times: the retained history's times (epoch seconds, UTC), ascending; values: its values
            (numpy arrays: the baseline is computed on them at every point, lists would be
            converted every time).
        ewma: the EWMA of robust z-scores; cusum_pos, cusum_neg: the two CUSUM sums.
        last_alarm_index: the `points_seen` index of the last reported alarm (None: never).
        points_seen: in-order points observed (late backfills excluded).
        last_at: the newest point's time (epoch seconds, UTC), None before the first.
    """

    series: str = ""
    times: NDArray[np.float64] = field(default_factory=_empty)
    values: NDArray[np.float64] = field(default_factory=_empty)
    ewma: float = 0.0
    cusum_pos: float = 0.0
    cusum_neg: float = 0.0
    last_alarm_index: int | None = None
    points_seen: int = 0
    last_at: float | None = None

    @property
    def history(self) -> list[tuple[datetime, float]]:
        """The retained history as (time, value) pairs, oldest first."""
        return [(datetime.fromtimestamp(t, UTC), v)
                for t, v in zip(self.times.tolist(), self.values.tolist(), strict=True)]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {"version": STATE_VERSION, "series": self.series, "times": self.times.tolist(),
                "values": self.values.tolist(), "ewma": self.ewma, "cusum_pos": self.cusum_pos,
                "cusum_neg": self.cusum_neg, "last_alarm_index": self.last_alarm_index,
                "points_seen": self.points_seen, "last_at": self.last_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesState:
        """The state `as_dict` described.

        Raises:
            ValueError: an unknown state version, or times and values of different lengths.
        """
        version = data.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ValueError(f"anomaly state version {version} is not {STATE_VERSION}")
        times = np.asarray(data.get("times", []), dtype=np.float64)
        values = np.asarray(data.get("values", []), dtype=np.float64)
        if len(times) != len(values):
            raise ValueError(f"anomaly state has {len(times)} times but {len(values)} values")
        last_alarm = data.get("last_alarm_index")
        last_at = data.get("last_at")
        return cls(series=str(data.get("series", "")), times=times, values=values,
                   ewma=float(data.get("ewma", 0.0)), cusum_pos=float(data.get("cusum_pos", 0.0)),
                   cusum_neg=float(data.get("cusum_neg", 0.0)),
                   last_alarm_index=None if last_alarm is None else int(last_alarm),
                   points_seen=int(data.get("points_seen", 0)), last_at=None if last_at is None else float(last_at))


@dataclass(frozen=True)
class _Baseline:
    value: float
    scale: float
    level: str  # the phase level the baseline came from
    phase_points: int  # same-phase points behind the median
    history_points: int
    wanted: str  # the first level of the seasonality (to say when it fell back)

    @property
    def warming(self) -> bool:
        """The configured seasonal profile is not known yet (too little history): a coarser level judges."""
        return self.level != self.wanted


def update(state: SeriesState | None, series: str, at: datetime, value: float | None,
           cfg: AnomalyConfig) -> tuple[SeriesState, list[Alarm]]:
    """Judge one point of a series against its history, then learn it (pure: `state` is not changed).

    Args:
        state: the series' state so far (None: a new series).
        series: the series' name (used in the alarm).
        at: the point's time (naive means UTC).
        value: the point's value; None, NaN or infinite is skipped (no alarm, not learned).
        cfg: the detection settings.

    Returns:
        The new state and the alarms of this point (at most one).
    """
    current = state if state is not None else SeriesState(series=series)
    if value is None or not math.isfinite(value):
        return current, []
    value = float(value)
    t = _utc(at).timestamp()
    if current.last_at is not None and t <= current.last_at:
        return _learn_late(current, t, value, cfg), []

    index = current.points_seen
    ewma, cusum_pos, cusum_neg = current.ewma, current.cusum_pos, current.cusum_neg
    last_alarm = current.last_alarm_index
    alarms: list[Alarm] = []
    # (The length check only guards a hand-made state: `_retain` keeps min_history points.)
    if index >= cfg.min_history and len(current.times) >= MIN_PHASE_POINTS:
        base = _baseline(current.times, current.values, t, cfg.seasonality)
        z = (value - base.value) / base.scale
        if base.warming:  # only spikes until the seasonal profile is known (module docstring)
            ewma, cusum_pos, cusum_neg = 0.0, 0.0, 0.0
        else:
            ewma = cfg.ewma_alpha * z + (1.0 - cfg.ewma_alpha) * ewma
            cusum_pos = max(0.0, cusum_pos + z - cfg.cusum_k)
            cusum_neg = max(0.0, cusum_neg - z - cfg.cusum_k)
        ewma_limit = cfg.ewma_threshold * math.sqrt(cfg.ewma_alpha / (2.0 - cfg.ewma_alpha))
        fired = _fired(z, ewma, cusum_pos, cusum_neg, ewma_limit, cfg)
        if fired:
            score, detector, statistic = max(fired, key=lambda f: f[0])
            ewma, cusum_pos, cusum_neg = 0.0, 0.0, 0.0  # a firing, reported or muted, restarts them all
            cooling = last_alarm is not None and index - last_alarm <= cfg.cooldown_points
            if not cooling:
                when = datetime.fromtimestamp(t, UTC)
                reason = _reason(series, value, base, z, detector, statistic, ewma_limit, cfg)
                alarms.append(Alarm(series=series, at=when, value=value, baseline=base.value, scale=base.scale,
                                    score=score, detector=detector, reason=reason))
                last_alarm = index

    times, values = _retain(np.append(current.times, t), np.append(current.values, value), cfg)
    new = SeriesState(series=series or current.series, times=times, values=values, ewma=ewma,
                      cusum_pos=cusum_pos, cusum_neg=cusum_neg, last_alarm_index=last_alarm,
                      points_seen=index + 1, last_at=t)
    return new, alarms


def _fired(z: float, ewma: float, cusum_pos: float, cusum_neg: float, ewma_limit: float,
           cfg: AnomalyConfig) -> list[tuple[float, Detector, float]]:
    """The detectors beyond their thresholds, as (score: statistic / threshold, detector, statistic)."""
    fired: list[tuple[float, Detector, float]] = []
    if abs(z) >= cfg.z_threshold:
        fired.append((abs(z) / cfg.z_threshold, "spike", z))
    if abs(ewma) >= ewma_limit:
        fired.append((abs(ewma) / ewma_limit, "ewma", ewma))
    if cusum_pos >= cfg.cusum_h:
        fired.append((cusum_pos / cfg.cusum_h, "cusum_up", cusum_pos))
    if cusum_neg >= cfg.cusum_h:
        fired.append((cusum_neg / cfg.cusum_h, "cusum_down", cusum_neg))
    return fired


def _learn_late(state: SeriesState, t: float, value: float, cfg: AnomalyConfig) -> SeriesState:
    """Add a point older than the newest one to the history only (the detectors are sequential)."""
    position = int(np.searchsorted(state.times, t))
    if position < len(state.times) and state.times[position] == t:
        return state  # already learned: never count a point twice
    times, values = _retain(np.insert(state.times, position, t), np.insert(state.values, position, value), cfg)
    return SeriesState(series=state.series, times=times, values=values, ewma=state.ewma,
                       cusum_pos=state.cusum_pos, cusum_neg=state.cusum_neg,
                       last_alarm_index=state.last_alarm_index, points_seen=state.points_seen,
                       last_at=state.last_at)


def _retain(times: NDArray[np.float64], values: NDArray[np.float64], cfg: AnomalyConfig) -> tuple[
        NDArray[np.float64], NDArray[np.float64]]:
    """Keep the points of the last HORIZON_PERIODS periods, at most MAX_HISTORY, at least min_history."""
    horizon = HORIZON_PERIODS * _PERIOD[cfg.seasonality]
    recent = len(times) - int(np.searchsorted(times, times[-1] - horizon, side="right"))
    keep = min(max(recent, cfg.min_history), max(MAX_HISTORY, cfg.min_history))
    if keep >= len(times):
        return times, values
    return times[-keep:], values[-keep:]


def _phase_keys(hours: NDArray[np.int64], level: str) -> NDArray[np.int16]:
    """The phase of each time (given as whole hours since the epoch, UTC) at one level."""
    if level == "global":
        return np.zeros(len(hours), dtype=np.int16)
    small = hours.astype(np.int32)  # hours since 1970 fit; narrower integers are faster here
    if level == "hour-of-day":
        return (small % 24).astype(np.int16)
    weekday = (small // 24 + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    keys = weekday * 24 + small % 24 if level == "hour-of-week" else weekday
    return keys.astype(np.int16)  # small integers: numpy's stable sort is then a radix sort


def _phase_key(hour: int, level: str) -> int:
    """The phase of one time (whole hours since the epoch, UTC); `_phase_keys` for a single point."""
    weekday = (hour // 24 + 3) % 7
    return {"hour-of-week": weekday * 24 + hour % 24, "hour-of-day": hour % 24, "day-of-week": weekday}.get(level, 0)


def _baseline(times: NDArray[np.float64], values: NDArray[np.float64], t: float, seasonality: str) -> _Baseline:
    """The seasonal baseline of a point at `t` and the robust scale of the history's residuals."""
    levels = _LEVELS[seasonality]
    hours = np.floor(times / _HOUR).astype(np.int64)
    at = math.floor(t / _HOUR)
    keys: dict[str, NDArray[np.int16]] = {}
    chosen, same = levels[-1], np.ones(len(values), dtype=bool)
    for level in levels:
        keys[level] = _phase_keys(hours, level)
        mask = keys[level] == _phase_key(at, level)
        if level == levels[-1] or np.count_nonzero(mask) >= MIN_PHASE_POINTS:
            chosen, same = level, mask
            break
    baseline = _median(values[same])
    by_value = np.argsort(values)  # shared by every level's leave-one-out medians
    residuals = np.full(len(values), np.nan)
    pending = np.ones(len(values), dtype=bool)
    for position, level in enumerate(levels):
        if level not in keys:
            keys[level] = _phase_keys(hours, level)
        medians, others = _loo_medians(keys[level], values, by_value)
        # The same fallback as the baseline: a phase needs MIN_PHASE_POINTS other points.
        needed = 1 if position == len(levels) - 1 else MIN_PHASE_POINTS
        ok = pending & (others >= needed)
        residuals[ok] = values[ok] - medians[ok]
        pending &= ~ok
        if not pending.any():
            break
    scale = max(_robust_scale(residuals[~pending]), REL_SCALE_FLOOR * abs(baseline), ABS_SCALE_FLOOR)
    if chosen != levels[0]:  # warming up: what the coarser level cannot model counts as noise
        scale = max(scale, float(np.std(residuals[~pending])))
    return _Baseline(value=baseline, scale=scale, level=chosen, phase_points=int(np.count_nonzero(same)),
                     history_points=len(values), wanted=levels[0])


def _loo_medians(keys: NDArray[np.int16], values: NDArray[np.float64], by_value: NDArray[np.intp]) -> tuple[
        NDArray[np.float64], NDArray[np.int64]]:
    """Per point: the median of the other points with the same key, and how many there are.

    `by_value` orders `values` ascending; a stable sort of it by key orders by key, then value.
    """
    n = len(values)
    order = by_value[np.argsort(keys[by_value], kind="stable")]
    sorted_keys, sorted_values = keys[order], values[order]
    starts_at = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    sizes = np.diff(np.append(starts_at, n))
    start = np.repeat(starts_at, sizes)
    others = np.repeat(sizes, sizes) - 1
    rank = np.arange(n) - start
    # The median of the group without the point at `rank`: the middle positions of the remaining
    # `others` values, mapped back to positions in the whole group (skipping the removed one).
    low = np.maximum(others - 1, 0) // 2
    high = others // 2
    low_pos = np.minimum(start + low + (low >= rank), n - 1)
    high_pos = np.minimum(start + high + (high >= rank), n - 1)
    medians = np.where(others > 0, (sorted_values[low_pos] + sorted_values[high_pos]) / 2, np.nan)
    result = np.empty(n)
    counts = np.empty(n, dtype=np.int64)
    result[order] = medians
    counts[order] = others
    return result, counts


def _median(values: NDArray[np.float64]) -> float:
    """np.median without its overhead (it dominates on the few hundred points here)."""
    n = len(values)
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return float((part[half - 1] + part[half]) / 2)


def _robust_scale(residuals: NDArray[np.float64]) -> float:
    """1.4826 * MAD; when the MAD is 0 (mostly-equal residuals) the first non-zero upper quantile instead."""
    if len(residuals) == 0:
        return 0.0
    deviations = np.abs(residuals - _median(residuals))
    mad = _median(deviations)
    if mad > 0:
        return MAD_TO_SD * mad
    for q, gaussian in ZERO_MAD_QUANTILES:
        spread = float(np.quantile(deviations, q))
        if spread > 0:
            return spread / gaussian
    return 0.0


def _reason(series: str, value: float, base: _Baseline, z: float, detector: Detector, statistic: float,
            ewma_limit: float, cfg: AnomalyConfig) -> str:
    profile = _profile(base)
    if detector == "spike":
        side = "above" if z > 0 else "below"
        return (f"{series} {value:.4g} is {abs(z):.1f} robust sd {side} its baseline {base.value:.4g} "
                f"({profile})")
    latest = f"latest {value:.4g} vs baseline {base.value:.4g}, z {z:+.1f} ({profile})"
    if detector == "ewma":
        side = "above" if statistic > 0 else "below"
        return (f"{series} is running {side} its baseline: the EWMA of its robust z-scores is {statistic:+.2f}, "
                f"{abs(statistic) / ewma_limit * cfg.ewma_threshold:.1f} of its own sd (limit "
                f"{cfg.ewma_threshold:g}); {latest}")
    side = "up" if detector == "cusum_up" else "down"
    return (f"{series} has shifted {side}: the CUSUM of its robust z-scores reached {statistic:.1f} "
            f"(limit {cfg.cusum_h:g}, slack {cfg.cusum_k:g}); {latest}")


def _profile(base: _Baseline) -> str:
    if base.level == "global":
        source = f"median of all {base.history_points} points of history"
    else:
        source = f"{base.level} profile, {base.phase_points} same-phase points of {base.history_points} in history"
    if base.level != base.wanted:
        source += f"; too few {base.wanted} points yet"
    return source


# --- persistence --------------------------------------------------------------------------------

def observe(settings: Settings, model: str, at: datetime, values: Mapping[str, float | None],
            cfg: AnomalyConfig) -> list[Alarm]:
    """Judge and learn one window's metric values of a model; the alarms raised.

    Each series' state is read from `anomaly_state`, updated and written back, and the point is
    recorded in `anomaly_points`, in one transaction that holds the series' row lock (SQLite:
    the database's write lock), so concurrent runs cannot interleave. A point already recorded
    for (model, series, at), by a task retry or a DAG rerun, is not judged again: its recorded
    alarms are returned and the state is left alone. None, NaN and infinite values are skipped.

    Args:
        settings: where the state database is.
        model: the model's name.
        at: the window's time (usually its end; naive means UTC).
        values: series name -> value.
        cfg: the detection settings (`ModelConfig.monitoring.anomaly`).
    """
    when = _utc(at)
    wanted = {name: float(v) for name, v in values.items() if v is not None and math.isfinite(v)}
    if not wanted:
        return []
    alarms: list[Alarm] = []
    with state_db.engine(settings).begin() as conn:
        for name, value in wanted.items():
            alarms.extend(_observe_one(conn, model, name, when, value, cfg))
    return alarms


def _observe_one(conn: Connection, model: str, series: str, at: datetime, value: float,
                 cfg: AnomalyConfig) -> list[Alarm]:
    raw = _lock_state(conn, model, series)
    recorded = conn.execute(select(POINTS.c.value, POINTS.c.alarms).where(
        POINTS.c.model == model, POINTS.c.series == series, POINTS.c.at == at)).first()
    if recorded is not None:
        if recorded.value != value:
            log.warning("%s/%s at %s was observed before as %r; keeping that, ignoring %r",
                        model, series, at.isoformat(), recorded.value, value)
        return [Alarm.from_dict(a) for a in json.loads(recorded.alarms)]
    state = SeriesState.from_dict(json.loads(raw)) if raw else None
    new, alarms = update(state, series, at, value, cfg)
    conn.execute(STATES.update().where(STATES.c.model == model, STATES.c.series == series).values(
        state=json.dumps(new.as_dict(), allow_nan=False), updated_at=datetime.now(UTC)))
    conn.execute(insert(POINTS).values(model=model, series=series, at=at, value=value,
                                       alarms=json.dumps([a.as_dict() for a in alarms], allow_nan=False)))
    return alarms


def _lock_state(conn: Connection, model: str, series: str) -> str | None:
    """Hold the series' state row until the transaction ends; its JSON (None for a new series)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(STATES).values(model=model, series=series).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(STATES).values(model=model, series=series).on_conflict_do_nothing())
    row = conn.execute(select(STATES.c.state).where(STATES.c.model == model, STATES.c.series == series)
                       .with_for_update()).first()
    return None if row is None else row.state


def history(settings: Settings, model: str, series: str, limit: int = 500) -> list[tuple[datetime, float, bool]]:
    """The newest `limit` observed points of a series as (time, value, alarmed), oldest first."""
    query = (select(POINTS.c.at, POINTS.c.value, POINTS.c.alarms)
             .where(POINTS.c.model == model, POINTS.c.series == series)
             .order_by(POINTS.c.at.desc()).limit(limit))
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(query).all()
    return [(_utc(row.at), float(row.value), bool(json.loads(row.alarms))) for row in reversed(rows)]


def _utc(at: datetime) -> datetime:
    """`at` as an aware UTC datetime (naive values are UTC already: SQLite drops the zone)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
