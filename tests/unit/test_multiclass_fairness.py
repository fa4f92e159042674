"""Fairness per class (issue 16.1): one-vs-rest selection rates and equalized odds by group, with
intervals, judged against the thresholds; reasons name the class, the group and the metric."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from autopilot.gates.fairness import counterfactual_flip_rate, evaluate_fairness, pretraining_bias
from autopilot.modeling.search_space import build_pipeline
from tests.multiclass_support import HGB, binary_twin, config, frame, labels


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def test_a_group_blind_model_is_judged_per_class_and_not_failed() -> None:
    cfg = config(gates={"fairness": {"equalized_odds_difference_max": 0.25, "on_inconclusive": "pass",
                                     "bootstrap_samples": 500}})
    X = frame(4000, 0)
    y = labels(X, 1)  # labels do not depend on the group
    model = build_pipeline(HGB, binary_twin(cfg), seed=0).fit(X, y)
    report = evaluate_fairness(model, X, y, cfg, seed=0)
    assert report.passed, report.reasons
    assert report.details["classes"] == ["high", "low", "mid"]
    for label in ("high", "low", "mid"):
        name = f"group [class {label}]"
        attribute = report.details["attributes"][name]
        assert attribute["class"] == label
        assert set(attribute["group_intervals"]["groups"]) == {"g1", "g2"}  # selection rate intervals by group
        assert report.details["metric_status"][f"{name}.equalized_odds_difference"] == "pass"
        assert f"{name}.demographic_parity_ratio" in report.metrics
    assert report.details["metric_status"]["group.counterfactual_flip_rate"] in ("pass", "report only")


def test_a_model_that_moves_one_group_to_another_class_fails_naming_class_group_and_metric() -> None:
    cfg = config(gates={"fairness": {"bootstrap_samples": 500}})
    X = frame(4000, 0)
    y = labels(X, 1)
    moved = (X["group"] == "g2").to_numpy() & (np.random.default_rng(2).random(len(X)) < 0.6)
    y[moved] = "mid"  # g2's labels lean to "mid": a model trained on them learns the group
    model = build_pipeline(HGB, binary_twin(cfg), seed=0).fit(X, y)
    report = evaluate_fairness(model, X, y, cfg, seed=0)
    assert not report.passed
    mid = [r for r in report.reasons if r.startswith("group [class mid]:")]
    assert mid and "demographic_parity_ratio" in mid[0] and "g1" in mid[0] and "g2" in mid[0]
    assert any("counterfactual_flip_rate" in r for r in report.reasons)  # the predicted class follows the group
    flips = counterfactual_flip_rate(model, X, "group", cfg)
    assert flips["flip_rate"] > 0.3


def test_label_bias_per_class() -> None:
    cfg = config()
    X = frame(3000, 3)
    y = labels(X, 4)
    bias = pretraining_bias(X, y, cfg)
    assert set(bias["class_shares"]) == {"high", "low", "mid"}
    assert sum(bias["class_shares"].values()) == pytest.approx(1.0)
    gaps = bias["attributes"]["group"]["label_proportion_difference_by_class"]
    assert set(gaps) == {"high", "low", "mid"} and max(gaps.values()) < 0.06  # no label bias built in
