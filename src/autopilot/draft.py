"""`autopilot init-config`: draft a model config from a data file, for a human to review.

The draft infers a schema from the data it sees: column types, observed ranges (widened a
little), categories of low-cardinality columns, null fractions (with some slack), and the task
from the target. Every inferred value is a guess about data the file may not fully show, so
the YAML says so at the top.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = ["draft_config", "draft_yaml"]

MAX_CATEGORIES = 50


def _identifier(text: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "model"
    return name if name[0].isalpha() else f"m_{name}"


def _numeric_spec(column: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(column, errors="coerce").dropna()
    spec: dict[str, Any] = {"type": "numeric"}
    if len(values):
        low, high = float(values.min()), float(values.max())
        margin = 0.1 * (high - low) if high > low else abs(high) * 0.1 or 1.0
        # Widen the observed range: a batch slightly past it is not necessarily bad data.
        spec["min"] = _round(low - margin if low < 0 or low - margin >= 0 else 0.0)
        spec["max"] = _round(high + margin)
    return spec


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(f"{value:.6g}")


def _categorical_spec(column: pd.Series) -> dict[str, Any]:
    values = column.dropna().astype(str).str.strip()
    spec: dict[str, Any] = {"type": "categorical"}
    unique = sorted(values.unique().tolist())
    if len(unique) <= MAX_CATEGORIES:
        spec["categories"] = unique
    return spec


def _nulls(spec: dict[str, Any], column: pd.Series) -> dict[str, Any]:
    fraction = float(column.isna().mean())
    if fraction == 0.0:
        spec["nullable"] = False
    else:
        # Allow 50% more missingness than observed, rounded up to a whole percent.
        spec["max_null_fraction"] = min(1.0, math.ceil(fraction * 150) / 100)
    return spec


def draft_config(frame: pd.DataFrame, target: str, data_path: str, name: str | None = None) -> dict[str, Any]:
    """Infer a config dict from a frame.

    Raises:
        ValueError: the target column is not in the data, or the data has no other columns.
    """
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the data; columns: {list(frame.columns)}")
    features: dict[str, Any] = {}
    for column in frame.columns:
        if column == target:
            continue
        series = frame[column]
        spec = _numeric_spec(series) if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(
            series) else _categorical_spec(series)
        features[str(column)] = _nulls(spec, series)
    if not features:
        raise ValueError("the data has no feature columns besides the target")
    labels = frame[target].dropna()
    config: dict[str, Any] = {"name": _identifier(name or Path(data_path).name.split(".")[0]),
                              "description": f"Drafted from {Path(data_path).name}; review every value."}
    if pd.api.types.is_numeric_dtype(labels) and labels.nunique() > 2:
        config.update(task="regression", data={"source": data_path}, target={"column": target}, metric="rmse")
    else:
        classes = sorted(labels.astype(str).unique().tolist())
        if len(classes) != 2:
            raise ValueError(f"target {target!r} has {len(classes)} classes; only binary classification "
                             "and regression are supported")
        positive = labels.astype(str).value_counts().idxmin()  # the rarer label is usually the event
        config.update(task="binary_classification", data={"source": data_path},
                      target={"column": target, "positive_class": positive, "classes": classes}, metric="roc_auc")
    config["features"] = features
    config["sensitive_attributes"] = []
    config["split"] = {"seed": 42, "test_size": 0.2, "stratify": config["task"] == "binary_classification",
                       "cv_folds": 3}
    config["validation"] = {"min_rows": max(1, len(frame) // 10), "max_rows": max(1000, len(frame) * 100)}
    config["tuning"] = {"n_trials": 30, "timeout_seconds": 300, "seed": 42}
    return config


def draft_yaml(config: dict[str, Any]) -> str:
    """The drafted config as commented YAML."""
    header = (
        "# Drafted by `autopilot init-config` from the data it saw. Review every value before use:\n"
        "# ranges were widened by 10%, null allowances by 50%, and categories are the ones observed.\n"
        "# Add sensitive_attributes and gates (quality floors, fairness bands) for your use case.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, width=100)
