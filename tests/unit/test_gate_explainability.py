"""The explainability gate: SHAP on original features (tree, linear and permutation paths), nDCG, the gate."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.explain import (
    PILOT_ROWS,
    Attributions,
    explain_model,
    ndcg_at_k,
    shap_attributions,
    write_plots,
)
from autopilot.gates.explainability import evaluate_explainability
from autopilot.modeling.search_space import MISSING_CATEGORY, build_pipeline
from autopilot.modeling.splits import encode_target
from tests.helpers import adult_config_dict

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "prep.min_frequency": 0.0,
       "hgb.learning_rate": 0.1, "hgb.max_iter": 60, "hgb.max_leaf_nodes": 15, "hgb.min_samples_leaf": 20,
       "hgb.l2_regularization": 0.0}
RF = {"family": "random_forest", "prep.num_impute": "median", "prep.cat_impute": "most_frequent",
      "rf.cat_encoding": "ordinal", "prep.min_frequency": 0.0, "rf.n_estimators": 30, "rf.max_depth": 6,
      "rf.min_samples_leaf": 5, "rf.max_features": 0.5}
LIGHTGBM = {"family": "lightgbm", "prep.cat_impute": "constant", "prep.min_frequency": 0.0,
            "lgbm.learning_rate": 0.1, "lgbm.n_estimators": 60, "lgbm.num_leaves": 15, "lgbm.min_child_samples": 20,
            "lgbm.colsample_bytree": 0.7, "lgbm.reg_lambda": 0.0, "lgbm.min_data_per_group": 20,
            "lgbm.cat_smooth": 5.0}
LINEAR = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard",
          "prep.cat_impute": "most_frequent", "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0,
          "linear.C": 1.0}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: small fits are dominated by thread start-up on a busy machine."""
    with threadpool_limits(limits=1):
        yield


def _config(**gates: Any) -> ModelConfig:
    return ModelConfig.model_validate(adult_config_dict(gates={"explainability": gates} if gates else {}))


@pytest.fixture(scope="module")
def adult(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, Any]:
    cfg = _config()
    train = canonicalize(adult_frames[0].sample(3000, random_state=0).reset_index(drop=True), cfg)
    test = canonicalize(adult_frames[1].sample(300, random_state=0).reset_index(drop=True), cfg)
    features = list(cfg.features)
    return {"cfg": cfg, "X": train[features], "y": encode_target(train, cfg), "X_test": test[features]}


def _fit(params: dict[str, Any], adult: dict[str, Any], **extra: Any) -> Pipeline:
    return build_pipeline({**params, **extra}, adult["cfg"], seed=0).fit(adult["X"], adult["y"])


def _naive_bayes(adult: dict[str, Any]) -> Pipeline:
    """The linear family's preprocessing with a model neither exact path explains."""
    preprocess = clone(build_pipeline(LINEAR, adult["cfg"], seed=0)[0])
    return Pipeline([("preprocess", preprocess), ("model", GaussianNB())]).fit(adult["X"], adult["y"])


def _onehot_hgb(cfg: ModelConfig) -> Pipeline:
    encode = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                       ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", sparse_output=False))])
    preprocess = ColumnTransformer([("num", "passthrough", cfg.numeric_features),
                                    ("cat", encode, cfg.categorical_features)], sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess),
                     ("model", HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0))])


def _synthetic(n: int = 1500, leak: bool = False, seed: int = 0) -> tuple[ModelConfig, pd.DataFrame, pd.Series]:
    """x0 decides the label (plus a little of x1 and a category); with `leak`, a noisy copy of y."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x0": rng.normal(size=n),
        "x1": rng.normal(size=n),
        "x2": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n).astype(object),
    })
    margin = 3.0 * frame["x0"] + 0.5 * frame["x1"] + 0.3 * (frame["colour"] == "red")
    y = pd.Series((margin + rng.logistic(size=n) * 0.5 > 0).astype("int64"), name="y")
    features: dict[str, Any] = {"x0": {"type": "numeric"}, "x1": {"type": "numeric"}, "x2": {"type": "numeric"},
                                "colour": {"type": "categorical", "categories": ["blue", "green", "red"]}}
    if leak:
        frame["leak"] = y + rng.normal(scale=0.01, size=n)
        features["leak"] = {"type": "numeric"}
    cfg = ModelConfig.model_validate({
        "name": "synthetic", "task": "binary_classification", "data": {"source": "unused.csv"},
        "target": {"column": "y", "positive_class": 1}, "features": features, "metric": "roc_auc",
        "sensitive_attributes": ["colour"],
    })
    return cfg, frame, y


def _attr(importance: dict[str, float], rows: int = 20, method: str = "tree") -> Attributions:
    """Attributions whose mean |SHAP| per feature is exactly `importance` (alternating signs)."""
    signs = np.where(np.arange(rows) % 2 == 0, 1.0, -1.0)
    values = pd.DataFrame({name: signs * value for name, value in importance.items()})
    return Attributions(values=values, base_value=-1.0, method=method, rows=rows, seconds=0.1, output="log_odds")


def _additive(attr: Attributions, output: np.ndarray, tol: float) -> None:
    np.testing.assert_allclose(attr.values.sum(axis=1).to_numpy() + attr.base_value, output, atol=tol)


# ---------------------------------------------------------------------------- tree path


@pytest.mark.parametrize("encoding", ["native", "target", "onehot"])
def test_tree_path_on_hgb_gives_additive_values_per_original_feature(adult: dict[str, Any], encoding: str) -> None:
    cfg = adult["cfg"]
    if encoding == "onehot":
        model = _onehot_hgb(cfg).fit(adult["X"], adult["y"])
        assert model[0].transform(adult["X_test"].iloc[:1]).shape[1] > len(cfg.features)  # several columns/feature
    else:
        model = _fit(HGB, adult, **{"hgb.cat_encoding": encoding})
    X = adult["X_test"].iloc[:200]
    attr = shap_attributions(model, X, cfg)
    assert attr.method == "tree" and attr.output == "log_odds" and attr.rows == 200
    assert list(attr.values.columns) == list(cfg.features)
    assert attr.values.index.equals(X.index)
    assert np.isfinite(attr.values.to_numpy()).all()
    # Additivity against the model's own log-odds (shap's built-in HGB converter misses it by
    # several log-odds with native categoricals; ours must not).
    _additive(attr, model.decision_function(X), tol=1e-6)
    assert attr.additivity_error is not None and attr.additivity_error < 1e-9
    assert sum(attr.shares().values()) == pytest.approx(1.0)
    top = max(attr.importance(), key=attr.importance().__getitem__)
    assert top in {"marital_status", "relationship", "capital_gain", "age", "education_num"}


@pytest.mark.parametrize("encoding", ["native", "target"])
def test_tree_path_on_lightgbm_uses_its_own_treeshap_additively(adult: dict[str, Any], encoding: str) -> None:
    """LightGBM (categorical splits included with `native`) is explained exactly, in log-odds."""
    cfg = adult["cfg"]
    model = _fit(LIGHTGBM, adult, **{"lgbm.cat_encoding": encoding})
    X = adult["X_test"].iloc[:200]
    attr = shap_attributions(model, X, cfg)
    assert attr.method == "tree" and attr.output == "log_odds" and attr.rows == 200
    assert list(attr.values.columns) == list(cfg.features)
    _additive(attr, model[-1].predict(model[0].transform(X), raw_score=True), tol=1e-6)
    assert attr.additivity_error is not None and attr.additivity_error < 1e-9
    top = max(attr.importance(), key=attr.importance().__getitem__)
    assert top in {"marital_status", "relationship", "capital_gain", "age", "education_num"}


def test_tree_path_on_random_forest_takes_the_positive_class(adult: dict[str, Any]) -> None:
    model = _fit(RF, adult)
    X = adult["X_test"].iloc[:100]
    attr = shap_attributions(model, X, adult["cfg"], method="tree")
    assert attr.output == "probability"
    assert list(attr.values.columns) == list(adult["cfg"].features)
    assert np.isfinite(attr.values.to_numpy()).all()
    _additive(attr, model.predict_proba(X)[:, 1], tol=1e-4)
    assert 0.0 < attr.base_value < 1.0


REGRESSION = {
    "hist_gradient_boosting": {"prep.cat_impute": "constant", "hgb.cat_encoding": "native", "prep.min_frequency": 0.0,
                               "hgb.learning_rate": 0.1, "hgb.max_iter": 30, "hgb.max_leaf_nodes": 15,
                               "hgb.min_samples_leaf": 10, "hgb.l2_regularization": 0.0},
    "extra_trees": {"prep.num_impute": "mean", "prep.cat_impute": "most_frequent", "et.cat_encoding": "target",
                    "et.n_estimators": 10, "et.max_depth": 5, "et.min_samples_leaf": 3, "et.max_features": 0.5},
    "linear": {"prep.num_impute": "mean", "prep.scaling": "standard", "prep.cat_impute": "constant",
               "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0, "linear.alpha": 1.0},
    "lightgbm": {"prep.cat_impute": "constant", "lgbm.cat_encoding": "native", "prep.min_frequency": 0.0,
                 "lgbm.learning_rate": 0.1, "lgbm.n_estimators": 30, "lgbm.num_leaves": 15,
                 "lgbm.min_child_samples": 10, "lgbm.colsample_bytree": 1.0, "lgbm.reg_lambda": 0.0,
                 "lgbm.min_data_per_group": 5, "lgbm.cat_smooth": 1.0},
}


@pytest.mark.parametrize("family", list(REGRESSION))
def test_regression_attributions_add_up_to_the_prediction(family: str) -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400),
                      "c": rng.choice(["x", "y", "z"], size=400).astype(object)})
    X.loc[:10, "c"] = np.nan
    y = 2 * X["a"] + (X["c"] == "x") + rng.normal(scale=0.1, size=400)
    cfg = ModelConfig.model_validate({
        "name": "reg", "task": "regression", "data": {"source": "unused.csv"}, "target": {"column": "y"},
        "features": {"a": {"type": "numeric"}, "b": {"type": "numeric"}, "c": {"type": "categorical"}},
        "metric": "rmse"})
    model = build_pipeline({"family": family, **REGRESSION[family]}, cfg, seed=0).fit(X, y)
    attr = shap_attributions(model, X.iloc[:6], cfg, background=X.iloc[-10:])
    assert attr.method == ("linear" if family == "linear" else "tree") and attr.output == "prediction"
    assert list(attr.values.columns) == ["a", "b", "c"]
    _additive(attr, model.predict(X.iloc[:6]), tol=1e-6)
    assert max(attr.importance(), key=attr.importance().__getitem__) == "a"


def test_method_is_validated(adult: dict[str, Any]) -> None:
    linear = _fit(LINEAR, adult)
    with pytest.raises(ValueError, match="unknown SHAP method"):
        shap_attributions(linear, adult["X_test"].iloc[:5], adult["cfg"], method="magic")
    with pytest.raises(ValueError, match="tree path"):
        shap_attributions(linear, adult["X_test"].iloc[:5], adult["cfg"], method="tree")
    with pytest.raises(ValueError, match="no rows"):
        shap_attributions(linear, adult["X_test"].iloc[:0], adult["cfg"])


# ---------------------------------------------------------------------------- permutation path


def test_permutation_path_explains_the_whole_pipeline_on_strings_with_nan(adult: dict[str, Any]) -> None:
    cfg = adult["cfg"]
    model = _fit(LINEAR, adult)
    X = adult["X_test"].iloc[:8].copy()
    X.loc[X.index[0], "occupation"] = np.nan
    X.loc[X.index[1], "workclass"] = "Never-seen-before"  # unknown category: coded, decoded, ignored by one-hot
    background = adult["X"].sample(15, random_state=1)
    background.loc[background.index[0], "workclass"] = np.nan  # missing values in the masker's data too
    state = np.random.get_state()[1].copy()
    attr = shap_attributions(model, X, cfg, background=background, method="permutation")
    assert np.array_equal(np.random.get_state()[1], state)  # shap's global seeding stays inside
    assert attr.method == "permutation" and attr.output == "log_odds" and attr.background_rows == 15
    assert list(attr.values.columns) == list(cfg.features)
    assert np.isfinite(attr.values.to_numpy()).all()
    proba = np.clip(model.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
    _additive(attr, np.log(proba / (1 - proba)), tol=1e-6)

    # A logistic regression is additive in log-odds over the original features, so interventional
    # SHAP is exact: sum over a feature's transformed columns of w * (x - mean of the background).
    preprocess, estimator = model[0], model[-1]
    delta = preprocess.transform(X) - preprocess.transform(background).mean(axis=0)
    contributions = delta * estimator.coef_[0]
    for name in cfg.features:
        block = preprocess.output_indices_["num" if name in cfg.numeric_features else "cat"]
        names = preprocess.get_feature_names_out()[block]
        columns = [block.start + i for i, out in enumerate(names)
                   if out == f"num__{name}" or out.startswith(f"cat__{name}_")]
        np.testing.assert_allclose(attr.values[name], contributions[:, columns].sum(axis=1), atol=1e-6)
    # The exact linear path computes these same values in closed form from the same background.
    exact = shap_attributions(model, X, cfg, background=background)
    assert exact.method == "linear" and exact.background_rows == 15
    np.testing.assert_allclose(exact.values.to_numpy(), attr.values.to_numpy(), atol=1e-6)
    assert exact.base_value == pytest.approx(attr.base_value, abs=1e-6)


def test_permutation_path_is_reproducible(adult: dict[str, Any]) -> None:
    model = _fit(LINEAR, adult)
    X, background = adult["X_test"].iloc[:3], adult["X"].iloc[:10]
    first = shap_attributions(model, X, adult["cfg"], background=background, method="permutation", seed=3)
    again = shap_attributions(model, X, adult["cfg"], background=background, method="permutation", seed=3)
    pd.testing.assert_frame_equal(first.values, again.values)


def test_a_multiclass_linear_model_is_explained_exactly_per_class() -> None:
    """Issue 16: a multinomial logistic regression has one linear margin per class, so the exact
    linear path explains every class (it used to fall back to the permutation path)."""
    cfg, X, y = _synthetic(n=600)
    three = pd.Series(np.digitize(X["x0"], [-0.5, 0.5]), name="y")
    model = build_pipeline(LINEAR, cfg, seed=0).fit(X, three)
    attr = shap_attributions(model, X.iloc[:3], cfg, background=X.iloc[-10:])
    assert attr.method == "linear" and attr.output == "margin" and attr.classes == ("0", "1", "2")
    assert attr.class_values is not None and attr.class_values.shape == (3, len(cfg.features), 3)
    assert attr.additivity_error is not None and attr.additivity_error < 1e-9
    binary = build_pipeline(LINEAR, cfg, seed=0).fit(X, y)
    assert shap_attributions(binary, X.iloc[:3], cfg, background=X.iloc[-10:]).classes == ()


def test_tree_and_permutation_paths_agree_on_the_dominant_feature() -> None:
    cfg, X, y = _synthetic()
    model = build_pipeline({**HGB, "hgb.cat_encoding": "native"}, cfg, seed=0).fit(X, y)
    rows, background = X.iloc[:12], X.iloc[-15:]
    tree = shap_attributions(model, rows, cfg, method="tree")
    agnostic = shap_attributions(model, rows, cfg, background=background, method="permutation")
    for attr in (tree, agnostic):
        importance = attr.importance()
        assert max(importance, key=importance.__getitem__) == "x0"
        assert attr.shares()["x0"] > 0.5
    assert ndcg_at_k(tree.importance(), agnostic.importance(), 2) > 0.9


# ---------------------------------------------------------------------------- bounds


def test_explain_model_respects_row_and_background_bounds(adult: dict[str, Any]) -> None:
    cfg = _config(max_rows=25, background_rows=12)
    hgb = _fit(HGB, adult, **{"hgb.cat_encoding": "native"})
    attr = explain_model(hgb, adult["X_test"], adult["X"], cfg, seed=1)
    assert attr.method == "tree" and attr.rows == 25 and len(attr.values) == 25
    assert set(attr.values.index) <= set(adult["X_test"].index)
    assert attr.values.index.is_unique
    again = explain_model(hgb, adult["X_test"], adult["X"], cfg, seed=1)
    assert again.values.index.equals(attr.values.index)  # the sample is seeded

    linear = _fit(LINEAR, adult)
    exact = explain_model(linear, adult["X_test"], adult["X"], cfg, seed=1)
    assert exact.method == "linear" and exact.background_rows == 12 and exact.rows == 25

    agnostic = explain_model(_naive_bayes(adult), adult["X_test"], adult["X"], cfg, seed=1)
    assert agnostic.method == "permutation" and agnostic.background_rows == 12 and agnostic.rows == 25
    assert agnostic.path_reason.startswith("model-agnostic") and "GaussianNB" in agnostic.path_reason


def test_explain_model_shrinks_rows_to_the_time_budget(adult: dict[str, Any]) -> None:
    cfg = _config(max_rows=200, background_rows=10, max_seconds=0.01)
    attr = explain_model(_naive_bayes(adult), adult["X_test"], adult["X"], cfg)
    assert attr.method == "permutation"
    assert attr.rows == PILOT_ROWS  # the timed first batch alone already spends the budget
    assert np.isfinite(attr.values.to_numpy()).all()


# ---------------------------------------------------------------------------- nDCG


def test_ndcg_identical_reversed_and_a_known_value() -> None:
    reference = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert ndcg_at_k(reference, reference, 3) == pytest.approx(1.0)
    assert ndcg_at_k(reference, {"a": 30.0, "b": 2.5, "c": 0.1}, 3) == pytest.approx(1.0)  # only order counts
    assert ndcg_at_k(reference, {"a": 1.0, "b": 2.0, "c": 3.0}, 3) < 1.0
    # DCG = 2/1 + 3/log2(3), IDCG = 3/1 + 2/log2(3)
    expected = (2 + 3 / math.log2(3)) / (3 + 2 / math.log2(3))
    assert ndcg_at_k(reference, {"b": 5.0, "a": 4.0, "c": 1.0}, 2) == pytest.approx(expected)
    assert expected == pytest.approx(0.9134, abs=1e-4)


def test_ndcg_edges() -> None:
    reference = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert ndcg_at_k(reference, reference, 10) == pytest.approx(1.0)  # k capped at the feature count
    assert ndcg_at_k(reference, {"d": 9.0, "a": 1.0}, 1) == 0.0  # the candidate's top feature has no relevance
    assert math.isnan(ndcg_at_k({"a": 0.0, "b": 0.0}, reference, 2))
    with pytest.raises(ValueError):
        ndcg_at_k(reference, reference, 0)


# ---------------------------------------------------------------------------- the gate


def test_gate_passes_and_reports_shares_and_sensitive_share() -> None:
    cfg = _config()
    importance = {name: float(i + 1) for i, name in enumerate(cfg.features)}
    report = evaluate_explainability(_attr(importance), _attr(importance), cfg)
    assert report.passed, report.reasons
    metrics = report.metrics
    total = sum(importance.values())
    assert metrics["ndcg_at_k"] == pytest.approx(1.0)
    assert metrics["sensitive_share"] == pytest.approx((importance["sex"] + importance["race"]) / total)
    assert [item["feature"] for item in metrics["top_features"]] == list(cfg.features)[::-1][:5]
    assert metrics["method"] == "tree" and metrics["rows"] == 20
    json.dumps(report.model_dump())
    custom = evaluate_explainability(_attr(importance), None, cfg, sensitive=["age"])
    assert custom.metrics["sensitive_share"] == pytest.approx(1 / total) and custom.metrics["ndcg_at_k"] is None


def test_gate_fails_on_a_leaked_target_copy() -> None:
    cfg, X, y = _synthetic(leak=True)
    model = build_pipeline({**HGB, "hgb.cat_encoding": "native"}, cfg, seed=0).fit(X, y)
    attr = shap_attributions(model, X.iloc[:200], cfg)
    report = evaluate_explainability(attr, None, cfg)
    assert not report.passed
    assert attr.shares()["leak"] > 0.5
    assert any("leakage" in r and "'leak'" in r for r in report.reasons), report.reasons
    assert report.metrics["max_share_feature"] == "leak"
    json.dumps(report.model_dump())


def test_gate_fails_when_the_ranking_moves_against_the_champion() -> None:
    cfg = _config()
    names = list(cfg.features)
    champion = _attr({name: float(len(names) - i) for i, name in enumerate(names)})
    challenger = _attr({name: float(i + 1) for i, name in enumerate(names)})
    report = evaluate_explainability(challenger, champion, cfg)
    assert not report.passed
    assert report.metrics["ndcg_at_k"] < 0.9
    assert any("nDCG@5" in r and "champion top-5" in r for r in report.reasons), report.reasons
    assert report.details["champion_top_features"][0]["feature"] == names[0]
    json.dumps(report.model_dump())


@pytest.mark.parametrize("case", ["nan", "inf", "zero_rows", "all_zero", "nan_base", "not_additive"])
def test_gate_fails_closed_on_unusable_attributions(case: str) -> None:
    cfg = _config()
    good = _attr({name: 1.0 for name in cfg.features})
    values = good.values.copy()
    fields: dict[str, Any] = {}
    if case == "nan":
        values.iloc[3, 2] = np.nan
    elif case == "inf":
        values.iloc[0, 0] = np.inf
    elif case == "zero_rows":
        values = values.iloc[:0]
    elif case == "all_zero":
        values[:] = 0.0
    elif case == "nan_base":
        fields["base_value"] = math.nan
    else:
        fields["additivity_error"] = 0.5
    bad = Attributions(values=values, base_value=fields.get("base_value", -1.0), method="tree",
                       rows=len(values), seconds=0.1, additivity_error=fields.get("additivity_error"))
    report = evaluate_explainability(bad, None, cfg)
    assert not report.passed and report.reasons
    json.dumps(report.model_dump())
    # A broken champion fails the comparison too (fail closed), naming the champion.
    against = evaluate_explainability(good, bad, cfg)
    assert not against.passed and any("champion" in r for r in against.reasons)


def test_gate_fails_closed_on_an_error() -> None:
    report = evaluate_explainability(None, None, _config())  # type: ignore[arg-type]
    assert not report.passed and "errored" in report.reasons[0]
    json.dumps(report.model_dump())


# ---------------------------------------------------------------------------- files


def test_write_plots(adult: dict[str, Any], tmp_path: Path) -> None:
    model = _fit(HGB, adult, **{"hgb.cat_encoding": "native"})
    X = adult["X_test"].iloc[:60]
    attr = shap_attributions(model, X, adult["cfg"])
    paths = write_plots(attr, adult["X_test"], tmp_path / "shap")
    assert set(paths) == {"bar", "beeswarm", "importance"}
    for key in ("bar", "beeswarm"):
        content = paths[key].read_bytes()
        assert content.startswith(b"\x89PNG") and len(content) > 5000
    saved = json.loads(paths["importance"].read_text())
    assert saved["method"] == "tree" and saved["rows"] == 60
    assert saved["path_reason"] == "exact TreeSHAP: HistGradientBoostingClassifier is a tree ensemble"
    assert saved["importance"] == pytest.approx(attr.importance())
    assert sum(saved["shares"].values()) == pytest.approx(1.0)
