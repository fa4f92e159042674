"""Reading a frame's feature columns for drift: the checks, finite numbers, category counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["MISSING", "category_counts", "check_frame", "distinct", "feature_kinds", "finite_values"]

MISSING = "__missing__"  # the category key under which missing values are counted


def feature_kinds(cfg: ModelConfig) -> dict[str, str]:
    """Feature name -> `numeric` or `categorical`, in config order."""
    return {name: str(spec.type) for name, spec in cfg.features.items()}


def check_frame(frame: pd.DataFrame, features: dict[str, str], side: str) -> None:
    """Raise ValueError unless `frame` is a DataFrame with rows and every feature column."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{side}: expected a pandas DataFrame, got {type(frame).__name__}")
    absent = [name for name in features if name not in frame.columns]
    if absent:
        raise ValueError(f"{side}: missing feature column(s) {absent}")
    if len(frame) == 0:
        raise ValueError(f"{side}: no rows (empty frame)")


def finite_values(column: pd.Series, name: str, side: str) -> np.ndarray:
    """The column's finite values as float64 (missing and +-inf dropped, as Evidently does)."""
    try:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{side}: column {name!r} is numeric in the config but holds non-numeric values "
                         f"({exc}); canonicalize the frame first") from None
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def category_counts(column: pd.Series) -> tuple[dict[str, int], int]:
    """Count of each present category (as str) and of missing values, by one hash pass."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        tally = np.bincount(codes[codes >= 0], minlength=len(column.cat.categories))
        found = {str(c): int(n) for c, n in zip(column.cat.categories, tally, strict=True) if n}
        return found, int((codes < 0).sum())
    counted = column.value_counts(dropna=True, sort=False)
    found = {}
    for key, count in counted.items():
        found[str(key)] = found.get(str(key), 0) + int(count)
    return found, len(column) - int(counted.sum())


def distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (one sort)."""
    distinct, counts = np.unique(values, return_counts=True)
    return distinct, counts
