"""The conditional search space and the pipelines it builds (small data, seconds per test)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import skops.io
from optuna.trial import FixedTrial
from sklearn.datasets import load_breast_cancer, load_diabetes
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig, ModelFamily
from autopilot.modeling.search_space import build_pipeline, suggest_params

SEED = 7
FAMILIES = [family.value for family in ModelFamily]
PREFIX = {"linear": "linear", "random_forest": "rf", "extra_trees": "et", "hist_gradient_boosting": "hgb",
          "lightgbm": "lgbm"}
NATIVE_MISSING = {"hist_gradient_boosting", "lightgbm"}  # no numeric imputer in front of them
ENCODINGS = {
    "linear": ["onehot", "target"],
    "random_forest": ["ordinal", "target"],
    "extra_trees": ["ordinal", "target"],
    "hist_gradient_boosting": ["native", "target"],
    "lightgbm": ["native", "target"],
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: on a few hundred rows HGB's thread start-up dominates (measured
    20x slower with 2 threads on a busy 2-core machine), and tests must not depend on the load."""
    with threadpool_limits(limits=1):
        yield


def _with_category(features: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Canonical layout: float64 numerics, an object categorical of str with NaN and a rare level."""
    rng = np.random.default_rng(seed)
    frame = features.astype("float64").reset_index(drop=True)
    colour = rng.choice(["red", "green", "blue", "mauve"], size=len(frame), p=[0.45, 0.35, 0.19, 0.01])
    column = pd.Series(colour, dtype=object)
    column[rng.random(len(frame)) < 0.1] = np.nan
    frame["colour"] = column
    return frame


def _config(task: str, numeric: list[str], categorical: list[str], **extra: Any) -> ModelConfig:
    features = {name: {"type": "numeric"} for name in numeric}
    features.update({name: {"type": "categorical"} for name in categorical})
    body: dict[str, Any] = {
        "name": "unit_model",
        "task": task,
        "data": {"source": "unused.csv"},
        "features": features,
        "metric": "roc_auc" if task == "binary_classification" else "rmse",
        **extra,
    }
    body["target"] = {"column": "label", "positive_class": "yes"} if task == "binary_classification" else {
        "column": "label"
    }
    return ModelConfig.model_validate(body)


@pytest.fixture(scope="module")
def classification() -> tuple[ModelConfig, pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    X = _with_category(data.data.iloc[:, :5].set_axis([f"f{i}" for i in range(5)], axis=1))
    cfg = _config("binary_classification", [f"f{i}" for i in range(5)], ["colour"])
    return cfg, X, pd.Series(data.target.to_numpy(), dtype="int64")


@pytest.fixture(scope="module")
def regression() -> tuple[ModelConfig, pd.DataFrame, pd.Series]:
    data = load_diabetes(as_frame=True)
    X = _with_category(data.data.iloc[:, :5].set_axis([f"f{i}" for i in range(5)], axis=1))
    cfg = _config("regression", [f"f{i}" for i in range(5)], ["colour"])
    return cfg, X, pd.Series(data.target.to_numpy(), dtype="float64")


def _fixed_params(family: str, task: str, encoding: str) -> dict[str, Any]:
    """A full point of the space for `family` (values inside every range)."""
    prefix = PREFIX[family]
    params: dict[str, Any] = {"family": family, "prep.cat_impute": "constant", f"{prefix}.cat_encoding": encoding}
    if encoding != "target":
        params["prep.min_frequency"] = 0.01
    if family not in NATIVE_MISSING:
        params["prep.num_impute"] = "median"
    if family == "linear":
        params["prep.scaling"] = "standard"
        params["linear.C" if task == "binary_classification" else "linear.alpha"] = 1.0
    elif family == "hist_gradient_boosting":
        params.update({"hgb.learning_rate": 0.1, "hgb.max_iter": 100, "hgb.max_leaf_nodes": 15,
                       "hgb.min_samples_leaf": 10, "hgb.l2_regularization": 0.01})
    elif family == "lightgbm":
        params.update({"lgbm.learning_rate": 0.1, "lgbm.n_estimators": 100, "lgbm.num_leaves": 15,
                       "lgbm.min_child_samples": 10, "lgbm.colsample_bytree": 0.7, "lgbm.reg_lambda": 0.01})
        if encoding == "native":  # the category groups' size and smoothing: asked only for native splits
            params.update({"lgbm.min_data_per_group": 10, "lgbm.cat_smooth": 2.0})
    else:
        params.update({f"{prefix}.n_estimators": 50, f"{prefix}.max_depth": 6,
                       f"{prefix}.min_samples_leaf": 2, f"{prefix}.max_features": 0.5})
    return params


CASES = [(family, encoding) for family in FAMILIES for encoding in ENCODINGS[family]]


@pytest.mark.parametrize(("family", "encoding"), CASES)
@pytest.mark.parametrize("task", ["binary_classification", "regression"])
def test_every_family_and_encoding_builds_and_fits(
    request: pytest.FixtureRequest, task: str, family: str, encoding: str
) -> None:
    cfg, X, y = request.getfixturevalue("classification" if task == "binary_classification" else "regression")
    params = suggest_params(FixedTrial(_fixed_params(family, task, encoding)), cfg)
    pipeline = build_pipeline(params, cfg, SEED).fit(X, y)
    # Unseen categories and missing values at prediction time must not break any encoder.
    fresh = X.head(20).copy()
    fresh.loc[0, "colour"] = "never-seen"
    fresh.loc[1, "colour"] = np.nan
    fresh.loc[2, "f0"] = np.nan
    if task == "binary_classification":
        proba = pipeline.predict_proba(fresh)
        assert proba.shape == (20, 2)
        assert np.all((proba >= 0) & (proba <= 1))
        assert "Classifier" in type(pipeline[-1]).__name__ or type(pipeline[-1]).__name__ == "LogisticRegression"
    else:
        assert np.isfinite(pipeline.predict(fresh)).all()
        assert "Regressor" in type(pipeline[-1]).__name__ or type(pipeline[-1]).__name__ == "Ridge"


def test_hgb_native_marks_categorical_columns(classification: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = classification
    pipeline = build_pipeline(_fixed_params("hist_gradient_boosting", "binary_classification", "native"), cfg, SEED)
    assert pipeline[-1].categorical_features == [False] * 5 + [True]
    assert pipeline.fit(X, y)[-1].is_categorical_.tolist() == [False] * 5 + [True]


def test_lightgbm_native_splits_on_the_category_codes(
    classification: tuple[ModelConfig, pd.DataFrame, pd.Series],
) -> None:
    """`native` reaches LightGBM through a Pipeline's plain fit: the booster's trees hold categorical
    splits on the code column (index 5), and `target` encoding gives none."""
    cfg, X, y = classification
    native = build_pipeline(_fixed_params("lightgbm", "binary_classification", "native"), cfg, SEED).fit(X, y)
    assert native[-1].get_params()["categorical_column"] == [5]
    booster_params = native[-1].booster_.params
    grouping = (booster_params["min_data_per_group"], booster_params["cat_smooth"], booster_params["cat_l2"])
    assert grouping == (10, 2.0, 2.0)
    text = native[-1].booster_.model_to_string()
    assert any(line.startswith("num_cat=") and line != "num_cat=0" for line in text.splitlines())
    target = build_pipeline(_fixed_params("lightgbm", "binary_classification", "target"), cfg, SEED).fit(X, y)
    assert "categorical_column" not in target[-1].get_params()
    assert all(line == "num_cat=0" for line in target[-1].booster_.model_to_string().splitlines()
               if line.startswith("num_cat="))


def _sampled(cfg: ModelConfig, n: int, seed: int = 0) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, suggest_params(trial, cfg)))
        study.tell(trial, 0.0)
    return out


def test_params_are_the_trial_params_and_json_serializable(
    classification: tuple[ModelConfig, pd.DataFrame, pd.Series],
) -> None:
    cfg, _, _ = classification
    for trial, params in _sampled(cfg, 40):
        assert params == trial.params
        assert json.loads(json.dumps(params)) == params


@pytest.mark.parametrize("fixture", ["classification", "regression"])
def test_rebuilt_pipeline_from_logged_params_predicts_identically(request: pytest.FixtureRequest, fixture: str) -> None:
    cfg, X, y = request.getfixturevalue(fixture)
    seen: set[str] = set()
    for _, params in _sampled(cfg, 30, seed=3):
        if params["family"] in seen:
            continue
        seen.add(params["family"])
        logged = json.loads(json.dumps(params))  # what comes back from a tracking store
        first = build_pipeline(params, cfg, SEED).fit(X, y)
        again = build_pipeline(logged, cfg, SEED).fit(X, y)
        predict = "predict_proba" if fixture == "classification" else "predict"
        np.testing.assert_array_equal(getattr(first, predict)(X), getattr(again, predict)(X))
    assert seen == set(FAMILIES)


def test_space_is_conditional_on_family(classification: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, _, _ = classification
    families_seen = set()
    for _, params in _sampled(cfg, 80, seed=1):
        family = params["family"]
        families_seen.add(family)
        namespaces = {key.split(".")[0] for key in params if key != "family"}
        assert namespaces <= {"prep", PREFIX[family]}, params
        assert ("prep.scaling" in params) == (family == "linear")
        assert ("prep.num_impute" in params) == (family not in NATIVE_MISSING)
        encoding = params[f"{PREFIX[family]}.cat_encoding"]
        assert encoding in ENCODINGS[family]
        assert ("prep.min_frequency" in params) == (encoding != "target")
    assert families_seen == set(FAMILIES)


# The shallow HGB point's 4 leaves lie below the sampled range on purpose (search_space explains why).
@pytest.mark.filterwarnings("ignore:The value 4 of the parameter 'hgb.max_leaf_nodes'")
def test_the_warm_start_points_are_points_of_the_space(
    classification: tuple[ModelConfig, pd.DataFrame, pd.Series],
) -> None:
    """Each known-good point is exactly what the space would suggest (FixedTrial refuses any other name),
    builds and fits; with categorical columns LightGBM gets its defaults and a fine-categories point."""
    from autopilot.modeling.search_space import default_params

    cfg, X, y = classification
    points = default_params(cfg)
    assert [p["family"] for p in points] == ["hist_gradient_boosting", "linear", "lightgbm", "random_forest",
                                             "extra_trees", "hist_gradient_boosting", "lightgbm"]
    assert (points[2]["lgbm.min_data_per_group"], points[-1]["lgbm.min_data_per_group"]) == (100, 5)
    for point in points:
        assert suggest_params(FixedTrial(point), cfg) == point
        build_pipeline(point, cfg, SEED).fit(X, y)
    numeric = _config("binary_classification", [f"f{i}" for i in range(5)], [])
    assert [p["family"] for p in default_params(numeric)].count("lightgbm") == 1
    assert not any("lgbm.cat_smooth" in p for p in default_params(numeric))


def test_fixed_trial_for_one_family_asks_nothing_of_the_others(
    classification: tuple[ModelConfig, pd.DataFrame, pd.Series],
) -> None:
    cfg, _, _ = classification
    fixed = _fixed_params("hist_gradient_boosting", "binary_classification", "native")
    # FixedTrial raises for any name it was not given, so this proves the space is conditional.
    assert suggest_params(FixedTrial(fixed), cfg) == fixed


def test_families_come_from_the_config(classification: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, _, _ = classification
    only = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"families": [ModelFamily.EXTRA_TREES]})})
    assert {params["family"] for _, params in _sampled(only, 10)} == {"extra_trees"}


def test_numeric_only_config_has_no_categorical_params() -> None:
    data = load_diabetes(as_frame=True)
    X = data.data.iloc[:, :4].astype("float64")
    cfg = _config("regression", list(X.columns), [])
    for _, params in _sampled(cfg, 20):
        assert not any("cat_" in key or key == "prep.min_frequency" for key in params)
        assert np.isfinite(build_pipeline(params, cfg, SEED).fit(X, data.target).predict(X)).all()


def test_missing_param_is_a_clear_error(classification: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, _, _ = classification
    params = _fixed_params("random_forest", "binary_classification", "ordinal")
    del params["rf.max_depth"]
    with pytest.raises(ValueError, match="rf.max_depth"):
        build_pipeline(params, cfg, SEED)


@pytest.mark.parametrize("family", FAMILIES)
def test_fitted_pipeline_holds_only_reviewed_types(
    classification: tuple[ModelConfig, pd.DataFrame, pd.Series], family: str
) -> None:
    cfg, X, y = classification
    # LightGBM's estimator, its Booster (rebuilt from LightGBM's text model) and the Booster's params.
    lightgbm = ["collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"]
    for encoding in ENCODINGS[family]:
        pipeline = build_pipeline(_fixed_params(family, "binary_classification", encoding), cfg, SEED).fit(X, y)
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
        # HGB's native categorical support stores functools.partial(sklearn...check_array)
        # internally; a partial only loads when its function is itself trusted.
        allowed = [name for name in untrusted if name.split(".")[0] in {"sklearn", "numpy"}]
        expected = [lightgbm] if family == "lightgbm" else [[], ["functools.partial"]]
        assert sorted(set(untrusted) - set(allowed)) in expected, untrusted
