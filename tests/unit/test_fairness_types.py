"""Issue 12: sensitive attributes of every type, inconclusive evidence, reasons for people.

Synthetic data with a known effect: stand-in models whose decisions are set row by row, so every
rate in a reason is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from autopilot.config import ConfigError, ModelConfig, load_config
from autopilot.gates.decision import decide
from autopilot.gates.fairness import build_groupings, counterfactual_flip_rate, evaluate_fairness
from autopilot.gates.intervals import rows_needed
from autopilot.reports import GateReport

# Only the group metrics under test are gated, unless a test says otherwise.
LOOSE = {"demographic_parity_ratio_min": None, "max_counterfactual_flip_rate": None,
         "max_sensitive_attribution_share": None, "bootstrap_samples": 400}


def config(fairness: dict[str, Any] | None = None, sensitive: list[str] | None = None,
           task: str = "binary_classification") -> ModelConfig:
    classify = task == "binary_classification"
    return ModelConfig.model_validate({
        "name": "toy", "task": task, "data": {"source": "toy.csv"},
        "target": {"column": "y", **({"positive_class": 1} if classify else {})},
        "features": {"x": {"type": "numeric"}, "age": {"type": "numeric"}, "rating": {"type": "numeric"},
                     "sex": {"type": "categorical", "categories": ["F", "M"]}},
        "sensitive_attributes": ["sex", "age"] if sensitive is None else sensitive,
        "metric": "roc_auc" if classify else "rmse",
        "gates": {"fairness": {**LOOSE, **(fairness or {})}},
    })


class Scores:
    """Scores are the column `x`, optionally zeroed where `blocked(X)` is true (a direct effect)."""

    def __init__(self, blocked: Any = None) -> None:
        self.blocked = blocked

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        q = X["x"].to_numpy(dtype=float).copy()
        if self.blocked is not None:
            q[np.asarray(self.blocked(X), dtype=bool)] = 0.0
        return np.column_stack([1 - q, q])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X["x"].to_numpy(dtype=float)


def population(n: int, seed: int = 0, low: float = 18, high: float = 80) -> tuple[pd.DataFrame, pd.Series]:
    """Ages uniform, sex independent of age, half the rows scored 0.9 (selected), labels at random."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": np.where(rng.random(n) < 0.5, 0.9, 0.1), "age": rng.uniform(low, high, n).round(1),
                      "rating": rng.integers(1, 4, n), "sex": np.where(rng.random(n) < 0.5, "F", "M")})
    return X, pd.Series((rng.random(n) < 0.4).astype(int), name="y")


def others_pass(fairness: GateReport) -> list[GateReport]:
    return [GateReport(name=name, passed=True) for name in ("quality", "explainability", "infra")] + [fairness]


# ---------------------------------------------------------------------------- numeric attributes


def test_numeric_attribute_with_a_built_in_bias_is_binned_and_failed() -> None:
    X, y = population(4000)
    train, y_train = population(8000, seed=1)
    old = Scores(lambda f: f["age"] >= 60)  # never selects anyone aged 60 or more
    cfg = config({"demographic_parity_ratio_min": 0.8, "max_counterfactual_flip_rate": 0.1})
    report = evaluate_fairness(old, X, y, cfg, train=train, y_train=y_train)
    age = report.details["attributes"]["age"]
    grouping = age["grouping"]
    # Four quantile bins of the *training* ages (each far above min_group_size: nothing merged).
    assert grouping["kind"] == "quantile_bins" and grouping["reference"] == "train"
    assert grouping["edges"] == pytest.approx(list(np.quantile(train["age"], [0.25, 0.5, 0.75])))
    top = grouping["labels"][-1]
    assert top.startswith(">=") and len(grouping["labels"]) == 4 and set(age["gated_groups"]) == set(grouping["labels"])
    assert age["by_group"][top]["selection_rate"] == 0.0
    assert not report.passed and age["demographic_parity_ratio"]["status"] == "fail"
    reason = next(r for r in report.reasons if "(demographic_parity_ratio)" in r)
    assert reason.startswith(f"age: selected 0% of {top} and ") and "(lowest and highest of 4 groups)" in reason
    assert "allowed ≥ 0.8" in reason and "the labels themselves are positive for " in reason
    # Counterfactual: a row moved to the top bin's median (a training median above 60) loses its selection.
    flips = age["counterfactual"]
    assert flips["values"][top] == pytest.approx(float(np.median(train["age"][train["age"] >= grouping["edges"][-1]])))
    assert flips["flip_rate"] > 0.3 and flips["flip_rate_to"][top] == max(flips["flip_rate_to"].values())
    assert any(r.startswith("age: changing age (each row moved to every other bin's median) flipped ")
               and "allowed ≤ 10%" in r and f"most often when set to {top}" in r for r in report.reasons)
    assert report.details["metric_status"]["age.counterfactual_flip_rate"] == "fail"
    assert report.details["metric_status"]["sex.demographic_parity_ratio"] == "pass"
    # The same model without the age cut-off is judged on the same bins and passes.
    assert evaluate_fairness(Scores(), X, y, cfg, train=train, y_train=y_train).passed


def test_explicit_bins_are_used_as_given() -> None:
    X, y = population(3000)
    cfg = config({"bins": {"age": [30, 60]}, "demographic_parity_ratio_min": 0.8})
    report = evaluate_fairness(Scores(lambda f: f["age"] < 30), X, y, cfg, train=X, y_train=y)
    grouping = report.details["attributes"]["age"]["grouping"]
    assert grouping["kind"] == "bins" and grouping["edges"] == [30.0, 60.0]
    assert grouping["labels"] == ["<30", "30–60", ">=60"]
    assert grouping["representatives"]["30–60"] == float(np.median(X["age"][(X["age"] >= 30) & (X["age"] < 60)]))
    assert set(report.details["attributes"]["age"]["by_group"]) == {"<30", "30–60", ">=60"}
    assert any(r.startswith("age: selected 0% of <30 and ") for r in report.reasons)
    # A bin holds its lower edge.
    groups = build_groupings(cfg, X)[1].assign(pd.DataFrame({"age": [29.9, 30.0, 59.99, 60.0, np.nan]}))
    assert list(groups) == ["<30", "30–60", "30–60", ">=60", "(missing)"]
    assert report.details["pretraining_bias"]["attributes"]["age"]["by_group"].keys() == {"<30", "30–60", ">=60"}


def test_a_numeric_attribute_with_few_values_is_grouped_by_value() -> None:
    X, y = population(600)
    cfg = config({"max_counterfactual_flip_rate": 0.5}, sensitive=["rating"])
    rated = Scores(lambda f: f["rating"] == 1)
    report = evaluate_fairness(rated, X, y, cfg)
    rating = report.details["attributes"]["rating"]
    assert rating["grouping"]["kind"] == "values" and set(rating["by_group"]) == {"1", "2", "3"}
    flips = counterfactual_flip_rate(rated, X, "rating", cfg)
    # Substituted as numbers (a string would break a numeric pipeline); a selected row of rating 2
    # or 3 loses its selection when set to 1, a row of rating 1 gains one when set to 2 or 3.
    assert flips["values"] == {"1": 1, "2": 2, "3": 3}
    assert flips["flip_rate"] == pytest.approx(float((X["x"] == 0.9).mean()))


def test_an_attribute_that_cannot_be_grouped_fails_naming_what_to_set() -> None:
    X, y = population(50)
    report = evaluate_fairness(Scores(), X, y, config())  # 50 rows: no two quantile bins of 30
    assert not report.passed and report.details["requires_review"] is False
    age = next(r for r in report.reasons if r.startswith("age: "))
    assert age.startswith("age: cannot be judged: 1 of its groups hold at least 30 of the 50 holdout rows")
    assert "set gates.fairness.bins.age to fewer, wider bins" in age and "gates.fairness.min_group_size" in age
    assert "more rows" in age
    sex = next(r for r in report.reasons if r.startswith("sex: "))
    assert "cannot be judged" in sex and "lower gates.fairness.min_group_size" in sex
    assert decide(others_pass(report))[0] == "reject"
    # Explicit bins too small for the holdout: used as given, and the attribute fails the same way.
    explicit = evaluate_fairness(Scores(), X, y, config({"bins": {"age": [20, 25]}, "min_group_size": 10},
                                                         sensitive=["age"]))
    assert not explicit.passed and explicit.reasons[0].startswith("age: cannot be judged: 1 of its groups")
    assert explicit.details["attributes"]["age"]["grouping"]["labels"] == ["<20", "20–25", ">=25"]


def test_an_intersection_is_judged_like_one_more_attribute() -> None:
    X, y = population(4000, low=20, high=60)
    # Young women and older men are never selected: sex alone and age alone look balanced.
    model = Scores(lambda f: ((f["sex"] == "F") & (f["age"] < 40)) | ((f["sex"] == "M") & (f["age"] >= 40)))
    cfg = config({"bins": {"age": [40]}, "intersections": [["sex", "age"]], "demographic_parity_ratio_min": 0.8})
    report = evaluate_fairness(model, X, y, cfg)
    status = report.details["metric_status"]
    assert status["sex.demographic_parity_ratio"] == "pass" and status["age.demographic_parity_ratio"] == "pass"
    assert status["sex & age.demographic_parity_ratio"] == "fail" and not report.passed
    both = report.details["attributes"]["sex & age"]
    assert set(both["by_group"]) == {"sex=F & age=<40", "sex=F & age=>=40", "sex=M & age=<40", "sex=M & age=>=40"}
    assert both["grouping"]["attributes"] == ["sex", "age"]
    reason = next(r for r in report.reasons if "(demographic_parity_ratio)" in r)
    assert reason.split(" and ")[0] in ("sex & age: selected 0% of sex=F & age=<40",
                                        "sex & age: selected 0% of sex=M & age=>=40"), reason
    assert "sex & age.demographic_parity_ratio" in report.metrics
    # Moving a row to every other combination flips every selected row.
    selected = float((X["x"] == 0.9).mean())
    assert report.metrics["sex & age.counterfactual_flip_rate"] == pytest.approx(selected, abs=0.03)


# ---------------------------------------------------------------------------- inconclusive


def small_holdout(repeat: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    """100 F and 100 M rows (times `repeat`): 20% of F and 33% of M selected; labels 10% vs 30% positive."""
    def block(sex: str, selected: int, positive: int) -> pd.DataFrame:
        return pd.DataFrame({"x": [0.9] * selected + [0.1] * (100 - selected), "age": np.linspace(20, 70, 100),
                             "rating": 1, "sex": sex, "y": [1] * positive + [0] * (100 - positive)})
    frame = pd.concat([block("F", 20, 10), block("M", 33, 30)] * repeat, ignore_index=True)
    return frame.drop(columns="y"), frame["y"]


def test_an_inconclusive_interval_is_reviewed_by_default() -> None:
    X, y = small_holdout()
    gates = {"demographic_parity_ratio_min": 0.8}
    default = evaluate_fairness(Scores(), X, y, config(gates, sensitive=["sex"]))
    sex = default.details["attributes"]["sex"]["demographic_parity_ratio"]
    assert sex["value"] == pytest.approx(20 / 33) and sex["ci"][0] < 0.8 < sex["ci"][1]
    assert sex["status"] == "inconclusive" and default.details["metric_status"] == {
        "sex.demographic_parity_ratio": "inconclusive", "sex.demographic_parity_difference": "report only",
        "sex.counterfactual_flip_rate": "report only"}
    assert not default.passed and default.details["requires_review"] is True
    assert decide(others_pass(default))[0] == "review"
    reason = default.reasons[0]
    assert reason.startswith("sex: inconclusive: selected 20% of F and 33% of M: ratio 0.61, allowed ≥ 0.8, 95% "
                             "interval ")
    assert "(demographic_parity_ratio); the labels themselves are positive for 10% of F and 30% of M; about " in reason
    assert f"about {sex['rows_needed']:,} more holdout rows ({200 + sex['rows_needed']:,} in all)" in reason

    failing = evaluate_fairness(Scores(), X, y, config({**gates, "on_inconclusive": "fail"}, sensitive=["sex"]))
    assert not failing.passed and failing.details["requires_review"] is False
    assert decide(others_pass(failing))[0] == "reject"

    passing = evaluate_fairness(Scores(), X, y, config({**gates, "on_inconclusive": "pass"}, sensitive=["sex"]))
    assert passing.passed and passing.reasons == [] and decide(others_pass(passing)) == ("promote", [])
    assert passing.details["metric_status"]["sex.demographic_parity_ratio"] == "inconclusive"
    assert passing.details["inconclusive"] == default.reasons

    # A hard failure next to an inconclusive metric is a plain rejection, not a review.
    flips = evaluate_fairness(Scores(lambda f: f["sex"] == "F"), X, y,
                              config({**gates, "max_counterfactual_flip_rate": 0.1}, sensitive=["sex"]))
    assert flips.details["requires_review"] is False and decide(others_pass(flips))[0] == "reject"


def test_rows_needed_is_sane() -> None:
    X, y = small_holdout()
    cfg = config({"demographic_parity_ratio_min": 0.8}, sensitive=["sex"])
    entry = evaluate_fairness(Scores(), X, y, cfg).details["attributes"]["sex"]["demographic_parity_ratio"]
    value, ci, more = entry["value"], entry["ci"], entry["rows_needed"]
    assert more == int(np.ceil(200 * ((ci[1] - value) / (0.8 - value)) ** 2 - 200)) and 50 < more < 5000
    # The same rates on comfortably more rows than that are conclusive: the interval leaves the band.
    repeat = int(np.ceil(1.5 * (200 + more) / 200))
    bigger = evaluate_fairness(Scores(), *small_holdout(repeat), cfg)
    assert bigger.details["attributes"]["sex"]["demographic_parity_ratio"]["status"] == "fail"
    # The arithmetic, and the case no number of rows can settle.
    assert rows_needed(0.5, 0.3, 0.9, 0.8, 100) == 78  # 100 * (0.4 / 0.3)^2 - 100 = 77.8
    assert rows_needed(0.9, 0.7, 1.0, 0.8, 100) == 300  # the lower side: 100 * (0.2 / 0.1)^2 - 100
    assert rows_needed(0.8, 0.6, 1.0, 0.8, 100) is None


def test_regression_error_ratio_can_be_inconclusive() -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x": rng.normal(size=120), "age": 40.0, "rating": 1, "sex": np.repeat(["F", "M"], 60)})
    y = pd.Series(X["x"] + np.where(X["sex"] == "F", 1.3, 1.0) * rng.normal(size=120), name="y")
    cfg = config({"max_group_error_ratio": 1.3}, sensitive=["sex"], task="regression")
    report = evaluate_fairness(Scores(), X, y, cfg)
    entry = report.details["attributes"]["sex"]["group_error_ratio"]
    assert entry["status"] == "inconclusive" and entry["rows_needed"] > 0, entry
    assert report.details["requires_review"] is True
    assert report.reasons[0].startswith("sex: inconclusive: mean absolute error ")
    assert "allowed ≤ 1.3" in report.reasons[0] and "(group_error_ratio)" in report.reasons[0]


# ---------------------------------------------------------------------------- reasons for people


def test_equalized_odds_and_flip_reasons_name_groups_and_rates() -> None:
    # 500 F and 500 M, 200 positives each; positives selected: 40% of F, 80% of M; negatives: 10% each.
    def block(sex: str, tp: int) -> pd.DataFrame:
        return pd.DataFrame({"x": [0.9] * tp + [0.1] * (200 - tp) + [0.9] * 30 + [0.1] * 270, "age": 40.0,
                             "rating": 1, "sex": sex, "y": [1] * 200 + [0] * 300})
    frame = pd.concat([block("F", 80), block("M", 160)], ignore_index=True)
    X, y = frame.drop(columns="y"), frame["y"]
    cfg = config({"equalized_odds_difference_max": 0.1}, sensitive=["sex"])
    report = evaluate_fairness(Scores(), X, y, cfg)
    assert report.reasons == [report.reasons[0]] and report.reasons[0].startswith(
        "sex: true positive rate (positives selected) 40% for F and 80% for M, gap 0.40; false positive rate "
        "(negatives selected) 10% for F and 10% for M, gap 0.00: largest gap 0.40, allowed ≤ 0.1, 95% interval 0.")
    assert report.reasons[0].endswith("(equalized_odds_difference); the labels themselves are positive for 40% of F "
                                      "and 40% of M")
    # Changing sex alone, for a model that never selects F: the 190 selected M lose their selection
    # as F, and the 110 F it would select gain one as M: 300 of 1000 decisions flip.
    direct = evaluate_fairness(Scores(lambda f: f["sex"] == "F"), X, y,
                               config({"max_counterfactual_flip_rate": 0.1}, sensitive=["sex"]))
    assert direct.reasons == ["sex: changing sex flipped 30% of decisions (allowed ≤ 10%); most often when set to "
                              "F (19%) (counterfactual_flip_rate 0.300)"]
    assert direct.metrics["sex.counterfactual_flip_rate"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(("fairness", "sensitive", "expected"), [
    ({"bins": {"sex": [1.0]}}, None, "gates.fairness.bins: 'sex' is a categorical feature"),
    ({"bins": {"height": [1.0]}}, None, "gates.fairness.bins: 'height' is not one of sensitive_attributes"),
    ({"bins": {"x": [1.0]}}, None, "gates.fairness.bins: 'x' is not one of sensitive_attributes"),
    ({"bins": {"age": [40, 30]}}, None, "'age': edges must be strictly increasing, got [40.0, 30.0]"),
    ({"bins": {"age": [30, 30]}}, None, "'age': edges must be strictly increasing"),
    ({"bins": {"age": []}}, None, "at least 1 item"),
    ({"intersections": [["sex", "x"]]}, None, "gates.fairness.intersections: 'x' (in ['sex', 'x']) is not one of"),
    ({"intersections": [["sex"]]}, None, "at least 2 items"),
    ({"intersections": [["sex", "sex"]]}, None, "names an attribute more than once"),
    ({"on_inconclusive": "maybe"}, None, "'review', 'fail' or 'pass'"),
    ({"quantile_bins": 1}, None, "greater than or equal to 2"),
])
def test_config_errors_name_the_key(fairness: dict[str, Any], sensitive: list[str] | None, expected: str) -> None:
    with pytest.raises(ValidationError) as error:
        config(fairness, sensitive)
    assert expected in str(error.value)
    if "fairness." not in expected:  # field errors carry the key as their location
        assert any(err["loc"][:3] == ("gates", "fairness", next(iter(fairness))) for err in error.value.errors())


def test_load_config_reports_the_key(tmp_path: Path) -> None:
    raw = config().model_dump(mode="json")
    raw["gates"]["fairness"]["bins"] = {"age": [60, 40]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"gates\.fairness\.bins: 'age': edges must be strictly increasing"):
        load_config(path)


# ---------------------------------------------------------------------------- a public dataset


def diabetes_config(fairness: dict[str, Any]) -> ModelConfig:
    """scikit-learn's bundled diabetes data (442 patients): `age` in years and `sex` (1/2) are sensitive."""
    from sklearn.datasets import load_diabetes

    names = load_diabetes(scaled=False).feature_names
    return ModelConfig.model_validate({
        "name": "diabetes", "task": "regression", "data": {"source": "diabetes.csv"}, "target": {"column": "y"},
        "features": {name: {"type": "numeric"} for name in names}, "sensitive_attributes": ["age", "sex"],
        "metric": "rmse", "gates": {"fairness": {**LOOSE, "max_group_error_ratio": 1.3, **fairness}},
    })


class Shifted:
    """A fitted regressor whose predictions are pushed off by `shift` where `where(X)` holds."""

    def __init__(self, model: Any, where: Any = None, shift: float = 0.0) -> None:
        self.model, self.where, self.shift = model, where, shift

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        out = np.asarray(self.model.predict(X), dtype=float)
        return out if self.where is None else out + np.where(self.where(X), self.shift, 0.0)


def test_a_numeric_age_in_public_data_is_binned_judged_and_a_bias_against_the_old_fails() -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    X, y = load_diabetes(scaled=False, return_X_y=True, as_frame=True)
    model = LinearRegression().fit(X, y)
    cfg = diabetes_config({})
    fair = evaluate_fairness(Shifted(model), X, y.rename("y"), cfg, train=X, y_train=y)
    age = fair.details["attributes"]["age"]
    # 57 distinct ages: four quantile bins of >= 30 patients each, judged (never "not gated").
    assert age["grouping"]["kind"] == "quantile_bins" and len(age["grouping"]["labels"]) == 4, age["grouping"]
    assert fair.details["metric_status"]["age.group_error_ratio"] in ("pass", "inconclusive")
    assert fair.details["attributes"]["sex"]["grouping"]["kind"] == "values"  # 1/2: one group per value

    # The same model, 60 units off for patients of 50 and over: their error doubles, and age fails.
    biased = Shifted(model, where=lambda frame: frame["age"] >= 50, shift=60.0)
    report = evaluate_fairness(biased, X, y.rename("y"), cfg, train=X, y_train=y)
    assert report.details["metric_status"]["age.group_error_ratio"] == "fail", report.details["metric_status"]
    assert decide(others_pass(report))[0] == "reject"
    reason = next(r for r in report.reasons if r.startswith("age:"))
    assert "(group_error_ratio)" in reason and "allowed ≤ 1.3" in reason
    # The worse-served group named first is one of the bins the shift hit (lower edge >= 50).
    edges = age["grouping"]["edges"]
    shifted = [label for label, low in zip(age["grouping"]["labels"][1:], edges, strict=True) if low >= 50]
    named = reason.split(" for ")[1].split(" and ")[0]  # "age: mean absolute error 64.9 for 50–59 and ..."
    assert named in shifted, (named, shifted, reason)
