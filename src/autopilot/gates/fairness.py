"""The fairness gate: group metrics per sensitive attribute, judged by bootstrap confidence intervals.

For every attribute in `cfg.sensitive_attributes` the gate reports fairlearn's `MetricFrame`
by group and, over groups with at least `min_group_size` rows, the demographic parity ratio
and difference and the equalized odds difference (regression: MAE by group and the worst/best
MAE ratio). A metric fails the gate only when its whole confidence interval lies outside the
allowed band, so a small group's noise cannot block a model; groups below `min_group_size`
are reported, not gated. A counterfactual flip test (change the attribute, count changed
decisions) and the SHAP attribution share of the sensitive attributes are gated too; the
label bias already present in the data (pre-training bias) is reported only.

Bootstrap: groups are resampled separately (a stratified bootstrap keeps every group's size).
For classification every statistic depends only on each group's four confusion cells, so a
group's resample is drawn directly as multinomial cell counts: exactly the row bootstrap's
distribution, at a cost independent of the number of rows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, mean_absolute_error
from threadpoolctl import threadpool_limits

from autopilot.config import FairnessGateConfig, ModelConfig, Task
from autopilot.modeling.training import predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["counterfactual_flip_rate", "evaluate_fairness", "pretraining_bias"]

GATE = "fairness"
MISSING_GROUP = "(missing)"
# Counterfactual rows: bounds the cost at rows x categories predictions per attribute.
MAX_COUNTERFACTUAL_ROWS = 2000
# Regression bootstrap: the replicate x row index block held at once.
CHUNK_CELLS = 2_000_000
# Below this share of defined replicates an interval is not trusted (and not gated).
MIN_VALID_SHARE = 0.5


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
    """Judge `model` on the holdout (X, y) for every sensitive attribute of `cfg`.

    Args:
        model: a fitted pipeline taking the canonical feature frame.
        X, y: the holdout features and encoded labels.
        cfg: the model config (`sensitive_attributes`, `gates.fairness`).
        attribution_share: sensitive attribute -> its share of the total mean |SHAP|, from the
            explainability step; None when it was not computed (reported, not a failure).
        train, y_train: the training data, for the pre-training bias report (else X, y).
        seed: the bootstrap seed.

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
    metrics: dict[str, Any] = {}
    reasons: list[str] = []
    details: dict[str, Any] = {"holdout_rows": len(X), "attributes": {}}
    if not cfg.sensitive_attributes:
        details["note"] = "no sensitive attributes configured: nothing to judge"
    for index, attr in enumerate(cfg.sensitive_attributes):
        rng = np.random.default_rng([seed, index])  # per attribute: independent of the others' draws
        attr_metrics, attr_details, attr_reasons = _attribute(model, X, y, scores, attr, cfg, rng)
        metrics.update({f"{attr}.{name}": value for name, value in attr_metrics.items()})
        details["attributes"][attr] = attr_details
        reasons.extend(attr_reasons)
    share_metrics, details["attribution"], share_reasons = _attribution(attribution_share, cfg)
    metrics.update(share_metrics)
    reasons.extend(share_reasons)
    if train is not None and y_train is not None:
        details["pretraining_bias"] = {"data": "train", **pretraining_bias(train, y_train, cfg)}
    else:
        details["pretraining_bias"] = {"data": "holdout", **pretraining_bias(X, y, cfg)}
    return GateReport(name=GATE, passed=not reasons, metrics=json_safe(metrics), thresholds=thresholds,
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
    # A column with no value at all is as missing: its one "(missing)" group would be reported
    # as "fewer than two groups: not gated", and the gate would pass without judging anything.
    empty = [f"{attr}: the sensitive column has no values in the holdout (all {len(X)} missing)"
             for attr in cfg.sensitive_attributes if attr in X.columns and X[attr].isna().all()]
    return missing + empty


def _attribute(model: Any, X: pd.DataFrame, y: pd.Series, scores: np.ndarray, attr: str, cfg: ModelConfig,
               rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Group metrics, their intervals and the counterfactual test for one attribute."""
    fc = cfg.gates.fairness
    groups = _group_labels(X[attr])
    y_true = np.asarray(y, dtype=float)
    if cfg.task is Task.BINARY_CLASSIFICATION:
        metrics, details, reasons = _classification(attr, groups, y_true, scores, fc, rng)
    else:
        metrics, details, reasons = _regression(attr, groups, y_true, scores, fc, rng)
    flips = counterfactual_flip_rate(model, X, attr, cfg)
    details["counterfactual"] = flips
    rate = flips.get("flip_rate")
    if rate is not None:
        metrics["counterfactual_flip_rate"] = rate
        limit = fc.max_counterfactual_flip_rate
        if limit is not None and rate > limit:
            reasons.append(f"{attr}: counterfactual_flip_rate {rate:.3f} (changing {attr} changes "
                           f"{rate:.1%} of decisions) is above the allowed {limit:g}")
    return metrics, details, reasons


def _group_labels(column: pd.Series) -> np.ndarray:
    """Group names as strings; a missing value is a group of its own."""
    return np.asarray(column.astype(object).where(column.notna(), MISSING_GROUP).astype(str))


def _split_groups(groups: np.ndarray, fc: FairnessGateConfig) -> tuple[list[str], dict[str, int]]:
    names, counts = np.unique(groups, return_counts=True)
    gated = [str(g) for g, c in zip(names, counts, strict=True) if c >= fc.min_group_size]
    small = {str(g): int(c) for g, c in zip(names, counts, strict=True) if c < fc.min_group_size}
    return gated, small


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the defined replicates; None when too few are defined."""
    valid = values[np.isfinite(values)]
    if valid.size < MIN_VALID_SHARE * values.size or valid.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _band_reason(attr: str, metric: str, ci: list[float] | None, confidence: float,
                 minimum: float | None = None, maximum: float | None = None) -> list[str]:
    """A reason when the whole interval lies outside the allowed band (None = report only).

    A gated metric whose interval is undefined on this holdout fails closed.
    """
    if minimum is None and maximum is None:
        return []
    if ci is None:
        return [f"{attr}: {metric} has no defined {confidence:.0%} CI on this holdout (fails closed)"]
    text = f"{attr}: {metric} {confidence:.0%} CI [{ci[0]:.2f}, {ci[1]:.2f}]"
    if minimum is not None and ci[1] < minimum:
        return [f"{text} lies below the allowed minimum {minimum:g}"]
    if maximum is not None and ci[0] > maximum:
        return [f"{text} lies above the allowed {maximum:g}"]
    return []


# ---------------------------------------------------------------------------- classification


def _classification(attr: str, groups: np.ndarray, y: np.ndarray, scores: np.ndarray, fc: FairnessGateConfig,
                    rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    pred = (scores >= fc.threshold).astype(float)
    gated, small = _split_groups(groups, fc)
    odds_groups, odds_small = _odds_groups(groups, y, gated, fc.min_group_size)
    details: dict[str, Any] = {"by_group": _by_group_classification(groups, y, pred), "gated_groups": gated,
                               "reported_not_gated": small, "equalized_odds_groups": odds_groups,
                               "equalized_odds_reported_not_gated": odds_small}
    metrics: dict[str, Any] = {}
    if len(gated) < 2:
        details["note"] = f"not gated: fewer than two groups with at least {fc.min_group_size} rows"
        return metrics, details, []
    cells = _bootstrap_cells(groups, y, pred, gated, fc.bootstrap_samples, rng)
    mask = np.isin(groups, gated)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratio = float(demographic_parity_ratio(y[mask], pred[mask], sensitive_features=groups[mask]))
        # fairlearn gives 0/0 = NaN when no one is selected; that is parity, as in the bootstrap.
        metrics["demographic_parity_ratio"] = 1.0 if math.isnan(ratio) and pred[mask].sum() == 0 else ratio
        metrics["demographic_parity_difference"] = float(
            demographic_parity_difference(y[mask], pred[mask], sensitive_features=groups[mask]))
        if len(odds_groups) >= 2:
            odds = np.isin(groups, odds_groups)
            metrics["equalized_odds_difference"] = float(equalized_odds_difference(
                y[odds], pred[odds], sensitive_features=groups[odds], agg="worst_case"))
    replicates = _replicate_disparities(cells, gated, odds_groups)
    reasons: list[str] = []
    bands = {"demographic_parity_ratio": (fc.demographic_parity_ratio_min, None),
             "demographic_parity_difference": (None, fc.demographic_parity_difference_max),
             "equalized_odds_difference": (None, fc.equalized_odds_difference_max)}
    for name, (minimum, maximum) in bands.items():
        if name not in metrics:
            continue
        ci = _interval(replicates[name], fc.confidence)
        details[name] = {"value": metrics[name], "ci": ci, "gated": minimum is not None or maximum is not None}
        reasons.extend(_band_reason(attr, name, ci, fc.confidence, minimum, maximum))
    return metrics, details, reasons


def _odds_groups(groups: np.ndarray, y: np.ndarray, gated: list[str],
                 min_size: int) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Groups with at least `min_size` positive and `min_size` negative labels.

    A TPR rests on a group's positives and an FPR on its negatives: a group of 150 rows with
    12 positives has a TPR too noisy to gate on, and the max-minus-min spread of noisy rates
    is biased upward. (With no positives at all fairlearn reports TPR 0 and would invent a
    large equalized odds difference.)
    """
    kept: list[str] = []
    small: dict[str, dict[str, int]] = {}
    for group in gated:
        labels = y[groups == group]
        positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
        if positives >= min_size and negatives >= min_size:
            kept.append(group)
        else:
            small[group] = {"positives": positives, "negatives": negatives}
    return kept, small


def _by_group_classification(groups: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings for groups without a label class
        frame = MetricFrame(
            metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                     "false_positive_rate": false_positive_rate, "accuracy": accuracy_score, "count": count},
            y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
        )
        table = frame.by_group
    out: dict[str, Any] = {}
    for group, row in table.to_dict(orient="index").items():
        labels = y[groups == group]
        entry = {name: json_safe(value) for name, value in row.items()}
        entry["count"] = int(row["count"])
        if labels.sum() == 0:  # no positives: a TPR is undefined, not 0
            entry["true_positive_rate"] = None
        if labels.sum() == len(labels):  # no negatives: an FPR is undefined
            entry["false_positive_rate"] = None
        out[str(group)] = entry
    return out


def _bootstrap_cells(groups: np.ndarray, y: np.ndarray, pred: np.ndarray, gated: list[str], samples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Resampled confusion cells (TP, FN, FP, TN) per replicate and group: shape (samples, groups, 4)."""
    out = np.empty((samples, len(gated), 4))
    for j, group in enumerate(gated):
        in_group = groups == group
        yg, pg = y[in_group], pred[in_group]
        cells = np.array([(yg * pg).sum(), (yg * (1 - pg)).sum(), ((1 - yg) * pg).sum(), ((1 - yg) * (1 - pg)).sum()])
        out[:, j, :] = rng.multinomial(int(in_group.sum()), cells / cells.sum(), size=samples)
    return out


def _replicate_disparities(cells: np.ndarray, gated: list[str], odds_groups: list[str]) -> dict[str, np.ndarray]:
    tp, fn, fp, tn = (cells[..., k] for k in range(4))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are handled by _interval
        selection = (tp + fp) / (tp + fn + fp + tn)
        top, bottom = selection.max(axis=1), selection.min(axis=1)
        # Nobody selected in any group is parity (ratio 1), not 0/0.
        ratio = np.where(top > 0, bottom / np.where(top > 0, top, 1.0), 1.0)
        columns = [gated.index(g) for g in odds_groups]
        tpr = (tp / (tp + fn))[:, columns]
        fpr = (fp / (fp + tn))[:, columns]
        spread_tpr = np.nanmax(tpr, axis=1) - np.nanmin(tpr, axis=1) if columns else np.full(len(top), np.nan)
        spread_fpr = np.nanmax(fpr, axis=1) - np.nanmin(fpr, axis=1) if columns else np.full(len(top), np.nan)
        odds = np.fmax(spread_tpr, spread_fpr)
    return {"demographic_parity_ratio": ratio, "demographic_parity_difference": top - bottom,
            "equalized_odds_difference": odds}


# ---------------------------------------------------------------------------- regression


def _regression(attr: str, groups: np.ndarray, y: np.ndarray, pred: np.ndarray, fc: FairnessGateConfig,
                rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    gated, small = _split_groups(groups, fc)
    frame = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_prediction": _mean_prediction, "mean_target": _mean_target,
                 "count": count},
        y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
    )
    table = frame.by_group.to_dict(orient="index")
    details: dict[str, Any] = {"by_group": {str(g): {**json_safe(row), "count": int(row["count"])}
                                            for g, row in table.items()},
                               "gated_groups": gated, "reported_not_gated": small}
    if len(gated) < 2:
        details["note"] = f"not gated: fewer than two groups with at least {fc.min_group_size} rows"
        return {}, details, []
    errors = np.abs(y - pred)
    point = _error_ratio(np.array([[errors[groups == g].mean() for g in gated]]))[0]
    replicates = np.column_stack([_bootstrap_means(errors[groups == g], fc.bootstrap_samples, rng) for g in gated])
    ci = _interval(_error_ratio(replicates), fc.confidence)
    details["group_error_ratio"] = {"value": point, "ci": ci, "gated": fc.max_group_error_ratio is not None}
    reasons = _band_reason(attr, "group_error_ratio (worst/best group MAE)", ci, fc.confidence,
                           maximum=fc.max_group_error_ratio)
    return {"group_error_ratio": point}, details, reasons


def _mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _mean_target(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


def _error_ratio(mae: np.ndarray) -> np.ndarray:
    """Worst over best group MAE per row; NaN (undefined) when the best group's MAE is 0."""
    best, worst = mae.min(axis=1), mae.max(axis=1)
    return np.where(best > 0, worst / np.where(best > 0, best, 1.0), np.nan)


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    chunk = max(1, CHUNK_CELLS // len(values))
    return np.concatenate([values[rng.integers(0, len(values), size=(min(chunk, samples - start), len(values)))]
                          .mean(axis=1) for start in range(0, samples, chunk)])


# ---------------------------------------------------------------------------- counterfactual


def counterfactual_flip_rate(model: Any, X: pd.DataFrame, attribute: str, cfg: ModelConfig) -> dict[str, Any]:
    """How often changing `attribute` alone changes the model's output.

    Every sampled row (at most `MAX_COUNTERFACTUAL_ROWS`, seeded by `cfg.split.seed`) is
    scored once with each allowed category of the attribute (`features[attr].categories`, else
    the categories seen in X). Classification: `flip_rate` is the share of rows whose decision
    (score >= `gates.fairness.threshold`) changes for at least one substitution. Regression:
    `mean_relative_change`, the mean absolute relative change of the prediction (report only).

    Raises:
        ValueError: when the column is missing or X is empty.
    """
    if attribute not in X.columns:
        raise ValueError(f"{attribute}: the sensitive column is missing")
    if len(X) == 0:
        raise ValueError("no rows to run the counterfactual test on")
    rng = np.random.default_rng(cfg.split.seed)
    rows = X if len(X) <= MAX_COUNTERFACTUAL_ROWS else X.iloc[np.sort(
        rng.choice(len(X), MAX_COUNTERFACTUAL_ROWS, replace=False))]
    spec = cfg.features.get(attribute)
    if spec is not None and spec.type == "numeric":
        return {"attribute": attribute, "flip_rate": None, "note": "numeric attribute: no categories to substitute"}
    categories = list(spec.categories) if spec is not None and spec.categories else sorted(
        str(v) for v in X[attribute].dropna().unique())
    if len(categories) < 2:
        return {"attribute": attribute, "flip_rate": None, "note": "fewer than two categories to substitute"}
    # One batched prediction for all substitutions: per-call overhead dominates small batches.
    variants = pd.concat([rows.assign(**{attribute: category}) for category in categories], ignore_index=True)
    task = cfg.task
    base = np.asarray(predict_scores(model, rows, task), dtype=float)
    changed = np.asarray(predict_scores(model, variants, task), dtype=float).reshape(len(categories), len(rows))
    result: dict[str, Any] = {"attribute": attribute, "rows": len(rows), "categories": categories}
    if task is Task.BINARY_CLASSIFICATION:
        threshold = cfg.gates.fairness.threshold
        flips = (changed >= threshold) != (base >= threshold)
        result.update(flip_rate=float(flips.any(axis=0).mean()),
                      flip_rate_to={c: float(f.mean()) for c, f in zip(categories, flips, strict=True)},
                      mean_abs_score_change=float(np.abs(changed - base).mean()))
    else:
        relative = np.abs(changed - base) / np.maximum(np.abs(base), 1e-12)
        result.update(flip_rate=None, mean_relative_change=float(relative.mean()))
    return json_safe(result)


# ---------------------------------------------------------------------------- attribution


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


# ---------------------------------------------------------------------------- pre-training bias


def pretraining_bias(frame: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> dict[str, Any]:
    """Label bias already in the data (report only), per sensitive attribute.

    Classification: the positive label share overall (class imbalance) and per group, the
    largest difference between group positive rates (label proportion difference, over groups
    with at least `min_group_size` rows) and the ratio min/max (the label's own demographic
    parity ratio). Regression: the target mean per group and the largest difference.
    """
    labels = np.asarray(y, dtype=float)
    classify = cfg.task is Task.BINARY_CLASSIFICATION
    out: dict[str, Any] = {"rows": len(labels), "attributes": {}}
    if classify:
        out["positive_share"] = float(labels.mean()) if len(labels) else None
    else:
        out["target_mean"] = float(labels.mean()) if len(labels) else None
    for attr in cfg.sensitive_attributes:
        if attr not in frame.columns:
            out["attributes"][attr] = {"note": "column missing"}
            continue
        out["attributes"][attr] = _label_by_group(_group_labels(frame[attr]), labels, classify, cfg)
    return json_safe(out)


def _label_by_group(groups: np.ndarray, labels: np.ndarray, classify: bool, cfg: ModelConfig) -> dict[str, Any]:
    table = pd.DataFrame({"group": groups, "label": labels}).groupby("group")["label"].agg(["mean", "size"])
    rate_name = "positive_rate" if classify else "target_mean"
    result: dict[str, Any] = {
        "by_group": {str(g): {rate_name: float(r["mean"]), "count": int(r["size"]),
                              "share_of_rows": float(r["size"] / len(labels))} for g, r in table.iterrows()},
    }
    gated = table[table["size"] >= cfg.gates.fairness.min_group_size]["mean"]
    if len(gated) >= 2:
        key = "label_proportion_difference" if classify else "target_mean_difference"
        result[key] = float(gated.max() - gated.min())
        if classify:
            result["label_parity_ratio"] = float(gated.min() / gated.max()) if gated.max() > 0 else None
    return result
