"""The paired bootstrap of the quality gate: a metric on shared seeded row resamples, as count matrices.

Each replicate draws n row indices with replacement once; every score vector is scored on those
same rows. Binary scores are the positive-class probability (1-d, labels 0/1); multiclass scores
are the class probabilities (2-d, rows x classes) with labels coded 0..classes-1 in column order,
for `log_loss`, `accuracy`, `balanced_accuracy`, `f1_macro` and `roc_auc_ovr` (macro one-vs-rest).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["CHUNK_CELLS", "LABEL_THRESHOLD", "bootstrap_metric"]

# `evaluate` turns probabilities into labels at 0.5; the bootstrap must score the same labels.
LABEL_THRESHOLD = 0.5
# Upper bound on the replicate x row count matrix held at once (~16 MB of float64).
CHUNK_CELLS = 2_000_000


def bootstrap_metric(metric: str, y: np.ndarray, scores: list[np.ndarray], samples: int, seed: int) -> np.ndarray:
    """`metric` of each score vector on `samples` seeded row resamples shared by all vectors.

    Each replicate draws n row indices with replacement once; every score vector is scored on
    those same rows (a paired bootstrap). Resamples are held as per-row counts, so each
    metric is a weighted sum computed for a block of replicates at once.

    Returns:
        An array of shape (len(scores), samples); NaN where the metric is undefined.
    """
    scorers = [_scorer(metric, y, score) for score in scores]  # per-vector work done once, not per block
    rng = np.random.default_rng(seed)
    n = len(y)
    chunk = max(1, CHUNK_CELLS // n)
    out = np.empty((len(scores), samples))
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        rows = rng.integers(0, n, size=(size, n))
        offsets = rows + (np.arange(size) * n)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=size * n).reshape(size, n).astype(float)
        for i, scorer in enumerate(scorers):
            out[i, start:start + size] = scorer(counts)
    return out


Scorer = Callable[[np.ndarray], np.ndarray]


def _scorer(metric: str, y: np.ndarray, s: np.ndarray) -> Scorer:
    """A function from a count matrix (replicates x rows) to `metric` per replicate."""
    if np.ndim(s) == 2:
        return _multiclass_scorer(metric, y, np.asarray(s, dtype=float))
    if metric == "roc_auc":
        plan = _AucPlan(y, s)
        return plan.auc
    if metric in _LABEL_METRICS:
        labels = (s >= LABEL_THRESHOLD).astype(float)
        return lambda w: _LABEL_METRICS[metric](w, y, labels)
    if metric in _SCORE_METRICS:
        return lambda w: _SCORE_METRICS[metric](w, y, s)
    raise ValueError(f"no bootstrap implementation for metric {metric!r}")


def _mean(w: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.asarray(w @ values / w.sum(axis=1))


def _log_loss(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    p = np.clip(s, 1e-15, 1 - 1e-15)  # as `evaluate` does
    return _mean(w, -(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _r2(w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    total = w.sum(axis=1)
    sst = w @ y**2 - (w @ y) ** 2 / total  # weighted sum of squares around the weighted mean
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(1.0 - (w @ (s - y) ** 2) / sst)


_SCORE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "log_loss": _log_loss,
    "brier": lambda w, y, s: _mean(w, (s - y) ** 2),
    "rmse": lambda w, y, s: np.sqrt(_mean(w, (s - y) ** 2)),
    "mae": lambda w, y, s: _mean(w, np.abs(s - y)),
    "r2": _r2,
}


def _confusion(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return w @ (pred * y), w @ (pred * (1 - y)), w @ ((1 - pred) * y)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _precision(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    tp, fp, _ = _confusion(w, y, pred)
    return _ratio(tp, tp + fp)


def _recall(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    tp, _, fn = _confusion(w, y, pred)
    return _ratio(tp, tp + fn)


def _f1(w: np.ndarray, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    tp, fp, fn = _confusion(w, y, pred)
    return _ratio(2 * tp, 2 * tp + fp + fn)


_LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": lambda w, y, pred: _mean(w, (pred == y).astype(float)),
    "precision": _precision,
    "recall": _recall,
    "f1": _f1,
}


class _AucPlan:
    """Rank-based ROC AUC under row weights: P(positive scores above negative), ties count half.

    Sorting and tie groups depend only on the scores, so they are computed once; per block of
    replicates the AUC is then one cumulative sum of negative weight along the score order:
    each positive row counts the negatives strictly below its tie group plus half of its ties.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        self.order = np.argsort(s, kind="mergesort")
        s_sorted, y_sorted = s[self.order], y[self.order]
        self.negative = (y_sorted == 0).astype(float)
        new_group = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], len(s)]  # exclusive
        group = np.cumsum(new_group) - 1
        self.positive_rows = np.flatnonzero(y_sorted == 1)
        # Indexes into the cumulative sum with a leading 0 column: negatives before the group / up to its end.
        self.below = starts[group[self.positive_rows]]
        self.up_to = ends[group[self.positive_rows]]

    def auc(self, w: np.ndarray) -> np.ndarray:
        """The weighted AUC for each row of the count matrix `w`; NaN without both classes."""
        w_sorted = w[:, self.order]
        cum_neg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w_sorted * self.negative, axis=1)], axis=1)
        w_pos = w_sorted[:, self.positive_rows]
        pairs = w_pos.sum(axis=1) * cum_neg[:, -1]
        wins = (w_pos * (cum_neg[:, self.below] + cum_neg[:, self.up_to])).sum(axis=1) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(pairs > 0, wins / pairs, np.nan)


# ---------------------------------------------------------------------------- multiclass


def _multiclass_scorer(metric: str, y: np.ndarray, p: np.ndarray) -> Scorer:
    """`metric` per replicate for class probabilities `p` (rows x classes) and labels coded 0..classes-1."""
    codes = np.asarray(y).astype(int)
    classes = p.shape[1]
    truth = (codes[:, None] == np.arange(classes)[None, :]).astype(float)  # rows x classes, one-hot
    if metric == "log_loss":
        clipped = np.clip(p, 1e-15, 1.0)  # as `multiclass_score` does, renormalized
        row_loss = -np.log(clipped[np.arange(len(codes)), codes] / clipped.sum(axis=1))
        return lambda w: _mean(w, row_loss)
    if metric == "roc_auc_ovr":
        plans = [_AucPlan(truth[:, k], p[:, k]) for k in range(classes)]
        return lambda w: _macro_auc(w, plans)
    predicted = (np.argmax(p, axis=1)[:, None] == np.arange(classes)[None, :]).astype(float)
    if metric == "accuracy":
        correct = (truth * predicted).sum(axis=1)
        return lambda w: _mean(w, correct)
    if metric == "balanced_accuracy":
        return lambda w: _balanced_accuracy(w, truth, predicted)
    if metric == "f1_macro":
        return lambda w: _f1_macro(w, truth, predicted)
    raise ValueError(f"no bootstrap implementation for multiclass metric {metric!r}")


def _balanced_accuracy(w: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in each resample (sklearn's balanced accuracy)."""
    support = w @ truth
    hits = w @ (truth * predicted)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
    count = present.sum(axis=1)
    return np.where(count > 0, recall.sum(axis=1) / np.maximum(count, 1), np.nan)


def _f1_macro(w: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro F1 over every class (0 for a class neither present nor predicted: zero_division=0)."""
    tp = w @ (truth * predicted)
    fp = w @ ((1 - truth) * predicted)
    fn = w @ (truth * (1 - predicted))
    return np.asarray(_ratio(2 * tp, 2 * tp + fp + fn).mean(axis=1))


def _macro_auc(w: np.ndarray, plans: list[_AucPlan]) -> np.ndarray:
    """The mean one-vs-rest AUC over classes with both outcomes in the resample; NaN with fewer than two."""
    aucs = np.column_stack([plan.auc(w) for plan in plans])
    valid = np.isfinite(aucs)
    total = np.where(valid, aucs, 0.0).sum(axis=1)
    count = valid.sum(axis=1)
    return np.where(count >= 2, total / np.maximum(count, 1), np.nan)
