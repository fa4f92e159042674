"""LIME on the ORIGINAL features: the `lime` package's `LimeTabularExplainer`, bounded and seeded.

Used by serving's `/explain?method=lime`, the monitoring window's changed predictions
(`explain.changed`) and the explainability gate's LIME/SHAP agreement (`lime_shap_agreement`).

How the original features meet LIME (which wants one numeric matrix):

- numeric columns are LIME's continuous features, discretized into the background's quartiles
  (LIME's tabular default). LIME cannot perturb around a missing value: a NaN in an explained row
  stands at the background's median for the perturbations (the note says so), while the row itself
  is scored as sent (missing), so the score explained is the model's.
- categorical columns are LIME categorical features: integer codes into the column's vocabulary
  (the background's values, the fitted encoders' training categories when given, and the
  explained rows' own values), decoded back to the canonical strings before the model sees a
  perturbed row; a missing value is a category of its own, decoded back to missing. Perturbed
  values are drawn with the background's frequencies (LIME's rule).
- what is explained is the model's score: the positive-class probability (binary), the prediction
  (regression) or, for multiclass, the probability of the class the row is predicted as. LIME runs
  in its regression mode on that score, so every task is explained the same way.
- bounds: `num_samples` perturbations per row (one model call per row), a deadline checked before
  every model call (`ExplainTimeout`: a request over budget stops at the next row instead of holding
  its worker), and a fixed seed reset for every row (a row's explanation does not depend on the rows
  explained before it in the same call).

The result has SHAP's shape: one weight per original feature and row (LIME's local linear model
with `feature_selection="none"`, so every feature gets a weight). There is no base value: the
surrogate's intercept is the score of a row outside every one of the instance's bins, not the
expected output; it is reported as `intercepts`, with the surrogate's weighted R² (`fit_r2`).
The background must be data the caller already holds and trusts (served traffic, the reference,
the training split); nothing is loaded here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task

__all__ = ["ExplainTimeout", "LimeAttributions", "lime_attributions", "top_features"]

MIN_BACKGROUND_ROWS = 2  # LIME's scaler and quartiles need at least two rows to mean anything


class ExplainTimeout(TimeoutError):
    """The explanation did not finish within its time budget (stopped before the next model call)."""


@dataclass(frozen=True)
class LimeAttributions:
    """Per-row LIME weights on the original features, with how they were obtained.

    Attributes:
        values: rows x original feature columns (config order): each feature's weight in the row's
            local linear model, in `output` units.
        intercepts: the local model's intercept per row.
        fit_r2: the local model's weighted R² per row (how well the surrogate fits the model there).
        scores: the model's score of each explained row (what was explained).
        rows: rows explained.
        seconds: wall time, set-up included.
        num_samples: perturbations per row.
        background_rows: rows the statistics came from.
        output: `probability` (binary), `class_probability` (multiclass: the predicted class's) or `prediction`.
        notes: what was adapted (e.g. a missing numeric value replaced by the background median).
    """

    values: pd.DataFrame
    intercepts: tuple[float, ...]
    fit_r2: tuple[float, ...]
    scores: tuple[float, ...]
    rows: int
    seconds: float
    num_samples: int
    background_rows: int
    output: str
    method: str = "lime"
    notes: tuple[str, ...] = field(default_factory=tuple)


class _Codec:
    """The canonical frame <-> LIME's numeric matrix (categoricals as integer codes)."""

    def __init__(self, cfg: ModelConfig, background: pd.DataFrame, rows: pd.DataFrame,
                 categories: Mapping[str, Iterable[str]] | None) -> None:
        self.names = list(cfg.features)
        categorical = set(cfg.categorical_features)
        self.categorical = [i for i, name in enumerate(self.names) if name in categorical]
        self.vocab: dict[int, list[Any]] = {}
        for i in self.categorical:
            name = self.names[i]
            seen = {str(v) for v in pd.concat([background[name], rows[name]]).dropna()}
            seen |= {str(v) for v in (categories or {}).get(name, ())}
            # Sorted for a stable coding; missing last, as a category of its own.
            self.vocab[i] = [*sorted(seen), None]
        self.medians = {i: _median(background[name]) for i, name in enumerate(self.names) if i not in self.vocab}

    def encode(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """The matrix LIME sees, and a note per numeric column whose missing values were imputed."""
        out = np.zeros((len(frame), len(self.names)))
        notes = []
        for i, name in enumerate(self.names):
            column = frame[name]
            if i in self.vocab:
                index = {v: k for k, v in enumerate(self.vocab[i])}
                out[:, i] = [index[None if _missing(v) else str(v)] for v in column]
                continue
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            if np.isnan(values).any():
                notes.append(f"{name}: a missing value was perturbed around the background median {self.medians[i]:g}")
                values = np.where(np.isnan(values), self.medians[i], values)
            out[:, i] = values
        return out, notes

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """A canonical frame (numeric float64, categorical str or NaN) from LIME's matrix."""
        data: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            if i in self.vocab:
                values = self.vocab[i]
                codes = np.clip(np.rint(matrix[:, i]).astype(int), 0, len(values) - 1)
                data[name] = pd.Series([np.nan if values[c] is None else values[c] for c in codes], dtype=object)
            else:
                data[name] = pd.Series(matrix[:, i], dtype="float64")
        return pd.DataFrame(data)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _median(column: pd.Series) -> float:
    values = pd.to_numeric(column, errors="coerce").dropna()
    return float(values.median()) if len(values) else 0.0


def _scorer(model: Any, cfg: ModelConfig) -> tuple[Callable[[pd.DataFrame], np.ndarray], str]:
    """The model's score of canonical rows (1-D, or class probabilities for multiclass), and its units."""
    from autopilot.modeling.training import predict_scores

    output = {Task.BINARY_CLASSIFICATION: "probability",
              Task.MULTICLASS_CLASSIFICATION: "class_probability"}.get(cfg.task, "prediction")
    return (lambda frame: np.asarray(predict_scores(model, frame, cfg.task), dtype=float)), output


def lime_attributions(
    model: Any,
    X: pd.DataFrame,
    cfg: ModelConfig,
    background: pd.DataFrame,
    *,
    num_samples: int,
    seed: int = 0,
    timeout_seconds: float | None = None,
    categories: Mapping[str, Iterable[str]] | None = None,
) -> LimeAttributions:
    """LIME weights of `model` for every row of `X`, on the original features.

    Args:
        model: a fitted pipeline taking the canonical feature frame.
        X: the rows to explain (the config's feature columns; extra columns ignored).
        cfg: the model config (features, their types, the task).
        background: rows the statistics come from (quartiles, means, category frequencies); at
            least two rows.
        num_samples: perturbations per row (one model call of this many rows per explained row).
        seed: reset for every row, so the same row gives the same weights.
        timeout_seconds: the budget; past it `ExplainTimeout` is raised before the next model call.
        categories: each categorical column's training categories (e.g. the fitted encoders'), added
            to the vocabulary.

    Raises:
        ValueError: no rows, a missing column, or fewer than two background rows.
        ExplainTimeout: the budget ran out.
    """
    from lime.lime_tabular import LimeTabularExplainer  # lazy: ~2 s of imports, never on a hot path

    start = time.perf_counter()
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    names = list(cfg.features)
    rows, back = _frames(X, background, names)
    codec = _Codec(cfg, back, rows, categories)
    train, _ = codec.encode(back)
    matrix, notes = codec.encode(rows)
    score, output = _scorer(model, cfg)
    explainer = LimeTabularExplainer(
        train, mode="regression", feature_names=names, categorical_features=codec.categorical,
        categorical_names={i: [str(v) for v in values] for i, values in codec.vocab.items()},
        feature_selection="none", discretize_continuous=True, random_state=seed)
    weights, intercepts, fits, scores = [], [], [], []
    blanks = rows.isna().to_numpy()
    numeric = [i for i in range(len(names)) if i not in codec.vocab]
    for i in range(len(matrix)):
        _check(deadline, timeout_seconds, i, len(matrix))
        _reseed(explainer, seed)
        predict = _predict_fn(codec, score, deadline, timeout_seconds,
                              [names[j] for j in numeric if blanks[i, j]])
        found = explainer.explain_instance(matrix[i], predict, num_features=len(names), num_samples=num_samples)
        weights.append(_weights(found, len(names)))
        intercepts.append(float(found.intercept[1]))
        fits.append(float(found.score))
        scores.append(float(found.predicted_value))
    values = pd.DataFrame(np.vstack(weights), index=X.index, columns=names)
    return LimeAttributions(values=values, intercepts=tuple(intercepts), fit_r2=tuple(fits), scores=tuple(scores),
                            rows=len(values), seconds=time.perf_counter() - start, num_samples=num_samples,
                            background_rows=len(back), output=output, notes=tuple(notes))


def _frames(X: pd.DataFrame, background: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows and the background in feature order (ValueError: a column missing, no rows, too little background)."""
    missing = [n for n in names if n not in X.columns or n not in background.columns]
    if missing:
        raise ValueError(f"feature columns missing from the rows or the background: {missing}")
    rows, back = X.loc[:, names].reset_index(drop=True), background.loc[:, names].reset_index(drop=True)
    if len(rows) == 0:
        raise ValueError("no rows to explain")
    if len(back) < MIN_BACKGROUND_ROWS:
        raise ValueError(f"LIME needs at least {MIN_BACKGROUND_ROWS} background rows, got {len(back)}")
    return rows, back


def _weights(found: Any, width: int) -> np.ndarray:
    """One weight per feature from a LIME explanation (regression mode explains label 1, LIME's convention)."""
    row = np.zeros(width)
    for index, weight in found.as_map()[1]:
        row[int(index)] = float(weight)
    return row


def _check(deadline: float | None, budget: float | None, done: int, total: int) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ExplainTimeout(f"LIME stopped after {done} of {total} rows: over its {budget:g} s budget")


def _reseed(explainer: Any, seed: int) -> None:
    """One random state per row: the sampler and the discretizer's undiscretize draw from it."""
    state = np.random.RandomState(seed)
    explainer.random_state = state
    if explainer.discretizer is not None:
        explainer.discretizer.random_state = state


def _predict_fn(codec: _Codec, score: Callable[[pd.DataFrame], np.ndarray], deadline: float | None,
                budget: float | None, blank: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The function LIME calls with perturbed rows (the explained row first): the model's 1-D score.

    `blank`: the explained row's missing numeric columns, missing again in its own (first) row, so
    the score explained is the model's score of the row as it was sent.
    """

    def predict(matrix: np.ndarray) -> np.ndarray:
        _check(deadline, budget, 0, 1)
        frame = codec.decode(matrix)
        if blank:
            frame.loc[0, blank] = np.nan
        scores = score(frame)
        if scores.ndim == 2:  # multiclass: the probability of the class the explained row is predicted as
            scores = scores[:, int(np.argmax(scores[0]))]
        return scores

    return predict


def top_features(weights: Mapping[str, float | None], k: int) -> list[str]:
    """The `k` features with the largest |weight| (ties by name, for a stable order); zero and None left out."""
    ranked = sorted(((abs(float(v)), name) for name, v in weights.items()
                     if v is not None and math.isfinite(float(v)) and v != 0),
                    key=lambda item: (-item[0], item[1]))
    return [name for _, name in ranked[:k]]
