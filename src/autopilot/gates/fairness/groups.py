"""Fairness groups: how a sensitive attribute (or an intersection of several) splits rows.

A categorical sensitive attribute groups rows by category. A numeric one is binned: by the edges
in `gates.fairness.bins`, else into `quantile_bins` quantile bins of the training data (the
holdout when the gate gets no training data), merged with neighbours until each bin holds at
least `min_group_size` rows; a numeric attribute with at most `quantile_bins` distinct values is
grouped by value. `gates.fairness.intersections` adds attributes made of the combinations of two
or more sensitive attributes (`sex=Female & age=25–40`), judged like the others. The edges,
labels and representative values used are in the report.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.reports import json_safe

__all__ = ["MISSING_GROUP", "Grouping", "build_groupings", "single_grouping"]

MISSING_GROUP = "(missing)"


@dataclass(frozen=True)
class Grouping:
    """How one sensitive attribute (or an intersection of several) splits rows into groups.

    `kind`: `categorical` (one group per category), `values` (a numeric attribute with few
    distinct values, one group per value), `bins` (the configured edges), `quantile_bins`, or
    `intersection` (the combinations of `parts`). A bin holds its lower edge: edges [25, 40]
    give `<25`, `25–40`, `>=40`.
    """

    name: str
    kind: str
    columns: tuple[str, ...]
    edges: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    # bin label -> the median of the reference data in that bin (the counterfactual's target value)
    representatives: dict[str, float] = field(default_factory=dict)
    values: tuple[Any, ...] = ()  # kind `values`: the distinct values, substituted as they are
    parts: tuple[Grouping, ...] = ()
    reference: str = "holdout"

    def assign(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's group label (a missing value is a group of its own)."""
        if self.parts:
            labelled = [np.char.add(f"{part.name}=", part.assign(frame).astype(str)) for part in self.parts]
            return np.asarray([" & ".join(row) for row in zip(*labelled, strict=True)], dtype=object).astype(str)
        column = frame[self.columns[0]]
        if self.kind in ("bins", "quantile_bins"):
            return _bin_of(column, self.edges, self.labels)
        return _group_labels(column)

    def substitutions(self, cfg: ModelConfig, X: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
        """(group label, {column: value}) for every group a row can be moved to."""
        if self.parts:
            combos = itertools.product(*(part.substitutions(cfg, X) for part in self.parts))
            return [(" & ".join(f"{part.name}={label}" for part, (label, _) in zip(self.parts, combo, strict=True)),
                     {k: v for _, values in combo for k, v in values.items()}) for combo in combos]
        attr = self.columns[0]
        if self.kind in ("bins", "quantile_bins"):
            return [(label, {attr: self.representatives[label]}) for label in self.labels
                    if label in self.representatives]
        if self.kind == "values":
            return [(str(value), {attr: value}) for value in self.values]
        spec = cfg.features.get(attr)
        categories = list(spec.categories) if spec is not None and spec.categories else sorted(
            str(v) for v in X[attr].dropna().unique())
        return [(category, {attr: category}) for category in categories]

    def describe(self) -> dict[str, Any]:
        """The grouping as report details: kind, edges, labels, representatives."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("bins", "quantile_bins"):
            out.update(edges=list(self.edges), labels=list(self.labels), representatives=dict(self.representatives),
                       reference=self.reference)
        elif self.kind == "values":
            out.update(values=list(self.values), reference=self.reference,
                       note="numeric with few distinct values: one group per value")
        elif self.parts:
            out.update(attributes=list(self.columns), parts={p.name: p.describe() for p in self.parts})
        return json_safe(out)


def build_groupings(cfg: ModelConfig, X: pd.DataFrame, reference: pd.DataFrame | None = None) -> list[Grouping]:
    """The groupings of every sensitive attribute, then of every configured intersection.

    Args:
        cfg: the model config (`sensitive_attributes`, `gates.fairness`).
        X: the holdout the gate judges (quantile bins are merged until each holds
            `min_group_size` of its rows, too).
        reference: where quantile edges and bin medians come from (the training data); X when None.
    """
    singles = {attr: single_grouping(attr, cfg, X, reference) for attr in cfg.sensitive_attributes}
    out = list(singles.values())
    for entry in cfg.gates.fairness.intersections:
        out.append(Grouping(name=" & ".join(entry), kind="intersection", columns=tuple(entry),
                            parts=tuple(singles[attr] for attr in entry)))
    return out


def single_grouping(attr: str, cfg: ModelConfig, X: pd.DataFrame, reference: pd.DataFrame | None) -> Grouping:
    """The grouping of one sensitive attribute: by category, by value, or in bins (see the module docstring)."""
    spec = cfg.features.get(attr)
    if spec is None or spec.type != "numeric":
        return Grouping(name=attr, kind="categorical", columns=(attr,))
    fc = cfg.gates.fairness
    # The training data when it has values for the attribute, else the holdout.
    frame, source = X, "holdout"
    if reference is not None and attr in reference.columns and reference[attr].notna().any():
        frame, source = reference, "train"
    ref = pd.to_numeric(frame[attr])
    ref_values = ref.dropna().to_numpy(dtype=float)
    if attr in fc.bins:
        edges = tuple(float(e) for e in fc.bins[attr])
        return _binned(attr, "bins", edges, ref_values, source)
    distinct = np.unique(ref_values)
    if len(distinct) <= fc.quantile_bins:
        # So few values are categories already (a 0/1 flag, a 1-3 rating): binning would only merge them.
        values = tuple(v.item() for v in np.unique(ref.dropna().to_numpy()))
        return Grouping(name=attr, kind="values", columns=(attr,), values=values, reference=source)
    hold_values = pd.to_numeric(X[attr]).dropna().to_numpy(dtype=float)
    edges = _quantile_edges(ref_values, hold_values, fc.quantile_bins, fc.min_group_size)
    return _binned(attr, "quantile_bins", edges, ref_values, source)


def _quantile_edges(ref: np.ndarray, holdout: np.ndarray, bins: int, min_rows: int) -> tuple[float, ...]:
    """Inner quantile edges of `ref`, merged until every bin holds `min_rows` rows of both arrays.

    The holdout counts too: it is what the gate judges, and a bin too small there is not gated.
    The smallest bin is merged into its smaller neighbour until none is too small (or one is left).
    """
    edges = [float(e) for e in np.unique(np.quantile(ref, [k / bins for k in range(1, bins)]))]

    def counts(values: np.ndarray) -> list[int]:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).tolist()

    while edges:
        size = [min(a, b) for a, b in zip(counts(ref), counts(holdout), strict=True)]
        smallest = int(np.argmin(size))
        if size[smallest] >= min_rows:
            break
        if smallest == 0:
            other = 1
        elif smallest == len(size) - 1:
            other = smallest - 1
        else:
            other = smallest - 1 if size[smallest - 1] <= size[smallest + 1] else smallest + 1
        del edges[min(smallest, other)]  # the edge between the two bins
    return tuple(edges)


def _binned(attr: str, kind: str, edges: tuple[float, ...], ref: np.ndarray, source: str) -> Grouping:
    labels = _bin_labels(edges)
    index = np.searchsorted(np.asarray(edges), ref, side="right")
    # A bin without reference rows has no typical value: it is no counterfactual target.
    representatives = {labels[i]: float(np.median(ref[index == i])) for i in range(len(labels)) if (index == i).any()}
    return Grouping(name=attr, kind=kind, columns=(attr,), edges=edges, labels=labels,
                    representatives=representatives, reference=source)


def _bin_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    if not edges:
        return ("all",)
    text = [f"{e:.6g}" for e in edges]
    if len(set(text)) < len(text):  # edges closer than 6 significant digits: print them in full
        text = [repr(e) for e in edges]
    inner = [f"{low}–{high}" for low, high in zip(text, text[1:], strict=False)]
    return (f"<{text[0]}", *inner, f">={text[-1]}")


def _bin_of(column: pd.Series, edges: tuple[float, ...], labels: tuple[str, ...]) -> np.ndarray:
    values = pd.to_numeric(column).to_numpy(dtype=float)
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    out = np.asarray(labels, dtype=object)[np.minimum(index, len(labels) - 1)]
    out[np.isnan(values)] = MISSING_GROUP
    return out.astype(str)


def _group_labels(column: pd.Series) -> np.ndarray:
    """Group names as strings; a missing value is a group of its own."""
    return np.asarray(column.astype(object).where(column.notna(), MISSING_GROUP).astype(str))
