"""Multiclass monitoring: served predictions read back, realized metrics once labels arrive, and the
label-free performance estimate (confidence-based, as `performance` does for binary models).

- `read_predictions`: the inference log's `prediction` of a multiclass model is
  `{"label": <label>, "probabilities": [p0, ...]}` in class order (a JSON object, or its text);
  binary and regression rows hold a number. `ServedPredictions.scores` is what the drift check
  compares: the score itself, or for a multiclass model the predicted class's index in class
  order (the predicted class distribution is checked as a categorical column).
- `ClassCalibrator`: one isotonic map per class (one-vs-rest, fitted on the champion's held-out
  probabilities and labels), the calibrated rows renormalized to sum 1.
- `estimate_multiclass`: if the calibrated probabilities are right, the unknown label of row i
  is drawn from Categorical(p_i), so every metric of the window has a distribution computable
  without a label. Accuracy and log loss are linear in the label indicators, so their
  expectation is exact; macro F1 and balanced accuracy use the ratio of expected confusion
  counts per class (as CBPE does for recall and F1); one-vs-rest ROC AUC is the mean over
  `n_simulations` Monte Carlo label draws. Every metric's std and interval come from the draws:
  the spread the window would realize *if the calibration holds*. Like binary CBPE it follows a
  change in the mix of rows and cannot see a change in P(label | row) (concept shift): realized
  metrics from labels are still needed.
- `realized_multiclass`: the same five metrics (`config.MULTICLASS_METRICS`) on labeled rows.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopilot.config import ModelConfig, Task
from autopilot.modeling.multiclass import label_text
from autopilot.monitoring.performance import (
    LOG_LOSS_CLIP,
    MC_CHUNK_CELLS,
    Calibrator,
    Estimate,
    check_estimate_args,
    fit_calibrator,
)

__all__ = ["ClassCalibrator", "ServedPredictions", "estimate_multiclass", "fit_class_calibrator", "label_text",
           "load_calibrator", "read_predictions", "realized_multiclass"]

MULTICLASS_CALIBRATION = "multiclass_isotonic"


# ---------------------------------------------------------------------------- served predictions


@dataclass(frozen=True)
class ServedPredictions:
    """A window's served predictions, read back from the inference log.

    Attributes:
        scores: one number per row: the score (binary: positive-class probability; regression:
            the prediction) or, multiclass, the predicted class's index in `classes` (NaN when a
            row's prediction could not be read).
        probabilities: multiclass: rows x classes (NaN rows where unreadable); None otherwise.
        classes: multiclass class labels as text, in class order; empty otherwise.
        unreadable: rows whose prediction could not be read (left out of every check).
    """

    scores: np.ndarray
    probabilities: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    unreadable: int = 0

    @property
    def labels(self) -> list[str | None]:
        """Multiclass: each row's predicted class (None where unreadable)."""
        return [self.classes[int(i)] if math.isfinite(i) else None for i in self.scores]


def read_predictions(values: Sequence[Any], task: Task, classes: Sequence[Any] | None = None) -> ServedPredictions:
    """Read the logged predictions of one window (see the module docstring for the shapes).

    Raises:
        ValueError: a multiclass model without its class list.
    """
    if task is not Task.MULTICLASS_CLASSIFICATION:
        return ServedPredictions(scores=np.asarray([_number(v) for v in values], dtype=float))
    if not classes:
        raise ValueError("reading multiclass predictions needs the class order (the version's autopilot.classes)")
    names = tuple(label_text(c) for c in classes)
    index = {name: k for k, name in enumerate(names)}
    scores = np.full(len(values), math.nan)
    probabilities = np.full((len(values), len(names)), math.nan)
    for i, value in enumerate(values):
        parsed = _object(value)
        p = _probabilities(parsed.get("probabilities"), len(names))
        if p is not None:
            probabilities[i] = p
        label = parsed.get("label")
        if label is not None and label_text(label) in index:
            scores[i] = index[label_text(label)]
        elif p is not None:
            scores[i] = float(np.argmax(p))
    unreadable = int(np.isnan(scores).sum())
    return ServedPredictions(scores=scores, probabilities=probabilities, classes=names, unreadable=unreadable)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _probabilities(value: Any, width: int) -> np.ndarray | None:
    try:
        p = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if p.size != width or not np.isfinite(p).all() or (p < 0).any():
        return None
    return p


# ---------------------------------------------------------------------------- calibration


@dataclass(eq=False)
class ClassCalibrator:
    """One-vs-rest isotonic calibration per class, rows renormalized (see the module docstring)."""

    classes: tuple[str, ...]
    per_class: tuple[Calibrator, ...]

    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (rows x classes, each row summing to 1)."""
        p = np.asarray(probabilities, dtype=float)
        calibrated = np.column_stack([c(p[:, k]) for k, c in enumerate(self.per_class)])
        total = calibrated.sum(axis=1, keepdims=True)
        # A row every map sends to 0 keeps the served probabilities: nothing better is known.
        return np.where(total > 0, calibrated / np.where(total > 0, total, 1.0), p)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (`load_calibrator` reads it back)."""
        return {"method": MULTICLASS_CALIBRATION, "classes": list(self.classes),
                "per_class": [c.as_dict() for c in self.per_class]}


def fit_class_calibrator(probabilities: np.ndarray, labels: Sequence[Any], classes: Sequence[Any]) -> ClassCalibrator:
    """Fit the per-class calibration on the champion's held-out probabilities and labels.

    Raises:
        ValueError: on no rows, a shape that does not match the classes, or a class absent from
            the labels (or the only one present).
    """
    p = np.asarray(probabilities, dtype=float)
    names = tuple(label_text(c) for c in classes)
    if p.ndim != 2 or p.shape[1] != len(names) or len(p) == 0:
        raise ValueError(f"probabilities of shape {p.shape} do not fit {len(names)} classes")
    texts = np.asarray([label_text(v) for v in labels], dtype=object)
    if len(texts) != len(p):
        raise ValueError(f"{len(p)} rows of probabilities but {len(texts)} labels")
    return ClassCalibrator(classes=names, per_class=tuple(
        fit_calibrator(p[:, k], (texts == name).astype(float)) for k, name in enumerate(names)))


def load_calibrator(stored: dict[str, Any] | None) -> Calibrator | ClassCalibrator | None:
    """The calibrator stored with a reference (binary isotonic, multiclass, or None)."""
    if stored is None:
        return None
    if stored.get("method") == MULTICLASS_CALIBRATION:
        return ClassCalibrator(classes=tuple(stored["classes"]),
                               per_class=tuple(Calibrator.from_dict(d) for d in stored["per_class"]))
    return Calibrator.from_dict(stored)


# ---------------------------------------------------------------------------- realized


def realized_multiclass(labels: Sequence[Any], probabilities: np.ndarray, classes: Sequence[Any]) -> dict[str, float]:
    """roc_auc_ovr, log_loss, f1_macro, accuracy, balanced_accuracy and rows on labeled rows.

    Labels are compared with the classes as text. ROC AUC (macro one-vs-rest) averages the
    classes present in the window with both outcomes (NaN when none). Rows whose label is not a
    class are counted in `unknown_labels` and left out.

    Raises:
        ValueError: no labeled row with a known class, or probabilities that do not fit.
    """
    from sklearn import metrics

    names = [label_text(c) for c in classes]
    p = np.asarray(probabilities, dtype=float)
    texts = np.asarray([label_text(v) for v in labels], dtype=object)
    if p.ndim != 2 or p.shape != (len(texts), len(names)):
        raise ValueError(f"probabilities of shape {p.shape} do not fit {len(texts)} labels and {len(names)} classes")
    known = np.isin(texts, names) & np.isfinite(p).all(axis=1)
    if not known.any():
        raise ValueError("no labeled row holds a known class: nothing to measure")
    y = np.asarray([names.index(t) for t in texts[known]])
    q = p[known]
    predicted = np.argmax(q, axis=1)
    everyone = list(range(len(names)))
    result = {
        "roc_auc_ovr": _auc_ovr(y, q),
        "log_loss": float(metrics.log_loss(y, np.clip(q, LOG_LOSS_CLIP, 1.0), labels=everyone)),
        "f1_macro": float(metrics.f1_score(y, predicted, labels=everyone, average="macro", zero_division=0)),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "balanced_accuracy": _balanced(y, predicted, len(names)),
        "rows": float(known.sum()),
    }
    if (~known).any():
        result["unknown_labels"] = float((~known).sum())
    return result


def _auc_ovr(y: np.ndarray, q: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    values = [roc_auc_score(y == k, q[:, k]) for k in range(q.shape[1]) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(values)) if values else math.nan


def _balanced(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    recalls = [float((predicted[y == k] == k).mean()) for k in range(n_classes) if (y == k).any()]
    return float(np.mean(recalls)) if recalls else math.nan


# ---------------------------------------------------------------------------- estimated


def estimate_multiclass(probabilities: np.ndarray, calibrator: ClassCalibrator, cfg: ModelConfig,
                        n_simulations: int = 200, seed: int = 0, confidence: float = 0.95) -> dict[str, Estimate]:
    """Label-free estimates of the multiclass metrics on a window's served probabilities.

    Returns an `Estimate` for each of `config.MULTICLASS_METRICS` (so `cfg.metric` is among them).

    Raises:
        NotImplementedError: for a model that is not multiclass.
        ValueError: on an empty window, non-finite probabilities, a shape that does not fit the
            calibrator, `n_simulations` < 2 or a confidence outside (0, 1).
    """
    if cfg.task is not Task.MULTICLASS_CLASSIFICATION:
        raise NotImplementedError("estimate_multiclass estimates multiclass models; binary ones use "
                                  "performance.estimate_performance")
    q = np.asarray(probabilities, dtype=float)
    if q.ndim != 2 or len(q) == 0 or q.shape[1] != len(calibrator.classes):
        raise ValueError(f"probabilities of shape {q.shape} do not fit {len(calibrator.classes)} classes")
    if not np.isfinite(q).all():
        raise ValueError("probabilities must be finite")
    check_estimate_args(n_simulations, confidence)
    p = calibrator(q)
    predicted = np.argmax(q, axis=1)
    draws = _simulate(q, p, predicted, n_simulations, np.random.default_rng(seed))
    expected = _expected(q, p, predicted)
    tail = (1.0 - confidence) / 2.0 * 100.0
    out: dict[str, Estimate] = {}
    for name, samples in draws.items():
        finite = samples[np.isfinite(samples)]
        if len(finite) == 0:
            out[name] = Estimate(name, math.nan, math.nan, math.nan, math.nan, "cbpe_mc")
            continue
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
        value, method = (expected[name], "cbpe") if name in expected else (float(np.mean(finite)), "cbpe_mc")
        out[name] = Estimate(name, float(value), std, float(low), float(high), method)
    return out


def _expected(q: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Closed forms over labels ~ Categorical(p), predictions fixed (see the module docstring)."""
    n, k = p.shape
    rows = np.arange(n)
    chosen = np.zeros_like(p)
    chosen[rows, predicted] = 1.0
    tp = (p * chosen).sum(axis=0)  # expected true positives per class
    predicted_count = chosen.sum(axis=0)
    actual = p.sum(axis=0)  # expected rows per class
    fp, fn = predicted_count - tp, actual - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        recall = np.where(actual > 0, tp / actual, np.nan)
    clipped = np.clip(q, LOG_LOSS_CLIP, 1.0)
    return {
        "accuracy": float(p[rows, predicted].mean()),
        "log_loss": float(-(p * np.log(clipped)).sum(axis=1).mean()),
        "f1_macro": float(f1.mean()),
        "balanced_accuracy": float(np.nanmean(recall)) if np.isfinite(recall).any() else math.nan,
    }


def _simulate(q: np.ndarray, p: np.ndarray, predicted: np.ndarray, n_simulations: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every metric on each of `n_simulations` label draws ~ Categorical(p), in chunks of bounded memory."""
    from scipy.stats import rankdata

    n, k = p.shape
    cumulative = np.cumsum(p, axis=1)
    cumulative[:, -1] = 1.0
    ranks = np.column_stack([rankdata(q[:, j]) for j in range(k)])  # for the per-class Mann-Whitney AUC
    log_q = np.log(np.clip(q, LOG_LOSS_CLIP, 1.0))
    chunk = max(1, MC_CHUNK_CELLS // (n * k))
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_simulations:
        size = min(chunk, n_simulations - done)
        u = rng.random((size, n, 1))
        labels = (u > cumulative[None, :, :]).sum(axis=2).clip(max=k - 1)  # size x n class indices
        onehot = (labels[:, :, None] == np.arange(k)[None, None, :]).astype(float)  # size x n x k
        for name, values in _draw_metrics(onehot, labels, predicted, ranks, log_q).items():
            parts.setdefault(name, []).append(values)
        done += size
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def _draw_metrics(onehot: np.ndarray, labels: np.ndarray, predicted: np.ndarray, ranks: np.ndarray,
                  log_q: np.ndarray) -> dict[str, np.ndarray]:
    """The five metrics of each draw (rows of `labels`), vectorized over draws."""
    n, k = log_q.shape
    positives = onehot.sum(axis=1).astype(float)  # draws x k
    chosen = predicted[None, :, None] == np.arange(k)[None, None, :]
    tp = (onehot * chosen).sum(axis=1)
    predicted_count = chosen.sum(axis=1).astype(float)
    fp, fn = predicted_count - tp, positives - tp
    negatives = n - positives
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: no class both ways in a draw
        auc = (np.einsum("dnk,nk->dk", onehot, ranks) - positives * (positives + 1) / 2.0) / (positives * negatives)
        auc = np.where((positives > 0) & (negatives > 0), auc, np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        recall = np.where(positives > 0, tp / positives, np.nan)
        return {
            "roc_auc_ovr": np.nanmean(auc, axis=1),
            "log_loss": -np.einsum("dnk,nk->d", onehot, log_q) / n,
            "f1_macro": f1.mean(axis=1),
            "accuracy": (labels == predicted[None, :]).mean(axis=1),
            "balanced_accuracy": np.nanmean(recall, axis=1),
        }

