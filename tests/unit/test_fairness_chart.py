"""The fairness chart, drawn from a real fairness report on Adult rows: one bar per group with its
bootstrap interval, the parity bound on the group scale, the disparity metrics with their thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.gates.fairness import evaluate_fairness, fairness_chart
from autopilot.gates.fairness.chart import draw_fairness
from autopilot.modeling.splits import make_splits
from autopilot.reports import GateReport
from tests.helpers import adult_config_dict

FAIRNESS = {"min_group_size": 30, "demographic_parity_ratio_min": 0.8, "equalized_odds_difference_max": 0.2,
            "bootstrap_samples": 200, "confidence": 0.95}


class ByEducation:
    """Scores rows by years of education alone (it never reads a sensitive column)."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        q = 1.0 / (1.0 + np.exp(-(X["education_num"].to_numpy(dtype=float) - 11.0)))
        return np.column_stack([1.0 - q, q])


@pytest.fixture(scope="module")
def report(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[GateReport, ModelConfig]:
    cfg = ModelConfig.model_validate(adult_config_dict(gates={"fairness": FAIRNESS}))
    train = canonicalize(adult_frames[0].sample(2000, random_state=0).reset_index(drop=True), cfg)
    test = canonicalize(adult_frames[1].sample(3000, random_state=0).reset_index(drop=True), cfg)
    splits = make_splits(train, test, cfg)
    return evaluate_fairness(ByEducation(), splits.X_test, splits.y_test, cfg, seed=0), cfg


def bars(axis: Any) -> list[float]:
    return [patch.get_height() for patch in axis.patches]


def test_report_carries_each_gated_groups_interval(report: tuple[GateReport, ModelConfig]) -> None:
    found, _ = report
    sex = found.details["attributes"]["sex"]
    intervals = sex["group_intervals"]
    assert intervals["metric"] == "selection_rate" and set(intervals["groups"]) == set(sex["gated_groups"])
    for group, (low, high) in intervals["groups"].items():
        assert low <= sex["by_group"][group]["selection_rate"] <= high and high - low < 0.1, group


def test_chart_has_one_bar_per_group_with_intervals_and_thresholds(
        report: tuple[GateReport, ModelConfig], tmp_path: Path) -> None:
    found, cfg = report
    attributes = found.details["attributes"]
    fig = draw_fairness(found)
    assert len(fig.axes) == 2 * len(attributes)
    for row, (name, attr) in enumerate(attributes.items()):
        groups_axis, metrics_axis = fig.axes[2 * row], fig.axes[2 * row + 1]
        rates = [attr["by_group"][g]["selection_rate"] for g in attr["by_group"]]
        assert bars(groups_axis) == pytest.approx(rates), name  # one bar per group, at its rate
        # One interval per gated group; groups below min_group_size get none.
        assert len(groups_axis.containers) - 1 == len(attr["gated_groups"]), name
        highest = max(attr["by_group"][g]["selection_rate"] for g in attr["gated_groups"])
        bound = [line for line in groups_axis.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in bound] == pytest.approx([0.8 * highest])
        labels = [tick.get_text() for tick in metrics_axis.get_yticklabels()]
        assert any(label.startswith("demographic parity ratio") for label in labels), labels
    assert "race" in attributes and len(attributes["race"]["by_group"]) >= 4

    path = fairness_chart(found, tmp_path / "chart.png")
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 300 * len(attributes) and image.shape[1] >= 1000


def test_nothing_to_draw_without_attributes(tmp_path: Path) -> None:
    empty = GateReport(name="fairness", passed=True, details={"attributes": {}, "note": "no sensitive attributes"})
    assert fairness_chart(empty, tmp_path / "chart.png") is None
    assert not (tmp_path / "chart.png").exists()
