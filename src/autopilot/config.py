"""The model configuration: one YAML file per model, validated once into frozen pydantic models.

Every mistake in a config file becomes a `ConfigError` that names the file, the key and what
was expected, so a typo never turns into a silent default.

Data locations are confined: a config loaded from a file may read (`data.source`,
`data.test_source`, `monitoring.labels_source`, `deployment.instance_catalog`) only under its own
folder or a root the platform allows in `AUTOPILOT_DATA_ROOTS` (see `DataRoots`), after `..` and
symlinks are resolved. Whoever can write a config must not be able to point training, and the
examples validation quotes into MLflow, run notes and Slack, at `/etc`, `~/.aws` or someone
else's bucket.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataRoots",
    "FeatureSpec",
    "ExplainabilityGateConfig",
    "FairnessGateConfig",
    "GatesConfig",
    "InfraGateConfig",
    "QualityGateConfig",
    "DeploymentConfig",
    "RetentionConfig",
    "ServiceLevelConfig",
    "ServingConfig",
    "MonitoringConfig",
    "AlertsConfig",
    "DriftConfig",
    "AnomalyConfig",
    "RetrainConfig",
    "RolloutConfig",
    "AwsDeploymentConfig",
    "ModelConfig",
    "ModelFamily",
    "SplitConfig",
    "TargetConfig",
    "Task",
    "TuningConfig",
    "ValidationConfig",
    "config_hash",
    "check_name_matches_file",
    "config_json_schema",
    "load_config",
]

IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"


class ConfigError(ValueError):
    """A model configuration file is missing, unreadable or invalid."""


DATA_ROOTS_ENV = "AUTOPILOT_DATA_ROOTS"
# The project's bundled sample data (`data/` of a source checkout; absent from an installed
# package): the only extra root while AUTOPILOT_DATA_ROOTS is unset, so the demo validates.
BUNDLED_DATA = Path(__file__).resolve().parents[2] / "data"
# os.pathsep separates entries; on POSIX that is ":", which `s3://` also contains.
_ROOT_SEPARATOR = re.compile(rf"{re.escape(os.pathsep)}(?!//)")


@dataclass(frozen=True)
class DataRoots:
    """Where a config may read data from: its own folder, and the platform's allowed roots.

    The roots beyond the config's folder come from `AUTOPILOT_DATA_ROOTS` (entries separated by
    `os.pathsep`: absolute local folders and `s3://bucket/prefix`); unset, they are the bundled
    sample-data folder; set to an empty string, there are none. A bucket is never allowed because
    the config itself names it (`deployment.aws.bucket` included): the config's author would then
    grant their own access.
    """

    config_dir: Path
    folders: tuple[Path, ...] = ()
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket, key prefix without the trailing slash)

    @classmethod
    def for_config(cls, config_file: Path, environ: Mapping[str, str] | None = None) -> DataRoots:
        """The roots for a config file; raises ValueError naming AUTOPILOT_DATA_ROOTS if an entry is malformed."""
        env = os.environ if environ is None else environ
        raw = env.get(DATA_ROOTS_ENV)
        if raw is None:
            entries = [str(BUNDLED_DATA)] if BUNDLED_DATA.is_dir() else []
        else:
            entries = [e.strip() for e in _ROOT_SEPARATOR.split(raw) if e.strip()]
        folders: list[Path] = []
        buckets: list[tuple[str, str]] = []
        for entry in entries:
            if entry.startswith("s3://"):
                parsed = urlparse(entry)
                if not parsed.netloc:
                    raise ValueError(f"{DATA_ROOTS_ENV}: {entry!r} names no bucket; expected s3://bucket/prefix")
                buckets.append((parsed.netloc, parsed.path.strip("/")))
            elif "://" in entry or not Path(entry).expanduser().is_absolute():
                raise ValueError(f"{DATA_ROOTS_ENV}: {entry!r} is neither an absolute local folder nor "
                                 "s3://bucket/prefix")
            else:
                folders.append(Path(entry).expanduser().resolve())
        return cls(config_file.parent.resolve(), tuple(folders), tuple(buckets))

    def describe(self) -> str:
        """The allowed roots, for error messages."""
        roots = [f"{self.config_dir} (the config's folder)", *map(str, self.folders),
                 *(f"s3://{bucket}/{prefix}".rstrip("/") for bucket, prefix in self.buckets)]
        return ", ".join(roots)

    def check(self, location: str) -> str:
        """Return `location` if it lies under an allowed root; raise ValueError saying why not and how to allow it."""
        parsed = urlparse(location) if "://" in location else None
        if parsed is not None and parsed.scheme == "s3":
            return self._check_s3(location, parsed.netloc, parsed.path.lstrip("/"))
        if parsed is not None and parsed.scheme != "file":
            raise ValueError(f"{location!r}: unsupported scheme {parsed.scheme!r}; use a local path or s3://")
        path = Path(parsed.path if parsed is not None else location).expanduser()
        resolved = (path if path.is_absolute() else self.config_dir / path).resolve()  # `..` and symlinks
        if any(resolved.is_relative_to(root) for root in (self.config_dir, *self.folders)):
            return location
        raise ValueError(f"{location!r} resolves to {resolved}, outside the allowed data roots: {self.describe()}. "
                         f"Move the data under the config's folder, or allow its folder in {DATA_ROOTS_ENV} "
                         f"(absolute folders and s3://bucket/prefix, separated by {os.pathsep!r}) for every Airflow "
                         "component and the CLI")

    def _check_s3(self, location: str, bucket: str, key: str) -> str:
        if not bucket or not key:
            raise ValueError(f"{location!r}: expected s3://bucket/key")
        if {".", ".."} & set(PurePosixPath(key).parts) or "//" in key:
            raise ValueError(f"{location!r}: '.', '..' and empty segments are not allowed in an S3 key")
        for root_bucket, prefix in self.buckets:
            if bucket == root_bucket and (not prefix or key == prefix or key.startswith(prefix + "/")):
                return location
        raise ValueError(f"{location!r} is outside the allowed data roots: {self.describe()}. A bucket is read only "
                         f"when the platform allows it: add s3://{bucket}/<prefix> to {DATA_ROOTS_ENV} for every "
                         "Airflow component and the CLI")


def _confined(value: str | None, info: ValidationInfo) -> str | None:
    """Check a data location against the roots `load_config` passes in the validation context."""
    roots = (info.context or {}).get("data_roots")
    if value is None or roots is None:  # not from a file (e.g. a recorded config being reproduced)
        return value
    checked: str = roots.check(value)
    return checked


class _Frozen(BaseModel):
    """Base for every config section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Task(StrEnum):
    """The learning task."""

    BINARY_CLASSIFICATION = "binary_classification"
    REGRESSION = "regression"


class ModelFamily(StrEnum):
    """The scikit-learn model families the tuner can choose from."""

    LINEAR = "linear"  # logistic regression for classification, ridge for regression
    RANDOM_FOREST = "random_forest"
    EXTRA_TREES = "extra_trees"
    HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"


class DataConfig(_Frozen):
    """Where the data comes from. Relative paths are resolved against the config file."""

    source: str = Field(description="Local path or s3:// URI of the training batch (CSV or Parquet).")
    test_source: str | None = Field(
        default=None,
        description="Optional held-out batch; when absent the test split is drawn from `source`.",
    )
    format: Literal["auto", "csv", "parquet"] = Field(
        default="auto", description="File format; `auto` decides from the file name."
    )

    @field_validator("source", "test_source")
    @classmethod
    def _check_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _confined(value, info)


class TargetConfig(_Frozen):
    """The column to predict."""

    column: str
    # A YAML `true` stays a bool, matching a bool column's "True" (as an int 1 it would not); only a
    # real bool is one (strict), so 1.0 stays the int 1.
    positive_class: StrictBool | int | str | None = Field(
        default=None, description="The label counted as positive (binary classification only)."
    )
    classes: list[StrictBool | int | str] | None = Field(
        default=None, description="Every allowed label (classification); validation checks it."
    )
    min: float | None = Field(default=None, description="Lowest allowed value (regression).")
    max: float | None = Field(default=None, description="Highest allowed value (regression).")

    @model_validator(mode="after")
    def _check_bounds(self) -> TargetConfig:
        _no_nan_bounds(self.min, self.max)
        return self


class FeatureSpec(_Frozen):
    """One input column: its type and what values are allowed."""

    type: Literal["numeric", "categorical"]
    nullable: bool = Field(default=True, description="Whether missing values are allowed at all.")
    max_null_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.05, description="Highest share of missing values allowed when nullable."
    )
    min: float | None = Field(default=None, description="Lowest allowed value (numeric).")
    max: float | None = Field(default=None, description="Highest allowed value (numeric).")
    categories: list[str] | None = Field(
        default=None, description="Allowed values (categorical); unknown values fail validation."
    )

    @model_validator(mode="after")
    def _check_kind(self) -> FeatureSpec:
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.type == "numeric" and self.categories is not None:
            raise ValueError("categories apply to categorical features only")
        _no_nan_bounds(self.min, self.max)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _no_nan_bounds(low: float | None, high: float | None) -> None:
    """Refuse a NaN bound: Great Expectations reads it as "no bound", so the check would silently pass."""
    for name, value in (("min", low), ("max", high)):
        if value is not None and math.isnan(value):
            raise ValueError(f"{name} is NaN; give a number, or leave it out for no bound")


class SplitConfig(_Frozen):
    """How the data is split, once and seeded, before tuning."""

    seed: int = 42
    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=0.2, description="Share held out for testing when there is no `test_source`."
    )
    stratify: bool = Field(default=True, description="Stratify splits by label (classification).")
    cv_folds: Annotated[int, Field(ge=2, le=20)] = Field(
        default=3, description="Cross-validation folds inside each tuning trial."
    )


class ValidationConfig(_Frozen):
    """Data validation: whole-batch expectations beyond the per-feature schema."""

    min_rows: Annotated[int, Field(ge=1)] = 100
    max_rows: Annotated[int, Field(ge=1)] = 50_000_000
    range_mostly: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=1.0, description="Share of non-null values that must lie inside a numeric range."
    )
    category_mostly: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=1.0, description="Share of non-null values that must be an allowed category."
    )

    @model_validator(mode="after")
    def _check_rows(self) -> ValidationConfig:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        return self


def _listed_once(value: list[Any], what: str) -> list[Any]:
    """`value` unchanged, or a ValueError when an item repeats (a config list meant as a set)."""
    if len(set(value)) != len(value):
        raise ValueError(f"{what} are listed more than once")
    return value


class TuningConfig(_Frozen):
    """The Optuna search budget."""

    n_trials: Annotated[int, Field(ge=1)] = 30
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    families: list[ModelFamily] = Field(default_factory=lambda: list(ModelFamily), min_length=1)
    seed: int = 42
    sampler: Literal["tpe", "random"] = "tpe"
    n_startup_trials: Annotated[int, Field(ge=0)] = Field(
        default=8, description="Random trials before TPE starts modelling the space."
    )
    pruner_warmup_folds: Annotated[int, Field(ge=0)] = Field(
        default=1, description="Folds a trial always completes before it can be pruned."
    )
    max_train_rows: Annotated[int, Field(ge=100)] | None = Field(
        default=None, description="Subsample the tuning folds to this many rows (the refit uses all)."
    )
    parallel_workers: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="Mapped tuning tasks sharing one Optuna study (one per Celery/Kubernetes worker slot). "
        "1 keeps the search exactly reproducible; more trades that for wall-clock time.",
    )
    heartbeat_seconds: Annotated[int, Field(ge=1)] = Field(
        default=20,
        description="With several workers, each running trial beats this often; a trial silent for three beats "
        "belongs to a worker that died: it is failed, and run once more with the same params.",
    )

    @field_validator("families")
    @classmethod
    def _unique(cls, value: list[ModelFamily]) -> list[ModelFamily]:
        return _listed_once(value, "families")


Share = Annotated[float, Field(ge=0.0, le=1.0)]
# What a gate does with an interval straddling its bound (quality and fairness alike).
OnInconclusive = Literal["review", "fail", "pass"]
Confidence = Annotated[float, Field(gt=0.5, lt=1.0)]


Baseline = Literal["prior", "linear"]


class QualityGateConfig(_Frozen):
    """Quality: absolute floors, and non-inferiority against the champion on the same holdout."""

    min_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute floors on test metrics (lower-is-better metrics use max_metrics).",
    )
    max_metrics: dict[str, float] = Field(
        default_factory=dict, description="Absolute ceilings on test metrics, e.g. rmse."
    )
    non_inferiority_margin: Annotated[float, Field(ge=0.0)] = Field(
        default=0.005,
        description="How much worse than the champion on `metric` (in metric units) still counts as not worse.",
    )
    bootstrap_samples: Annotated[int, Field(ge=100, le=100_000)] = 1000
    confidence: Confidence = 0.95
    first_run: Literal["promote", "require_review"] = Field(
        default="promote",
        description="With no champion yet: promote a version that passes every other check, or hold it for review.",
    )
    first_run_baselines: list[Baseline] = Field(
        default_factory=lambda: list(get_args(Baseline)),
        description="With no champion yet, the model is compared on `metric` with these, each fitted on the same "
        "training split and scored on the same holdout: it must surely beat `prior` (the training class rate; "
        "regression: the training mean; whole bootstrap interval of the difference above 0) and be no worse than "
        "`linear` (a logistic regression, regression: ridge, with default regularization on the same features) "
        "by more than `non_inferiority_margin`. [] turns it off.",
    )
    on_inconclusive: OnInconclusive = Field(
        default="review",
        description="A comparison (with the champion or a first-run baseline) whose interval straddles its bound "
        "proves neither pass nor fail: `review` holds the version for a human, `fail` rejects it, `pass` lets "
        "it through (the status stays in the report).",
    )

    @field_validator("first_run_baselines")
    @classmethod
    def _unique_baselines(cls, value: list[Baseline]) -> list[Baseline]:
        return _listed_once(value, "baselines")


class ExplainabilityGateConfig(_Frozen):
    """SHAP explainability: bounded cost, stability against the champion, leakage check."""

    max_rows: Annotated[int, Field(ge=10)] = Field(default=2000, description="Rows explained (sampled, seeded).")
    max_seconds: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="Time budget per explained model (any SHAP path); rows shrink to fit it."
    )
    background_rows: Annotated[int, Field(ge=5)] = Field(
        default=50,
        description="Background sample for the linear and model-agnostic paths (the tree path needs none).",
    )
    top_k: Annotated[int, Field(ge=1)] = Field(default=5, description="k of the nDCG@k ranking stability.")
    min_ndcg: Share = Field(default=0.9, description="Lowest nDCG@k of the importance ranking against the champion.")
    max_feature_share: Share = Field(
        default=0.5, description="Leakage check: the most any one feature may carry of all attribution."
    )


class FairnessGateConfig(_Frozen):
    """Fairness per sensitive attribute, judged by bootstrap confidence intervals.

    An interval-judged metric passes when its whole interval lies inside the allowed band, fails
    when it lies wholly outside, and is inconclusive when it straddles the band's edge
    (`on_inconclusive` decides what that means for the gate).
    """

    min_group_size: Annotated[int, Field(ge=1)] = Field(
        default=30,
        description="Groups smaller than this are reported, not gated; an attribute with fewer than two groups "
                    "this large on the holdout (after binning) fails the gate.",
    )
    demographic_parity_ratio_min: Share | None = Field(
        default=0.8,
        description="Band floor of the demographic parity ratio: pass when its whole CI is at or above this, fail "
                    "when wholly below, else inconclusive (null: report only).",
    )
    demographic_parity_difference_max: Share | None = Field(
        default=None,
        description="Band ceiling of the demographic parity difference: pass when its whole CI is at or below this, "
                    "fail when wholly above, else inconclusive (null: report only).",
    )
    equalized_odds_difference_max: Share | None = Field(
        default=None,
        description="Band ceiling of the equalized odds difference: pass when its whole CI is at or below this, "
                    "fail when wholly above, else inconclusive (null: report only).",
    )
    max_group_error_ratio: Annotated[float, Field(ge=1.0)] | None = Field(
        default=None,
        description="Regression: band ceiling of the worst/best group MAE ratio, judged by its CI like the others.",
    )
    on_inconclusive: OnInconclusive = Field(
        default="review",
        description="A metric whose CI straddles its band: `review` holds the version for a human (the gate fails "
                    "with requires_review unless something failed outright), `fail` rejects, `pass` lets it through "
                    "(the status stays in the report).",
    )
    bins: dict[str, Annotated[list[float], Field(min_length=1)]] = Field(
        default_factory=dict,
        description="Inner bin edges per numeric sensitive attribute, strictly increasing: {age: [25, 40, 60]} "
                    "gives the groups <25, 25–40, 40–60, >=60 (a bin holds its lower edge).",
    )
    quantile_bins: Annotated[int, Field(ge=2, le=20)] = Field(
        default=4,
        description="Numeric sensitive attributes without `bins`: this many quantile bins of the training data, "
                    "merged with neighbours until each holds at least min_group_size rows (a numeric attribute "
                    "with at most this many distinct values is grouped by value).",
    )
    intersections: list[Annotated[list[str], Field(min_length=2)]] = Field(
        default_factory=list,
        description="Intersectional groups, each a list of 2+ sensitive attributes ([sex, age]): their "
                    "combinations are judged like one more attribute.",
    )
    max_counterfactual_flip_rate: Share | None = Field(
        default=0.1, description="Fail when changing a sensitive attribute flips more predictions than this."
    )
    max_sensitive_attribution_share: Share | None = Field(
        default=0.2, description="Fail when sensitive attributes carry more than this share of SHAP attribution."
    )
    bootstrap_samples: Annotated[int, Field(ge=50, le=100_000)] = 500
    confidence: Confidence = 0.95
    threshold: Share = Field(default=0.5, description="Decision threshold turning scores into selections.")

    @field_validator("bins")
    @classmethod
    def _increasing(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for attr, edges in value.items():
            if not all(math.isfinite(edge) for edge in edges):
                raise ValueError(f"{attr!r}: every edge must be a finite number, got {edges}")
            if any(low >= high for low, high in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{attr!r}: edges must be strictly increasing, got {edges}")
        return value

    @field_validator("intersections")
    @classmethod
    def _distinct(cls, value: list[list[str]]) -> list[list[str]]:
        for entry in value:
            if len(set(entry)) != len(entry):
                raise ValueError(f"{entry} names an attribute more than once")
        if len({tuple(entry) for entry in value}) != len(value):
            raise ValueError("an entry is listed more than once")
        return value


class InfraGateConfig(_Frozen):
    """Infra validation: load the version as serving will, query it, measure it."""

    sample_rows: Annotated[int, Field(ge=1)] = 200
    max_load_seconds: Annotated[float, Field(gt=0)] = 60.0
    max_p95_latency_ms: Annotated[float, Field(gt=0)] = 1000.0
    max_peak_memory_mb: Annotated[float, Field(gt=0)] = 4096.0


class GatesConfig(_Frozen):
    """Thresholds the promotion gates enforce."""

    quality: QualityGateConfig = Field(default_factory=QualityGateConfig)
    explainability: ExplainabilityGateConfig = Field(default_factory=ExplainabilityGateConfig)
    fairness: FairnessGateConfig = Field(default_factory=FairnessGateConfig)
    infra: InfraGateConfig = Field(default_factory=InfraGateConfig)


class ServiceLevelConfig(_Frozen):
    """What the deployed model must sustain; environment selection sizes for it."""

    p95_latency_ms: Annotated[float, Field(gt=0)] = Field(default=100.0, description="Single-row p95 latency.")
    peak_rps: Annotated[float, Field(gt=0)] = Field(default=50.0, description="Peak requests per second.")
    min_replicas: Annotated[int, Field(ge=1)] = Field(default=2, description="Replicas kept for availability.")
    headroom: Annotated[float, Field(ge=1.0, le=10.0)] = Field(
        default=1.5, description="Capacity multiplier over the measured need (1.5 = 50% spare)."
    )


class ServingConfig(_Frozen):
    """The serving endpoint's limits (local `autopilot serve` and the generated image alike)."""

    host: str = Field(default="127.0.0.1", description="Interface `autopilot serve` binds to.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8090, description="Port of `autopilot serve` (8080 is the Airflow UI's; containers use 8080)."
    )
    token_env: str = Field(
        default="AUTOPILOT_SERVING_TOKEN",
        description="Environment variable holding the bearer token (never the token itself).",
    )
    max_batch_rows: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1024, description="Most records one /predict request may carry."
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=4_000_000, description="Largest request body accepted (413 above)."
    )
    request_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="A request still unanswered after this gets 504."
    )
    micro_batch_max_rows: Annotated[int, Field(ge=1)] = Field(
        default=256, description="Rows of concurrent requests predicted in one call."
    )
    micro_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] | None = Field(
        default=None,
        description="How long a batch waits for more requests; default (null): adaptive, up to the last "
                    "prediction's duration, and only when the last batch held more than one request.",
    )
    poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="How often the server checks the champion alias for a new version."
    )
    explain_max_rows: Annotated[int, Field(ge=1)] = Field(default=100, description="Most rows one /explain call.")
    compiled_fast_path: bool = Field(
        default=True,
        description="Compile the fitted preprocessing to arrays at load (verified against the pipeline on "
                    "synthetic and example rows; the pipeline serves when it does not apply).",
    )
    unseen_categories: Literal["warn", "reject"] = Field(
        default="warn",
        description="A categorical value the model never saw in training (null is missing, not unseen): "
                    "`warn` answers 200 with a `warnings` entry naming the row, column and value; `reject` "
                    "answers 422 naming the column and value. Both count it per column in "
                    "autopilot_unseen_categories_total.",
    )
    # Overload: past these bounds the endpoint sheds load at once (never queues without bound),
    # so admitted requests keep a bounded latency and the process a bounded memory.
    max_concurrent_requests: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=32,
        description="Most /predict, /invocations, /explain and /feedback requests in progress at once; one "
                    "more gets 429 with Retry-After at once, before its body is read. Under sustained overload "
                    "admitted latency is about this / throughput: the default (about the concurrency at which "
                    "micro-batches fill) keeps it near the latency at capacity; raise it to absorb bursts.",
    )
    max_queued_rows: Annotated[int, Field(ge=1)] = Field(
        default=4096,
        description="Most rows waiting for the micro-batcher; a request that would exceed it gets 429 with "
                    "Retry-After (at least max_batch_rows, so a request of the largest size can be admitted).",
    )
    max_connections: Annotated[int, Field(ge=1)] = Field(
        default=1000,
        description="Most open client connections: a connection opened while this many are open gets 503 with "
                    "Retry-After on its requests (the probes /health, /ready, /ping, /metrics excepted) and is "
                    "closed; the connections already open are served as usual.",
    )
    listen_backlog: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=2048,
        description="Connections the kernel holds before the server accepts them (capped by net.core.somaxconn).",
    )
    retry_after_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=1, description="Retry-After (seconds) sent with every 429 and 503 the endpoint sheds load with."
    )
    header_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Longest time from a connection's opening (or a request's first byte) to the end of the "
                    "request's headers; past it the connection gets 408 and is closed, so idle or trickling "
                    "connections cannot hold max_connections.",
    )
    body_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Longest time to receive a whole request body (a slow client gets 408 and its connection "
                    "is closed); the request_timeout_seconds budget starts once the body is in.",
    )

    @model_validator(mode="after")
    def _check_admission(self) -> ServingConfig:
        if self.max_queued_rows < self.max_batch_rows:
            raise ValueError(f"max_queued_rows ({self.max_queued_rows}) is below max_batch_rows "
                             f"({self.max_batch_rows}): a request of the largest allowed size could never be admitted")
        return self


class RolloutConfig(_Frozen):
    """How a new champion is checked on the live endpoint before the deployment counts as done."""

    smoke_rows: Annotated[int, Field(ge=1)] = Field(default=20, description="Test rows sent as the smoke test.")
    bake_seconds: Annotated[float, Field(ge=0)] = Field(
        default=60.0, description="How long errors and latency are watched after the swap."
    )
    bake_interval_seconds: Annotated[float, Field(gt=0)] = Field(default=5.0, description="Time between checks.")
    max_error_rate: Share = Field(default=0.01, description="Highest share of 5xx answers during the bake.")
    max_p95_latency_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Highest observed p95 during the bake; defaults to the service level's."
    )
    swap_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=120.0, description="How long to wait for the endpoint to serve the new version."
    )


class AwsDeploymentConfig(_Frozen):
    """SageMaker deployment (used when `target: aws`)."""

    region: str = "us-east-1"
    bucket: str = Field(default="autopilot-models", description="S3 bucket for model packages.")
    prefix: str = Field(default="models", description="Key prefix under the bucket.")
    execution_role_arn: str = Field(
        default="arn:aws:iam::123456789012:role/autopilot-sagemaker",
        description="IAM role SageMaker assumes to read the package and pull the image.",
    )
    image_uri: str = Field(
        default="123456789012.dkr.ecr.us-east-1.amazonaws.com/autopilot-serving:latest",
        description="The serving image (built from the generated Dockerfile).",
    )
    aws_conn_id: str = Field(default="aws_default", description="Airflow connection used inside the DAG.")
    canary_percent: Annotated[float, Field(gt=0, lt=100)] = Field(
        default=10.0, description="Share of capacity the blue/green canary shifts first."
    )
    canary_wait_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=600, description="Canary bake before the rest of the traffic moves."
    )
    termination_wait_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=300, description="How long the old fleet is kept after the shift, for a fast rollback."
    )
    alarm_error_rate: Share = Field(default=0.01, description="5xx share that triggers an auto-rollback alarm.")
    wait_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=1800.0, description="Longest wait for an endpoint to reach InService."
    )
    # Bounds on every AWS call (botocore client config): an outage fails the task in bounded
    # time (Airflow retries it), it never hangs a worker.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        default=4, description="Attempts per AWS call (the first plus retries; botocore standard mode, "
                               "which retries throttling, 5xx and connection errors, never auth errors)."
    )
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0, description="Longest wait to connect to an AWS endpoint."
    )
    read_timeout_seconds: Annotated[float, Field(gt=0, le=900)] = Field(
        default=60.0, description="Longest wait for an AWS answer (per attempt; an upload part counts as one)."
    )
    multipart_threshold_mib: Annotated[float, Field(ge=0)] = Field(
        default=64.0, description="Packages larger than this go to S3 as a multipart upload (aborted on failure; "
                                  "0: always multipart)."
    )
    multipart_part_mib: Annotated[int, Field(ge=5, le=5120)] = Field(
        default=16, description="Part size of a multipart upload (S3's minimum is 5 MiB)."
    )


class DeploymentConfig(_Frozen):
    """Where and how the champion is deployed."""

    target: Literal["local", "aws"] = "local"
    instance_catalog: str | None = Field(
        default=None,
        description="Instance types and prices (YAML, relative to this config file); default: the bundled catalog.",
    )
    service_level: ServiceLevelConfig = Field(default_factory=ServiceLevelConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    aws: AwsDeploymentConfig = Field(default_factory=AwsDeploymentConfig)

    @field_validator("instance_catalog")
    @classmethod
    def _check_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _confined(value, info)


DriftMethod = Literal["auto", "wasserstein", "jensenshannon", "psi"]


class DriftConfig(_Frozen):
    """How drift between the training reference and a window of served traffic is decided.

    Windows of at least the large-sample threshold (derived from the reference:
    `monitoring.drift.large_sample_rows`) are decided by effect sizes, not p-values (which flag
    everything at large n): normed Wasserstein distance for numeric columns, Jensen-Shannon
    distance for categorical ones (Evidently's own choices for large data), or PSI where
    configured. Smaller windows (down to `min_rows`) are decided by tests at `small_sample_alpha`.
    A drifted sensitive attribute is at least an alert, whatever its SHAP weight.
    """

    methods: dict[str, DriftMethod] = Field(
        default_factory=dict, description="Per-column method overrides; others use `auto`."
    )
    numeric_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Normed Wasserstein distance above which a numeric column drifted."
    )
    categorical_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Jensen-Shannon distance above which a categorical column drifted."
    )
    psi_threshold: Annotated[float, Field(gt=0)] = Field(default=0.2, description="PSI above which a column drifted.")
    prediction_threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.1, description="Normed Wasserstein distance of the prediction scores above which they drifted."
    )
    # Calibrated on Adult (tests/unit/test_drift.py): 0 alarms in 50 undrifted 2,000-row windows,
    # +0.5 sd on three important features retrains in 40/40 seeds (weighted share 0.28), one
    # important feature (age, share 0.17) moving 1 sd retrains, an unimportant one never does.
    weighted_share_alert: Share = Field(
        default=0.10, description="SHAP-importance-weighted share of drifted columns that raises an alert."
    )
    weighted_share_retrain: Share = Field(
        default=0.15, description="Weighted share of drifted columns that triggers retraining."
    )
    severe_weighted_share: Share = Field(
        default=0.6, description="Weighted share above which the retrain re-tunes instead of refitting."
    )
    # Effect sizes are biased upward by sampling noise in small windows (on Adult, 200-row
    # windows of undrifted traffic mostly alarm: Jensen-Shannon on a 41-category column ~0.15).
    # So effect sizes decide only from a large-sample threshold derived from the reference
    # (`drift.large_sample_rows`: the window size at which noise alone reaches no column's
    # threshold with more than `small_sample_alpha` per window; about 1,800 rows on Adult);
    # smaller windows are decided by tests, as Evidently switches to tests for small references.
    # Calibrated on Adult (tests/unit/test_drift_small.py): at most 2 alarms in 50 undrifted
    # 300-row windows.
    small_sample_alpha: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        default=0.01,
        description="False-alarm rate per window for windows below the large-sample threshold: their columns "
        "(and scores) are tested (two-sample Kolmogorov-Smirnov for numeric, chi-squared on category counts "
        "with sparse categories pooled), Holm-corrected so that noise flags any column with at most this "
        "probability. The same rate derives the threshold: effect sizes decide from the window size (given "
        "the reference's size and shape) at which noise alone crosses a column's threshold with at most this "
        "probability per window.",
    )
    min_rows: Annotated[int, Field(ge=10)] = Field(
        default=100,
        description="Absolute floor: a window with fewer rows decides nothing (reported as insufficient). Between "
        "it and the large-sample threshold, tests decide.",
    )
    bins: Annotated[int, Field(ge=5, le=1000)] = Field(default=20, description="Quantile bins for PSI.")
    report_max_rows: Annotated[int, Field(ge=100)] = Field(
        default=5000, description="Rows sampled (each side) for the Evidently HTML report."
    )
    evidently_report: bool = Field(
        default=True,
        description="Draw Evidently's HTML and JSON report for each window with enough traffic. It is for people: "
        "decisions never read it. Off saves its cost, 2-5 s and a few hundred MB per window on Adult.",
    )


class AnomalyConfig(_Frozen):
    """Adaptive anomaly detection on the metric series the monitor produces (no static thresholds)."""

    min_history: Annotated[int, Field(ge=3)] = Field(
        default=24, description="Points of history before any alarm (baselines need data)."
    )
    z_threshold: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="Robust z-score (median/MAD scale) that alarms on one point."
    )
    ewma_alpha: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.3, description="EWMA smoothing.")
    # 3.5 and 7 (not the textbook 3 and 5): measured on an hourly weekly-seasonal series, the
    # textbook limits gave 2.5 false alarms a month, these 0.5 (tests/unit/test_anomaly.py).
    ewma_threshold: Annotated[float, Field(gt=0)] = Field(
        default=3.5, description="EWMA of robust z-scores (in its own standard deviations) that alarms."
    )
    cusum_k: Annotated[float, Field(ge=0)] = Field(default=0.5, description="CUSUM slack, in robust sd.")
    cusum_h: Annotated[float, Field(gt=0)] = Field(default=7.0, description="CUSUM decision interval, in robust sd.")
    seasonality: Literal["none", "hour_of_day", "day_of_week", "hour_of_week"] = Field(
        default="none", description="Seasonal baseline: each point compared with history at the same phase."
    )
    cooldown_points: Annotated[int, Field(ge=0)] = Field(
        default=6, description="After an alarm on a series, this many points raise no new alarm."
    )


class RetrainConfig(_Frozen):
    """When the monitor may retrain, and how."""

    enabled: bool = True
    max_per_day: Annotated[int, Field(ge=0)] = Field(default=2, description="Retrains triggered per 24 h, at most.")
    cooldown_hours: Annotated[float, Field(ge=0)] = Field(
        default=6.0, description="Hours after a triggered retrain during which no other is triggered."
    )
    performance_drop: Share = Field(
        default=0.05, description="Relative drop of the metric (realized or estimated) that triggers a re-tune."
    )
    window: Literal["sliding", "expanding"] = Field(
        default="sliding", description="Training window: recent labeled traffic replaces (sliding) or extends "
                                      "(expanding) the reference data."
    )
    window_days: Annotated[float, Field(gt=0)] = Field(default=30.0, description="Length of a sliding window.")
    retune_trials: Annotated[int, Field(ge=1)] = Field(default=10, description="Trials of a warm-started re-tune.")


class MonitoringConfig(_Frozen):
    """The monitoring DAG of this model."""

    schedule: str | None = Field(default="@hourly", description="Cron or preset; null: triggered only.")
    window_minutes: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Window length when the run has no data interval (manual triggers)."
    )
    labels_source: str | None = Field(
        default=None, description="CSV/Parquet of actual labels (request_id, row, label) besides /feedback."
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)
    anomaly: AnomalyConfig = Field(default_factory=AnomalyConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    @field_validator("labels_source")
    @classmethod
    def _check_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _confined(value, info)

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        presets = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
        if value is None or value in presets:
            return value
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression or one of {sorted(presets)}")
        return value


class AlertsConfig(_Frozen):
    """Where DAG outcomes are announced."""

    slack_conn_id: str = Field(
        default="autopilot_slack",
        description="Airflow connection (type slackwebhook, the webhook URL as password) for outcome messages.",
    )
    skip_healthy: bool = Field(
        default=False, description="Send nothing for monitoring runs that found nothing (hourly runs add up)."
    )
    outbox_expiry_minutes: Annotated[int, Field(ge=1)] = Field(
        default=1440,
        description="How long a message Slack did not accept stays in the alert outbox, retried, before it is "
                    "dropped (logged with its key).",
    )


class RetentionConfig(_Frozen):
    """Which versions are kept; the champion and the rollback target never retire."""

    keep_last: Annotated[int, Field(ge=1)] = Field(default=10, description="Versions kept besides protected ones.")
    delete_artifacts: bool = Field(default=False, description="Delete a retired version's model files too.")


class RegistryConfig(_Frozen):
    """Where versions are registered."""

    name: str | None = Field(default=None, description="Registered model name; defaults to the model name.")
    allow_pickle: bool = Field(
        default=False,
        description="Allow a pickle-based model file when skops cannot store the model with trusted types.",
    )


CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


class ModelConfig(_Frozen):
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

    @property
    def greater_is_better(self) -> bool:
        """Whether a larger value of `metric` is better."""
        return self.metric not in LOWER_IS_BETTER


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


def _format_error(path: Path, error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "value_error":  # our validators' own sentences, without pydantic's prefix
        message = message.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; unknown keys are not allowed)"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and error["type"] not in {"value_error", "assertion_error"}:
        message = f"{message} (got {error['input']!r})"
    return f"{path}: {key}: {message}"


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a model config file.

    Args:
        path: the YAML file.

    Returns:
        The frozen config, with the file's absolute path attached.

    Raises:
        ConfigError: naming the file, the key and what was expected, for every problem found;
            also for a data location outside the allowed roots (`DataRoots`).
    """
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if "path" in raw:
        raise ConfigError(f"{file}: path: unknown key (check its spelling; unknown keys are not allowed)")
    try:
        roots = DataRoots.for_config(file)
    except ValueError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    try:
        return LoadedConfig.model_validate({**raw, "path": str(file)}, context={"data_roots": roots})
    except ValidationError as exc:
        lines = [_format_error(file, err) for err in exc.errors()]
        raise ConfigError("invalid model config:\n  " + "\n  ".join(lines)) from None


def check_name_matches_file(cfg: ModelConfig, file_name: str, path: str | Path) -> None:
    """The DAG's rule: a config's `name` equals its file's name without `.yaml` (it names the DAG).

    Args:
        file_name: the file's stem as the DAG folder lists it (a symlink's own name, not its target's).
        path: the file, for the message.

    Raises:
        ConfigError: naming the file, both names, and why they must agree.
    """
    if cfg.name != file_name:
        raise ConfigError(f"{path}: name: {cfg.name!r} must match the file name {file_name!r} (it names the DAG)")


def config_hash(config: ModelConfig) -> str:
    """A SHA-256 of the config's content (not its location), for fingerprints and cache keys."""
    payload = config.model_dump(mode="json", exclude={"path"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of a model config file."""
    return ModelConfig.model_json_schema()
