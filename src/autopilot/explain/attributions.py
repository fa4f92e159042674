"""What every SHAP path produces: `Attributions` on the original features, and the interface
(`ExplainPath`) a prepared path implements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig

__all__ = ["Attributions", "ExplainPath", "class_answer", "feature_rows", "predicted_classes", "relative_error"]


@dataclass(frozen=True)
class Attributions:
    """Per-row SHAP values on the original features, with how they were obtained.

    Multiclass models are explained for every class: `class_values` holds the signed values
    (rows x features x classes, in `classes` order, the model's `classes_`) and
    `class_base_values` each class's base value. Their `values` are then each row's mean |SHAP|
    over the classes (non-negative), so `importance` and `shares`, and everything ranking
    features by them (the explainability gate, attribution drift), rank by mean |SHAP| over
    rows and classes; `base_value` is the mean of the class base values.

    Attributes:
        values: rows x original feature columns (config order), in `output` units (multiclass:
            mean |SHAP| over classes, see above).
        base_value: the expected model output the attributions are measured from.
        method: `tree`, `linear` or `permutation`.
        rows: rows explained.
        seconds: wall time of the whole explanation (set-up included).
        output: units of the values: `log_odds`, `probability`, `margin` (a multiclass model's
            per-class softmax logit) or `prediction`.
        background_rows: background rows used (0 for the tree path, which needs none).
        additivity_error: max |sum of values + base - model output| over the rows, divided by
            max(1, max |model output|); None when not measured.
        path_reason: why this path explained the model (for the permutation path: why neither
            exact path applied).
        classes: a multiclass model's class labels (as text, in `classes_` order); empty otherwise.
        class_values: rows x features x classes signed SHAP values (None unless multiclass).
        class_base_values: each class's base value (empty unless multiclass).
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
    classes: tuple[str, ...] = ()
    class_values: np.ndarray | None = None
    class_base_values: tuple[float, ...] = ()

    def class_importance(self) -> dict[str, dict[str, float]]:
        """Multiclass: class -> feature -> mean |SHAP| over rows for that class (empty otherwise)."""
        if self.class_values is None or not self.classes:
            return {}
        means = np.abs(self.class_values).mean(axis=0) if len(self.class_values) else np.full(
            self.class_values.shape[1:], math.nan)
        columns = [str(c) for c in self.values.columns]
        return {label: {name: float(means[j, k]) for j, name in enumerate(columns)}
                for k, label in enumerate(self.classes)}

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
    classes: tuple[str, ...] = ()  # a multiclass model's labels, in the order of its outputs

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, Any, float | None]:
        """(values rows x original features, base value, relative additivity error); for a
        multiclass model values rows x features x classes and one base value per class."""
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


def class_answer(attr: Attributions) -> dict[str, Any]:
    """A multiclass explanation as serving's `/explain` answers it (empty for other models).

    Each row is explained for the class the model predicts for it (`predicted_class`: the class
    whose explained output, base value plus attributions, is largest, i.e. the argmax of the
    probabilities or margins): `contributions` are that class's signed values, in the same shape
    as a binary model's answer, and `base_values` gives each class's base value. Every class's
    values are in `class_contributions` (row -> class -> feature), for a caller who asks why not
    another class.
    """
    if attr.class_values is None or not attr.classes:
        return {}
    columns = [str(c) for c in attr.values.columns]
    chosen = predicted_classes(attr)
    return {
        "classes": list(attr.classes),
        "base_values": dict(zip(attr.classes, attr.class_base_values, strict=True)),
        "predicted_class": [attr.classes[k] for k in chosen],
        "contributions": [{name: _finite(attr.class_values[i, j, k]) for j, name in enumerate(columns)}
                          for i, k in enumerate(chosen)],
        "class_contributions": [{label: {name: _finite(attr.class_values[i, j, k]) for j, name in enumerate(columns)}
                                 for k, label in enumerate(attr.classes)} for i in range(len(chosen))],
    }


def predicted_classes(attr: Attributions) -> np.ndarray:
    """Multiclass: each row's predicted class index (the largest explained output: base value plus values)."""
    if attr.class_values is None:
        raise ValueError("not a multiclass explanation")
    outputs = attr.class_values.sum(axis=1) + np.asarray(attr.class_base_values)[None, :]
    return np.asarray(np.argmax(outputs, axis=1))


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
