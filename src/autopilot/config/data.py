"""The data sections of a model config: where the data is, what it holds, how it is split and validated."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StrictBool, ValidationInfo, field_validator, model_validator

from autopilot.config.base import Frozen
from autopilot.config.roots import confined

__all__ = ["DataConfig", "FeatureSpec", "SplitConfig", "TargetConfig", "Task", "ValidationConfig"]


class Task(StrEnum):
    """The learning task."""

    BINARY_CLASSIFICATION = "binary_classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification"
    REGRESSION = "regression"

    @property
    def classification(self) -> bool:
        """Whether the model predicts a class (binary or multiclass), not a number."""
        return self is not Task.REGRESSION


class DataConfig(Frozen):
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
        return confined(value, info)


class TargetConfig(Frozen):
    """The column to predict."""

    column: str = Field(description="Name of the target column in the data.")
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


class FeatureSpec(Frozen):
    """One input column: its type and what values are allowed."""

    type: Literal["numeric", "categorical"] = Field(description="How the column is encoded and checked.")
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


class SplitConfig(Frozen):
    """How the data is split, once and seeded, before tuning."""

    seed: int = Field(default=42, description="Seed of the split.")
    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=0.2, description="Share held out for testing when there is no `test_source`."
    )
    stratify: bool = Field(default=True, description="Stratify splits by label (classification).")
    cv_folds: Annotated[int, Field(ge=2, le=20)] = Field(
        default=3, description="Cross-validation folds inside each tuning trial."
    )


class ValidationConfig(Frozen):
    """Data validation: whole-batch expectations beyond the per-feature schema."""

    min_rows: Annotated[int, Field(ge=1)] = Field(default=100, description="Fewest rows a batch may have.")
    max_rows: Annotated[int, Field(ge=1)] = Field(default=50_000_000, description="Most rows a batch may have.")
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
