"""The Models page for a multiclass model (issue 16.1): its classes, readable metric names, and the
fairness gate's per-class rows, from what the gates and the registry write."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from autopilot.gates.fairness import evaluate_fairness
from autopilot.modeling.search_space import build_pipeline
from autopilot.ui.classes import class_list, classes_row, metric_label
from autopilot.ui.gated import gated_checks
from autopilot.ui.lifecycle import DecisionView, GateView, ModelView, VersionView
from autopilot.ui.page import render_page
from tests.multiclass_support import HGB, binary_twin, config, frame, labels


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def test_classes_come_from_the_version_tag() -> None:
    assert class_list({"autopilot.classes": '["high", "low", "mid"]'}) == ["high", "low", "mid"]
    assert class_list({"autopilot.classes": "not json"}) == [] and class_list({}) == []
    assert classes_row([[], []]) == ""  # binary and regression versions: no row
    many = [f"c{i}" for i in range(20)]
    row = classes_row([["a<b", "c"], many])
    assert "a&lt;b" in row and "20: c0, c1" in row and "and 8 more" in row
    assert metric_label("roc_auc_ovr") == "roc_auc_ovr (ROC AUC, one-vs-rest macro)"
    assert metric_label("roc_auc") == "roc_auc"


def test_the_page_shows_classes_metric_names_and_per_class_fairness_rows() -> None:
    cfg = config(gates={"fairness": {"bootstrap_samples": 200}})
    X = frame(2000, 0)
    y = labels(X, 1)
    moved = (X["group"] == "g2").to_numpy()
    y[moved & (X["x2"].fillna(0) > 0).to_numpy()] = "mid"
    model = build_pipeline(HGB, binary_twin(cfg), seed=0).fit(X, y)
    report = evaluate_fairness(model, X, y, cfg, seed=0).model_dump(mode="json")
    checks = gated_checks({"name": "fairness", **report})
    per_class = {c.metric for c in checks if "[class " in c.metric}
    assert {"group [class high]: demographic_parity_ratio", "group [class mid]: demographic_parity_ratio",
            "group [class low]: equalized_odds_difference"} <= per_class
    champion = VersionView(version=3, aliases=["champion"], run_id="r", status="READY", created_at=None,
                           family="hist_gradient_boosting", metrics={"roc_auc_ovr": 0.83, "f1_macro": 0.64},
                           decision="promoted", classes=["high", "low", "mid"])
    gate = GateView(name="fairness", passed=report["passed"], reasons=report["reasons"], checks=checks)
    view = ModelView(name="grades", config_file="grades.yaml", metric="roc_auc_ovr", champion=champion,
                     decision=DecisionView(version=3, decision="rejected", reasons=[], decided_at=None, actor=None,
                                           dag_run=None, baseline_version=None, gates=[gate], source="record"))
    html = render_page([view], "2026-06-01T00:00:00+00:00", None)
    assert '<tr class="classes"><th>classes</th><td>3: high, low, mid</td></tr>' in html
    assert "<strong>roc_auc_ovr (ROC AUC, one-vs-rest macro)</strong>" in html
    assert "f1_macro (F1, macro over classes)" in html
    assert "group [class mid]: demographic_parity_ratio" in html
