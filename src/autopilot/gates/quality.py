"""The quality gate: the challenger against absolute floors and against the current champion.

Both models are scored now, on the same held-out rows of the current snapshot, never against
metrics logged in the past (those came from other data). Each comparison is a paired bootstrap
confidence interval of the metric difference on `cfg.metric`, oriented so that positive =
challenger better, judged against a bound:

- Champion (non-inferiority, bound `-non_inferiority_margin`): `pass` when the whole interval is
  at or above the bound (`better` when it is also above 0, else `equivalent`), `fail` (`worse`)
  when it is wholly below, `inconclusive` when it straddles the bound.
- First run, no champion: the trivial baselines of `gates.quality.first_run_baselines`, fitted
  on the same training split and scored on the same holdout. The class prior (training mean) by
  superiority, bound 0: `pass` when the whole interval is above 0, `fail` when it is at or below
  0, `inconclusive` otherwise; a model has to surely carry information. The default-regularized
  logistic or ridge regression on the same features by non-inferiority, like a champion (bound
  `-non_inferiority_margin`): where a linear model is already near the best (a tuned linear
  model against its default-regularized self), superiority could never be shown and every
  first run would wait for a human; what is refused is a model surely worse than it (the
  recall-0.10 model a first run once promoted). Floors alone never let a first run through.

`gates.quality.on_inconclusive` decides what an inconclusive comparison does: `review` fails
the report with `details["requires_review"] = True` (the decision step holds the version for a
human) unless something failed outright; `fail` rejects; `pass` lets it through with the status
kept in `details`. Its reason says how many more holdout rows would settle it at the observed
effect. On top, `gates.quality.first_run: require_review` still holds a passing first run for a
human (`autopilot promote ... --reason`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot.config import LOWER_IS_BETTER, Baseline, ModelConfig, Task
from autopilot.gates.intervals import FAIL, INCONCLUSIVE, PASS, rows_needed
from autopilot.modeling.training import evaluate, predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["bootstrap_metric", "evaluate_quality", "fit_baseline"]

GATE = "quality"
# `evaluate` turns probabilities into labels at 0.5; the bootstrap must score the same labels.
LABEL_THRESHOLD = 0.5
# Upper bound on the replicate x row count matrix held at once (~16 MB of float64).
CHUNK_CELLS = 2_000_000
UNDEFINED = "undefined"


@dataclass
class _Verdict:
    """What the gate has found so far: hard failures, findings held for review, details."""

    hard: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def evaluate_quality(
    challenger: Any,
    champion: Any | None,
    X: pd.DataFrame,
    y: pd.Series,
    cfg: ModelConfig,
    champion_version: int | None = None,
    seed: int = 0,
    X_train: pd.DataFrame | None = None,
    y_train: pd.Series | None = None,
) -> GateReport:
    """Judge the challenger on floors and against the champion, or on a first run against baselines.

    Args:
        X_train, y_train: the training split, to fit the first-run baselines on. Needed only
            when there is no champion and `gates.quality.first_run_baselines` is not empty;
            missing then, the gate fails closed.

    Never raises: an empty holdout, NaN scores or any error gives a failed report with a reason.
    `metrics` holds the challenger's test metrics; `details["baseline"]` the champion's
    version, metrics, the point difference, its confidence interval and the decision;
    `details["first_run_baselines"]` the same per trivial baseline on a first run.
    """
    thresholds = _thresholds(cfg)
    try:
        # One native thread: the gate's predictions are a few batches of ~10k rows, where OpenMP
        # start-up dominates; on a busy 2-core worker two threads measured ~3x slower than one.
        with threadpool_limits(limits=1):
            return _evaluate(challenger, champion, X, y, cfg, champion_version, seed, thresholds, X_train, y_train)
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
        "first_run_baselines": list(quality.first_run_baselines),
        "on_inconclusive": quality.on_inconclusive,
    })


def _evaluate(challenger: Any, champion: Any | None, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig,
              champion_version: int | None, seed: int, thresholds: dict[str, Any],
              X_train: pd.DataFrame | None, y_train: pd.Series | None) -> GateReport:
    problem = _holdout_problem(X, y)
    if problem:
        return GateReport.failed(GATE, [problem], thresholds=thresholds)
    scores, problem = _checked_scores(challenger, X, cfg, "challenger")
    if problem:
        return GateReport.failed(GATE, [problem], thresholds=thresholds)
    metrics = _metrics(scores, X, y, cfg)
    verdict = _Verdict(hard=_floor_reasons(metrics, cfg), details={"holdout_rows": len(X)})
    if champion is None:
        _first_run(verdict, scores, metrics, X, y, cfg, seed, X_train, y_train)
    else:
        champion_scores, problem = _checked_scores(champion, X, cfg, "champion")
        if problem:
            return GateReport.failed(GATE, [*verdict.hard, problem], metrics=json_safe(metrics),
                                     thresholds=thresholds)
        _against_champion(verdict, scores, metrics, champion_scores, X, y, cfg, champion_version, seed)
    # requires_review marks "held only for a human"; with any hard failure it is a plain failure.
    verdict.details["requires_review"] = bool(verdict.review) and not verdict.hard
    reasons = [*verdict.hard, *verdict.review]
    return GateReport(name=GATE, passed=not reasons, metrics=json_safe(metrics), thresholds=thresholds,
                      reasons=reasons, details=json_safe(verdict.details))


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


# ---------------------------------------------------------------------------- champion


def _against_champion(verdict: _Verdict, scores: np.ndarray, metrics: dict[str, float], champion: np.ndarray,
                      X: pd.DataFrame, y: pd.Series, cfg: ModelConfig, champion_version: int | None,
                      seed: int) -> None:
    """Non-inferiority against the champion, scored now on the same rows."""
    champion_metrics = _metrics(champion, X, y, cfg)
    who = f"champion v{champion_version}" if champion_version is not None else "the champion"
    bound = -cfg.gates.quality.non_inferiority_margin
    diffs = _paired_differences(cfg, np.asarray(y, dtype=float), scores, [champion], seed)[0]
    comparison = _judge(diffs, _oriented(cfg, metrics, champion_metrics), bound, len(y), cfg, strict=False)
    comparison.update(champion_version=champion_version, metrics=champion_metrics,
                      orientation="challenger - champion, positive = challenger better",
                      decision=_champion_decision(comparison))
    verdict.details["baseline"] = comparison
    _file(verdict, comparison, cfg, who, metrics, champion_metrics,
          bound_words=f"{_fmt(bound)} (the allowed loss: gates.quality.non_inferiority_margin)")


def _champion_decision(comparison: dict[str, Any]) -> str:
    """The comparison in the champion's words: better / equivalent / worse / inconclusive / undefined."""
    status = comparison["status"]
    if status == PASS:
        return "better" if comparison["ci"][0] > 0 else "equivalent"
    return {FAIL: "worse", INCONCLUSIVE: "inconclusive"}.get(status, UNDEFINED)


# ---------------------------------------------------------------------------- first run


def _first_run(verdict: _Verdict, scores: np.ndarray, metrics: dict[str, float], X: pd.DataFrame, y: pd.Series,
               cfg: ModelConfig, seed: int, X_train: pd.DataFrame | None, y_train: pd.Series | None) -> None:
    """No champion: surely better than the prior, not worse than a linear model; then the first-run policy."""
    quality = cfg.gates.quality
    verdict.details["baseline"] = {"champion_version": None, "note": "first run: no champion"}
    if quality.first_run_baselines:
        _against_baselines(verdict, scores, metrics, X, y, cfg, seed, X_train, y_train)
    if quality.first_run == "require_review":
        verdict.review.append(
            "first run: there is no champion to compare with and gates.quality.first_run is require_review, "
            f"so a human must promote this version (autopilot promote {cfg.name} <version> --reason ...)")


def _against_baselines(verdict: _Verdict, scores: np.ndarray, metrics: dict[str, float], X: pd.DataFrame,
                       y: pd.Series, cfg: ModelConfig, seed: int, X_train: pd.DataFrame | None,
                       y_train: pd.Series | None) -> None:
    if X_train is None or y_train is None or len(X_train) == 0:
        verdict.hard.append("first run: the trivial baselines (gates.quality.first_run_baselines) need the training "
                            "split to be fitted on, and none was given")
        return
    if cfg.task is Task.BINARY_CLASSIFICATION and pd.Series(y_train).nunique() < 2:
        verdict.hard.append("first run: the training split holds one class only, so no baseline can be fitted "
                            "and the model cannot be judged against one")
        return
    fitted: dict[Baseline, np.ndarray] = {}
    for kind in cfg.gates.quality.first_run_baselines:
        try:
            model = fit_baseline(kind, cfg, X_train, y_train, seed)
            baseline_scores, problem = _checked_scores(model, X, cfg, f"the {kind} baseline")
        except Exception as exc:  # a baseline that cannot be fitted proves nothing: fail closed
            problem = f"the {kind} baseline could not be fitted: {type(exc).__name__}: {exc}"
        if problem:
            verdict.hard.append(f"first run: {problem}")
        else:
            fitted[kind] = baseline_scores
    y_true = np.asarray(y, dtype=float)
    diffs = _paired_differences(cfg, y_true, scores, list(fitted.values()), seed)
    results: dict[str, Any] = {}
    for (kind, baseline_scores), kind_diffs in zip(fitted.items(), diffs, strict=True):
        baseline_metrics = _metrics(baseline_scores, X, y, cfg)
        superiority = kind == "prior"  # see the module docstring: the linear one by non-inferiority
        bound = 0.0 if superiority else -cfg.gates.quality.non_inferiority_margin
        comparison = _judge(kind_diffs, _oriented(cfg, metrics, baseline_metrics), bound, len(y), cfg,
                            strict=superiority)
        comparison.update(model=_BASELINE_NAMES[kind][cfg.task], metrics=baseline_metrics,
                          orientation=f"model - {kind} baseline, positive = model better")
        results[kind] = comparison
        words = ("0 (a first run must surely beat it: gates.quality.first_run_baselines)" if superiority else
                 f"{_fmt(bound)} (a first run must not be worse than it by more than "
                 "gates.quality.non_inferiority_margin)")
        _file(verdict, comparison, cfg, _baseline_words(kind, cfg, y_train), metrics, baseline_metrics,
              bound_words=words)
    verdict.details["first_run_baselines"] = results


_BASELINE_NAMES = {
    "prior": {Task.BINARY_CLASSIFICATION: "DummyClassifier(strategy='prior')",
              Task.REGRESSION: "DummyRegressor(strategy='mean')"},
    "linear": {Task.BINARY_CLASSIFICATION: "LogisticRegression(C=1.0), one-hot + median impute + standard scale",
               Task.REGRESSION: "Ridge(alpha=1.0), one-hot + median impute + standard scale"},
}
# The project's own preprocessing (search_space.build_pipeline) with default regularization:
# one-hot categoricals (missing -> most frequent), median-imputed and standardized numerics.
_LINEAR_PARAMS = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard",
                  "prep.cat_impute": "most_frequent", "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0,
                  "linear.C": 1.0, "linear.alpha": 1.0}


def fit_baseline(kind: str, cfg: ModelConfig, X_train: pd.DataFrame, y_train: pd.Series, seed: int) -> Any:
    """Fit one trivial first-run baseline (`prior` or `linear`) on the training split.

    `prior` is sklearn's DummyClassifier(strategy="prior") (regression: DummyRegressor mean);
    `linear` is the project's linear pipeline with default regularization (C = 1 / alpha = 1).
    """
    if kind == "prior":
        from sklearn.dummy import DummyClassifier, DummyRegressor

        dummy = DummyClassifier(strategy="prior") if cfg.task is Task.BINARY_CLASSIFICATION \
            else DummyRegressor(strategy="mean")
        return dummy.fit(X_train, y_train)
    if kind == "linear":
        from autopilot.modeling.search_space import build_pipeline

        return build_pipeline(_LINEAR_PARAMS, cfg, seed).fit(X_train, y_train)
    raise ValueError(f"unknown first-run baseline {kind!r}")


def _baseline_words(kind: str, cfg: ModelConfig, y_train: pd.Series) -> str:
    """The baseline in plain words, e.g. 'the class prior (always 24.1%, the training rate)'."""
    classify = cfg.task is Task.BINARY_CLASSIFICATION
    if kind == "prior":
        mean = float(np.mean(np.asarray(y_train, dtype=float)))
        return (f"the class prior (always {mean:.1%}, the training rate of the positive class)" if classify
                else f"the training mean (always {mean:.4g})")
    return ("a logistic regression (same features, same training rows)" if classify
            else "a ridge regression (same features, same training rows)")


# ---------------------------------------------------------------------------- judging


def _oriented(cfg: ModelConfig, ours: dict[str, float], theirs: dict[str, float]) -> float:
    """The point difference on `cfg.metric`, positive = ours better."""
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    return sign * (ours[cfg.metric] - theirs[cfg.metric])


def _paired_differences(cfg: ModelConfig, y: np.ndarray, scores: np.ndarray, others: list[np.ndarray],
                        seed: int) -> list[np.ndarray]:
    """Per other model, the oriented bootstrap differences of `cfg.metric` (one shared resample per replicate)."""
    if not others:
        return []
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    replicates = bootstrap_metric(cfg.metric, y, [scores, *others], cfg.gates.quality.bootstrap_samples, seed)
    return [sign * (replicates[0] - row) for row in replicates[1:]]


def _judge(diffs: np.ndarray, observed: float, bound: float, n: int, cfg: ModelConfig, *,
           strict: bool) -> dict[str, Any]:
    """pass / fail / inconclusive / undefined of a bootstrap interval against `bound`.

    `strict` (superiority): pass only when the whole interval is above the bound, fail when it is
    at or below it. Otherwise (non-inferiority): pass when the whole interval is at or above the
    bound, fail when it is wholly below.
    """
    quality = cfg.gates.quality
    valid = diffs[np.isfinite(diffs)]
    result: dict[str, Any] = {"metric": cfg.metric, "rule": "superiority" if strict else "non-inferiority",
                              "bound": bound, "difference": observed, "holdout_rows": n,
                              "valid_replicates": int(valid.size)}
    if valid.size < quality.bootstrap_samples // 2:  # e.g. one class only: the metric is undefined
        result.update(ci=None, status=UNDEFINED)
        return result
    tail = (1.0 - quality.confidence) / 2.0 * 100.0
    low, high = (float(v) for v in np.percentile(valid, [tail, 100.0 - tail]))
    if (low > bound) if strict else (low >= bound):
        status = PASS
    elif (high <= bound) if strict else (high < bound):
        status = FAIL
    else:
        status = INCONCLUSIVE
    result.update(ci=[low, high], status=status)
    if status == INCONCLUSIVE:
        result["rows_needed"] = rows_needed(observed, low, high, bound, n)
    return result


def _file(verdict: _Verdict, comparison: dict[str, Any], cfg: ModelConfig, who: str,
          ours: dict[str, float], theirs: dict[str, float], bound_words: str) -> None:
    """Record a comparison's reason where its status belongs: hard failure, review or nothing."""
    status = comparison["status"]
    if status == PASS:
        return
    if status == UNDEFINED:
        verdict.hard.append(f"cannot compare with {who}: {cfg.metric} is undefined on most bootstrap resamples "
                            "of this holdout")
        return
    reason = _comparison_reason(comparison, cfg, who, ours, theirs, bound_words)
    policy = cfg.gates.quality.on_inconclusive
    if status == FAIL or policy == "fail":
        verdict.hard.append(reason)
    elif policy == "review":
        verdict.review.append(reason)
    else:  # on_inconclusive: pass -- let it through, but keep what was found
        verdict.details.setdefault("passed_inconclusive", []).append(reason)


def _comparison_reason(comparison: dict[str, Any], cfg: ModelConfig, who: str, ours: dict[str, float],
                       theirs: dict[str, float], bound_words: str) -> str:
    """Plain words first, then the technical terms, e.g.
    'roc_auc 0.7100 vs 0.8300 for a logistic regression on the same 800 holdout rows: worse by 0.1200,
    95% interval -0.1500 to -0.0900, wholly at or below 0: ...'."""
    metric, difference, n = cfg.metric, comparison["difference"], comparison["holdout_rows"]
    low, high = comparison["ci"]
    direction = "better" if difference > 0 else "worse" if difference < 0 else "no different"
    by = f" by {_fmt(abs(difference))}" if difference != 0 else ""
    text = (f"{metric} {_fmt(ours[metric])} vs {_fmt(theirs[metric])} for {who} on the same {n:,} holdout rows: "
            f"{direction}{by}, {cfg.gates.quality.confidence:.0%} interval of the difference "
            f"{_fmt(low)} to {_fmt(high)}")
    if comparison["status"] == FAIL:
        side = "at or below" if comparison["rule"] == "superiority" else "below"
        return f"{text}, wholly {side} {bound_words}"
    rows = comparison.get("rows_needed")
    more = (f"about {rows:,} more holdout rows would settle it at the observed effect" if rows is not None
            else "it cannot become conclusive: the observed effect sits exactly on the bound")
    return (f"{text}, reaches both sides of {bound_words}: inconclusive; {more} "
            f"(gates.quality.on_inconclusive: {cfg.gates.quality.on_inconclusive})")


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
