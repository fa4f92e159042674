"""LIME on the original features (explain/lime_tabular.py), the changed predictions (explain/changed.py) and
the explainability gate's LIME/SHAP agreement: synthetic data where the answer is known."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.config.monitoring import ChangedPredictionsConfig
from autopilot.explain.changed import changed_predictions
from autopilot.explain.lime_tabular import ExplainTimeout, lime_attributions, top_features
from autopilot.modeling.search_space import build_pipeline

FEATURES: dict[str, Any] = {f"x{i}": {"type": "numeric"} for i in range(6)} | {
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


def config(task: str = "binary_classification", **explainability: Any) -> ModelConfig:
    target: dict[str, Any] = {"column": "y"}
    if task == "binary_classification":
        target["positive_class"] = 1
    return ModelConfig.model_validate({
        "name": "synthetic", "task": task, "data": {"source": "unused.csv"}, "target": target,
        "features": FEATURES, "metric": "roc_auc" if task == "binary_classification" else "rmse",
        "gates": {"explainability": explainability} if explainability else {},
    })


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Independent standard normals x0..x5 and a three-level category, a few values missing."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(6)})
    out["colour"] = rng.choice(["red", "green", "blue"], size=n).astype(object)
    out.loc[out.index[:3], "x1"] = np.nan
    out.loc[out.index[3:5], "colour"] = np.nan
    return out


def fit(params: dict[str, Any], X: pd.DataFrame, cfg: ModelConfig, second: float = 0.4) -> Pipeline:
    """One dominant feature (x0), two small ones: any honest explainer ranks x0 first."""
    rng = np.random.default_rng(1)
    margin = 4.0 * X["x0"] + second * X["x1"].fillna(0.0) + 0.3 * (X["colour"] == "red")
    y = pd.Series((margin + rng.logistic(size=len(X)) > 0).astype("int64"), name="y")
    return build_pipeline(params, cfg, seed=0).fit(X, y)


@pytest.fixture(scope="module")
def linear() -> dict[str, Any]:
    cfg = config()
    X = frame(2000)
    return {"cfg": cfg, "X": X, "model": fit(LOGISTIC, X, cfg)}


def test_lime_weights_the_dominant_feature_first_seeded_and_bounded(linear: dict[str, Any]) -> None:
    cfg, X, model = linear["cfg"], linear["X"], linear["model"]
    rows = X.iloc[:8]
    found = lime_attributions(model, rows, cfg, X.iloc[100:600], num_samples=300, seed=0)
    assert list(found.values.columns) == list(cfg.features) and list(found.values.index) == list(rows.index)
    assert found.output == "probability" and found.rows == 8 and found.num_samples == 300
    np.testing.assert_allclose(found.scores, model.predict_proba(rows)[:, 1], atol=1e-12)
    firsts = [top_features(found.values.loc[i].to_dict(), 1)[0] for i in rows.index]
    assert firsts.count("x0") >= 7, firsts
    assert any("x1: a missing value was perturbed" in note for note in found.notes)  # rows 0-2 miss x1
    again = lime_attributions(model, rows.iloc[3:5], cfg, X.iloc[100:600], num_samples=300, seed=0)
    pd.testing.assert_frame_equal(again.values, found.values.iloc[3:5])  # per-row seed: order does not matter
    with pytest.raises(ExplainTimeout, match="budget"):
        lime_attributions(model, X.iloc[:50], cfg, X.iloc[100:600], num_samples=5000, seed=0, timeout_seconds=0.01)
    with pytest.raises(ValueError, match="background"):
        lime_attributions(model, rows, cfg, X.iloc[:1], num_samples=300)


def test_lime_explains_a_categorical_by_its_values_and_regression_and_trees(linear: dict[str, Any]) -> None:
    cfg = config("regression")
    X = frame(1500, seed=3)
    y = 3.0 * (X["colour"] == "red") + 0.1 * X["x0"]
    model = build_pipeline(HGB, cfg, seed=0).fit(X, y)
    rows = X[X["colour"] == "red"].iloc[:4]
    found = lime_attributions(model, rows, cfg, X, num_samples=300, seed=0,
                              categories={"colour": ["blue", "green", "red", "purple"]})
    assert found.output == "prediction"
    assert all(top_features(found.values.loc[i].to_dict(), 1) == ["colour"] for i in rows.index)
    assert (found.values["colour"] > 1.0).all()  # being red is worth about +3


def test_changed_predictions_name_the_shifted_feature(linear: dict[str, Any]) -> None:
    cfg, X, model = linear["cfg"], linear["X"], linear["model"]
    window = frame(400, seed=7)
    window["x0"] = window["x0"] + 2.5  # one feature shifted; everything else as in the reference
    start = time.perf_counter()
    found = changed_predictions(model, cfg, X, window, ChangedPredictionsConfig(top_n=5, sample_rows=300,
                                                                                lime_num_samples=200))
    assert time.perf_counter() - start < 10
    assert found["sampled_rows"] == 300 and found["reference_rows"] == 2000 and len(found["rows"]) == 5
    changes = [abs(r["change"]) for r in found["rows"]]
    assert changes == sorted(changes, reverse=True) and changes[-1] > 0.2
    # The nearest neighbour matches x0 too, so other features may differ more in standardized units; what
    # moved every listed score is x0 (SHAP of the window row minus SHAP of its pair), and the report says so.
    assert found["drivers"] == [{"feature": "x0", "rows": 5}]
    assert found["shift"]["top_features"][0] == "x0" and found["shift"]["pairs"] == 300
    for row in found["rows"]:
        assert "x0" in [d["feature"] for d in row["differing"]], row["differing"]
        assert row["driver"] == "x0" and top_features(row["shap_change"], 1) == ["x0"], row["shap_change"]
        assert top_features(row["lime"], 1) == ["x0"], row["lime"]
        assert row["change"] == pytest.approx(row["score_window"] - row["score_reference"])
        assert set(row["shap"]) == set(cfg.features) and row["distance"] >= 0
    # Off when top_n is 0 is the caller's (monitoring/changed.py); an empty window is refused here.
    with pytest.raises(ValueError, match="window and reference rows"):
        changed_predictions(model, cfg, X, window.iloc[:0], ChangedPredictionsConfig())


def test_lime_and_shap_agree_on_a_linear_model_and_the_gate_reports_it(linear: dict[str, Any]) -> None:
    from autopilot.explain import explain_model
    from autopilot.gates.explainability import evaluate_explainability, lime_shap_agreement, measure_lime_agreement

    cfg = config(top_k=2, lime_rows=15, lime_num_samples=300, max_rows=200, max_feature_share=1.0)
    X = linear["X"]
    model = fit(LOGISTIC, X, cfg, second=2.0)  # x0 first, x1 a clear second, the rest (nearly) nothing
    holdout = frame(300, seed=11)
    shap = explain_model(model, holdout, X, cfg, seed=0)
    start = time.perf_counter()
    agreement = measure_lime_agreement(model, shap, holdout, X, cfg, seed=0)
    assert time.perf_counter() - start < 5  # bounded: 15 rows x 300 samples
    assert agreement is not None and agreement["rows"] == 15 and agreement["k"] == 2
    # Random top-2 sets of 7 features overlap by about 0.2; near x0's mean x1 leads, so top-1 may differ there.
    assert agreement["mean_jaccard"] >= 0.75 and agreement["top1_agreement"] >= 0.6, agreement
    rows = shap.values.iloc[:15]
    reversed_ = rows.rename(columns=dict(zip(rows.columns, rows.columns[::-1], strict=True)))
    assert lime_shap_agreement(rows, reversed_, 2)["mean_jaccard"] < 0.3  # the measure can tell disagreement
    report = evaluate_explainability(shap, None, cfg, sensitive=[], lime_agreement=agreement)
    assert report.passed and report.details["lime_agreement"]["mean_jaccard"] == agreement["mean_jaccard"]
    assert report.thresholds["min_lime_agreement"] is None  # report-only by default

    strict = config(top_k=2, max_rows=200, max_feature_share=1.0, min_lime_agreement=0.9)
    low = {**agreement, "mean_jaccard": 0.4}
    failed = evaluate_explainability(shap, None, strict, sensitive=[], lime_agreement=low)
    assert not failed.passed and any("LIME and SHAP disagree" in r and "0.400 < 0.9" in r for r in failed.reasons)
    unmeasured = evaluate_explainability(shap, None, strict, sensitive=[], lime_agreement={"error": "boom"})
    assert not unmeasured.passed and "could not be measured: boom" in unmeasured.reasons[-1]
    assert measure_lime_agreement(model, shap, holdout, X, config(lime_rows=0), seed=0) is None
