"""The fairness gate's decision: every grouping judged, the counterfactual test and the sensitive
attribution share gated, `on_inconclusive` applied, the GateReport written.

Groups below `min_group_size` are reported, not gated; an attribute left with fewer than two
gated groups fails, naming what to set. `on_inconclusive` decides whether an inconclusive metric
holds the version for review (default), rejects it, or passes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot.config import FairnessGateConfig, ModelConfig, Task
from autopilot.gates.fairness.counterfactual import flip_rate, flip_reason
from autopilot.gates.fairness.groups import Grouping, build_groupings
from autopilot.gates.fairness.judging import REPORT_ONLY, Outcome
from autopilot.gates.fairness.label_bias import pretraining_bias
from autopilot.gates.fairness.metrics import classification_outcome, regression_outcome
from autopilot.gates.fairness.multiclass import label_texts, multiclass_outcomes
from autopilot.gates.intervals import FAIL, PASS
from autopilot.modeling.training import class_order, predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["GATE", "evaluate_fairness"]

GATE = "fairness"


def evaluate_fairness(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    cfg: ModelConfig,
    attribution_share: dict[str, float] | None = None,
    train: pd.DataFrame | None = None,
    y_train: pd.Series | None = None,
    seed: int = 0,
) -> GateReport:
    """Judge `model` on the holdout (X, y) for every sensitive attribute and intersection of `cfg`.

    Args:
        model: a fitted pipeline taking the canonical feature frame.
        X, y: the holdout features and encoded labels.
        cfg: the model config (`sensitive_attributes`, `gates.fairness`).
        attribution_share: sensitive attribute -> its share of the total mean |SHAP|, from the
            explainability step; None when it was not computed (reported, not a failure).
        train, y_train: the training data: quantile bins and bin medians come from `train`, and
            the pre-training bias report from both (else from X, y).
        seed: the bootstrap seed.

    Returns:
        The report. Inconclusive metrics follow `gates.fairness.on_inconclusive`: `review` fails
        it with `details["requires_review"] = True` when nothing failed outright.

    Never raises: an empty holdout, a missing (or entirely empty) sensitive column, NaN scores or
    attributions, or any error give a failed report with a reason.
    """
    thresholds = json_safe(cfg.gates.fairness.model_dump(mode="json"))
    try:
        # One native thread: the gate's predictions are a few batches of ~10k rows, where OpenMP
        # start-up dominates; on a busy 2-core worker two threads measured ~3x slower than one.
        with threadpool_limits(limits=1):
            return _evaluate(model, X, y, cfg, attribution_share, train, y_train, seed, thresholds)
    except Exception as exc:  # a gate that errors fails closed, with the error as its reason
        return GateReport.failed(GATE, [f"fairness gate errored: {type(exc).__name__}: {exc}"], thresholds=thresholds)


def _evaluate(model: Any, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig, attribution_share: dict[str, float] | None,
              train: pd.DataFrame | None, y_train: pd.Series | None, seed: int,
              thresholds: dict[str, Any]) -> GateReport:
    problems = _input_problems(X, y, cfg)
    if problems:
        return GateReport.failed(GATE, problems, thresholds=thresholds)
    scores = np.asarray(predict_scores(model, X, cfg.task), dtype=float)
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        return GateReport.failed(GATE, [f"{bad} of {len(X)} scores are NaN or infinite"], thresholds=thresholds)
    groupings = build_groupings(cfg, X, train)
    total = Outcome(details={"holdout_rows": len(X), "attributes": {}})
    if not cfg.sensitive_attributes:
        total.details["note"] = "no sensitive attributes configured: nothing to judge"
    for index, grouping in enumerate(groupings):
        rng = np.random.default_rng([seed, index])  # per attribute: independent of the others' draws
        for name, found in _attribute(model, X, y, scores, grouping, cfg, rng):
            total.metrics.update({f"{name}.{metric}": value for metric, value in found.metrics.items()})
            total.details["attributes"][name] = found.details
            total.hard.extend(found.hard)
            total.unsure.extend(found.unsure)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        total.details["classes"] = [str(c) for c in label_texts(class_order(model))]
    share_metrics, total.details["attribution"], share_reasons = _attribution(attribution_share, cfg)
    total.metrics.update(share_metrics)
    total.hard.extend(share_reasons)
    if train is not None and y_train is not None:
        total.details["pretraining_bias"] = {"data": "train", **pretraining_bias(train, y_train, cfg, groupings)}
    else:
        total.details["pretraining_bias"] = {"data": "holdout", **pretraining_bias(X, y, cfg, groupings)}
    return _report(total, cfg.gates.fairness, thresholds)


def _report(total: Outcome, fc: FairnessGateConfig, thresholds: dict[str, Any]) -> GateReport:
    """Apply `on_inconclusive`: the statuses stay in the details whatever it says."""
    details = total.details
    details["metric_status"] = {
        f"{name}.{'counterfactual_flip_rate' if key == 'counterfactual' else key}": entry["status"]
        for name, attr in details["attributes"].items()
        for key, entry in attr.items() if isinstance(entry, dict) and "status" in entry}
    details["on_inconclusive"] = fc.on_inconclusive
    details["inconclusive"] = total.unsure
    counted = total.unsure if fc.on_inconclusive != "pass" else []
    reasons = total.hard + counted
    # A human decides only when the sole obstacle is evidence too thin to judge.
    details["requires_review"] = fc.on_inconclusive == "review" and bool(total.unsure) and not total.hard
    return GateReport(name=GATE, passed=not reasons, metrics=json_safe(total.metrics), thresholds=thresholds,
                      reasons=reasons, details=json_safe(details))


def _input_problems(X: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> list[str]:
    if len(X) == 0:
        return ["the holdout is empty: nothing to judge fairness on"]
    if len(X) != len(y):
        return [f"the holdout has {len(X)} feature rows but {len(y)} labels"]
    if pd.isna(y).any():
        return [f"the holdout has {int(pd.isna(y).sum())} missing labels"]
    missing = [f"{attr}: the sensitive column is missing from the holdout" for attr in cfg.sensitive_attributes
               if attr not in X.columns]
    # A column with no value at all is as missing: its one "(missing)" group cannot be compared
    # with anything, and the gate would judge nothing.
    empty = [f"{attr}: the sensitive column has no values in the holdout (all {len(X)} missing)"
             for attr in cfg.sensitive_attributes if attr in X.columns and X[attr].isna().all()]
    return missing + empty


def _attribute(model: Any, X: pd.DataFrame, y: pd.Series, scores: np.ndarray, grouping: Grouping, cfg: ModelConfig,
               rng: np.random.Generator) -> list[tuple[str, Outcome]]:
    """Group metrics, their intervals and the counterfactual test for one grouping: (report name, outcome)
    pairs, one for a binary or regression model; for a multiclass model one per class (one-vs-rest) and
    one for the counterfactual test of the predicted class."""
    fc = cfg.gates.fairness
    groups = grouping.assign(X)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        classes = [str(c) for c in label_texts(class_order(model))]
        named = multiclass_outcomes(grouping, groups, np.asarray(y, dtype=object), scores, classes, fc, rng)
        for _, found in named:
            found.details["grouping"] = grouping.describe()
        overall = Outcome(details={"grouping": grouping.describe(), "classes": classes,
                                   "judged_per_class": [name for name, _ in named]})
        return [*named, (grouping.name, _counterfactual(overall, model, X, grouping, cfg))]
    y_true = np.asarray(y, dtype=float)
    if cfg.task is Task.BINARY_CLASSIFICATION:
        found = classification_outcome(grouping, groups, y_true, scores, fc, rng)
    else:
        found = regression_outcome(grouping, groups, y_true, scores, fc, rng)
    found.details["grouping"] = grouping.describe()
    return [(grouping.name, _counterfactual(found, model, X, grouping, cfg))]


def _counterfactual(found: Outcome, model: Any, X: pd.DataFrame, grouping: Grouping, cfg: ModelConfig) -> Outcome:
    """The counterfactual flip test of one grouping, recorded (and gated) on `found`."""
    fc = cfg.gates.fairness
    flips = flip_rate(model, X, grouping, cfg)
    found.details["counterfactual"] = flips
    rate = flips.get("flip_rate")
    if rate is not None:
        found.metrics["counterfactual_flip_rate"] = rate
        limit = fc.max_counterfactual_flip_rate
        found.details["counterfactual"]["status"] = REPORT_ONLY if limit is None else FAIL if rate > limit else PASS
        if limit is not None and rate > limit:
            found.hard.append(flip_reason(grouping, flips, rate, limit))
    return found


def _attribution(share: dict[str, float] | None, cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    limit = cfg.gates.fairness.max_sensitive_attribution_share
    if share is None:
        return {}, {"status": "not provided"}, []
    nan = sorted(k for k, v in share.items() if v is None or not math.isfinite(float(v)))
    if nan:
        return {}, {"status": "NaN attributions", "attributes": nan}, [
            f"NaN attributions for {', '.join(nan)}: the sensitive attribution share cannot be judged"]
    total = float(sum(float(v) for v in share.values()))
    details = {"status": "provided", "by_attribute": {k: float(v) for k, v in share.items()}, "total": total,
               "not_provided": [a for a in cfg.sensitive_attributes if a not in share]}
    reasons = []
    if limit is not None and total > limit:
        reasons.append(f"sensitive attributes ({', '.join(sorted(share))}): sensitive_attribution_share "
                       f"{total:.3f} of total mean |SHAP| is above the allowed {limit:g}")
    return {"sensitive_attribution_share": total}, details, reasons
