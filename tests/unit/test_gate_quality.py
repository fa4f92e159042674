from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.gates.quality import bootstrap_metric, evaluate_quality
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import Splits, make_splits
from autopilot.reports import GateReport, json_safe
from tests.helpers import adult_config_dict

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 200, "hgb.max_leaf_nodes": 31,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}
NO_FLOORS = {"min_metrics": {}, "max_metrics": {}}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: HGB fits on a few thousand rows are dominated by thread start-up
    on a busy 2-core machine, and the tests must not depend on the load."""
    with threadpool_limits(limits=1):
        yield


def adult_cfg(**quality: Any) -> ModelConfig:
    return ModelConfig.model_validate(adult_config_dict(gates={"quality": quality}))


def strict_json(report: GateReport) -> dict[str, Any]:
    """The report as JSON, refusing NaN/inf anywhere (what a strict consumer would do)."""
    text = json.dumps(report.model_dump(mode="json"), allow_nan=False)
    assert json.loads(report.model_dump_json()) == json.loads(text)
    return dict(json.loads(text))


class NoisyModel:
    """The base model's probabilities with seeded logit noise: a challenger that is truly worse."""

    def __init__(self, base: Any, scale: float, seed: int = 0) -> None:
        self.base, self.scale, self.seed = base, scale, seed

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.clip(self.base.predict_proba(X)[:, 1], 1e-6, 1 - 1e-6)
        logit = np.log(p / (1 - p)) + np.random.default_rng(self.seed).normal(0, self.scale, len(X))
        q = 1 / (1 + np.exp(-logit))
        return np.column_stack([1 - q, q])


class NaNModel:
    """Returns NaN for every tenth row, like a model broken by an unseen input."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        q = np.full(len(X), 0.3)
        q[::10] = np.nan
        return np.column_stack([1 - q, q])


@pytest.fixture(scope="module")
def adult(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[Splits, Any, Any]:
    """6k Adult training rows, a 4k test sample, an HGB champion and a depth-1 tree."""
    cfg = adult_cfg()
    train = canonicalize(adult_frames[0].sample(6000, random_state=0).reset_index(drop=True), cfg)
    test = canonicalize(adult_frames[1].sample(4000, random_state=0).reset_index(drop=True), cfg)
    splits = make_splits(train, test, cfg)
    stump = Pipeline([("preprocess", build_pipeline(HGB, cfg, seed=0).steps[0][1]),
                      ("model", DecisionTreeClassifier(max_depth=1, random_state=0))])
    with threadpool_limits(limits=1):  # module fixtures run before the autouse one
        champion = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
        stump.fit(splits.X_train, splits.y_train)
    return splits, champion, stump


def test_stump_is_rejected_against_a_good_champion(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, stump = adult
    report = evaluate_quality(stump, champion, splits.X_test, splits.y_test, adult_cfg(**NO_FLOORS),
                              champion_version=7)
    baseline = report.details["baseline"]
    assert not report.passed and baseline["decision"] == "worse"
    assert baseline["champion_version"] == 7 and baseline["metrics"]["roc_auc"] > 0.88
    assert baseline["difference"] < -0.1 and baseline["ci"][1] < -0.005
    assert report.details["requires_review"] is False
    # Plain words first (both values, who, how much), then the interval and the technical names.
    assert len(report.reasons) == 1 and report.reasons[0].startswith("roc_auc 0.")
    assert "for champion v7 on the same 4,000 holdout rows: worse by 0.1" in report.reasons[0]
    assert "wholly below -0.0050 (the allowed loss: gates.quality.non_inferiority_margin)" in report.reasons[0]
    strict_json(report)


def test_same_model_is_equivalent_and_passes(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    report = evaluate_quality(champion, champion, splits.X_test, splits.y_test, adult_cfg(), champion_version=1)
    baseline = report.details["baseline"]
    assert report.passed and report.reasons == []
    assert baseline["decision"] == "equivalent" and baseline["difference"] == 0.0 and baseline["ci"] == [0.0, 0.0]
    assert report.metrics["roc_auc"] == baseline["metrics"]["roc_auc"] > 0.88


def test_noise_on_a_tiny_holdout_is_inconclusive_not_a_pass(adult: tuple[Splits, Any, Any]) -> None:
    # Issue 12: this used to pass as "equivalent"; an interval straddling -margin proves nothing.
    splits, champion, _ = adult
    cfg = adult_cfg(**NO_FLOORS)
    noisy = NoisyModel(champion, scale=0.7)
    large = evaluate_quality(noisy, champion, splits.X_test, splits.y_test, cfg)
    assert large.details["baseline"]["decision"] == "worse"  # the challenger really is worse...
    tiny = splits.X_test.sample(60, random_state=0).index
    small = evaluate_quality(noisy, champion, splits.X_test.loc[tiny], splits.y_test.loc[tiny], cfg)
    low, high = small.details["baseline"]["ci"]
    # ...but 60 rows cannot show it: the interval is wide and straddles -margin, so a human decides.
    assert low < -cfg.gates.quality.non_inferiority_margin < high and high - low > 0.05
    assert not small.passed and small.details["baseline"]["decision"] == "inconclusive"
    assert small.details["requires_review"] is True and small.details["baseline"]["rows_needed"] > 0
    assert "inconclusive; about" in small.reasons[0]


def test_a_clearly_better_challenger_is_better(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, stump = adult
    report = evaluate_quality(champion, stump, splits.X_test, splits.y_test, adult_cfg(**NO_FLOORS))
    assert report.passed and report.details["baseline"]["decision"] == "better"
    assert report.details["baseline"]["ci"][0] > 0


def test_lower_is_better_metric_is_oriented_so_positive_means_better(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, stump = adult
    raw = adult_config_dict(metric="log_loss", gates={"quality": NO_FLOORS})
    cfg = ModelConfig.model_validate(raw)
    report = evaluate_quality(stump, champion, splits.X_test, splits.y_test, cfg)
    baseline = report.details["baseline"]
    assert report.metrics["log_loss"] > baseline["metrics"]["log_loss"]  # the stump's log loss is higher...
    assert baseline["difference"] < 0 and baseline["decision"] == "worse"  # ...which reads as "worse"
    assert not report.passed and report.reasons[0].startswith("log_loss 0.") and "worse by" in report.reasons[0]


def test_first_run_promote_passes_on_floors_without_baselines(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    cfg = adult_cfg(first_run="promote", min_metrics={"roc_auc": 0.85}, first_run_baselines=[])
    report = evaluate_quality(champion, None, splits.X_test, splits.y_test, cfg)
    assert report.passed and report.reasons == []
    assert report.details["baseline"] == {"champion_version": None, "note": "first run: no champion"}
    assert report.details["requires_review"] is False


def test_first_run_require_review_holds_for_a_human(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, stump = adult
    cfg = adult_cfg(first_run="require_review", min_metrics={"roc_auc": 0.85}, first_run_baselines=["prior"])
    report = evaluate_quality(champion, None, splits.X_test, splits.y_test, cfg,
                              X_train=splits.X_train, y_train=splits.y_train)
    assert report.details["first_run_baselines"]["prior"]["status"] == "pass"
    assert not report.passed and report.details["requires_review"] is True
    assert len(report.reasons) == 1 and "autopilot promote adult_income" in report.reasons[0]
    assert "--reason" in report.reasons[0]
    # A version that also misses a floor is a quality failure, not one waiting for review.
    weak = evaluate_quality(stump, None, splits.X_test, splits.y_test, cfg,
                            X_train=splits.X_train, y_train=splits.y_train)
    assert not weak.passed and weak.details["requires_review"] is False
    assert any("below the floor 0.85" in reason for reason in weak.reasons)


def test_floors_and_ceilings_fail(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    cfg = adult_cfg(min_metrics={"roc_auc": 0.99, "accuracy": 0.5}, max_metrics={"log_loss": 0.01})
    report = evaluate_quality(champion, champion, splits.X_test, splits.y_test, cfg)
    assert not report.passed and len(report.reasons) == 2
    assert report.reasons[0].startswith("roc_auc 0.9") and report.reasons[0].endswith("below the floor 0.99")
    assert report.reasons[1].startswith("log_loss 0.") and report.reasons[1].endswith("above the ceiling 0.01")


def test_undefined_metric_fails_its_floor_and_the_comparison(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    negatives = splits.y_test[splits.y_test == 0].index[:200]  # one class only: ROC AUC is undefined
    report = evaluate_quality(champion, champion, splits.X_test.loc[negatives], splits.y_test.loc[negatives],
                              adult_cfg(min_metrics={"roc_auc": 0.85}, max_metrics={}))
    assert not report.passed and report.metrics["roc_auc"] is None
    assert report.reasons[0] == "roc_auc NaN is below the floor 0.85"
    assert report.details["baseline"]["decision"] == "undefined" and "cannot compare" in report.reasons[1]
    strict_json(report)


def test_nan_scores_fail_closed(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    cfg = adult_cfg(**NO_FLOORS)
    report = evaluate_quality(NaNModel(), champion, splits.X_test, splits.y_test, cfg)
    assert not report.passed and report.reasons == ["challenger: 400 of 4000 scores are NaN or infinite"]
    broken_champion = evaluate_quality(champion, NaNModel(), splits.X_test, splits.y_test, cfg)
    assert not broken_champion.passed and broken_champion.reasons[0].startswith("champion: 400 of 4000")


def test_empty_holdout_and_errors_fail_closed(adult: tuple[Splits, Any, Any]) -> None:
    splits, champion, _ = adult
    cfg = adult_cfg()
    empty = evaluate_quality(champion, champion, splits.X_test.iloc[:0], splits.y_test.iloc[:0], cfg)
    assert not empty.passed and "empty" in empty.reasons[0]
    broken = evaluate_quality(object(), champion, splits.X_test, splits.y_test, cfg)
    assert not broken.passed and broken.reasons[0].startswith("quality gate errored: AttributeError")
    mismatched = evaluate_quality(champion, None, splits.X_test, splits.y_test.iloc[:10], cfg)
    assert not mismatched.passed and "10 labels" in mismatched.reasons[0]


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    a, b = rng.random(300), rng.random(300)
    first = bootstrap_metric("roc_auc", y, [a, b], 200, seed=5)
    assert first.shape == (2, 200)
    assert np.array_equal(first, bootstrap_metric("roc_auc", y, [a, b], 200, seed=5))
    assert not np.array_equal(first, bootstrap_metric("roc_auc", y, [a, b], 200, seed=6))


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"])
def test_bootstrap_metrics_match_sklearn_with_weights(metric: str) -> None:
    """A resample is a vector of row counts: each replicate must equal sklearn with those weights."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400).astype(float)
    scores = np.round(np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1), 2)  # rounded: ties in the AUC
    replicates = bootstrap_metric(metric, y, [scores], 5, seed=2)[0]
    rows = np.random.default_rng(2).integers(0, 400, size=(5, 400))  # the same draws as the function's
    labels = (scores >= 0.5).astype(int)
    functions = {
        "roc_auc": lambda w: skm.roc_auc_score(y, scores, sample_weight=w),
        "accuracy": lambda w: skm.accuracy_score(y, labels, sample_weight=w),
        "precision": lambda w: skm.precision_score(y, labels, sample_weight=w, zero_division=0),
        "recall": lambda w: skm.recall_score(y, labels, sample_weight=w, zero_division=0),
        "f1": lambda w: skm.f1_score(y, labels, sample_weight=w, zero_division=0),
        "log_loss": lambda w: skm.log_loss(y, scores.clip(1e-15, 1 - 1e-15), sample_weight=w),
        "brier": lambda w: skm.brier_score_loss(y, scores, sample_weight=w),
    }
    expected = [functions[metric](np.bincount(r, minlength=400)) for r in rows]
    np.testing.assert_allclose(replicates, expected, rtol=1e-9)


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_bootstrap_regression_metrics_match_sklearn(metric: str) -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    pred = y + rng.normal(scale=0.5, size=300)
    replicates = bootstrap_metric(metric, y, [pred], 4, seed=9)[0]
    rows = np.random.default_rng(9).integers(0, 300, size=(4, 300))
    functions = {
        "rmse": lambda w: np.sqrt(skm.mean_squared_error(y, pred, sample_weight=w)),
        "mae": lambda w: skm.mean_absolute_error(y, pred, sample_weight=w),
        "r2": lambda w: skm.r2_score(y, pred, sample_weight=w),
    }
    np.testing.assert_allclose(replicates, [functions[metric](np.bincount(r, minlength=300)) for r in rows])


class Linear:
    """A regression stand-in: prediction = slope * x."""

    def __init__(self, slope: float) -> None:
        self.slope = slope

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.slope * X["x"].to_numpy(dtype=float)


def test_regression_champion_comparison() -> None:
    cfg = ModelConfig.model_validate({
        "name": "toy", "task": "regression", "data": {"source": "toy.csv"}, "target": {"column": "y"},
        "features": {"x": {"type": "numeric"}}, "metric": "rmse",
        "gates": {"quality": {"max_metrics": {"rmse": 1.0}, "bootstrap_samples": 300}},
    })
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=2000)})
    y = pd.Series(2 * X["x"] + rng.normal(scale=0.3, size=2000), name="y")
    report = evaluate_quality(Linear(1.0), Linear(2.0), X, y, cfg)
    assert not report.passed and report.details["baseline"]["decision"] == "worse"
    assert report.details["baseline"]["difference"] < 0 and set(report.metrics) == {"rmse", "mae", "r2"}
    better = evaluate_quality(Linear(2.0), Linear(1.0), X, y, cfg)
    assert better.passed and better.details["baseline"]["decision"] == "better"
    strict_json(better)


def test_json_safe_converts_numpy_and_nan() -> None:
    value = {"a": np.float32(0.5), "b": [np.int64(3), float("nan")], "c": np.array([np.inf, 1.0]), 4: np.bool_(True)}
    assert json_safe(value) == {"a": 0.5, "b": [3, None], "c": [None, 1.0], "4": True}
