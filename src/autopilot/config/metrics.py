"""The metrics a config may name, per task, and which way each is better: the one definition of both."""

from __future__ import annotations

__all__ = ["CLASSIFICATION_METRICS", "LOWER_IS_BETTER", "MULTICLASS_METRICS", "REGRESSION_METRICS", "metrics_for"]

CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
# Multiclass: one-vs-rest ROC AUC (macro over classes), log loss over the class probabilities,
# macro F1 and accuracy of the most probable class, balanced accuracy (mean recall per class).
MULTICLASS_METRICS = ("roc_auc_ovr", "log_loss", "f1_macro", "accuracy", "balanced_accuracy")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# The metrics for which a smaller value is better; every other metric is better larger.
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


def metrics_for(task: str) -> tuple[str, ...]:
    """The metrics a config of this task (a `Task` value) may name."""
    return {"binary_classification": CLASSIFICATION_METRICS, "multiclass_classification": MULTICLASS_METRICS,
            "regression": REGRESSION_METRICS}[str(task)]
