"""Bias drift (`monitoring.bias`) of multiclass and regression models: calibration, reasons, older reports.

Synthetic data, as `tests/unit/test_bias_drift.py` does on Adult: a model is trained once, the
fairness gate (`evaluate_fairness`, the real one) writes the promotion-time record on a holdout,
and monitoring windows of 2,000 labeled rows are drawn from a separate "live" pool, so the window
and the record never share rows. Multiclass: the three-class problem of `tests/multiclass_support`
(a histogram gradient boosting model); regression: a linear model of three normals and a group.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.monitoring.bias import check_bias_drift, window_bias
from autopilot.monitoring.bias_regression import Moments, welch
from autopilot.monitoring.simulate import shift_frame
from autopilot.ui.bias import bias_section
from tests import multiclass_support as mc

WINDOW_ROWS = 2000
# A share of group g2's labels moved to the next class (multiclass), or shifted by `strength` x 0.8
# target standard deviations (regression): shift_frame's concept scenario.
MULTICLASS_STRENGTH = 0.2
REGRESSION_STRENGTH = 0.5
SUBGROUP = ("group", "g2")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):  # on a busy 2-core machine OpenMP threads make fits far slower
        yield


# ---------------------------------------------------------------------------- multiclass


@pytest.fixture(scope="module")
def classes_world() -> dict[str, Any]:
    """The multiclass model's promotion record, and the live pool with its predicted classes."""
    from autopilot.gates.fairness import evaluate_fairness
    from autopilot.modeling.search_space import build_pipeline

    cfg = mc.config(gates={"fairness": {"bootstrap_samples": 300, "on_inconclusive": "pass"}})
    X = mc.frame(24_000, 0)
    data = X.assign(y=mc.labels(X, 1).to_numpy())
    train, holdout, pool = data.iloc[:6000], data.iloc[6000:12_000], data.iloc[12_000:].reset_index(drop=True)
    features = list(cfg.features)
    with threadpool_limits(limits=1):
        model = build_pipeline(mc.HGB, mc.binary_twin(cfg), seed=0).fit(train[features], train["y"])
        record = evaluate_fairness(model, holdout[features], holdout["y"], cfg).model_dump(mode="json")
        probabilities = model.predict_proba(pool[features])
    classes = [str(c) for c in model.classes_]
    return {"cfg": cfg, "record": record, "pool": pool, "probabilities": probabilities, "classes": classes,
            "predicted": np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]}


def _class_window(world: dict[str, Any], rows: np.ndarray, labels: Any) -> Any:
    pool = world["pool"]
    return check_bias_drift(world["record"], pool.loc[rows, list(world["cfg"].features)].reset_index(drop=True),
                            world["predicted"][rows], labels, world["cfg"])


def test_multiclass_at_most_two_false_alarms_in_50_windows_without_change(classes_world: dict[str, Any]) -> None:
    world = classes_world
    results = []
    for w in range(50):
        rows = np.random.default_rng(1000 + w).choice(len(world["pool"]), WINDOW_ROWS, replace=False)
        labels = world["pool"].loc[rows, "y"].to_numpy() if w % 2 == 0 else None
        results.append(_class_window(world, rows, labels))
    alarms = [r.reasons for r in results if r.flagged]
    assert len(alarms) <= 2, alarms
    labeled = results[0]
    assert labeled.status == "ok" and labeled.labeled_rows == WINDOW_ROWS
    # Every class one-vs-rest, with the binary comparisons, Bonferroni over all classes' comparisons.
    assert {c.label for c in labeled.comparisons} == set(world["classes"]) == {"high", "low", "mid"}
    assert {c.metric for c in labeled.comparisons} == {"selection_rate", "true_positive_rate", "false_positive_rate",
                                                       "demographic_parity_difference", "equalized_odds_difference"}
    assert len(labeled.comparisons) == 3 * (2 * 3 + 2)
    assert labeled.per_test_confidence == pytest.approx(1 - 0.05 / len(labeled.comparisons))
    assert "group=g2 [class mid].true_positive_rate" in labeled.summary()["window"]
    assert {c.metric for c in results[1].comparisons} == {"selection_rate", "demographic_parity_difference"}
    # The selection rate of a class is the share predicted that class.
    high = next(c for c in results[1].comparisons if c.key == "group=g1 [class high].selection_rate")
    rows = np.random.default_rng(1001).choice(len(world["pool"]), WINDOW_ROWS, replace=False)
    g1 = (world["pool"].loc[rows, "group"] == "g1").to_numpy()
    assert high.window == pytest.approx((world["predicted"][rows][g1] == "high").mean())


def test_multiclass_a_groups_labels_moved_to_the_next_class_are_found_within_two_windows(
        classes_world: dict[str, Any]) -> None:
    world = classes_world
    pool, cfg = world["pool"], world["cfg"]
    found, reasons = 0, []
    for seed in range(40):
        for w in range(2):
            rows = np.random.default_rng([seed, w]).choice(len(pool), WINDOW_ROWS, replace=False)
            X, y, _ = shift_frame(pool.loc[rows].reset_index(drop=True), cfg, "concept", MULTICLASS_STRENGTH,
                                  seed=seed * 10 + w, subgroup=SUBGROUP)
            result = check_bias_drift(world["record"], X, world["predicted"][rows], y.to_numpy(), cfg)
            if result.flagged:
                found += 1
                reasons = result.reasons
                break
    assert found >= 38, found
    # The reason names the metric, the class, the group, both values and the interval.
    assert any(r.startswith("bias drift: TPR of class ") and " for group=g2 " in r and "at promotion (diff -" in r
               and "CI [" in r for r in reasons), reasons
    assert not any("selection rate" in r for r in reasons), reasons  # the labels moved, not the predictions


def test_multiclass_probabilities_and_logged_records_read_as_the_predicted_class(
        classes_world: dict[str, Any]) -> None:
    world = classes_world
    cfg, pool, rows = world["cfg"], world["pool"], np.arange(WINDOW_ROWS)
    X = pool.loc[rows, list(cfg.features)]
    by_label = _class_window(world, rows, pool.loc[rows, "y"].to_numpy())
    by_probability = check_bias_drift(world["record"], X, world["probabilities"][rows], pool.loc[rows, "y"].to_numpy(),
                                      cfg)
    assert [(c.key, c.window) for c in by_label.comparisons] == [(c.key, c.window) for c in by_probability.comparisons]
    # The monitoring stage's entry point reads the inference log's records, as objects or JSON text.
    records: list[Any] = [{"label": str(world["predicted"][i]), "probabilities": list(world["probabilities"][i])}
                          for i in rows]
    records[:5] = [json.dumps(r) for r in records[:5]]
    records[5] = "not a record"
    frame = pd.DataFrame({"version": 4, "prediction": pd.Series(records, dtype=object),
                          "label": pool.loc[rows, "y"].to_numpy()})
    out = window_bias(lambda: world["record"], X.reset_index(drop=True), frame, 4, cfg)
    assert out["status"] == "ok" and out["rows"] == WINDOW_ROWS - 1, out["notes"]
    assert "1 predictions could not be read: left out" in out["notes"]
    # A multiclass model without per-class records (no gate report) is unavailable, not an error.
    assert window_bias(lambda: None, X.reset_index(drop=True), frame, 4, cfg)["status"] == "unavailable"


# ---------------------------------------------------------------------------- regression


def _regression_config(**bias: Any) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "toy", "task": "regression", "data": {"source": "toy.csv"}, "target": {"column": "y"},
        "features": {"x0": {"type": "numeric"}, "x1": {"type": "numeric"}, "x2": {"type": "numeric"},
                     "group": {"type": "categorical", "categories": ["g1", "g2"]}},
        "sensitive_attributes": ["group"], "metric": "rmse",
        "gates": {"fairness": {"bootstrap_samples": 300, "max_sensitive_attribution_share": None}},
        "monitoring": {"bias": bias},
    })


def _regression_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                        "group": rng.choice(["g1", "g2"], size=n, p=[0.6, 0.4]).astype(object)})
    out["y"] = (2 * out["x0"] - out["x1"] + 0.5 * out["x2"] + 0.5 * (out["group"] == "g2")
                + rng.normal(size=n))
    return out


@pytest.fixture(scope="module")
def regression_world() -> dict[str, Any]:
    """The regression model's promotion record, and the live pool with its predictions."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from autopilot.gates.fairness import evaluate_fairness

    cfg = _regression_config()
    data = _regression_frame(20_000, 0)
    train, holdout, pool = data.iloc[:4000], data.iloc[4000:10_000], data.iloc[10_000:].reset_index(drop=True)
    features = list(cfg.features)
    model = make_pipeline(ColumnTransformer([("g", OneHotEncoder(handle_unknown="ignore"), ["group"])],
                                            remainder="passthrough"), LinearRegression())
    model.fit(train[features], train["y"])
    record = evaluate_fairness(model, holdout[features], holdout["y"], cfg).model_dump(mode="json")
    return {"cfg": cfg, "record": record, "pool": pool, "predictions": model.predict(pool[features])}


def test_the_gate_records_each_groups_spread(regression_world: dict[str, Any]) -> None:
    g2 = regression_world["record"]["details"]["attributes"]["group"]["by_group"]["g2"]
    assert {"mae", "mae_sd", "mean_prediction", "prediction_sd", "count"} <= set(g2)
    assert 0.5 < g2["mae_sd"] < 0.8 and g2["prediction_sd"] > 1.5  # |N(0, 1)| has sd 0.60


def test_regression_at_most_two_false_alarms_in_50_windows_without_change(regression_world: dict[str, Any]) -> None:
    world = regression_world
    pool, cfg = world["pool"], world["cfg"]
    results = []
    for w in range(50):
        rows = np.random.default_rng(1000 + w).choice(len(pool), WINDOW_ROWS, replace=False)
        labels = pool.loc[rows, "y"].to_numpy() if w % 2 == 0 else None
        results.append(check_bias_drift(world["record"], pool.loc[rows, list(cfg.features)],
                                        world["predictions"][rows], labels, cfg))
    alarms = [r.reasons for r in results if r.flagged]
    assert len(alarms) <= 2, alarms
    labeled = results[0]
    assert labeled.status == "ok" and labeled.min_relative_effect == 0.1
    assert sorted(c.key for c in labeled.comparisons) == [
        "group.group_error_ratio", "group=g1.mae", "group=g1.mean_prediction", "group=g2.mae",
        "group=g2.mean_prediction"]
    assert labeled.per_test_confidence == pytest.approx(1 - 0.05 / 5)
    mae = next(c for c in labeled.comparisons if c.key == "group=g2.mae")
    assert mae.min_change == pytest.approx(0.1 * mae.promoted)  # relative: a tenth of the promoted MAE
    assert [c.metric for c in results[1].comparisons] == ["mean_prediction", "mean_prediction"]
    assert any("mean predictions only" in n for n in results[1].notes)


def test_regression_a_groups_shifted_targets_are_found_within_two_windows(regression_world: dict[str, Any]) -> None:
    world = regression_world
    pool, cfg = world["pool"], world["cfg"]
    found, reasons = 0, []
    for seed in range(40):
        for w in range(2):
            rows = np.random.default_rng([seed, w]).choice(len(pool), WINDOW_ROWS, replace=False)
            X, y, _ = shift_frame(pool.loc[rows].reset_index(drop=True), cfg, "concept", REGRESSION_STRENGTH,
                                  seed=seed * 10 + w, subgroup=SUBGROUP)
            result = check_bias_drift(world["record"], X, world["predictions"][rows], y.to_numpy(), cfg)
            if result.flagged:
                found += 1
                reasons = result.reasons
                break
    assert found >= 38, found
    assert any(r.startswith("bias drift: MAE of group=g2 ") and "at promotion (diff +" in r and "CI [+" in r
               for r in reasons), reasons
    assert not any("mean prediction" in r for r in reasons), reasons  # the targets moved, not the predictions


def test_an_older_regression_report_without_spreads_is_unsupported_not_an_error(
        regression_world: dict[str, Any]) -> None:
    world = regression_world
    pool, cfg, rows = world["pool"], world["cfg"], np.arange(WINDOW_ROWS)
    args = (pool.loc[rows, list(cfg.features)], world["predictions"][rows], pool.loc[rows, "y"].to_numpy(), cfg)
    older = copy.deepcopy(world["record"])
    for entry in older["details"]["attributes"]["group"]["by_group"].values():
        entry.pop("mae_sd"), entry.pop("prediction_sd")
    old = check_bias_drift(older, *args)
    assert old.status == "unsupported" and not old.flagged and not old.comparisons
    assert any("predates the spreads by group (mae_sd, prediction_sd)" in n for n in old.notes), old.notes
    partly = copy.deepcopy(world["record"])
    for entry in partly["details"]["attributes"]["group"]["by_group"].values():
        entry.pop("mae_sd")
    some = check_bias_drift(partly, *args)
    assert some.status == "ok" and {c.metric for c in some.comparisons} == {"mean_prediction"}
    assert any("(mae_sd)" in n for n in some.notes)
    assert check_bias_drift(None, *args).status == "unavailable"
    thin = check_bias_drift(world["record"], pool.loc[:99, list(cfg.features)], world["predictions"][:100], None, cfg)
    assert thin.status == "insufficient" and "fewer than the 500" in thin.notes[0]


def test_regression_reasons_and_the_relative_floor() -> None:
    from autopilot.monitoring.bias import BiasComparison

    flagged = BiasComparison("group", "g2", "mae", promoted=812.5, window=1033.0, promoted_rows=2400,
                             window_rows=790, diff=220.5, ci=[150.25, 290.75])
    assert flagged.reason(0.95, 5) == ("bias drift: MAE of group=g2 1033 vs 812.5 at promotion (diff +220, 95% CI "
                                       "[+150, +291], Bonferroni over 5 comparisons; 790 window rows)")
    ratio = BiasComparison("group", None, "group_error_ratio", promoted=1.02, window=1.31, promoted_rows=6000,
                           window_rows=2000, diff=0.29, ci=[0.2, 0.38])
    assert ratio.reason(0.95, 5).startswith("bias drift: worst/best MAE ratio by group 1.31 vs 1.02 at promotion")
    mid = BiasComparison("group", "g2", "true_positive_rate", promoted=0.71, window=0.52, promoted_rows=900,
                         window_rows=300, diff=-0.19, ci=[-0.27, -0.11], label="mid")
    assert mid.key == "group=g2 [class mid].true_positive_rate"
    assert mid.reason(0.95, 24).startswith("bias drift: TPR of class mid for group=g2 0.52 vs 0.71 at promotion "
                                           "(diff -0.19, 95% CI [-0.27, -0.11], Bonferroni over 24")
    # Welch: equal means give an interval around 0; it narrows with the rows.
    low, high = welch(Moments(400, 1.0, 0.6), Moments(2000, 1.0, 0.6), 0.95)
    assert low < 0 < high and high == pytest.approx(1.96 * 0.6 * (1 / 400 + 1 / 2000) ** 0.5, rel=0.01)
    # The floor is relative to the promoted value: the same change is material on one scale, not another.
    strict = _regression_config(min_relative_effect=0.5)
    assert strict.monitoring.bias.min_relative_effect == 0.5
    with pytest.raises(ValueError):
        _regression_config(min_relative_effect=0)


def test_the_chart_draws_classes_and_regression_metrics() -> None:
    class Window:
        def __init__(self, end: str, bias: dict[str, Any] | None) -> None:
            self.start, self.end, self.bias = end, end, bias

    classes = {"status": "drift", "window": {"group=g2 [class mid].true_positive_rate": 0.52,
                                             "group [class mid].equalized_odds_difference": 0.2},
               "promoted": {"group=g2 [class mid].true_positive_rate": 0.71,
                            "group [class mid].equalized_odds_difference": 0.05},
               "flagged": ["group=g2 [class mid].true_positive_rate"]}
    html = bias_section([Window("2026-12-01T10:00:00+00:00", classes)])
    assert "group=g2 [class mid]" in html and "group [class mid]" in html and html.count('class="bias-chart"') == 2
    regression = {"status": "ok", "window": {"group=g2.mae": 1033.0, "group=g2.mean_prediction": -40.0,
                                             "group.group_error_ratio": 1.3},
                  "promoted": {"group=g2.mae": 812.5, "group=g2.mean_prediction": -35.0,
                               "group.group_error_ratio": 1.02}, "flagged": []}
    html = bias_section([Window("2026-12-01T10:00:00+00:00", regression),
                         Window("2026-12-01T11:00:00+00:00", regression)])
    assert 'data-metric="mae"' in html and 'data-metric="mean_prediction"' in html
    assert 'data-metric="group_error_ratio"' in html and "Mean absolute error by group" in html
    assert "1033" in html and ">1.14e+03<" in html  # the MAE axis takes the values' scale, not 0-1
    assert ">-40<" in html  # a negative mean prediction: the axis starts below 0
