"""A compiled fast path for the serving hot path: validated records straight to the estimator's input.

scikit-learn's ColumnTransformer costs milliseconds per call whatever the row count (pandas
column selection, input validation, one sub-pipeline per block, a final hstack): for a
micro-batch of 32 rows it costs more than the trees. But the fitted preprocessing built by
`modeling.search_space` is column-wise: each input column alone decides its own output
positions, through imputation and scaling for numbers and a lookup for categories
(imputation, one-hot / ordinal / target encoding, infrequent grouping, unseen values).

Where each column lands, and what each category becomes, is found by probing the fitted
transformer itself: one `transform` of a probe frame varies one column at a time from a base
row and records which outputs move and to what. Numbers go through the fitted imputer's and
scaler's own parameters, applied in scikit-learn's order (so the result is the same floats,
not an approximation: an affine map fitted from probes lost 1e-7 relative on a 1e5-scale
column). The result is then checked against the real pipeline on the model's input example
and on a few hundred synthetic rows (every category, nulls, unseen values, large and
negative numbers). Anything that does not fit this shape, or any mismatch, leaves the model
on the ordinary pipeline, with the reason shown on `/model`: the fast path can make serving
faster, never different.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autopilot.serving.schema import ServingSchema

__all__ = ["CompiledPreprocess", "DirectHGB", "NotCompilable", "compile_pipeline", "training_categories"]

UNSEEN = "\x00autopilot-unseen\x00"  # a category no training set holds: probes the unknown-value route
NUMERIC_PROBES = (0.0, 1.0, None, -3.5, 2.0, 1000.0)
VERIFY_ROWS = 256
VERIFY_BATCH = 7  # rows per call in the micro-batch check: an odd size, below any forest cut-off


class NotCompilable(ValueError):
    """The pipeline is not of the column-wise shape the fast path needs (the reason says why)."""


@dataclass(frozen=True)
class _Numeric:
    name: str
    position: int | None  # output column; None: the column does not reach the output
    ops: tuple[tuple[str, float], ...]  # ("fill" | "sub" | "div" | "mul" | "add", value), in order

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The fitted steps on one column, as scikit-learn computes them."""
        for op, value in self.ops:
            if op == "fill":
                x[np.isnan(x)] = value
            elif op == "sub":
                x -= value
            elif op == "div":
                x /= value
            elif op == "mul":
                x *= value
            else:
                x += value
        return x


@dataclass(frozen=True)
class _Categorical:
    name: str
    positions: np.ndarray  # output columns this input decides
    index: dict[str, int]  # category -> row of `table`
    table: np.ndarray  # (len(index) + 2, len(positions)): categories, then missing, then unseen


@dataclass(frozen=True)
class CompiledPreprocess:
    """The fitted preprocessing as arrays: `transform(rows)` equals `ColumnTransformer.transform(frame)`."""

    width: int
    base: np.ndarray
    numeric: tuple[_Numeric, ...]
    categorical: tuple[_Categorical, ...]
    # Scores the features directly when the estimator's own input step is compiled in (`DirectHGB`);
    # None: the features are the estimator's input, scored by the estimator itself.
    estimator: Any = None

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The estimator's input for validated records (as `ServingSchema.records` returns them)."""
        out = np.tile(self.base, (len(rows), 1))
        for num in self.numeric:
            if num.position is None:
                continue
            # None becomes NaN under dtype=float; validation already refused NaN and infinity as values.
            x = np.array([row[num.name] for row in rows], dtype=np.float64)
            out[:, num.position] = num.apply(x)
        for cat in self.categorical:
            missing, unseen = len(cat.index), len(cat.index) + 1
            codes = [missing if (v := row[cat.name]) is None else cat.index.get(v, unseen) for row in rows]
            out[:, cat.positions] = cat.table[codes]
        return out


def compile_pipeline(pipeline: Any, schema: ServingSchema, example: pd.DataFrame | None = None,
                     seed: int = 0) -> CompiledPreprocess:
    """Compile `pipeline`'s preprocessing step and prove it equal to the pipeline.

    Args:
        pipeline: a fitted scikit-learn `Pipeline` of a ColumnTransformer and an estimator.
        schema: the serving schema (column names, kinds, nullable columns).
        example: real rows (the model's input example) added to the verification.

    Raises:
        NotCompilable: naming why the fast path does not apply to this pipeline.
    """
    preprocess, estimator = _split(pipeline)
    vocab = _vocabularies(preprocess, schema)
    compiled = _compile_stage(preprocess, schema, vocab)
    _verify(compiled, preprocess, estimator, estimator, preprocess, schema, vocab, example, seed)
    direct = DirectHGB.of(estimator)
    if direct is None:
        return compiled
    stage = _ThroughEstimatorInput(preprocess, estimator)
    try:  # the estimator's own input validation and encoding compiled in too, when it proves equal
        deeper = _compile_stage(stage, schema, vocab, preprocess)
        deeper = CompiledPreprocess(deeper.width, deeper.base, deeper.numeric, deeper.categorical, direct)
        _verify(deeper, stage, direct, estimator, preprocess, schema, vocab, example, seed)
    except NotCompilable:
        return compiled
    return deeper


def _compile_stage(stage: Any, schema: ServingSchema, vocab: Mapping[str, list[str]],
                   preprocess: Any = None) -> CompiledPreprocess:
    """Probe `stage` (a fitted transform from the canonical frame to floats) into lookup tables."""
    steps = _numeric_steps(preprocess if preprocess is not None else stage, schema)
    probes, owners = _probe_frame(schema, vocab)
    out = _transform(stage, probes)
    base = out[0].copy()
    probe_rows: dict[str, list[int]] = {name: [] for name in schema.columns}
    for i, (owner, _) in enumerate(owners[1:], start=1):  # row 0 is the base row
        probe_rows[owner].append(i)
    moved = _moved_positions(out, base, probe_rows)
    numeric, categorical = [], []
    for name, kind in zip(schema.columns, schema.kinds, strict=True):
        rows = probe_rows[name]
        if kind == "numeric":
            numeric.append(_fit_numeric(name, moved[name], steps.get(name)))
        else:
            categorical.append(_fit_categorical(name, moved[name], out, rows, vocab[name]))
    return CompiledPreprocess(width=out.shape[1], base=base, numeric=tuple(numeric), categorical=tuple(categorical))


class _ThroughEstimatorInput:
    """The pipeline's preprocessing followed by the estimator's own input step (HGB's `_preprocess_X`)."""

    def __init__(self, preprocess: Any, estimator: Any) -> None:
        self.preprocess, self.estimator = preprocess, estimator

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        features = np.asarray(self.preprocess.transform(frame), dtype=np.float64)
        return np.asarray(self.estimator._preprocess_X(features, reset=False), dtype=np.float64)


class DirectHGB:
    """A fitted HistGradientBoosting model's prediction without its input step, which the fast path compiled.

    scikit-learn's own computation (`_raw_predict`, then the loss's link) minus `_preprocess_X`:
    its validation and ordinal encoding cost ~75% of a small batch's predict call (a
    ColumnTransformer per call). It relies on private attributes, so it is used only when
    `compile_pipeline` proved its scores equal to the pipeline's, bit for bit. `of` gives the
    classifier's (`predict_proba`) or the regressor's (`predict`) variant.
    """

    REQUIRED = ("_preprocess_X", "_predict_iterations", "_predictors", "_baseline_prediction", "_loss",
                "n_trees_per_iteration_")

    def __init__(self, estimator: Any) -> None:
        from autopilot.serving.forest import FlatForest

        self.estimator = estimator
        # Micro-batches go through the joined forest (one native call); `compile_pipeline` proves both routes.
        self.forest = FlatForest(estimator, int(estimator.n_features_in_))

    @classmethod
    def of(cls, estimator: Any) -> DirectHGB | None:
        """The direct scorer for a fitted HistGradientBoosting estimator; None for any other."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if not all(hasattr(estimator, attribute) for attribute in cls.REQUIRED):
            return None
        if isinstance(estimator, HistGradientBoostingClassifier):
            return _DirectHGBClassifier(estimator)
        if isinstance(estimator, HistGradientBoostingRegressor):
            return _DirectHGBRegressor(estimator)
        return None

    def raw(self, features: np.ndarray) -> np.ndarray:
        """The summed leaf values plus the baseline, as `_raw_predict` gives them."""
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        est = self.estimator
        if features.shape[1] == self.forest.width and self.forest.fits(features.shape[0]):
            return self.forest.raw(features, _openmp_effective_n_threads())
        raw = np.zeros((features.shape[0], est.n_trees_per_iteration_), dtype=est._baseline_prediction.dtype,
                       order="F")
        raw += est._baseline_prediction
        est._predict_iterations(features, est._predictors, raw, False, _openmp_effective_n_threads())
        return raw


class _DirectHGBClassifier(DirectHGB):
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, as `HistGradientBoostingClassifier.predict_proba`."""
        return np.asarray(self.estimator._loss.predict_proba(self.raw(features)))


class _DirectHGBRegressor(DirectHGB):
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted values, as `HistGradientBoostingRegressor.predict`."""
        return np.asarray(self.estimator._loss.link.inverse(self.raw(features).ravel()))


def _split(pipeline: Any) -> tuple[Any, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise NotCompilable("the model is not a two-step pipeline (preprocessing, estimator)")
    preprocess, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(preprocess, ColumnTransformer):
        raise NotCompilable(f"the first step is a {type(preprocess).__name__}, not a ColumnTransformer")
    if getattr(preprocess, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        raise NotCompilable("the ColumnTransformer's output is not a plain array (set_output)")
    if hasattr(estimator, "feature_names_in_"):
        raise NotCompilable("the estimator was fitted on named columns")
    return preprocess, estimator


def training_categories(pipeline: Any) -> dict[str, list[str]]:
    """The categories each encoded column saw in training, from the fitted encoders of `pipeline`.

    Read from the encoder's `categories_` (one-hot, ordinal and target encoders all keep every
    category seen in fit, rare ones included), the same source the fast path compiles its lookups
    from, so both paths know the same categories. A pipeline whose first step is not a fitted
    ColumnTransformer gives {}.
    """
    from sklearn.compose import ColumnTransformer

    steps = getattr(pipeline, "steps", None)
    preprocess = steps[0][1] if steps else None
    if not isinstance(preprocess, ColumnTransformer) or not hasattr(preprocess, "transformers_"):
        return {}
    return _encoder_categories(preprocess)


def _encoder_categories(preprocess: Any) -> dict[str, list[str]]:
    vocab: dict[str, list[str]] = {}
    for _, transformer, columns in preprocess.transformers_:
        if transformer in ("drop", "passthrough") or not isinstance(columns, list | tuple):
            continue
        encoder = _last_step_with(transformer, "categories_")
        if encoder is None:
            continue
        for column, categories in zip(columns, encoder.categories_, strict=True):
            vocab[str(column)] = [c for c in categories if isinstance(c, str)]
    return vocab


def _vocabularies(preprocess: Any, schema: ServingSchema) -> dict[str, list[str]]:
    """Each categorical column's known categories, from the fitted encoder of its block."""
    vocab = _encoder_categories(preprocess)
    for name, kind in zip(schema.columns, schema.kinds, strict=True):
        if kind == "categorical" and name not in vocab:
            raise NotCompilable(f"no fitted encoder lists the categories of {name!r}")
    return vocab


def _last_step_with(transformer: Any, attribute: str) -> Any:
    steps = [step for _, step in getattr(transformer, "steps", [])] or [transformer]
    found = [step for step in steps if hasattr(step, attribute)]
    return found[-1] if found else None


def _probe_frame(schema: ServingSchema, vocab: Mapping[str, list[str]]) -> tuple[pd.DataFrame, list[tuple[str, Any]]]:
    """Row 0 is the base row; each later row changes one column of it to one probe value."""
    base = {name: (0.0 if kind == "numeric" else (vocab[name][0] if vocab[name] else UNSEEN))
            for name, kind in zip(schema.columns, schema.kinds, strict=True)}
    records, owners = [dict(base)], [("", None)]
    for name, kind in zip(schema.columns, schema.kinds, strict=True):
        values: Sequence[Any] = NUMERIC_PROBES if kind == "numeric" else [*vocab[name], None, UNSEEN]
        for value in values:
            records.append({**base, name: value})
            owners.append((name, value))
    return schema.frame(records), owners


def _transform(preprocess: Any, frame: pd.DataFrame) -> np.ndarray:
    try:
        out = np.asarray(preprocess.transform(frame))
    except ValueError as exc:  # e.g. an encoder that refuses unseen categories: the pipeline serves as it is
        raise NotCompilable(f"the preprocessing refused the probe rows: {exc}") from exc
    if out.ndim != 2 or out.dtype.kind != "f":
        raise NotCompilable(f"the preprocessing gives a {out.dtype} array of {out.ndim} dimensions, not floats")
    return out.astype(np.float64, copy=False)


def _moved_positions(out: np.ndarray, base: np.ndarray, probe_rows: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Per input column, the outputs that changed when only that column did; they must not overlap."""
    changed = ~((out == base) | (np.isnan(out) & np.isnan(base)))
    moved: dict[str, np.ndarray] = {}
    claimed = np.zeros(out.shape[1], dtype=bool)
    for name, rows in probe_rows.items():
        positions = np.flatnonzero(changed[rows].any(axis=0))
        if claimed[positions].any():
            raise NotCompilable(f"column {name!r} changes outputs that another column also changes")
        claimed[positions] = True
        moved[name] = positions
    return moved


def _numeric_steps(preprocess: Any, schema: ServingSchema) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each numeric column's fitted steps, read from the imputer and scaler of its block."""
    numeric = {name for name, kind in zip(schema.columns, schema.kinds, strict=True) if kind == "numeric"}
    found: dict[str, tuple[tuple[str, float], ...]] = {}
    for _, transformer, columns in preprocess.transformers_:
        if transformer == "drop" or not isinstance(columns, list | tuple):
            continue
        block = [str(c) for c in columns if str(c) in numeric]
        if not block:
            continue
        steps = [] if transformer == "passthrough" else [s for _, s in getattr(transformer, "steps", [])] or [
            transformer]
        for i, column in enumerate(block):
            found[column] = tuple(op for step in steps for op in _ops(step, i, column))
    return found


def _ops(step: Any, i: int, column: str) -> list[tuple[str, float]]:
    """One fitted step's operations on column `i` of its block, in the order scikit-learn applies them."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if step == "passthrough" or step is None or _identity(step):
        return []
    if isinstance(step, SimpleImputer) and not step.add_indicator and _nan_marks_missing(step.missing_values):
        return [("fill", float(step.statistics_[i]))]
    if isinstance(step, StandardScaler):
        ops = [("sub", float(step.mean_[i]))] if step.with_mean else []
        return ops + ([("div", float(step.scale_[i]))] if step.with_std else [])
    if isinstance(step, MinMaxScaler) and not step.clip:
        return [("mul", float(step.scale_[i])), ("add", float(step.min_[i]))]
    raise NotCompilable(f"numeric column {column!r} goes through a {type(step).__name__}, "
                        "which the fast path does not compile")


def _identity(step: Any) -> bool:
    """A FunctionTransformer without a function: what ColumnTransformer makes of "passthrough" when fitted."""
    from sklearn.preprocessing import FunctionTransformer

    return isinstance(step, FunctionTransformer) and step.func is None


def _nan_marks_missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fit_numeric(name: str, positions: np.ndarray, ops: tuple[tuple[str, float], ...] | None) -> _Numeric:
    if len(positions) > 1:
        raise NotCompilable(f"numeric column {name!r} feeds {len(positions)} outputs, not one")
    if len(positions) and ops is None:
        raise NotCompilable(f"numeric column {name!r} reaches the output through no known block")
    return _Numeric(name, int(positions[0]) if len(positions) else None, ops or ())


def _fit_categorical(name: str, positions: np.ndarray, out: np.ndarray, rows: Sequence[int],
                     categories: Sequence[str]) -> _Categorical:
    # The probe rows of this column are its categories in order, then None, then UNSEEN: the table's layout.
    table = out[np.asarray(rows)][:, positions].copy()
    return _Categorical(name, positions, {c: i for i, c in enumerate(categories)}, table)


def _verify(compiled: CompiledPreprocess, stage: Any, scorer: Any, estimator: Any, preprocess: Any,
            schema: ServingSchema, vocab: Mapping[str, list[str]], example: pd.DataFrame | None, seed: int) -> None:
    """The compiled path must give `stage`'s own features, and `scorer` on them the pipeline's predictions."""
    rows = _synthetic_rows(schema, vocab, example, seed)
    if example is not None and len(example):
        rows = [{c: _plain(r[c]) for c in schema.columns} for r in example.to_dict("records")] + rows
    frame = schema.frame(rows)
    expected = _transform(stage, frame)
    got = compiled.transform(rows)
    if got.shape != expected.shape:
        raise NotCompilable(f"the compiled features have shape {got.shape}, the pipeline's {expected.shape}")
    # Exact: the same operations on the same floats (NaN where the pipeline has NaN).
    if not np.array_equal(got, expected, equal_nan=True):
        differ = np.flatnonzero(~((got == expected) | (np.isnan(got) & np.isnan(expected))).all(axis=0))
        raise NotCompilable(f"the compiled features differ from the pipeline's in output columns "
                            f"{differ[:5].tolist()}")
    reference = _scores(estimator, _transform(preprocess, frame))
    if not np.array_equal(_scores(scorer, got), reference):
        raise NotCompilable("the estimator's scores on the compiled features differ from the pipeline's")
    if not isinstance(scorer, DirectHGB):
        return
    # Micro-batches take another route (the joined forest, `serving.forest`): proven equal too. Only
    # there: other estimators' scores may differ in the last bit between batch sizes (BLAS kernels),
    # in the pipeline as much as in the fast path.
    small = [_scores(scorer, got[i:i + VERIFY_BATCH]) for i in range(0, len(got), VERIFY_BATCH)]
    if not np.array_equal(np.concatenate(small), reference):
        raise NotCompilable(f"the estimator's scores in batches of {VERIFY_BATCH} rows differ from the pipeline's")


def _scores(estimator: Any, features: np.ndarray) -> np.ndarray:
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(features), dtype=np.float64)
    return np.asarray(estimator.predict(features), dtype=np.float64)


def _synthetic_rows(schema: ServingSchema, vocab: Mapping[str, list[str]], example: pd.DataFrame | None,
                    seed: int) -> list[dict[str, Any]]:
    """Rows mixing every category, nulls, unseen values and numbers of several magnitudes."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = [{} for _ in range(VERIFY_ROWS)]
    for name, kind in zip(schema.columns, schema.kinds, strict=True):
        if kind == "numeric":
            seen = [] if example is None else [float(v) for v in example[name] if _plain(v) is not None]
            pool: list[Any] = [*seen, 0.0, 1.0, -1.0, 0.5, 37.0, 1e6, -2.5e3]
            picks = [pool[i] for i in rng.integers(0, len(pool), VERIFY_ROWS)]
            picks = [p * float(rng.uniform(0.5, 1.5)) if i % 3 == 0 else p for i, p in enumerate(picks)]
        else:
            pool = [*vocab[name], UNSEEN, "never-seen-value"]
            picks = [pool[i] for i in rng.integers(0, len(pool), VERIFY_ROWS)]
        nulls = rng.random(VERIFY_ROWS) < (0.15 if name in schema.nullable else 0.0)
        for row, value, null in zip(rows, picks, nulls, strict=True):
            row[name] = None if null else value
    return rows


def _plain(value: Any) -> Any:
    """A frame cell as a request would carry it: None for missing, Python scalars otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
