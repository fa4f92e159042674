"""What the gates share about judging a bootstrap interval against a bound.

A gated interval is `pass`, `fail` or `inconclusive` (it straddles the bound); `rows_needed`
says how many more holdout rows would settle an inconclusive one at the observed effect. The
quality gate (champion, first-run baselines) and the fairness gate (group metrics) both use it,
so their reasons give the same number for the same interval.
"""

from __future__ import annotations

import math

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "rows_needed"]

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def rows_needed(observed: float, low: float, high: float, bound: float, n: int) -> int | None:
    """More holdout rows that would make an interval straddling `bound` clear it, at the observed effect.

    The interval's half-width on the bound's side shrinks as 1/sqrt(n); it clears the bound once
    it is smaller than |observed - bound|: n' = n (halfwidth / |observed - bound|)^2.

    Returns:
        The additional rows (n' - n, at least 1), or None when the observed effect sits exactly
        on the bound (no number of rows would settle it).
    """
    gap = abs(observed - bound)
    if not math.isfinite(gap) or gap == 0.0:
        return None
    halfwidth = observed - low if observed > bound else high - observed
    # Rounded first: float noise in the interval must not add a row (0.2 / 0.1 is not exactly 2).
    return max(1, math.ceil(round(n * (max(halfwidth, 0.0) / gap) ** 2 - n, 6)))
