from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.gates.fairness import counterfactual_flip_rate, evaluate_fairness, pretraining_bias
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import Splits, make_splits
from autopilot.reports import GateReport
from tests.helpers import adult_config_dict

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 200, "hgb.max_leaf_nodes": 31,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}
# The gates.fairness section recommended for adult_income.yaml (calibrated on Adult: the label's own
# demographic parity ratio by sex is ~0.36, so the four-fifths rule would block every accurate model).
ADULT_FAIRNESS = {"min_group_size": 30, "demographic_parity_ratio_min": None,
                  "demographic_parity_difference_max": None, "equalized_odds_difference_max": 0.2,
                  "max_counterfactual_flip_rate": 0.15, "max_sensitive_attribution_share": 0.2,
                  "bootstrap_samples": 500, "confidence": 0.95}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: HGB fits on a few thousand rows are dominated by thread start-up
    on a busy 2-core machine, and the tests must not depend on the load."""
    with threadpool_limits(limits=1):
        yield


def adult_cfg(fairness: dict[str, Any] | None = None, **sections: Any) -> ModelConfig:
    fairness = ADULT_FAIRNESS if fairness is None else fairness
    return ModelConfig.model_validate(adult_config_dict(gates={"fairness": fairness}, **sections))


def strict_json(report: GateReport) -> dict[str, Any]:
    """The report as JSON, refusing NaN/inf anywhere."""
    text = json.dumps(report.model_dump(mode="json"), allow_nan=False)
    assert json.loads(report.model_dump_json()) == json.loads(text)
    return dict(json.loads(text))


class Suppress:
    """Wraps a model and never selects anyone of one group: maximal direct discrimination."""

    def __init__(self, base: Any, column: str, value: str) -> None:
        self.base, self.column, self.value = base, column, value

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        proba = np.array(self.base.predict_proba(X), dtype=float)
        proba[(X[self.column] == self.value).to_numpy(), 1] = 0.0
        proba[:, 0] = 1.0 - proba[:, 1]
        return proba


class Constant:
    """Scores every row the same (or NaN)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        q = np.full(len(X), self.value)
        return np.column_stack([1 - q, q])


@pytest.fixture(scope="module")
def adult(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[Splits, Any, Any]:
    """7k Adult training rows, the full test split, the default model and a deliberately biased one.

    The biased model is trained on labels where every positive female row was flipped to negative.
    """
    cfg = adult_cfg()
    train = canonicalize(adult_frames[0].sample(7000, random_state=0).reset_index(drop=True), cfg)
    splits = make_splits(train, canonicalize(adult_frames[1], cfg), cfg)
    biased_labels = splits.y_train.where(splits.X_train["sex"] != "Female", 0)
    with threadpool_limits(limits=1):  # module fixtures run before the autouse one
        default = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
        biased = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, biased_labels)
    return splits, default, biased


def test_recommended_config_passes_the_default_model_and_fails_the_biased_one(
        adult: tuple[Splits, Any, Any]) -> None:
    splits, default, biased = adult
    cfg = adult_cfg()
    # Shares as the explainability gate measured them for full-train models (biased: sex 0.445).
    shares = {"sex": 0.026, "race": 0.021}
    good = evaluate_fairness(default, splits.X_test, splits.y_test, cfg, attribution_share=shares,
                             train=splits.X_train, y_train=splits.y_train)
    assert good.passed, good.reasons
    sex = good.details["attributes"]["sex"]
    assert sex["equalized_odds_difference"]["ci"][0] < 0.15  # well inside the allowed 0.2
    assert sex["demographic_parity_ratio"]["gated"] is False and sex["demographic_parity_ratio"]["value"] < 0.5
    assert good.metrics["sex.counterfactual_flip_rate"] < 0.1 and good.metrics["race.counterfactual_flip_rate"] < 0.15
    # The data carries the disparity already: the label's own parity ratio is ~0.36 for sex.
    label_bias = good.details["pretraining_bias"]
    assert label_bias["data"] == "train" and 0.2 < label_bias["positive_share"] < 0.3
    assert 0.3 < label_bias["attributes"]["sex"]["label_parity_ratio"] < 0.42

    bad = evaluate_fairness(biased, splits.X_test, splits.y_test, cfg, seed=1)
    assert not bad.passed
    # Reasons in words first (issue 12, point 5): who is disadvantaged, the rates, then the metric's name.
    assert bad.reasons[0].startswith("sex: true positive rate (positives selected) 0% for Female and ")
    assert "allowed ≤ 0.2, 95% interval 0." in bad.reasons[0] and "(equalized_odds_difference)" in bad.reasons[0]
    assert bad.details["attributes"]["sex"]["equalized_odds_difference"]["status"] == "fail"
    assert bad.details["attributes"]["sex"]["equalized_odds_difference"]["ci"][0] > 0.5  # far outside the band
    assert any(r.startswith("sex: changing sex flipped ") and "(counterfactual_flip_rate 0." in r for r in bad.reasons)
    assert bad.details["attribution"] == {"status": "not provided"}
    strict_json(good)
    strict_json(bad)


def test_default_four_fifths_rule_blocks_even_an_accurate_model_on_adult(adult: tuple[Splits, Any, Any]) -> None:
    """Why adult_income.yaml makes the demographic parity ratio report-only."""
    splits, default, _ = adult
    report = evaluate_fairness(default, splits.X_test, splits.y_test, adult_cfg(fairness={}))
    assert not report.passed
    assert any(r.startswith("sex: selected ") and "allowed ≥ 0.8" in r and "(demographic_parity_ratio)" in r
               for r in report.reasons)


def test_by_group_metrics_are_reported(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    sample = splits.X_test.sample(3000, random_state=0).index
    report = evaluate_fairness(default, splits.X_test.loc[sample], splits.y_test.loc[sample], adult_cfg())
    by_group = report.details["attributes"]["sex"]["by_group"]
    assert set(by_group) == {"Female", "Male"}
    assert set(by_group["Female"]) == {"selection_rate", "true_positive_rate", "false_positive_rate", "accuracy",
                                       "count", "positives", "negatives"}
    assert by_group["Female"]["count"] + by_group["Male"]["count"] == 3000
    assert {"sex.demographic_parity_ratio", "sex.demographic_parity_difference", "sex.equalized_odds_difference",
            "race.equalized_odds_difference", "race.counterfactual_flip_rate"} <= set(report.metrics)


def test_small_groups_are_reported_not_gated(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    men = splits.X_test.index[splits.X_test["sex"] == "Male"][:2000]
    women = splits.X_test.index[splits.X_test["sex"] == "Female"][:20]
    rows = men.append(women)
    X, y = splits.X_test.loc[rows], splits.y_test.loc[rows]
    model = Suppress(default, "sex", "Female")  # selects no woman at all
    fairness = {"demographic_parity_ratio_min": 0.5, "max_counterfactual_flip_rate": None}
    # Issue 12: one gated group left the attribute "not gated" and the gate passed without judging
    # it (the bug); now the attribute fails, saying what to set.
    lenient = evaluate_fairness(model, X, y, adult_cfg(fairness, sensitive_attributes=["sex"]))
    sex = lenient.details["attributes"]["sex"]
    assert not lenient.passed and sex["reported_not_gated"] == {"Female": 20} and sex["gated_groups"] == ["Male"]
    assert "cannot be judged" in sex["note"] and sex["by_group"]["Female"]["selection_rate"] == 0.0
    assert lenient.reasons[0].startswith("sex: cannot be judged: 1 of its groups hold at least 30 ")
    assert "Female: 20 rows" in lenient.reasons[0] and "gates.fairness.min_group_size" in lenient.reasons[0]
    strict = evaluate_fairness(model, X, y, adult_cfg({**fairness, "min_group_size": 10}, sensitive_attributes=["sex"]))
    assert not strict.passed and strict.reasons[0].startswith("sex: selected 0% of Female and ")
    assert "95% interval 0.00–0.00 (demographic_parity_ratio)" in strict.reasons[0]
    # 20 women include too few positives for a true positive rate: equalized odds leaves them out.
    assert "Female" in strict.details["attributes"]["sex"]["equalized_odds_reported_not_gated"]


def test_groups_without_a_label_class_have_undefined_rates(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    X = splits.X_test.head(3000)
    y = splits.y_test.head(3000).where(X["race"] != "Black", 0)  # no positive label among Black rows
    report = evaluate_fairness(default, X, y, adult_cfg())
    race = report.details["attributes"]["race"]
    assert race["by_group"]["Black"]["true_positive_rate"] is None  # fairlearn would say 0.0
    assert race["equalized_odds_reported_not_gated"]["Black"]["positives"] == 0
    strict_json(report)


def test_selecting_no_one_is_parity(adult: tuple[Splits, Any, Any]) -> None:
    splits, _, _ = adult
    fairness = {**ADULT_FAIRNESS, "demographic_parity_ratio_min": 0.8}
    report = evaluate_fairness(Constant(0.1), splits.X_test.head(2000), splits.y_test.head(2000), adult_cfg(fairness))
    assert report.passed and report.metrics["sex.demographic_parity_ratio"] == 1.0
    assert report.details["attributes"]["sex"]["demographic_parity_ratio"]["ci"] == [1.0, 1.0]


def test_bootstrap_is_seeded(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    sample = splits.X_test.sample(2000, random_state=1).index
    X, y, cfg = splits.X_test.loc[sample], splits.y_test.loc[sample], adult_cfg()
    first = evaluate_fairness(default, X, y, cfg, seed=3)
    assert first.model_dump() == evaluate_fairness(default, X, y, cfg, seed=3).model_dump()
    other = evaluate_fairness(default, X, y, cfg, seed=4)
    sex, other_sex = first.details["attributes"]["sex"], other.details["attributes"]["sex"]
    assert sex["equalized_odds_difference"]["ci"] != other_sex["equalized_odds_difference"]["ci"]
    assert sex["equalized_odds_difference"]["value"] == other_sex["equalized_odds_difference"]["value"]


def test_missing_sensitive_column_fails_closed(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    X = splits.X_test.head(500).drop(columns=["race"])
    report = evaluate_fairness(default, X, splits.y_test.head(500), adult_cfg())
    assert not report.passed and report.reasons == ["race: the sensitive column is missing from the holdout"]
    # A column without any value is as missing: one "(missing)" group would be "not gated" and pass.
    X = splits.X_test.head(500).assign(race=np.nan)
    report = evaluate_fairness(default, X, splits.y_test.head(500), adult_cfg())
    assert not report.passed
    assert report.reasons == ["race: the sensitive column has no values in the holdout (all 500 missing)"]


def test_attribution_share(adult: tuple[Splits, Any, Any]) -> None:
    splits, _, _ = adult
    # 300 rows hold too few positive women to measure equalized odds: since issue 12 a gated one is
    # inconclusive (it was skipped silently), so it is report-only here, where attribution is tested.
    cfg = adult_cfg({**ADULT_FAIRNESS, "equalized_odds_difference_max": None})
    X, y = splits.X_test.head(300), splits.y_test.head(300)
    model = Constant(0.3)
    nan = evaluate_fairness(model, X, y, cfg, attribution_share={"sex": float("nan"), "race": 0.01})
    assert not nan.passed and nan.reasons == [
        "NaN attributions for sex: the sensitive attribution share cannot be judged"]
    too_much = evaluate_fairness(model, X, y, cfg, attribution_share={"sex": 0.15, "race": 0.1})
    assert not too_much.passed and too_much.metrics["sensitive_attribution_share"] == pytest.approx(0.25)
    assert too_much.reasons == ["sensitive attributes (race, sex): sensitive_attribution_share 0.250 of total "
                                "mean |SHAP| is above the allowed 0.2"]
    fine = evaluate_fairness(model, X, y, cfg, attribution_share={"sex": 0.05})
    assert fine.passed and fine.details["attribution"]["not_provided"] == ["race"]
    strict_json(nan)


def test_empty_nan_scores_and_errors_fail_closed(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    cfg = adult_cfg()
    empty = evaluate_fairness(default, splits.X_test.iloc[:0], splits.y_test.iloc[:0], cfg)
    assert not empty.passed and "empty" in empty.reasons[0]
    nan = evaluate_fairness(Constant(float("nan")), splits.X_test.head(100), splits.y_test.head(100), cfg)
    assert not nan.passed and nan.reasons == ["100 of 100 scores are NaN or infinite"]
    broken = evaluate_fairness(object(), splits.X_test.head(100), splits.y_test.head(100), cfg)
    assert not broken.passed and broken.reasons[0].startswith("fairness gate errored: AttributeError")
    strict_json(broken)


def test_counterfactual_flip_rate(adult: tuple[Splits, Any, Any]) -> None:
    splits, default, _ = adult
    cfg = adult_cfg()
    blind = counterfactual_flip_rate(Constant(0.7), splits.X_test, "sex", cfg)
    assert blind["flip_rate"] == 0.0 and blind["rows"] == 2000 and blind["categories"] == ["Female", "Male"]
    direct = counterfactual_flip_rate(Suppress(default, "sex", "Female"), splits.X_test, "sex", cfg)
    # A man the model selects loses the selection as a woman; a woman may gain one as a man.
    # Each row flips under at most one substitution (the other is its own value), so the shares add up.
    to = direct["flip_rate_to"]
    assert direct["flip_rate"] == pytest.approx(to["Female"] + to["Male"]) and to["Female"] > 0.1
    race = counterfactual_flip_rate(default, splits.X_test, "race", cfg)
    assert len(race["categories"]) == 5 and set(race["flip_rate_to"]) == set(race["categories"])
    with pytest.raises(ValueError, match="missing"):
        counterfactual_flip_rate(default, splits.X_test.drop(columns=["sex"]), "sex", cfg)


def test_pretraining_bias_reports_label_disparity() -> None:
    cfg = adult_cfg()
    frame = pd.DataFrame({"sex": ["Male"] * 60 + ["Female"] * 40 + [None] * 5, "race": ["White"] * 105})
    y = pd.Series([1] * 30 + [0] * 30 + [1] * 10 + [0] * 30 + [0] * 5)
    bias = pretraining_bias(frame, y, cfg)
    sex = bias["attributes"]["sex"]
    assert bias["positive_share"] == pytest.approx(40 / 105)
    assert sex["by_group"]["Male"]["positive_rate"] == 0.5 and sex["by_group"]["Female"]["positive_rate"] == 0.25
    assert sex["by_group"]["(missing)"]["count"] == 5  # too small to gate, still reported
    assert sex["label_proportion_difference"] == 0.25 and sex["label_parity_ratio"] == 0.5
    assert "label_proportion_difference" not in bias["attributes"]["race"]  # one group: nothing to compare
    assert pretraining_bias(frame.drop(columns=["race"]), y, cfg)["attributes"]["race"] == {"note": "column missing"}


class Linear:
    """A regression stand-in that ignores the group: prediction = 2x."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return 2 * X["x"].to_numpy(dtype=float)


def test_regression_group_error_ratio() -> None:
    def cfg(ratio: float | None) -> ModelConfig:
        return ModelConfig.model_validate({
            "name": "toy", "task": "regression", "data": {"source": "toy.csv"}, "target": {"column": "y"},
            "features": {"x": {"type": "numeric"}, "group": {"type": "categorical", "categories": ["a", "b"]}},
            "sensitive_attributes": ["group"], "metric": "rmse",
            "gates": {"fairness": {"max_group_error_ratio": ratio, "max_sensitive_attribution_share": None}},
        })

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=3000), "group": np.where(np.arange(3000) % 3 == 0, "b", "a")})
    noise = np.where(X["group"] == "b", 3.0, 1.0) * rng.normal(size=3000)  # errors 3x larger for group b
    y = pd.Series(2 * X["x"] + noise, name="y")
    report = evaluate_fairness(Linear(), X, y, cfg(1.5))
    group = report.details["attributes"]["group"]
    assert 2.5 < report.metrics["group.group_error_ratio"] < 3.5 and group["group_error_ratio"]["ci"][0] > 1.5
    assert not report.passed and report.reasons[0].startswith("group: mean absolute error ")
    assert " for b and " in report.reasons[0] and "(group_error_ratio)" in report.reasons[0]
    assert set(group["by_group"]["a"]) == {"mae", "mean_prediction", "mean_target", "count", "mae_sd", "prediction_sd"}
    assert group["counterfactual"]["mean_relative_change"] == 0.0
    assert report.details["pretraining_bias"]["attributes"]["group"]["target_mean_difference"] >= 0
    assert evaluate_fairness(Linear(), X, y, cfg(None)).passed  # report only
    strict_json(report)
