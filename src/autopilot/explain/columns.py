"""Transformed columns back to original features: which output column of the fitted
`preprocess` ColumnTransformer comes from which original feature, and summing attributions onto it.

One-hot encoding gives several columns per feature; ordinal, native and binary target encoding
give one. Every exact path (tree, linear) explains the estimator on the transformed matrix and
sums its per-column attributions back with `column_owners` and `sum_columns`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["column_indices", "column_owners", "dense", "margin", "split_pipeline", "sum_class_columns", "sum_columns"]


def split_pipeline(model: Any) -> tuple[Any, Any]:
    """(the ColumnTransformer, the final estimator) of a pipeline, or (None, estimator)."""
    from sklearn.compose import ColumnTransformer

    steps = getattr(model, "steps", None)
    if not steps:
        return None, model
    estimator = steps[-1][1]
    if len(steps) == 2 and isinstance(steps[0][1], ColumnTransformer):
        return steps[0][1], estimator
    return None, estimator


def dense(matrix: Any) -> np.ndarray:
    """A (possibly sparse) transformed matrix as a dense float64 array."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def margin(estimator: Any, transformed: np.ndarray, classifier: bool) -> np.ndarray:
    """The estimator's raw output on transformed rows: `decision_function` (log-odds; for a
    multiclass model one margin per class, rows x classes) or `predict`."""
    if classifier:
        raw = np.asarray(estimator.decision_function(transformed), dtype=float)
        return raw if raw.ndim == 2 and raw.shape[1] > 1 else np.ravel(raw)
    return np.asarray(estimator.predict(transformed), dtype=float)


def sum_class_columns(values: np.ndarray, owners: np.ndarray, width: int) -> np.ndarray:
    """`sum_columns` per class: rows x columns x classes -> rows x `width` x classes."""
    return np.stack([sum_columns(values[:, :, k], owners, width) for k in range(values.shape[2])], axis=2)


def sum_columns(values: np.ndarray, owners: np.ndarray, width: int) -> np.ndarray:
    """Sum the columns of `values` into `width` columns: column j goes to `owners[j]`."""
    if values.shape[1] != len(owners):
        raise ValueError(f"{values.shape[1]} attribution columns but {len(owners)} column owners")
    out = np.zeros((values.shape[0], width))
    np.add.at(out.T, owners, values.T)
    return out


def column_indices(columns: Any, n_columns: int, names: Sequence[str] | None = None) -> list[int]:
    """Positions of a ColumnTransformer column selection (names, indices, slice or bool mask)."""
    if isinstance(columns, slice):
        return list(range(n_columns))[columns]
    if isinstance(columns, str | int):
        columns = [columns]
    selected = list(np.asarray(columns).tolist()) if not isinstance(columns, list) else list(columns)
    if selected and all(isinstance(c, bool | np.bool_) for c in selected):
        return [i for i, keep in enumerate(selected) if keep]
    if selected and all(isinstance(c, str) for c in selected):
        if names is None:
            raise ValueError("column names given but the input has no names")
        return [list(names).index(c) for c in selected]
    return [int(c) for c in selected]


def column_owners(preprocess: Any, features: list[str]) -> np.ndarray:
    """For each output column of the fitted ColumnTransformer, the index of its original feature."""
    names = list(getattr(preprocess, "feature_names_in_", features))
    owners = np.full(_output_width(preprocess), -1, dtype=int)
    for name, transformer, columns in preprocess.transformers_:
        block = preprocess.output_indices_.get(name, slice(0, 0))
        width = block.stop - block.start
        if width == 0:
            continue
        inputs = [features.index(names[i]) for i in column_indices(columns, len(names), names)]
        if width == len(inputs):
            owners[block] = inputs
            continue
        counts = _outputs_per_input(transformer, [features[i] for i in inputs], width)
        owners[block] = np.repeat(inputs, counts)
    if (owners < 0).any():
        raise ValueError(f"{int((owners < 0).sum())} transformed columns could not be mapped to a feature")
    return owners


def _output_width(preprocess: Any) -> int:
    return max((s.stop for s in preprocess.output_indices_.values()), default=0)


def _outputs_per_input(transformer: Any, inputs: list[str], width: int) -> list[int]:
    """How many output columns each input column of a (one-hot-like) transformer produced."""
    last = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
    counts = getattr(last, "_n_features_outs", None)  # OneHotEncoder's per-feature widths
    if counts is not None and len(counts) == len(inputs) and sum(counts) == width:
        return [int(c) for c in counts]
    # Fallback: output names start with "<input>_"; the longest matching input name wins.
    out_names = [str(n) for n in transformer.get_feature_names_out(inputs)]
    by_length = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    result = [0] * len(inputs)
    for out in out_names:
        owner = next((i for i in by_length if out.startswith(inputs[i] + "_") or out == inputs[i]), None)
        if owner is None:
            raise ValueError(f"cannot tell which feature the transformed column {out!r} comes from")
        result[owner] += 1
    if sum(result) != width:
        raise ValueError(f"mapped {sum(result)} of {width} transformed columns")
    return result
