"""Effect sizes: how far one column of a window moved from the reference, per method.

Per column, by `monitoring.drift.methods` (default `auto`):

- `auto`: the normed Wasserstein distance for numeric columns (W1 between the window and the
  reference, divided by the reference's standard deviation) and the Jensen-Shannon distance
  (natural log, no smoothing of empty categories) for categorical ones. These are Evidently
  0.7's own definitions and choices for a reference of more than 1,000 rows, computed the same
  way (`tests/unit/test_drift.py` checks equality to 1e-9 against Evidently), including
  Evidently's two special cases: a numeric column with at most 5 distinct values in reference
  and window together uses Jensen-Shannon over those values, and a reference standard deviation
  below 0.001 is replaced by 0.001 (so any change in a constant column counts as drift; the
  column's reason says so).
- `wasserstein` / `jensenshannon`: those methods forced (Jensen-Shannon on a numeric column
  uses Evidently's binning: one bin per value up to 20 distinct reference values, otherwise
  Sturges bins over reference and window together).
- `psi`: the population stability index over `bins` reference-quantile bins (numeric) or the
  categories (categorical), with missing values as one more bin; empty bins are filled the way
  Evidently fills them (1e-4, or a millionth of the smallest share when that is smaller).

Missing (and infinite) values are left out of Wasserstein and Jensen-Shannon, as Evidently does,
and reported per column as `missing_share`: missing-value limits are data validation's job
(`features.*.max_null_fraction`). A column entirely missing in the window counts as drifted
(effect infinite). A column drifted when its effect is at or above its threshold (Evidently's
rule): `numeric_threshold` for Wasserstein, `categorical_threshold` for Jensen-Shannon,
`psi_threshold` for PSI.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.columns import MISSING, category_counts, distinct, finite_values
from autopilot.monitoring.drift.reference import ReferenceProfile
from autopilot.monitoring.drift.result import ColumnDrift

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["DISCRETE_BINS", "FEW_VALUES", "METHOD_LABELS", "STD_FLOOR", "cdf_at", "column_drift", "js_distance",
           "method_threshold", "resolve_method", "w1"]

STD_FLOOR = 0.001  # Evidently's floor for the reference std that normalizes W1
FEW_VALUES = 5  # numeric columns with at most this many distinct values use Jensen-Shannon (Evidently)
DISCRETE_BINS = 20  # Jensen-Shannon on numeric: per value up to this many reference values (Evidently)
PSI_FLOOR = 1e-4  # Evidently's fill value for empty PSI bins
METHOD_LABELS = {"wasserstein": "normed Wasserstein", "jensenshannon": "Jensen-Shannon", "psi": "PSI"}


def resolve_method(configured: str, kind: str, name: str) -> str:
    """The method a column's configured one (`auto` or a name) means for its kind."""
    if configured == "auto":
        return "wasserstein" if kind == "numeric" else "jensenshannon"
    if configured == "wasserstein" and kind != "numeric":
        raise ValueError(f"monitoring.drift.methods: {name!r} is categorical; wasserstein needs a numeric column")
    return configured


def method_threshold(method: str, cfg: ModelConfig) -> float:
    """The effect at or above which a column drifted, for a method."""
    drift = cfg.monitoring.drift
    return {"wasserstein": drift.numeric_threshold, "jensenshannon": drift.categorical_threshold,
            "psi": drift.psi_threshold}[method]


def column_drift(reference: ReferenceProfile, column: pd.Series, name: str, kind: str, cfg: ModelConfig,
                 notes: list[str]) -> ColumnDrift:
    """One column's effect size against its threshold (a note added when the reason needs one)."""
    rows = len(column)
    configured = cfg.monitoring.drift.methods.get(name, "auto")
    method = resolve_method(configured, kind, name)
    importance = reference.importance.get(name, 0.0)
    if kind == "numeric":
        finite = finite_values(column, name, "window")
        missing_share = 1.0 - finite.size / rows
        ref_values, ref_counts = reference.values_and_counts(name)
        if finite.size == 0:
            effect = math.inf
        else:
            values, counts = distinct(finite)
            if configured == "auto" and np.union1d(ref_values, values).size <= FEW_VALUES:
                method = "jensenshannon"  # Evidently's choice for (nearly) binary numeric columns
            if method == "wasserstein":
                std = reference.std[name]
                if std < STD_FLOOR:
                    notes.append(f"{name}: reference std {std:.3g} is below {STD_FLOOR:g}, so W1 is divided by "
                                 f"{STD_FLOOR:g} (Evidently's floor): any change of a constant column counts as drift")
                effect = w1(ref_values, ref_counts, values, counts) / max(std, STD_FLOOR)
            elif method == "jensenshannon":
                effect = _numeric_js(ref_values, ref_counts, values, counts)
            else:
                effect = _numeric_psi(ref_values, ref_counts, reference.missing.get(name, 0.0),
                                      reference.psi_edges[name], values, counts, rows)
    else:
        found, absent = category_counts(column)
        missing_share = absent / rows
        shares = reference.categories[name]
        if not found and method != "psi":
            effect = math.inf
        elif method == "jensenshannon":
            keys = sorted((set(shares) - {MISSING}) | set(found))
            effect = _js(np.array([shares.get(k, 0.0) for k in keys]), np.array([found.get(k, 0) for k in keys], float))
        else:
            keys = sorted(set(shares) | set(found) | {MISSING})
            window_counts = {**found, MISSING: absent}
            effect = _psi(np.array([shares.get(k, 0.0) for k in keys]),
                          np.array([window_counts.get(k, 0) for k in keys], float) / rows)
    if not math.isfinite(effect):
        notes.append(f"{name}: every value in the window is missing")
    threshold = method_threshold(method, cfg)
    return ColumnDrift(column=name, kind=kind, method=method, effect=float(effect), threshold=threshold,
                       drifted=bool(effect >= threshold), importance=float(importance),
                       missing_share=float(missing_share))


def cdf_at(values: np.ndarray, counts: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of the distribution (values with counts) at or below each point."""
    cumulative = np.concatenate(([0.0], np.cumsum(counts, dtype=np.float64)))
    return cumulative[np.searchsorted(values, points, side="right")] / cumulative[-1]


def w1(ref_values: np.ndarray, ref_counts: np.ndarray, values: np.ndarray, counts: np.ndarray) -> float:
    """First Wasserstein distance between two weighted samples: the area between their CDFs.

    scipy's `wasserstein_distance` on all values computes the same sum; repeated values only
    add zero-width terms there.
    """
    points = np.union1d(ref_values, values)
    if points.size < 2:
        return 0.0
    gaps = np.diff(points)
    between = points[:-1]
    return float(np.dot(np.abs(cdf_at(ref_values, ref_counts, between) - cdf_at(values, counts, between)), gaps))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log), exactly scipy's `jensenshannon` (which Evidently calls)."""
    from scipy.special import rel_entr

    p = p / np.sum(p)
    q = q / np.sum(q)
    m = (p + q) / 2.0
    return float(np.sqrt((np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / 2.0))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) of two count (or share) vectors over the same keys."""
    return _js(np.asarray(p, dtype=float), np.asarray(q, dtype=float))


def _numeric_js(ref_values: np.ndarray, ref_counts: np.ndarray, values: np.ndarray, counts: np.ndarray) -> float:
    """Jensen-Shannon on a numeric column with Evidently's binning."""
    if ref_values.size <= DISCRETE_BINS:
        keys = np.union1d(ref_values, values)
        p = np.zeros(keys.size)
        q = np.zeros(keys.size)
        p[np.searchsorted(keys, ref_values)] = ref_counts
        q[np.searchsorted(keys, values)] = counts
        return _js(p, q)
    # numpy's Sturges bins over reference and window together (np.histogram_bin_edges).
    low = min(ref_values[0], values[0])
    high = max(ref_values[-1], values[-1])
    total = int(ref_counts.sum() + counts.sum())
    width = (high - low) / (np.log2(total) + 1.0)
    edges = np.linspace(low, high, int(np.ceil((high - low) / width)) + 1)
    return _js(_histogram(ref_values, ref_counts, edges), _histogram(values, counts, edges))


def _histogram(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram` counts (half-open bins, the last one closed) from distinct values with counts."""
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = edges.size - 2
    inside = (index >= 0) & (index < edges.size - 1)
    return np.bincount(index[inside], weights=counts[inside], minlength=edges.size - 1)


def _fill_zeros(shares: np.ndarray) -> np.ndarray:
    """Evidently's filling of empty bins before a logarithm."""
    present = shares[shares > 0]
    if present.size == 0:
        return np.full_like(shares, PSI_FLOOR)
    smallest = float(present.min())
    return np.where(shares > 0, shares, smallest / 1e6 if smallest <= PSI_FLOOR else PSI_FLOOR)


def _psi(reference: np.ndarray, window: np.ndarray) -> float:
    p = _fill_zeros(reference)
    q = _fill_zeros(window)
    return float(np.sum((p - q) * np.log(p / q)))


def _numeric_psi(ref_values: np.ndarray, ref_counts: np.ndarray, ref_missing: float, edges: np.ndarray,
                 values: np.ndarray, counts: np.ndarray, rows: int) -> float:
    bins = edges.size + 1
    reference = np.bincount(np.searchsorted(edges, ref_values, side="left"), weights=ref_counts, minlength=bins)
    reference = np.append(reference / reference.sum() * (1.0 - ref_missing), ref_missing)
    window = np.bincount(np.searchsorted(edges, values, side="left"), weights=counts, minlength=bins)
    window = np.append(window / rows, 1.0 - counts.sum() / rows)
    return _psi(reference, window)
