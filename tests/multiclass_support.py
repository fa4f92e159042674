"""A small synthetic multiclass problem for the tests after training (explanations, fairness, monitoring).

Three classes ("low", "mid", "high") drawn from softmax margins of three numeric features, a
categorical colour and a sensitive `group`; pipelines are built with the project's
`build_pipeline` (from a binary twin of the config, whose features are the same: the estimators
fit any number of classes) so these tests do not depend on the multiclass tuning space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.modeling.search_space import build_pipeline

CLASSES = ("high", "low", "mid")  # sorted: the order of a fitted classifier's classes_
FEATURES: dict[str, Any] = {
    "x0": {"type": "numeric"}, "x1": {"type": "numeric"}, "x2": {"type": "numeric"},
    "colour": {"type": "categorical", "categories": ["blue", "green", "red"]},
    "group": {"type": "categorical", "categories": ["g1", "g2"]},
}
LOGISTIC = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard",
            "prep.cat_impute": "most_frequent", "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0,
            "linear.C": 1.0}
HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 20, "hgb.max_leaf_nodes": 15,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}
FOREST = {"family": "random_forest", "prep.num_impute": "median", "prep.cat_impute": "most_frequent",
          "rf.cat_encoding": "ordinal", "prep.min_frequency": 0.0, "rf.n_estimators": 20,
          "rf.max_depth": 6, "rf.min_samples_leaf": 5, "rf.max_features": 0.8}
LIGHTGBM = {"family": "lightgbm", "prep.cat_impute": "constant", "lgbm.cat_encoding": "native",
            "prep.min_frequency": 0.0, "lgbm.learning_rate": 0.1, "lgbm.n_estimators": 20, "lgbm.num_leaves": 15,
            "lgbm.min_child_samples": 20, "lgbm.colsample_bytree": 0.8, "lgbm.reg_lambda": 0.0,
            "lgbm.min_data_per_group": 20, "lgbm.cat_smooth": 5.0}


def config(**sections: Any) -> ModelConfig:
    """The multiclass config (metric one-vs-rest ROC AUC, `group` sensitive); `sections` merged in."""
    body: dict[str, Any] = {
        "name": "grades", "task": "multiclass_classification", "data": {"source": "unused.csv"},
        "target": {"column": "y"}, "features": FEATURES, "metric": "roc_auc_ovr",
        "sensitive_attributes": ["group"],
    }
    body.update(sections)
    return ModelConfig.model_validate(body)


def binary_twin(cfg: ModelConfig) -> ModelConfig:
    """The same features as a binary config: what `build_pipeline` builds classifiers from today."""
    return cfg.model_copy(update={"task": Task.BINARY_CLASSIFICATION, "metric": "roc_auc"})


def frame(n: int, seed: int = 0, *, corr: float = 0.0) -> pd.DataFrame:
    """Features only: three normals, a three-level colour, two groups (a few values missing)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    out = pd.DataFrame({
        "x0": x0,
        "x1": corr * x0 + np.sqrt(1 - corr**2) * rng.normal(size=n),
        "x2": rng.normal(size=n),
        "colour": rng.choice(["red", "green", "blue"], size=n).astype(object),
        "group": rng.choice(["g1", "g2"], size=n, p=[0.6, 0.4]).astype(object),
    })
    out.loc[out.index[:3], "x2"] = np.nan
    return out


def labels(X: pd.DataFrame, seed: int = 1) -> pd.Series:
    """Labels drawn from softmax margins (classes named, not coded)."""
    rng = np.random.default_rng(seed)
    margins = np.column_stack([
        1.5 * X["x0"], -1.5 * X["x0"] + 0.8 * X["x1"], 0.7 * X["x2"].fillna(0.0) + 0.8 * (X["colour"] == "red"),
    ])
    p = np.exp(margins - margins.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    draws = (rng.random(len(X))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return pd.Series(np.asarray(["high", "low", "mid"], dtype=object)[np.minimum(draws, 2)], name="y")


def fitted(params: dict[str, Any], n: int = 1500, seed: int = 0) -> tuple[ModelConfig, Any, pd.DataFrame, pd.Series]:
    """(config, fitted pipeline, X, y) of the synthetic problem."""
    cfg = config()
    X = frame(n, seed)
    y = labels(X, seed + 1)
    model = build_pipeline(params, binary_twin(cfg), seed=0).fit(X, y)
    return cfg, model, X, y
