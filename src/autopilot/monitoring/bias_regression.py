"""Bias drift of a regression model: each group's mean prediction and MAE against the values at promotion.

The fairness gate records, per sensitive attribute and group, the row count, the MAE, the mean
prediction and (since bias drift reads them) the standard deviations of the absolute errors
(`mae_sd`) and of the predictions (`prediction_sd`). Each window compares, grouping its served
rows as the gate did:

- label-free, with `min_rows` served rows: each group's mean prediction;
- labeled, once `min_labeled_rows` rows carry labels: each group's MAE, and the attribute's
  worst/best MAE ratio over the groups compared.

A group is compared when both sides hold `min_group_rows` rows (labeled rows for the MAE). A
mean's change has a Welch interval (from each side's mean, standard deviation and count); the
ratio's change is the spread of the ratios of normal draws of every group's MAE on each side
(the same normal approximation, `bootstrap_samples` draws). Intervals are Bonferroni-corrected
over the window's comparisons, as for classification. A target's scale is arbitrary, so the
material floor is relative: `min_relative_effect` of the promoted MAE or ratio, and of the
group's prediction standard deviation at promotion for a mean prediction (a share of a mean near
0 would call every change material).

A report written before the gate stored the spreads cannot give an interval: its comparisons are
skipped with a note, and the status is `unsupported` when nothing is left to compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from autopilot.config import ModelConfig
from autopilot.gates.fairness.groups import Grouping
from autopilot.gates.fairness.judging import interval
from autopilot.gates.fairness.metrics import error_ratio
from autopilot.monitoring.bias import (
    NO_RECORD,
    BiasComparison,
    BiasDrift,
    PendingComparison,
    grouping_from,
    judge,
    stopped,
    too_few_rows,
)

__all__ = ["Moments", "check_regression", "welch"]

# (the gate's mean, its standard deviation): what each compared metric reads from a `by_group` entry.
RECORDED = {"mean_prediction": ("mean_prediction", "prediction_sd"), "mae": ("mae", "mae_sd")}


@dataclass(frozen=True)
class Moments:
    """A group's mean, standard deviation and count of one quantity (predictions, absolute errors)."""

    n: int
    mean: float
    sd: float

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of `values` (sample standard deviation; 0 for a single value)."""
        return cls(len(values), float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)


def check_regression(promoted: Mapping[str, Any] | None, features: pd.DataFrame,
                     predictions: Sequence[Any] | np.ndarray, labels: Sequence[Any] | np.ndarray | None,
                     cfg: ModelConfig, found: BiasDrift, seed: int = 0) -> BiasDrift:
    """The regression comparisons of one window, judged into `found` (see the module docstring).

    Args:
        promoted: the champion's fairness gate report (None when not stored).
        features: the window's served rows.
        predictions: the logged predictions of those rows, in order.
        labels: their targets where known (None or NaN elsewhere); None for none.
        cfg: the model config (`monitoring.bias`).
        found: the result so far (status, confidence, floors), filled in and returned.
        seed: the seed of the worst/best MAE ratio's normal draws.
    """
    bc = cfg.monitoring.bias
    found.min_relative_effect = bc.min_relative_effect
    records = _records(promoted)
    if not records:
        return stopped(found, "unavailable", NO_RECORD)
    pred = np.asarray(predictions, dtype=float).ravel()
    if len(pred) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(pred)} predictions")
    y = _targets(labels, len(pred))
    readable = np.isfinite(pred)
    found.rows, found.labeled_rows = int(readable.sum()), int((readable & np.isfinite(y)).sum())
    if found.rows < bc.min_rows:
        return too_few_rows(found, bc.min_rows)
    labeled = found.labeled_rows >= bc.min_labeled_rows
    if not labeled:
        found.notes.append(f"{found.labeled_rows} labeled rows, fewer than the {bc.min_labeled_rows} needed: "
                           "mean predictions only")
    rng = np.random.default_rng(seed)
    pending: list[PendingComparison] = []
    lacking: set[str] = set()
    for name, (grouping, by_group) in records.items():
        missing = [c for c in grouping.columns if c not in features.columns]
        if missing:
            found.notes.append(f"{name}: the window lacks {missing}")
            continue
        maes: dict[str, tuple[Moments, Moments]] = {}
        pending.extend(_means(name, by_group, grouping.assign(features), readable, pred, y, labeled,
                              bc.min_group_rows, bc.min_relative_effect, lacking, maes, found.notes))
        ratio = _ratio(name, maes, bc.min_relative_effect, bc.bootstrap_samples, rng)
        if ratio is not None:
            pending.append(ratio)
    if lacking:
        found.notes.append(f"the champion's fairness gate report predates the spreads by group "
                           f"({', '.join(sorted(lacking))}) a regression window is compared with: those comparisons "
                           "are unsupported until a newer champion is promoted")
    if not pending and lacking:
        found.status = "unsupported"
        return found
    judge(found, pending)
    return found


def _means(name: str, by_group: Mapping[str, Mapping[str, Any]], groups: np.ndarray, readable: np.ndarray,
           pred: np.ndarray, y: np.ndarray, labeled: bool, min_rows: int, relative: float, lacking: set[str],
           maes: dict[str, tuple[Moments, Moments]], notes: list[str]) -> list[PendingComparison]:
    """Each group's mean prediction and (labeled) MAE against the gate's, where both sides have the rows.

    Adds to `lacking` the spreads an older report misses, and to `maes` each compared group's
    MAE moments (promotion, window) for the worst/best ratio.
    """
    out: list[PendingComparison] = []
    small: list[str] = []
    for group, entry in by_group.items():
        member = readable & (groups == group)
        window = {"mean_prediction": pred[member]}
        if labeled:
            rows = member & np.isfinite(y)
            window["mae"] = np.abs(y[rows] - pred[rows])
        for metric, values in window.items():
            before = _recorded(entry, metric)
            if before is None:
                if entry.get(RECORDED[metric][0]) is not None:
                    lacking.add(RECORDED[metric][1])
                continue
            if before.n < min_rows or len(values) < min_rows:
                small.append(group)
                continue
            after = Moments.of(values)
            if metric == "mae":
                maes[group] = (before, after)
            # A mean prediction near 0 (a centred target) makes a share of itself meaningless: its
            # floor is a share of the group's prediction spread (a standardized effect) instead.
            scale = before.sd if metric == "mean_prediction" else abs(before.mean)
            found = BiasComparison(name, group, metric, promoted=before.mean, window=after.mean,
                                   promoted_rows=before.n, window_rows=after.n, min_change=relative * scale)
            out.append((found, _welch_at(after, before)))
    if small:
        notes.append(f"{name}: too few rows to compare ({', '.join(sorted(set(small)))}; {min_rows} needed on both "
                     "sides)")
    return out


def _welch_at(after: Moments, before: Moments) -> Callable[[float], list[float] | None]:
    """The Welch interval of this change at a confidence given later (once the window's test count is known)."""
    return lambda level: welch(after, before, level)


def _ratio(name: str, maes: dict[str, tuple[Moments, Moments]], relative: float, samples: int,
           rng: np.random.Generator) -> PendingComparison | None:
    """The worst/best MAE ratio over the groups whose MAE is compared, its change from normal draws of the means."""
    if len(maes) < 2:
        return None
    before, after = [b for b, _ in maes.values()], [a for _, a in maes.values()]
    point_before, point_after = error_ratio(np.array([[m.mean for m in before]]))[0], error_ratio(
        np.array([[m.mean for m in after]]))[0]
    if not (math.isfinite(point_before) and math.isfinite(point_after)):
        return None
    diffs = error_ratio(_draws(after, samples, rng)) - error_ratio(_draws(before, samples, rng))
    found = BiasComparison(name, None, "group_error_ratio", promoted=float(point_before), window=float(point_after),
                           promoted_rows=sum(m.n for m in before), window_rows=sum(m.n for m in after),
                           min_change=relative * float(point_before))
    return found, lambda level: interval(diffs, level)


def _draws(moments: list[Moments], samples: int, rng: np.random.Generator) -> np.ndarray:
    """(samples, groups) normal draws of each group's mean: N(mean, sd / sqrt(n))."""
    return np.column_stack([rng.normal(m.mean, m.sd / math.sqrt(m.n), size=samples) for m in moments])


def welch(after: Moments, before: Moments, confidence: float) -> list[float]:
    """Welch's interval of mean(after) - mean(before) at `confidence` (unequal variances, Satterthwaite df)."""
    d = after.mean - before.mean
    va, vb = after.sd ** 2 / after.n, before.sd ** 2 / before.n
    if va + vb == 0:  # both constant: the difference is known exactly
        return [d, d]
    df = (va + vb) ** 2 / (va ** 2 / max(after.n - 1, 1) + vb ** 2 / max(before.n - 1, 1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, df)) * math.sqrt(va + vb)
    return [d - half, d + half]


def _recorded(entry: Mapping[str, Any], metric: str) -> Moments | None:
    """The gate's moments of `metric` for one group; None when the report lacks them (older reports: no sd)."""
    mean_key, sd_key = RECORDED[metric]
    mean, sd, n = entry.get(mean_key), entry.get(sd_key), entry.get("count")
    if mean is None or sd is None or not n:
        return None
    return Moments(int(n), float(mean), float(sd))


def _records(report: Mapping[str, Any] | None) -> dict[str, tuple[Grouping, dict[str, Mapping[str, Any]]]]:
    """Per attribute: its grouping and each group's `by_group` entry (those with an MAE or mean prediction)."""
    attributes = ((report or {}).get("details") or {}).get("attributes") or {}
    out: dict[str, tuple[Grouping, dict[str, Mapping[str, Any]]]] = {}
    for name, attr in attributes.items():
        if not isinstance(attr, dict) or not attr.get("by_group"):
            continue
        groups: dict[str, Mapping[str, Any]] = {str(g): e for g, e in attr["by_group"].items()
                  if isinstance(e, dict) and (e.get("mae") is not None or e.get("mean_prediction") is not None)}
        if groups:
            out[str(name)] = (grouping_from(str(name), attr.get("grouping") or {}), groups)
    return out


def _targets(labels: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Targets as float, NaN where a row has none (or an unreadable one)."""
    if labels is None:
        return np.full(n, np.nan)
    values = pd.to_numeric(pd.Series(np.asarray(labels, dtype=object).ravel()), errors="coerce").to_numpy(float)
    if len(values) != n:
        raise ValueError(f"{n} predictions but {len(values)} labels")
    return values
