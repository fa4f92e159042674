"""Explaining a model: SHAP values of rows on the original features, within the config's bounds.

`shap_attributions` explains every given row with the chosen path (no bounds). `explain_model`
applies `gates.explainability`: at most `max_rows` rows (seeded sample), `background_rows`
background rows, and a time budget of `max_seconds`: a first batch of `PILOT_ROWS` rows is timed
and the number of further rows is extrapolated to fit the budget. The budget applies to every
path (deep forests make TreeSHAP slow too). The linear and permutation paths measure from the
same `background_rows` sample.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.explain.attributions import Attributions, ExplainPath, feature_rows
from autopilot.explain.choice import prepare_path

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["BUDGET_SAFETY", "PILOT_ROWS", "explain_model", "shap_attributions"]

# Rows of the timed first batch from which explain_model extrapolates the cost of the rest.
PILOT_ROWS = 10
# Share of the time budget the extrapolation aims for (the estimate is noisy).
BUDGET_SAFETY = 0.9


def shap_attributions(
    model: Pipeline,
    X: pd.DataFrame,
    cfg: ModelConfig,
    background: pd.DataFrame | None = None,
    method: str = "auto",
    seed: int = 0,
) -> Attributions:
    """SHAP values of `model` for every row of `X`, on the original features (no bounds applied).

    Args:
        model: a fitted pipeline (`preprocess` ColumnTransformer, then the estimator).
        X: the rows to explain (feature columns of the canonical frame; extra columns ignored).
        cfg: the model config (feature order, types, categories, task).
        background: rows the linear and permutation paths measure from; None samples
            `gates.explainability.background_rows` rows of `X`. The tree path needs none.
        method: `auto` (tree path for forests and HGB, linear path for linear models,
            permutation otherwise), `tree`, `linear` or `permutation`.
        seed: seeds the background sample and the permutations.

    Raises:
        ValueError: on an unknown method, `tree` for a non-tree model, `linear` for a model the
            linear path cannot explain, no rows, or missing columns.
    """
    start = time.perf_counter()
    features = feature_rows(X, cfg)
    if len(features) == 0:
        raise ValueError("no rows to explain")
    path = prepare_path(model, cfg, _background(background, features, cfg, seed), method, seed)
    values, base, error = path.explain(features)
    return _result(path, features, values, base, error, time.perf_counter() - start)


def explain_model(
    model: Pipeline,
    X_holdout: pd.DataFrame,
    X_background_source: pd.DataFrame,
    cfg: ModelConfig,
    seed: int = 0,
) -> Attributions:
    """SHAP attributions within the config's bounds (`gates.explainability`).

    Samples `max_rows` rows of `X_holdout` and `background_rows` rows of
    `X_background_source` (both seeded), picks the path automatically, explains a first batch
    of `PILOT_ROWS` rows, and explains only as many further rows as the measured cost per row
    lets fit into `max_seconds` (the set-up and the first batch count against it). The result's
    `rows` says how many rows were explained in the end.
    """
    start = time.perf_counter()
    bounds = cfg.gates.explainability
    rows = _sample(feature_rows(X_holdout, cfg), bounds.max_rows, seed)
    if len(rows) == 0:
        raise ValueError("no holdout rows to explain")
    background = _sample(feature_rows(X_background_source, cfg), bounds.background_rows, seed + 1)
    path = prepare_path(model, cfg, background if len(background) else None, "auto", seed)
    pilot = rows.iloc[:PILOT_ROWS]
    batch_start = time.perf_counter()
    values, base, error = path.explain(pilot)
    per_row = (time.perf_counter() - batch_start) / len(pilot)
    remaining = bounds.max_seconds * BUDGET_SAFETY - (time.perf_counter() - start)
    more = min(len(rows) - len(pilot), int(remaining / per_row) if per_row > 0 else len(rows))
    explained = pilot
    if more > 0:
        rest = rows.iloc[len(pilot) : len(pilot) + more]
        rest_values, rest_base, rest_error = path.explain(rest)
        values = np.vstack([values, rest_values])
        base = (base * len(pilot) + rest_base * len(rest)) / (len(pilot) + len(rest))
        error = _max_or_none(error, rest_error)
        explained = pd.concat([pilot, rest])
    return _result(path, explained, values, base, error, time.perf_counter() - start)


def _result(path: ExplainPath, rows: pd.DataFrame, values: np.ndarray, base: Any, error: float | None,
            seconds: float) -> Attributions:
    array = np.asarray(values, dtype=float)
    per_class: dict[str, Any] = {}
    if array.ndim == 3:  # multiclass: rows x features x classes
        bases = np.ravel(np.asarray(base, dtype=float))
        per_class = {"classes": tuple(str(c) for c in path.classes), "class_values": array,
                     "class_base_values": tuple(float(b) for b in bases)}
        array, base = np.abs(array).mean(axis=2), float(bases.mean())
    frame = pd.DataFrame(array, index=rows.index, columns=list(rows.columns))
    return Attributions(values=frame, base_value=float(base), method=path.method, rows=len(frame), seconds=seconds,
                        output=path.output, background_rows=path.background_rows, additivity_error=error,
                        path_reason=path.reason, **per_class)


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed)


def _background(background: pd.DataFrame | None, rows: pd.DataFrame, cfg: ModelConfig, seed: int) -> pd.DataFrame:
    if background is not None and len(background):
        return feature_rows(background, cfg)
    return _sample(rows, cfg.gates.explainability.background_rows, seed + 1)


def _max_or_none(a: float | None, b: float | None) -> float | None:
    present = [x for x in (a, b) if x is not None]
    return max(present) if present else None
