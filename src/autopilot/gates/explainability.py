"""The explainability gate: judges a challenger's global SHAP importance on the original
features (from `autopilot.explain`), its stability against the champion, and leakage.

The gate (`evaluate_explainability`) fails closed, with a reason, on an exception, zero rows,
NaN/inf or all-zero attributions, or attributions that do not add up to the model output;
fails when one feature carries more than `max_feature_share` of all attribution (leakage);
and, with a champion, fails when nDCG@k of the importance ranking drops below `min_ndcg`.
It reports the share carried by the sensitive attributes, which the fairness gate gates.

Multiclass: the attributions cover every class (`Attributions.class_values`), and features are
ranked by mean |SHAP| over rows and classes (`Attributions.importance`), so leakage, stability
and the sensitive share are judged on that one ranking; each class's own top features are
reported beside it (`metrics["class_top_features"]`), not gated.

LIME beside SHAP (`measure_lime_agreement`, `lime_shap_agreement`): on the first
`lime_rows` rows SHAP explained, LIME (`explain.lime_tabular`) explains the same rows, and the
per-row Jaccard overlap of the two top-k feature sets is reported in `details["lime_agreement"]`
(mean, top-1 agreement, rows, k), so the decision record carries it. Report-only unless
`min_lime_agreement` is set; then a mean below it (or an agreement that could not be measured)
fails the gate. Why report-only: LIME and SHAP answer different questions (LIME, the effect of
leaving the row's quartile bin, with perturbations drawn from the training distribution; SHAP,
the distance from the average row): on Adult LIME ranks capital_gain first for most rows (its
bin "0" set against a bin of large gains) where SHAP does not, top-1 agreement 0 of 20 rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.explain import Attributions, ndcg_at_k, top_shares
from autopilot.reports import GateReport, json_safe

__all__ = ["ADDITIVITY_TOLERANCE", "GATE", "evaluate_explainability", "lime_shap_agreement",
           "measure_lime_agreement"]

GATE = "explainability"
# Largest |sum of attributions + base - model output| / max(1, max |model output|) the gate accepts.
ADDITIVITY_TOLERANCE = 1e-3


def _shown(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{item['feature']} {item['share']:.3f}" for item in top)


def _unusable(attr: Attributions, who: str) -> str | None:
    """Why `attr` cannot be judged (None when it can)."""
    if attr.rows == 0 or attr.values.shape[0] == 0:
        return f"{who}: no rows were explained"
    if attr.values.shape[1] == 0:
        return f"{who}: the attributions have no feature columns"
    matrix = attr.values.to_numpy(dtype=float)
    bad = int((~np.isfinite(matrix)).sum())
    if bad:
        return f"{who}: {bad} of {matrix.size} attributions are NaN or infinite"
    if not math.isfinite(attr.base_value):
        return f"{who}: the base value is {attr.base_value}"
    if not np.any(matrix != 0.0):
        return f"{who}: every attribution is zero (the explainer saw no dependence on any feature)"
    if attr.additivity_error is not None and not attr.additivity_error <= ADDITIVITY_TOLERANCE:
        return (f"{who}: attributions do not add up to the model output "
                f"(relative error {attr.additivity_error:.3g} > {ADDITIVITY_TOLERANCE})")
    return None


def evaluate_explainability(
    challenger: Attributions,
    champion: Attributions | None,
    cfg: ModelConfig,
    sensitive: list[str] | None = None,
    lime_agreement: dict[str, Any] | None = None,
) -> GateReport:
    """Judge the challenger's attributions: usable, no leakage, and stable against the champion.

    Fails closed (never raises): on an exception, zero rows, NaN/inf, all-zero or non-additive
    attributions (the challenger's or the champion's); when one feature's share of all
    attribution exceeds `max_feature_share`; when, with a champion, nDCG@`top_k` of the
    challenger's ranking against the champion's importance is below `min_ndcg`. Reports the
    top-k shares, every share and importance, nDCG, method, rows, seconds, and
    `sensitive_share` (the summed share of `sensitive`, default `cfg.sensitive_attributes`);
    `details["path_reason"]` says why that SHAP path explained the model. `lime_agreement`
    (`measure_lime_agreement`'s result) goes to `details["lime_agreement"]`, gated only by
    `min_lime_agreement`.
    """
    bounds = cfg.gates.explainability
    thresholds = {"max_feature_share": bounds.max_feature_share, "min_ndcg": bounds.min_ndcg, "top_k": bounds.top_k}
    try:
        report = _evaluate(challenger, champion, cfg, sensitive, thresholds)
        return _with_agreement(report, lime_agreement, bounds.min_lime_agreement)
    except Exception as exc:  # a gate fails closed, whatever went wrong
        return GateReport.failed(GATE, [f"the explainability gate errored: {type(exc).__name__}: {exc}"],
                                 thresholds=thresholds)


def _evaluate(challenger: Attributions, champion: Attributions | None, cfg: ModelConfig,
              sensitive: list[str] | None, thresholds: dict[str, Any]) -> GateReport:
    bounds = cfg.gates.explainability
    metrics: dict[str, Any] = {"method": challenger.method, "output": challenger.output, "rows": challenger.rows,
                               "seconds": challenger.seconds, "background_rows": challenger.background_rows,
                               "additivity_error": challenger.additivity_error}
    problem = _unusable(challenger, "challenger")
    if problem is not None:
        return GateReport.failed(GATE, [problem], metrics=json_safe(metrics), thresholds=thresholds)
    reasons: list[str] = []
    details: dict[str, Any] = {}
    importance = challenger.importance()
    shares = challenger.shares()
    top = top_shares(shares, bounds.top_k)
    leader = top[0]
    sensitive_names = list(cfg.sensitive_attributes if sensitive is None else sensitive)
    metrics.update({
        "top_features": top,
        "max_share": leader["share"],
        "max_share_feature": leader["feature"],
        "sensitive_share": float(sum(shares.get(name, 0.0) for name in sensitive_names)),
        "shares": shares,
        "importance": importance,
        "base_value": challenger.base_value,
        "ndcg_at_k": None,
    })
    if challenger.classes:
        metrics["classes"] = list(challenger.classes)
        metrics["class_top_features"] = _class_tops(challenger, bounds.top_k)
    details["sensitive_features"] = sensitive_names
    details["path_reason"] = challenger.path_reason
    absent = [name for name in sensitive_names if name not in shares]
    if absent:
        details["sensitive_not_explained"] = absent
    leaking = [(name, share) for name, share in shares.items() if share > bounds.max_feature_share]
    for name, share in sorted(leaking, key=lambda item: -item[1]):
        reasons.append(f"possible leakage: feature {name!r} carries {share:.3f} of all attribution "
                       f"(max {bounds.max_feature_share})")
    if champion is not None:
        reasons.extend(_stability(challenger, champion, bounds.top_k, bounds.min_ndcg, metrics, details))
    report_metrics = json_safe(metrics)
    if reasons:
        return GateReport.failed(GATE, reasons, metrics=report_metrics, thresholds=thresholds,
                                 details=json_safe(details))
    return GateReport(name=GATE, passed=True, metrics=report_metrics, thresholds=thresholds,
                      details=json_safe(details))


def _class_tops(attr: Attributions, k: int) -> dict[str, list[dict[str, Any]]]:
    """Each class's top-k features by its own share of that class's mean |SHAP| (reported, not gated)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for label, importance in attr.class_importance().items():
        total = sum(v for v in importance.values() if math.isfinite(v))
        shares = {name: (v / total if total > 0 else 0.0) for name, v in importance.items()}
        out[label] = top_shares(shares, k)
    return out


def _stability(challenger: Attributions, champion: Attributions, k: int, min_ndcg: float,
               metrics: dict[str, Any], details: dict[str, Any]) -> list[str]:
    problem = _unusable(champion, "champion")
    if problem is not None:
        return [f"cannot compare with the champion: {problem}"]
    reference = champion.importance()
    candidate = challenger.importance()
    ndcg = ndcg_at_k(reference, candidate, k)
    champion_top = top_shares(champion.shares(), k)
    metrics["ndcg_at_k"] = ndcg
    details.update({"champion_method": champion.method, "champion_output": champion.output,
                    "champion_top_features": champion_top})
    only_one = sorted(set(reference) ^ set(candidate))
    if only_one:
        details["features_not_in_both"] = only_one
    if not math.isfinite(ndcg):
        return ["cannot compare with the champion: nDCG is undefined (the champion carries no importance)"]
    if ndcg < min_ndcg:
        challenger_top = _shown(top_shares(challenger.shares(), k))
        return [f"importance ranking unstable against the champion: nDCG@{k} {ndcg:.3f} < {min_ndcg}; "
                f"challenger top-{k}: {challenger_top}; champion top-{k}: {_shown(champion_top)}"]
    return []


# ---------------------------------------------------------------------------- LIME beside SHAP


def lime_shap_agreement(shap_values: pd.DataFrame, lime_values: pd.DataFrame, k: int) -> dict[str, Any]:
    """How far LIME's and SHAP's top-k features agree, row by row (the same rows, original features).

    k is capped at the number of features minus one (top-k of every feature would always agree).
    Returns {"rows", "k", "mean_jaccard", "min_jaccard", "top1_agreement"} (None values on no rows).
    """
    from autopilot.explain.lime_tabular import top_features

    rows = [index for index in lime_values.index if index in shap_values.index]
    k = max(1, min(k, shap_values.shape[1] - 1))
    jaccards, same_first = [], []
    for index in rows:
        lime_top = top_features(lime_values.loc[index].to_dict(), k)
        shap_top = top_features(shap_values.loc[index].to_dict(), k)
        union = set(lime_top) | set(shap_top)
        jaccards.append(len(set(lime_top) & set(shap_top)) / len(union) if union else 1.0)
        same_first.append(bool(lime_top[:1] == shap_top[:1]))
    if not rows:
        return {"rows": 0, "k": k, "mean_jaccard": None, "min_jaccard": None, "top1_agreement": None}
    return {"rows": len(rows), "k": k, "mean_jaccard": float(np.mean(jaccards)), "min_jaccard": float(min(jaccards)),
            "top1_agreement": float(np.mean(same_first))}


def measure_lime_agreement(model: Any, shap: Attributions, rows: pd.DataFrame, background: pd.DataFrame,
                           cfg: ModelConfig, seed: int = 0) -> dict[str, Any] | None:
    """LIME on the first `lime_rows` rows SHAP explained, and the agreement of the two (bounded, seeded).

    None when `gates.explainability.lime_rows` is 0; `{"error": ...}` when LIME failed (reported;
    a failure only fails the gate when `min_lime_agreement` is set). The background is a seeded
    sample of at most 1,000 rows of `background` (the training split).

    On one native thread, like the other gates: LIME scores `lime_rows` batches of `lime_num_samples`
    rows, and HGB's two OpenMP threads made that ~5x slower on a busy 2-core machine (same weights).
    """
    from threadpoolctl import threadpool_limits

    from autopilot.explain.lime_tabular import lime_attributions

    bounds = cfg.gates.explainability
    if bounds.lime_rows == 0:
        return None
    try:
        chosen = rows.loc[list(shap.values.index[: bounds.lime_rows])]
        sample = background if len(background) <= LIME_BACKGROUND_ROWS else \
            background.sample(LIME_BACKGROUND_ROWS, random_state=seed)
        with threadpool_limits(limits=1):
            lime = lime_attributions(model, chosen, cfg, sample, num_samples=bounds.lime_num_samples, seed=seed)
        found = lime_shap_agreement(shap.values, lime.values, bounds.top_k)
    except Exception as exc:  # a second opinion: its failure is reported, never raised
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {**found, "method": "jaccard of the top-k |attribution| features per row", "num_samples": lime.num_samples,
            "seconds": round(lime.seconds, 3), "lime_output": lime.output, "shap_output": shap.output,
            "mean_lime_fit_r2": float(np.mean(lime.fit_r2))}


LIME_BACKGROUND_ROWS = 1000  # LIME's quartiles and frequencies: plenty, and cheap to discretize


def _with_agreement(report: GateReport, agreement: dict[str, Any] | None, minimum: float | None) -> GateReport:
    """The report with the LIME/SHAP agreement in its details; failed when below a configured minimum."""
    if agreement is None and minimum is None:
        return report
    details = {**report.details, "lime_agreement": json_safe(agreement)}
    thresholds = {**report.thresholds, "min_lime_agreement": minimum}
    reasons = list(report.reasons)
    if minimum is not None:
        mean = (agreement or {}).get("mean_jaccard")
        if agreement is None or mean is None:
            why = (agreement or {}).get("error") or "not measured (gates.explainability.lime_rows is 0)"
            reasons.append(f"LIME/SHAP agreement could not be measured: {why}")
        elif mean < minimum:
            reasons.append(f"LIME and SHAP disagree: mean top-{agreement['k']} Jaccard {mean:.3f} < {minimum} "
                           f"over {agreement['rows']} rows")
    return report.model_copy(update={"details": details, "thresholds": thresholds, "reasons": reasons,
                                     "passed": report.passed and len(reasons) == len(report.reasons)})
