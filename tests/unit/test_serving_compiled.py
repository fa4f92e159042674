"""The compiled serving fast path equals the pipeline for every family and encoding, or is not used."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder

from autopilot.config import LoadedConfig
from autopilot.modeling.training import fit_pipeline
from autopilot.serving.compiled import DirectHGB, NotCompilable, compile_pipeline
from autopilot.serving.schema import ServingSchema
from tests.serving_support import adult_cfg, feature_rows

BASE = {"prep.num_impute": "median", "prep.cat_impute": "most_frequent", "prep.min_frequency": 0.0}
CASES = {
    "hgb-native": {"family": "hist_gradient_boosting", "hgb.cat_encoding": "native", "hgb.learning_rate": 0.1,
                   "hgb.max_iter": 30, "hgb.max_leaf_nodes": 15, "hgb.min_samples_leaf": 20,
                   "hgb.l2_regularization": 0.1, "prep.min_frequency": 0.01},
    "hgb-target": {"family": "hist_gradient_boosting", "hgb.cat_encoding": "target", "hgb.learning_rate": 0.1,
                   "hgb.max_iter": 30, "hgb.max_leaf_nodes": 15, "hgb.min_samples_leaf": 20,
                   "hgb.l2_regularization": 0.1, "prep.cat_impute": "constant"},
    "linear-onehot-standard": {"family": "linear", "linear.cat_encoding": "onehot", "prep.scaling": "standard",
                               "linear.C": 1.0, "prep.min_frequency": 0.01},
    "linear-target-minmax": {"family": "linear", "linear.cat_encoding": "target", "prep.scaling": "minmax",
                             "linear.C": 0.5, "prep.num_impute": "mean"},
    "rf-ordinal": {"family": "random_forest", "rf.cat_encoding": "ordinal", "rf.n_estimators": 20,
                   "rf.max_depth": 8, "rf.min_samples_leaf": 5, "rf.max_features": 0.4, "prep.cat_impute": "constant",
                   "prep.min_frequency": 0.001},
    "et-target": {"family": "extra_trees", "et.cat_encoding": "target", "et.n_estimators": 20, "et.max_depth": 8,
                  "et.min_samples_leaf": 5, "et.max_features": 0.4},
    # LightGBM's categorical splits read the compiled ordinal codes (unseen ones NaN) like the pipeline's.
    "lgbm-native": {"family": "lightgbm", "lgbm.cat_encoding": "native", "lgbm.learning_rate": 0.1,
                    "lgbm.n_estimators": 30, "lgbm.num_leaves": 15, "lgbm.min_child_samples": 20,
                    "lgbm.colsample_bytree": 0.7, "lgbm.reg_lambda": 0.1, "prep.cat_impute": "constant",
                    "prep.min_frequency": 0.01, "lgbm.min_data_per_group": 10, "lgbm.cat_smooth": 2.0},
    "lgbm-target": {"family": "lightgbm", "lgbm.cat_encoding": "target", "lgbm.learning_rate": 0.1,
                    "lgbm.n_estimators": 30, "lgbm.num_leaves": 15, "lgbm.min_child_samples": 20,
                    "lgbm.colsample_bytree": 1.0, "lgbm.reg_lambda": 0.1},
}


@pytest.fixture(scope="module")
def cfg() -> LoadedConfig:
    return adult_cfg()


@pytest.fixture(scope="module")
def train(cfg: LoadedConfig, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import encode_target, feature_frame

    frame = canonicalize(adult_frames[0].sample(2500, random_state=3), cfg)
    return feature_frame(frame, cfg), encode_target(frame, cfg)


def served_rows(adult_frames: tuple[pd.DataFrame, pd.DataFrame], cfg: LoadedConfig) -> list[dict[str, Any]]:
    """Real test rows, plus what clients send that training never saw: unseen categories and nulls."""
    rows = feature_rows(adult_frames, cfg, n=300)
    nullable = [name for name, spec in cfg.features.items() if spec.nullable]
    categorical = [name for name, spec in cfg.features.items() if spec.type == "categorical"]
    for i, row in enumerate(rows[:60]):
        row[categorical[i % len(categorical)]] = f"brand-new-{i}"
        if nullable:
            row[nullable[i % len(nullable)]] = None
    return rows


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_features_and_scores_equal_the_pipeline(case: str, cfg: LoadedConfig, train: Any,
                                                         adult_frames: Any) -> None:
    X, y = train
    pipeline = fit_pipeline({**BASE, **CASES[case]}, cfg, X, y, seed=0)
    schema = ServingSchema.from_config(cfg)
    compiled = compile_pipeline(pipeline, schema, X.head(5))
    rows = served_rows(adult_frames, cfg)
    frame = schema.frame(rows)
    expected = pipeline[0].transform(frame)
    scorer = compiled.estimator or pipeline[-1]
    if compiled.estimator is not None:  # HGB: its own input step (validation, ordinal codes) is compiled in too
        assert case.startswith("hgb") and isinstance(compiled.estimator, DirectHGB)
        expected = pipeline[-1]._preprocess_X(np.asarray(expected, dtype=float), reset=False)
    got = compiled.transform(rows)
    # The same floats, not close ones: the same operations in the same order.
    assert got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(scorer.predict_proba(got), pipeline.predict_proba(frame))


def test_hist_gradient_boosting_is_scored_without_its_input_step(cfg: LoadedConfig, train: Any) -> None:
    X, y = train
    for case in (c for c in CASES if c.startswith("hgb")):
        pipeline = fit_pipeline({**BASE, **CASES[case]}, cfg, X, y, seed=0)
        compiled = compile_pipeline(pipeline, ServingSchema.from_config(cfg), X.head(5))
        assert isinstance(compiled.estimator, DirectHGB), case


def test_one_row_and_all_null_rows(cfg: LoadedConfig, train: Any, adult_frames: Any) -> None:
    X, y = train
    pipeline = fit_pipeline({**BASE, **CASES["linear-onehot-standard"]}, cfg, X, y, seed=0)
    schema = ServingSchema.from_config(cfg)
    compiled = compile_pipeline(pipeline, schema)
    row = feature_rows(adult_frames, cfg, n=1)[0]
    empty = {name: (None if name in schema.nullable else row[name]) for name in schema.columns}
    for rows in ([row], [empty], [empty, row]):
        assert np.array_equal(compiled.transform(rows), pipeline[0].transform(schema.frame(rows)))


def _tiny_schema() -> ServingSchema:
    return ServingSchema(columns=("a", "b", "c", "d"), kinds=("numeric", "numeric", "categorical", "categorical"),
                         nullable=frozenset(), max_rows=100)


def _tiny_fit(numeric: Any, categorical: Any) -> Pipeline:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200),
                          "c": rng.choice(["x", "y", "z"], size=200).astype(object),
                          "d": rng.choice(["p", "q"], size=200).astype(object)})
    y = (frame["a"] + (frame["c"] == "x") > 0.5).astype(int)
    preprocess = ColumnTransformer([("num", numeric, ["a", "b"]), ("cat", categorical, ["c", "d"])])
    return Pipeline([("preprocess", preprocess), ("model", LogisticRegression())]).fit(frame, y)


def test_a_tiny_column_wise_pipeline_compiles() -> None:
    pipeline = _tiny_fit("passthrough", OneHotEncoder(handle_unknown="ignore"))
    compiled = compile_pipeline(pipeline, _tiny_schema())
    rows = [{"a": 1.5, "b": -2, "c": "y", "d": "q"}, {"a": 0, "b": 0, "c": "unknown", "d": "p"}]
    assert compiled.transform(rows).tolist() == [[1.5, -2.0, 0.0, 1.0, 0.0, 0.0, 1.0],
                                                 [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]]


@pytest.mark.parametrize(("numeric", "categorical", "reason"), [
    (PCA(n_components=2), OneHotEncoder(), "numeric column 'a' goes through a PCA"),
    (FunctionTransformer(np.tanh), OneHotEncoder(), "numeric column 'a' goes through a FunctionTransformer"),
    ("passthrough", Pipeline([("codes", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
                              ("mix", PCA(n_components=2))]),
     "column 'd' changes outputs that another column also changes"),
    ("passthrough", OrdinalEncoder(), "the preprocessing refused the probe rows: Found unknown categories"),
])
def test_pipelines_that_mix_columns_or_bend_numbers_are_refused(numeric: Any, categorical: Any, reason: str) -> None:
    with pytest.raises(NotCompilable, match=reason):
        compile_pipeline(_tiny_fit(numeric, categorical), _tiny_schema())


def test_not_a_two_step_pipeline_is_refused() -> None:
    with pytest.raises(NotCompilable, match="not a two-step pipeline"):
        compile_pipeline(LogisticRegression(), _tiny_schema())
    pipeline = Pipeline([("scale", FunctionTransformer()), ("model", LogisticRegression())])
    with pytest.raises(NotCompilable, match="not a ColumnTransformer"):
        compile_pipeline(pipeline, _tiny_schema())


def test_a_dropped_numeric_column_is_ignored_like_the_pipeline_does() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100),
                          "c": rng.choice(["x", "y"], size=100).astype(object),
                          "d": rng.choice(["p", "q"], size=100).astype(object)})
    preprocess = ColumnTransformer([("num", "passthrough", ["a"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["c", "d"])],
                                   remainder="drop")
    pipeline = Pipeline([("preprocess", preprocess), ("model", LogisticRegression())]).fit(frame, frame["a"] > 0)
    compiled = compile_pipeline(pipeline, _tiny_schema())
    rows = [{"a": 0.25, "b": 99.0, "c": "y", "d": "p"}]
    assert compiled.transform(rows).tolist() == [[0.25, 0.0, 1.0, 1.0, 0.0]]


def test_a_regressor_with_imputation_scaling_and_target_encoding() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import MinMaxScaler, TargetEncoder

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"a": rng.normal(50, 10, size=300), "b": rng.normal(size=300),
                          "c": rng.choice(["x", "y", "z"], size=300).astype(object),
                          "d": rng.choice(["p", "q"], size=300).astype(object)})
    frame.loc[::7, "a"] = np.nan
    y = frame["b"] * 3 + (frame["c"] == "x") + rng.normal(size=300)
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", MinMaxScaler())])
    categorical = Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                            ("encode", TargetEncoder(target_type="continuous", cv=KFold(5, shuffle=True,
                                                                                      random_state=0)))])
    preprocess = ColumnTransformer([("num", numeric, ["a", "b"]), ("cat", categorical, ["c", "d"])])
    pipeline = Pipeline([("preprocess", preprocess), ("model", Ridge())]).fit(frame, y)
    schema = ServingSchema(columns=("a", "b", "c", "d"), kinds=("numeric", "numeric", "categorical", "categorical"),
                           nullable=frozenset({"a", "c"}), max_rows=100)
    compiled = compile_pipeline(pipeline, schema)
    rows = [{"a": None, "b": 0.5, "c": None, "d": "q"}, {"a": 61.0, "b": -2, "c": "new", "d": "p"}]
    features = compiled.transform(rows)
    assert np.array_equal(features, pipeline[0].transform(schema.frame(rows)))
    assert np.array_equal(pipeline[-1].predict(features), pipeline.predict(schema.frame(rows)))


def test_a_hist_gradient_boosting_regressor_is_scored_directly_and_exactly() -> None:
    from sklearn.datasets import load_diabetes

    from autopilot.config import ModelConfig

    X, y = load_diabetes(scaled=False, return_X_y=True, as_frame=True)
    X = X.assign(sex=X["sex"].map({1.0: "f", 2.0: "m"}))  # a native categorical column beside the numbers
    features = {name: {"type": "categorical" if name == "sex" else "numeric"} for name in X.columns}
    cfg = ModelConfig.model_validate({"name": "diabetes", "task": "regression", "data": {"source": "d.csv"},
                                      "target": {"column": "y"}, "features": features, "metric": "rmse"})
    params = {**CASES["hgb-native"], "prep.num_impute": "median", "prep.cat_impute": "most_frequent"}
    pipeline = fit_pipeline(params, cfg, X, y, seed=0)
    schema = ServingSchema.from_config(cfg)
    compiled = compile_pipeline(pipeline, schema, X.head(5))
    assert isinstance(compiled.estimator, DirectHGB) and not hasattr(compiled.estimator, "predict_proba")
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in X.tail(60).to_dict("records")]
    rows[0]["bmi"], rows[1]["sex"] = None, "unseen"
    assert np.array_equal(compiled.estimator.predict(compiled.transform(rows)), pipeline.predict(schema.frame(rows)))
