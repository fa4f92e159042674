"""One conditional search space over model family, preprocessing and hyperparameters.

`suggest_params` asks an Optuna trial for a flat dict of JSON-serializable values (exactly the
trial's `params`, `family` included); `build_pipeline` turns such a dict into one
scikit-learn `Pipeline` (ColumnTransformer + estimator) that takes the canonical feature
frame. The pair is the reproducibility contract: logged params rebuild the exact pipeline.

Parameter names (a name is only suggested when it applies, so the space is conditional):

- `family`: one of `tuning.families`.
- `prep.num_impute` (mean/median): every family but HGB, which handles NaN natively.
- `prep.scaling` (standard/minmax): linear only; trees are scale-invariant. Unscaled or
  robust-scaled inputs are not offered: a mostly-zero column with a huge range (Adult's
  `capital_gain`) keeps its range under RobustScaler and the solver then runs to its cap.
- `prep.cat_impute` (most_frequent/constant) and `<fam>.cat_encoding`: only when there are
  categorical features. Encoding choices differ by family, hence the family namespace:
  linear onehot/target; random_forest, extra_trees ordinal/target; hist_gradient_boosting
  native/target (native = ordinal codes + HGB's categorical support). One-hot is left out for
  the tree families on purpose: measured on Adult (32k rows, 2 cores) it made forest fits 2-5x
  slower (up to ~20 s) and an HGB fit 12 s (467 rounds at learning rate 0.03), without a
  better ROC AUC than ordinal/target.
- `prep.min_frequency` (0/0.001/0.01 share of rows): rare categories grouped into one;
  only for onehot/ordinal/native (target encoding already shrinks rare categories).
- `linear.C` (logistic regression) or `linear.alpha` (ridge); `rf.*` / `et.*`
  (n_estimators, max_depth, min_samples_leaf, max_features); `hgb.*` (learning_rate,
  max_iter with early stopping, max_leaf_nodes, min_samples_leaf, l2_regularization).

Only scikit-learn classes appear in the pipeline (no custom transformers), so skops can load
a saved model from a list of trusted types: sklearn/numpy ones, plus `functools.partial` for
HGB with native categoricals (sklearn stores `partial(sklearn.utils.validation.check_array)`
inside it; a partial loads only when its function is itself trusted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from autopilot.config import ModelConfig, ModelFamily, Task

if TYPE_CHECKING:  # only tuning passes a trial; serving reaches this module (via /explain) without Optuna
    from optuna.trial import BaseTrial

__all__ = ["MISSING_CATEGORY", "build_pipeline", "default_params", "suggest_params"]

MISSING_CATEGORY = "__missing__"
# Bounds on encoder width: a dense one-hot block of a high-cardinality column would blow up
# memory and fit time, and HGB's native categorical support allows at most 255 bins.
MAX_ONEHOT_CATEGORIES = 64
MAX_NATIVE_CATEGORIES = 250

_PREFIX = {
    ModelFamily.LINEAR: "linear",
    ModelFamily.RANDOM_FOREST: "rf",
    ModelFamily.EXTRA_TREES: "et",
    ModelFamily.HIST_GRADIENT_BOOSTING: "hgb",
}
_ENCODINGS = {
    ModelFamily.LINEAR: ["onehot", "target"],
    ModelFamily.RANDOM_FOREST: ["ordinal", "target"],
    ModelFamily.EXTRA_TREES: ["ordinal", "target"],
    ModelFamily.HIST_GRADIENT_BOOSTING: ["native", "target"],
}
_GROUPING_ENCODINGS = frozenset({"onehot", "ordinal", "native"})


# ---------------------------------------------------------------------------- suggesting


def suggest_params(trial: BaseTrial, cfg: ModelConfig) -> dict[str, Any]:
    """Sample one point of the conditional space from `trial`.

    Returns:
        A flat dict of JSON-serializable values, equal to `trial.params` afterwards
        (`family` included), that `build_pipeline` rebuilds a pipeline from.
    """
    family = ModelFamily(trial.suggest_categorical("family", [f.value for f in cfg.tuning.families]))
    params: dict[str, Any] = {"family": family.value}
    params.update(_suggest_preprocessing(trial, cfg, family))
    params.update(_suggest_estimator(trial, cfg, family))
    return params


def _suggest_preprocessing(trial: BaseTrial, cfg: ModelConfig, family: ModelFamily) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cfg.numeric_features:
        if family is not ModelFamily.HIST_GRADIENT_BOOSTING:
            params["prep.num_impute"] = trial.suggest_categorical("prep.num_impute", ["mean", "median"])
        if family is ModelFamily.LINEAR:
            params["prep.scaling"] = trial.suggest_categorical("prep.scaling", ["standard", "minmax"])
    if cfg.categorical_features:
        params["prep.cat_impute"] = trial.suggest_categorical("prep.cat_impute", ["most_frequent", "constant"])
        key = f"{_PREFIX[family]}.cat_encoding"
        encoding = trial.suggest_categorical(key, _ENCODINGS[family])
        params[key] = encoding
        if encoding in _GROUPING_ENCODINGS:
            params["prep.min_frequency"] = trial.suggest_categorical("prep.min_frequency", [0.0, 0.001, 0.01])
    return params


def _suggest_estimator(trial: BaseTrial, cfg: ModelConfig, family: ModelFamily) -> dict[str, Any]:
    if family is ModelFamily.LINEAR:
        if cfg.task.classification:
            return {"linear.C": trial.suggest_float("linear.C", 1e-3, 1e2, log=True)}
        return {"linear.alpha": trial.suggest_float("linear.alpha", 1e-3, 1e3, log=True)}
    if family is ModelFamily.HIST_GRADIENT_BOOSTING:
        return {
            "hgb.learning_rate": trial.suggest_float("hgb.learning_rate", 0.03, 0.2, log=True),
            "hgb.max_iter": trial.suggest_int("hgb.max_iter", 100, 600, step=50),
            # The warm start's shallow point (`default_params`, opt-in) goes below these: 4 leaves and
            # 100 rows a leaf (statsmodels' fair, 4.8k rows: test ROC AUC 0.741 against 0.725 for
            # sklearn's 31 / 20). Widening the sampled range itself changed every seeded search
            # (and a retrain's importance ranking past the explainability gate's stability floor).
            "hgb.max_leaf_nodes": trial.suggest_int("hgb.max_leaf_nodes", 15, 127, log=True),
            "hgb.min_samples_leaf": trial.suggest_int("hgb.min_samples_leaf", 5, 100, log=True),
            "hgb.l2_regularization": trial.suggest_float("hgb.l2_regularization", 1e-4, 10.0, log=True),
        }
    prefix = _PREFIX[family]
    # Bounded so one forest fit on ~32k rows x 14 columns stays within a few seconds on 2 cores
    # (measured: 300 trees, max_features 0.5, depth 32 ~8 s; max_features 0.8 took ~17 s).
    return {
        f"{prefix}.n_estimators": trial.suggest_int(f"{prefix}.n_estimators", 50, 300, step=50),
        f"{prefix}.max_depth": trial.suggest_int(f"{prefix}.max_depth", 4, 32, log=True),
        f"{prefix}.min_samples_leaf": trial.suggest_int(f"{prefix}.min_samples_leaf", 1, 50, log=True),
        f"{prefix}.max_features": trial.suggest_float(f"{prefix}.max_features", 0.1, 0.5),
    }


# Known-good starting points, one per family, inside the ranges above: sklearn's HGB defaults
# (l2 at the range's floor, ~0), forests deep with a third of the features, a lightly
# regularized linear model. Run first, they give every family a fair first measurement. A second,
# shallow HGB point (cheap to fit) covers small noisy tables, where the default overfits.
_DEFAULT_ESTIMATOR = {
    ModelFamily.HIST_GRADIENT_BOOSTING: {"hgb.learning_rate": 0.1, "hgb.max_iter": 300, "hgb.max_leaf_nodes": 31,
                                         "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 1e-4},
    # 50 trees, the range's floor: on Adult (busy 2 cores) 100-tree defaults took 22 of a 60 s budget.
    ModelFamily.RANDOM_FOREST: {"rf.n_estimators": 50, "rf.max_depth": 32, "rf.min_samples_leaf": 2,
                                "rf.max_features": 0.3},
    ModelFamily.EXTRA_TREES: {"et.n_estimators": 50, "et.max_depth": 32, "et.min_samples_leaf": 2,
                              "et.max_features": 0.5},
}
# Cheap and usually strong first: the order the warm start runs them in.
_DEFAULT_ORDER = (ModelFamily.HIST_GRADIENT_BOOSTING, ModelFamily.LINEAR, ModelFamily.RANDOM_FOREST,
                  ModelFamily.EXTRA_TREES)


_SHALLOW_HGB = {"hgb.learning_rate": 0.05, "hgb.max_iter": 600, "hgb.max_leaf_nodes": 4, "hgb.min_samples_leaf": 100,
                "hgb.l2_regularization": 1e-4}


def default_params(cfg: ModelConfig) -> list[dict[str, Any]]:
    """Known-good params dicts, one per family of `tuning.families` (HGB, linear, forests first) and a
    shallow HGB last, in the `suggest_params` form: what the tuner's warm start enqueues before sampling."""
    out = []
    for family in (f for f in _DEFAULT_ORDER if f in cfg.tuning.families):
        params: dict[str, Any] = {"family": family.value}
        if cfg.numeric_features and family is not ModelFamily.HIST_GRADIENT_BOOSTING:
            params["prep.num_impute"] = "median"
        if cfg.numeric_features and family is ModelFamily.LINEAR:
            params["prep.scaling"] = "standard"
        if cfg.categorical_features:
            encoding = _ENCODINGS[family][0]  # one-hot / ordinal / native: no target leakage into folds
            params.update({"prep.cat_impute": "constant", f"{_PREFIX[family]}.cat_encoding": encoding,
                           "prep.min_frequency": 0.0})
        if family is ModelFamily.LINEAR:
            params["linear.C" if cfg.task.classification else "linear.alpha"] = 1.0
        else:
            params.update(_DEFAULT_ESTIMATOR[family])
        out.append(params)
    if out and out[0]["family"] == ModelFamily.HIST_GRADIENT_BOOSTING.value:
        out.append({**out[0], **_SHALLOW_HGB})
    return out


# ---------------------------------------------------------------------------- building


def build_pipeline(params: dict[str, Any], cfg: ModelConfig, seed: int, *, n_jobs: int | None = None) -> Pipeline:
    """Build the unfitted pipeline (ColumnTransformer + estimator) that `params` describes.

    Args:
        params: a flat dict as returned by `suggest_params` (or logged from a trial).
        cfg: the model config (feature lists and task).
        seed: every `random_state` in the pipeline.
        n_jobs: threads for the forest families (None = 1). Not a hyperparameter: forest
            results do not depend on it; HGB uses OpenMP threads on its own.

    Raises:
        ValueError: when a value the chosen family needs is missing or unknown.
    """
    family = ModelFamily(_need(params, "family"))
    encoding = params.get(f"{_PREFIX[family]}.cat_encoding") if cfg.categorical_features else None
    transformers: list[tuple[str, Any, list[str]]] = []
    if cfg.numeric_features:
        transformers.append(("num", _numeric_step(params, family), cfg.numeric_features))
    if cfg.categorical_features:
        transformers.append(("cat", _categorical_step(params, cfg, family, seed), cfg.categorical_features))
    # Dense output for every family (HGB refuses sparse input); one-hot width is capped above.
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    native_mask = None
    if encoding == "native":
        # ColumnTransformer output keeps transformer order: numeric block, then one code per category column.
        native_mask = [False] * len(cfg.numeric_features) + [True] * len(cfg.categorical_features)
    estimator = _estimator(params, cfg, family, seed, n_jobs, native_mask)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _need(params: dict[str, Any], key: str) -> Any:
    if key not in params:
        raise ValueError(f"params lack {key!r}, which family {params.get('family')!r} needs")
    return params[key]


def _numeric_step(params: dict[str, Any], family: ModelFamily) -> Any:
    if family is ModelFamily.HIST_GRADIENT_BOOSTING:
        return "passthrough"  # HGB learns where missing values go; imputing would hide them
    # keep_empty_features: a column that is all-NaN in one fold must not change the width.
    steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy=_need(params, "prep.num_impute"), keep_empty_features=True))
    ]
    scaling = _need(params, "prep.scaling") if family is ModelFamily.LINEAR else "none"
    if scaling == "standard":
        steps.append(("scale", StandardScaler()))
    elif scaling == "minmax":
        steps.append(("scale", MinMaxScaler()))
    elif scaling != "none":
        raise ValueError(f"unknown prep.scaling {scaling!r}")
    return Pipeline(steps)


def _categorical_step(params: dict[str, Any], cfg: ModelConfig, family: ModelFamily, seed: int) -> Pipeline:
    strategy = _need(params, "prep.cat_impute")
    if strategy == "constant":
        imputer = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, keep_empty_features=True)
    else:
        imputer = SimpleImputer(strategy="most_frequent", keep_empty_features=True)
    encoding = _need(params, f"{_PREFIX[family]}.cat_encoding")
    return Pipeline([("impute", imputer), ("encode", _encoder(encoding, params, cfg, seed))])


def _encoder(encoding: str, params: dict[str, Any], cfg: ModelConfig, seed: int) -> Any:
    if encoding == "target":
        # A seeded splitter, not cv=int: TargetEncoder's own shuffling seed is deprecated in sklearn 1.9.
        if cfg.task is Task.MULTICLASS_CLASSIFICATION:  # one encoded column per class and feature
            return TargetEncoder(target_type="multiclass", cv=StratifiedKFold(5, shuffle=True, random_state=seed))
        if cfg.task is Task.BINARY_CLASSIFICATION:
            return TargetEncoder(target_type="binary", cv=StratifiedKFold(5, shuffle=True, random_state=seed))
        return TargetEncoder(target_type="continuous", cv=KFold(5, shuffle=True, random_state=seed))
    min_frequency = float(_need(params, "prep.min_frequency")) or None
    if encoding == "onehot":
        return OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=min_frequency,
            max_categories=MAX_ONEHOT_CATEGORIES,
            sparse_output=False,
        )
    if encoding in ("ordinal", "native"):
        # Unseen categories become NaN: HGB treats them as missing; forests route NaN natively.
        return OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            min_frequency=min_frequency,
            max_categories=MAX_NATIVE_CATEGORIES,
        )
    raise ValueError(f"unknown categorical encoding {encoding!r}")


def _estimator(
    params: dict[str, Any],
    cfg: ModelConfig,
    family: ModelFamily,
    seed: int,
    n_jobs: int | None,
    native_mask: list[bool] | None,
) -> Any:
    classify = cfg.task.classification
    if family is ModelFamily.LINEAR:
        if classify:
            # Multiclass: lbfgs fits the multinomial (softmax) model, sklearn's default.
            # max_iter bounds the cost of unscaled inputs (prep.scaling "none"/"robust" on Adult
            # runs ~20 ms per lbfgs iteration without converging); scaled data needs < 100.
            c_value = float(_need(params, "linear.C"))
            return LogisticRegression(C=c_value, solver="lbfgs", max_iter=500, random_state=seed)
        return Ridge(alpha=float(_need(params, "linear.alpha")), random_state=seed)
    if family is ModelFamily.HIST_GRADIENT_BOOSTING:
        cls_hgb = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls_hgb(
            learning_rate=float(_need(params, "hgb.learning_rate")),
            max_iter=int(_need(params, "hgb.max_iter")),
            max_leaf_nodes=int(_need(params, "hgb.max_leaf_nodes")),
            min_samples_leaf=int(_need(params, "hgb.min_samples_leaf")),
            l2_regularization=float(_need(params, "hgb.l2_regularization")),
            categorical_features=native_mask,
            early_stopping=True,  # max_iter is a ceiling; the validation loss decides
            validation_fraction=0.1,
            n_iter_no_change=20,
            random_state=seed,
        )
    prefix = _PREFIX[family]
    if family is ModelFamily.RANDOM_FOREST:
        cls_forest: Any = RandomForestClassifier if classify else RandomForestRegressor
    else:
        cls_forest = ExtraTreesClassifier if classify else ExtraTreesRegressor
    return cls_forest(
        n_estimators=int(_need(params, f"{prefix}.n_estimators")),
        max_depth=int(_need(params, f"{prefix}.max_depth")),
        min_samples_leaf=int(_need(params, f"{prefix}.min_samples_leaf")),
        max_features=float(_need(params, f"{prefix}.max_features")),
        n_jobs=n_jobs,
        random_state=seed,
    )
