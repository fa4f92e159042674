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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot.config import LOWER_IS_BETTER, Baseline, ModelConfig, Task
from autopilot.gates.bootstrap import LABEL_THRESHOLD, bootstrap_metric
from autopilot.gates.intervals import FAIL, INCONCLUSIVE, PASS, rows_needed
from autopilot.modeling.training import class_order, evaluate, metrics_from_scores, predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["bootstrap_metric", "evaluate_quality", "fit_baseline"]  # bootstrap_metric: from gates.bootstrap

GATE = "quality"
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
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        coded, problem = _coded_multiclass(challenger, champion, y, y_train)
        if problem:
            return GateReport.failed(GATE, [problem], thresholds=thresholds)
        challenger, champion, y, y_train = coded
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
    """The standard test metrics (`evaluate`) of already computed scores (multiclass: labels coded
    0..classes-1 in the score columns' order, see `_coded_multiclass`)."""
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return metrics_from_scores(y, scores, cfg.task, labels=list(range(scores.shape[1])))
    return evaluate(_StoredScores(scores), X, y, cfg.task, threshold=LABEL_THRESHOLD)


def _holdout_problem(X: pd.DataFrame, y: pd.Series) -> str | None:
    if len(X) == 0:
        return "the holdout is empty: nothing to judge the model on"
    if len(X) != len(y):
        return f"the holdout has {len(X)} feature rows but {len(y)} labels"
    if pd.isna(y).any():
        return f"the holdout has {int(pd.isna(y).sum())} missing labels"
    return None


class _ByCode:
    """A classifier whose probability columns follow a fixed class order, coded 0..classes-1: a class
    the model never saw gets probability 0, a class it knows beyond the order is dropped (and the row
    renormalized), so champion, challenger and baselines are scored column for column."""

    def __init__(self, model: Any, labels: list[str]) -> None:
        self.model, self.labels = model, labels
        self.classes_ = np.arange(len(labels))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        proba = np.asarray(self.model.predict_proba(X), dtype=float)
        own = {str(label): k for k, label in enumerate(class_order(self.model))}
        if [str(label) for label in class_order(self.model)] == self.labels:
            return proba
        out = np.column_stack([proba[:, own[label]] if label in own else np.zeros(len(proba))
                               for label in self.labels])
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=np.full_like(out, 1.0 / len(self.labels)), where=total > 0)


def _coded_multiclass(challenger: Any, champion: Any | None, y: pd.Series,
                      y_train: pd.Series | None) -> tuple[tuple[Any, Any, pd.Series, pd.Series | None], str | None]:
    """Multiclass: labels coded 0..classes-1 in the challenger's class order, every model's columns in it.

    A holdout label the challenger cannot predict fails the gate (its probability would be 0 by
    construction, and the comparison would judge something else than the model).
    """
    labels = [str(label) for label in class_order(challenger)]
    code = {label: k for k, label in enumerate(labels)}
    text = pd.Series(y).astype(str)
    train_text = None if y_train is None else pd.Series(y_train).astype(str)
    for split, values in (("holdout", text), ("training split", train_text)):
        unknown = [] if values is None else sorted(set(values) - set(code))
        if unknown:
            return (challenger, champion, y, y_train), (f"the {split} has labels the challenger never learned: "
                                                        f"{unknown} (its classes: {labels})")
    train = None if train_text is None else train_text.map(code).astype(int)
    coded_champion = None if champion is None else _ByCode(champion, labels)
    return (_ByCode(challenger, labels), coded_champion, text.map(code).astype(int), train), None


def _checked_scores(model: Any, X: pd.DataFrame, cfg: ModelConfig, who: str) -> tuple[np.ndarray, str | None]:
    scores = np.asarray(predict_scores(model, X, cfg.task), dtype=float)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        if scores.ndim != 2 or scores.shape[0] != len(X):
            return scores, f"{who}: expected class probabilities of shape ({len(X)}, classes), got {scores.shape}"
    elif scores.shape != (len(X),):
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
    if cfg.task.classification and pd.Series(y_train).nunique() < 2:
        verdict.hard.append("first run: the training split holds one class only, so no baseline can be fitted "
                            "and the model cannot be judged against one")
        return
    fitted: dict[Baseline, np.ndarray] = {}
    for kind in cfg.gates.quality.first_run_baselines:
        try:
            model = fit_baseline(kind, cfg, X_train, y_train, seed)
            if cfg.task is Task.MULTICLASS_CLASSIFICATION:  # fitted on the codes: every code a column
                model = _ByCode(model, [str(k) for k in range(scores.shape[1])])
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
              Task.MULTICLASS_CLASSIFICATION: "DummyClassifier(strategy='prior')",
              Task.REGRESSION: "DummyRegressor(strategy='mean')"},
    "linear": {Task.BINARY_CLASSIFICATION: "LogisticRegression(C=1.0), one-hot + median impute + standard scale",
               Task.MULTICLASS_CLASSIFICATION: "LogisticRegression(C=1.0, multinomial), one-hot + median impute + "
                                               "standard scale",
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

        dummy = DummyClassifier(strategy="prior") if cfg.task.classification \
            else DummyRegressor(strategy="mean")
        return dummy.fit(X_train, y_train)
    if kind == "linear":
        from autopilot.modeling.search_space import build_pipeline

        return build_pipeline(_LINEAR_PARAMS, cfg, seed).fit(X_train, y_train)
    raise ValueError(f"unknown first-run baseline {kind!r}")


def _baseline_words(kind: str, cfg: ModelConfig, y_train: pd.Series) -> str:
    """The baseline in plain words, e.g. 'the class prior (always 24.1%, the training rate)'."""
    classify = cfg.task is Task.BINARY_CLASSIFICATION
    if kind == "prior" and cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return "the class prior (always the training rate of each class)"
    if kind == "linear" and cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return "a multinomial logistic regression (same features, same training rows)"
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
