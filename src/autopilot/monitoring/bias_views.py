"""Bias drift's reading of a classification window: each row's 0/1 prediction and 0/1 label, per class.

A binary model: the score at the gate's threshold, and the label against `target.positive_class`.
A multiclass model is compared one class at a time, one-vs-rest, as its fairness gate judged it
(`gates.fairness.multiclass`): for class k a row is predicted positive when its predicted (most
probable) class is k, and positive when its label is k. `WindowViews.of(k)` gives that view, so the
binary comparisons (`monitoring.bias`) run unchanged on every class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.modeling.multiclass import label_text

__all__ = ["WindowViews", "binary_labels", "logged_classes", "report_classes", "window_views"]


@dataclass
class WindowViews:
    """A window's readable served rows and its predictions and labels (see `of`).

    Attributes:
        features: the rows compared (multiclass: rows whose prediction could not be read left out).
        rows: how many; labeled_rows: how many of them carry a label.
        notes: what was left out, in words.
    """

    features: pd.DataFrame
    rows: int
    labeled_rows: int
    binary: tuple[np.ndarray, np.ndarray] | None = None
    predicted: np.ndarray | None = None  # multiclass: each row's predicted class (label text)
    labels: np.ndarray | None = None  # multiclass: each row's label text, None where unknown
    notes: list[str] = field(default_factory=list)

    def of(self, label: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(0/1 predictions, 0/1 labels with NaN where unknown) of class `label` one-vs-rest, or of the
        binary model's positive class for None."""
        if label is None or self.predicted is None or self.labels is None:
            if self.binary is None:
                raise ValueError("a multiclass window is compared one class at a time")
            return self.binary
        known = np.array([v is not None for v in self.labels], dtype=bool)
        y = np.where(known, self.labels == label, np.nan).astype(float)
        return (self.predicted == label).astype(float), y


def window_views(promoted: Mapping[str, Any] | None, features: pd.DataFrame, scores: Sequence[Any] | np.ndarray,
                 labels: Sequence[Any] | np.ndarray | None, cfg: ModelConfig) -> WindowViews:
    """The window's predictions and labels as the comparisons read them.

    Args:
        promoted: the fairness gate report (a multiclass model's class order comes from it).
        features: the served rows.
        scores: binary, the scores; multiclass, the predicted class labels (None where unreadable)
            or the class probabilities (rows x classes, in the report's class order).
        labels: the rows' labels (None or NaN where unknown); None for none.
        cfg: the model config (`task`, `gates.fairness.threshold`, `target.positive_class`).
    """
    if cfg.task is not Task.MULTICLASS_CLASSIFICATION:
        s = np.asarray(scores, dtype=float).ravel()
        if len(s) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(s)} scores")
        y = binary_labels(labels, len(s), cfg)
        return WindowViews(features, rows=len(s), labeled_rows=int(np.isfinite(y).sum()),
                           binary=((s >= cfg.gates.fairness.threshold).astype(float), y))
    predicted = _predicted_classes(scores, report_classes(promoted))
    if len(predicted) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(predicted)} predictions")
    texts = _label_texts(labels, len(predicted))
    readable = np.array([p is not None for p in predicted], dtype=bool)
    notes = []
    if not readable.all():  # a prediction that could not be read is left out, as the other checks do
        notes.append(f"{int((~readable).sum())} predictions could not be read: left out")
    return WindowViews(features[readable].reset_index(drop=True), rows=int(readable.sum()),
                       labeled_rows=int(sum(t is not None for t in texts[readable])), predicted=predicted[readable],
                       labels=texts[readable], notes=notes)


def report_classes(report: Mapping[str, Any] | None) -> list[str]:
    """A multiclass gate report's class order (`details.classes`), else the classes of its per-class records."""
    details = (report or {}).get("details") or {}
    if details.get("classes"):
        return [label_text(c) for c in details["classes"]]
    attributes = details.get("attributes") or {}
    return list(dict.fromkeys(label_text(a["class"]) for a in attributes.values()
                              if isinstance(a, dict) and a.get("class") is not None))


def logged_classes(values: Sequence[Any], report: Mapping[str, Any] | None, cfg: ModelConfig) -> list[str | None]:
    """The predicted class of each logged multiclass record (`{"label", "probabilities"}`; None where unreadable)."""
    from autopilot.monitoring.multiclass import read_predictions

    classes = report_classes(report)
    if not classes:  # no per-class record: the check says `unavailable` whatever the predictions
        return [None] * len(values)
    return read_predictions(values, cfg.task, classes).labels


def binary_labels(labels: Sequence[Any] | np.ndarray | None, n: int, cfg: ModelConfig) -> np.ndarray:
    """0/1 labels as float, NaN where a row has none: class labels by `target.positive_class`, 0/1 as encoded."""
    if labels is None:
        return np.full(n, np.nan)
    raw = pd.Series(np.asarray(labels, dtype=object).ravel())
    if len(raw) != n:
        raise ValueError(f"{n} scores but {len(raw)} labels")
    present = raw.notna()
    text = raw[present].map(lambda v: str(int(v)) if isinstance(v, bool | int | float | np.number)
                            and float(v).is_integer() else str(v))
    positive = str(cfg.target.positive_class)
    classes = {str(c) for c in cfg.target.classes or ()}
    encoded_already = set(text) <= {"0", "1"} and not ({positive} | classes) <= {"0", "1"}
    out = np.full(n, np.nan)
    out[present.to_numpy()] = (text == "1").to_numpy(float) if encoded_already else (text == positive).to_numpy(float)
    return out


def _predicted_classes(scores: Sequence[Any] | np.ndarray, classes: list[str]) -> np.ndarray:
    """Each row's predicted class as text (None where unknown): as given, or the argmax of probabilities."""
    values = np.asarray(scores, dtype=object)
    if values.ndim == 2:
        if values.shape[1] != len(classes):
            raise ValueError(f"probabilities of {values.shape[1]} classes but the report has {len(classes)}")
        p = values.astype(float)
        out = np.asarray(classes, dtype=object)[np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)]
        out[~np.isfinite(p).all(axis=1)] = None
        return out
    return np.asarray([None if _missing(v) else label_text(v) for v in values.ravel().tolist()], dtype=object)


def _label_texts(labels: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Multiclass labels as text (`label_text`, as classes are compared), None where a row has none."""
    if labels is None:
        return np.full(n, None, dtype=object)
    values = np.asarray(labels, dtype=object).ravel()
    if len(values) != n:
        raise ValueError(f"{n} predictions but {len(values)} labels")
    return np.asarray([None if _missing(v) else label_text(v) for v in values.tolist()], dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))
