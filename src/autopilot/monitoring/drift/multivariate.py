"""Multivariate drift: PCA data reconstruction, as NannyML's `DataReconstructionDriftCalculator` does it.

A change in how features move together (two columns that were correlated stop being, or flip)
can leave every column's own distribution as it was: the per-column checks (`check`) cannot see
it. This check learns the reference's joint structure once per champion and asks how well a
window still fits it.

Fit (once per champion, on the training reference, next to the per-column profile):

- **Encoding.** Numeric columns: missing and infinite values imputed with the reference's mean
  (so missingness alone moves nothing here; the per-column checks report missing shares).
  Categorical columns: *frequency-encoded*, each value replaced by its share of the reference
  rows (missing values by the share of missing ones, a category the reference never saw by 0),
  as NannyML's default count encoding does. One number per column keeps the dimension small at
  any cardinality (Adult's 41 countries are one column, not 41) and turns a category-mix change
  into a moved value; the price is that two categories of equal frequency look alike here.
  Every encoded column is then standardized with the reference's mean and standard deviation.
- **PCA** on half of the reference rows (seeded), keeping the fewest components whose explained
  variance reaches `monitoring.drift.multivariate.explained_variance` (NannyML uses 0.65).
- **The reference's spread.** The other half, not used to fit, gives the per-row reconstruction
  error (Euclidean distance between an encoded row and its projection back from the
  components): its mean and standard deviation. A window of `n` rows from the same
  distribution has a mean error whose standard deviation is `sd / sqrt(n)` (plus the held-out
  mean's own uncertainty, `sd / sqrt(m)` for `m` held-out rows), so the bounds are
  `mean +- threshold_sd * sd * sqrt(1/n + 1/m)`: NannyML's mean +- 3 sd of chunk means, computed
  for the window's own size instead of fixed chunks. As the per-column checks, the check also
  has an effect-size floor (`min_error_change`, a relative change of the mean error): the
  sampling bound narrows with the window, and at tens of thousands of rows it would flag
  differences nobody acts on. The bounds are the wider of the two, on each side.

Window: the mean reconstruction error of its rows, outside the bounds -> drifted. Above the
upper bound, the window no longer fits the reference's structure; below the lower bound, it
fits *too* well (e.g. inputs stuck at a default), which is also a change. Fewer rows than
`monitoring.drift.min_rows` decide nothing (insufficient), as the per-column check.

Storage: `MultivariateReference` is plain arrays and lists (`to_stored` / `from_stored`),
written into the reference profile's `.npz` and JSON, never pickled.

Cost: the window is encoded column by column (a float conversion, or a hash map for
categorical columns), then one matrix product with the components; `bench/multivariate.py`
measures it against one pass of the per-column checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.columns import MISSING, check_frame

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["MultivariateReference", "MultivariateResult", "check_multivariate", "encode", "fit_multivariate"]

SCALE_FLOOR = 1e-12  # a constant encoded column is centred, not divided by zero
ERROR_FLOOR = 1e-9  # a mean error this small on standardized data is rounding: nothing is left to reconstruct
SEED = 0  # the fit/held-out split of the reference is seeded: a rebuilt reference is the same reference


@dataclass(frozen=True)
class MultivariateReference:
    """The fitted reconstruction check of one champion: arrays only, rebuilt from its stored form.

    Attributes:
        features: column name -> `numeric` or `categorical`, in the order of the encoded columns.
        fill: numeric column -> the imputation value (the reference's mean).
        frequencies: categorical column -> category -> share of reference rows (`MISSING` for missing).
        center: per encoded column, the mean used to standardize.
        scale: per encoded column, the standard deviation used to standardize.
        mean: the PCA mean of the standardized fit rows.
        components: (k, d) principal axes, orthonormal rows.
        explained: the variance share the kept components explain on the fit rows.
        error_mean: mean per-row reconstruction error on the held-out reference rows.
        error_sd: its standard deviation (ddof 1).
        fit_rows: reference rows the PCA was fitted on.
        held_out_rows: reference rows the error distribution was measured on.
    """

    features: dict[str, str]
    fill: dict[str, float]
    frequencies: dict[str, dict[str, float]]
    center: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    explained: float
    error_mean: float
    error_sd: float
    fit_rows: int
    held_out_rows: int

    def to_stored(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-safe metadata, float arrays): the whole check, with nothing that needs unpickling."""
        meta = {"features": self.features, "fill": self.fill, "frequencies": self.frequencies,
                "explained": self.explained, "error_mean": self.error_mean, "error_sd": self.error_sd,
                "fit_rows": self.fit_rows, "held_out_rows": self.held_out_rows}
        arrays = {"center": self.center, "scale": self.scale, "mean": self.mean, "components": self.components}
        return meta, {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}

    @classmethod
    def from_stored(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> MultivariateReference:
        """Rebuild from `to_stored`'s output.

        Raises:
            ValueError: missing keys or arrays whose shapes do not fit the features.
        """
        try:
            features = {str(k): str(v) for k, v in meta["features"].items()}
            built = cls(features=features, fill={k: float(v) for k, v in meta["fill"].items()},
                        frequencies={k: {str(c): float(s) for c, s in v.items()}
                                     for k, v in meta["frequencies"].items()},
                        center=np.asarray(arrays["center"], dtype=np.float64),
                        scale=np.asarray(arrays["scale"], dtype=np.float64),
                        mean=np.asarray(arrays["mean"], dtype=np.float64),
                        components=np.atleast_2d(np.asarray(arrays["components"], dtype=np.float64)),
                        explained=float(meta["explained"]), error_mean=float(meta["error_mean"]),
                        error_sd=float(meta["error_sd"]), fit_rows=int(meta["fit_rows"]),
                        held_out_rows=int(meta["held_out_rows"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"stored multivariate reference is incomplete: {exc!r}") from None
        d = len(features)
        shapes = [built.center.shape, built.scale.shape, built.mean.shape]
        if any(s != (d,) for s in shapes) or built.components.shape[1] != d:
            raise ValueError(f"stored multivariate reference: arrays {shapes + [built.components.shape]} do not "
                             f"fit {d} features")
        return built

    def bounds(self, rows: int) -> tuple[float, float]:
        """(lower, upper) bound of a window's mean error at `rows` rows, for `threshold_sd` 1 (scale it)."""
        half = self.error_sd * math.sqrt(1.0 / rows + 1.0 / self.held_out_rows)
        return self.error_mean - half, self.error_mean + half


@dataclass(frozen=True)
class MultivariateResult:
    """The multivariate check of one window.

    Attributes:
        checked: the check ran (False: disabled, no fitted reference, or too few rows; see `reason`).
        sufficient: the window had at least `min_rows` rows (False: insufficient, no decision).
        drifted: the window's mean reconstruction error is outside [lower, upper].
        error: the window's mean reconstruction error (None when not checked).
        lower: the lower bound at the window's size.
        upper: the upper bound at the window's size.
        reference_error: the held-out reference rows' mean error.
        change: error / reference_error - 1, the effect size (`min_error_change` is its floor).
        components: PCA components kept.
        rows: rows in the window.
        reason: one sentence saying what was found, or why nothing was decided.
    """

    checked: bool
    sufficient: bool
    drifted: bool
    error: float | None
    lower: float | None
    upper: float | None
    reference_error: float | None
    change: float | None
    components: int
    rows: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (`method` says which check this is)."""
        return {"method": "pca_reconstruction", **asdict(self)}


def encode(reference: MultivariateReference, frame: pd.DataFrame) -> np.ndarray:
    """The frame's feature columns as the standardized float matrix the PCA works on (rows x features)."""
    out = np.empty((len(frame), len(reference.features)), dtype=np.float64)
    for j, (name, kind) in enumerate(reference.features.items()):
        if kind == "numeric":
            try:
                values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column {name!r} is numeric in the config but holds non-numeric values ({exc}); "
                                 "canonicalize the frame first") from None
            out[:, j] = np.where(np.isfinite(values), values, reference.fill[name])
        else:
            out[:, j] = _frequencies(frame[name], reference.frequencies[name])
    out -= reference.center
    out /= reference.scale
    return out


def _frequencies(column: pd.Series, shares: dict[str, float]) -> np.ndarray:
    """Each value's reference share (missing: the missing share; unseen: 0), by one hash pass over distinct values."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    lookup = np.array([shares.get(str(value), 0.0) for value in uniques] + [shares.get(MISSING, 0.0)])
    return lookup[codes]  # code -1 (missing) takes the last entry


def _errors(reference: MultivariateReference, encoded: np.ndarray) -> np.ndarray:
    """Per-row Euclidean distance between each encoded row and its reconstruction from the components."""
    centred = encoded - reference.mean
    projected = centred @ reference.components.T
    # |x - C'Cx|^2 = |x|^2 - |Cx|^2 for orthonormal rows of C: one product, no reconstruction matrix.
    squared = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", projected, projected)
    return np.sqrt(np.clip(squared, 0.0, None))


def fit_multivariate(frame: pd.DataFrame, features: dict[str, str], cfg: ModelConfig) -> MultivariateReference | None:
    """Fit the reconstruction check on the reference frame (canonical features); None when it is too small.

    Too small: fewer than `2 * min_rows` rows (half fit the PCA, half measure its error, and each
    half needs at least `min_rows`): the windows then report the check as not available.

    Raises:
        ValueError: a feature column missing, or a numeric one that is not numeric, or all-missing.
    """
    settings = cfg.monitoring.drift.multivariate
    check_frame(frame, features, "reference")
    if len(frame) < 2 * cfg.monitoring.drift.min_rows:
        return None
    fill, frequencies = _encodings(frame, features)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(frame))
    fit_part, held_part = order[: len(frame) // 2], order[len(frame) // 2:]
    d = len(features)
    blank = MultivariateReference(features=dict(features), fill=fill, frequencies=frequencies,
                                  center=np.zeros(d), scale=np.ones(d), mean=np.zeros(d),
                                  components=np.zeros((0, d)), explained=0.0, error_mean=0.0, error_sd=0.0,
                                  fit_rows=len(fit_part), held_out_rows=len(held_part))
    raw = encode(blank, frame)
    center = raw[fit_part].mean(axis=0)
    scale = raw[fit_part].std(axis=0)
    scale = np.where(scale > SCALE_FLOOR, scale, 1.0)
    fit = (raw[fit_part] - center) / scale
    mean = fit.mean(axis=0)
    _, singular, axes = np.linalg.svd(fit - mean, full_matrices=False)
    variance = singular**2
    ratio = np.cumsum(variance) / variance.sum() if variance.sum() > 0 else np.ones_like(variance)
    k = min(int(np.searchsorted(ratio, settings.explained_variance - 1e-12)) + 1, len(ratio))
    fitted = MultivariateReference(
        features=dict(features), fill=fill, frequencies=frequencies, center=center, scale=scale, mean=mean,
        components=axes[:k].copy(), explained=float(ratio[k - 1]), error_mean=0.0, error_sd=0.0,
        fit_rows=len(fit_part), held_out_rows=len(held_part))
    held = _errors(fitted, (raw[held_part] - center) / scale)
    return MultivariateReference(**{**fitted.__dict__, "error_mean": float(held.mean()),
                                    "error_sd": float(held.std(ddof=1))})


def _encodings(frame: pd.DataFrame, features: dict[str, str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(numeric column -> imputation mean, categorical column -> category shares) from the reference."""
    fill: dict[str, float] = {}
    frequencies: dict[str, dict[str, float]] = {}
    for name, kind in features.items():
        if kind == "numeric":
            try:
                values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"reference: column {name!r} is numeric in the config but holds non-numeric "
                                 f"values ({exc}); canonicalize the frame first") from None
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise ValueError(f"reference: column {name!r} has no values (all missing): cannot fit the "
                                 "multivariate check")
            fill[name] = float(finite.mean())
        else:
            shares = frame[name].astype(object).where(frame[name].notna(), MISSING).astype(str)
            counted = shares.value_counts(normalize=True)
            frequencies[name] = {str(k): float(v) for k, v in counted.items()}
    return fill, frequencies


def check_multivariate(reference: MultivariateReference | None, window: pd.DataFrame,
                       cfg: ModelConfig) -> MultivariateResult:
    """Compare one window's mean reconstruction error with the reference's bounds at the window's size.

    Args:
        reference: from `fit_multivariate` (the reference profile's `multivariate`); None: not available.
        window: the served rows, canonical like the reference; extra columns are ignored.
        cfg: the model config (`monitoring.drift.multivariate`, `monitoring.drift.min_rows`).

    Raises:
        ValueError: an empty window, a feature column missing from it, or a numeric column that is
            not numeric.
    """
    settings = cfg.monitoring.drift.multivariate
    rows = len(window)
    if not settings.enabled:
        return _unchecked(rows, True, "multivariate drift not checked: disabled "
                          "(monitoring.drift.multivariate.enabled: false)")
    if reference is None:
        return _unchecked(rows, True, "multivariate drift not checked: the reference has no fitted check (built "
                          "before it existed, or too few reference rows); it is fitted with the next champion")
    check_frame(window, reference.features, "window")
    min_rows = cfg.monitoring.drift.min_rows
    if rows < min_rows:
        return _unchecked(rows, False, f"insufficient data: {rows} rows in the window, fewer than min_rows "
                          f"{min_rows}; no multivariate drift decision")
    if reference.error_mean <= ERROR_FLOOR:
        return _unchecked(rows, True, "multivariate drift not checked: the kept components reconstruct the "
                          "reference exactly (a single feature, or every component kept): no error to compare")
    error = float(_errors(reference, encode(reference, window)).mean())
    lower, upper = _bounds(reference, rows, settings.threshold_sd, settings.min_error_change)
    n = reference.components.shape[0]
    change = error / reference.error_mean - 1.0
    pca = (f"PCA, {n} components explaining {reference.explained:.0%} of the reference's variance; "
           f"{change:+.1%} against the reference's {reference.error_mean:.4f}")
    if error > upper:
        reason = (f"multivariate drift: reconstruction error {error:.4f} above the reference's upper bound "
                  f"{upper:.4f} ({pca}): the features no longer move together as they did")
    elif error < lower:
        reason = (f"multivariate drift: reconstruction error {error:.4f} below the reference's lower bound "
                  f"{lower:.4f} ({pca}): the window is more regular than the reference (inputs stuck at a value?)")
    else:
        reason = (f"no multivariate drift: reconstruction error {error:.4f} within the reference's bounds "
                  f"{lower:.4f}-{upper:.4f} ({pca})")
    return MultivariateResult(checked=True, sufficient=True, drifted=not lower <= error <= upper, error=error,
                              lower=lower, upper=upper, reference_error=reference.error_mean, change=change,
                              components=n, rows=rows, reason=reason)


def _bounds(reference: MultivariateReference, rows: int, threshold_sd: float, min_change: float) -> tuple[float, float]:
    """(lower, upper): the wider of the sampling bound at `rows` rows and the effect-size floor, each side."""
    low, high = reference.bounds(rows)
    mean = reference.error_mean
    # Sampling noise decides small windows, the effect floor large ones (where the sampling bound
    # alone would flag any difference at all, as p-values do).
    return (min(mean - threshold_sd * (mean - low), mean * (1.0 - min_change)),
            max(mean + threshold_sd * (high - mean), mean * (1.0 + min_change)))


def _unchecked(rows: int, sufficient: bool, reason: str) -> MultivariateResult:
    return MultivariateResult(checked=False, sufficient=sufficient, drifted=False, error=None, lower=None,
                              upper=None, reference_error=None, change=None, components=0, rows=rows, reason=reason)
