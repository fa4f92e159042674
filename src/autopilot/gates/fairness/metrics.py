"""Group metrics of one grouping, with their bootstrap intervals: classification and regression.

Classification: fairlearn's `MetricFrame` by group and, over groups with at least
`min_group_size` rows, the demographic parity ratio and difference and the equalized odds
difference. Regression: MAE by group (with the standard deviations of the absolute errors and of
the predictions, which bias drift compares windows with) and the worst/best MAE ratio.

Bootstrap: groups are resampled separately (a stratified bootstrap keeps every group's size).
For classification every statistic depends only on each group's four confusion cells, so a
group's resample is drawn directly as multinomial cell counts: exactly the row bootstrap's
distribution, at a cost independent of the number of rows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, mean_absolute_error

from autopilot.config import FairnessGateConfig
from autopilot.gates.fairness.groups import Grouping
from autopilot.gates.fairness.judging import (
    Band,
    Outcome,
    interval,
    judge,
    of_groups,
    pair,
    split_groups,
    ungroupable,
)
from autopilot.gates.intervals import INCONCLUSIVE
from autopilot.reports import json_safe

__all__ = ["classification_outcome", "error_ratio", "regression_outcome", "replicate_disparities"]

# Regression bootstrap: the replicate x row index block held at once.
CHUNK_CELLS = 2_000_000


def classification_outcome(grouping: Grouping, groups: np.ndarray, y: np.ndarray, scores: np.ndarray,
                           fc: FairnessGateConfig, rng: np.random.Generator) -> Outcome:
    """Selection and error rates by group, the parity and equalized odds metrics, each judged by its interval."""
    name = grouping.name
    pred = (scores >= fc.threshold).astype(float)
    gated, small = split_groups(groups, fc)
    odds_groups, odds_small = _odds_groups(groups, y, gated, fc.min_group_size)
    found = Outcome(details={"by_group": _by_group_classification(groups, y, pred), "gated_groups": gated,
                              "reported_not_gated": small, "equalized_odds_groups": odds_groups,
                              "equalized_odds_reported_not_gated": odds_small})
    if len(gated) < 2:
        found.details["note"] = f"cannot be judged: fewer than two groups with at least {fc.min_group_size} rows"
        found.hard.append(ungroupable(grouping, gated, small, fc, len(y)))
        return found
    cells = _bootstrap_cells(groups, y, pred, gated, fc.bootstrap_samples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):  # the selection rate of each resampled group
        selected = (cells[..., 0] + cells[..., 2]) / cells.sum(axis=2)
    found.details["group_intervals"] = {"metric": "selection_rate", "confidence": fc.confidence, "groups": {
        g: interval(selected[:, j], fc.confidence) for j, g in enumerate(gated)}}
    mask = np.isin(groups, gated)
    metrics = found.metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratio = float(demographic_parity_ratio(y[mask], pred[mask], sensitive_features=groups[mask]))
        # fairlearn gives 0/0 = NaN when no one is selected; that is parity, as in the bootstrap.
        metrics["demographic_parity_ratio"] = 1.0 if math.isnan(ratio) and pred[mask].sum() == 0 else ratio
        metrics["demographic_parity_difference"] = float(
            demographic_parity_difference(y[mask], pred[mask], sensitive_features=groups[mask]))
        if len(odds_groups) >= 2:
            odds = np.isin(groups, odds_groups)
            metrics["equalized_odds_difference"] = float(equalized_odds_difference(
                y[odds], pred[odds], sensitive_features=groups[odds], agg="worst_case"))
    replicates = replicate_disparities(cells, gated, odds_groups)
    words = _Words(groups, y, pred)
    bands = [Band("demographic_parity_ratio", "ratio", minimum=fc.demographic_parity_ratio_min),
             Band("demographic_parity_difference", "difference", maximum=fc.demographic_parity_difference_max),
             Band("equalized_odds_difference", "largest gap", maximum=fc.equalized_odds_difference_max)]
    for band in bands:
        if band.metric in metrics:
            plain = words.odds(odds_groups) if band.metric == "equalized_odds_difference" else words.selection(gated)
            judge(found, name, band, metrics[band.metric], interval(replicates[band.metric], fc.confidence), plain,
                   fc.confidence, len(y))
        elif band.bound is not None:  # equalized odds gated, but too few groups with both label classes
            _odds_too_thin(found, name, band, odds_small, fc.min_group_size)
    return found


def _odds_too_thin(found: Outcome, name: str, band: Band, odds_small: dict[str, dict[str, int]],
                   min_size: int) -> None:
    """A gated equalized odds that cannot be measured is inconclusive, never a silent pass."""
    found.details[band.metric] = {"value": None, "ci": None, "gated": True, "status": INCONCLUSIVE,
                                  "rows_needed": None}
    listing = ", ".join(f"{g}: {c['positives']} positive and {c['negatives']} negative" for g, c in odds_small.items())
    found.unsure.append(f"{name}: inconclusive: fewer than two groups hold at least {min_size} positive and "
                        f"{min_size} negative labels ({listing}), so true and false positive rates cannot be "
                        f"compared ({band.metric}); give the holdout more rows or lower gates.fairness.min_group_size")


class _Words:
    """Rates by group in plain words, with the holdout labels' own rates beside them."""

    def __init__(self, groups: np.ndarray, y: np.ndarray, pred: np.ndarray) -> None:
        self.selected: dict[str, float] = {}
        self.label: dict[str, float] = {}
        self.tpr: dict[str, float] = {}
        self.fpr: dict[str, float] = {}
        for group in np.unique(groups):
            g = str(group)
            yg, pg = y[groups == group], pred[groups == group]
            self.selected[g], self.label[g] = float(pg.mean()), float(yg.mean())
            self.tpr[g] = float(pg[yg == 1].mean()) if (yg == 1).any() else math.nan
            self.fpr[g] = float(pg[yg == 0].mean()) if (yg == 0).any() else math.nan

    def labels(self, low: str, high: str) -> str:
        return (f"the labels themselves are positive for {self.label[low]:.0%} of {low} and "
                f"{self.label[high]:.0%} of {high}")

    def selection(self, among: list[str]) -> str:
        """A template with {numbers}: who is selected least (the disadvantaged group) and most."""
        low, high = pair(self.selected, among)
        return (f"selected {self.selected[low]:.0%} of {low} and {self.selected[high]:.0%} of {high}"
                f"{of_groups(among)}: {{numbers}}; {self.labels(low, high)}")

    def odds(self, among: list[str]) -> str:
        """A template with {numbers}: true and false positive rates, lowest and highest group, and their gaps."""
        t_low, t_high = pair(self.tpr, among)
        f_low, f_high = pair(self.fpr, among)
        t_gap, f_gap = self.tpr[t_high] - self.tpr[t_low], self.fpr[f_high] - self.fpr[f_low]
        low, high = (t_low, t_high) if t_gap >= f_gap else (f_low, f_high)
        return (f"true positive rate (positives selected) {self.tpr[t_low]:.0%} for {t_low} and "
                f"{self.tpr[t_high]:.0%} for {t_high}, gap {t_gap:.2f}; false positive rate (negatives selected) "
                f"{self.fpr[f_low]:.0%} for {f_low} and {self.fpr[f_high]:.0%} for {f_high}, gap {f_gap:.2f}"
                f"{of_groups(among)}: {{numbers}}; {self.labels(low, high)}")


def _odds_groups(groups: np.ndarray, y: np.ndarray, gated: list[str],
                 min_size: int) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Groups with at least `min_size` positive and `min_size` negative labels.

    A TPR rests on a group's positives and an FPR on its negatives: a group of 150 rows with
    12 positives has a TPR too noisy to gate on, and the max-minus-min spread of noisy rates
    is biased upward. (With no positives at all fairlearn reports TPR 0 and would invent a
    large equalized odds difference.)
    """
    kept: list[str] = []
    small: dict[str, dict[str, int]] = {}
    for group in gated:
        labels = y[groups == group]
        positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
        if positives >= min_size and negatives >= min_size:
            kept.append(group)
        else:
            small[group] = {"positives": positives, "negatives": negatives}
    return kept, small


def _by_group_classification(groups: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings for groups without a label class
        frame = MetricFrame(
            metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                     "false_positive_rate": false_positive_rate, "accuracy": accuracy_score, "count": count},
            y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
        )
        table = frame.by_group
    out: dict[str, Any] = {}
    for group, row in table.to_dict(orient="index").items():
        labels = y[groups == group]
        entry = {name: json_safe(value) for name, value in row.items()}
        entry["count"] = int(row["count"])
        # The label counts behind TPR and FPR: monitoring compares a window's rates with these (bias drift).
        entry["positives"], entry["negatives"] = int(labels.sum()), int(len(labels) - labels.sum())
        if labels.sum() == 0:  # no positives: a TPR is undefined, not 0
            entry["true_positive_rate"] = None
        if labels.sum() == len(labels):  # no negatives: an FPR is undefined
            entry["false_positive_rate"] = None
        out[str(group)] = entry
    return out


def _bootstrap_cells(groups: np.ndarray, y: np.ndarray, pred: np.ndarray, gated: list[str], samples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Resampled confusion cells (TP, FN, FP, TN) per replicate and group: shape (samples, groups, 4)."""
    out = np.empty((samples, len(gated), 4))
    for j, group in enumerate(gated):
        in_group = groups == group
        yg, pg = y[in_group], pred[in_group]
        cells = np.array([(yg * pg).sum(), (yg * (1 - pg)).sum(), ((1 - yg) * pg).sum(), ((1 - yg) * (1 - pg)).sum()])
        out[:, j, :] = rng.multinomial(int(in_group.sum()), cells / cells.sum(), size=samples)
    return out


def replicate_disparities(cells: np.ndarray, gated: list[str], odds_groups: list[str]) -> dict[str, np.ndarray]:
    """Disparity metrics per replicate from confusion cells (TP, FN, FP, TN) of shape (replicates, groups, 4).

    The bias drift check (`monitoring.bias`) applies it to a window's and the promotion's cells.
    """
    tp, fn, fp, tn = (cells[..., k] for k in range(4))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are handled by interval
        selection = (tp + fp) / (tp + fn + fp + tn)
        top, bottom = selection.max(axis=1), selection.min(axis=1)
        # Nobody selected in any group is parity (ratio 1), not 0/0.
        ratio = np.where(top > 0, bottom / np.where(top > 0, top, 1.0), 1.0)
        columns = [gated.index(g) for g in odds_groups]
        tpr = (tp / (tp + fn))[:, columns]
        fpr = (fp / (fp + tn))[:, columns]
        spread_tpr = np.nanmax(tpr, axis=1) - np.nanmin(tpr, axis=1) if columns else np.full(len(top), np.nan)
        spread_fpr = np.nanmax(fpr, axis=1) - np.nanmin(fpr, axis=1) if columns else np.full(len(top), np.nan)
        odds = np.fmax(spread_tpr, spread_fpr)
    return {"demographic_parity_ratio": ratio, "demographic_parity_difference": top - bottom,
            "equalized_odds_difference": odds}


def regression_outcome(grouping: Grouping, groups: np.ndarray, y: np.ndarray, pred: np.ndarray,
                       fc: FairnessGateConfig, rng: np.random.Generator) -> Outcome:
    """MAE by group and the worst/best MAE ratio, judged by its interval."""
    gated, small = split_groups(groups, fc)
    frame = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_prediction": _mean_prediction, "mean_target": _mean_target,
                 "count": count},
        y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
    )
    table = frame.by_group.to_dict(orient="index")
    errors = np.abs(y - pred)
    # The spreads behind each mean: bias drift (`monitoring.bias_regression`) compares a window's
    # MAE and mean prediction by group with these through a Welch interval.
    spread = {str(g): {"mae_sd": _sd(errors[groups == g]), "prediction_sd": _sd(pred[groups == g])} for g in table}
    found = Outcome(details={"by_group": {str(g): {**json_safe(row), "count": int(row["count"]), **spread[str(g)]}
                                           for g, row in table.items()},
                              "gated_groups": gated, "reported_not_gated": small})
    if len(gated) < 2:
        found.details["note"] = f"cannot be judged: fewer than two groups with at least {fc.min_group_size} rows"
        found.hard.append(ungroupable(grouping, gated, small, fc, len(y)))
        return found
    mae = {g: float(errors[groups == g].mean()) for g in gated}
    point = float(error_ratio(np.array([[mae[g] for g in gated]]))[0])
    found.metrics["group_error_ratio"] = point
    replicates = np.column_stack([_bootstrap_means(errors[groups == g], fc.bootstrap_samples, rng) for g in gated])
    found.details["group_intervals"] = {"metric": "mae", "confidence": fc.confidence, "groups": {
        g: interval(replicates[:, j], fc.confidence) for j, g in enumerate(gated)}}
    best, worst = pair(mae, gated)
    target = {g: float(y[groups == g].mean()) for g in (best, worst)}
    plain = (f"mean absolute error {mae[worst]:.3g} for {worst} and {mae[best]:.3g} for {best}{of_groups(gated)}: "
             f"{{numbers}}; the targets themselves average {target[worst]:.3g} for {worst} and {target[best]:.3g} "
             f"for {best}")
    band = Band("group_error_ratio", "worst/best MAE ratio", maximum=fc.max_group_error_ratio)
    judge(found, grouping.name, band, point, interval(error_ratio(replicates), fc.confidence), plain,
           fc.confidence, len(y))
    return found


def _sd(values: np.ndarray) -> float | None:
    """Sample standard deviation; None (not NaN, which JSON lacks) below two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _mean_target(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


def error_ratio(mae: np.ndarray) -> np.ndarray:
    """Worst over best group MAE per row; NaN (undefined) when the best group's MAE is 0 (bias drift
    compares a window's ratio with the gate's through this same function)."""
    best, worst = mae.min(axis=1), mae.max(axis=1)
    return np.where(best > 0, worst / np.where(best > 0, best, 1.0), np.nan)


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    chunk = max(1, CHUNK_CELLS // len(values))
    return np.concatenate([values[rng.integers(0, len(values), size=(min(chunk, samples - start), len(values)))]
                          .mean(axis=1) for start in range(0, samples, chunk)])
