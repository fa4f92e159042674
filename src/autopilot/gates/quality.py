"""The quality gate: the challenger against absolute floors and against the current champion.

Both models are scored now, on the same held-out rows of the current snapshot, never against
metrics logged in the past (those came from other data). "Worse than the champion" is decided
by a paired bootstrap confidence interval of the metric difference, so sampling noise on a
small holdout neither blocks a good model nor lets a clearly worse one through.

Decision rule on `cfg.metric` (difference oriented so that positive = challenger better):

- `worse` (fail) when the whole interval lies below `-non_inferiority_margin`;
- `better` when the whole interval lies above 0;
- `equivalent` (pass) otherwise.

First run (no champion): `gates.quality.first_run` decides. `promote` passes on the floors
alone; `require_review` fails with `details["requires_review"] = True`, which the decision
step reads as "hold for a human" (`autopilot promote ... --reason`), not as a quality failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot.config import LOWER_IS_BETTER, ModelConfig
from autopilot.modeling.training import evaluate, predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["bootstrap_metric", "evaluate_quality"]

GATE = "quality"
# `evaluate` turns probabilities into labels at 0.5; the bootstrap must score the same labels.
LABEL_THRESHOLD = 0.5
# Upper bound on the replicate x row count matrix held at once (~16 MB of float64).
CHUNK_CELLS = 2_000_000


def evaluate_quality(
    challenger: Any,
    champion: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    cfg: ModelConfig,
    champion_version: int | None = None,
    seed: int = 0,
) -> GateReport:
    """Judge the challenger on floors and, when there is one, against the champion on (X, y).

    Never raises: an empty holdout, NaN scores or any error gives a failed report with a reason.
    `metrics` holds the challenger's test metrics; `details["baseline"]` the champion's
    version, metrics, the point difference, its confidence interval and the decision.
    """
    thresholds = _thresholds(cfg)
    try:
        # One native thread: the gate's predictions are a few batches of ~10k rows, where OpenMP
        # start-up dominates; on a busy 2-core worker two threads measured ~3x slower than one.
        with threadpool_limits(limits=1):
            return _evaluate(challenger, champion, X, y, cfg, champion_version, seed, thresholds)
    except Exception as exc:  # a gate that errors fails closed, with the error as its reason
        return GateReport.failed(GATE, [f"quality gate errored: {type(exc).__name__}: {exc}"], thresholds=thresholds)


def _thresholds(cfg: ModelConfig) -> dict[str, Any]:
    quality = cfg.gates.quality
    return json_safe({
        "metric": cfg.metric,
        "min_metrics": dict(quality.min_metrics),
        "max_metrics": dict(quality.max_metrics),
        "non_inferiority_margin": quality.non_inferiority_margin,
        "bootstrap_samples": quality.bootstrap_samples,
        "confidence": quality.confidence,
        "first_run": quality.first_run,
    })


def _evaluate(challenger: Any, champion: Any | None, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig,
              champion_version: int | None, seed: int, thresholds: dict[str, Any]) -> GateReport:
    problem = _holdout_problem(X, y)
    if problem:
        return GateReport.failed(GATE, [problem], thresholds=thresholds)
    y_true = np.asarray(y, dtype=float)
    scores, problem = _checked_scores(challenger, X, cfg, "challenger")
    if problem:
        return GateReport.failed(GATE, [problem], thresholds=thresholds)
    metrics = _metrics(scores, X, y, cfg)
    reasons = _floor_reasons(metrics, cfg)
    details: dict[str, Any] = {"holdout_rows": len(X)}
    if champion is None:
        reasons, details = _first_run(reasons, details, cfg)
    else:
        champion_scores, problem = _checked_scores(champion, X, cfg, "champion")
        if problem:
            return GateReport.failed(GATE, [*reasons, problem], metrics=json_safe(metrics), thresholds=thresholds)
        champion_metrics = _metrics(champion_scores, X, y, cfg)
        baseline = _compare(scores, champion_scores, y_true, cfg, seed)
        sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
        baseline.update(champion_version=champion_version, metrics=champion_metrics,
                        difference=sign * (metrics[cfg.metric] - champion_metrics[cfg.metric]))
        details.update(baseline=baseline, requires_review=False)
        reasons.extend(_comparison_reasons(baseline, cfg))
    return GateReport(name=GATE, passed=not reasons, metrics=json_safe(metrics), thresholds=thresholds,
                      reasons=reasons, details=json_safe(details))


class _StoredScores:
    """Stands in for a model whose scores are already computed, so each model predicts once."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([1.0 - self.scores, self.scores])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.scores


def _metrics(scores: np.ndarray, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> dict[str, float]:
    """The standard test metrics (`evaluate`) of already computed scores."""
    return evaluate(_StoredScores(scores), X, y, cfg.task, threshold=LABEL_THRESHOLD)


def _holdout_problem(X: pd.DataFrame, y: pd.Series) -> str | None:
    if len(X) == 0:
        return "the holdout is empty: nothing to judge the model on"
    if len(X) != len(y):
        return f"the holdout has {len(X)} feature rows but {len(y)} labels"
    if pd.isna(y).any():
        return f"the holdout has {int(pd.isna(y).sum())} missing labels"
    return None


def _checked_scores(model: Any, X: pd.DataFrame, cfg: ModelConfig, who: str) -> tuple[np.ndarray, str | None]:
    scores = np.asarray(predict_scores(model, X, cfg.task), dtype=float)
    if scores.shape != (len(X),):
        return scores, f"{who}: expected {len(X)} scores, got shape {scores.shape}"
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        return scores, f"{who}: {bad} of {len(X)} scores are NaN or infinite"
    return scores, None


def _floor_reasons(metrics: dict[str, float], cfg: ModelConfig) -> list[str]:
    quality = cfg.gates.quality
    reasons = []
    for name, floor in quality.min_metrics.items():
        value = metrics.get(name, math.nan)
        if not value >= floor:  # written so that NaN fails too
            reasons.append(f"{name} {_fmt(value)} is below the floor {floor:g}")
    for name, ceiling in quality.max_metrics.items():
        value = metrics.get(name, math.nan)
        if not value <= ceiling:
            reasons.append(f"{name} {_fmt(value)} is above the ceiling {ceiling:g}")
    return reasons


def _first_run(reasons: list[str], details: dict[str, Any], cfg: ModelConfig) -> tuple[list[str], dict[str, Any]]:
    details["baseline"] = {"champion_version": None, "note": "first run: no champion"}
    # requires_review marks "held only for a human"; with failing floors it is a plain failure.
    details["requires_review"] = cfg.gates.quality.first_run == "require_review" and not reasons
    if cfg.gates.quality.first_run == "require_review":
        reasons = [*reasons, "first run: there is no champion to compare with and gates.quality.first_run is "
                   f"require_review, so a human must promote this version (autopilot promote {cfg.name} "
                   "<version> --reason ...)"]
    return reasons, details


def _compare(challenger: np.ndarray, champion: np.ndarray, y: np.ndarray, cfg: ModelConfig,
             seed: int) -> dict[str, Any]:
    """Paired bootstrap of `cfg.metric`: one row resample per replicate, both models scored on it."""
    quality = cfg.gates.quality
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    diffs = bootstrap_metric(cfg.metric, y, [challenger, champion], quality.bootstrap_samples, seed)
    diffs = sign * (diffs[0] - diffs[1])
    valid = diffs[np.isfinite(diffs)]
    result: dict[str, Any] = {"metric": cfg.metric, "valid_replicates": int(valid.size),
                              "orientation": "challenger - champion, positive = challenger better"}
    if valid.size < quality.bootstrap_samples // 2:  # e.g. one class only: the metric is undefined
        result.update(ci=None, decision="undefined")
        return result
    tail = (1.0 - quality.confidence) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    if high < -quality.non_inferiority_margin:
        decision = "worse"
    elif low > 0:
        decision = "better"
    else:
        decision = "equivalent"
    result.update(ci=[float(low), float(high)], decision=decision)
    return result


def _comparison_reasons(baseline: dict[str, Any], cfg: ModelConfig) -> list[str]:
    quality = cfg.gates.quality
    version = baseline.get("champion_version")
    who = f"champion v{version}" if version is not None else "the champion"
    if baseline["decision"] == "undefined":
        return [f"cannot compare with {who}: {cfg.metric} is undefined on most bootstrap resamples of this holdout"]
    if baseline["decision"] != "worse":
        return []
    low, high = baseline["ci"]
    return [f"{cfg.metric} is worse than {who}: difference {_fmt(baseline['difference'])}, "
            f"{quality.confidence:.0%} CI [{_fmt(low)}, {_fmt(high)}] lies below "
            f"-{quality.non_inferiority_margin:g} (the non-inferiority margin)"]


def _fmt(value: float | None) -> str:
    return "NaN" if value is None or not math.isfinite(value) else f"{value:.4f}"


# ---------------------------------------------------------------------------- bootstrap


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
