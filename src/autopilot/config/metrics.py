"""The metrics a config may name, per task, and which way each is better: the one definition of both."""

from __future__ import annotations

__all__ = ["CLASSIFICATION_METRICS", "LOWER_IS_BETTER", "REGRESSION_METRICS"]

CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# The metrics for which a smaller value is better; every other metric is better larger.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})
