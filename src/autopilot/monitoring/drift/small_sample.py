"""Small windows: from which window size effect sizes decide, and the tests that decide below it.

Effect sizes are biased upward by sampling noise (on Adult, at 200 rows the mean effect is about
0.1 on five columns, 0.145 for Jensen-Shannon on `native_country`, and about half of undrifted
windows alarm). `large_sample_rows` derives, from the reference (its size and each column's
shape) and the thresholds, the window size from which noise alone crosses any column's
threshold with probability at most `small_sample_alpha` per window (about 970 rows on Adult).
Below it, as Evidently switches to tests for small references, every column is tested: scipy's
two-sample Kolmogorov-Smirnov for numeric columns, chi-squared on the category counts for
categorical ones and numeric ones with at most 5 values (sparse categories pooled; a pool still too
sparse, e.g. a category new in the window, gets Fisher's exact test), with Holm's correction across
the columns and the scores (a multiclass model's predicted classes: chi-squared on their counts), so
the family-wise false-alarm rate is `small_sample_alpha`, the same rate the threshold was derived
for. A column drifted when its adjusted p-value is at most `small_sample_alpha`; its effect is still
reported, and `decided_by` (`effect` or `test`) says which decided. Calibration on Adult
(`tests/unit/test_drift.py`): 1 alarm in 200 undrifted 300-row windows, and +0.5 sd on three
important features retrains in 40 of 40 300-row windows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.classes import class_p_value, class_rows
from autopilot.monitoring.drift.columns import MISSING, category_counts, distinct, finite_values
from autopilot.monitoring.drift.effects import (
    DISCRETE_BINS,
    FEW_VALUES,
    STD_FLOOR,
    cdf_at,
    method_threshold,
    resolve_method,
)
from autopilot.monitoring.drift.reference import ReferenceProfile
from autopilot.monitoring.drift.result import ColumnDrift

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["TEST_LABELS", "chi2_p", "large_sample_rows", "run_tests"]

TEST_LABELS = {"ks": "Kolmogorov-Smirnov", "chi2": "chi-squared"}
# A chi-squared cell should expect at least this many counts (Cochran's rule); sparser categories are pooled.
MIN_EXPECTED = 5.0
W1_GRID = 256  # levels of F on which the no-drift spread of W1 is computed (`large_sample_rows`)


def large_sample_rows(reference: ReferenceProfile, cfg: ModelConfig) -> int | None:
    """The window size from which effect sizes decide; below it, tests do (None: tests always).

    The rule: effect sizes decide when sampling noise alone crosses no column's threshold with
    more than the tests' false-alarm rate, i.e. when for every column (and the scores)
    P(effect >= threshold | no drift) <= `small_sample_alpha` / (number of columns checked), the
    same family-wise rate the tests control below the threshold. With n window rows and m
    reference rows (non-missing) the noise scales with the effective size n_eff = n*m/(n+m):

    - Jensen-Shannon over k categories (or bins): 8 * n_eff * JS^2 is about chi-squared with
      k-1 degrees of freedom, so n_eff >= chi2.isf(level, k-1) / (8 * threshold^2);
    - PSI over k bins: n_eff * PSI is about chi-squared with k-1 degrees of freedom;
    - normed Wasserstein: sqrt(n_eff) * W1 tends to the integral of |B(F(x))| (B a Brownian
      bridge, F the reference CDF), whose mean (sqrt(2/pi) * integral sqrt(F(1-F)) dx) and
      standard deviation follow from the reference's CDF; normed by the column's sd,
      n_eff >= ((mean + z * sd) / threshold)^2 with z the normal quantile of the level.

    The largest n_eff over the columns gives n = n_eff*m/(m-n_eff) rows; a reference of at most
    n_eff rows cannot reach it at any window size (Evidently likewise switches to tests for a
    reference of 1,000 rows or fewer). On Adult (32,561 rows, 14 columns and the scores, alpha
    0.01) the rule gives about 970 rows, set by `native_country` (41 categories); 2 of 100
    undrifted 1,000-row windows alarmed (tests/unit/test_drift.py holds the calibration).
    """
    from scipy.stats import norm

    drift = cfg.monitoring.drift
    quantities = len(reference.features) + (1 if reference.scores.size else 0)
    level = drift.small_sample_alpha / quantities
    z = float(norm.isf(level))
    needed = [(_column_rows(reference, name, kind, cfg, level, z), _present_rows(reference, name))
              for name, kind in reference.features.items()]  # (n_eff needed, reference rows)
    if reference.scores.size and _multiclass(cfg):  # predicted classes: a categorical column
        needed.append((class_rows(reference.scores, drift.categorical_threshold, level),
                       float(reference.scores.size)))
    elif reference.scores.size:
        values, counts = distinct(reference.scores)
        std = float(np.std(reference.scores))
        needed.append((_w1_rows(values, counts, std, drift.prediction_threshold, z), float(reference.scores.size)))
    rows = 0
    for n_eff, ref_rows in needed:
        if n_eff >= ref_rows:
            return None
        rows = max(rows, math.ceil(n_eff * ref_rows / (ref_rows - n_eff)))
    return rows


def _column_rows(reference: ReferenceProfile, name: str, kind: str, cfg: ModelConfig, level: float,
                 z: float) -> float:
    """The n_eff at which noise alone reaches one column's threshold with probability about `level`."""
    from scipy.stats import chi2

    drift = cfg.monitoring.drift
    configured = drift.methods.get(name, "auto")
    method = resolve_method(configured, kind, name)
    threshold = method_threshold(method, cfg)
    if kind == "numeric":
        values, counts = reference.values_and_counts(name)
        if configured == "auto" and values.size <= FEW_VALUES:
            method, threshold = "jensenshannon", drift.categorical_threshold
        if method == "wasserstein":
            return _w1_rows(values, counts, reference.std[name], threshold, z)
        if method == "jensenshannon":
            present_rows = _present_rows(reference, name)
            bins = values.size if values.size <= DISCRETE_BINS else math.ceil(math.log2(present_rows) + 1)
            return _chi2_rows(chi2, level, bins) / (8.0 * threshold**2)
        return _chi2_rows(chi2, level, reference.psi_edges[name].size + 2) / threshold
    present = len([k for k in reference.categories[name] if k != MISSING])
    if method == "psi":
        return _chi2_rows(chi2, level, present + 1) / threshold
    return _chi2_rows(chi2, level, present) / (8.0 * threshold**2)


def _present_rows(reference: ReferenceProfile, name: str) -> float:
    """Reference rows with a value in the column (missing ones left out)."""
    return reference.rows * (1.0 - reference.missing.get(name, 0.0))


def _chi2_rows(chi2: Any, level: float, bins: int) -> float:
    """The chi-squared quantile a noise-only statistic over `bins` cells stays below (0: one cell, no noise)."""
    return float(chi2.isf(level, bins - 1)) if bins > 1 else 0.0


def _w1_rows(values: np.ndarray, counts: np.ndarray, std: float, threshold: float, z: float) -> float:
    """n_eff at which noise alone reaches the normed-W1 threshold with probability about the level.

    sqrt(n_eff) * W1 tends to the integral of |B(F(x))|; its mean is exact from the reference's
    CDF, its standard deviation is computed from the bridge's covariance on at most `W1_GRID`
    levels of F (the integrand is smooth in F), and the level's quantile is taken as mean + z * sd.
    """
    if values.size < 2:
        return 0.0
    cdf = cdf_at(values, counts, values[:-1])
    gaps = np.diff(values)
    if cdf.size > W1_GRID:  # merge segments by level of F: weights add, F is their weighted mean
        group = np.minimum((cdf * W1_GRID).astype(int), W1_GRID - 1)
        weight = np.bincount(group, weights=gaps, minlength=W1_GRID)
        level = np.bincount(group, weights=gaps * cdf, minlength=W1_GRID)
        used = weight > 0
        gaps, cdf = weight[used], level[used] / weight[used]
    sd_at = np.sqrt(cdf * (1.0 - cdf))
    mean = math.sqrt(2.0 / math.pi) * float(np.dot(sd_at, gaps))
    # Cov(B(u), B(v)) = min(u, v) - u v; Cov(|X|, |Y|) for centred normals with correlation r is
    # (2/pi) sx sy (sqrt(1 - r^2) + r arcsin r - 1).
    low, high = np.minimum.outer(cdf, cdf), np.maximum.outer(cdf, cdf)
    scale = np.outer(sd_at, sd_at)
    r = np.clip(np.divide(low * (1.0 - high), scale, out=np.zeros_like(scale), where=scale > 0), -1.0, 1.0)
    cov = (2.0 / math.pi) * scale * (np.sqrt(1.0 - r**2) + r * np.arcsin(r) - 1.0)
    sd = math.sqrt(max(float(gaps @ cov @ gaps), 0.0))
    return ((mean + z * sd) / max(std, STD_FLOOR) / threshold) ** 2


def run_tests(reference: ReferenceProfile, window: pd.DataFrame, columns: list[ColumnDrift],
               scores: np.ndarray | None, cfg: ModelConfig) -> float | None:
    """Test `columns` (and the scores) of a small window, Holm-corrected together; set each column's verdict.

    Returns the scores' Holm-adjusted p-value (None: not tested).
    """
    from scipy.stats import ks_2samp

    alpha = cfg.monitoring.drift.small_sample_alpha
    family: list[ColumnDrift] = []
    p_values: list[float] = []
    for column in columns:
        column.decided_by = "test"
        if not math.isfinite(column.effect):
            continue  # every value missing: drifted already, nothing to test
        column.test, column.p_value = _column_test(reference, window[column.column], column)
        family.append(column)
        p_values.append(column.p_value)
    if scores is not None and _multiclass(cfg):  # predicted class indices: their counts
        p_values.append(class_p_value(reference.scores, scores))
    elif scores is not None:
        p_values.append(float(ks_2samp(scores, reference.scores).pvalue))
    adjusted = _holm(p_values)
    for column, p in zip(family, adjusted, strict=False):
        column.p_adjusted = p
        column.drifted = bool(p <= alpha)
    return adjusted[-1] if scores is not None else None


def _multiclass(cfg: ModelConfig) -> bool:
    from autopilot.config import Task

    return cfg.task is Task.MULTICLASS_CLASSIFICATION


def _column_test(reference: ReferenceProfile, column: pd.Series, c: ColumnDrift) -> tuple[str, float]:
    """The small-sample test of one column: (`ks` or `chi2`, p-value). Missing values are left out."""
    from scipy.stats import ks_2samp

    if c.kind == "numeric":
        finite = finite_values(column, c.column, "window")
        ref_values, ref_counts = reference.values_and_counts(c.column)
        values, counts = distinct(finite)
        keys = np.union1d(ref_values, values)
        if keys.size <= FEW_VALUES:  # (nearly) binary numeric: counts per value, as Evidently's chi-squared
            return "chi2", chi2_p(_counts_on(keys, ref_values, ref_counts), _counts_on(keys, values, counts))
        return "ks", float(ks_2samp(finite, np.repeat(ref_values, ref_counts)).pvalue)
    found, _ = category_counts(column)
    shares = reference.categories[c.column]
    names = sorted((set(shares) - {MISSING}) | set(found))
    ref_counts = np.array([round(shares.get(k, 0.0) * reference.rows) for k in names], dtype=float)
    return "chi2", chi2_p(ref_counts, np.array([found.get(k, 0) for k in names], dtype=float))


def _counts_on(keys: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.zeros(keys.size)
    out[np.searchsorted(keys, values)] = counts
    return out


def chi2_p(reference: np.ndarray, window: np.ndarray) -> float:
    """Chi-squared test of homogeneity of two count vectors, the sparse categories pooled.

    The chi-squared test is valid when every cell expects at least `MIN_EXPECTED` counts (in the
    smaller sample); categories that expect fewer are pooled into one cell. When that pooled
    cell still expects too few (rare categories, or one new in the window), it is tested on its
    own with Fisher's exact test (pooled cell against the rest), and the two p-values are
    combined by Bonferroni (twice the smaller): merging it into a common category instead would
    hide a new category's rows among that category's. One cell: no evidence (p = 1).
    """
    from scipy.stats import chi2_contingency, fisher_exact

    keep = (reference + window) > 0
    reference, window = reference[keep], window[keep]
    smaller = min(reference.sum(), window.sum())
    if smaller <= 0 or reference.size < 2:
        return 1.0
    expected = (reference + window) * smaller / (reference.sum() + window.sum())
    sparse = expected < MIN_EXPECTED
    pooled_ref, pooled_win = float(reference[sparse].sum()), float(window[sparse].sum())
    dense_ref, dense_win = reference[~sparse], window[~sparse]
    p_values = []
    if sparse.any() and float(expected[sparse].sum()) >= MIN_EXPECTED:
        dense_ref, dense_win = np.append(dense_ref, pooled_ref), np.append(dense_win, pooled_win)
    elif sparse.any():
        table = [[pooled_ref, reference.sum() - pooled_ref], [pooled_win, window.sum() - pooled_win]]
        p_values.append(float(fisher_exact(np.array(table, dtype=np.int64)).pvalue))
    if dense_ref.size >= 2:
        p_values.append(float(chi2_contingency(np.vstack([dense_ref, dense_win]), correction=False).pvalue))
    if not p_values:
        return 1.0
    return min(1.0, len(p_values) * min(p_values))


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    count = len(p_values)
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
