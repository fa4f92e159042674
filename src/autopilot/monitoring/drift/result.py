"""What a drift check finds: per column (`ColumnDrift`) and for the window (`DriftResult`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["SEVERITIES", "ColumnDrift", "DriftResult"]

SEVERITIES = ("none", "alert", "retrain", "severe")


@dataclass
class ColumnDrift:
    """One column's drift in one window.

    Attributes:
        column: the feature.
        kind: `numeric` or `categorical`.
        method: `wasserstein`, `jensenshannon` or `psi` (the one actually used).
        effect: the distance (inf when the window has no value in the column).
        threshold: the effect at or above which the column drifted.
        drifted: effect >= threshold (`decided_by` `effect`), or the test's Holm-adjusted p-value
            <= `small_sample_alpha` (`decided_by` `test`).
        importance: the column's share of SHAP attribution.
        missing_share: share of the window's rows missing in the column (not part of the effect).
        decided_by: `effect` (the effect size against its threshold: windows of at least
            `large_sample_rows` rows) or `test` (a smaller window: the test below decided; the
            effect is still reported, for reading).
        test: `ks` (scipy's two-sample Kolmogorov-Smirnov) or `chi2` (chi-squared on the category
            counts, sparse categories pooled); None when the effect decided.
        p_value: the test's p-value (None when the effect decided).
        p_adjusted: the p-value after Holm's correction across the window's tests.
        sensitive: the column is one of `sensitive_attributes` (its drift alone is at least an alert).
    """

    column: str
    kind: str
    method: str
    effect: float
    threshold: float
    drifted: bool
    importance: float
    missing_share: float
    decided_by: str = "effect"
    test: str | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    sensitive: bool = False


@dataclass
class DriftResult:
    """The drift verdict of one window (see the module docstring for the policy).

    Attributes:
        rows: rows in the window.
        sufficient: at least `min_rows` rows; otherwise nothing was decided (severity `none`).
        columns: per-column results (empty when insufficient), config order.
        drifted_share: drifted columns / columns.
        weighted_share: summed importance of the drifted columns.
        prediction_effect: normed Wasserstein distance of the scores, or for a multiclass model the
            Jensen-Shannon distance of the predicted class distribution (None: not checked).
        prediction_drifted: prediction_effect >= `prediction_threshold`.
        severity: `none`, `alert`, `retrain` or `severe`.
        reasons: human-readable: drifted columns with effect, threshold and importance, then the verdict.
        decided_by: `effect` or `test` (the window was smaller than `large_sample_rows`); None
            when nothing was decided.
        large_sample_rows: the window size from which effect sizes decide, derived from the
            reference (`large_sample_rows`); None: the reference is too small for them, tests decide.
        prediction_p_value: the Holm-adjusted KS p-value of the scores when a test decided them.
        sensitive_drifted: drifted sensitive attributes (each alone raises severity to `alert`).
        prediction_method: `wasserstein` (scores) or `jensenshannon` (a multiclass model's
            predicted class distribution).
    """

    rows: int
    sufficient: bool
    columns: list[ColumnDrift]
    drifted_share: float
    weighted_share: float
    prediction_effect: float | None
    prediction_drifted: bool
    severity: str
    reasons: list[str]
    decided_by: str | None = None
    large_sample_rows: int | None = None
    prediction_p_value: float | None = None
    sensitive_drifted: list[str] = field(default_factory=list)
    prediction_method: str = "wasserstein"

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, most important first."""
        return [c.column for c in sorted(self.columns, key=lambda c: -c.importance) if c.drifted]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (non-finite numbers become None)."""
        out = asdict(self)
        out["columns"] = [{k: _json_number(v) for k, v in column.items()} for column in out["columns"]]
        out["prediction_effect"] = _json_number(self.prediction_effect)
        out["drifted_share"] = _json_number(self.drifted_share)
        out["weighted_share"] = _json_number(self.weighted_share)
        out["drifted_columns"] = self.drifted_columns
        return out


def _json_number(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value
