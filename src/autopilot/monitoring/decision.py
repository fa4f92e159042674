"""What a monitoring window leads to: `none`, `alert`, `retrain` (with a strategy) or `rollback`. Pure.

Policy, in order:
1. Too few rows: `none` (a window that saw little traffic proves nothing either way).
2. A regression after a retrain: the champion promoted by a recent retrain performs worse than
   its predecessor did in its last windows (realized metric, else the label-free estimate) by
   more than `retrain.performance_drop` (relative): `rollback`.
3. Performance: the realized metric (labels from /feedback or the labels source), or else the
   upper end of the estimate's interval, below the champion's test metric by more than
   `performance_drop`: `retrain` with `retune` (the model no longer fits the problem).
4. Drift severity from `monitoring.drift` (SHAP-weighted share of drifted columns):
   `severe` -> `retrain`/`retune`; `retrain` -> `retrain`/`refit` (the same model family and
   hyperparameters, on newer data); `alert` -> `alert`. Prediction drift is at least `alert`,
   and so is a drifted sensitive attribute, whatever its SHAP weight (`drift.check_drift`
   raises the severity; whether it retrains stays with the weighted share).
   Multivariate drift (`drift["multivariate"]`, the PCA reconstruction check) that found a
   change is an `alert`, or a `retrain`/`refit` when `monitoring.drift.multivariate.action` is
   `retrain`; its reason names the error, the bound and the components.
5. Bias drift (`monitoring.bias`, `monitoring.bias.check_bias_drift`): a fairness metric of a
   group changed significantly and materially since promotion: `alert`, or `retrain`/`refit`
   when `monitoring.bias.action` is `retrain`; the reasons name the attribute, group and metric.
   A bias check that raised is an `alert` saying so (never a retrain).
6. Anomaly alarms on the metric series: at least `alert`.
7. A retrain the monitor triggered earlier that is still queued or running turns a wanted
   retrain into an `alert` naming that run: the alarm is recorded (in the window's report), not
   queued as a second retrain of the same champion (the running one's result is judged by the
   next windows).
8. The budget turns a wanted retrain into an `alert` that says why: retraining disabled, the
   cooldown since the last trigger, or `max_per_day` reached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from autopilot.config import LOWER_IS_BETTER, ModelConfig

__all__ = ["WindowDecision", "decide"]


@dataclass
class WindowDecision:
    """The action for one window, why, and (for retrain) how."""

    action: str  # "none", "alert", "retrain" or "rollback"
    strategy: str | None = None
    reasons: list[str] = field(default_factory=list)
    blocked_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _drop(value: float, reference: float, metric: str) -> float:
    """Relative degradation (positive = worse) of `value` against `reference`."""
    if reference == 0:
        return 0.0
    change = (value - reference) / abs(reference)
    return change if metric in LOWER_IS_BETTER else -change


def decide(cfg: ModelConfig, *, drift: dict[str, Any], performance: dict[str, Any], alarms: list[dict[str, Any]],
           reference_metric: float | None, previous_champion_metric: float | None, recent_retrain: bool,
           triggers: list[datetime], now: datetime, running_retrain: str | None = None,
           bias: dict[str, Any] | None = None) -> WindowDecision:
    """Apply the policy above to one window's findings.

    Args:
        drift: `DriftResult.as_dict()` (needs `sufficient`, `severity`, `reasons`), with the
            multivariate check's `MultivariateResult.as_dict()` under `multivariate` (optional).
        performance: `{"realized": {metric: value, "rows": n} | None, "estimated": {metric: {"value",
            "low", "high"}} | None}`.
        alarms: the anomaly alarms of this window (each with a `reason`).
        reference_metric: the champion's test value of `cfg.metric`.
        previous_champion_metric: the previous champion's mean metric over its last windows,
            when the champion came from a recent retrain.
        recent_retrain: the champion was promoted by a retrain since the previous champion's windows.
        triggers: times of retrain triggers in the last 24 h.
        now: the window's end.
        running_retrain: the run id of a retrain this monitor triggered that is still queued or running.
        bias: `BiasDrift.as_dict()` of the window (needs `status`, `flagged`, `reasons`); None when not checked.
    """
    metric = cfg.metric
    if not drift.get("sufficient", False):
        # A critical alarm (the endpoint went down) stands even when its silence left too few rows to judge.
        critical = [a["reason"] for a in alarms if a.get("critical")]
        quiet = list(drift.get("reasons") or ["insufficient rows in the window"])
        return WindowDecision("alert", reasons=critical + quiet) if critical else WindowDecision("none", reasons=quiet)
    observed, source = _observed_metric(performance, metric)
    if recent_retrain and observed is not None and previous_champion_metric is not None:
        drop = _drop(observed, previous_champion_metric, metric)
        if drop > cfg.monitoring.retrain.performance_drop:
            return WindowDecision("rollback", reasons=[
                f"the retrained champion's {source} {metric} {observed:.4f} is {drop:.1%} worse than its "
                f"predecessor's {previous_champion_metric:.4f}"])
    wanted: str | None = None
    reasons: list[str] = []
    action = "none"
    perf = _performance_drop(performance, metric, reference_metric, cfg.monitoring.retrain.performance_drop)
    if perf:
        wanted, action = "retune", "retrain"
        reasons.append(perf)
    severity = drift.get("severity", "none")
    if severity in ("severe", "retrain"):
        action = "retrain"
        wanted = wanted or ("retune" if severity == "severe" else "refit")
        reasons.extend(drift.get("reasons", []))
    elif severity == "alert" or drift.get("prediction_drifted"):
        reasons.extend(drift.get("reasons", []))
        action = action if action == "retrain" else "alert"
    multivariate = drift.get("multivariate") or {}
    if multivariate.get("drifted"):
        reasons.append(str(multivariate.get("reason")))
        if cfg.monitoring.drift.multivariate.action == "retrain":
            action, wanted = "retrain", wanted or "refit"  # the joint structure moved: newer data, same family
        else:
            action = action if action == "retrain" else "alert"
    if bias and (bias.get("flagged") or bias.get("status") == "error"):
        reasons.extend(bias.get("reasons") or ["bias drift"])
        if bias.get("flagged") and cfg.monitoring.bias.action == "retrain":
            action, wanted = "retrain", wanted or "refit"
        elif action != "retrain":
            action = "alert"
    if alarms:
        reasons.extend(a["reason"] for a in alarms)
        action = action if action == "retrain" else "alert"
    if action != "retrain":
        return WindowDecision(action, reasons=reasons or ["no drift, no performance drop, no anomaly"])
    if running_retrain:
        return WindowDecision("alert", strategy=wanted, reasons=reasons, blocked_by=(
            f"a retrain is already queued or running: {running_retrain}; this alarm is recorded, not queued "
            "as another"))
    blocked = _budget(cfg, triggers, now)
    if blocked:
        return WindowDecision("alert", strategy=wanted, reasons=reasons, blocked_by=blocked)
    return WindowDecision("retrain", strategy=wanted, reasons=reasons)


def _observed_metric(performance: dict[str, Any], metric: str) -> tuple[float | None, str]:
    realized = performance.get("realized") or {}
    if metric in realized and realized[metric] is not None:
        return float(realized[metric]), "realized"
    estimated = (performance.get("estimated") or {}).get(metric)
    if estimated:
        return float(estimated["value"]), "estimated"
    return None, ""


def _performance_drop(performance: dict[str, Any], metric: str, reference: float | None,
                      limit: float) -> str | None:
    if reference is None:
        return None
    realized = performance.get("realized") or {}
    if metric in realized and realized[metric] is not None:
        drop = _drop(float(realized[metric]), reference, metric)
        if drop > limit:
            return (f"realized {metric} {realized[metric]:.4f} on {realized.get('rows', '?')} labeled rows is "
                    f"{drop:.1%} worse than the champion's test {reference:.4f} (limit {limit:.0%})")
        return None
    estimated = (performance.get("estimated") or {}).get(metric)
    if estimated:
        # The interval's better end must be worse too: an estimate alone should not retrain on noise.
        best = estimated["low"] if metric in LOWER_IS_BETTER else estimated["high"]
        drop = _drop(float(best), reference, metric)
        if drop > limit:
            return (f"estimated {metric} {estimated['value']:.4f} (interval {estimated['low']:.4f}-"
                    f"{estimated['high']:.4f}) is worse than the champion's test {reference:.4f} by more than "
                    f"{limit:.0%}")
    return None


def _budget(cfg: ModelConfig, triggers: list[datetime], now: datetime) -> str | None:
    retrain = cfg.monitoring.retrain
    if not retrain.enabled:
        return "retraining is disabled (monitoring.retrain.enabled: false)"
    if triggers and now - max(triggers) < timedelta(hours=retrain.cooldown_hours):
        return (f"cooldown: the last retrain was triggered at {max(triggers).isoformat()}, less than "
                f"{retrain.cooldown_hours:g} h ago")
    recent = [t for t in triggers if now - t < timedelta(hours=24)]
    if len(recent) >= retrain.max_per_day:
        return f"budget: {len(recent)} retrains in the last 24 h (max_per_day {retrain.max_per_day})"
    return None
