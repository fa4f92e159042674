"""The drift decision of one window: per-column verdicts weighed by importance into a severity.

Below `min_rows` (default 100) nothing is decided: `sufficient` is False and severity `none`.

Policy for many columns: each column carries its importance, the champion's share of SHAP
attribution from the explainability gate (uniform when none is given). `weighted_share` is the
summed importance of the drifted columns, i.e. the share of the model's reasoning that rests
on inputs that moved. Severity compares it with `weighted_share_alert` / `_retrain` /
`severe_weighted_share` (at or above; a weighted share of 0 is always `none`), so a column of
little importance drifting alone, however hard, stays below the thresholds. Sensitive
attributes (`sensitive_attributes`) are the exception for alerts: one that drifted raises the
severity to at least `alert` whatever its SHAP weight (a model that barely uses `age` still
serves a population whose age moved, which fairness results were not measured on); whether it
retrains stays with the weighted share. The prediction scores are checked the same way (normed
Wasserstein against the reference scores, `prediction_threshold`, or a KS test in small
windows); drifted scores raise the severity to at least `alert`. A multiclass model's
"scores" are its predicted classes: their distribution is checked as a categorical column
(Jensen-Shannon against `categorical_threshold`, or a chi-squared test in small windows; `classes`),
and the reason names the predicted class distribution and the classes whose share moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.classes import class_effect, class_shift_words
from autopilot.monitoring.drift.columns import check_frame, distinct, feature_kinds
from autopilot.monitoring.drift.effects import METHOD_LABELS, STD_FLOOR, column_drift, w1
from autopilot.monitoring.drift.reference import ReferenceProfile
from autopilot.monitoring.drift.result import SEVERITIES, ColumnDrift, DriftResult
from autopilot.monitoring.drift.small_sample import TEST_LABELS, large_sample_rows, run_tests

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["check_drift"]


def check_drift(reference: ReferenceProfile, window: pd.DataFrame, window_scores: np.ndarray | None,
                cfg: ModelConfig, classes: Sequence[str] | None = None) -> DriftResult:
    """Compare one window of served rows (and their scores) with the reference.

    Args:
        reference: from `build_reference` (or `ReferenceProfile.load`).
        window: the served rows, canonical like the reference; extra columns are ignored.
        window_scores: the champion's scores in the window (None: no prediction check). Compared
            as a distribution: they need not be one per window row, but fewer than `min_rows`
            finite scores are not checked (a reason says so).
        cfg: the model config (`monitoring.drift`: methods, thresholds, policy, min_rows, bins).
            For a multiclass model (`cfg.task`) the scores on both sides are predicted class
            indices, and their distribution is checked as a categorical column.
        classes: a multiclass model's class labels in class order (for the reason's words only).

    Raises:
        ValueError: an empty window, a feature column missing from it, a numeric column that is
            not numeric, a profile built for other features, or a method that does not fit the
            column's type.
    """
    drift = cfg.monitoring.drift
    _check_profile(reference, cfg)
    check_frame(window, reference.features, "window")
    rows = len(window)
    large = large_sample_rows(reference, cfg)
    if rows < drift.min_rows:
        return _insufficient(rows, drift.min_rows, large)
    notes: list[str] = []
    sensitive = _sensitive_names(cfg)
    columns = [column_drift(reference, window[name], name, kind, cfg, notes)
               for name, kind in reference.features.items()]
    for column in columns:
        column.sensitive = column.column in sensitive
    tested = large is None or rows < large
    prediction = _check_scores(reference, window, columns if tested else [], window_scores, large, cfg, notes)
    drifted = [c for c in columns if c.drifted]
    weighted = float(sum(c.importance for c in drifted))
    severity, reasons = _verdict(drifted, len(columns), weighted, prediction, cfg)
    if prediction.drifted and _multiclass(cfg) and window_scores is not None:
        moved = class_shift_words(reference.scores, _finite(window_scores), classes)
        reasons.append(f"predicted class shares moved most: {moved}")
    if tested:
        notes.append(_tested_note(rows, large, drift.small_sample_alpha))
    reasons.extend(notes)
    reasons.append(f"severity: {severity}")
    return DriftResult(rows=rows, sufficient=True, columns=columns, drifted_share=len(drifted) / len(columns),
                       weighted_share=weighted, prediction_effect=prediction.effect,
                       prediction_drifted=prediction.drifted, severity=severity, reasons=reasons,
                       decided_by="test" if tested else "effect", large_sample_rows=large,
                       prediction_p_value=prediction.p_value,
                       sensitive_drifted=[c.column for c in drifted if c.sensitive],
                       prediction_method="jensenshannon" if _multiclass(cfg) else "wasserstein")


@dataclass(frozen=True)
class _Scores:
    """The prediction check of a window (effect None: not checked)."""

    effect: float | None
    drifted: bool
    p_value: float | None  # the Holm-adjusted KS p-value when a test decided, else None


def _check_profile(reference: ReferenceProfile, cfg: ModelConfig) -> None:
    expected = feature_kinds(cfg)
    if reference.features != expected:
        raise ValueError("the reference profile was built for other features than the config's "
                         f"(profile {reference.features}, config {expected}): rebuild it")


def _insufficient(rows: int, min_rows: int, large: int | None) -> DriftResult:
    """The result of a window too small to decide anything on."""
    return DriftResult(rows=rows, sufficient=False, columns=[], drifted_share=0.0, weighted_share=0.0,
                       prediction_effect=None, prediction_drifted=False, severity="none",
                       reasons=[f"insufficient data: {rows} rows in the window, fewer than min_rows "
                                f"{min_rows}; no drift decision"], large_sample_rows=large)


def _check_scores(reference: ReferenceProfile, window: pd.DataFrame, tested_columns: list[ColumnDrift],
                  window_scores: np.ndarray | None, large: int | None, cfg: ModelConfig,
                  notes: list[str]) -> _Scores:
    """The scores' effect, and the small-window tests of `tested_columns` and the scores.

    Columns and scores are tested in one call so that Holm's correction covers them together;
    it sets each tested column's verdict.
    """
    drift = cfg.monitoring.drift
    scores = _window_scores(reference, window_scores, drift.min_rows, notes)
    effect: float | None = None
    if scores is not None and _multiclass(cfg):
        effect = class_effect(reference.scores, scores)
    elif scores is not None:
        ref_values, ref_counts = distinct(reference.scores)
        norm = max(float(np.std(reference.scores)), STD_FLOOR)
        effect = w1(ref_values, ref_counts, *distinct(scores)) / norm
    scores_tested = scores is not None and (large is None or scores.size < large)
    p_value = run_tests(reference, window, tested_columns, scores if scores_tested else None, cfg)
    if scores_tested:
        return _Scores(effect, p_value is not None and p_value <= drift.small_sample_alpha, p_value)
    return _Scores(effect, effect is not None and effect >= _prediction_threshold(cfg), None)


def _multiclass(cfg: ModelConfig) -> bool:
    from autopilot.config import Task

    return cfg.task is Task.MULTICLASS_CLASSIFICATION


def _prediction_threshold(cfg: ModelConfig) -> float:
    """A multiclass model's predicted classes are held to the categorical columns' threshold."""
    drift = cfg.monitoring.drift
    return drift.categorical_threshold if _multiclass(cfg) else drift.prediction_threshold


def _finite(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _verdict(drifted: list[ColumnDrift], n_columns: int, weighted: float, prediction: _Scores,
             cfg: ModelConfig) -> tuple[str, list[str]]:
    """(severity, reasons): the weighted share's severity, raised to alert by a sensitive column or the scores."""
    drift = cfg.monitoring.drift
    severity = _severity(weighted, cfg)
    sensitive_drifted = [c for c in drifted if c.sensitive]
    reasons = [_column_reason(c) for c in sorted(drifted, key=lambda c: -c.importance)]
    reasons.append(f"importance-weighted share of drifted columns {weighted:.3f} ({len(drifted)} of {n_columns} "
                   f"columns; alert at {drift.weighted_share_alert:g}, retrain at {drift.weighted_share_retrain:g}, "
                   f"severe at {drift.severe_weighted_share:g})")
    if sensitive_drifted and _below(severity, "alert"):
        # A sensitive attribute that moved is a fairness question whatever the model's reliance on it:
        # alert, so a person looks; whether to retrain stays with the weighted share.
        severity = "alert"
        reasons.append(f"a sensitive attribute drifted ({', '.join(c.column for c in sensitive_drifted)}): "
                       "severity raised to alert")
    if prediction.effect is not None:
        raised = prediction.drifted and _below(severity, "alert")
        if raised:
            severity = "alert"
        reasons.append(_prediction_reason(prediction.effect, prediction.drifted, prediction.p_value,
                                          _prediction_threshold(cfg), drift.small_sample_alpha, raised,
                                          _multiclass(cfg)))
    return severity, reasons


def _below(severity: str, level: str) -> bool:
    return SEVERITIES.index(severity) < SEVERITIES.index(level)


def _sensitive_names(cfg: ModelConfig) -> set[str]:
    """Names of the sensitive attributes (entries are names, or objects naming one)."""
    names = set()
    for entry in cfg.sensitive_attributes:
        names.add(entry if isinstance(entry, str) else str(getattr(entry, "name", getattr(entry, "column", entry))))
    return names


def _window_scores(reference: ReferenceProfile, window_scores: np.ndarray | None, min_rows: int,
                   notes: list[str]) -> np.ndarray | None:
    """The window's finite scores when the prediction check can run, else None (with a note why not)."""
    if window_scores is None:
        return None
    # Scores are compared as a distribution, so they need not be row-aligned with the window
    # (e.g. only the champion's rows of a window that also saw the previous version).
    scores = np.asarray(window_scores, dtype=np.float64).ravel()
    finite = scores[np.isfinite(scores)]
    if reference.scores.size == 0:
        notes.append("prediction drift not checked: the reference has no scores")
        return None
    if finite.size < min_rows:
        notes.append(f"prediction drift not checked: {finite.size} finite scores, fewer than min_rows {min_rows}")
        return None
    return finite


def _evidence(c: ColumnDrift) -> str:
    """What decided a drifted column, in words."""
    if c.decided_by == "test" and c.p_value is not None:
        return (f"{TEST_LABELS[c.test or '']} p {c.p_value:.2g} (Holm-adjusted {c.p_adjusted:.2g}) <= alpha; "
                f"{METHOD_LABELS[c.method]} {c.effect:.3f}")
    return f"{METHOD_LABELS[c.method]} {c.effect:.3f} >= {c.threshold:g}"


def _column_reason(c: ColumnDrift) -> str:
    if c.sensitive:
        return (f"{c.column} (sensitive attribute) drifted: {_evidence(c)}; its SHAP weight {c.importance:.2g} "
                "does not hide it")
    return f"{c.column} drifted: {_evidence(c)} (importance {c.importance:.3f})"


def _prediction_reason(effect: float, drifted: bool, p_adjusted: float | None, threshold: float, alpha: float,
                       raised: bool, classes: bool = False) -> str:
    verb = "drifted" if drifted else "did not drift"
    test, distance = ("chi-squared test", "Jensen-Shannon") if classes else ("KS test", "normed Wasserstein")
    if p_adjusted is not None:
        sign = "<=" if drifted else ">"
        evidence = f"{test} Holm-adjusted p {p_adjusted:.2g} {sign} {alpha:g} ({distance} {effect:.3f})"
    else:
        sign = ">=" if drifted else "<"
        evidence = f"{distance} {effect:.3f} {sign} {threshold:g}"
    what = "predicted class distribution" if classes else "prediction scores"
    return f"{what} {verb}: {evidence}" + (" (raises severity to alert)" if raised else "")


def _tested_note(rows: int, large: int | None, alpha: float) -> str:
    size = ("the reference is too small for effect sizes at any window size" if large is None
            else f"{rows} rows, below the large-sample threshold {large} derived from the reference")
    return (f"small window: {size}, so tests decided (two-sample Kolmogorov-Smirnov for numeric columns, "
            f"chi-squared on category counts otherwise; Holm-corrected, family-wise alpha {alpha:g})")


def _severity(weighted: float, cfg: ModelConfig) -> str:
    drift = cfg.monitoring.drift
    if weighted <= 0:
        return "none"
    if weighted >= drift.severe_weighted_share:
        return "severe"
    if weighted >= drift.weighted_share_retrain:
        return "retrain"
    if weighted >= drift.weighted_share_alert:
        return "alert"
    return "none"
