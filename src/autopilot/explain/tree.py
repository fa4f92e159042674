"""The exact tree path: path-dependent TreeSHAP for RandomForest / ExtraTrees / HistGradientBoosting / LightGBM.

The fitted `preprocess` step transforms the rows, TreeSHAP explains the estimator on the
transformed matrix, and the attributions of all transformed columns that come from one original
feature are summed (`explain.columns`). HistGradientBoosting goes through the project's own
conversion (`explain.hgb_trees`); LightGBM through its own TreeSHAP (`predict(pred_contrib=True)`, the
same path-dependent algorithm, categorical splits included). Units: log-odds for the boosters'
classifiers, probability for forest classifiers (their trees average probabilities), the prediction
for regressors.

Multiclass: every class is explained (values rows x features x classes, one base value per
class): a forest's per-class probabilities, or HGB's per-class softmax margins (`margin`), each
class's trees explained on their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.explain.attributions import ExplainPath, relative_error
from autopilot.explain.columns import column_owners, dense, margin, sum_class_columns, sum_columns
from autopilot.explain.hgb_trees import HGBTrees

__all__ = ["TreePath", "tree_problem"]

_TREE_ESTIMATORS = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "LGBMClassifier",
    "LGBMRegressor",
)


def _is_tree(estimator: Any) -> bool:
    return type(estimator).__name__ in _TREE_ESTIMATORS


def tree_problem(preprocess: Any, estimator: Any) -> str | None:
    """Why the tree path cannot explain this pipeline (None when it can)."""
    name = type(estimator).__name__
    if not _is_tree(estimator):
        return f"{name} is not a forest, HistGradientBoosting or LightGBM model"
    if preprocess is None:
        return "the pipeline is not a ColumnTransformer followed by the estimator"
    return None


class TreePath(ExplainPath):
    """Path-dependent TreeSHAP on the transformed matrix, summed back onto the original features."""

    method = "tree"

    def __init__(self, preprocess: Any, estimator: Any, cfg: ModelConfig) -> None:
        import shap

        self.preprocess = preprocess
        self.estimator = estimator
        self.features = list(cfg.features)
        self.owners = column_owners(preprocess, self.features)
        self.classifier = hasattr(estimator, "predict_proba")
        self.multiclass = self.classifier and len(getattr(estimator, "classes_", ())) > 2
        self.hgb = type(estimator).__name__.startswith("HistGradientBoosting")
        self.lightgbm = type(estimator).__name__.startswith("LGBM")
        if self.hgb or self.lightgbm:  # the boosters are explained in raw-score units
            self.output = ("margin" if self.multiclass else "log_odds") if self.classifier else "prediction"
        else:
            self.output = "probability" if self.classifier else "prediction"
        if self.hgb:
            self.trees = HGBTrees(estimator)
            self.explainers = [shap.TreeExplainer(model) for model in self.trees.models]
            self.explainer = self.explainers[0]
        elif not self.lightgbm:  # LightGBM computes its own TreeSHAP (`_explain_lightgbm`)
            self.explainer = shap.TreeExplainer(estimator)

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, Any, float | None]:
        """SHAP values of `rows` on the original features (multiclass: rows x features x classes,
        with one base value per class)."""
        transformed = dense(self.preprocess.transform(rows))
        if self.lightgbm:
            return self._explain_lightgbm(transformed)
        if self.multiclass:
            return self._explain_classes(transformed)
        if self.hgb:
            matrix, owners = self.trees.inputs(transformed)
            raw = np.asarray(self.explainer.shap_values(matrix, check_additivity=False), dtype=float)
            per_column = sum_columns(raw, owners, transformed.shape[1])
            base = float(np.ravel(self.explainer.expected_value)[0])
            output = margin(self.estimator, transformed, self.classifier)
        else:
            raw_any = self.explainer.shap_values(transformed.astype(np.float32), check_additivity=False)
            expected = np.ravel(self.explainer.expected_value)
            if self.classifier:
                raw = _positive_slice(raw_any)
                base = float(expected[-1])
                output = np.asarray(self.estimator.predict_proba(transformed))[:, 1]
            else:
                raw = np.asarray(raw_any, dtype=float)
                base = float(expected[0])
                output = np.asarray(self.estimator.predict(transformed), dtype=float)
            per_column = raw
        values = sum_columns(per_column, self.owners, len(self.features))
        error = relative_error(values.sum(axis=1) + base, output)
        return values, base, error


    def _explain_lightgbm(self, transformed: np.ndarray) -> tuple[np.ndarray, Any, float | None]:
        """LightGBM's own TreeSHAP: per row, each transformed column's value then the base value
        (multiclass: one such block per class), in raw-score units."""
        width = transformed.shape[1]
        contrib = np.asarray(self.estimator.predict(transformed, pred_contrib=True), dtype=float)
        output = np.asarray(self.estimator.predict(transformed, raw_score=True), dtype=float)
        if self.multiclass:
            blocks = contrib.reshape(len(transformed), -1, width + 1)  # rows x classes x (columns + base)
            per_column = np.transpose(blocks[:, :, :width], (0, 2, 1))
            base: Any = blocks[0, :, width].copy()
            values = sum_class_columns(per_column, self.owners, len(self.features))
            return values, base, relative_error(values.sum(axis=1) + base[None, :], output)
        base = float(contrib[0, width]) if len(contrib) else 0.0
        values = sum_columns(contrib[:, :width], self.owners, len(self.features))
        return values, base, relative_error(values.sum(axis=1) + base, output)

    def _explain_classes(self, transformed: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Every class of a multiclass classifier: its SHAP values, base value and output."""
        if self.hgb:
            matrix, owners = self.trees.inputs(transformed)
            raw = np.stack([np.asarray(e.shap_values(matrix, check_additivity=False), dtype=float)
                            for e in self.explainers], axis=2)
            per_column = sum_class_columns(raw, owners, transformed.shape[1])
            base = np.asarray([float(np.ravel(e.expected_value)[0]) for e in self.explainers])
            output = margin(self.estimator, transformed, True)
        else:
            raw_any = self.explainer.shap_values(transformed.astype(np.float32), check_additivity=False)
            per_column = (np.stack([np.asarray(v, dtype=float) for v in raw_any], axis=2)
                          if isinstance(raw_any, list) else np.asarray(raw_any, dtype=float))
            base = np.ravel(np.asarray(self.explainer.expected_value, dtype=float))
            output = np.asarray(self.estimator.predict_proba(transformed), dtype=float)
        values = sum_class_columns(per_column, self.owners, len(self.features))
        error = relative_error(values.sum(axis=1) + base[None, :], output)
        return values, base, error


def _positive_slice(raw: Any) -> np.ndarray:
    """The positive-class slice of a classifier's SHAP output (list per class or rows x cols x classes)."""
    if isinstance(raw, list):
        return np.asarray(raw[-1], dtype=float)
    array = np.asarray(raw, dtype=float)
    return array[:, :, -1] if array.ndim == 3 else array
