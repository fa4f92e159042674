"""The monitoring decision policy (pure) and its records in the state database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autopilot.config import ModelConfig
from autopilot.monitoring import state
from autopilot.monitoring.decision import decide
from tests.helpers import adult_config_dict

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def cfg(**retrain: Any) -> ModelConfig:
    raw = adult_config_dict()
    raw["monitoring"] = {"retrain": {"max_per_day": 2, "cooldown_hours": 6, "performance_drop": 0.05, **retrain}}
    return ModelConfig.model_validate(raw)


def drift(severity: str = "none", sufficient: bool = True, prediction: bool = False) -> dict[str, Any]:
    return {"sufficient": sufficient, "severity": severity, "prediction_drifted": prediction,
            "reasons": [f"drift {severity}"] if severity != "none" else []}


def run(config: ModelConfig | None = None, **kw: Any) -> Any:
    args: dict[str, Any] = {"drift": drift(), "performance": {"realized": None, "estimated": None}, "alarms": [],
                            "reference_metric": 0.92, "previous_champion_metric": None, "recent_retrain": False,
                            "triggers": [], "now": NOW}
    args.update(kw)
    return decide(config or cfg(), **args)


def test_quiet_window_and_insufficient_rows() -> None:
    assert run().action == "none"
    thin = run(drift=drift("severe", sufficient=False))
    assert thin.action == "none"


def test_a_critical_alarm_alerts_even_when_too_few_rows_arrived_to_judge() -> None:
    """A dead endpoint sends no traffic: the quiet window must not read as healthy."""
    down = {"metric": "endpoint", "critical": True, "reason": "the live endpoint stopped answering"}
    spike = {"metric": "latency_p95_ms", "reason": "latency spike"}
    decision = run(drift=drift(sufficient=False), alarms=[down, spike])
    assert decision.action == "alert" and decision.reasons[0] == "the live endpoint stopped answering"
    assert run(drift=drift(sufficient=False), alarms=[spike]).action == "none"  # a thin window judges nothing else


def test_drift_severity_maps_to_actions_and_strategies() -> None:
    assert run(drift=drift("alert")).action == "alert"
    assert run(drift=drift("none", prediction=True)).action == "alert"
    moderate = run(drift=drift("retrain"))
    assert (moderate.action, moderate.strategy) == ("retrain", "refit")
    severe = run(drift=drift("severe"))
    assert (severe.action, severe.strategy) == ("retrain", "retune")


def test_performance_drop_retunes_realized_first_then_estimate_interval() -> None:
    realized = {"realized": {"roc_auc": 0.80, "rows": 400}, "estimated": None}
    decision = run(performance=realized)
    assert (decision.action, decision.strategy) == ("retrain", "retune") and "realized roc_auc" in decision.reasons[0]
    # An estimate retrains only when even its interval's better end is too low.
    wide = {"realized": None, "estimated": {"roc_auc": {"value": 0.85, "low": 0.80, "high": 0.90}}}
    assert run(performance=wide).action == "none"
    low = {"realized": None, "estimated": {"roc_auc": {"value": 0.80, "low": 0.78, "high": 0.82}}}
    assert run(performance=low).action == "retrain"
    fine = {"realized": {"roc_auc": 0.91, "rows": 400}, "estimated": None}
    assert run(performance=fine).action == "none"


def test_anomalies_alert() -> None:
    decision = run(alarms=[{"reason": "latency_p95_ms 80 is 6 robust sd above its baseline"}])
    assert decision.action == "alert" and "latency" in decision.reasons[0]


def test_budget_and_cooldown_stop_a_second_retrain() -> None:
    cooldown = run(drift=drift("severe"), triggers=[NOW - timedelta(hours=2)])
    assert cooldown.action == "alert" and cooldown.blocked_by.startswith("cooldown")
    budget = run(drift=drift("severe"), triggers=[NOW - timedelta(hours=20), NOW - timedelta(hours=10)])
    assert budget.action == "alert" and budget.blocked_by.startswith("budget: 2 retrains")
    old = run(drift=drift("severe"), triggers=[NOW - timedelta(hours=30)])
    assert old.action == "retrain"
    off = run(cfg(enabled=False), drift=drift("severe"))
    assert off.action == "alert" and "disabled" in off.blocked_by


def test_an_alarm_during_a_running_retrain_is_recorded_not_queued() -> None:
    # Even with no cooldown and budget left: the running retrain is named as the reason.
    during = run(cfg(cooldown_hours=0, max_per_day=10), drift=drift("severe"), running_retrain="retrain__m__1")
    assert (during.action, during.strategy) == ("alert", "retune")
    assert during.blocked_by == ("a retrain is already queued or running: retrain__m__1; this alarm is recorded, "
                                 "not queued as another")
    assert during.reasons == ["drift severe"]  # the alarm itself is kept
    assert run(drift=drift("alert"), running_retrain="retrain__m__1").blocked_by is None  # no retrain wanted
    assert run(cfg(cooldown_hours=0), drift=drift("severe")).action == "retrain"


def test_a_regressing_retrained_champion_rolls_back() -> None:
    worse = {"realized": {"roc_auc": 0.85, "rows": 300}, "estimated": None}
    decision = run(performance=worse, recent_retrain=True, previous_champion_metric=0.92)
    assert decision.action == "rollback" and "worse than its predecessor" in decision.reasons[0]
    assert run(performance=worse, recent_retrain=False, previous_champion_metric=0.92).action == "retrain"


def test_records_are_idempotent(settings: Any) -> None:
    start, end = NOW - timedelta(hours=1), NOW
    state.record_window(settings, "m", start, end, 3, "alert", {"series": {"x": 1.0}})
    state.record_window(settings, "m", start, end, 3, "none", {"series": {"x": 2.0}})  # the rerun replaces
    windows = state.last_windows(settings, "m")
    assert len(windows) == 1 and windows[0]["action"] == "none" and windows[0]["window_end"] == end
    assert state.record_trigger(settings, "m", "retrain__m__1", end, "refit", "drift")
    assert not state.record_trigger(settings, "m", "retrain__m__1", end, "refit", "drift")  # a rerun
    assert [t["run_id"] for t in state.triggers_since(settings, "m", end - timedelta(hours=24))] == ["retrain__m__1"]
    assert state.triggers_since(settings, "m", end - timedelta(hours=24), exclude_run_id="retrain__m__1") == []


def test_config_rejects_bad_monitoring_settings() -> None:
    raw = adult_config_dict()
    raw["monitoring"] = {"schedule": "every hour"}
    with pytest.raises(ValueError, match="not a cron expression"):
        ModelConfig.model_validate(raw)
    raw["monitoring"] = {"drift": {"methods": {"salary": "psi"}}}
    with pytest.raises(ValueError, match="'salary' is not one of the features"):
        ModelConfig.model_validate(raw)
    raw["monitoring"] = {"drift": {"weighted_share_alert": 0.5, "weighted_share_retrain": 0.3}}
    with pytest.raises(ValueError, match="weighted_share_alert <= weighted_share_retrain"):
        ModelConfig.model_validate(raw)


def test_error_rate_from_endpoint_counters_between_windows(settings: Any) -> None:
    from autopilot.config import load_config
    from autopilot.pipeline.monitoring import _error_rate
    from tests.helpers import ADULT_CONFIG

    config = load_config(ADULT_CONFIG)
    first, second = NOW - timedelta(hours=1), NOW
    assert _error_rate(settings, config, first, {"requests": 100.0, "server_errors": 1.0}) is None  # no earlier
    state.record_window(settings, config.name, first - timedelta(hours=1), first, 1, "none",
                        {"counters": {"requests": 100.0, "server_errors": 1.0}})
    assert _error_rate(settings, config, second, {"requests": 300.0, "server_errors": 5.0}) == 0.02
    assert _error_rate(settings, config, second, {"requests": 10.0, "server_errors": 0.0}) is None  # a restart
    assert _error_rate(settings, config, second, None) is None
