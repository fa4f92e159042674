"""What every SHAP path produces: `Attributions` on the original features, and the interface
(`ExplainPath`) a prepared path implements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig

__all__ = ["Attributions", "ExplainPath", "feature_rows", "relative_error"]


@dataclass(frozen=True)
class Attributions:
    """Per-row SHAP values on the original features, with how they were obtained.

    Attributes:
        values: rows x original feature columns (config order), in `output` units.
        base_value: the expected model output the attributions are measured from.
        method: `tree`, `linear` or `permutation`.
        rows: rows explained.
        seconds: wall time of the whole explanation (set-up included).
        output: units of the values: `log_odds`, `probability` or `prediction`.
        background_rows: background rows used (0 for the tree path, which needs none).
        additivity_error: max |sum of values + base - model output| over the rows, divided by
            max(1, max |model output|); None when not measured.
        path_reason: why this path explained the model (for the permutation path: why neither
            exact path applied).
    """

    values: pd.DataFrame
    base_value: float
    method: str
    rows: int
    seconds: float
    output: str = "prediction"
    background_rows: int = 0
    additivity_error: float | None = None
    path_reason: str = ""

    def importance(self) -> dict[str, float]:
        """Mean |SHAP| per original feature, in config (column) order."""
        means = self.values.abs().mean(axis=0) if len(self.values) else pd.Series(math.nan, index=self.values.columns)
        return {str(name): float(value) for name, value in means.items()}

    def shares(self) -> dict[str, float]:
        """Each feature's share of the total mean |SHAP| (sums to 1; all zeros when the total is 0)."""
        importance = self.importance()
        total = sum(importance.values())
        if not math.isfinite(total):
            return {name: math.nan for name in importance}
        if total <= 0:
            return {name: 0.0 for name in importance}
        return {name: value / total for name, value in importance.items()}


class ExplainPath:
    """A prepared explainer: set up once, then `explain(rows)` any number of times."""

    method: str
    output: str
    background_rows: int = 0
    reason: str = ""

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, float, float | None]:
        """(values rows x original features, base value, relative additivity error)."""
        raise NotImplementedError


def feature_rows(X: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The config's feature columns of `X`, in config order (ValueError when one is missing)."""
    missing = [name for name in cfg.features if name not in X.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
    return X.loc[:, list(cfg.features)]


def relative_error(explained: np.ndarray, output: np.ndarray) -> float:
    """Max |explained - output| divided by max(1, max |output|): how far attributions miss the model output."""
    if len(output) == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(output))))
    return float(np.max(np.abs(explained - output)) / scale)
