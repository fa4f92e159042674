"""The joined forest gives scikit-learn's own raw predictions, bit for bit, or is not used."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from autopilot.serving import forest
from autopilot.serving.compiled import DirectHGB, compile_pipeline
from autopilot.serving.forest import MAX_ROWS, FlatForest
from autopilot.serving.schema import ServingSchema

SIZES = (1, 2, 7, 32, MAX_ROWS)


def _frame(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers with NaN, and a categorical column (pandas category: HGB's native categorical splits)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.exponential(size=rows),
                          "c": pd.Categorical(rng.choice(list("pqrstuvw"), size=rows))})
    frame.loc[::9, "a"] = np.nan
    signal = frame["a"].fillna(0) + frame["c"].isin(["p", "r", "u"]) * 1.5 - frame["b"]
    return frame, signal.to_numpy()


def _served(estimator: Any, frame: pd.DataFrame) -> np.ndarray:
    """What the fast path feeds the trees: the estimator's own input step's output (ordinal codes, NaN)."""
    features = np.asarray(estimator._preprocess_X(frame, reset=False), dtype=np.float64)
    assert np.isnan(features[:, 1]).any()  # column 0 is the category codes (HGB puts them first), 1 is `a`
    features[::13, 2] = np.nan  # a missing number where training had none
    features[2::11, 0] = np.nan  # a missing category
    features[5::17, 0] = 99.0  # a category code training never saw (treated as missing)
    return features


def _sklearn_raw(estimator: Any, features: np.ndarray) -> np.ndarray:
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    raw = np.zeros((len(features), estimator.n_trees_per_iteration_), order="F")
    raw += estimator._baseline_prediction
    estimator._predict_iterations(features, estimator._predictors, raw, False, _openmp_effective_n_threads())
    return raw


def _assert_same_in_every_batch_size(estimator: Any, frame: pd.DataFrame) -> None:
    features = _served(estimator, frame)
    joined = FlatForest(estimator, features.shape[1])
    for size in SIZES:
        for start in range(0, len(features) - size + 1, max(size, 37)):
            batch = features[start:start + size]
            assert joined.fits(size)
            got = joined.raw(batch, 1)
            # The same floats, not close ones: the same leaves summed in the same order.
            assert got.shape == (size, estimator.n_trees_per_iteration_)
            assert np.array_equal(got, _sklearn_raw(estimator, batch)), size


@pytest.mark.parametrize("iterations", [1, 2, 40])
def test_a_binary_classifier_with_categorical_splits(iterations: int) -> None:
    frame, signal = _frame(600)
    model = HistGradientBoostingClassifier(max_iter=iterations, max_leaf_nodes=15, categorical_features="from_dtype",
                                           random_state=0).fit(frame, signal > 0)
    _assert_same_in_every_batch_size(model, frame)


def test_a_multiclass_classifier_sums_each_class_in_order() -> None:
    frame, signal = _frame(600, seed=1)
    model = HistGradientBoostingClassifier(max_iter=25, categorical_features="from_dtype",
                                           random_state=0).fit(frame, np.digitize(signal, [-0.5, 0.5]))
    assert model.n_trees_per_iteration_ == 3
    _assert_same_in_every_batch_size(model, frame)


def test_a_regressor_and_trees_that_are_a_single_leaf() -> None:
    frame, signal = _frame(600, seed=2)
    model = HistGradientBoostingRegressor(max_iter=30, categorical_features="from_dtype").fit(frame, signal)
    _assert_same_in_every_batch_size(model, frame)
    # Leaves need 400 rows: the first trees may split once, the rest are a root leaf each.
    stump = HistGradientBoostingRegressor(max_iter=5, min_samples_leaf=400, categorical_features="from_dtype",
                                          early_stopping=False).fit(frame, signal)
    assert any(p.nodes["is_leaf"][0] for per_iteration in stump._predictors for p in per_iteration)
    _assert_same_in_every_batch_size(stump, frame)


def test_large_batches_use_scikit_learns_loop() -> None:
    frame, signal = _frame(400)
    model = HistGradientBoostingClassifier(max_iter=10, categorical_features="from_dtype").fit(frame, signal > 0)
    direct = DirectHGB.of(model)
    assert direct is not None and not direct.forest.fits(MAX_ROWS + 1) and not direct.forest.fits(0)
    features = _served(model, frame)
    assert np.array_equal(direct.raw(features), _sklearn_raw(model, features))  # 400 rows: the loop


def test_a_forest_that_disagrees_keeps_the_model_off_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path's proof covers micro-batches: a joined forest one ulp off is never served."""
    from autopilot.config import ModelConfig
    from autopilot.modeling.training import fit_pipeline

    frame, signal = _frame(500, seed=3)
    frame["c"] = frame["c"].astype(object)
    features = {"a": {"type": "numeric", "nullable": True}, "b": {"type": "numeric"}, "c": {"type": "categorical"}}
    cfg = ModelConfig.model_validate({"name": "tiny", "task": "regression", "data": {"source": "t.csv"},
                                      "target": {"column": "y"}, "features": features, "metric": "rmse"})
    params = {"family": "hist_gradient_boosting", "hgb.cat_encoding": "native", "hgb.learning_rate": 0.1,
              "hgb.max_iter": 20, "hgb.max_leaf_nodes": 15, "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.1,
              "prep.num_impute": "median", "prep.cat_impute": "most_frequent", "prep.min_frequency": 0.0}
    pipeline = fit_pipeline(params, cfg, frame, pd.Series(signal), seed=0)
    schema = ServingSchema.from_config(cfg)
    assert isinstance(compile_pipeline(pipeline, schema, frame.head(5)).estimator, DirectHGB)

    honest = forest.FlatForest.raw
    monkeypatch.setattr(forest.FlatForest, "raw", lambda self, x, n: np.nextafter(honest(self, x, n), np.inf))
    assert compile_pipeline(pipeline, schema, frame.head(5)).estimator is None
