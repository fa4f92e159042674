"""One conditional search space over model family, preprocessing and hyperparameters.

`suggest_params` asks an Optuna trial for a flat dict of JSON-serializable values (exactly the
trial's `params`, `family` included); `build_pipeline` turns such a dict into one
scikit-learn `Pipeline` (ColumnTransformer + estimator) that takes the canonical feature
frame. The pair is the reproducibility contract: logged params rebuild the exact pipeline.

Parameter names (a name is only suggested when it applies, so the space is conditional):

- `family`: one of `tuning.families`.
- `prep.num_impute` (mean/median): every family but HGB and LightGBM, which handle NaN natively.
- `prep.scaling` (standard/minmax): linear only; trees are scale-invariant. Unscaled or
  robust-scaled inputs are not offered: a mostly-zero column with a huge range (Adult's
  `capital_gain`) keeps its range under RobustScaler and the solver then runs to its cap.
- `prep.cat_impute` (most_frequent/constant) and `<fam>.cat_encoding`: only when there are
  categorical features. Encoding choices differ by family, hence the family namespace:
  linear onehot/target; random_forest, extra_trees ordinal/target; hist_gradient_boosting
  and lightgbm native/target (native = ordinal codes + the booster's categorical support). One-hot is left out for
  the tree families on purpose: measured on Adult (32k rows, 2 cores) it made forest fits 2-5x
  slower (up to ~20 s) and an HGB fit 12 s (467 rounds at learning rate 0.03), without a
  better ROC AUC than ordinal/target.
- `prep.min_frequency` (0/0.001/0.01 share of rows): rare categories grouped into one;
  only for onehot/ordinal/native (target encoding already shrinks rare categories).
- `linear.C` (logistic regression) or `linear.alpha` (ridge); `rf.*` / `et.*`
  (n_estimators, max_depth, min_samples_leaf, max_features); `hgb.*` (learning_rate,
  max_iter with early stopping, max_leaf_nodes, min_samples_leaf, l2_regularization); `lgbm.*`
  (learning_rate, n_estimators, num_leaves, min_child_samples, colsample_bytree, reg_lambda; with
  native categoricals also min_data_per_group and cat_smooth, which sets cat_l2 too).
  LightGBM is here for per-tree column sampling, which HGB lacks: on Adult (fixed split,
  learning rate 0.03, 1,000 trees, 24 leaves) sampling 70% of the columns per tree raised the
  test ROC AUC from 0.9272 to 0.9285, where HGB's best points stayed at 0.9276-0.9278.

Only scikit-learn and LightGBM classes appear in the pipeline (no custom transformers), so skops
can load a saved model from a list of trusted types: sklearn/numpy ones, `functools.partial` for
HGB with native categoricals (sklearn stores `partial(sklearn.utils.validation.check_array)`
inside it; a partial loads only when its function is itself trusted), and LightGBM's estimator
and `Booster`, which rebuilds itself from LightGBM's own text model format.
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
    ModelFamily.LIGHTGBM: "lgbm",
}
_ENCODINGS = {
    ModelFamily.LINEAR: ["onehot", "target"],
    ModelFamily.RANDOM_FOREST: ["ordinal", "target"],
    ModelFamily.EXTRA_TREES: ["ordinal", "target"],
    ModelFamily.HIST_GRADIENT_BOOSTING: ["native", "target"],
    ModelFamily.LIGHTGBM: ["native", "target"],
}
# Families that take NaN in numeric columns natively: no imputer in front of them.
_NATIVE_MISSING = frozenset({ModelFamily.HIST_GRADIENT_BOOSTING, ModelFamily.LIGHTGBM})
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
    native = params.get(f"{_PREFIX[family]}.cat_encoding") == "native"
    params.update(_suggest_estimator(trial, cfg, family, native))
    return params


def _suggest_preprocessing(trial: BaseTrial, cfg: ModelConfig, family: ModelFamily) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cfg.numeric_features:
        if family not in _NATIVE_MISSING:
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


def _suggest_estimator(trial: BaseTrial, cfg: ModelConfig, family: ModelFamily, native: bool) -> dict[str, Any]:
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
    if family is ModelFamily.LIGHTGBM:
        return _suggest_lightgbm(trial, native)
    prefix = _PREFIX[family]
    # Bounded so one forest fit on ~32k rows x 14 columns stays within a few seconds on 2 cores
    # (measured: 300 trees, max_features 0.5, depth 32 ~8 s; max_features 0.8 took ~17 s).
    return {
        f"{prefix}.n_estimators": trial.suggest_int(f"{prefix}.n_estimators", 50, 300, step=50),
        f"{prefix}.max_depth": trial.suggest_int(f"{prefix}.max_depth", 4, 32, log=True),
        f"{prefix}.min_samples_leaf": trial.suggest_int(f"{prefix}.min_samples_leaf", 1, 50, log=True),
        f"{prefix}.max_features": trial.suggest_float(f"{prefix}.max_features", 0.1, 0.5),
    }


def _suggest_lightgbm(trial: BaseTrial, native: bool) -> dict[str, Any]:
    # No early stopping (the sklearn API needs an eval set passed to fit, which a Pipeline does not
    # route), so the tree count is searched. Bounded like HGB's: 1,000 trees of 24 leaves fit
    # Adult's 32k rows in ~2 s on 2 cores.
    params = {
        "lgbm.learning_rate": trial.suggest_float("lgbm.learning_rate", 0.01, 0.2, log=True),
        "lgbm.n_estimators": trial.suggest_int("lgbm.n_estimators", 100, 1000, step=50),
        "lgbm.num_leaves": trial.suggest_int("lgbm.num_leaves", 8, 127, log=True),
        "lgbm.min_child_samples": trial.suggest_int("lgbm.min_child_samples", 2, 100, log=True),
        "lgbm.colsample_bytree": trial.suggest_float("lgbm.colsample_bytree", 0.4, 1.0),
        "lgbm.reg_lambda": trial.suggest_float("lgbm.reg_lambda", 1e-4, 10.0, log=True),
    }
    if native:
        # How few rows a category group may hold, and how hard its statistics are smoothed (LightGBM's
        # defaults, 100 and 10, are the top of each range). Small groups matter on panel data:
        # gapminder's life expectancy (142 countries, ~9 training rows each), test RMSE 4.51 with the
        # defaults, 1.91 with 5 and 1.
        params["lgbm.min_data_per_group"] = trial.suggest_int("lgbm.min_data_per_group", 2, 100, log=True)
        params["lgbm.cat_smooth"] = trial.suggest_float("lgbm.cat_smooth", 1.0, 10.0, log=True)
    return params


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
    # Slow learning rate, many small trees, 70% of the columns per tree: Adult's best static point (above).
    ModelFamily.LIGHTGBM: {"lgbm.learning_rate": 0.03, "lgbm.n_estimators": 1000, "lgbm.num_leaves": 24,
                           "lgbm.min_child_samples": 20, "lgbm.colsample_bytree": 0.7, "lgbm.reg_lambda": 1e-3},
}
# Cheap and usually strong first: the order the warm start runs them in.
_DEFAULT_ORDER = (ModelFamily.HIST_GRADIENT_BOOSTING, ModelFamily.LINEAR, ModelFamily.LIGHTGBM,
                  ModelFamily.RANDOM_FOREST, ModelFamily.EXTRA_TREES)


# A second LightGBM point for tables with categorical columns: small category groups, little smoothing.
_FINE_CATEGORIES_LGBM = {"lgbm.min_data_per_group": 5, "lgbm.cat_smooth": 1.0, "lgbm.min_child_samples": 5}
_SHALLOW_HGB = {"hgb.learning_rate": 0.05, "hgb.max_iter": 600, "hgb.max_leaf_nodes": 4, "hgb.min_samples_leaf": 100,
                "hgb.l2_regularization": 1e-4}


def default_params(cfg: ModelConfig) -> list[dict[str, Any]]:
    """Known-good params dicts, one per family of `tuning.families` (HGB, linear, LightGBM, forests), a
    shallow HGB and (with categorical features) a fine-categories LightGBM last, in the `suggest_params`
    form: what the tuner's warm start enqueues before sampling."""
    out = []
    for family in (f for f in _DEFAULT_ORDER if f in cfg.tuning.families):
        params: dict[str, Any] = {"family": family.value}
        if cfg.numeric_features and family not in _NATIVE_MISSING:
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
        if family is ModelFamily.LIGHTGBM and cfg.categorical_features:
            params.update({"lgbm.min_data_per_group": 100, "lgbm.cat_smooth": 10.0})  # LightGBM's own defaults
        out.append(params)
    if out and out[0]["family"] == ModelFamily.HIST_GRADIENT_BOOSTING.value:
        out.append({**out[0], **_SHALLOW_HGB})
    lightgbm = [params for params in out if params["family"] == ModelFamily.LIGHTGBM.value]
    if lightgbm and cfg.categorical_features:
        out.append({**lightgbm[0], **_FINE_CATEGORIES_LGBM})
    return out


# ---------------------------------------------------------------------------- building


def build_pipeline(params: dict[str, Any], cfg: ModelConfig, seed: int, *, n_jobs: int | None = None) -> Pipeline:
    """Build the unfitted pipeline (ColumnTransformer + estimator) that `params` describes.

    Args:
        params: a flat dict as returned by `suggest_params` (or logged from a trial).
        cfg: the model config (feature lists and task).
        seed: every `random_state` in the pipeline.
        n_jobs: threads for the forest families (None = 1) and LightGBM (None = OpenMP's
            default, which the tuner's thread limit caps). Not a hyperparameter: forest results
            do not depend on it; HGB uses OpenMP threads on its own.

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
    if encoding == "native":  # LightGBM's categorical_column takes the same mask's indices
        # ColumnTransformer output keeps transformer order: numeric block, then one code per category column.
        native_mask = [False] * len(cfg.numeric_features) + [True] * len(cfg.categorical_features)
    estimator = _estimator(params, cfg, family, seed, n_jobs, native_mask)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def _need(params: dict[str, Any], key: str) -> Any:
    if key not in params:
        raise ValueError(f"params lack {key!r}, which family {params.get('family')!r} needs")
    return params[key]


def _numeric_step(params: dict[str, Any], family: ModelFamily) -> Any:
    if family in _NATIVE_MISSING:
        return "passthrough"  # the booster learns where missing values go; imputing would hide them
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
        # Unseen categories become NaN: the boosters treat them as missing; forests route NaN natively.
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
    if family is ModelFamily.LIGHTGBM:
        return _lightgbm(params, classify, seed, n_jobs, native_mask)
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


def _lightgbm(params: dict[str, Any], classify: bool, seed: int, n_jobs: int | None,
              native_mask: list[bool] | None) -> Any:
    # Imported here: serving and the explain paths reach this module without needing LightGBM.
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls_lgbm: Any = LGBMClassifier if classify else LGBMRegressor
    # `categorical_column`, LightGBM's alias of the Dataset's categorical_feature: the estimator
    # keeps it among its params, so a Pipeline's plain fit(X, y) gets the native categorical splits.
    categorical = [i for i, native in enumerate(native_mask or []) if native]
    grouping: dict[str, Any] = {}
    if categorical:
        smooth = float(_need(params, "lgbm.cat_smooth"))
        # cat_l2 (the L2 penalty of categorical splits) follows cat_smooth: one knob, both default 10.
        grouping = {"categorical_column": categorical, "cat_smooth": smooth, "cat_l2": smooth,
                    "min_data_per_group": int(_need(params, "lgbm.min_data_per_group"))}
    return cls_lgbm(
        learning_rate=float(_need(params, "lgbm.learning_rate")),
        n_estimators=int(_need(params, "lgbm.n_estimators")),
        num_leaves=int(_need(params, "lgbm.num_leaves")),
        min_child_samples=int(_need(params, "lgbm.min_child_samples")),
        colsample_bytree=float(_need(params, "lgbm.colsample_bytree")),
        reg_lambda=float(_need(params, "lgbm.reg_lambda")),
        random_state=seed,
        n_jobs=n_jobs,
        # Same params, data and threads give the same trees: the reproducibility contract above.
        deterministic=True,
        force_row_wise=True,
        verbose=-1,  # LightGBM prints to stdout otherwise, once per fit
        **grouping,
    )
