"""What each gate actually gated, read from its report in the decision record: one `CheckView` per metric.

A gate report (`autopilot.reports.GateReport`, stored in `decision/decision.json`) holds many
numbers; the page shows only the ones a verdict hung on, each with the challenger's value, the
champion's (or a first-run baseline's) where the gate compared the two, the interval the gate
computed (the bootstrap CI of the difference for quality, of the metric for fairness), the
threshold it applied and its status: `gated` (with `passed`/`failed`), `inconclusive` (the
interval straddles the threshold) or `report-only` (no threshold configured). Incidental
numbers (rows, seconds, memory baselines) are left out.

Where a report lacks a field (records written before a gate reported it), the threshold comes
from the record's own `thresholds` (the config the gate ran with); whatever cannot be read is
simply not shown, so an old or unfamiliar record still renders (the page then falls back to the
gate's first numbers). Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GATED", "INCONCLUSIVE", "REPORT_ONLY", "CheckView", "finite", "gated_checks"]

GATED, INCONCLUSIVE, REPORT_ONLY = "gated", "inconclusive", "report-only"
PASSED, FAILED = "passed", "failed"

# Fairness metrics judged by an interval, and the config key of each one's edge (for old records).
FAIRNESS_BANDS = {
    "demographic_parity_ratio": ("demographic_parity_ratio_min", "min"),
    "demographic_parity_difference": ("demographic_parity_difference_max", "max"),
    "equalized_odds_difference": ("equalized_odds_difference_max", "max"),
    "group_error_ratio": ("max_group_error_ratio", "max"),
}
INFRA_LIMITS = (("load_seconds", "max_load_seconds", "s"), ("p95_latency_ms", "max_p95_latency_ms", "ms"),
                ("peak_memory_mb", "max_peak_memory_mb", "MB"))


@dataclass
class CheckView:
    """One gated (or report-only) metric of a gate."""

    metric: str
    value: float | None  # the challenger's value
    status: str  # gated | inconclusive | report-only
    outcome: str | None = None  # passed | failed (None: report-only)
    champion: float | None = None  # the champion's (or baseline's) value, where compared
    difference: float | None = None  # challenger - champion, oriented: positive = challenger better
    interval: list[float] | None = None  # the gate's CI: of `difference` when set, else of `value`
    confidence: float | None = None
    threshold: str | None = None  # e.g. "difference ≥ -0.005", "≤ 0.2"
    compared_with: str | None = None  # "champion v1", "prior baseline"


def gated_checks(report: Mapping[str, Any]) -> list[CheckView]:
    """The gated metrics of one gate report (a dict from the decision record); [] when none are readable."""
    reader = _READERS.get(str(report.get("name")))
    if reader is None:
        return []
    try:
        return reader(_dict(report.get("metrics")), _dict(report.get("thresholds")), _dict(report.get("details")))
    except (TypeError, ValueError, KeyError, AttributeError):  # an unfamiliar shape: show the fallback instead
        return []


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _interval(value: Any) -> list[float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(_number(v) is not None for v in value):
        return [float(value[0]), float(value[1])]
    return None


def _status(word: Any) -> tuple[str, str | None]:
    """A gate's own status word (pass / fail / inconclusive / report only / undefined) as (status, outcome)."""
    text = str(word).replace("_", " ").lower()
    if text == "pass":
        return GATED, PASSED
    if text == "inconclusive":
        return INCONCLUSIVE, None
    if text in ("report only", "report-only"):
        return REPORT_ONLY, None
    return GATED, FAILED  # fail, undefined (fails closed), anything unknown


def _limit(value: float | None, limit: Any, side: str) -> tuple[str, str | None, str | None]:
    """(status, outcome, threshold text) of a plain value against an optional limit (`min` or `max`)."""
    bound = _number(limit)
    if bound is None:
        return REPORT_ONLY, None, None
    ok = value is not None and (value >= bound if side == "min" else value <= bound)
    return GATED, PASSED if ok else FAILED, f"{'≥' if side == 'min' else '≤'} {bound:g}"


# ---------------------------------------------------------------------------- quality


def _quality(metrics: dict[str, Any], thresholds: dict[str, Any], details: dict[str, Any]) -> list[CheckView]:
    checks: list[CheckView] = []
    metric = str(thresholds.get("metric") or _dict(details.get("baseline")).get("metric") or "")
    baseline = _dict(details.get("baseline"))
    if "status" in baseline and metric:
        version = baseline.get("champion_version")
        checks.append(_comparison(metric, metrics, baseline, f"champion v{version}" if version is not None
                                  else "the champion"))
    for kind, comparison in _dict(details.get("first_run_baselines")).items():
        if isinstance(comparison, Mapping) and "status" in comparison and metric:
            checks.append(_comparison(metric, metrics, dict(comparison), f"{kind} baseline"))
    for check in checks:
        check.confidence = _number(thresholds.get("confidence"))
    for side, key in (("min", "min_metrics"), ("max", "max_metrics")):
        for name, bound in _dict(thresholds.get(key)).items():
            value = _number(metrics.get(name))
            status, outcome, text = _limit(value, bound, side)
            checks.append(CheckView(metric=str(name), value=value, status=status, outcome=outcome, threshold=text))
    return checks


def _comparison(metric: str, metrics: dict[str, Any], comparison: dict[str, Any], against: str) -> CheckView:
    status, outcome = _status(comparison.get("status"))
    bound = _number(comparison.get("bound"))
    strict = comparison.get("rule") == "superiority"
    threshold = None if bound is None else f"difference {'>' if strict else '≥'} {bound:g}"
    return CheckView(metric=metric, value=_number(metrics.get(metric)), status=status, outcome=outcome,
                     champion=_number(_dict(comparison.get("metrics")).get(metric)),
                     difference=_number(comparison.get("difference")), interval=_interval(comparison.get("ci")),
                     threshold=threshold, compared_with=against)


# ---------------------------------------------------------------------------- fairness


def _fairness(metrics: dict[str, Any], thresholds: dict[str, Any], details: dict[str, Any]) -> list[CheckView]:
    checks: list[CheckView] = []
    confidence = _number(thresholds.get("confidence"))
    for attribute, found in _dict(details.get("attributes")).items():
        if not isinstance(found, Mapping):
            continue
        for name, (key, side) in FAIRNESS_BANDS.items():
            entry = found.get(name)
            if not isinstance(entry, Mapping) or "status" not in entry:
                continue
            status, outcome = _status(entry["status"])
            bound = _number(entry.get("threshold", thresholds.get(key)))
            side = str(entry.get("side", side))
            text = None if bound is None or status == REPORT_ONLY else f"{'≥' if side == 'min' else '≤'} {bound:g}"
            checks.append(CheckView(metric=f"{attribute}: {name}", value=_number(entry.get("value")), status=status,
                                    outcome=outcome, interval=_interval(entry.get("ci")),
                                    confidence=_number(entry.get("confidence")) or confidence, threshold=text))
        flips = found.get("counterfactual")
        if isinstance(flips, Mapping) and "status" in flips:
            status, outcome = _status(flips["status"])
            limit = _number(thresholds.get("max_counterfactual_flip_rate"))
            checks.append(CheckView(metric=f"{attribute}: counterfactual_flip_rate",
                                    value=_number(flips.get("flip_rate")), status=status, outcome=outcome,
                                    threshold=None if limit is None else f"≤ {limit:g}"))
    share = _number(metrics.get("sensitive_attribution_share"))
    if share is not None:
        status, outcome, text = _limit(share, thresholds.get("max_sensitive_attribution_share"), "max")
        checks.append(CheckView(metric="sensitive_attribution_share", value=share, status=status, outcome=outcome,
                                threshold=text))
    return checks


# ---------------------------------------------------------------------------- explainability, infra


def _explainability(metrics: dict[str, Any], thresholds: dict[str, Any],
                    details: dict[str, Any]) -> list[CheckView]:
    checks: list[CheckView] = []
    share = _number(metrics.get("max_share"))
    if share is not None:
        status, outcome, text = _limit(share, thresholds.get("max_feature_share"), "max")
        feature = metrics.get("max_share_feature")
        label = f"max_feature_share ({feature})" if feature else "max_feature_share"
        checks.append(CheckView(metric=label, value=share, status=status, outcome=outcome, threshold=text))
    ndcg = _number(metrics.get("ndcg_at_k"))
    if ndcg is not None:  # None on a first run: no champion ranking to compare with
        status, outcome, text = _limit(ndcg, thresholds.get("min_ndcg"), "min")
        k = thresholds.get("top_k")
        checks.append(CheckView(metric=f"ndcg_at_{k}" if k else "ndcg_at_k", value=ndcg, status=status,
                                outcome=outcome, threshold=text, compared_with="champion's importance ranking"))
    return checks


def _infra(metrics: dict[str, Any], thresholds: dict[str, Any], details: dict[str, Any]) -> list[CheckView]:
    checks: list[CheckView] = []
    for name, key, unit in INFRA_LIMITS:
        value = _number(metrics.get(name))
        if value is None:
            continue
        status, outcome, text = _limit(value, thresholds.get(key), "max")
        checks.append(CheckView(metric=f"{name}", value=value, status=status, outcome=outcome,
                                threshold=None if text is None else f"{text} {unit}"))
    if isinstance(metrics.get("predictions_equal"), bool):
        equal = bool(metrics["predictions_equal"])
        checks.append(CheckView(metric="served = in-process predictions (max |diff|)",
                                value=_number(metrics.get("max_abs_diff")), status=GATED,
                                outcome=PASSED if equal else FAILED, threshold="equal"))
    return checks


_READERS: dict[str, Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], list[CheckView]]] = {
    "quality": _quality,
    "fairness": _fairness,
    "explainability": _explainability,
    "infra": _infra,
}


def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) inside dicts and lists replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
