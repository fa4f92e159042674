"""Each gate's gated metrics as the Models page reads them (`autopilot.ui.gated`) from what the gates write.

The entries come from the gates' own judging functions (quality's bootstrap `_judge`, fairness's
`judge`), so a change in what a gate reports shows up here; old records (written before fairness
entries carried their threshold) and unfamiliar ones still render.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from autopilot.config import load_config
from autopilot.gates.fairness.judging import Band, Outcome, judge
from autopilot.reports import GateReport
from autopilot.ui.gated import GATED, INCONCLUSIVE, REPORT_ONLY, gated_checks
from autopilot.ui.lifecycle import DecisionView, GateView, ModelView
from autopilot.ui.page import render_page
from tests.helpers import ADULT_CONFIG


@pytest.fixture(scope="module")
def cfg() -> Any:
    return load_config(ADULT_CONFIG)


def quality_report(cfg: Any, diffs: np.ndarray, observed: float) -> dict[str, Any]:
    from autopilot.gates.quality import _judge, _thresholds

    comparison = _judge(diffs, observed, -cfg.gates.quality.non_inferiority_margin, 5000, cfg, strict=False)
    comparison.update(champion_version=4, metrics={"roc_auc": 0.9000})
    return GateReport(name="quality", passed=comparison["status"] == "pass",
                      metrics={"roc_auc": 0.9000 + observed, "log_loss": 0.7, "accuracy": 0.85},
                      thresholds=_thresholds(cfg), details={"baseline": comparison, "holdout_rows": 5000}
                      ).model_dump(mode="json")


def test_quality_comparison_floors_and_ceilings(cfg: Any) -> None:
    rng = np.random.default_rng(0)
    straddling = rng.normal(-0.004, 0.003, cfg.gates.quality.bootstrap_samples)  # reaches both sides of -0.005
    checks = gated_checks(quality_report(cfg, straddling, -0.004))
    comparison = checks[0]
    assert (comparison.metric, comparison.status, comparison.outcome) == ("roc_auc", INCONCLUSIVE, None)
    assert comparison.compared_with == "champion v4" and comparison.champion == pytest.approx(0.9)
    assert comparison.difference == pytest.approx(-0.004) and comparison.interval is not None
    assert comparison.interval[0] < -0.005 < comparison.interval[1]
    assert comparison.threshold == "difference ≥ -0.005" and comparison.confidence == 0.95
    floors = {c.metric: (c.threshold, c.outcome) for c in checks[1:]}
    assert floors == {"roc_auc": ("≥ 0.85", "passed"), "log_loss": ("≤ 0.6", "failed")}  # the config's bounds
    assert "accuracy" not in floors  # not gated: not shown
    clear = gated_checks(quality_report(cfg, rng.normal(0.01, 0.001, cfg.gates.quality.bootstrap_samples), 0.01))
    assert (clear[0].status, clear[0].outcome) == (GATED, "passed")


def fairness_entry(band: Band, value: float, ci: list[float]) -> dict[str, Any]:
    found = Outcome()
    judge(found, "sex", band, value, ci, "{numbers}", 0.95, 2000)
    return dict(found.details[band.metric])


def test_fairness_intervals_thresholds_and_statuses_from_the_gate_s_own_judge(cfg: Any) -> None:
    entries = {
        "equalized_odds_difference": fairness_entry(Band("equalized_odds_difference", "largest gap", maximum=0.25),
                                                    0.22, [0.18, 0.27]),
        "demographic_parity_ratio": fairness_entry(Band("demographic_parity_ratio", "ratio"), 0.36, [0.33, 0.39]),
        "demographic_parity_difference": fairness_entry(
            Band("demographic_parity_difference", "difference", maximum=0.1), 0.3, [0.25, 0.35]),
    }
    assert entries["equalized_odds_difference"]["threshold"] == 0.25  # what the gate now records
    report = GateReport(name="fairness", passed=False, metrics={"sensitive_attribution_share": 0.31},
                        thresholds=cfg.gates.fairness.model_dump(mode="json"),
                        details={"attributes": {"sex": {**entries, "counterfactual": {"flip_rate": 0.01,
                                                                                      "status": "pass"}}}})
    checks = {c.metric: c for c in gated_checks(report.model_dump(mode="json"))}
    odds = checks["sex: equalized_odds_difference"]
    assert (odds.status, odds.interval, odds.threshold, odds.confidence) == (INCONCLUSIVE, [0.18, 0.27], "≤ 0.25",
                                                                            0.95)
    parity = checks["sex: demographic_parity_ratio"]
    assert (parity.status, parity.outcome, parity.threshold) == (REPORT_ONLY, None, None)
    difference = checks["sex: demographic_parity_difference"]
    assert (difference.status, difference.outcome, difference.threshold) == (GATED, "failed", "≤ 0.1")
    assert checks["sex: counterfactual_flip_rate"].threshold == "≤ 0.15"
    share = checks["sensitive_attribution_share"]
    assert (share.status, share.outcome, share.threshold) == (GATED, "failed", "≤ 0.2")


def test_an_old_fairness_record_takes_its_threshold_from_the_record_s_config(cfg: Any) -> None:
    old = {"value": 0.06, "ci": [0.04, 0.09], "gated": True, "status": "pass"}  # written before "threshold"
    record = {"name": "fairness", "passed": True, "metrics": {}, "thresholds": cfg.gates.fairness.model_dump(),
              "details": {"attributes": {"race": {"equalized_odds_difference": old}}}}
    (check,) = gated_checks(record)
    assert (check.metric, check.status, check.outcome, check.threshold) == (
        "race: equalized_odds_difference", GATED, "passed", "≤ 0.25")


def test_explainability_and_infra_show_what_they_gate_not_incidental_numbers() -> None:
    explain = gated_checks({"name": "explainability", "metrics": {
        "rows": 2000, "seconds": 3.1, "max_share": 0.62, "max_share_feature": "capital_gain", "ndcg_at_k": None},
        "thresholds": {"max_feature_share": 0.5, "min_ndcg": 0.85, "top_k": 5}})
    assert [(c.metric, c.outcome, c.threshold) for c in explain] == [
        ("max_feature_share (capital_gain)", "failed", "≤ 0.5")]  # no nDCG on a first run
    infra = gated_checks({"name": "infra", "metrics": {
        "rows": 200, "load_seconds": 0.4, "p95_latency_ms": 1200.0, "peak_memory_mb": 300.0, "import_seconds": 2.0,
        "predictions_equal": True, "max_abs_diff": 0.0},
        "thresholds": {"max_load_seconds": 60, "max_p95_latency_ms": 1000, "max_peak_memory_mb": None}})
    assert [(c.metric, c.status, c.outcome) for c in infra] == [
        ("load_seconds", GATED, "passed"), ("p95_latency_ms", GATED, "failed"),
        ("peak_memory_mb", REPORT_ONLY, None), ("served = in-process predictions (max |diff|)", GATED, "passed")]


def test_unfamiliar_or_malformed_reports_fall_back_to_the_first_numbers() -> None:
    assert gated_checks({"name": "custom", "metrics": {"x": 1.0}}) == []
    assert gated_checks({"name": "quality", "metrics": [], "thresholds": "?", "details": None}) == []
    assert gated_checks({"name": "fairness", "details": {"attributes": {"sex": {
        "equalized_odds_difference": {"status": "pass", "ci": "wide", "value": "high"}}}}})[0].interval is None
    gate = GateView(name="custom", passed=True, reasons=[], highlights={"x": 1.0})
    decision = DecisionView(version=1, decision="promote", reasons=[], decided_at=None, actor=None, dag_run=None,
                            baseline_version=None, gates=[gate], source="record")
    html = render_page([ModelView(name="m", config_file="m.yaml", decision=decision)], "2026-12-07T00:00:00", None)
    assert 'data-gate="custom"' in html and "x 1" in html and 'class="checks"' not in html
