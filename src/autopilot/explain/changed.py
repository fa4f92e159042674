"""The predictions that changed most between the reference and a window, with their local explanations.

Definition (the window report's `changed_predictions`, docs/architecture.md):

1. a seeded sample of at most `sample_rows` window rows and `reference_rows` reference rows;
2. each window row is paired with its nearest reference row (Euclidean, scikit-learn's
   `NearestNeighbors`) on an encoding of the original features: numeric columns standardized by
   the reference's mean and standard deviation (a missing value at the mean), categorical columns
   one-hot over the reference's categories (a missing value is a category; an unseen one is all zeros);
3. the champion's score (positive-class probability, prediction, or for multiclass the probability
   of the class the window row is predicted as) of both rows; `change` = window score - reference score;
4. the `top_n` pairs by |change| are listed, each with the scores, the distance, the features that
   differ between the pair (ordered by standardized difference; a categorical difference counts 1),
   SHAP values of the window row and of its reference row (the existing explain engine, with the
   reference sample as background), their difference (`shap_change`: what moved the model's output
   from one row to the other, in SHAP's output units; its largest is the row's `driver`), and LIME
   weights of the window row (`explain.lime_tabular`, the reference sample as statistics);
5. `drivers`: each row's driver, counted over the listed rows;
6. `shift`: the mean SHAP change over the first `shift_rows` sampled pairs, by feature (`top_features`:
   the three largest |mean|): what moved the window's scores as a whole. The largest single changes
   can come from a pairing that missed on a heavy-tailed feature (on Adult, capital_gain: a nearest
   row 0.5 standard deviations away is thousands of dollars, which the model reads as a large
   difference); such misses have no direction and average out, a shifted feature does not.

The nearest neighbour matches on every feature alike, so a shifted feature is partly matched away:
the features that differ most in standardized units need not be what moved the score; `shap_change`
says what did.

Pure: the caller passes the model, the frames and the bounds. Cost: one nearest-neighbour search of
`sample_rows` x `reference_rows`, two model calls over `sample_rows`, SHAP of 2 x `top_n` rows and
LIME of `top_n` rows x `lime_num_samples`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.config.monitoring import ChangedPredictionsConfig

__all__ = ["DEFINITION", "changed_predictions"]

DEFINITION = ("each sampled window row paired with its nearest reference row (standardized numeric + one-hot "
              "categorical features); change = the champion's score on the window row minus on its reference row; "
              "the largest |change| listed")
CATEGORICAL_DIFFERENCE = 1.0  # a differing category, on the scale of one reference standard deviation


def _encoder(reference: pd.DataFrame, cfg: ModelConfig) -> Any:
    """Standardized numerics (missing at the mean), one-hot categoricals (missing a category, unseen zeros)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = list(cfg.numeric_features), list(cfg.categorical_features)
    parts = []
    if numeric:
        parts.append(("num", make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                                           StandardScaler()), numeric))
    if categorical:
        parts.append(("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="<missing>"),
                                           OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categorical))
    return ColumnTransformer(parts, sparse_threshold=0.0).fit(_strings(reference, cfg))


def _strings(frame: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """Categoricals as object strings (NaN kept) so the imputer and encoder see one type."""
    out = frame.loc[:, list(cfg.features)].copy()
    for name in cfg.categorical_features:
        out[name] = out[name].astype(object).where(out[name].notna(), np.nan)
    return out


def _score(model: Any, frame: pd.DataFrame, cfg: ModelConfig, classes: np.ndarray | None = None) -> np.ndarray:
    """The champion's score of rows; multiclass: the probability of `classes` (column indices) per row."""
    from autopilot.modeling.training import predict_scores

    scores = np.asarray(predict_scores(model, frame, cfg.task), dtype=float)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION and scores.ndim == 2:
        picked = np.argmax(scores, axis=1) if classes is None else classes
        return scores[np.arange(len(scores)), picked]
    return scores


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= n else frame.sample(n=n, random_state=seed)


def _differing(window: pd.Series, reference: pd.Series, cfg: ModelConfig,
               spread: dict[str, float]) -> list[dict[str, Any]]:
    """The features whose values differ between the pair, largest standardized difference first."""
    found = []
    for name in cfg.features:
        a, b = window[name], reference[name]
        if _blank(a) and _blank(b):
            continue
        if name in spread:
            if not _blank(a) and not _blank(b) and float(a) == float(b):
                continue
            size = abs(float(a) - float(b)) / spread[name] if not (_blank(a) or _blank(b)) else math.inf
        else:
            if not _blank(a) and not _blank(b) and str(a) == str(b):
                continue
            size = CATEGORICAL_DIFFERENCE
        found.append({"feature": name, "reference": _plain(b), "window": _plain(a),
                      "standardized_difference": None if math.isinf(size) else round(size, 4)})
    return sorted(found, key=lambda d: -(math.inf if d["standardized_difference"] is None
                                         else d["standardized_difference"]))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    if _blank(value):
        return None
    return float(value) if isinstance(value, int | float | np.integer | np.floating) else str(value)


def _rounded(row: pd.Series) -> dict[str, float | None]:
    return {str(k): (round(float(v), 6) if math.isfinite(float(v)) else None) for k, v in row.items()}


def changed_predictions(model: Any, cfg: ModelConfig, reference: pd.DataFrame, window: pd.DataFrame,
                        bounds: ChangedPredictionsConfig, seed: int = 0) -> dict[str, Any]:
    """The window's predictions that changed most against their nearest reference rows (module docstring).

    Args:
        model: the champion (a fitted pipeline on the canonical feature frame).
        cfg: the model config.
        reference: the champion's reference rows (canonical; extra columns ignored).
        window: the window's rows (canonical features; extra columns ignored).
        bounds: `monitoring.changed_predictions` (top_n, sample_rows, reference_rows, lime_num_samples).
        seed: seeds both samples and LIME.

    Returns:
        {"definition", "top_n", "sampled_rows", "reference_rows", "output", "shap_method", "seconds",
        "drivers": [{"feature", "rows"}], "shift": {"pairs", "mean_shap_change", "top_features"},
        "rows": [{"rank", "driver", "window_index", "reference_index",
        "score_window", "score_reference", "change", "distance", "differing", "shap", "shap_reference",
        "shap_change", "lime", "lime_fit_r2"}]};
        `lime_error` when LIME could not explain (the rest stands).

    Raises:
        ValueError: an empty window or reference, or a missing feature column.
    """
    from autopilot.explain import shap_attributions
    from autopilot.explain.lime_tabular import lime_attributions

    start = time.perf_counter()
    if len(window) == 0 or len(reference) == 0:
        raise ValueError("changed predictions need window and reference rows")
    found = _pair(model, cfg, reference, window, bounds, seed)
    order = np.argsort(-np.abs(found.change), kind="stable")[: bounds.top_n]
    chosen, chosen_pairs = found.window.iloc[order], found.pairs.iloc[order].set_axis(found.window.index[order])
    background = _sample(found.reference, cfg.gates.explainability.background_rows, seed + 2)
    shap_window = shap_attributions(model, chosen, cfg, background=background, seed=seed)
    shap_reference = shap_attributions(model, chosen_pairs, cfg, background=background, seed=seed)
    lime, lime_error = _lime(lime_attributions, model, chosen, cfg, found.reference, bounds, seed)
    shift = _shift(model, cfg, found.window, found.pairs, background, bounds, shap_window.method, seed)
    spread = {name: float(np.nanstd(pd.to_numeric(found.reference[name], errors="coerce"))) or 1.0
              for name in cfg.numeric_features}
    rows = []
    for rank, (position, index) in enumerate(zip(order, chosen.index, strict=True), start=1):
        item = {"rank": rank, "window_index": _plain(index), "reference_index": int(found.nearest[position]),
                "score_window": float(found.window_scores[position]),
                "score_reference": float(found.reference_scores[position]),
                "change": float(found.change[position]), "distance": float(found.distance[position]),
                "differing": _differing(found.window.loc[index], chosen_pairs.loc[index], cfg, spread),
                **_explained(shap_window.values.loc[index], shap_reference.values.loc[index])}
        if lime is not None:
            item["lime"] = _rounded(lime.values.loc[index])
            item["lime_fit_r2"] = float(lime.fit_r2[rank - 1])
        rows.append(item)
    result: dict[str, Any] = {"definition": DEFINITION, "top_n": bounds.top_n, "sampled_rows": len(found.window),
                              "reference_rows": len(found.reference), "output": shap_window.output,
                              "shap_method": shap_window.method, "lime_output": lime.output if lime else None,
                              "drivers": _drivers(rows), "shift": shift, "rows": rows,
                              "seconds": round(time.perf_counter() - start, 3)}
    if lime_error:
        result["lime_error"] = lime_error
    return result


@dataclass(frozen=True)
class _Pairs:
    """Sampled window rows, each with its nearest reference row and both scores."""

    reference: pd.DataFrame  # the reference sample searched in
    window: pd.DataFrame  # the window sample (its own index)
    pairs: pd.DataFrame  # the nearest reference row of each window row, in the window sample's order
    nearest: np.ndarray  # their positions in `reference`
    distance: np.ndarray
    window_scores: np.ndarray
    reference_scores: np.ndarray

    @property
    def change(self) -> np.ndarray:
        """The champion's score on each window row minus on its nearest reference row."""
        return self.window_scores - self.reference_scores


def _pair(model: Any, cfg: ModelConfig, reference: pd.DataFrame, window: pd.DataFrame,
          bounds: ChangedPredictionsConfig, seed: int) -> _Pairs:
    """Steps 1-3 of the definition: sample, pair by nearest neighbour, score both rows."""
    from sklearn.neighbors import NearestNeighbors

    features = list(cfg.features)
    ref = _sample(reference.loc[:, features], bounds.reference_rows, seed).reset_index(drop=True)
    win = _sample(window.loc[:, features], bounds.sample_rows, seed + 1)
    encoder = _encoder(ref, cfg)
    search = NearestNeighbors(n_neighbors=1).fit(encoder.transform(_strings(ref, cfg)))
    distance, nearest = search.kneighbors(encoder.transform(_strings(win, cfg)))
    pairs = ref.iloc[nearest[:, 0]]
    window_scores = _score(model, win, cfg)
    classes = None
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:  # both rows scored on the window row's predicted class
        from autopilot.modeling.training import predict_scores

        classes = np.argmax(np.asarray(predict_scores(model, win, cfg.task)), axis=1)
    return _Pairs(reference=ref, window=win, pairs=pairs, nearest=nearest[:, 0], distance=distance[:, 0],
                  window_scores=window_scores, reference_scores=_score(model, pairs, cfg, classes))


def _explained(window: pd.Series, reference: pd.Series) -> dict[str, Any]:
    """SHAP of the window row, of its reference row, of the change, and the change's driver."""
    from autopilot.explain.lime_tabular import top_features

    change = _rounded(window - reference)
    return {"shap": _rounded(window), "shap_reference": _rounded(reference), "shap_change": change,
            "driver": next(iter(top_features(change, 1)), None)}


def _drivers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each feature that drove a listed change (largest |shap_change|), with how many rows it drove."""
    counts: dict[str, int] = {}
    for row in rows:
        if row.get("driver"):
            counts[row["driver"]] = counts.get(row["driver"], 0) + 1
    return [{"feature": name, "rows": n} for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _shift(model: Any, cfg: ModelConfig, window: pd.DataFrame, pairs: pd.DataFrame, background: pd.DataFrame,
           bounds: ChangedPredictionsConfig, method: str, seed: int) -> dict[str, Any]:
    """The mean SHAP change over the first `shift_rows` sampled pairs: what moved the window's scores as a whole.

    The listed rows are the largest single changes, which a noisy pairing on a heavy-tailed feature can
    dominate; the mean over many pairs keeps what moved scores systematically (a shifted feature) and
    averages the pairing's noise out. Exact SHAP paths only (the permutation path would cost minutes).
    """
    from autopilot.explain import shap_attributions

    if method == "permutation":
        return {"skipped": "the model has no exact SHAP path; the mean over many pairs would cost too much"}
    n = min(bounds.shift_rows, len(window))
    rows, paired = window.iloc[:n], pairs.iloc[:n].set_axis(window.index[:n])
    moved = (shap_attributions(model, rows, cfg, background=background, seed=seed).values
             - shap_attributions(model, paired, cfg, background=background, seed=seed).values).mean(axis=0)
    ranked = sorted(((str(k), float(v)) for k, v in moved.items()), key=lambda item: -abs(item[1]))
    return {"pairs": n, "mean_shap_change": {k: round(v, 6) for k, v in ranked},
            "top_features": [k for k, v in ranked[:3] if v != 0]}


def _lime(explain: Any, model: Any, rows: pd.DataFrame, cfg: ModelConfig, reference: pd.DataFrame,
          bounds: ChangedPredictionsConfig, seed: int) -> tuple[Any, str | None]:
    """LIME weights of the listed rows, or None and why not (LIME is a second opinion; SHAP stands alone)."""
    try:
        return explain(model, rows, cfg, reference, num_samples=bounds.lime_num_samples, seed=seed), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
