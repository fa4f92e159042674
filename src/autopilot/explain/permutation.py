"""The model-agnostic permutation path: the whole pipeline explained on raw feature rows with
`shap.PermutationExplainer` and an `Independent` masker over a sampled background.

Categorical columns are integer-coded for the masker (it cannot hold strings) and decoded back to
strings (code NaN -> NaN) inside the prediction function. Classification is explained in
log-odds (the logit of `predict_proba[:, 1]`), so it shares units with the tree path on boosting
and with the linear path; regression explains `predict`. A multiclass model is explained in
every class's probability at once (shap explains a multi-output function in one pass: values
rows x features x classes, one base value per class).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.explain.attributions import ExplainPath, feature_rows, relative_error

__all__ = ["PERMUTATION_MAX_EVALS", "PROBA_CLIP", "PermutationPath"]

# Model evaluations per explained row of the permutation explainer (shap's default).
PERMUTATION_MAX_EVALS = 500
# Probabilities are clipped before the logit so a saturated model gives large, finite log-odds.
PROBA_CLIP = 1e-12


class _Codec:
    """Integer codes for categorical columns (the masker cannot hold strings), and back."""

    def __init__(self, cfg: ModelConfig, *frames: pd.DataFrame) -> None:
        self.features = list(cfg.features)
        self.categorical = [i for i, name in enumerate(self.features) if cfg.features[name].type == "categorical"]
        self.categories: dict[int, list[Any]] = {}
        for i in self.categorical:
            known = list(cfg.features[self.features[i]].categories or [])
            self.categories[i] = known
            for frame in frames:
                self._extend(i, frame.iloc[:, i])

    def _extend(self, i: int, column: pd.Series) -> None:
        seen = set(self.categories[i])
        extra = sorted({v for v in column.dropna().tolist() if v not in seen}, key=str)
        self.categories[i].extend(extra)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows as a float matrix: numbers as they are, categories as codes, missing as NaN."""
        out = np.empty(frame.shape, dtype=np.float64)
        for i in range(len(self.features)):
            column = frame.iloc[:, i]
            if i in self.categories:
                self._extend(i, column)
                lookup = {v: float(code) for code, v in enumerate(self.categories[i])}
                out[:, i] = [math.nan if pd.isna(v) else lookup[v] for v in column.tolist()]
            else:
                out[:, i] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        return out

    def decode(self, codes: np.ndarray) -> pd.DataFrame:
        """The pipeline input for coded rows: categorical codes back to strings (NaN stays NaN)."""
        columns: dict[str, Any] = {}
        for i, name in enumerate(self.features):
            if i in self.categories:
                lookup = np.asarray([*self.categories[i], math.nan], dtype=object)
                raw = codes[:, i]
                index = np.where(np.isnan(raw), len(lookup) - 1, np.nan_to_num(raw, nan=0.0)).astype(np.int64)
                columns[name] = lookup[np.clip(index, 0, len(lookup) - 1)]
            else:
                columns[name] = codes[:, i]
        return pd.DataFrame(columns)


@contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the block, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Single-threaded native code for the block.

    The permutation path makes ~17 model calls of a few thousand rows per explained row; at
    that size OpenMP start-up dominates HGB's prediction, and on a busy 2-core machine two
    threads were measured 10-20x slower than one.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


class PermutationPath(ExplainPath):
    """The whole pipeline explained on raw rows with shap's PermutationExplainer."""

    method = "permutation"

    def __init__(self, model: Any, cfg: ModelConfig, background: pd.DataFrame, seed: int) -> None:
        import shap

        self.model = model
        self.task = cfg.task
        self.output = {Task.BINARY_CLASSIFICATION: "log_odds",
                       Task.MULTICLASS_CLASSIFICATION: "probability"}.get(cfg.task, "prediction")
        self.codec = _Codec(cfg, background)
        codes = self.codec.encode(feature_rows(background, cfg))
        self.background_rows = len(codes)
        self.seed = seed
        self.max_evals = max(PERMUTATION_MAX_EVALS, 2 * len(cfg.features) + 1)
        masker = shap.maskers.Independent(codes, max_samples=len(codes))
        with _global_numpy_seed(seed), _one_thread():  # shap seeds numpy's global RNG; keep that local
            self.explainer = shap.PermutationExplainer(self.predict_codes, masker, seed=seed)
            # Warm-up: shap's masker compiles numba code on its first call (~9 s, once per process);
            # explain one row with a single permutation so that time never reaches a per-row estimate.
            self.explainer(codes[:1], max_evals=2 * len(cfg.features) + 1, silent=True)

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        """The explained output for coded rows: log-odds (classification) or the prediction."""
        from autopilot.modeling.training import predict_scores

        scores = predict_scores(self.model, self.codec.decode(np.asarray(codes, dtype=np.float64)), self.task)
        if self.task is Task.BINARY_CLASSIFICATION:
            p = np.clip(scores, PROBA_CLIP, 1.0 - PROBA_CLIP)
            return np.log(p) - np.log1p(-p)
        return scores

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, Any, float | None]:
        """SHAP values of `rows` (already on the original features; multiclass: rows x features x classes)."""
        codes = self.codec.encode(rows)
        with _global_numpy_seed(self.seed), _one_thread():  # shap draws permutations from numpy's global RNG
            explanation = self.explainer(codes, max_evals=self.max_evals, silent=True)
        values = np.asarray(explanation.values, dtype=float)
        if values.ndim == 3:  # one output per class; base values rows x classes
            bases3 = np.asarray(explanation.base_values, dtype=float).reshape(len(codes), -1)
            error3 = relative_error(values.sum(axis=1) + bases3, self.predict_codes(codes))
            return values, bases3.mean(axis=0), error3
        bases = np.ravel(np.asarray(explanation.base_values, dtype=float))
        error = relative_error(values.sum(axis=1) + bases, self.predict_codes(codes))
        return values, float(np.mean(bases)), error
