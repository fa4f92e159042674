"""The model configuration: one YAML file per model, validated once into frozen pydantic models.

Every mistake in a config file becomes a `ConfigError` that names the file, the key and what
was expected, so a typo never turns into a silent default.

Data locations are confined: a config loaded from a file may read (`data.source`,
`data.test_source`, `monitoring.labels_source`, `deployment.instance_catalog`) only under its own
folder or a root the platform allows in `AUTOPILOT_DATA_ROOTS` (see `DataRoots`), after `..` and
symlinks are resolved. Whoever can write a config must not be able to point training, and the
examples validation quotes into MLflow, run notes and Slack, at `/etc`, `~/.aws` or someone
else's bucket.

The package, by section: `data`, `tuning`, `gates`, `deployment`, `monitoring` (with alerts),
`metrics` (which metrics a task may name and which way each is better), `model` (the whole
config and its checks across sections), `roots` (data confinement), `loading` (reading a file,
error messages, the content hash, the JSON schema) and `base` (the error and the section base).
`draft` (`autopilot init-config`) generates a config from data; it is not imported here.
"""

from autopilot.config.base import IDENTIFIER, ConfigError, Share
from autopilot.config.data import DataConfig, FeatureSpec, SplitConfig, TargetConfig, Task, ValidationConfig
from autopilot.config.deployment import (
    AwsDeploymentConfig,
    DeploymentConfig,
    RolloutConfig,
    ServiceLevelConfig,
    ServingConfig,
)
from autopilot.config.gates import (
    Baseline,
    Confidence,
    ExplainabilityGateConfig,
    FairnessGateConfig,
    GatesConfig,
    InfraGateConfig,
    OnInconclusive,
    QualityGateConfig,
)
from autopilot.config.loading import check_name_matches_file, config_hash, config_json_schema, load_config
from autopilot.config.metrics import (
    CLASSIFICATION_METRICS,
    LOWER_IS_BETTER,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    metrics_for,
)
from autopilot.config.model import MAX_CLASSES, MIN_CLASSES, LoadedConfig, ModelConfig, RegistryConfig, RetentionConfig
from autopilot.config.monitoring import (
    AlertsConfig,
    AnomalyConfig,
    DriftConfig,
    DriftMethod,
    MonitoringConfig,
    RetrainConfig,
)
from autopilot.config.roots import BUNDLED_DATA, DATA_ROOTS_ENV, DataRoots
from autopilot.config.training import TrainingConfig
from autopilot.config.tuning import ModelFamily, TuningConfig

__all__ = [
    "BUNDLED_DATA",
    "CLASSIFICATION_METRICS",
    "DATA_ROOTS_ENV",
    "IDENTIFIER",
    "LOWER_IS_BETTER",
    "MAX_CLASSES",
    "MIN_CLASSES",
    "MULTICLASS_METRICS",
    "REGRESSION_METRICS",
    "AlertsConfig",
    "AnomalyConfig",
    "AwsDeploymentConfig",
    "Baseline",
    "Confidence",
    "ConfigError",
    "DataConfig",
    "DataRoots",
    "DeploymentConfig",
    "DriftConfig",
    "DriftMethod",
    "ExplainabilityGateConfig",
    "FairnessGateConfig",
    "FeatureSpec",
    "GatesConfig",
    "InfraGateConfig",
    "LoadedConfig",
    "ModelConfig",
    "ModelFamily",
    "MonitoringConfig",
    "OnInconclusive",
    "QualityGateConfig",
    "RegistryConfig",
    "RetentionConfig",
    "RetrainConfig",
    "RolloutConfig",
    "ServiceLevelConfig",
    "ServingConfig",
    "Share",
    "SplitConfig",
    "TargetConfig",
    "Task",
    "TrainingConfig",
    "TuningConfig",
    "ValidationConfig",
    "check_name_matches_file",
    "config_hash",
    "config_json_schema",
    "load_config",
    "metrics_for",
]
