"""The exact linear SHAP path: closed-form values, local accuracy, one-hot groups, path choice, budget.

Synthetic data with independent features, so interventional SHAP of a linear margin is known in
closed form: coef_j * (z_j - mean of z_j over the background), summed per original column.
No permutation explainer runs here (its numba warm-up alone takes seconds); the fallback to it
is tested in test_gate_explainability.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.explain import PILOT_ROWS, explain_model, shap_attributions
from autopilot.gates.explainability import evaluate_explainability
from autopilot.modeling.search_space import build_pipeline

FEATURES: dict[str, Any] = {"x0": {"type": "numeric"}, "x1": {"type": "numeric"}, "x2": {"type": "numeric"},
                            "colour": {"type": "categorical", "categories": ["blue", "green", "red"]}}
LOGISTIC = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard",
            "prep.cat_impute": "most_frequent", "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0,
            "linear.C": 1.0}
HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 30, "hgb.max_leaf_nodes": 15,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _config(task: str = "binary_classification", **explainability: Any) -> ModelConfig:
    target: dict[str, Any] = {"column": "y"}
    if task == "binary_classification":
        target["positive_class"] = 1
    return ModelConfig.model_validate({
        "name": "synthetic", "task": task, "data": {"source": "unused.csv"}, "target": target,
        "features": FEATURES, "metric": "roc_auc" if task == "binary_classification" else "rmse",
        "gates": {"explainability": explainability} if explainability else {},
    })


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Independent features: three normals and a three-level category, with a few missing values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x0": rng.normal(size=n),
        "x1": rng.normal(loc=2.0, scale=3.0, size=n),
        "x2": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n).astype(object),
    })
    frame.loc[frame.index[:5], "x1"] = np.nan
    frame.loc[frame.index[5:8], "colour"] = np.nan
    return frame


@pytest.fixture(scope="module")
def logistic() -> dict[str, Any]:
    cfg = _config()
    X = _frame(2000)
    rng = np.random.default_rng(1)
    margin = 2.0 * X["x0"] - 0.3 * X["x1"].fillna(2.0) + 1.0 * (X["colour"] == "red")
    y = pd.Series((margin + rng.logistic(size=len(X)) > 0).astype("int64"), name="y")
    model = build_pipeline(LOGISTIC, cfg, seed=0).fit(X, y)
    return {"cfg": cfg, "X": X, "y": y, "model": model, "background": X.sample(50, random_state=2)}


def _expected(model: Pipeline, rows: pd.DataFrame, background: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """coef * (z - background mean of z), summed per original column by the transformed names."""
    preprocess, estimator = model[0], model[-1]
    delta = preprocess.transform(rows) - preprocess.transform(background).mean(axis=0)
    per_column = delta * np.ravel(estimator.coef_)
    names = [str(n) for n in preprocess.get_feature_names_out()]
    out = {}
    for feature in cfg.features:
        columns = [i for i, name in enumerate(names)
                   if name == f"num__{feature}" or name.startswith(f"cat__{feature}_")]
        assert columns, feature
        out[feature] = per_column[:, columns].sum(axis=1)
    return pd.DataFrame(out, index=rows.index)


def test_logistic_attributions_are_exact_and_locally_accurate(logistic: dict[str, Any]) -> None:
    cfg, model, X, background = logistic["cfg"], logistic["model"], logistic["X"], logistic["background"]
    attr = shap_attributions(model, X, cfg, background=background)
    assert attr.method == "linear" and attr.output == "log_odds" and attr.background_rows == 50
    assert "LogisticRegression" in attr.path_reason
    assert list(attr.values.columns) == list(cfg.features) and attr.values.index.equals(X.index)
    expected = _expected(model, X, background, cfg)
    np.testing.assert_allclose(attr.values.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    # Local accuracy: attributions + expected value = the model's log-odds, row by row.
    margin = model.decision_function(X)
    np.testing.assert_allclose(attr.values.sum(axis=1).to_numpy() + attr.base_value, margin, rtol=0, atol=1e-9)
    proba = model.predict_proba(X)[:, 1]
    np.testing.assert_allclose(attr.values.sum(axis=1).to_numpy() + attr.base_value, np.log(proba / (1 - proba)),
                               atol=1e-8)
    # The expected value is the mean margin over the background rows.
    assert attr.base_value == pytest.approx(float(model.decision_function(background).mean()), abs=1e-12)
    assert attr.additivity_error is not None and attr.additivity_error < 1e-12
    ranked = sorted(attr.importance(), key=lambda name: -attr.importance()[name])
    assert ranked[0] == "x0" and ranked[-1] == "x2"  # x2 plays no part in the label


def test_one_hot_group_sums_back_to_its_column(logistic: dict[str, Any]) -> None:
    cfg, model, background = logistic["cfg"], logistic["model"], logistic["background"]
    colours = ["red", "green", "blue", "purple"]
    rows = pd.DataFrame({"x0": 0.0, "x1": 2.0, "x2": 0.0, "colour": pd.Series(colours, dtype=object)})
    attr = shap_attributions(model, rows, cfg, background=background)
    preprocess, coef = model[0], np.ravel(model[-1].coef_)
    block = preprocess.output_indices_["cat"]
    assert block.stop - block.start == 3  # three transformed columns, one original feature
    share = preprocess.transform(background)[:, block].mean(axis=0)  # the background's colour shares
    weights = coef[block]
    hot = {"blue": np.eye(3)[0], "green": np.eye(3)[1], "red": np.eye(3)[2], "purple": np.zeros(3)}  # sorted
    for i, colour in enumerate(colours):  # an unseen colour is all zeros in the one-hot block
        assert attr.values["colour"].iloc[i] == pytest.approx(float(weights @ (hot[colour] - share)), abs=1e-12)
    assert attr.values["colour"].iloc[0] > attr.values["colour"].iloc[1]  # red raised the label
    np.testing.assert_allclose(attr.values[["x0", "x2"]].to_numpy(), 0.0, atol=0.3)  # near the background means


def test_regression_recovers_the_true_effects() -> None:
    cfg = _config("regression")
    X = _frame(1500).dropna().reset_index(drop=True)
    y = 2.0 * X["x0"] - 3.0 * X["x1"] + 1.5 * (X["colour"] == "red") + 4.0
    params = {**LOGISTIC, "linear.alpha": 1e-9}
    params.pop("linear.C")
    model = build_pipeline(params, cfg, seed=0).fit(X, y)
    background = X.iloc[:100]
    attr = shap_attributions(model, X.iloc[100:400], cfg, background=background)
    assert attr.method == "linear" and attr.output == "prediction" and "Ridge" in attr.path_reason
    rows = X.iloc[100:400]
    # Noise-free y: the attributions are the true effects measured from the background means.
    np.testing.assert_allclose(attr.values["x0"], 2.0 * (rows["x0"] - background["x0"].mean()), atol=1e-6)
    np.testing.assert_allclose(attr.values["x1"], -3.0 * (rows["x1"] - background["x1"].mean()), atol=1e-6)
    red = (rows["colour"] == "red").astype(float) - (background["colour"] == "red").mean()
    np.testing.assert_allclose(attr.values["colour"], 1.5 * red, atol=1e-6)
    np.testing.assert_allclose(attr.values["x2"], 0.0, atol=1e-6)
    np.testing.assert_allclose(attr.values.sum(axis=1) + attr.base_value, model.predict(rows), atol=1e-9)


def test_the_path_follows_the_family(logistic: dict[str, Any]) -> None:
    cfg, X, y = logistic["cfg"], logistic["X"], logistic["y"]
    hgb = build_pipeline(HGB, cfg, seed=0).fit(X, y)
    tree = shap_attributions(hgb, X.iloc[:20], cfg, background=logistic["background"])
    assert tree.method == "tree" and "HistGradientBoostingClassifier" in tree.path_reason
    assert shap_attributions(logistic["model"], X.iloc[:20], cfg).method == "linear"
    with pytest.raises(ValueError, match="linear path cannot explain.*HistGradientBoostingClassifier"):
        shap_attributions(hgb, X.iloc[:5], cfg, background=logistic["background"], method="linear")
    forced = shap_attributions(logistic["model"], X.iloc[:5], cfg, background=logistic["background"], method="linear")
    assert forced.method == "linear" and forced.path_reason == "requested"


def test_two_thousand_rows_take_well_under_a_second(logistic: dict[str, Any]) -> None:
    attr = shap_attributions(logistic["model"], logistic["X"], logistic["cfg"], background=logistic["background"])
    assert attr.rows == 2000
    assert attr.seconds < 1.0  # measured ~0.01 s; the permutation path takes ~0.05-0.5 s per row


def test_explain_model_keeps_the_budget_on_the_linear_path(logistic: dict[str, Any]) -> None:
    X, model = logistic["X"], logistic["model"]
    bounded = explain_model(model, X.iloc[:1000], X.iloc[1000:], _config(max_rows=300, background_rows=12), seed=1)
    assert bounded.method == "linear" and bounded.rows == 300 and bounded.background_rows == 12
    assert set(bounded.values.index) <= set(X.index[:1000])
    np.testing.assert_allclose(bounded.values.sum(axis=1) + bounded.base_value,
                               model.decision_function(X.loc[bounded.values.index]), atol=1e-9)
    starved = explain_model(model, X.iloc[:1000], X.iloc[1000:], _config(max_rows=300, max_seconds=1e-9), seed=1)
    assert starved.method == "linear" and starved.rows == PILOT_ROWS  # set-up alone spent the budget


def test_gate_report_says_which_path_ran_and_why(logistic: dict[str, Any]) -> None:
    cfg = _config(max_feature_share=0.9)  # x0 carries ~0.6 by construction; that is not leakage here
    attr = shap_attributions(logistic["model"], logistic["X"].iloc[:200], cfg, background=logistic["background"])
    report = evaluate_explainability(attr, None, cfg)
    assert report.metrics["method"] == "linear" and report.metrics["output"] == "log_odds"
    assert report.details["path_reason"].startswith("exact linear SHAP")
    assert report.passed, report.reasons
