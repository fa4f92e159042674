"""The train/test split: made once, seeded, before any tuning looks at the data.

Tuning only ever sees `Splits.X_train` / `Splits.y_train` (it cross-validates inside them);
the test split is touched once, by the final evaluation of the refit best pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from autopilot.config import ModelConfig, Task

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["Splits", "check_stratifiable", "encode_target", "feature_frame", "load_splits", "make_splits"]


@dataclass(frozen=True)
class Splits:
    """Features (canonical layout, config order) and encoded targets of both splits."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series


def encode_target(frame_or_series: pd.DataFrame | pd.Series, cfg: ModelConfig) -> pd.Series:
    """Turn the target column into what estimators are trained on.

    Binary classification gives int64 1 where the label equals `target.positive_class` and 0
    otherwise; multiclass keeps the labels as text (the canonical frames' `str`), never numbered;
    regression gives float64. Labels are compared as strings because canonical
    frames hold classification labels as `str` while YAML may spell the class as an int.

    Raises:
        ValueError: when the target column is absent or has missing values.
    """
    if isinstance(frame_or_series, pd.DataFrame):
        if cfg.target.column not in frame_or_series.columns:
            raise ValueError(f"target column {cfg.target.column!r} is not in the frame")
        series = frame_or_series[cfg.target.column]
    else:
        series = frame_or_series
    if series.isna().any():
        raise ValueError(f"target column {cfg.target.column!r} has {int(series.isna().sum())} missing values")
    if cfg.task is Task.REGRESSION:
        return pd.to_numeric(series, errors="raise").astype("float64").rename(cfg.target.column)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return series.astype(str).astype(object).rename(cfg.target.column)
    positive = str(cfg.target.positive_class)
    encoded = (series.astype(str) == positive).astype("int64")
    return encoded.rename(cfg.target.column)


def check_stratifiable(y: pd.Series, needed: int, what: str) -> None:
    """Raise a clear error when a class has fewer than `needed` rows, which stratifying needs.

    Raises:
        ValueError: naming each class that is too small, its row count and what needed it.
    """
    counts = pd.Series(y).astype(str).value_counts()
    small = counts[counts < needed]
    if len(small):
        listed = ", ".join(f"{label!r} ({int(n)} rows)" for label, n in small.items())
        raise ValueError(f"{what} needs at least {needed} rows of every class; too few: {listed}. "
                         "Add rows of these classes, drop them from the data, or set split.stratify: false")


def feature_frame(frame: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The feature columns of a canonical frame, in config order (the pipeline's input)."""
    missing = [name for name in cfg.features if name not in frame.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
    return frame.loc[:, list(cfg.features)].copy()


def make_splits(train: pd.DataFrame, test: pd.DataFrame | None, cfg: ModelConfig) -> Splits:
    """Split canonical frames into train and test, deterministically from `cfg.split.seed`.

    When `test` is given (the canonical frame of `data.test_source`) it is the test split and
    all of `train` is training data. Otherwise a seeded `train_test_split` holds out
    `split.test_size`, stratified by label for classification when `split.stratify` is set.
    Indexes are reset so positional and label indexing agree downstream.
    """
    if test is not None:
        train_part, test_part = train, test
    else:
        y_all = encode_target(train, cfg)
        stratify = y_all if cfg.task.classification and cfg.split.stratify else None
        if stratify is not None:
            check_stratifiable(y_all, 2, "split.stratify (the train/test split)")
        positions = np.arange(len(train))
        train_pos, test_pos = train_test_split(
            positions, test_size=cfg.split.test_size, random_state=cfg.split.seed, shuffle=True, stratify=stratify
        )
        # Sorting keeps the original row order inside each split: the split is defined by the
        # seed alone, and row order never leaks into anything else.
        train_part = train.iloc[np.sort(train_pos)]
        test_part = train.iloc[np.sort(test_pos)]
    train_part = train_part.reset_index(drop=True)
    test_part = test_part.reset_index(drop=True)
    return Splits(
        X_train=feature_frame(train_part, cfg),
        y_train=encode_target(train_part, cfg),
        X_test=feature_frame(test_part, cfg),
        y_test=encode_target(test_part, cfg),
    )


def load_splits(cfg: ModelConfig, settings: Settings,
                snapshots: Mapping[str, Mapping[str, Any]]) -> tuple[Splits, dict[str, pd.DataFrame]]:
    """The splits of a run's stored snapshots, and each snapshot's frame by split.

    Args:
        snapshots: `{split: {"digest", ...}}`, the `snapshots` of the snapshot stage's output.
            A retrain's `recent` batch (labeled served rows) joins the reference training data.
    """
    from autopilot.adapters.storage import open_store
    from autopilot.data.snapshot import load_snapshot

    store = open_store(settings.artifact_root, access=settings.object_store)
    frames = {split: load_snapshot(store, snap["digest"]) for split, snap in snapshots.items()}
    train = frames["train"]
    if "recent" in frames:  # a retrain: the reference plus labeled served rows
        train = pd.concat([train, frames["recent"]], ignore_index=True)
    return make_splits(train, frames.get("test"), cfg), frames
