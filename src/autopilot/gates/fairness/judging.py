"""Judging one fairness metric by its bootstrap confidence interval, and saying why in words.

Each gated metric is `pass` (its whole confidence interval inside the allowed band), `fail`
(wholly outside) or `inconclusive` (straddling the band's edge). Reasons say who is
disadvantaged, by how much and what the labels themselves show, in plain words, then the
metric's technical name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopilot.config import FairnessGateConfig
from autopilot.gates.fairness.groups import Grouping
from autopilot.gates.intervals import FAIL, INCONCLUSIVE, PASS, rows_needed

__all__ = ["NUMBERS", "REPORT_ONLY", "Band", "Outcome", "interval", "judge", "of_groups", "pair", "split_groups",
           "ungroupable"]

# Below this share of defined replicates an interval is not trusted (and not gated).
MIN_VALID_SHARE = 0.5
REPORT_ONLY = "report only"
# Where a reason's plain words take the metric's numbers (replaced, not str.format: group names are data).
NUMBERS = "{numbers}"


@dataclass
class Outcome:
    """What judging one grouping found: hard failures and inconclusive metrics kept apart."""

    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    hard: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)


def split_groups(groups: np.ndarray, fc: FairnessGateConfig) -> tuple[list[str], dict[str, int]]:
    """(groups with at least `min_group_size` rows, {smaller group: its row count})."""
    names, counts = np.unique(groups, return_counts=True)
    gated = [str(g) for g, c in zip(names, counts, strict=True) if c >= fc.min_group_size]
    small = {str(g): int(c) for g, c in zip(names, counts, strict=True) if c < fc.min_group_size}
    return gated, small


def ungroupable(grouping: Grouping, gated: list[str], small: dict[str, int], fc: FairnessGateConfig,
                 rows: int) -> str:
    """The reason an attribute cannot be judged, and what to set so that it can."""
    sizes = {**{g: None for g in gated}, **small}
    listing = ", ".join(f"{g}: {n} rows" if n is not None else f"{g}: at least {fc.min_group_size}"
                        for g, n in sizes.items())
    if grouping.kind in ("bins", "quantile_bins", "values"):
        fix = f"set gates.fairness.bins.{grouping.name} to fewer, wider bins, lower gates.fairness.min_group_size"
    elif grouping.kind == "intersection":
        fix = (f"drop or coarsen the gates.fairness.intersections entry {list(grouping.columns)} (e.g. with "
               "gates.fairness.bins), lower gates.fairness.min_group_size")
    else:
        fix = "lower gates.fairness.min_group_size"
    return (f"{grouping.name}: cannot be judged: {len(gated)} of its groups hold at least {fc.min_group_size} of the "
            f"{rows} holdout rows and two are needed ({listing}); {fix}, or give the holdout more rows")


def interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the defined replicates; None when too few are defined."""
    valid = values[np.isfinite(values)]
    if valid.size < MIN_VALID_SHARE * values.size or valid.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(valid, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _status(ci: list[float] | None, minimum: float | None, maximum: float | None) -> str:
    """`pass` inside the band, `fail` wholly outside, `inconclusive` straddling its edge.

    A gated metric whose interval is undefined on this holdout fails closed.
    """
    if minimum is None and maximum is None:
        return REPORT_ONLY
    if ci is None:
        return FAIL
    if minimum is not None:
        return PASS if ci[0] >= minimum else FAIL if ci[1] < minimum else INCONCLUSIVE
    assert maximum is not None
    return PASS if ci[1] <= maximum else FAIL if ci[0] > maximum else INCONCLUSIVE


@dataclass(frozen=True)
class Band:
    """One interval-judged metric's band and how to say it."""

    metric: str
    short: str  # "ratio", "difference", "largest gap"
    minimum: float | None = None
    maximum: float | None = None

    @property
    def bound(self) -> float | None:
        """The band's one edge (its minimum, else its maximum)."""
        return self.minimum if self.minimum is not None else self.maximum

    @property
    def allowed(self) -> str:
        """The band in words ("allowed ≥ 0.8")."""
        return f"allowed ≥ {self.minimum:g}" if self.minimum is not None else f"allowed ≤ {self.maximum:g}"


def judge(found: Outcome, name: str, band: Band, value: float, ci: list[float] | None, plain: str,
           confidence: float, rows: int) -> None:
    """Record one metric's status and, unless it passed, the reason in words then its technical name."""
    status = _status(ci, band.minimum, band.maximum)
    entry: dict[str, Any] = {"value": value, "ci": ci, "gated": status != REPORT_ONLY, "status": status}
    if band.bound is not None:  # the edge applied, so a reader of the record needs no config to judge it
        entry.update(threshold=band.bound, side="min" if band.minimum is not None else "max",
                     confidence=confidence)
    found.details[band.metric] = entry
    if status in (PASS, REPORT_ONLY):
        return
    if ci is None:
        found.hard.append(f"{name}: {band.metric} has no defined {confidence:.0%} CI on this holdout (fails closed)")
        return
    numbers = (f"{band.short} {value:.2f}, {band.allowed}, {confidence:.0%} interval {ci[0]:.2f}–{ci[1]:.2f} "
               f"({band.metric})")
    if status == FAIL:
        found.hard.append(f"{name}: {plain.replace(NUMBERS, numbers)}")
        return
    assert band.bound is not None
    more = rows_needed(value, ci[0], ci[1], band.bound, rows)
    entry["rows_needed"] = more
    tail = (f"about {more:,} more holdout rows ({rows + more:,} in all) would make it conclusive at the observed "
            f"{band.short}" if more is not None else
            f"it cannot become conclusive: the observed {band.short} equals the bound")
    found.unsure.append(f"{name}: inconclusive: {plain.replace(NUMBERS, numbers)}; {tail}")


def pair(rates: dict[str, float], among: list[str]) -> tuple[str, str]:
    """The groups with the lowest and the highest rate (two different groups, even when rates tie)."""
    low = min(among, key=lambda g: rates[g])
    return low, max((g for g in among if g != low), key=lambda g: rates[g])


def of_groups(among: list[str]) -> str:
    """Words saying the two groups named are the extremes of more than two (empty for two)."""
    return f" (lowest and highest of {len(among)} groups)" if len(among) > 2 else ""
