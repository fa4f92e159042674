"""The whole model config (`ModelConfig`), its checks across sections, and `LoadedConfig` (one read from a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from autopilot.config.base import IDENTIFIER, Frozen, Inconsistent
from autopilot.config.data import DataConfig, FeatureSpec, SplitConfig, TargetConfig, Task, ValidationConfig
from autopilot.config.deployment import DeploymentConfig
from autopilot.config.gates import GatesConfig
from autopilot.config.metrics import metrics_for
from autopilot.config.monitoring import AlertsConfig, MonitoringConfig
from autopilot.config.training import DATA_SCHEDULE, TrainingConfig
from autopilot.config.tuning import TuningConfig

__all__ = ["MAX_CLASSES", "MIN_CLASSES", "EvaluationConfig", "LoadedConfig", "ModelConfig", "RegistryConfig",
           "RetentionConfig"]

# A multiclass target has 3 to 50 labels: 2 is binary; beyond 50 per-class gates and reports stop being
# readable and per-class intervals need more rows than a tabular batch holds.
MIN_CLASSES, MAX_CLASSES = 3, 50


class RetentionConfig(Frozen):
    """Which versions are kept; the champion and the rollback target never retire."""

    keep_last: Annotated[int, Field(ge=1)] = Field(default=10, description="Versions kept besides protected ones.")
    delete_artifacts: bool = Field(default=False, description="Delete a retired version's model files too.")


class RegistryConfig(Frozen):
    """Where versions are registered."""

    name: str | None = Field(default=None, description="Registered model name; defaults to the model name.")
    allow_pickle: bool = Field(
        default=False,
        description="Allow a pickle-based model file when skops cannot store the model with trusted types.",
    )


class EvaluationConfig(Frozen):
    """What MLflow records about each version beyond its test metrics: evaluation plots, parameter importance."""

    max_rows: Annotated[int, Field(ge=100)] = Field(
        default=20_000,
        description="Holdout rows MLflow's evaluator (its curves and plots on each version) sees at most; a larger "
                    "holdout is sampled with the split seed. The test_* metrics always use every row.",
    )
    importance_min_trials: Annotated[int, Field(ge=2)] = Field(
        default=5,
        description="Complete trials of the winning family needed to plot Optuna's parameter importance "
                    "(fewer: the plot says why it is absent).",
    )


class ModelConfig(Frozen):
    """Everything autopilot needs to know about one model."""

    name: Annotated[str, Field(pattern=IDENTIFIER)] = Field(
        description="Model name: names the DAGs; must equal the file name without .yaml (lowercase, digits, _)."
    )
    description: str = Field(default="", description="What the model is for (shown in MLflow).")
    task: Task = Field(description="The learning task.")
    data: DataConfig
    target: TargetConfig
    features: dict[str, FeatureSpec] = Field(min_length=1, description="Input columns by name, in order.")
    sensitive_attributes: list[str] = Field(
        default_factory=list, description="Features audited by the fairness gate (and watched for drift)."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    metric: str = Field(description="The metric tuning optimizes and gates compare.")
    gates: GatesConfig = Field(default_factory=GatesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        problems = self.consistency_problems()
        if problems:
            raise Inconsistent(problems)
        return self

    def consistency_problems(self) -> list[tuple[str, str]]:
        """Every problem across sections, as (key path, sentence) pairs; empty when consistent."""
        problems = self._metric_problems()
        if self.target.column in self.features:
            problems.append(("target.column", f"{self.target.column!r} is also listed under features"))
        problems += [("sensitive_attributes", f"{attr!r} is not one of the features")
                     for attr in self.sensitive_attributes if attr not in self.features]
        problems += self._fairness_group_problems()
        problems += self._training_watcher_problems()
        problems += [("monitoring.drift.methods", f"{column!r} is not one of the features")
                     for column in self.monitoring.drift.methods if column not in self.features]
        drift = self.monitoring.drift
        if not drift.weighted_share_alert <= drift.weighted_share_retrain <= drift.severe_weighted_share:
            problems.append(("monitoring.drift", "weighted_share_alert <= weighted_share_retrain <= "
                             "severe_weighted_share must hold"))
        if self.task is Task.BINARY_CLASSIFICATION:
            problems += self._binary_target_problems()
        elif self.task is Task.MULTICLASS_CLASSIFICATION:
            problems += self._multiclass_target_problems()
        elif self.target.positive_class is not None or self.target.classes is not None:
            problems.append(("target", "positive_class and classes apply to classification only"))
        return problems

    def _metric_problems(self) -> list[tuple[str, str]]:
        """The metric and the quality floors name metrics of this task."""
        allowed = metrics_for(self.task)
        quality = self.gates.quality
        named = (("metric", [self.metric]), ("gates.quality.min_metrics", list(quality.min_metrics)),
                 ("gates.quality.max_metrics", list(quality.max_metrics)))
        return [(key, f"{name!r} is not a {self.task.value} metric; expected one of {list(allowed)}")
                for key, names in named for name in names if name not in allowed]

    def _fairness_group_problems(self) -> list[tuple[str, str]]:
        """Bins only for numeric sensitive attributes; intersections only of sensitive attributes."""
        fairness = self.gates.fairness
        problems: list[tuple[str, str]] = []
        for attr in fairness.bins:
            if attr not in self.sensitive_attributes:
                problems.append(("gates.fairness.bins", f"{attr!r} is not one of sensitive_attributes"))
            elif attr in self.features and self.features[attr].type != "numeric":
                problems.append(("gates.fairness.bins", f"{attr!r} is a {self.features[attr].type} feature; "
                                 "bins apply to numeric sensitive attributes only"))
        for entry in fairness.intersections:
            problems += [("gates.fairness.intersections", f"{attr!r} (in {entry}) is not one of sensitive_attributes")
                         for attr in entry if attr not in self.sensitive_attributes]
        return problems

    def _training_watcher_problems(self) -> list[tuple[str, str]]:
        """An SQS watcher needs data events to watch for and an S3 source."""
        if self.training.sqs_queue_url is None:
            return []
        if self.training.schedule != DATA_SCHEDULE:
            return [("training.sqs_queue_url", f"applies to `training.schedule: {DATA_SCHEDULE}` only")]
        if not self.data.source.startswith("s3://"):
            return [("training.sqs_queue_url", "needs an s3:// data.source (S3 event notifications)")]
        return []

    def _binary_target_problems(self) -> list[tuple[str, str]]:
        target = self.target
        if target.positive_class is None:
            return [("target.positive_class", "required for binary_classification")]
        if target.classes is not None:
            if len(target.classes) != 2:
                return [("target.classes", f"must list exactly 2 labels, got {len(target.classes)}")]
            if target.positive_class not in target.classes:
                return [("target.positive_class", f"{target.positive_class!r} is not in target.classes")]
        return []

    def _multiclass_target_problems(self) -> list[tuple[str, str]]:
        target = self.target
        if target.positive_class is not None:
            return [("target.positive_class", "applies to binary_classification only; a multiclass model "
                     "predicts every class")]
        if target.classes is not None and not MIN_CLASSES <= len(set(target.classes)) <= MAX_CLASSES:
            return [("target.classes", f"must list {MIN_CLASSES} to {MAX_CLASSES} distinct labels for "
                     f"multiclass_classification, got {len(set(target.classes))}")]
        return []

    @property
    def registered_model_name(self) -> str:
        """The MLflow registered model name."""
        return self.registry.name or self.name

    @property
    def numeric_features(self) -> list[str]:
        """Numeric feature names, in config order."""
        return [n for n, f in self.features.items() if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        """Categorical feature names, in config order."""
        return [n for n, f in self.features.items() if f.type == "categorical"]

    @property
    def columns(self) -> list[str]:
        """Every column a batch must have: the features in config order, then the target."""
        return [*self.features, self.target.column]


class LoadedConfig(ModelConfig):
    """A config together with the file it came from (for resolving relative paths)."""

    path: str = Field(description="Absolute path of the YAML file this config was read from.")

    def resolve(self, location: str) -> str:
        """Resolve a data location: URIs pass through, relative paths join the config's folder."""
        if "://" in location:
            return location
        candidate = Path(location).expanduser()
        if not candidate.is_absolute():
            candidate = Path(self.path).parent / candidate
        return str(candidate.resolve())
