"""First-run floors and inconclusive evidence in the quality gate (issue 12, points 2 and 3).

On a first run the model must surely beat the class prior and a default-regularized linear model
fitted on the same training split; an interval that straddles its bound is `inconclusive`, which
`gates.quality.on_inconclusive` turns into review (default), a rejection, or a pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.gates.decision import decide
from autopilot.gates.intervals import rows_needed
from autopilot.gates.quality import evaluate_quality, fit_baseline
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import Splits, make_splits
from autopilot.reports import GateReport

HGB = {"family": "hist_gradient_boosting", "hgb.learning_rate": 0.1, "hgb.max_iter": 100, "hgb.max_leaf_nodes": 15,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0, "prep.cat_impute": "most_frequent",
       "hgb.cat_encoding": "native", "prep.min_frequency": 0.0}
OTHER_GATES = [GateReport(name=name, passed=True) for name in ("explainability", "fairness", "infra")]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def verdict(report: GateReport) -> str:
    """The decision step's verdict when every other gate passed."""
    return decide([report, *OTHER_GATES])[0]


def config(task: str, features: dict[str, Any], metric: str, **quality: Any) -> ModelConfig:
    target: dict[str, Any] = {"column": "y"} if task == "regression" else {"column": "y", "positive_class": 1}
    return ModelConfig.model_validate({
        "name": "toy", "task": task, "data": {"source": "toy.csv"}, "target": target, "features": features,
        "metric": metric, "gates": {"quality": {"bootstrap_samples": 400, **quality}},
    })


class Scores:
    """A stand-in model with fixed positive-class probabilities (or predictions)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores, dtype=float)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.column_stack([1 - self.scores, self.scores])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.scores


# ---------------------------------------------------------------------------- synthetic data


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Known truth: the label's log-odds are 1.5*x1 + x2 + 2*[x1*x2 > 0] + a category effect.

    The interaction term is out of a linear model's reach, so a tree ensemble surely beats the
    linear baseline; x1 and x2 both matter, so a model on x2 alone is clearly worse than it.
    """
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    colour = rng.choice(["red", "green", "blue"], n)
    logit = 1.5 * x1 + x2 + 2.0 * (x1 * x2 > 0) - 1.0 + np.where(colour == "red", 0.7, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).astype(str)
    x3[rng.random(n) < 0.05] = np.nan  # the linear baseline must impute
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "colour": colour, "y": y})


SYNTHETIC_FEATURES = {"x1": {"type": "numeric"}, "x2": {"type": "numeric"}, "x3": {"type": "numeric", "nullable": True},
                      "colour": {"type": "categorical"}}


@pytest.fixture(scope="module")
def toy() -> tuple[ModelConfig, Splits]:
    cfg = config("binary_classification", SYNTHETIC_FEATURES, "roc_auc")
    return cfg, make_splits(synthetic(3000, 0), synthetic(2000, 1), cfg)


def first_run(model: Any, cfg: ModelConfig, splits: Splits) -> GateReport:
    return evaluate_quality(model, None, splits.X_test, splits.y_test, cfg, X_train=splits.X_train,
                            y_train=splits.y_train)


def test_a_constant_model_is_rejected_by_the_prior(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    report = first_run(Scores(np.full(len(splits.X_test), 0.4)), cfg, splits)
    prior = report.details["first_run_baselines"]["prior"]
    # ROC AUC of a constant is the prior's 0.5 on every resample: the interval is [0, 0], not above 0.
    assert prior["status"] == "fail" and prior["ci"] == [0.0, 0.0] and prior["metrics"]["roc_auc"] == 0.5
    assert report.details["requires_review"] is False and verdict(report) == "reject"
    reason = next(r for r in report.reasons if "class prior" in r)
    assert reason.startswith("roc_auc 0.5000 vs 0.5000 for the class prior (always ")
    assert "on the same 2,000 holdout rows: no different, 95% interval of the difference 0.0000 to 0.0000" in reason
    assert "wholly at or below 0" in reason


def test_random_scores_are_never_promoted(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    random = Scores(np.random.default_rng(3).random(len(splits.X_test)))
    report = first_run(random, cfg, splits)
    # The linear baseline is far better than chance: a hard failure, so the verdict is reject.
    assert report.details["first_run_baselines"]["linear"]["status"] == "fail"
    assert report.details["first_run_baselines"]["prior"]["status"] in {"fail", "inconclusive"}
    assert verdict(report) == "reject"
    # Against the prior alone, chance-level scores cannot be shown better: never a promotion.
    prior_only = first_run(random, cfg.model_copy(update={"gates": cfg.gates.model_copy(update={
        "quality": cfg.gates.quality.model_copy(update={"first_run_baselines": ["prior"]})})}), splits)
    assert verdict(prior_only) in {"reject", "review"} and not prior_only.passed


def test_a_model_clearly_worse_than_logistic_regression_is_rejected(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    one_feature = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train[["x2"]].assign(x1=0.0, x3=0.0, colour="red")
                                                       .loc[:, list(cfg.features)], splits.y_train)
    weak = Scores(one_feature.predict_proba(splits.X_test.assign(x1=0.0, x3=0.0, colour="red"))[:, 1])
    report = first_run(weak, cfg, splits)
    baselines = report.details["first_run_baselines"]
    assert baselines["prior"]["status"] == "pass"  # it does carry signal...
    linear = baselines["linear"]
    assert linear["status"] == "fail" and linear["ci"][1] < -0.05  # ...but far less than x1 and x2 together
    assert "LogisticRegression" in linear["model"] and linear["metrics"]["roc_auc"] > 0.75
    assert verdict(report) == "reject"
    reason = next(r for r in report.reasons if "logistic regression" in r)
    assert "for a logistic regression (same features, same training rows) on the same 2,000 holdout rows: " \
        "worse by 0.1" in reason and "wholly below -0.0050 (a first run must not be worse than it" in reason


def test_a_good_model_passes_and_is_promoted(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    model = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
    report = first_run(model, cfg, splits)
    baselines = report.details["first_run_baselines"]
    assert baselines["prior"]["status"] == "pass" and baselines["linear"]["status"] == "pass"
    assert baselines["linear"]["ci"][0] > 0  # the interaction is worth surely more than nothing
    assert report.passed and report.reasons == [] and verdict(report) == "promote"
    assert report.thresholds["first_run_baselines"] == ["prior", "linear"]


def test_require_review_still_holds_a_passing_first_run(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    held = config("binary_classification", SYNTHETIC_FEATURES, "roc_auc", first_run="require_review")
    model = build_pipeline(HGB, held, seed=0).fit(splits.X_train, splits.y_train)
    report = first_run(model, held, splits)
    assert report.details["first_run_baselines"]["linear"]["status"] == "pass"
    assert verdict(report) == "review" and len(report.reasons) == 1 and "require_review" in report.reasons[0]


def test_empty_baselines_restore_the_floors_only_rule(toy: tuple[ModelConfig, Splits]) -> None:
    _, splits = toy
    cfg = config("binary_classification", SYNTHETIC_FEATURES, "roc_auc", first_run_baselines=[])
    report = evaluate_quality(Scores(np.full(len(splits.X_test), 0.4)), None, splits.X_test, splits.y_test, cfg)
    assert report.passed and verdict(report) == "promote" and "first_run_baselines" not in report.details


def test_baselines_without_the_training_split_fail_closed(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    report = evaluate_quality(Scores(np.full(len(splits.X_test), 0.4)), None, splits.X_test, splits.y_test, cfg)
    assert not report.passed and verdict(report) == "reject"
    assert "need the training split" in report.reasons[0]


def test_a_baseline_that_cannot_be_fitted_fails_closed(toy: tuple[ModelConfig, Splits]) -> None:
    cfg, splits = toy
    one_class = pd.Series(np.zeros(len(splits.y_train), dtype="int64"), name="y")
    report = evaluate_quality(Scores(np.full(len(splits.X_test), 0.4)), None, splits.X_test, splits.y_test, cfg,
                              X_train=splits.X_train, y_train=one_class)
    assert not report.passed and verdict(report) == "reject"
    assert report.reasons == ["first run: the training split holds one class only, so no baseline can be fitted "
                              "and the model cannot be judged against one"]


# ---------------------------------------------------------------------------- inconclusive


def noisy_champion_pair(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series, Scores, Scores]:
    """A champion with real signal and a challenger that is the same scores plus small logit noise:
    truly a little worse, which a small holdout cannot tell from the margin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = 1.5 * (2 * y - 1) + rng.normal(0, 1.5, n)
    champion = 1 / (1 + np.exp(-logit))
    challenger = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.6, n))))
    return pd.DataFrame({"x": np.zeros(n)}), pd.Series(y, name="y"), Scores(challenger), Scores(champion)


@pytest.mark.parametrize(("policy", "expected"), [("review", "review"), ("fail", "reject"), ("pass", "promote")])
def test_an_inconclusive_champion_comparison_follows_on_inconclusive(policy: str, expected: str) -> None:
    X, y, challenger, champion = noisy_champion_pair(300, 0)
    cfg = config("binary_classification", {"x": {"type": "numeric"}}, "roc_auc", on_inconclusive=policy)
    report = evaluate_quality(challenger, champion, X, y, cfg, champion_version=4)
    baseline = report.details["baseline"]
    low, high = baseline["ci"]
    assert low < -0.005 < high and baseline["decision"] == "inconclusive" and baseline["status"] == "inconclusive"
    assert baseline["rows_needed"] > 0
    assert verdict(report) == expected
    assert report.details["requires_review"] is (expected == "review")
    text = report.reasons[0] if report.reasons else report.details["passed_inconclusive"][0]
    assert text.startswith("roc_auc 0.") and "for champion v4 on the same 300 holdout rows: worse by" in text
    assert f"inconclusive; about {baseline['rows_needed']:,} more holdout rows would settle it" in text
    assert f"gates.quality.on_inconclusive: {policy}" in text
    json.dumps(report.model_dump(mode="json"), allow_nan=False)  # stored as the gate's artifact: strict JSON


def test_more_rows_settle_what_a_small_holdout_left_open() -> None:
    """The rows-needed estimate is about right: with that many rows the same effect is conclusive."""
    X, y, challenger, champion = noisy_champion_pair(300, 0)
    cfg = config("binary_classification", {"x": {"type": "numeric"}}, "roc_auc")
    small = evaluate_quality(challenger, champion, X, y, cfg).details["baseline"]
    X_big, y_big, challenger_big, champion_big = noisy_champion_pair(30_000, 0)
    big = evaluate_quality(challenger_big, champion_big, X_big, y_big, cfg).details["baseline"]
    assert small["status"] == "inconclusive" and big["status"] in {"pass", "fail"}
    assert big["ci"][1] - big["ci"][0] < (small["ci"][1] - small["ci"][0]) / 5  # width shrinks as 1/sqrt(n)


def test_rows_needed_scales_the_half_width_by_sqrt_n() -> None:
    # Observed 0.01 above the bound 0, lower half-width 0.02: n' = 100 * (0.02 / 0.01)^2 = 400, i.e. 300 more.
    assert rows_needed(0.01, -0.01, 0.03, 0.0, 100) == 300
    # Observed below the bound: the upper half-width counts.
    assert rows_needed(-0.01, -0.02, 0.01, 0.0, 100) == 300
    assert rows_needed(0.0, -0.01, 0.01, 0.0, 100) is None  # exactly on the bound: never conclusive


def test_an_inconclusive_first_run_on_breast_cancer_follows_on_inconclusive() -> None:
    """Breast cancer (bundled with sklearn): logistic regression is near perfect (ROC AUC ~0.99), so
    on its 114-row holdout a tree ensemble cannot be shown to beat it: inconclusive."""
    frame = datasets.load_breast_cancer(as_frame=True).frame.rename(columns={"target": "y"})
    frame["y"] = frame["y"].astype(str)
    features = {name: {"type": "numeric"} for name in frame.columns if name != "y"}
    verdicts = {}
    for policy in ("review", "fail", "pass"):
        cfg = config("binary_classification", features, "roc_auc", on_inconclusive=policy)
        splits = make_splits(frame, None, cfg)
        model = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
        report = first_run(model, cfg, splits)
        linear = report.details["first_run_baselines"]["linear"]
        assert linear["status"] == "inconclusive" and linear["rows_needed"] > 0
        assert report.details["first_run_baselines"]["prior"]["status"] == "pass"
        verdicts[policy] = verdict(report)
    assert verdicts == {"review": "review", "fail": "reject", "pass": "promote"}


# ---------------------------------------------------------------------------- regression


def test_regression_a_mean_predictor_fails_and_the_orientation_holds() -> None:
    """Diabetes (bundled with sklearn), metric rmse (lower is better): predicting the training mean
    is the prior baseline itself, so it does not surely beat it; ridge on ten features is better."""
    frame = datasets.load_diabetes(as_frame=True).frame.rename(columns={"target": "y"})
    features = {name: {"type": "numeric"} for name in frame.columns if name != "y"}
    cfg = config("regression", features, "rmse")
    splits = make_splits(frame, None, cfg)
    mean = Scores(np.full(len(splits.X_test), splits.y_train.mean()))
    report = first_run(mean, cfg, splits)
    baselines = report.details["first_run_baselines"]
    assert baselines["prior"]["status"] == "fail" and baselines["prior"]["ci"] == [0.0, 0.0]
    assert baselines["linear"]["status"] == "fail" and baselines["linear"]["difference"] < 0  # ridge: lower rmse
    assert "Ridge" in baselines["linear"]["model"] and verdict(report) == "reject"
    assert any(r.startswith("rmse ") and "the training mean (always" in r for r in report.reasons)
    ridge = fit_baseline("linear", cfg, splits.X_train, splits.y_train, seed=0)
    assert evaluate_quality(ridge, None, splits.X_test, splits.y_test, cfg, X_train=splits.X_train,
                            y_train=splits.y_train).details["first_run_baselines"]["prior"]["status"] == "pass"
