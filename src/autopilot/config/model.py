"""The whole model config (`ModelConfig`), its checks across sections, and `LoadedConfig` (one read from a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from autopilot.config.base import IDENTIFIER, Frozen
from autopilot.config.data import DataConfig, FeatureSpec, SplitConfig, TargetConfig, Task, ValidationConfig
from autopilot.config.deployment import DeploymentConfig
from autopilot.config.gates import GatesConfig
from autopilot.config.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from autopilot.config.monitoring import AlertsConfig, MonitoringConfig
from autopilot.config.training import DATA_SCHEDULE, TrainingConfig
from autopilot.config.tuning import TuningConfig

__all__ = ["LoadedConfig", "ModelConfig", "RegistryConfig", "RetentionConfig"]


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


class ModelConfig(Frozen):
    """Everything autopilot needs to know about one model."""

    name: Annotated[str, Field(pattern=IDENTIFIER)]
    description: str = ""
    task: Task
    data: DataConfig
    target: TargetConfig
    features: dict[str, FeatureSpec] = Field(min_length=1)
    sensitive_attributes: list[str] = Field(default_factory=list)
    split: SplitConfig = Field(default_factory=SplitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    metric: str = Field(description="The metric tuning optimizes and gates compare.")
    gates: GatesConfig = Field(default_factory=GatesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        allowed = CLASSIFICATION_METRICS if self.task is Task.BINARY_CLASSIFICATION else REGRESSION_METRICS
        quality = self.gates.quality
        named = (("metric", [self.metric]), ("gates.quality.min_metrics", list(quality.min_metrics)),
                 ("gates.quality.max_metrics", list(quality.max_metrics)))
        for key, names in named:
            for name in names:
                if name not in allowed:
                    raise ValueError(
                        f"{key}: {name!r} is not a {self.task.value} metric; expected one of {list(allowed)}")
        if self.target.column in self.features:
            raise ValueError(f"target.column {self.target.column!r} is also listed under features")
        for attr in self.sensitive_attributes:
            if attr not in self.features:
                raise ValueError(f"sensitive_attributes: {attr!r} is not one of the features")
        self._check_fairness_groups()
        self._check_training_watcher()
        for column in self.monitoring.drift.methods:
            if column not in self.features:
                raise ValueError(f"monitoring.drift.methods: {column!r} is not one of the features")
        drift = self.monitoring.drift
        if not drift.weighted_share_alert <= drift.weighted_share_retrain <= drift.severe_weighted_share:
            raise ValueError("monitoring.drift: weighted_share_alert <= weighted_share_retrain <= "
                             "severe_weighted_share must hold")
        if self.task is Task.BINARY_CLASSIFICATION:
            self._check_binary_target()
        elif self.target.positive_class is not None or self.target.classes is not None:
            raise ValueError("target.positive_class and target.classes apply to classification only")
        return self

    def _check_fairness_groups(self) -> None:
        """Bins only for numeric sensitive attributes; intersections only of sensitive attributes."""
        fairness = self.gates.fairness
        for attr in fairness.bins:
            if attr not in self.sensitive_attributes:
                raise ValueError(f"gates.fairness.bins: {attr!r} is not one of sensitive_attributes")
            if self.features[attr].type != "numeric":
                raise ValueError(f"gates.fairness.bins: {attr!r} is a {self.features[attr].type} feature; "
                                 "bins apply to numeric sensitive attributes only")
        for entry in fairness.intersections:
            for attr in entry:
                if attr not in self.sensitive_attributes:
                    raise ValueError(f"gates.fairness.intersections: {attr!r} (in {entry}) is not one of "
                                     "sensitive_attributes")

    def _check_training_watcher(self) -> None:
        """An SQS watcher needs data events to watch for and an S3 source."""
        if self.training.sqs_queue_url is None:
            return
        if self.training.schedule != DATA_SCHEDULE:
            raise ValueError(f"training.sqs_queue_url applies to `training.schedule: {DATA_SCHEDULE}` only")
        if not self.data.source.startswith("s3://"):
            raise ValueError("training.sqs_queue_url needs an s3:// data.source (S3 event notifications)")

    def _check_binary_target(self) -> None:
        target = self.target
        if target.positive_class is None:
            raise ValueError("target.positive_class is required for binary_classification")
        if target.classes is not None:
            if len(target.classes) != 2:
                raise ValueError(f"target.classes must list exactly 2 labels, got {len(target.classes)}")
            if target.positive_class not in target.classes:
                raise ValueError(f"target.positive_class {target.positive_class!r} is not in target.classes")

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
