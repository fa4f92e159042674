"""The run note's text, built from real gate reports, decision records and a window's result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.gates.decision import decision_record
from autopilot.gates.fairness import evaluate_fairness
from autopilot.gates.quality import evaluate_quality
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import Splits, make_splits
from autopilot.pipeline.context import Approval, Promotion
from autopilot.pipeline.run_notes import (
    MAX_NOTE,
    gate_line,
    known_data_note,
    monitoring_note,
    retrain_line,
    training_note,
)
from autopilot.reports import GateReport
from tests.helpers import adult_config_dict, note_lines

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 60, "hgb.max_leaf_nodes": 15,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}
FAST = {"bootstrap_samples": 200, "min_metrics": {}, "max_metrics": {}}
# The fairness gate as the Adult example configures it (demographic parity report-only, equalized odds gated).
FAIRNESS = {"min_group_size": 30, "demographic_parity_ratio_min": None, "demographic_parity_difference_max": None,
            "equalized_odds_difference_max": 0.2, "max_counterfactual_flip_rate": 0.15,
            "max_sensitive_attribution_share": 0.2, "bootstrap_samples": 200, "confidence": 0.95,
            "on_inconclusive": "pass"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def cfg_with(**gates: Any) -> ModelConfig:
    return ModelConfig.model_validate(adult_config_dict(gates=gates))


@pytest.fixture(scope="module")
def adult(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[Splits, Any, Any]:
    """3k Adult training rows, 2k test rows, a champion (HGB) and a much worse challenger (a depth-1 tree)."""
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    cfg = cfg_with(quality=FAST)
    train = canonicalize(adult_frames[0].sample(3000, random_state=0).reset_index(drop=True), cfg)
    test = canonicalize(adult_frames[1].sample(2000, random_state=0).reset_index(drop=True), cfg)
    splits = make_splits(train, test, cfg)
    with threadpool_limits(limits=1):
        champion = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
        stump = Pipeline([("preprocess", build_pipeline(HGB, cfg, seed=0).steps[0][1]),
                          ("model", DecisionTreeClassifier(max_depth=1, random_state=0))])
        stump.fit(splits.X_train, splits.y_train)
    return splits, champion, stump


def explainability(passed: bool = True) -> GateReport:
    """An explainability report with the fields the gate writes (`evaluate_explainability`)."""
    metrics = {"method": "tree", "rows": 500, "max_share": 0.214, "max_share_feature": "relationship",
               "ndcg_at_k": 0.931, "sensitive_share": 0.04}
    thresholds = {"max_feature_share": 0.5, "min_ndcg": 0.8, "top_k": 5}
    if passed:
        return GateReport(name="explainability", passed=True, metrics=metrics, thresholds=thresholds)
    return GateReport.failed("explainability", ["possible leakage: feature 'fnlwgt' carries 0.700 of all attribution "
                                                "(max 0.5)"], metrics=metrics, thresholds=thresholds)


def infra() -> GateReport:
    """An infra report with the metrics the gate measures (`gates.infra._judge`)."""
    return GateReport(name="infra", passed=True, metrics={
        "rows": 200, "load_seconds": 1.23, "p95_latency_ms": 3.42, "peak_memory_mb": 210.4,
        "predictions_equal": True, "max_abs_diff": 0.0}, thresholds={"max_load_seconds": 30})


def record(reports: list[GateReport], version: int = 2, baseline: int | None = 1) -> dict[str, Any]:
    return decision_record("adult_income", version, reports, run_id="r", data_snapshot="sha", actor="airflow:dag",
                           dag_run="manual__1", baseline_version=baseline)


@pytest.fixture(scope="module")
def passed_against_v1(adult: tuple[Splits, Any, Any]) -> dict[str, Any]:
    """v2 compared with v1 (the same model: equivalent) and every other gate passing."""
    splits, champion, _ = adult
    cfg = cfg_with(quality=FAST, fairness=FAIRNESS)
    quality = evaluate_quality(champion, champion, splits.X_test, splits.y_test, cfg, champion_version=1)
    fairness = evaluate_fairness(champion, splits.X_test, splits.y_test, cfg, attribution_share={"sex": 0.02},
                                 train=splits.X_train, y_train=splits.y_train)
    made = record([quality, explainability(), fairness, infra()])
    assert made["decision"] == "promote", made["reasons"]
    return made


def test_a_promotion_over_the_champion_names_both_versions_and_every_gate(passed_against_v1: dict[str, Any]) -> None:
    promoted = Promotion(promoted=True, decision="promote", version=2, from_version=1).to_xcom()
    note = training_note(passed_against_v1, promotion=promoted)
    lines = note_lines(note)
    assert lines[0] == "v2 promoted over v1: every gate passed"
    quality = next(line for line in lines if line.startswith("quality: "))
    champion_auc = passed_against_v1["gates"][0]["details"]["baseline"]["metrics"]["roc_auc"]
    assert quality == (f"quality: passed - roc_auc {champion_auc:.4f} vs v1 {champion_auc:.4f} "
                       "(diff +0.0000, 95% CI [+0.0000, +0.0000])")
    assert "explainability: passed - top feature relationship 0.214 of attribution (max 0.5); nDCG@5 0.931" in note
    # 2,000 holdout rows are too few for race's smaller groups: inconclusive, let through by the config
    assert lines[3].startswith("fairness: inconclusive - let through (on_inconclusive: pass): race: inconclusive")
    assert len(lines[3]) <= 240
    assert lines[4] == "infra: passed - loads in 1.2 s, p95 3.4 ms per row, 210 MB peak; predictions match in process" \
        or lines[4] == "infra: passed - loads in 1.2 s, p95 3.4 ms per row, 210 MB peak, predictions match in process"
    assert len(lines) == 5 and len(note) <= MAX_NOTE


def test_before_the_promotion_decide_says_it_is_next(passed_against_v1: dict[str, Any]) -> None:
    assert note_lines(training_note(passed_against_v1))[0] == "v2 passed every gate: to be promoted over v1"


def test_a_first_champion_and_a_retrain_asked_by_monitoring(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    cfg = cfg_with(quality=FAST)
    quality = evaluate_quality(champion, None, splits.X_test, splits.y_test, cfg, X_train=splits.X_train,
                               y_train=splits.y_train)
    made = record([quality, explainability(), infra()], version=1, baseline=None)  # fairness did not report
    conf = {"strategy": "refit", "reason": "drift: age (wasserstein 0.31)",
            "window_start": "2026-12-07T01:00:00+00:00", "window_end": "2026-12-07T02:00:00+00:00"}
    note = training_note(made, conf=conf)
    lines = note_lines(note)
    assert made["decision"] == "reject"
    assert lines[0] == "Stopped by a gate: v1 rejected: fairness failed"
    assert lines[1].startswith("quality: passed - roc_auc 0.") and "(first run) vs prior 0.5000 (diff +0." in lines[1]
    assert "vs linear 0." in lines[1] and "95% CI [" in lines[1]
    assert "fairness: failed - the gate did not report" in lines
    assert lines[-1] == "Retrain asked by monitoring window 2026-12-07 01:00-02:00: drift: age (wasserstein 0.31)"
    promoted = training_note(record([quality, explainability(), infra()], version=1, baseline=None),
                             promotion={"promoted": True, "decision": "promote", "version": 1, "from": None})
    assert note_lines(promoted)[0].startswith("Stopped by a gate")  # a rejected record never reads as promoted


def test_a_rejection_by_the_quality_gate_quotes_its_reason(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, stump = adult
    quality = evaluate_quality(stump, champion, splits.X_test, splits.y_test, cfg_with(quality=FAST),
                               champion_version=1)
    note = training_note(record([quality, explainability(passed=False), infra()], version=3))
    lines = note_lines(note)
    assert lines[0] == "Stopped by a gate: v3 rejected: quality, explainability, fairness failed"
    assert lines[1].startswith("quality: failed - roc_auc 0.") and "for champion v1" in lines[1]
    assert lines[2] == ("explainability: failed - possible leakage: feature 'fnlwgt' carries 0.700 of all "
                        "attribution (max 0.5)")


def test_review_answers_and_what_promote_makes_of_them(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    tiny = splits.X_test.sample(60, random_state=0).index
    from tests.unit.test_gate_quality import NoisyModel

    quality = evaluate_quality(NoisyModel(champion, 0.7), champion, splits.X_test.loc[tiny], splits.y_test.loc[tiny],
                               cfg_with(quality=FAST), champion_version=2)
    held = record([quality, explainability(), infra(), GateReport(name="fairness", passed=True)], version=3,
                  baseline=2)
    assert held["decision"] == "review"
    first = note_lines(training_note(held))
    assert first[0].startswith("v3 held for review: quality: roc_auc") and "inconclusive" in first[0]
    assert first[1].startswith("quality: inconclusive - roc_auc")
    assert "fairness: report-only - nothing gated" in first

    alice = "airflow-user:alice"
    approved = Approval(outcome="approved", version=3, actor=alice, reason="checked by hand").to_xcom()
    assert note_lines(training_note(held, approval=approved))[:2] == [
        "v3 approved by alice in review: to be promoted over v2", "review comment: checked by hand"]
    promoted = {"promoted": True, "decision": "promote", "version": 3, "from": 2, "retired": []}
    assert note_lines(training_note(held, approval=approved, promotion=promoted))[0] == \
        "v3 approved by alice and promoted over v2"

    rejected = Approval(outcome="rejected", version=3, actor=alice, reason="not convincing").to_xcom()
    not_promoted = Promotion(promoted=False, decision="review", version=3, reasons=["review rejected"]).to_xcom()
    assert note_lines(training_note(held, approval=rejected, promotion=not_promoted))[:2] == [
        "v3 rejected by alice in review", "review comment: not convincing"]
    late = Approval(outcome="timed_out", version=3, reason="no reviewer answered within 72 h").to_xcom()
    assert note_lines(training_note(held, approval=late))[0] == \
        "v3 held for review, then timed out: no reviewer answered within 72 h"
    # dag.test: nobody could answer, promote promoted nothing
    pending = Promotion(promoted=False, decision="review", version=3, reasons=["a test run cannot wait"]).to_xcom()
    assert note_lines(training_note(held, promotion=pending))[0] == "v3 held for review: a test run cannot wait"


def test_a_rollback_and_a_rollout(passed_against_v1: dict[str, Any]) -> None:
    promoted = {"promoted": True, "decision": "promote", "version": 2, "from": 1, "retired": []}
    back = training_note(passed_against_v1, promotion=promoted,
                         rollout={"rolled_back": True, "reason": "rollout gate FAILED: p95 900 ms above 250"})
    assert note_lines(back)[0] == ("Stopped by a gate: v2 promoted over v1: every gate passed, then rolled back: "
                                    "rollout gate FAILED: p95 900 ms above 250")
    loud = training_note(passed_against_v1, promotion=promoted, rollout={
        "rolled_back": True, "reason": "ROLLBACK INCOMPLETE: could not revert endpoint ep-1. rollout gate FAILED"})
    assert note_lines(loud)[0] == ("Stopped by a gate: ROLLBACK INCOMPLETE: could not revert endpoint ep-1. rollout "
                                    "gate FAILED (v2 promoted over v1: every gate passed)")
    done = training_note(passed_against_v1, promotion=promoted, rollout={"passed": True})
    assert note_lines(done)[0] == "v2 promoted over v1: every gate passed"
    assert note_lines(done)[-1] == "rollout: smoke test and bake passed on the live endpoint"


def test_long_reasons_are_clipped_never_the_first_line() -> None:
    reasons = [f"reason {i}: " + "x" * 400 for i in range(6)]
    reports = [GateReport.failed(name, reasons) for name in ("quality", "explainability", "fairness", "infra")]
    made = record(reports, version=9)
    conf = {"window_start": "2026-12-07T01:00:00+00:00", "window_end": "2026-12-08T01:00:00+00:00",
            "reason": "y" * 500}
    note = training_note(made, conf=conf)
    assert len(note) <= MAX_NOTE
    assert note_lines(note)[0] == "Stopped by a gate: v9 rejected: quality, explainability, fairness, infra failed"
    assert note_lines(note)[1].startswith("quality: failed - reason 0: xxx") and note_lines(note)[1].endswith(
        "... (+5 more)")
    held = record([GateReport.failed("quality", ["z" * 2000], details={"requires_review": True,
                                                                       "baseline": {"status": "inconclusive"}}),
                   explainability(), infra(), GateReport(name="fairness", passed=True)])
    first = note_lines(training_note(held))[0]
    assert first.startswith("v2 held for review: quality: zzz") and len(first) < 400
    assert len(training_note(held)) <= MAX_NOTE
    assert gate_line({"name": "infra", "passed": True}) == "infra: passed"


def test_the_retrain_line_needs_a_window() -> None:
    assert retrain_line({"strategy": "refit", "reason": "asked by hand"}) is None
    assert retrain_line(None) is None
    assert retrain_line({"window_start": "2026-12-07T23:00:00+00:00", "window_end": "2026-12-08T00:00:00+00:00",
                         "reason": ""}) == \
        "Retrain asked by monitoring window 2026-12-07 23:00-2026-12-08 00:00: no reason given"
    assert known_data_note(2) == "no new version: this data was already trained on (v2)"


def window(**changes: Any) -> dict[str, Any]:
    """`monitor_window`'s result for one hour of traffic (its documented keys)."""
    result = {"action": "retrain", "strategy": "refit",
              "reasons": ["drift: 4 of 14 features drifted (weighted share 0.41 >= 0.3): age, hours_per_week, ...",
                          "estimated roc_auc 0.861 is below the reference 0.927 by more than 0.05",
                          "prediction drift: wasserstein 0.18", "a fourth reason"],
              "blocked_by": None, "window_start": "2026-12-07T01:00:00+00:00",
              "window_end": "2026-12-07T02:00:00+00:00", "rows": 12345, "version": 2,
              "trigger_run_id": "retrain__adult_income__20261207T020000", "conf": {"reason": "drift"},
              "report_uri": "file:///w.json", "html_uri": None}
    return {**result, **changes}


def test_a_monitoring_note_names_the_window_action_rows_reasons_and_retrain() -> None:
    lines = note_lines(monitoring_note(window()))
    assert lines[0] == "Window 2026-12-07 01:00-02:00 UTC: retrain (refit)"
    assert lines[1] == "12,345 rows"
    assert lines[2].startswith("drift: 4 of 14 features drifted") and len(lines) == 6  # the top 3 reasons
    assert lines[-1] == "retrain triggered: run retrain__adult_income__20261207T020000"
    blocked = note_lines(monitoring_note(window(action="alert", trigger_run_id=None, conf=None,
                                     blocked_by="retrain budget spent: 2 in the last 24 h")))
    assert blocked[0] == "Window 2026-12-07 01:00-02:00 UTC: alert (refit)"
    assert blocked[-1] == "retrain blocked: retrain budget spent: 2 in the last 24 h"
    quiet = monitoring_note(window(action="none", strategy=None, reasons=[], rows=0, trigger_run_id=None))
    assert quiet == "Window 2026-12-07 01:00-02:00 UTC: none\n\n- 0 rows"
    assert len(monitoring_note(window(reasons=["r" * 5000] * 3))) <= MAX_NOTE


def test_a_first_run_held_by_policy_is_not_called_inconclusive(adult: tuple[Splits, Any, Any]) -> None:
    """`first_run: require_review` holds a version whose comparisons passed (or were let through)."""
    splits, champion, _ = adult
    for policy in ("review", "pass"):
        cfg = cfg_with(quality={**FAST, "first_run": "require_review", "on_inconclusive": policy})
        quality = evaluate_quality(champion, None, splits.X_test, splits.y_test, cfg, X_train=splits.X_train,
                                   y_train=splits.y_train)
        if any(c["status"] == "inconclusive" for c in quality.details["first_run_baselines"].values()) and \
                policy == "review":
            continue  # really inconclusive: said so (test_review_answers_and_what_promote_makes_of_them)
        held = record([quality, explainability(), infra(), GateReport(name="fairness", passed=True)], version=1,
                      baseline=None)
        assert held["decision"] == "review"
        lines = note_lines(training_note(held))
        assert lines[0].startswith("v1 held for review: quality: first run: there is no champion"), lines
        assert lines[1].startswith("quality: passed - roc_auc 0.") and lines[1].endswith(
            "; held for review (gates.quality.first_run)") or "..." in lines[1], lines
