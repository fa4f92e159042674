"""Fitting and evaluating the chosen pipeline (pure: no MLflow, no storage)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["class_order", "evaluate", "fit_pipeline", "metrics_from_scores", "predict_scores"]


def fit_pipeline(params: dict[str, Any], cfg: ModelConfig, X: pd.DataFrame, y: pd.Series, seed: int) -> Pipeline:
    """Build the pipeline described by `params` and fit it on all of the training data."""
    from autopilot.modeling.search_space import build_pipeline

    pipeline = build_pipeline(params, cfg, seed)
    pipeline.fit(X, y)
    return pipeline


def predict_scores(pipeline: Any, X: pd.DataFrame, task: Task) -> np.ndarray:
    """The positive-class probability (binary), the prediction (regression), or for multiclass the
    class probabilities: shape (rows, classes), columns in `class_order(pipeline)`."""
    if task is Task.BINARY_CLASSIFICATION:
        return np.asarray(pipeline.predict_proba(X))[:, 1]
    if task is Task.MULTICLASS_CLASSIFICATION:
        return np.asarray(pipeline.predict_proba(X), dtype=float)
    return np.asarray(pipeline.predict(X), dtype=float)


def class_order(pipeline: Any) -> list[Any]:
    """The labels of a fitted classifier, in the order of its `predict_proba` columns."""
    return list(np.asarray(pipeline.classes_).tolist())


def evaluate(pipeline: Any, X: pd.DataFrame, y: pd.Series, task: Task, threshold: float = 0.5) -> dict[str, float]:
    """Test metrics: ROC AUC, accuracy, precision, recall, F1, log loss and Brier for
    binary classification; the `MULTICLASS_METRICS` for multiclass (in the model's class order);
    RMSE, MAE and R² for regression.

    Raises:
        ValueError: on an empty test set (there is nothing to measure).
    """
    if len(X) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    labels = class_order(pipeline) if task is Task.MULTICLASS_CLASSIFICATION else None
    return metrics_from_scores(y, predict_scores(pipeline, X, task), task, threshold, labels=labels)


def metrics_from_scores(y: pd.Series, scores: np.ndarray, task: Task, threshold: float = 0.5,
                        labels: list[Any] | None = None) -> dict[str, float]:
    """The test metrics of `evaluate`, from scores already predicted (so they are predicted once).

    Args:
        labels: multiclass only, and required there: the class order of the score columns
            (`class_order(model)`).

    Raises:
        ValueError: multiclass scores without `labels`, or of another width.
    """
    if task is Task.BINARY_CLASSIFICATION:
        return _classification_metrics(np.asarray(y), scores, threshold)
    if task is Task.MULTICLASS_CLASSIFICATION:
        from autopilot.modeling.multiclass import multiclass_metrics

        if labels is None:
            raise ValueError("multiclass metrics need the class order of the scores (labels=class_order(model))")
        return multiclass_metrics(y, scores, labels)
    return _regression_metrics(np.asarray(y, dtype=float), scores)


def _classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn import metrics

    labels = (proba >= threshold).astype(int)
    result = {
        "roc_auc": metrics.roc_auc_score(y, proba) if len(np.unique(y)) == 2 else math.nan,
        "accuracy": metrics.accuracy_score(y, labels),
        "precision": metrics.precision_score(y, labels, zero_division=0),
        "recall": metrics.recall_score(y, labels, zero_division=0),
        "f1": metrics.f1_score(y, labels, zero_division=0),
        "log_loss": metrics.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]),
        "brier": metrics.brier_score_loss(y, proba),
    }
    return {name: float(value) for name, value in result.items()}


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    return {
        "rmse": float(math.sqrt(metrics.mean_squared_error(y, pred))),
        "mae": float(metrics.mean_absolute_error(y, pred)),
        "r2": float(metrics.r2_score(y, pred)),
    }
