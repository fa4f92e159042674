"""Path choice: which SHAP path explains a pipeline, and why (`path_reason`).

`auto` takes an exact path first, the tree path for forests, HistGradientBoosting and LightGBM, then the
linear path for linear models, and the permutation path only when neither applies (it costs
~0.05-0.5 s per row and estimates); the reason says why each exact path did not apply.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from autopilot.config import ModelConfig
from autopilot.explain.attributions import ExplainPath
from autopilot.explain.columns import split_pipeline
from autopilot.explain.linear import LinearPath, linear_problem
from autopilot.explain.permutation import PermutationPath
from autopilot.explain.tree import TreePath, tree_problem

__all__ = ["METHODS", "prepare_path"]

METHODS = ("auto", "tree", "linear", "permutation")


def prepare_path(model: Any, cfg: ModelConfig, background: pd.DataFrame | None, method: str,
                 seed: int) -> ExplainPath:
    """The path `method` names (`auto`: chosen as the module says), set up once, its `reason` set.

    Raises:
        ValueError: on an unknown method, `tree` or `linear` for a pipeline that path cannot
            explain, or no background rows for the linear and permutation paths.
    """
    if method not in METHODS:
        raise ValueError(f"unknown SHAP method {method!r}; expected one of {list(METHODS)}")
    preprocess, estimator = split_pipeline(model)
    name = type(estimator).__name__
    why_not_tree = tree_problem(preprocess, estimator)
    why_not_linear = linear_problem(preprocess, estimator)
    if method == "tree" and why_not_tree is not None:
        raise ValueError(f"the tree path needs a ColumnTransformer + forest/HGB/LightGBM pipeline: {why_not_tree}")
    if method == "linear" and why_not_linear is not None:
        raise ValueError(f"the linear path cannot explain this pipeline: {why_not_linear}")
    reason = "requested"
    if method == "auto":
        # The exact paths first; the permutation path costs ~0.05-0.5 s per row and estimates.
        if why_not_tree is None:
            method, reason = "tree", f"exact TreeSHAP: {name} is a tree ensemble"
        elif why_not_linear is None:
            method, reason = "linear", f"exact linear SHAP: {name} is linear in the transformed features"
        else:
            method = "permutation"
            reason = f"model-agnostic: no exact path applies (tree: {why_not_tree}; linear: {why_not_linear})"
    path: ExplainPath
    if method == "tree":
        path = TreePath(preprocess, estimator, cfg)
    elif background is None or len(background) == 0:
        raise ValueError(f"the {method} path needs background rows")
    elif method == "linear":
        path = LinearPath(preprocess, estimator, cfg, background)
    else:
        path = PermutationPath(model, cfg, background, seed)
    path.reason = reason
    classes = getattr(estimator, "classes_", None)
    if classes is not None and len(classes) > 2:
        path.classes = tuple(str(c) for c in classes)
    return path
