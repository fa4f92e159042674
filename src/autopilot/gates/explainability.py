"""The explainability gate: global SHAP importance on the original features, its stability
against the champion, and a leakage check.

Three ways to get per-row SHAP values, all reported on the ORIGINAL (pre-encoding) features:

- `tree` (exact, fast): for RandomForest / ExtraTrees / HistGradientBoosting. The fitted
  `preprocess` step transforms the rows, path-dependent TreeSHAP explains the estimator on the
  transformed matrix, and the attributions of all transformed columns that come from one
  original feature are summed (one-hot: several columns per feature; ordinal, native and
  binary target encoding: one). HistGradientBoosting trees are converted here rather than by
  shap: with native categorical support HGB reorders and re-encodes its categorical columns
  and splits them by category bitsets, which shap's built-in converter ignores (measured on
  Adult: its values miss the model output by up to 16 log-odds, silently). Each distinct
  categorical split becomes a 0/1 "goes left" column whose attribution is summed into its
  feature, the same way one-hot columns are. Units: log-odds for HGB classifiers, probability
  for forest classifiers (their trees average probabilities), the prediction for regressors.
- `linear` (exact, instant): for logistic regression (binary) and the linear regressors
  (Ridge, LinearRegression, Lasso, ElasticNet, ...). The model's margin is additive in the
  transformed columns z = T(x), and every transformer of the pipeline (imputers, scalers,
  one-hot, target encoding) works column by column, so the margin is additive in the original
  features and interventional SHAP is exact in closed form: transformed column j gets
  coef_j * (z_j - mean of z_j over the background rows), summed onto its original feature as
  on the tree path. Base value = coef . mean(z_background) + intercept. Units: log-odds
  (`decision_function`) for logistic regression, the prediction for regressors. These are
  the values the permutation path estimates with the same background (for an additive model
  every permutation gives the same marginal contributions), at a tiny fraction of the cost.
  A multiclass or multi-output linear model has no single margin and is not explained here.
- `permutation` (model-agnostic): the whole pipeline is explained on raw feature rows with
  `shap.PermutationExplainer` and an `Independent` masker over a sampled background.
  Categorical columns are integer-coded for the masker (it cannot hold strings) and decoded
  back to strings (code NaN -> NaN) inside the prediction function. Classification is
  explained in log-odds (the logit of `predict_proba[:, 1]`), so it shares units with the tree
  path on boosting and with the linear path; regression explains `predict`. `auto` picks this
  path only when neither the tree nor the linear path applies, and `Attributions.path_reason`
  says why.

`explain_model` applies the config's bounds: at most `max_rows` rows (seeded sample),
`background_rows` background rows, and a time budget of `max_seconds`: a first batch of
`PILOT_ROWS` rows is timed and the number of further rows is extrapolated to fit the budget.
The budget applies to every path (deep forests make TreeSHAP slow too). The linear and
permutation paths measure from the same `background_rows` sample.

The gate (`evaluate_explainability`) fails closed, with a reason, on an exception, zero rows,
NaN/inf or all-zero attributions, or attributions that do not add up to the model output;
fails when one feature carries more than `max_feature_share` of all attribution (leakage);
and, with a champion, fails when nDCG@k of the importance ranking drops below `min_ndcg`.
It reports the share carried by the sensitive attributes, which the fairness gate gates.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.reports import GateReport, json_safe

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = [
    "Attributions",
    "evaluate_explainability",
    "explain_model",
    "ndcg_at_k",
    "shap_attributions",
    "write_plots",
]

GATE = "explainability"
METHODS = ("auto", "tree", "linear", "permutation")
# Rows of the timed first batch from which explain_model extrapolates the cost of the rest.
PILOT_ROWS = 10
# Share of the time budget the extrapolation aims for (the estimate is noisy).
BUDGET_SAFETY = 0.9
# Model evaluations per explained row of the permutation explainer (shap's default).
PERMUTATION_MAX_EVALS = 500
# Probabilities are clipped before the logit so a saturated model gives large, finite log-odds.
PROBA_CLIP = 1e-12
# Largest |sum of attributions + base - model output| / max(1, max |output|) the gate accepts.
ADDITIVITY_TOLERANCE = 1e-3
# Features shown in plots.
MAX_DISPLAY = 20

_TREE_ESTIMATORS = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)
# Classifiers whose positive-class log-odds are exactly the linear margin `decision_function`
# (predict_proba is its logistic). SGDClassifier only with loss="log_loss" (checked below).
_LINEAR_CLASSIFIERS = ("LogisticRegression", "LogisticRegressionCV", "SGDClassifier")
# Regressors whose `predict` is exactly z @ coef_ + intercept_.
_LINEAR_REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "RidgeCV",
    "Lasso",
    "LassoCV",
    "ElasticNet",
    "ElasticNetCV",
    "SGDRegressor",
    "HuberRegressor",
    "BayesianRidge",
    "LinearSVR",
)


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Attributions:
    """Per-row SHAP values on the original features, with how they were obtained.

    Attributes:
        values: rows x original feature columns (config order), in `output` units.
        base_value: the expected model output the attributions are measured from.
        method: `tree`, `linear` or `permutation`.
        rows: rows explained.
        seconds: wall time of the whole explanation (set-up included).
        output: units of the values: `log_odds`, `probability` or `prediction`.
        background_rows: background rows used (0 for the tree path, which needs none).
        additivity_error: max |sum of values + base - model output| over the rows, divided by
            max(1, max |model output|); None when not measured.
        path_reason: why this path explained the model (for the permutation path: why neither
            exact path applied).
    """

    values: pd.DataFrame
    base_value: float
    method: str
    rows: int
    seconds: float
    output: str = "prediction"
    background_rows: int = 0
    additivity_error: float | None = None
    path_reason: str = ""

    def importance(self) -> dict[str, float]:
        """Mean |SHAP| per original feature, in config (column) order."""
        means = self.values.abs().mean(axis=0) if len(self.values) else pd.Series(math.nan, index=self.values.columns)
        return {str(name): float(value) for name, value in means.items()}

    def shares(self) -> dict[str, float]:
        """Each feature's share of the total mean |SHAP| (sums to 1; all zeros when the total is 0)."""
        importance = self.importance()
        total = sum(importance.values())
        if not math.isfinite(total):
            return {name: math.nan for name in importance}
        if total <= 0:
            return {name: 0.0 for name in importance}
        return {name: value / total for name, value in importance.items()}


# ---------------------------------------------------------------------------- explaining


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
    features = _feature_rows(X, cfg)
    if len(features) == 0:
        raise ValueError("no rows to explain")
    path = _prepare(model, cfg, _background(background, features, cfg, seed), method, seed)
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
    rows = _sample(_feature_rows(X_holdout, cfg), bounds.max_rows, seed)
    if len(rows) == 0:
        raise ValueError("no holdout rows to explain")
    background = _sample(_feature_rows(X_background_source, cfg), bounds.background_rows, seed + 1)
    path = _prepare(model, cfg, background if len(background) else None, "auto", seed)
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


def _result(path: _Path, rows: pd.DataFrame, values: np.ndarray, base: float, error: float | None,
            seconds: float) -> Attributions:
    frame = pd.DataFrame(np.asarray(values, dtype=float), index=rows.index, columns=list(rows.columns))
    return Attributions(values=frame, base_value=float(base), method=path.method, rows=len(frame), seconds=seconds,
                        output=path.output, background_rows=path.background_rows, additivity_error=error,
                        path_reason=path.reason)


def _feature_rows(X: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    missing = [name for name in cfg.features if name not in X.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
    return X.loc[:, list(cfg.features)]


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed)


def _background(background: pd.DataFrame | None, rows: pd.DataFrame, cfg: ModelConfig, seed: int) -> pd.DataFrame:
    if background is not None and len(background):
        return _feature_rows(background, cfg)
    return _sample(rows, cfg.gates.explainability.background_rows, seed + 1)


def _max_or_none(a: float | None, b: float | None) -> float | None:
    present = [x for x in (a, b) if x is not None]
    return max(present) if present else None


def _relative_error(explained: np.ndarray, output: np.ndarray) -> float:
    if len(output) == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(output))))
    return float(np.max(np.abs(explained - output)) / scale)


# ---------------------------------------------------------------------------- paths


class _Path:
    """A prepared explainer: set up once, then `explain(rows)` any number of times."""

    method: str
    output: str
    background_rows: int = 0
    reason: str = ""

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, float, float | None]:
        """(values rows x original features, base value, relative additivity error)."""
        raise NotImplementedError


def _split_pipeline(model: Any) -> tuple[Any, Any]:
    """(the ColumnTransformer, the final estimator) of a pipeline, or (None, estimator)."""
    from sklearn.compose import ColumnTransformer

    steps = getattr(model, "steps", None)
    if not steps:
        return None, model
    estimator = steps[-1][1]
    if len(steps) == 2 and isinstance(steps[0][1], ColumnTransformer):
        return steps[0][1], estimator
    return None, estimator


def _is_tree(estimator: Any) -> bool:
    return type(estimator).__name__ in _TREE_ESTIMATORS


def _tree_problem(preprocess: Any, estimator: Any) -> str | None:
    """Why the tree path cannot explain this pipeline (None when it can)."""
    name = type(estimator).__name__
    if not _is_tree(estimator):
        return f"{name} is not a forest or HistGradientBoosting model"
    if preprocess is None:
        return "the pipeline is not a ColumnTransformer followed by the estimator"
    return None


def _linear_problem(preprocess: Any, estimator: Any) -> str | None:
    """Why the linear path cannot explain this pipeline (None when it can).

    Class names are matched exactly (as for trees): a subclass may change what predict means.
    """
    name = type(estimator).__name__
    if name not in _LINEAR_CLASSIFIERS and name not in _LINEAR_REGRESSORS:
        return f"{name} is not a linear model the linear path knows"
    if preprocess is None:
        return "the pipeline is not a ColumnTransformer followed by the estimator"
    coef = getattr(estimator, "coef_", None)
    if coef is None:
        return f"{name} has no fitted coefficients"
    if name in _LINEAR_CLASSIFIERS:
        if name == "SGDClassifier" and getattr(estimator, "loss", None) != "log_loss":
            return f"SGDClassifier with loss={estimator.loss!r} has no log-odds margin"
        classes = len(getattr(estimator, "classes_", ()))
        if classes != 2:
            return f"{name} with {classes} classes has no single log-odds margin (multiclass)"
    shape = np.shape(coef)
    if len(shape) == 2 and shape[0] != 1:
        return f"{name} has {shape[0]} outputs (one margin each); the gates explain one"
    return None


def _prepare(model: Any, cfg: ModelConfig, background: pd.DataFrame | None, method: str, seed: int) -> _Path:
    if method not in METHODS:
        raise ValueError(f"unknown SHAP method {method!r}; expected one of {list(METHODS)}")
    preprocess, estimator = _split_pipeline(model)
    name = type(estimator).__name__
    tree_problem = _tree_problem(preprocess, estimator)
    linear_problem = _linear_problem(preprocess, estimator)
    if method == "tree" and tree_problem is not None:
        raise ValueError(f"the tree path needs a ColumnTransformer + forest/HGB pipeline: {tree_problem}")
    if method == "linear" and linear_problem is not None:
        raise ValueError(f"the linear path cannot explain this pipeline: {linear_problem}")
    reason = "requested"
    if method == "auto":
        # The exact paths first; the permutation path costs ~0.05-0.5 s per row and estimates.
        if tree_problem is None:
            method, reason = "tree", f"exact TreeSHAP: {name} is a tree ensemble"
        elif linear_problem is None:
            method, reason = "linear", f"exact linear SHAP: {name} is linear in the transformed features"
        else:
            method = "permutation"
            reason = f"model-agnostic: no exact path applies (tree: {tree_problem}; linear: {linear_problem})"
    path: _Path
    if method == "tree":
        path = _TreePath(preprocess, estimator, cfg)
    elif background is None or len(background) == 0:
        raise ValueError(f"the {method} path needs background rows")
    elif method == "linear":
        path = _LinearPath(preprocess, estimator, cfg, background)
    else:
        path = _PermutationPath(model, cfg, background, seed)
    path.reason = reason
    return path


# ---------------------------------------------------------------------------- tree path


class _TreePath(_Path):
    """Path-dependent TreeSHAP on the transformed matrix, summed back onto the original features."""

    method = "tree"

    def __init__(self, preprocess: Any, estimator: Any, cfg: ModelConfig) -> None:
        import shap

        self.preprocess = preprocess
        self.estimator = estimator
        self.features = list(cfg.features)
        self.owners = _column_owners(preprocess, self.features)
        self.classifier = hasattr(estimator, "predict_proba")
        self.hgb = type(estimator).__name__.startswith("HistGradientBoosting")
        if self.hgb:
            self.trees = _HGBTrees(estimator)
            self.explainer = shap.TreeExplainer(self.trees.model)
            self.output = "log_odds" if self.classifier else "prediction"
        else:
            self.explainer = shap.TreeExplainer(estimator)
            self.output = "probability" if self.classifier else "prediction"

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, float, float | None]:
        """SHAP values of `rows` on the original features."""
        transformed = _dense(self.preprocess.transform(rows))
        if self.hgb:
            matrix, owners = self.trees.inputs(transformed)
            raw = np.asarray(self.explainer.shap_values(matrix, check_additivity=False), dtype=float)
            per_column = _sum_columns(raw, owners, transformed.shape[1])
            base = float(np.ravel(self.explainer.expected_value)[0])
            output = _margin(self.estimator, transformed, self.classifier)
        else:
            raw_any = self.explainer.shap_values(transformed.astype(np.float32), check_additivity=False)
            expected = np.ravel(self.explainer.expected_value)
            if self.classifier:
                raw = _positive_slice(raw_any)
                base = float(expected[-1])
                output = np.asarray(self.estimator.predict_proba(transformed))[:, 1]
            else:
                raw = np.asarray(raw_any, dtype=float)
                base = float(expected[0])
                output = np.asarray(self.estimator.predict(transformed), dtype=float)
            per_column = raw
        values = _sum_columns(per_column, self.owners, len(self.features))
        error = _relative_error(values.sum(axis=1) + base, output)
        return values, base, error


def _dense(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def _positive_slice(raw: Any) -> np.ndarray:
    """The positive-class slice of a classifier's SHAP output (list per class or rows x cols x classes)."""
    if isinstance(raw, list):
        return np.asarray(raw[-1], dtype=float)
    array = np.asarray(raw, dtype=float)
    return array[:, :, -1] if array.ndim == 3 else array


def _margin(estimator: Any, transformed: np.ndarray, classifier: bool) -> np.ndarray:
    if classifier:
        return np.ravel(np.asarray(estimator.decision_function(transformed), dtype=float))
    return np.asarray(estimator.predict(transformed), dtype=float)


def _sum_columns(values: np.ndarray, owners: np.ndarray, width: int) -> np.ndarray:
    """Sum the columns of `values` into `width` columns: column j goes to `owners[j]`."""
    if values.shape[1] != len(owners):
        raise ValueError(f"{values.shape[1]} attribution columns but {len(owners)} column owners")
    out = np.zeros((values.shape[0], width))
    np.add.at(out.T, owners, values.T)
    return out


def _column_indices(columns: Any, n_columns: int, names: Sequence[str] | None = None) -> list[int]:
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


def _column_owners(preprocess: Any, features: list[str]) -> np.ndarray:
    """For each output column of the fitted ColumnTransformer, the index of its original feature."""
    names = list(getattr(preprocess, "feature_names_in_", features))
    owners = np.full(_output_width(preprocess), -1, dtype=int)
    for name, transformer, columns in preprocess.transformers_:
        block = preprocess.output_indices_.get(name, slice(0, 0))
        width = block.stop - block.start
        if width == 0:
            continue
        inputs = [features.index(names[i]) for i in _column_indices(columns, len(names), names)]
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


class _HGBTrees:
    """A fitted HistGradientBoosting model as a shap tree-ensemble dict, with categorical splits.

    HGB with categorical features runs its input through its own ColumnTransformer first
    (categorical columns first, re-coded 0..n-1), so tree feature indices refer to that
    matrix. shap's thresholds cannot express "category in bitset" splits, so each distinct
    categorical split (feature, left bitset, missing direction) becomes an extra 0/1 column,
    0 = goes left, which the tree tests with `<= 0.5`; its attribution is summed into the feature.
    """

    def __init__(self, estimator: Any) -> None:
        if getattr(estimator, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("multiclass HistGradientBoosting is not supported")
        self.estimator = estimator
        self.preprocessor = getattr(estimator, "_preprocessor", None)
        self.n_inputs = int(estimator.n_features_in_)
        known, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        self.known = np.asarray(known)
        self.f_idx_map = np.asarray(f_idx_map)
        self.splits: dict[tuple[int, bytes, bool], int] = {}
        self.split_specs: list[tuple[int, np.ndarray, bool]] = []
        trees = [self._tree(predictors[0]) for predictors in estimator._predictors]
        baseline = float(np.ravel(np.asarray(estimator._baseline_prediction, dtype=float))[0])
        self.model = {"trees": trees, "base_offset": baseline, "tree_output": "raw_value",
                      "input_dtype": np.float64, "internal_dtype": np.float64}

    def _tree(self, predictor: Any) -> dict[str, np.ndarray]:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        left = np.where(leaf, -1, nodes["left"].astype(np.int64))
        right = np.where(leaf, -1, nodes["right"].astype(np.int64))
        go_left = nodes["missing_go_to_left"].astype(bool)
        features = np.where(leaf, -2, nodes["feature_idx"].astype(np.int64))
        thresholds = nodes["num_threshold"].astype(np.float64).copy()
        for index in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            feature = int(nodes["feature_idx"][index])
            bitset = np.asarray(predictor.raw_left_cat_bitsets[int(nodes["bitset_idx"][index])], dtype=np.uint32)
            key = (feature, bitset.tobytes(), bool(go_left[index]))
            if key not in self.splits:
                self.splits[key] = len(self.split_specs)
                self.split_specs.append((feature, bitset, bool(go_left[index])))
            features[index] = self.n_inputs + self.splits[key]
            thresholds[index] = 0.5
        return {
            "children_left": left,
            "children_right": right,
            "children_default": np.where(go_left, left, right),
            "features": features,
            "thresholds": thresholds,
            "values": nodes["value"].astype(np.float64)[:, None],
            "node_sample_weight": nodes["count"].astype(np.float64),
        }

    def inputs(self, transformed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the matrix the converted trees read, the `transformed` column behind each of its columns)."""
        if self.preprocessor is None:
            matrix = transformed
            source = np.arange(transformed.shape[1])
        else:
            matrix = np.asarray(self.preprocessor.transform(transformed), dtype=np.float64)
            source = np.full(matrix.shape[1], -1, dtype=int)
            for name, _, columns in self.preprocessor.transformers_:
                block = self.preprocessor.output_indices_.get(name, slice(0, 0))
                if block.stop > block.start:
                    source[block] = _column_indices(columns, transformed.shape[1])
        extra = [self._goes_right(matrix[:, feature], feature, bitset, go_left)
                 for feature, bitset, go_left in self.split_specs]
        if extra:
            matrix = np.column_stack([matrix, *extra])
            source = np.concatenate([source, [source[feature] for feature, _, _ in self.split_specs]])
        return matrix, source

    def _goes_right(self, column: np.ndarray, feature: int, left_bits: np.ndarray, missing_left: bool) -> np.ndarray:
        """0.0 where HGB sends a row left at this categorical split, 1.0 where right.

        Mirrors HGB's own prediction: missing or negative values follow the missing direction;
        a category in the left bitset goes left; another known category goes right; an
        unknown category is treated as missing.
        """
        missing = np.isnan(column) | (column < 0) | (column > 255)
        code = np.where(missing, 0, np.nan_to_num(column, nan=0.0)).astype(np.int64)
        known_bits = self.known[self.f_idx_map[feature]]
        in_left = ((left_bits[code >> 5] >> (code & 31).astype(np.uint32)) & 1).astype(bool)
        is_known = ((known_bits[code >> 5] >> (code & 31).astype(np.uint32)) & 1).astype(bool)
        left = np.where(missing | ~(in_left | is_known), missing_left, in_left)
        return np.where(left, 0.0, 1.0)


# ---------------------------------------------------------------------------- linear path


class _LinearPath(_Path):
    """Closed-form interventional SHAP of a linear margin, summed back onto the original features."""

    method = "linear"

    def __init__(self, preprocess: Any, estimator: Any, cfg: ModelConfig, background: pd.DataFrame) -> None:
        self.preprocess = preprocess
        self.estimator = estimator
        self.features = list(cfg.features)
        self.owners = _column_owners(preprocess, self.features)
        self.classifier = type(estimator).__name__ in _LINEAR_CLASSIFIERS
        self.output = "log_odds" if self.classifier else "prediction"
        coef = estimator.coef_
        self.coef = np.ravel(np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=np.float64))
        if len(self.coef) != len(self.owners):
            raise ValueError(f"{len(self.coef)} coefficients but {len(self.owners)} transformed columns")
        reference = _dense(preprocess.transform(_feature_rows(background, cfg)))
        self.background_rows = len(reference)
        self.mean = reference.mean(axis=0)
        intercept = float(np.ravel(np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64))[0])
        self.base = float(self.mean @ self.coef) + intercept

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, float, float | None]:
        """SHAP values of `rows` on the original features: coef * (z - background mean), summed per feature."""
        transformed = _dense(self.preprocess.transform(rows))
        values = _sum_columns((transformed - self.mean) * self.coef, self.owners, len(self.features))
        # Checked against the estimator's own margin, so a model that is not what its name says fails the gate.
        output = _margin(self.estimator, transformed, self.classifier)
        return values, self.base, _relative_error(values.sum(axis=1) + self.base, output)


# ---------------------------------------------------------------------------- permutation path


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


class _PermutationPath(_Path):
    """The whole pipeline explained on raw rows with shap's PermutationExplainer."""

    method = "permutation"

    def __init__(self, model: Any, cfg: ModelConfig, background: pd.DataFrame, seed: int) -> None:
        import shap

        self.model = model
        self.task = cfg.task
        self.output = "log_odds" if cfg.task is Task.BINARY_CLASSIFICATION else "prediction"
        self.codec = _Codec(cfg, background)
        codes = self.codec.encode(_feature_rows(background, cfg))
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

    def explain(self, rows: pd.DataFrame) -> tuple[np.ndarray, float, float | None]:
        """SHAP values of `rows` (already on the original features)."""
        codes = self.codec.encode(rows)
        with _global_numpy_seed(self.seed), _one_thread():  # shap draws permutations from numpy's global RNG
            explanation = self.explainer(codes, max_evals=self.max_evals, silent=True)
        values = np.asarray(explanation.values, dtype=float)
        bases = np.ravel(np.asarray(explanation.base_values, dtype=float))
        error = _relative_error(values.sum(axis=1) + bases, self.predict_codes(codes))
        return values, float(np.mean(bases)), error


# ---------------------------------------------------------------------------- ranking


def _ranked(importance: dict[str, float]) -> list[str]:
    """Feature names by importance, largest first (ties keep the given order)."""
    order = {name: i for i, name in enumerate(importance)}
    return sorted(importance, key=lambda name: (-_finite_or_zero(importance[name]), order[name]))


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def ndcg_at_k(reference: dict[str, float], candidate: dict[str, float], k: int) -> float:
    """nDCG@k of the candidate's importance ranking, with the reference importance as relevance.

    Graded relevance of a feature = its reference importance divided by the reference total
    (features the reference lacks, and negative or non-finite values, count as 0; the
    normalization cancels in the ratio). DCG@k = sum over the candidate's top-k features, at
    1-based rank i, of relevance / log2(i + 1); IDCG@k is the same sum over the reference's own
    top-k. nDCG = DCG / IDCG, in [0, 1]: 1.0 when the candidate's top-k order matches the
    reference's (ties aside), lower the more importance the candidate's top-k misplaces or
    leaves out. k is capped at the number of features. NaN when the reference carries no
    importance at all (nothing to rank against).

    Example: reference a=3, b=2, c=1; candidate order b, a, c; k=2:
    DCG = 2/1 + 3/log2(3) = 3.893, IDCG = 3/1 + 2/log2(3) = 4.262, nDCG = 0.913.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    gains = {name: max(_finite_or_zero(float(v)), 0.0) for name, v in reference.items()}
    total = sum(gains.values())
    if total <= 0:
        return math.nan
    gains = {name: v / total for name, v in gains.items()}
    names = list(dict.fromkeys([*candidate, *reference]))
    k = min(k, len(names))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = _ranked({name: float(candidate.get(name, -math.inf)) for name in names})[:k]
    dcg = float(sum(gains.get(name, 0.0) * d for name, d in zip(top, discounts, strict=True)))
    ideal = sorted(gains.values(), reverse=True)[:k] + [0.0] * max(0, k - len(gains))
    idcg = float(sum(g * d for g, d in zip(ideal, discounts, strict=True)))
    return min(1.0, dcg / idcg)


# ---------------------------------------------------------------------------- the gate


def _top(shares: dict[str, float], k: int) -> list[dict[str, Any]]:
    return [{"feature": name, "share": shares[name]} for name in _ranked(shares)[:k]]


def _shown(top: list[dict[str, Any]]) -> str:
    return ", ".join(f"{item['feature']} {item['share']:.3f}" for item in top)


def _unusable(attr: Attributions, who: str) -> str | None:
    """Why `attr` cannot be judged (None when it can)."""
    if attr.rows == 0 or attr.values.shape[0] == 0:
        return f"{who}: no rows were explained"
    if attr.values.shape[1] == 0:
        return f"{who}: the attributions have no feature columns"
    matrix = attr.values.to_numpy(dtype=float)
    bad = int((~np.isfinite(matrix)).sum())
    if bad:
        return f"{who}: {bad} of {matrix.size} attributions are NaN or infinite"
    if not math.isfinite(attr.base_value):
        return f"{who}: the base value is {attr.base_value}"
    if not np.any(matrix != 0.0):
        return f"{who}: every attribution is zero (the explainer saw no dependence on any feature)"
    if attr.additivity_error is not None and not attr.additivity_error <= ADDITIVITY_TOLERANCE:
        return (f"{who}: attributions do not add up to the model output "
                f"(relative error {attr.additivity_error:.3g} > {ADDITIVITY_TOLERANCE})")
    return None


def evaluate_explainability(
    challenger: Attributions,
    champion: Attributions | None,
    cfg: ModelConfig,
    sensitive: list[str] | None = None,
) -> GateReport:
    """Judge the challenger's attributions: usable, no leakage, and stable against the champion.

    Fails closed (never raises): on an exception, zero rows, NaN/inf, all-zero or non-additive
    attributions (the challenger's or the champion's); when one feature's share of all
    attribution exceeds `max_feature_share`; when, with a champion, nDCG@`top_k` of the
    challenger's ranking against the champion's importance is below `min_ndcg`. Reports the
    top-k shares, every share and importance, nDCG, method, rows, seconds, and
    `sensitive_share` (the summed share of `sensitive`, default `cfg.sensitive_attributes`);
    `details["path_reason"]` says why that SHAP path explained the model.
    """
    bounds = cfg.gates.explainability
    thresholds = {"max_feature_share": bounds.max_feature_share, "min_ndcg": bounds.min_ndcg, "top_k": bounds.top_k}
    try:
        return _evaluate(challenger, champion, cfg, sensitive, thresholds)
    except Exception as exc:  # a gate fails closed, whatever went wrong
        return GateReport.failed(GATE, [f"the explainability gate errored: {type(exc).__name__}: {exc}"],
                                 thresholds=thresholds)


def _evaluate(challenger: Attributions, champion: Attributions | None, cfg: ModelConfig,
              sensitive: list[str] | None, thresholds: dict[str, Any]) -> GateReport:
    bounds = cfg.gates.explainability
    metrics: dict[str, Any] = {"method": challenger.method, "output": challenger.output, "rows": challenger.rows,
                               "seconds": challenger.seconds, "background_rows": challenger.background_rows,
                               "additivity_error": challenger.additivity_error}
    problem = _unusable(challenger, "challenger")
    if problem is not None:
        return GateReport.failed(GATE, [problem], metrics=json_safe(metrics), thresholds=thresholds)
    reasons: list[str] = []
    details: dict[str, Any] = {}
    importance = challenger.importance()
    shares = challenger.shares()
    top = _top(shares, bounds.top_k)
    leader = top[0]
    sensitive_names = list(cfg.sensitive_attributes if sensitive is None else sensitive)
    metrics.update({
        "top_features": top,
        "max_share": leader["share"],
        "max_share_feature": leader["feature"],
        "sensitive_share": float(sum(shares.get(name, 0.0) for name in sensitive_names)),
        "shares": shares,
        "importance": importance,
        "base_value": challenger.base_value,
        "ndcg_at_k": None,
    })
    details["sensitive_features"] = sensitive_names
    details["path_reason"] = challenger.path_reason
    absent = [name for name in sensitive_names if name not in shares]
    if absent:
        details["sensitive_not_explained"] = absent
    leaking = [(name, share) for name, share in shares.items() if share > bounds.max_feature_share]
    for name, share in sorted(leaking, key=lambda item: -item[1]):
        reasons.append(f"possible leakage: feature {name!r} carries {share:.3f} of all attribution "
                       f"(max {bounds.max_feature_share})")
    if champion is not None:
        reasons.extend(_stability(challenger, champion, bounds.top_k, bounds.min_ndcg, metrics, details))
    report_metrics = json_safe(metrics)
    if reasons:
        return GateReport.failed(GATE, reasons, metrics=report_metrics, thresholds=thresholds,
                                 details=json_safe(details))
    return GateReport(name=GATE, passed=True, metrics=report_metrics, thresholds=thresholds,
                      details=json_safe(details))


def _stability(challenger: Attributions, champion: Attributions, k: int, min_ndcg: float,
               metrics: dict[str, Any], details: dict[str, Any]) -> list[str]:
    problem = _unusable(champion, "champion")
    if problem is not None:
        return [f"cannot compare with the champion: {problem}"]
    reference = champion.importance()
    candidate = challenger.importance()
    ndcg = ndcg_at_k(reference, candidate, k)
    champion_top = _top(champion.shares(), k)
    metrics["ndcg_at_k"] = ndcg
    details.update({"champion_method": champion.method, "champion_output": champion.output,
                    "champion_top_features": champion_top})
    only_one = sorted(set(reference) ^ set(candidate))
    if only_one:
        details["features_not_in_both"] = only_one
    if not math.isfinite(ndcg):
        return ["cannot compare with the champion: nDCG is undefined (the champion carries no importance)"]
    if ndcg < min_ndcg:
        return [f"importance ranking unstable against the champion: nDCG@{k} {ndcg:.3f} < {min_ndcg}; "
                f"challenger top-{k}: {_shown(_top(challenger.shares(), k))}; champion top-{k}: {_shown(champion_top)}"]
    return []


# ---------------------------------------------------------------------------- files


def _aligned(attr: Attributions, X: pd.DataFrame) -> pd.DataFrame:
    """The rows of `X` that `attr` explains, in its order and columns."""
    columns = list(attr.values.columns)
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
    index = attr.values.index
    if X.index.equals(index):
        return X.loc[:, columns]
    if X.index.is_unique and index.isin(X.index).all():
        return X.loc[index, columns]
    if len(X) == len(index):
        return X.loc[:, columns]
    raise ValueError("X does not hold the explained rows (neither their index labels nor their count)")


def _numeric_view(frame: pd.DataFrame) -> np.ndarray:
    """Feature values as numbers for colouring: categories as codes (sorted), missing as NaN."""
    out = np.empty(frame.shape, dtype=float)
    for i, name in enumerate(frame.columns):
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            out[:, i] = column.to_numpy(dtype=float, na_value=np.nan)
        else:
            codes = pd.Categorical(column.astype(object).where(column.notna(), None)).codes.astype(float)
            codes[codes < 0] = np.nan
            out[:, i] = codes
    return out


def write_plots(attr: Attributions, X: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """Write `bar.png` (mean |SHAP|), `beeswarm.png` and `importance.json` into `folder`.

    `X` holds the explained rows (matched by index label, else by position); categorical
    values colour the beeswarm by their (sorted) category code. The JSON holds importance,
    shares, method (and why), output units, rows, seconds and the base value (NaN as null).
    Returns {"bar": ..., "beeswarm": ..., "importance": ...}; the caller logs them.
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = _aligned(attr, X)
    importance = attr.importance()
    names = _ranked(importance)[:MAX_DISPLAY]
    paths = {"bar": folder / "bar.png", "beeswarm": folder / "beeswarm.png", "importance": folder / "importance.json"}

    figure, axis = plt.subplots(figsize=(7.0, 0.35 * len(names) + 1.5))
    try:
        axis.barh(list(reversed(names)), [importance[n] for n in reversed(names)], color="#1f77b4")
        axis.set_xlabel(f"mean |SHAP| ({attr.output.replace('_', '-')})")
        axis.set_title(f"Global importance ({attr.method}, {attr.rows} rows)")
        figure.tight_layout()
        figure.savefig(paths["bar"], dpi=100)
    finally:
        plt.close(figure)

    explanation = shap.Explanation(
        values=attr.values.to_numpy(dtype=float),
        base_values=np.full(len(attr.values), attr.base_value),
        data=_numeric_view(rows),
        feature_names=[str(c) for c in attr.values.columns],
    )
    figure = plt.figure()
    try:
        shap.plots.beeswarm(explanation, max_display=MAX_DISPLAY, show=False)
        figure = plt.gcf()
        figure.savefig(paths["beeswarm"], dpi=100, bbox_inches="tight")
    finally:
        plt.close("all")

    payload = {"importance": importance, "shares": attr.shares(), "method": attr.method, "output": attr.output,
               "rows": attr.rows, "seconds": attr.seconds, "base_value": attr.base_value,
               "background_rows": attr.background_rows, "additivity_error": attr.additivity_error,
               "path_reason": attr.path_reason}
    paths["importance"].write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    return paths
