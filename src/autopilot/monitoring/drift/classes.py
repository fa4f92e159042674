"""Drift of a multiclass model's predicted class distribution: the window's predicted classes
against the reference's, as a categorical column.

A multiclass model's "scores" in the drift check are the predicted classes' indices in class
order (the reference's from the champion's predictions on its training rows, the window's from
the inference log). Large windows are decided by the Jensen-Shannon distance of the two class
distributions against `categorical_threshold` (what a categorical feature is held to); small
windows by the chi-squared test of the class counts (sparse classes pooled, `chi2_p`) inside the
window's Holm family with the column tests, at `small_sample_alpha`. `class_rows` gives the
noise-only rule `large_sample_rows` uses for them (8 n_eff JS^2 ~ chi-squared, k-1 degrees of freedom).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autopilot.monitoring.drift.columns import distinct
from autopilot.monitoring.drift.effects import js_distance

__all__ = ["class_counts", "class_effect", "class_p_value", "class_rows", "class_shift_words"]


def class_counts(reference: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class indices seen on either side, their reference counts, their window counts)."""
    ref_values, ref_counts = distinct(np.asarray(reference, dtype=np.float64))
    values, counts = distinct(np.asarray(window, dtype=np.float64))
    keys = np.union1d(ref_values, values)
    ref = np.zeros(keys.size)
    win = np.zeros(keys.size)
    ref[np.searchsorted(keys, ref_values)] = ref_counts
    win[np.searchsorted(keys, values)] = counts
    return keys, ref, win


def class_effect(reference: np.ndarray, window: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between the two predicted class distributions."""
    _, ref, win = class_counts(reference, window)
    return js_distance(ref, win) if ref.sum() > 0 and win.sum() > 0 else 0.0


def class_p_value(reference: np.ndarray, window: np.ndarray) -> float:
    """Chi-squared test of homogeneity of the class counts (sparse classes pooled)."""
    from autopilot.monitoring.drift.small_sample import chi2_p

    _, ref, win = class_counts(reference, window)
    return chi2_p(ref, win)


def class_rows(reference: np.ndarray, threshold: float, level: float) -> float:
    """The n_eff at which noise alone reaches the Jensen-Shannon threshold with probability about `level`."""
    from scipy.stats import chi2

    k = distinct(np.asarray(reference, dtype=np.float64))[0].size
    return float(chi2.isf(level, k - 1)) / (8.0 * threshold**2) if k > 1 else 0.0


def class_shift_words(reference: np.ndarray, window: np.ndarray, classes: Sequence[str] | None, top: int = 3) -> str:
    """The classes whose predicted share moved most, in words (`high 33% -> 52%`)."""
    keys, ref, win = class_counts(reference, window)
    if ref.sum() <= 0 or win.sum() <= 0:
        return ""
    before, after = ref / ref.sum(), win / win.sum()
    order = np.argsort(-np.abs(after - before), kind="stable")[:top]
    names = list(classes or [])

    def name(index: float) -> str:
        i = int(index)
        return str(names[i]) if 0 <= i < len(names) else f"class {i}"

    return ", ".join(f"{name(keys[j])} {before[j]:.0%} -> {after[j]:.0%}" for j in order)
