"""The reference a window is compared with: the champion's training data, summarized once.

Cost: the reference is summarized once per champion (`build_reference`, stored with
`ReferenceProfile.save`), as the sorted distinct values with their counts (exactly the same W1
as all sorted values) and the category shares. A window check is one vectorized pass per column
(a sort for numeric columns, a hash count for categorical ones), no per-row Python:
`bench/drift.py` measures it against Evidently's `DataDriftPreset`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.columns import (
    MISSING,
    category_counts,
    check_frame,
    distinct,
    feature_kinds,
    finite_values,
)
from autopilot.monitoring.drift.multivariate import MultivariateReference, fit_multivariate

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["ReferenceProfile", "build_reference"]

FORMAT_VERSION = 1


@dataclass
class ReferenceProfile:
    """Everything a window check needs from the champion's training data, computed once.

    Attributes:
        features: column name -> `numeric` or `categorical` (config order).
        numeric: numeric column -> its sorted distinct reference values (missing and infinite
            values dropped). With `counts` these are a compact exact form of all sorted values
            (the same W1); without a column in `counts`, the array is all sorted values.
        std: numeric column -> the reference's population standard deviation (ddof 0, as Evidently).
        categories: categorical column -> category -> share of all reference rows; missing
            values are counted under `MISSING`.
        psi_edges: numeric column -> inner edges of the `bins` reference-quantile PSI bins
            (duplicates removed; bins are right-closed).
        scores: the sorted reference prediction scores (empty: no prediction check).
        importance: column -> share of SHAP attribution (sums to 1 over the features).
        rows: reference rows.
        counts: numeric column -> how often each value of `numeric` occurs.
        missing: column -> share of reference rows missing (or infinite) in it.
        multivariate: the fitted PCA reconstruction check (`multivariate`); None: disabled, too
            few rows, or a profile stored before it existed.
    """

    features: dict[str, str]
    numeric: dict[str, np.ndarray]
    std: dict[str, float]
    categories: dict[str, dict[str, float]]
    psi_edges: dict[str, np.ndarray]
    scores: np.ndarray
    importance: dict[str, float]
    rows: int
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, float] = field(default_factory=dict)
    multivariate: MultivariateReference | None = None

    def values_and_counts(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """The column's sorted distinct reference values and their counts."""
        values = self.numeric[column]
        if column in self.counts:
            return values, self.counts[column]
        return distinct(values)

    def save(self, path: Path) -> None:
        """Write the profile to one `.npz` file (arrays, plus the rest as JSON), atomically.

        The file is read with `ReferenceProfile.load`; it holds no pickled objects.
        """
        path = Path(path)
        meta = {"format": FORMAT_VERSION, "features": self.features, "std": self.std,
                "categories": self.categories, "importance": self.importance, "rows": self.rows,
                "missing": self.missing, "numeric_columns": list(self.numeric),
                "counted": [c for c in self.numeric if c in self.counts], "psi_columns": list(self.psi_edges)}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta)),
                                         "scores": np.asarray(self.scores, dtype=np.float64)}
        for i, column in enumerate(self.numeric):
            arrays[f"values_{i}"] = np.asarray(self.numeric[column], dtype=np.float64)
            if column in self.counts:
                arrays[f"counts_{i}"] = np.asarray(self.counts[column], dtype=np.int64)
        for i, column in enumerate(self.psi_edges):
            arrays[f"edges_{i}"] = np.asarray(self.psi_edges[column], dtype=np.float64)
        if self.multivariate is not None:  # optional keys: older readers ignore them, older files lack them
            mv_meta, mv_arrays = self.multivariate.to_stored()
            meta["multivariate"] = mv_meta
            arrays["meta"] = np.array(json.dumps(meta))
            arrays.update({f"mv_{k}": v for k, v in mv_arrays.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written next to the target and renamed: a reader never sees half a profile.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        """Read a profile written by `save`.

        Raises:
            ValueError: the file is not a reference profile of a known format.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            if "meta" not in data.files:
                raise ValueError(f"{path}: not a drift reference profile (no metadata)")
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: reference profile format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            numeric = {c: data[f"values_{i}"] for i, c in enumerate(meta["numeric_columns"])}
            counted = set(meta["counted"])
            counts = {c: data[f"counts_{i}"] for i, c in enumerate(meta["numeric_columns"]) if c in counted}
            edges = {c: data[f"edges_{i}"] for i, c in enumerate(meta["psi_columns"])}
            scores = data["scores"]
            multivariate = None
            if "multivariate" in meta:
                multivariate = MultivariateReference.from_stored(
                    meta["multivariate"], {k.removeprefix("mv_"): data[k] for k in data.files if k.startswith("mv_")})
        return cls(features=dict(meta["features"]), numeric=numeric, std={k: float(v) for k, v in meta["std"].items()},
                   categories={k: {c: float(s) for c, s in v.items()} for k, v in meta["categories"].items()},
                   psi_edges=edges, scores=scores, importance={k: float(v) for k, v in meta["importance"].items()},
                   rows=int(meta["rows"]), counts=counts, missing={k: float(v) for k, v in meta["missing"].items()},
                   multivariate=multivariate)


def build_reference(frame: pd.DataFrame, scores: np.ndarray | None, cfg: ModelConfig,
                    importance: dict[str, float] | None) -> ReferenceProfile:
    """Summarize the champion's training data and scores once, for every later window check.

    Args:
        frame: the training snapshot, canonical (`data.sources.canonicalize`): numeric features
            as numbers, categorical ones as strings with NaN for missing. Other columns are ignored.
        scores: the champion's prediction scores on reference rows (any rows, e.g. its test
            split); None or empty: no prediction-drift check.
        cfg: the model config (features and their types, `monitoring.drift.bins`, and
            `monitoring.drift.multivariate`: the PCA reconstruction check is fitted here too).
        importance: SHAP attribution shares per feature from the explainability gate (normalized
            here to sum 1; absent features get 0); None: uniform.

    Raises:
        ValueError: no rows, a feature missing from the frame or entirely missing in it, a
            numeric feature that is not numeric, or an invalid importance.
    """
    features = feature_kinds(cfg)
    check_frame(frame, features, "reference")
    rows = len(frame)
    bins = cfg.monitoring.drift.bins
    numeric: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    std: dict[str, float] = {}
    edges: dict[str, np.ndarray] = {}
    categories: dict[str, dict[str, float]] = {}
    missing: dict[str, float] = {}
    for name, kind in features.items():
        if kind == "numeric":
            finite = finite_values(frame[name], name, "reference")
            if finite.size == 0:
                raise ValueError(f"reference: column {name!r} has no values (all missing): cannot profile it")
            numeric[name], counts[name] = distinct(finite)
            std[name] = float(np.std(finite))
            quantiles = np.quantile(np.sort(finite), np.linspace(0.0, 1.0, bins + 1)[1:-1])
            edges[name] = np.unique(quantiles)
            missing[name] = 1.0 - finite.size / rows
        else:
            found, absent = category_counts(frame[name])
            if not found:
                raise ValueError(f"reference: column {name!r} has no values (all missing): cannot profile it")
            shares = {key: count / rows for key, count in sorted(found.items())}
            if absent:
                shares[MISSING] = absent / rows
            categories[name] = shares
            missing[name] = absent / rows
    reference_scores = np.empty(0) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
    reference_scores = np.sort(reference_scores[np.isfinite(reference_scores)])
    multivariate = fit_multivariate(frame, features, cfg) if cfg.monitoring.drift.multivariate.enabled else None
    return ReferenceProfile(features=features, numeric=numeric, std=std, categories=categories, psi_edges=edges,
                            scores=reference_scores, importance=_importance(importance, list(features)), rows=rows,
                            counts=counts, missing=missing, multivariate=multivariate)


def _importance(given: dict[str, float] | None, features: list[str]) -> dict[str, float]:
    if given is None:
        return {name: 1.0 / len(features) for name in features}
    unknown = sorted(set(given) - set(features))
    if unknown:
        raise ValueError(f"importance names columns that are not features: {unknown}")
    values = {name: float(given.get(name, 0.0)) for name in features}
    bad = {k: v for k, v in values.items() if not math.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"importance must be finite and >= 0, got {bad}")
    total = sum(values.values())
    if total <= 0:
        return {name: 1.0 / len(features) for name in features}
    return {name: value / total for name, value in values.items()}
