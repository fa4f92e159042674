"""The tuning section of a model config: which model families Optuna searches, and its budget."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator

from autopilot.config.base import Frozen, listed_once

__all__ = ["ModelFamily", "TuningConfig"]


class ModelFamily(StrEnum):
    """The model families the tuner can choose from (scikit-learn's, and LightGBM's sklearn estimators)."""

    LINEAR = "linear"  # logistic regression for classification, ridge for regression
    RANDOM_FOREST = "random_forest"
    EXTRA_TREES = "extra_trees"
    HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
    LIGHTGBM = "lightgbm"  # leaf-wise boosting with per-tree column sampling, which HGB lacks


class TuningConfig(Frozen):
    """The Optuna search budget."""

    n_trials: Annotated[int, Field(ge=1)] = Field(default=30, description="Optuna trials of a full tune.")
    timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        default=300.0, description="Seconds after which tuning starts no new trial."
    )
    families: list[ModelFamily] = Field(
        default_factory=lambda: list(ModelFamily), min_length=1, description="Model families the search may pick."
    )
    seed: int = Field(default=42, description="Seed of the sampler and of every model (reproducible runs).")
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna sampler.")
    n_startup_trials: Annotated[int, Field(ge=0)] = Field(
        default=8, description="Random trials before TPE starts modelling the space."
    )
    pruner_warmup_folds: Annotated[int, Field(ge=0)] = Field(
        default=1, description="Folds a trial always completes before it can be pruned."
    )
    max_train_rows: Annotated[int, Field(ge=100)] | None = Field(
        default=None, description="Subsample the tuning folds to this many rows (the refit uses all)."
    )
    warm_start_defaults: bool = Field(
        default=False,
        description="Run one known-good configuration of each family first (a new study only), so every family "
        "is measured at a sensible point before the sampler explores.",
    )
    family_retire_trials: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description="Complete trials a family needs before it can be retired (0: never retire a family); with "
        "warm_start_defaults each family's first trial is its known-good configuration.",
    )
    family_retire_margin: Annotated[float, Field(ge=0)] = Field(
        default=0.01,
        description="Retire a family whose best CV value trails the leader's by more than this share of the "
        "leader's value: later trials that sample it run an active family instead.",
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
        return listed_once(value, "families")
