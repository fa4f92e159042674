"""MLflow's model evaluation (`mlflow.models.evaluate`) of a fitted model on its holdout, on the version's run.

The default evaluator computes its metrics and plots (classifier: ROC, precision-recall, lift and
calibration curves and the confusion matrix; regressor: its metrics) and links them to the logged
model and the evaluation dataset, as MLflow 3 does. It is given the model already fitted in this
process, wrapped as a pyfunc model with the logged model's own MLmodel metadata: nothing is
loaded or deserialized again (model loading goes through `model_loading` only). Its SHAP
explainer is off (slow, and autopilot has its own). Custom figures (the regression residuals)
are drawn by the caller's functions and logged by the evaluator beside its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry.runs import made_active

if TYPE_CHECKING:
    from autopilot.adapters.registry.store import Registry

__all__ = ["METRIC_PREFIX", "Evaluation", "FigureFn", "evaluate_fitted"]

# Prepended to every metric and artifact the evaluator logs, apart from the run's `test_*` metrics.
METRIC_PREFIX = "holdout_"

# A figure from the holdout's targets and predictions, written to the given path (returned).
FigureFn = Callable[[Any, Any, Path], Path]


@dataclass(frozen=True)
class Evaluation:
    """What the evaluator logged: its metrics (prefixed) and the artifact names of its plots."""

    metrics: dict[str, float]
    artifacts: list[str] = field(default_factory=list)


class _Fitted:
    """A fitted estimator as a pyfunc implementation; `get_raw_model` gives the evaluator `_OnePass`."""

    def __init__(self, model: Any) -> None:
        self.model = _OnePass(model)

    def get_raw_model(self) -> Any:
        """What the evaluator calls `predict`, `predict_proba` and `score` on."""
        return self.model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Predictions (labels or values)."""
        return self.model.predict(data)


class _OnePass:
    """The estimator, predicting each frame once: MLflow's evaluator asks for labels, probabilities and
    the score of the same rows, which would be three passes of the model (a third of its time)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._key: int | None = None
        self._outputs: Any = None

    def _predicted(self, data: Any) -> Any:
        import pandas as pd

        key = int(pd.util.hash_pandas_object(data, index=False).sum()) ^ len(data)
        if key != self._key:
            self._key = None  # no stale answer if the prediction raises
            is_classifier = hasattr(self.model, "predict_proba")
            self._outputs = self.model.predict_proba(data) if is_classifier else self.model.predict(data)
            self._key = key
        return self._outputs

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities (the estimator's, for these rows)."""
        return self._predicted(data)

    def predict(self, data: Any) -> Any:
        """Labels (the most probable class, as scikit-learn's `predict`) or values."""
        import numpy as np

        out = self._predicted(data)
        return self.model.classes_[np.argmax(out, axis=1)] if hasattr(self.model, "predict_proba") else out

    def score(self, data: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classifier) or R² (regressor), as scikit-learn's `score`."""
        from sklearn.metrics import accuracy_score, r2_score

        metric = accuracy_score if hasattr(self.model, "predict_proba") else r2_score
        return float(metric(y, self.predict(data), sample_weight=sample_weight))


def evaluate_fitted(registry: Registry, run_id: str, *, model_id: str, mlmodel: Path, estimator: Any,
                    dataset: Any, model_type: str, figures: Mapping[str, FigureFn] | None = None,
                    labels: list[Any] | None = None) -> Evaluation:
    """Run MLflow's default evaluator on a fitted estimator and log its results to a run.

    Args:
        registry, run_id: the store and the run the results go to (the version's training run).
        model_id: the logged model the metrics are linked to (the version's `models:/m-...`).
        mlmodel: the logged model's MLmodel file (metadata only: read as YAML, nothing loaded).
        estimator: the fitted model the logged model holds (in memory: not loaded again).
        dataset: a `pandas_dataset` of the holdout features and encoded target (`targets` set);
            recorded as a run input, and named with the metrics.
        model_type: `classifier` (binary, labels 0/1, 1 the positive class; or multiclass, with
            `labels`) or `regressor`.
        labels: a multiclass model's class order (its `classes_`); None for binary and regression.
        figures: artifact name -> function drawing a PNG from (targets, predictions).

    Returns:
        The evaluator's metrics (prefixed with `METRIC_PREFIX`) and artifact names.
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")  # the evaluator plots through pyplot
    import mlflow
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel
    from threadpoolctl import threadpool_limits

    model = PyFuncModel(model_meta=Model.load(str(mlmodel)), model_impl=_Fitted(estimator), model_id=model_id)
    config: dict[str, Any] = {"log_model_explainability": False, "metric_prefix": METRIC_PREFIX}
    if model_type == "classifier" and labels is not None:
        config.update(label_list=list(labels))  # multiclass: per-class curves, no positive class
    elif model_type == "classifier":
        config.update(pos_label=1, label_list=[0, 1])
    # One native thread: on a busy 2-core worker OpenMP threads contend (as in the fairness gate).
    with made_active(registry, run_id), threadpool_limits(limits=1):
        result = mlflow.models.evaluate(
            model, dataset, model_type=model_type, evaluators="default", evaluator_config=config,
            custom_artifacts=[_custom(name, draw) for name, draw in (figures or {}).items()], model_id=model_id,
        )
    return Evaluation(metrics={k: float(v) for k, v in result.metrics.items()}, artifacts=sorted(result.artifacts))


def _custom(name: str, draw: FigureFn) -> Callable[[Any, Any, str], dict[str, str]]:
    """An evaluator custom artifact: `draw` on the evaluation frame's targets and predictions."""

    def artifact(eval_df: Any, _metrics: Any, artifacts_dir: str) -> dict[str, str]:
        path = draw(eval_df["target"].to_numpy(), eval_df["prediction"].to_numpy(), Path(artifacts_dir) / f"{name}.png")
        return {f"{METRIC_PREFIX}{name}": str(path)}  # the evaluator prefixes only its own artifacts

    artifact.__name__ = name
    return artifact
