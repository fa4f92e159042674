"""Model performance per monitoring window: realized when labels exist, estimated before they do,
and drift of the model's feature attributions.

- `realized_performance`: the test metrics of `modeling.training` on a window's fed-back labels
  (strings as served, e.g. ">50K", or 0/1) at the serving decision threshold
  (`gates.fairness.threshold`).
- `estimate_performance`: confidence-based performance estimation (CBPE, as NannyML describes
  it) for binary classification. The champion's scores are calibrated with an isotonic
  `Calibrator` fitted once on its held-out scores and labels; if the calibrated probability p_i
  is right, the unknown label of row i is Bernoulli(p_i), so every metric of the window has a
  distribution that can be computed without a single label:
  accuracy, precision, log loss and Brier are linear in the labels (given the fixed
  predictions), so their expectation is exact; recall and F1 use NannyML's ratio of expected
  confusion-matrix counts; ROC AUC has no closed form and is the mean over `n_simulations`
  Monte Carlo label draws. Every metric's std and [low, high] come from those draws: they are the
  spread of the metric the window would realize *if the calibration holds*, and they do not
  include the calibrator's own error.
- `attribution_drift`: SHAP shares of a window sample against the shares the explainability
  gate recorded for the champion, compared by nDCG@k.

What estimation can and cannot see: CBPE assumes P(y | x) is unchanged (the calibration still
holds). It follows covariate shift (the mix of rows changes, e.g. older or more educated
people) because it re-weights by each row's own calibrated probability. It cannot see concept
shift (the same rows now have different labels): the scores, hence the estimate, do not move.
That is why realized metrics from `/feedback` labels are still needed.

Regression: label-free estimation is not offered (there is no calibrated distribution of the
target to sample from); `estimate_performance` raises NotImplementedError, so a caller checks
`cfg.task` first rather than mistaking an empty result for "no drop".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.modeling.multiclass import label_text

__all__ = [
    "Calibrator",
    "Estimate",
    "attribution_drift",
    "estimate_performance",
    "fit_calibrator",
    "realized_performance",
    "simulate_metrics",
]

# Same clipping as `modeling.training` applies to log loss, so estimated and realized agree.
LOG_LOSS_CLIP = 1e-15
# Upper bound on simulated labels held in memory at once (simulations x rows): bounds memory for
# large windows (a 100k-row window runs 20 simulations per chunk, ~20 MB of booleans).
MC_CHUNK_CELLS = 2_000_000


# ---------------------------------------------------------------------------- calibration


@dataclass(eq=False)
class Calibrator:
    """Isotonic calibration of a champion's scores: a monotone piecewise-linear map score -> P(y=1).

    Attributes:
        x: increasing score thresholds of the isotonic fit.
        y: calibrated probabilities at those thresholds (non-decreasing, in [0, 1]).

    Between thresholds the map interpolates linearly and outside it is clipped to the end
    values, exactly as sklearn's `IsotonicRegression(out_of_bounds="clip").predict` does; the
    two arrays are all there is to it, so it serializes to plain JSON.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=float).ravel()
        self.y = np.asarray(self.y, dtype=float).ravel()
        if len(self.x) == 0 or len(self.x) != len(self.y):
            raise ValueError(f"a calibrator needs as many thresholds as values (>= 1), got {len(self.x)} "
                             f"and {len(self.y)}")
        if not (np.isfinite(self.x).all() and np.isfinite(self.y).all()):
            raise ValueError("calibrator thresholds and values must be finite")
        if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("calibrator thresholds and values must be non-decreasing (isotonic)")
        if self.y[0] < 0 or self.y[-1] > 1:
            raise ValueError("calibrated probabilities must lie in [0, 1]")

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ would compare arrays elementwise and raise on their truth value.
        if not isinstance(other, Calibrator):
            return NotImplemented
        return bool(np.array_equal(self.x, other.x) and np.array_equal(self.y, other.y))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays: not hashable, like a list

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of `scores` (same shape)."""
        values = np.asarray(scores, dtype=float)
        return np.interp(values, self.x, self.y)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (`from_dict` reads it back)."""
        return {"method": "isotonic", "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """The calibrator `as_dict` wrote.

        Raises:
            ValueError: on another method or invalid thresholds.
        """
        method = d.get("method", "isotonic")
        if method != "isotonic":
            raise ValueError(f"unknown calibration method {method!r}; expected 'isotonic'")
        return cls(x=np.asarray(d["x"], dtype=float), y=np.asarray(d["y"], dtype=float))


def fit_calibrator(scores: np.ndarray, labels: np.ndarray) -> Calibrator:
    """Fit the isotonic calibration of `scores` (positive-class probabilities) to 0/1 `labels`.

    Fit once per champion on its held-out test scores and encoded labels: those rows played no
    part in fitting the model, so the calibration reflects how its scores behave on new data.

    Raises:
        ValueError: on no rows, mismatched lengths, non-finite scores, labels other than 0/1, or
            a single class (nothing to calibrate against).
    """
    from sklearn.isotonic import IsotonicRegression

    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel()
    if len(s) == 0:
        raise ValueError("no rows to fit a calibrator on")
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite to fit a calibrator")
    y = _binary(y)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes among the labels")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
    return Calibrator(x=np.asarray(iso.X_thresholds_, dtype=float), y=np.asarray(iso.y_thresholds_, dtype=float))


def _binary(labels: np.ndarray) -> np.ndarray:
    """0/1 labels as float, or ValueError."""
    try:
        values = np.asarray(labels, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("labels must be 0/1 (encode them with the target's positive class first)") from None
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1 (encode them with the target's positive class first)")
    return values


# ---------------------------------------------------------------------------- realized


def realized_performance(labels: np.ndarray, scores: np.ndarray, cfg: ModelConfig) -> dict[str, float]:
    """The window's realized metrics (those of `metrics_from_scores`) plus `rows`.

    Classification labels may be the class labels as served and fed back (e.g. ">50K") or
    already encoded 0/1 (or booleans); they are mapped with `target.positive_class` (see
    `_encode_labels`). Predictions use the serving decision threshold
    (`gates.fairness.threshold`). ROC AUC is NaN when the window holds one class only.

    Raises:
        ValueError: on an empty window, mismatched lengths, missing labels, non-finite scores,
            or labels that are neither the configured classes nor 0/1.
    """
    from autopilot.modeling.training import metrics_from_scores

    s = np.asarray(scores, dtype=float).ravel()
    raw = pd.Series(np.asarray(labels, dtype=object).ravel())
    if len(s) == 0 or len(raw) == 0:
        raise ValueError("the window has no labeled rows: nothing to measure")
    if len(s) != len(raw):
        raise ValueError(f"{len(raw)} labels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if raw.isna().any():
        raise ValueError(f"{int(raw.isna().sum())} labels are missing; pass labeled rows only")
    y = _encode_labels(raw, cfg)
    result = metrics_from_scores(pd.Series(y), s, cfg.task, cfg.gates.fairness.threshold)
    result["rows"] = float(len(s))
    return result


def _encode_labels(raw: pd.Series, cfg: ModelConfig) -> np.ndarray:
    """Fed-back labels as estimators see them: 0/1 (classification) or float (regression).

    Classification: labels that are all configured classes (or, without `target.classes`,
    strings) are compared with `positive_class` as strings, like `encode_target`. Labels that
    are all 0/1 (numbers, "0"/"1" or booleans) are taken as already encoded, unless the
    configured classes are themselves 0/1, in which case they are class labels.
    """
    if cfg.task is Task.REGRESSION:
        try:
            return np.asarray(pd.to_numeric(raw, errors="raise"), dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"regression labels must be numeric: {exc}") from None
    positive = label_text(cfg.target.positive_class)
    classes = {label_text(c) for c in cfg.target.classes} if cfg.target.classes else None
    texts = raw.map(label_text)
    seen = set(texts)
    numeric_classes = {positive, *(classes or set())} <= {"0", "1"}
    if seen <= {"0", "1"} and not numeric_classes:
        return np.asarray(texts == "1", dtype=int)
    if classes is not None and not seen <= classes:
        unknown = sorted(seen - classes)[:5]
        raise ValueError(f"labels {unknown} are neither target.classes {sorted(classes)} nor 0/1")
    return np.asarray(texts == positive, dtype=int)


# ---------------------------------------------------------------------------- estimated


@dataclass(frozen=True)
class Estimate:
    """A label-free estimate of one metric on a window.

    Attributes:
        metric: the metric name (as in `metrics_from_scores`).
        value: the estimate (closed-form expectation, or the Monte Carlo mean).
        std: standard deviation of the metric over the simulated label draws.
        low: lower percentile of the draws at the requested confidence.
        high: upper percentile.
        method: `cbpe` (closed-form expectation) or `cbpe_mc` (Monte Carlo mean).
    """

    metric: str
    value: float
    std: float
    low: float
    high: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (NaN stays NaN; `reports.json_safe` turns it into null)."""
        return asdict(self)


def check_estimate_args(n_simulations: int, confidence: float) -> None:
    """The Monte Carlo arguments every label-free estimate takes (binary here, multiclass in `multiclass`)."""
    if n_simulations < 2:
        raise ValueError(f"n_simulations must be at least 2 (a spread needs two draws), got {n_simulations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def estimate_performance(
    scores: np.ndarray,
    calibrator: Calibrator,
    cfg: ModelConfig,
    n_simulations: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Estimate]:
    """CBPE estimates of every classification metric on a window of served scores (no labels).

    Returns an `Estimate` for roc_auc, accuracy, precision, recall, f1, log_loss and brier (so
    `cfg.metric` is always among them). Predictions are `scores >= gates.fairness.threshold`,
    as served; the calibrated probabilities only stand in for the unknown labels.

    Raises:
        NotImplementedError: for regression (no label-free estimation is offered).
        ValueError: on an empty window, non-finite scores, `n_simulations` < 2 or a confidence
            outside (0, 1).
    """
    if cfg.task is not Task.BINARY_CLASSIFICATION:
        raise NotImplementedError(
            "label-free performance estimation is offered for binary classification only; for "
            f"{cfg.task.value} use realized_performance once labels arrive"
        )
    s = np.asarray(scores, dtype=float).ravel()
    if len(s) == 0:
        raise ValueError("the window has no scores: nothing to estimate")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    check_estimate_args(n_simulations, confidence)
    p = np.clip(calibrator(s), 0.0, 1.0)
    predicted = s >= cfg.gates.fairness.threshold
    draws = simulate_metrics(s, p, predicted, n_simulations, np.random.default_rng(seed))
    expected = _expected(s, p, predicted)
    tail = (1.0 - confidence) / 2.0 * 100.0
    out: dict[str, Estimate] = {}
    for name, samples in draws.items():
        finite = samples[np.isfinite(samples)]
        if len(finite) == 0:  # e.g. ROC AUC when every draw holds one class
            out[name] = Estimate(name, math.nan, math.nan, math.nan, math.nan, "cbpe_mc")
            continue
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
        if name in expected:
            value, method = expected[name], "cbpe"
        else:
            value, method = float(np.mean(finite)), "cbpe_mc"
        out[name] = Estimate(name, float(value), std, float(low), float(high), method)
    return out


def _expected(s: np.ndarray, p: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Closed-form expectations over labels ~ Bernoulli(p) with the predictions fixed.

    Accuracy, precision (its denominator, the predicted positives, is fixed), log loss and Brier
    are linear in the labels, so these are exact. Recall and F1 have a random denominator; they
    use the ratio of expected counts (NannyML's CBPE), which differs from the exact expectation
    by O(1/n).
    """
    n = len(s)
    tp = float(p[predicted].sum())
    fp = float((1.0 - p[predicted]).sum())
    fn = float(p[~predicted].sum())
    tn = float((1.0 - p[~predicted]).sum())
    clipped = np.clip(s, LOG_LOSS_CLIP, 1.0 - LOG_LOSS_CLIP)
    # zero_division=0, as `metrics_from_scores` computes the realized values.
    return {
        "accuracy": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else 0.0,
        "log_loss": float(-np.mean(p * np.log(clipped) + (1.0 - p) * np.log1p(-clipped))),
        "brier": float(np.mean(s**2 - 2.0 * s * p + p)),
    }


def simulate_metrics(s: np.ndarray, p: np.ndarray, predicted: np.ndarray, n_simulations: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every metric on each of `n_simulations` label draws ~ Bernoulli(p), vectorized.

    The scores (hence the predictions and their ranks) are fixed across draws, so each metric is
    a few matrix-vector products: ROC AUC is the Mann-Whitney statistic from the positives' rank
    sum (average ranks for ties, as `roc_auc_score` treats them).
    """
    from scipy.stats import rankdata

    n = len(s)
    ranks = rankdata(s)
    pred = predicted.astype(float)
    n_pred = float(pred.sum())
    clipped = np.clip(s, LOG_LOSS_CLIP, 1.0 - LOG_LOSS_CLIP)
    log_odds = np.log(clipped) - np.log1p(-clipped)
    sum_log_neg = float(np.log1p(-clipped).sum())
    sum_sq = float((s**2).sum())
    chunk = max(1, MC_CHUNK_CELLS // n)
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_simulations:
        size = min(chunk, n_simulations - done)
        labels = (rng.random((size, n)) < p).astype(float)
        positives = labels.sum(axis=1)
        tp = labels @ pred
        fp = n_pred - tp
        fn = positives - tp
        tn = n - tp - fp - fn
        negatives = n - positives
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (labels @ ranks - positives * (positives + 1) / 2.0) / (positives * negatives)
            values = {
                "roc_auc": np.where((positives > 0) & (negatives > 0), auc, np.nan),
                "accuracy": (tp + tn) / n,
                "precision": np.where(n_pred > 0, tp / n_pred, 0.0),
                "recall": np.where(positives > 0, tp / positives, 0.0),
                "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
                "log_loss": -(labels @ log_odds + sum_log_neg) / n,
                "brier": (sum_sq - 2.0 * (labels @ s) + positives) / n,
            }
        for name, array in values.items():
            parts.setdefault(name, []).append(np.asarray(array, dtype=float))
        done += size
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


# ---------------------------------------------------------------------------- attributions


def attribution_drift(
    model: Any,
    window: pd.DataFrame,
    cfg: ModelConfig,
    reference_shares: dict[str, float],
    max_rows: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """How far the model's importance ranking on a window moved from the reference.

    Explains a seeded sample of at most `max_rows` window rows with `shap_attributions`
    (`auto`: exact TreeSHAP for forests and HGB, permutation otherwise), and compares the
    window's shares with `reference_shares` (the champion's, as the explainability gate
    recorded them) by nDCG@`gates.explainability.top_k`. `drifted` is nDCG below
    `gates.explainability.min_ndcg`, the bound the gate holds a challenger to.

    The tree path attributes relative to the training distribution (path-dependent TreeSHAP), so
    a feature whose window values collapse onto its common value (e.g. capital_gain all 0)
    loses its share, while one frozen at an informative value keeps a large share: each row's
    value still differs from the training average. Share changes are reported per feature.

    Returns:
        ndcg_at_k, k, min_ndcg, drifted, top_features and reference_top_features (lists of
        {"feature", "share"}), shares, share_change (window minus reference), rows, method,
        seconds.

    Raises:
        ValueError: on an empty window, max_rows < 1, or reference shares with no positive mass.
    """
    from autopilot.explain import ndcg_at_k, shap_attributions, top_shares

    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if len(window) == 0:
        raise ValueError("the window has no rows to explain")
    reference = {str(k): float(v) for k, v in reference_shares.items()}
    if not any(math.isfinite(v) and v > 0 for v in reference.values()):
        raise ValueError("the reference shares carry no importance: nothing to compare with")
    bounds = cfg.gates.explainability
    rows = window if len(window) <= max_rows else window.sample(n=max_rows, random_state=seed)
    attr = shap_attributions(model, rows, cfg, method="auto", seed=seed)
    shares = attr.shares()
    ndcg = ndcg_at_k(reference, shares, bounds.top_k)
    return {
        "ndcg_at_k": ndcg,
        "k": bounds.top_k,
        "min_ndcg": bounds.min_ndcg,
        "drifted": bool(ndcg < bounds.min_ndcg),
        "top_features": top_shares(shares, bounds.top_k),
        "reference_top_features": top_shares(reference, bounds.top_k),
        "shares": shares,
        "share_change": {name: shares.get(name, 0.0) - reference.get(name, 0.0)
                         for name in dict.fromkeys([*reference, *shares])},
        "rows": attr.rows,
        "method": attr.method,
        "seconds": attr.seconds,
    }
