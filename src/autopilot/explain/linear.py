"""The exact linear path: closed-form interventional SHAP for logistic regression (binary) and
the linear regressors (Ridge, LinearRegression, Lasso, ElasticNet, ...).

The model's margin is additive in the transformed columns z = T(x), and every transformer of the
pipeline (imputers, scalers, one-hot, target encoding) works column by column, so the margin is
additive in the original features and interventional SHAP is exact in closed form: transformed
column j gets coef_j * (z_j - mean of z_j over the background rows), summed onto its original
feature as on the tree path. Base value = coef . mean(z_background) + intercept. Units: log-odds
(`decision_function`) for logistic regression, the prediction for regressors. These are the
values the permutation path estimates with the same background (for an additive model every
permutation gives the same marginal contributions), at a tiny fraction of the cost. A multiclass
logistic regression has one margin per class (its softmax logits, units `margin`), each linear in
z: every class is explained the same way (values rows x features x classes). A multi-output
regressor is not explained here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.explain.attributions import ExplainPath, feature_rows, relative_error
from autopilot.explain.columns import column_owners, dense, margin, sum_columns

__all__ = ["LinearPath", "linear_problem"]

# Classifiers whose positive-class log-odds are exactly the linear margin `decision_function`
# (predict_proba is its logistic). SGDClassifier only with loss="log_loss" (checked below).
_LINEAR_CLASSIFIERS = ("LogisticRegression", "LogisticRegressionCV", "SGDClassifier")
# Regressors whose `predict` is exactly z @ coef_ + intercept_.
_LINEAR_REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "SGDRegressor",
    "HuberRegressor",
    "BayesianRidge",
    "LinearSVR",
)


def linear_problem(preprocess: Any, estimator: Any) -> str | None:
    """Why the linear path cannot explain this pipeline (None when it can).

    Class names are matched exactly (as for trees): a subclass may change what predict means.
    """
    name = type(estimator).__name__
    if name not in _LINEAR_CLASSIFIERS and name not in _LINEAR_REGRESSORS:
        return f"{name} is not a linear model the linear path knows"
    if preprocess is None:
        return "the pipeline is not a ColumnTransformer followed by the estimator"
    coef = getattr(estimator, "coef_", None)
    if coef is None:
        return f"{name} has no fitted coefficients"
    if name in _LINEAR_CLASSIFIERS:
        if name == "SGDClassifier" and getattr(estimator, "loss", None) != "log_loss":
            return f"SGDClassifier with loss={estimator.loss!r} has no log-odds margin"
        classes = len(getattr(estimator, "classes_", ()))
        if classes < 2:
            return f"{name} with {classes} classes has no margin"
        if classes > 2 and np.shape(coef)[0] != classes:
            return f"{name} has {np.shape(coef)[0]} margins for {classes} classes"
        return None
    shape = np.shape(coef)
    if len(shape) == 2 and shape[0] != 1:
        return f"{name} has {shape[0]} outputs (one margin each); the gates explain one"
    return None


class LinearPath(ExplainPath):
    """Closed-form interventional SHAP of a linear margin, summed back onto the original features."""

    method = "linear"

    def __init__(self, preprocess: Any, estimator: Any, cfg: ModelConfig, background: pd.DataFrame) -> None:
        self.preprocess = preprocess
        self.estimator = estimator
        self.features = list(cfg.features)
        self.owners = column_owners(preprocess, self.features)
        self.classifier = type(estimator).__name__ in _LINEAR_CLASSIFIERS
        self.multiclass = self.classifier and len(getattr(estimator, "classes_", ())) > 2
        self.output = ("margin" if self.multiclass else "log_odds") if self.classifier else "prediction"
        coef = estimator.coef_
        matrix = np.atleast_2d(np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=np.float64))
        self.coefs = matrix if self.multiclass else matrix.reshape(1, -1)
        self.coef = self.coefs[0]
        if self.coefs.shape[1] != len(self.owners):
            raise ValueError(f"{self.coefs.shape[1]} coefficients but {len(self.owners)} transformed columns")
        reference = dense(preprocess.transform(feature_rows(background, cfg)))
        self.background_rows = len(reference)
        self.mean = reference.mean(axis=0)
        intercepts = np.ravel(np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64))
        self.bases = self.coefs @ self.mean + intercepts[: len(self.coefs)]
        self.base = float(self.bases[0])

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, Any, float | None]:
        """SHAP values of `rows` on the original features: coef * (z - background mean), summed per
        feature (multiclass: per class, rows x features x classes, one base value per class)."""
        transformed = dense(self.preprocess.transform(rows))
        if self.multiclass:
            centred = transformed - self.mean
            values3 = np.stack([sum_columns(centred * c, self.owners, len(self.features)) for c in self.coefs], axis=2)
            output = margin(self.estimator, transformed, True)
            return values3, self.bases, relative_error(values3.sum(axis=1) + self.bases[None, :], output)
        values = sum_columns((transformed - self.mean) * self.coef, self.owners, len(self.features))
        # Checked against the estimator's own margin, so a model that is not what its name says fails the gate.
        output = margin(self.estimator, transformed, self.classifier)
        return values, self.base, relative_error(values.sum(axis=1) + self.base, output)
