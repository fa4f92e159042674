"""Importance rankings: features by mean |SHAP|, the top-k shares, and nDCG@k between two rankings."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ndcg_at_k", "ranked", "top_shares"]


def ranked(importance: dict[str, float]) -> list[str]:
    """Feature names by importance, largest first (ties keep the given order)."""
    order = {name: i for i, name in enumerate(importance)}
    return sorted(importance, key=lambda name: (-_finite_or_zero(importance[name]), order[name]))


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def top_shares(shares: dict[str, float], k: int) -> list[dict[str, Any]]:
    """The k largest shares as {"feature", "share"}, largest first (ties keep the given order; NaN counts as 0)."""
    return [{"feature": name, "share": shares[name]} for name in ranked(shares)[:k]]


def ndcg_at_k(reference: dict[str, float], candidate: dict[str, float], k: int) -> float:
    """nDCG@k of the candidate's importance ranking, with the reference importance as relevance.

    Graded relevance of a feature = its reference importance divided by the reference total
    (features the reference lacks, and negative or non-finite values, count as 0; the
    normalization cancels in the ratio). DCG@k = sum over the candidate's top-k features, at
    1-based rank i, of relevance / log2(i + 1); IDCG@k is the same sum over the reference's own
    top-k. nDCG = DCG / IDCG, in [0, 1]: 1.0 when the candidate's top-k order matches the
    reference's (ties aside), lower the more importance the candidate's top-k misplaces or
    leaves out. k is capped at the number of features. NaN when the reference carries no
    importance at all (nothing to rank against).

    Example: reference a=3, b=2, c=1; candidate order b, a, c; k=2:
    DCG = 2/1 + 3/log2(3) = 3.893, IDCG = 3/1 + 2/log2(3) = 4.262, nDCG = 0.913.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    gains = {name: max(_finite_or_zero(float(v)), 0.0) for name, v in reference.items()}
    total = sum(gains.values())
    if total <= 0:
        return math.nan
    gains = {name: v / total for name, v in gains.items()}
    names = list(dict.fromkeys([*candidate, *reference]))
    k = min(k, len(names))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = ranked({name: float(candidate.get(name, -math.inf)) for name in names})[:k]
    dcg = float(sum(gains.get(name, 0.0) * d for name, d in zip(top, discounts, strict=True)))
    ideal = sorted(gains.values(), reverse=True)[:k] + [0.0] * max(0, k - len(gains))
    idcg = float(sum(g * d for g, d in zip(ideal, discounts, strict=True)))
    return min(1.0, dcg / idcg)
