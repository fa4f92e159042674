"""The counterfactual flip test: move each row to every other group of a sensitive attribute
(another category, or another bin's median) and count how often the model's decision changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.gates.fairness.groups import Grouping, single_grouping
from autopilot.modeling.training import predict_scores
from autopilot.reports import json_safe

__all__ = ["MAX_COUNTERFACTUAL_ROWS", "counterfactual_flip_rate", "flip_rate", "flip_reason"]

# Counterfactual rows: bounds the cost at rows x substitutions predictions per attribute.
MAX_COUNTERFACTUAL_ROWS = 2000


def counterfactual_flip_rate(model: Any, X: pd.DataFrame, attribute: str, cfg: ModelConfig,
                             grouping: Grouping | None = None) -> dict[str, Any]:
    """How often moving a row to another group of `attribute` alone changes the model's output.

    Every sampled row (at most `MAX_COUNTERFACTUAL_ROWS`, seeded by `cfg.split.seed`) is
    scored once with each other group's value: each allowed category (`features[attr].categories`,
    else the categories seen in X), or for a binned numeric attribute each other bin's median in
    the reference data. Classification: `flip_rate` is the share of rows whose decision
    (score >= `gates.fairness.threshold`; multiclass: the most probable class) changes for at
    least one substitution. Regression:
    `mean_relative_change`, the mean absolute relative change of the prediction (report only).

    Args:
        grouping: how to group the attribute (from `build_groupings`); built from X when None.

    Raises:
        ValueError: when the column is missing or X is empty.
    """
    if attribute not in X.columns:
        raise ValueError(f"{attribute}: the sensitive column is missing")
    if len(X) == 0:
        raise ValueError("no rows to run the counterfactual test on")
    if grouping is None:
        grouping = single_grouping(attribute, cfg, X, None)
    return flip_rate(model, X, grouping, cfg)


def flip_rate(model: Any, X: pd.DataFrame, grouping: Grouping, cfg: ModelConfig) -> dict[str, Any]:
    """`counterfactual_flip_rate` for a grouping already built (no checks of the inputs)."""
    rng = np.random.default_rng(cfg.split.seed)
    rows = X if len(X) <= MAX_COUNTERFACTUAL_ROWS else X.iloc[np.sort(
        rng.choice(len(X), MAX_COUNTERFACTUAL_ROWS, replace=False))]
    subs = grouping.substitutions(cfg, X)
    result: dict[str, Any] = {"attribute": grouping.name}
    if len(subs) < 2:
        return {**result, "flip_rate": None, "note": "fewer than two groups to substitute"}
    # One batched prediction for all substitutions: per-call overhead dominates small batches.
    variants = pd.concat([rows.assign(**values) for _, values in subs], ignore_index=True)
    task = cfg.task
    base = np.asarray(predict_scores(model, rows, task), dtype=float)
    changed = np.asarray(predict_scores(model, variants, task), dtype=float)
    if task is Task.MULTICLASS_CLASSIFICATION:  # the decision is the most probable class
        base, changed = np.argmax(base, axis=1).astype(float), np.argmax(changed, axis=1).astype(float)
    changed = changed.reshape(len(subs), len(rows))
    labels = [label for label, _ in subs]
    # A row is moved to every *other* group: a binned row set to its own bin's median is no move.
    other = np.asarray(labels)[:, None] != grouping.assign(rows)[None, :]
    result.update(rows=len(rows), categories=labels)
    if grouping.kind in ("bins", "quantile_bins", "values"):
        result["values"] = {label: values[grouping.columns[0]] for label, values in subs}
    if task is Task.MULTICLASS_CLASSIFICATION:
        flips = (changed != base) & other
        result.update(flip_rate=float(flips.any(axis=0).mean()),
                      flip_rate_to={c: float(f.mean()) for c, f in zip(labels, flips, strict=True)})
    elif task is Task.BINARY_CLASSIFICATION:
        threshold = cfg.gates.fairness.threshold
        flips = ((changed >= threshold) != (base >= threshold)) & other
        result.update(flip_rate=float(flips.any(axis=0).mean()),
                      flip_rate_to={c: float(f.mean()) for c, f in zip(labels, flips, strict=True)},
                      mean_abs_score_change=float((np.abs(changed - base) * other).mean()))
    else:
        relative = np.abs(changed - base) / np.maximum(np.abs(base), 1e-12)
        result.update(flip_rate=None, mean_relative_change=float((relative * other).mean()))
    return json_safe(result)


def flip_reason(grouping: Grouping, flips: dict[str, Any], rate: float, limit: float) -> str:
    """The gate's reason when the flip rate is above its limit, in words then the metric's name."""
    name = grouping.name
    how = " (each row moved to every other bin's median)" if grouping.kind in ("bins", "quantile_bins") else ""
    to = flips.get("flip_rate_to") or {}
    most = max(to, key=lambda k: to[k]) if to else None
    where = f"; most often when set to {most} ({to[most]:.0%})" if most is not None else ""
    return (f"{name}: changing {name}{how} flipped {rate:.0%} of decisions (allowed ≤ {limit:.0%}){where} "
            f"(counterfactual_flip_rate {rate:.3f})")
