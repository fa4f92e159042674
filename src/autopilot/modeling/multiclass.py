"""Multiclass metrics and the inference-log record of a multiclass prediction (pure: numpy and sklearn).

A multiclass model keeps its labels as they are (strings in canonical frames); its scores are the
class probabilities, shape (rows, classes), columns in the model's class order (`classes_`). Every
metric here takes that order (`labels`) so probabilities and labels are never matched by position
guesswork. `prediction_record` / `read_prediction` are the inference log's contract for one
multiclass prediction: `{"label": <label>, "probabilities": [p0, p1, ...]}` in class order.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CLASSES_TAG", "MULTICLASS_ONLY", "PredictionRecord", "argmax_labels", "label_text", "multiclass_metrics",
           "multiclass_score", "prediction_record", "read_prediction"]

# Metric names only a multiclass model has (`log_loss` and `accuracy` are shared with binary).
MULTICLASS_ONLY = frozenset({"roc_auc_ovr", "f1_macro", "balanced_accuracy"})
_EPS = 1e-15


# The version tag (and run tag) with a multiclass model's class order: a JSON list of label texts.
CLASSES_TAG = "autopilot.classes"


def _check(y: Any, proba: Any, labels: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    y_arr = np.asarray(y)
    p = np.asarray(proba, dtype=float)
    order = list(labels)
    if p.ndim != 2 or p.shape[1] != len(order):
        raise ValueError(f"multiclass scores must have shape (rows, {len(order)} classes), got {p.shape}")
    if len(y_arr) != len(p):
        raise ValueError(f"{len(y_arr)} labels but {len(p)} rows of scores")
    return y_arr, p, order


def argmax_labels(proba: Any, labels: Sequence[Any]) -> np.ndarray:
    """The most probable label of each row (ties: the earlier class in `labels`, as numpy's argmax)."""
    p = np.asarray(proba, dtype=float)
    return np.asarray(list(labels), dtype=object)[np.argmax(p, axis=1)] if len(p) else np.asarray([], dtype=object)


def label_text(value: Any) -> str:
    """A label as text, numeric spellings unified (1, 1.0, True and "1" are all "1"): how labels from
    outside (feedback, label sources) are compared with a model's classes."""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _as_text(values: Any) -> np.ndarray:
    # Labels are compared as text: canonical frames hold them as str while a model may hold ints.
    return np.asarray([str(v) for v in np.asarray(values).tolist()], dtype=object)


def multiclass_score(metric: str, y: Any, proba: Any, labels: Sequence[Any]) -> float:
    """One multiclass metric from true labels and the class probabilities in `labels` order.

    `roc_auc_ovr` is the macro one-vs-rest ROC AUC over the classes present in `y` with both
    outcomes (NaN when fewer than two classes are present); `log_loss` uses every class in `labels`.
    """
    y_arr, p, order = _check(y, proba, labels)
    from sklearn import metrics

    y_text, order_text = _as_text(y_arr), [str(v) for v in order]
    if metric == "log_loss":
        # By hand: sklearn's log_loss reads the columns in *sorted* label order, whatever `labels` says.
        position = {label: k for k, label in enumerate(order_text)}
        unknown = sorted(set(y_text.tolist()) - set(position))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the model's classes {order_text}")
        clipped = np.clip(p, _EPS, 1.0)
        rows = np.fromiter((position[label] for label in y_text), dtype=int, count=len(y_text))
        return float(-np.mean(np.log(clipped[np.arange(len(rows)), rows] / clipped.sum(axis=1))))
    if metric == "roc_auc_ovr":
        return _roc_auc_ovr(y_text, p, order_text)
    predicted = _as_text(argmax_labels(p, order))
    functions = {
        "accuracy": lambda: metrics.accuracy_score(y_text, predicted),
        "f1_macro": lambda: metrics.f1_score(y_text, predicted, labels=order_text, average="macro", zero_division=0),
        "balanced_accuracy": lambda: _balanced_accuracy(y_text, predicted),
    }
    if metric not in functions:
        raise ValueError(f"unknown multiclass metric {metric!r}; expected one of "
                         f"{sorted([*functions, 'log_loss', 'roc_auc_ovr'])}")
    return float(functions[metric]())


def _roc_auc_ovr(y_text: np.ndarray, p: np.ndarray, order_text: list[str]) -> float:
    """Macro one-vs-rest AUC over classes with both outcomes present (robust to a class absent from a fold)."""
    from sklearn.metrics import roc_auc_score

    values = []
    for k, label in enumerate(order_text):
        positive = y_text == label
        if positive.any() and (~positive).any():
            values.append(roc_auc_score(positive.astype(int), p[:, k]))
    return float(np.mean(values)) if len(values) >= 2 else math.nan


def _balanced_accuracy(y_text: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # a predicted class absent from y is not an error here
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_text, predicted))


def multiclass_metrics(y: Any, proba: Any, labels: Sequence[Any]) -> dict[str, float]:
    """Every metric of `config.MULTICLASS_METRICS` from the class probabilities in `labels` order."""
    from autopilot.config import MULTICLASS_METRICS

    return {name: multiclass_score(name, y, proba, labels) for name in MULTICLASS_METRICS}


# ------------------------------------------------------------------------- the inference-log record


class PredictionRecord(dict[str, Any]):
    """`{"label": <label>, "probabilities": [p0, ...]}`: one multiclass prediction, class order implied."""

    @property
    def label(self) -> Any:
        """The predicted (most probable) label."""
        return self["label"]

    @property
    def probabilities(self) -> list[float]:
        """The class probabilities, in the model's class order."""
        return list(self["probabilities"])


def prediction_record(label: Any, probabilities: Sequence[float]) -> PredictionRecord:
    """The inference log's value for one multiclass prediction (JSON-serializable; floats, label as given).

    Raises:
        ValueError: a probability is not finite.
    """
    probs = [float(p) for p in probabilities]
    if not all(math.isfinite(p) for p in probs):
        raise ValueError("class probabilities must be finite")
    value = label.item() if isinstance(label, np.generic) else label
    return PredictionRecord(label=value, probabilities=probs)


def read_prediction(value: Any) -> PredictionRecord:
    """A logged multiclass prediction back: from the dict `prediction_record` made or its JSON text.

    Raises:
        ValueError: the value is not such a record.
    """
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a multiclass prediction record: {exc}") from None
    if not isinstance(value, dict) or "label" not in value or not isinstance(value.get("probabilities"), list):
        raise ValueError("a multiclass prediction record is {'label': ..., 'probabilities': [...]}")
    return prediction_record(value["label"], value["probabilities"])
