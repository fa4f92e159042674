"""Drift of a window of served traffic against the champion's training reference.

Large windows are decided by effect sizes, not p-values (at thousands of rows a p-value flags
differences nobody would act on); small windows, where effect sizes are mostly sampling noise,
by tests (below). Per column, by `monitoring.drift.methods` (default `auto`):

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

Small windows: effect sizes are biased upward by sampling noise (on Adult, at 200 rows the mean
effect is about 0.1 on five columns, 0.145 for Jensen-Shannon on `native_country`, and about half
of undrifted windows alarm). `large_sample_rows` derives, from the reference (its size and each
column's shape) and the thresholds, the window size from which noise alone crosses any column's
threshold with probability at most `small_sample_alpha` per window (about 970 rows on Adult).
Below it, as Evidently switches to tests for small references, every column is tested: scipy's
two-sample Kolmogorov-Smirnov for numeric columns, chi-squared on the category counts for
categorical ones and numeric ones with at most 5 values (sparse categories pooled; a pool still
too sparse, e.g. a category new in the window, gets Fisher's exact test), with Holm's correction
across the columns and the scores, so the family-wise false-alarm rate is `small_sample_alpha`,
the same rate the threshold was derived for. A column drifted when its adjusted p-value is at
most `small_sample_alpha`; its effect is still reported, and `decided_by` (`effect` or `test`)
says which decided. Calibration on Adult (`tests/unit/test_drift.py`): 1 alarm in 200 undrifted
300-row windows, and +0.5 sd on three important features retrains in 40 of 40 300-row windows.
Below `min_rows` (default 100) nothing is decided: `sufficient` is False and severity `none`.

Policy for many columns: each column carries its importance, the champion's share of SHAP
attribution from the explainability gate (uniform when none is given). `weighted_share` is the
summed importance of the drifted columns, i.e. the share of the model's reasoning that rests
on inputs that moved. Severity compares it with `weighted_share_alert` / `_retrain` /
`severe_weighted_share` (at or above; a weighted share of 0 is always `none`), so a column of
little importance drifting alone, however hard, stays below the thresholds. Sensitive
attributes (`sensitive_attributes`) are the exception for alerts: one that drifted raises the
severity to at least `alert` whatever its SHAP weight (a model that barely uses `age` still
serves a population whose age moved, which fairness results were not measured on); whether it
retrains stays with the weighted share. The prediction scores are checked the same way (normed
Wasserstein against the reference scores, `prediction_threshold`, or a KS test in small
windows); drifted scores raise the severity to at least `alert`.

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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = [
    "MISSING",
    "SEVERITIES",
    "ColumnDrift",
    "DriftResult",
    "ReferenceProfile",
    "build_reference",
    "check_drift",
    "evidently_report",
    "large_sample_rows",
]

MISSING = "__missing__"  # the category key under which missing values are counted
SEVERITIES = ("none", "alert", "retrain", "severe")
STD_FLOOR = 0.001  # Evidently's floor for the reference std that normalizes W1
FEW_VALUES = 5  # numeric columns with at most this many distinct values use Jensen-Shannon (Evidently)
DISCRETE_BINS = 20  # Jensen-Shannon on numeric: per value up to this many reference values (Evidently)
PSI_FLOOR = 1e-4  # Evidently's fill value for empty PSI bins
FORMAT_VERSION = 1
METHOD_LABELS = {"wasserstein": "normed Wasserstein", "jensenshannon": "Jensen-Shannon", "psi": "PSI"}
TEST_LABELS = {"ks": "Kolmogorov-Smirnov", "chi2": "chi-squared"}
# A chi-squared cell should expect at least this many counts (Cochran's rule); sparser categories are pooled.
MIN_EXPECTED = 5.0
W1_GRID = 256  # levels of F on which the no-drift spread of W1 is computed (`large_sample_rows`)
# Our method names as Evidently's stattest names (the same names) for `evidently_report`.
EVIDENTLY_METHODS = {"wasserstein": "wasserstein", "jensenshannon": "jensenshannon", "psi": "psi"}


# ---------------------------------------------------------------------------- the reference


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

    def values_and_counts(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """The column's sorted distinct reference values and their counts."""
        values = self.numeric[column]
        if column in self.counts:
            return values, self.counts[column]
        return _distinct(values)

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
        return cls(features=dict(meta["features"]), numeric=numeric, std={k: float(v) for k, v in meta["std"].items()},
                   categories={k: {c: float(s) for c, s in v.items()} for k, v in meta["categories"].items()},
                   psi_edges=edges, scores=scores, importance={k: float(v) for k, v in meta["importance"].items()},
                   rows=int(meta["rows"]), counts=counts, missing={k: float(v) for k, v in meta["missing"].items()})


def build_reference(frame: pd.DataFrame, scores: np.ndarray | None, cfg: ModelConfig,
                    importance: dict[str, float] | None) -> ReferenceProfile:
    """Summarize the champion's training data and scores once, for every later window check.

    Args:
        frame: the training snapshot, canonical (`data.sources.canonicalize`): numeric features
            as numbers, categorical ones as strings with NaN for missing. Other columns are ignored.
        scores: the champion's prediction scores on reference rows (any rows, e.g. its test
            split); None or empty: no prediction-drift check.
        cfg: the model config (features and their types, `monitoring.drift.bins`).
        importance: SHAP attribution shares per feature from the explainability gate (normalized
            here to sum 1; absent features get 0); None: uniform.

    Raises:
        ValueError: no rows, a feature missing from the frame or entirely missing in it, a
            numeric feature that is not numeric, or an invalid importance.
    """
    features = _feature_kinds(cfg)
    _check_frame(frame, features, "reference")
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
            finite = _finite(frame[name], name, "reference")
            if finite.size == 0:
                raise ValueError(f"reference: column {name!r} has no values (all missing): cannot profile it")
            numeric[name], counts[name] = _distinct(finite)
            std[name] = float(np.std(finite))
            quantiles = np.quantile(np.sort(finite), np.linspace(0.0, 1.0, bins + 1)[1:-1])
            edges[name] = np.unique(quantiles)
            missing[name] = 1.0 - finite.size / rows
        else:
            found, absent = _category_counts(frame[name])
            if not found:
                raise ValueError(f"reference: column {name!r} has no values (all missing): cannot profile it")
            shares = {key: count / rows for key, count in sorted(found.items())}
            if absent:
                shares[MISSING] = absent / rows
            categories[name] = shares
            missing[name] = absent / rows
    reference_scores = np.empty(0) if scores is None else np.asarray(scores, dtype=np.float64).ravel()
    reference_scores = np.sort(reference_scores[np.isfinite(reference_scores)])
    return ReferenceProfile(features=features, numeric=numeric, std=std, categories=categories, psi_edges=edges,
                            scores=reference_scores, importance=_importance(importance, list(features)), rows=rows,
                            counts=counts, missing=missing)


def _feature_kinds(cfg: ModelConfig) -> dict[str, str]:
    return {name: str(spec.type) for name, spec in cfg.features.items()}


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


# ---------------------------------------------------------------------------- the result


@dataclass
class ColumnDrift:
    """One column's drift in one window.

    Attributes:
        column: the feature.
        kind: `numeric` or `categorical`.
        method: `wasserstein`, `jensenshannon` or `psi` (the one actually used).
        effect: the distance (inf when the window has no value in the column).
        threshold: the effect at or above which the column drifted.
        drifted: effect >= threshold (`decided_by` `effect`), or the test's Holm-adjusted p-value
            <= `small_sample_alpha` (`decided_by` `test`).
        importance: the column's share of SHAP attribution.
        missing_share: share of the window's rows missing in the column (not part of the effect).
        decided_by: `effect` (the effect size against its threshold: windows of at least
            `large_sample_rows` rows) or `test` (a smaller window: the test below decided; the
            effect is still reported, for reading).
        test: `ks` (scipy's two-sample Kolmogorov-Smirnov) or `chi2` (chi-squared on the category
            counts, sparse categories pooled); None when the effect decided.
        p_value: the test's p-value (None when the effect decided).
        p_adjusted: the p-value after Holm's correction across the window's tests.
        sensitive: the column is one of `sensitive_attributes` (its drift alone is at least an alert).
    """

    column: str
    kind: str
    method: str
    effect: float
    threshold: float
    drifted: bool
    importance: float
    missing_share: float
    decided_by: str = "effect"
    test: str | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    sensitive: bool = False


@dataclass
class DriftResult:
    """The drift verdict of one window (see the module docstring for the policy).

    Attributes:
        rows: rows in the window.
        sufficient: at least `min_rows` rows; otherwise nothing was decided (severity `none`).
        columns: per-column results (empty when insufficient), config order.
        drifted_share: drifted columns / columns.
        weighted_share: summed importance of the drifted columns.
        prediction_effect: normed Wasserstein distance of the scores (None: not checked).
        prediction_drifted: prediction_effect >= `prediction_threshold`.
        severity: `none`, `alert`, `retrain` or `severe`.
        reasons: human-readable: drifted columns with effect, threshold and importance, then the verdict.
        decided_by: `effect` or `test` (the window was smaller than `large_sample_rows`); None
            when nothing was decided.
        large_sample_rows: the window size from which effect sizes decide, derived from the
            reference (`large_sample_rows`); None: the reference is too small for them, tests decide.
        prediction_p_value: the Holm-adjusted KS p-value of the scores when a test decided them.
        sensitive_drifted: drifted sensitive attributes (each alone raises severity to `alert`).
    """

    rows: int
    sufficient: bool
    columns: list[ColumnDrift]
    drifted_share: float
    weighted_share: float
    prediction_effect: float | None
    prediction_drifted: bool
    severity: str
    reasons: list[str]
    decided_by: str | None = None
    large_sample_rows: int | None = None
    prediction_p_value: float | None = None
    sensitive_drifted: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, most important first."""
        return [c.column for c in sorted(self.columns, key=lambda c: -c.importance) if c.drifted]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (non-finite numbers become None)."""
        out = asdict(self)
        out["columns"] = [{k: _json_number(v) for k, v in column.items()} for column in out["columns"]]
        out["prediction_effect"] = _json_number(self.prediction_effect)
        out["drifted_share"] = _json_number(self.drifted_share)
        out["weighted_share"] = _json_number(self.weighted_share)
        out["drifted_columns"] = self.drifted_columns
        return out


def _json_number(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ---------------------------------------------------------------------------- the check


def check_drift(reference: ReferenceProfile, window: pd.DataFrame, window_scores: np.ndarray | None,
                cfg: ModelConfig) -> DriftResult:
    """Compare one window of served rows (and their scores) with the reference.

    Args:
        reference: from `build_reference` (or `ReferenceProfile.load`).
        window: the served rows, canonical like the reference; extra columns are ignored.
        window_scores: the champion's scores in the window (None: no prediction check). Compared
            as a distribution: they need not be one per window row, but fewer than `min_rows`
            finite scores are not checked (a reason says so).
        cfg: the model config (`monitoring.drift`: methods, thresholds, policy, min_rows, bins).

    Raises:
        ValueError: an empty window, a feature column missing from it, a numeric column that is
            not numeric, a profile built for other features, or a method that does not fit the
            column's type.
    """
    drift = cfg.monitoring.drift
    expected = _feature_kinds(cfg)
    if reference.features != expected:
        raise ValueError("the reference profile was built for other features than the config's "
                         f"(profile {reference.features}, config {expected}): rebuild it")
    _check_frame(window, reference.features, "window")
    rows = len(window)
    large = large_sample_rows(reference, cfg)
    if rows < drift.min_rows:
        return DriftResult(rows=rows, sufficient=False, columns=[], drifted_share=0.0, weighted_share=0.0,
                           prediction_effect=None, prediction_drifted=False, severity="none",
                           reasons=[f"insufficient data: {rows} rows in the window, fewer than min_rows "
                                    f"{drift.min_rows}; no drift decision"], large_sample_rows=large)
    notes: list[str] = []
    sensitive = _sensitive_names(cfg)
    columns = [_column_drift(reference, window[name], name, kind, cfg, notes)
               for name, kind in reference.features.items()]
    for column in columns:
        column.sensitive = column.column in sensitive
    tested = large is None or rows < large
    scores = _window_scores(reference, window_scores, drift.min_rows, notes)
    prediction_effect: float | None = None
    if scores is not None:
        ref_values, ref_counts = _distinct(reference.scores)
        norm = max(float(np.std(reference.scores)), STD_FLOOR)
        prediction_effect = _w1(ref_values, ref_counts, *_distinct(scores)) / norm
    scores_tested = scores is not None and (large is None or scores.size < large)
    prediction_p = _run_tests(reference, window, columns if tested else [], scores if scores_tested else None, cfg)
    if scores_tested:
        prediction_drifted = prediction_p is not None and prediction_p <= drift.small_sample_alpha
    else:
        prediction_drifted = prediction_effect is not None and prediction_effect >= drift.prediction_threshold
    drifted = [c for c in columns if c.drifted]
    weighted = float(sum(c.importance for c in drifted))
    severity = _severity(weighted, cfg)
    sensitive_drifted = [c for c in drifted if c.sensitive]
    reasons = [_column_reason(c) for c in sorted(drifted, key=lambda c: -c.importance)]
    reasons.append(f"importance-weighted share of drifted columns {weighted:.3f} ({len(drifted)} of {len(columns)} "
                   f"columns; alert at {drift.weighted_share_alert:g}, retrain at {drift.weighted_share_retrain:g}, "
                   f"severe at {drift.severe_weighted_share:g})")
    if sensitive_drifted and _below(severity, "alert"):
        # A sensitive attribute that moved is a fairness question whatever the model's reliance on it:
        # alert, so a person looks; whether to retrain stays with the weighted share.
        severity = "alert"
        reasons.append(f"a sensitive attribute drifted ({', '.join(c.column for c in sensitive_drifted)}): "
                       "severity raised to alert")
    if prediction_effect is not None:
        raised = prediction_drifted and _below(severity, "alert")
        if raised:
            severity = "alert"
        reasons.append(_prediction_reason(prediction_effect, prediction_drifted, prediction_p if scores_tested
                                          else None, drift.prediction_threshold, drift.small_sample_alpha, raised))
    if tested:
        notes.append(_tested_note(rows, large, drift.small_sample_alpha))
    reasons.extend(notes)
    reasons.append(f"severity: {severity}")
    return DriftResult(rows=rows, sufficient=True, columns=columns, drifted_share=len(drifted) / len(columns),
                       weighted_share=weighted, prediction_effect=prediction_effect,
                       prediction_drifted=prediction_drifted, severity=severity, reasons=reasons,
                       decided_by="test" if tested else "effect", large_sample_rows=large,
                       prediction_p_value=prediction_p if scores_tested else None,
                       sensitive_drifted=[c.column for c in sensitive_drifted])


def _below(severity: str, level: str) -> bool:
    return SEVERITIES.index(severity) < SEVERITIES.index(level)


def _sensitive_names(cfg: ModelConfig) -> set[str]:
    """Names of the sensitive attributes (entries are names, or objects naming one)."""
    names = set()
    for entry in cfg.sensitive_attributes:
        names.add(entry if isinstance(entry, str) else str(getattr(entry, "name", getattr(entry, "column", entry))))
    return names


def _window_scores(reference: ReferenceProfile, window_scores: np.ndarray | None, min_rows: int,
                   notes: list[str]) -> np.ndarray | None:
    """The window's finite scores when the prediction check can run, else None (with a note why not)."""
    if window_scores is None:
        return None
    # Scores are compared as a distribution, so they need not be row-aligned with the window
    # (e.g. only the champion's rows of a window that also saw the previous version).
    scores = np.asarray(window_scores, dtype=np.float64).ravel()
    finite = scores[np.isfinite(scores)]
    if reference.scores.size == 0:
        notes.append("prediction drift not checked: the reference has no scores")
        return None
    if finite.size < min_rows:
        notes.append(f"prediction drift not checked: {finite.size} finite scores, fewer than min_rows {min_rows}")
        return None
    return finite


def _evidence(c: ColumnDrift) -> str:
    """What decided a drifted column, in words."""
    if c.decided_by == "test" and c.p_value is not None:
        return (f"{TEST_LABELS[c.test or '']} p {c.p_value:.2g} (Holm-adjusted {c.p_adjusted:.2g}) <= alpha; "
                f"{METHOD_LABELS[c.method]} {c.effect:.3f}")
    return f"{METHOD_LABELS[c.method]} {c.effect:.3f} >= {c.threshold:g}"


def _column_reason(c: ColumnDrift) -> str:
    if c.sensitive:
        return (f"{c.column} (sensitive attribute) drifted: {_evidence(c)}; its SHAP weight {c.importance:.2g} "
                "does not hide it")
    return f"{c.column} drifted: {_evidence(c)} (importance {c.importance:.3f})"


def _prediction_reason(effect: float, drifted: bool, p_adjusted: float | None, threshold: float, alpha: float,
                       raised: bool) -> str:
    verb = "drifted" if drifted else "did not drift"
    if p_adjusted is not None:
        sign = "<=" if drifted else ">"
        evidence = f"KS test Holm-adjusted p {p_adjusted:.2g} {sign} {alpha:g} (normed Wasserstein {effect:.3f})"
    else:
        sign = ">=" if drifted else "<"
        evidence = f"normed Wasserstein {effect:.3f} {sign} {threshold:g}"
    return f"prediction scores {verb}: {evidence}" + (" (raises severity to alert)" if raised else "")


def _tested_note(rows: int, large: int | None, alpha: float) -> str:
    size = ("the reference is too small for effect sizes at any window size" if large is None
            else f"{rows} rows, below the large-sample threshold {large} derived from the reference")
    return (f"small window: {size}, so tests decided (two-sample Kolmogorov-Smirnov for numeric columns, "
            f"chi-squared on category counts otherwise; Holm-corrected, family-wise alpha {alpha:g})")


def _severity(weighted: float, cfg: ModelConfig) -> str:
    drift = cfg.monitoring.drift
    if weighted <= 0:
        return "none"
    if weighted >= drift.severe_weighted_share:
        return "severe"
    if weighted >= drift.weighted_share_retrain:
        return "retrain"
    if weighted >= drift.weighted_share_alert:
        return "alert"
    return "none"


def _resolve_method(configured: str, kind: str, name: str) -> str:
    if configured == "auto":
        return "wasserstein" if kind == "numeric" else "jensenshannon"
    if configured == "wasserstein" and kind != "numeric":
        raise ValueError(f"monitoring.drift.methods: {name!r} is categorical; wasserstein needs a numeric column")
    return configured


def _threshold(method: str, cfg: ModelConfig) -> float:
    drift = cfg.monitoring.drift
    return {"wasserstein": drift.numeric_threshold, "jensenshannon": drift.categorical_threshold,
            "psi": drift.psi_threshold}[method]


def _column_drift(reference: ReferenceProfile, column: pd.Series, name: str, kind: str, cfg: ModelConfig,
                  notes: list[str]) -> ColumnDrift:
    rows = len(column)
    configured = cfg.monitoring.drift.methods.get(name, "auto")
    method = _resolve_method(configured, kind, name)
    importance = reference.importance.get(name, 0.0)
    if kind == "numeric":
        finite = _finite(column, name, "window")
        missing_share = 1.0 - finite.size / rows
        ref_values, ref_counts = reference.values_and_counts(name)
        if finite.size == 0:
            effect = math.inf
        else:
            values, counts = _distinct(finite)
            if configured == "auto" and np.union1d(ref_values, values).size <= FEW_VALUES:
                method = "jensenshannon"  # Evidently's choice for (nearly) binary numeric columns
            if method == "wasserstein":
                std = reference.std[name]
                if std < STD_FLOOR:
                    notes.append(f"{name}: reference std {std:.3g} is below {STD_FLOOR:g}, so W1 is divided by "
                                 f"{STD_FLOOR:g} (Evidently's floor): any change of a constant column counts as drift")
                effect = _w1(ref_values, ref_counts, values, counts) / max(std, STD_FLOOR)
            elif method == "jensenshannon":
                effect = _numeric_js(ref_values, ref_counts, values, counts)
            else:
                effect = _numeric_psi(ref_values, ref_counts, reference.missing.get(name, 0.0),
                                      reference.psi_edges[name], values, counts, rows)
    else:
        found, absent = _category_counts(column)
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
    threshold = _threshold(method, cfg)
    return ColumnDrift(column=name, kind=kind, method=method, effect=float(effect), threshold=threshold,
                       drifted=bool(effect >= threshold), importance=float(importance),
                       missing_share=float(missing_share))


# ---------------------------------------------------------------------------- small windows


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
    from scipy.stats import chi2, norm

    drift = cfg.monitoring.drift
    quantities = len(reference.features) + (1 if reference.scores.size else 0)
    level = drift.small_sample_alpha / quantities
    z = float(norm.isf(level))
    needed: list[tuple[float, float]] = []  # (n_eff needed, reference rows)
    for name, kind in reference.features.items():
        configured = drift.methods.get(name, "auto")
        method = _resolve_method(configured, kind, name)
        ref_rows = reference.rows * (1.0 - reference.missing.get(name, 0.0))
        threshold = _threshold(method, cfg)
        if kind == "numeric":
            values, counts = reference.values_and_counts(name)
            if configured == "auto" and values.size <= FEW_VALUES:
                method, threshold = "jensenshannon", drift.categorical_threshold
            if method == "wasserstein":
                n_eff = _w1_rows(values, counts, reference.std[name], threshold, z)
            elif method == "jensenshannon":
                bins = values.size if values.size <= DISCRETE_BINS else math.ceil(math.log2(ref_rows) + 1)
                n_eff = _chi2_rows(chi2, level, bins) / (8.0 * threshold**2)
            else:
                n_eff = _chi2_rows(chi2, level, reference.psi_edges[name].size + 2) / threshold
        else:
            present = len([k for k in reference.categories[name] if k != MISSING])
            if method == "psi":
                n_eff = _chi2_rows(chi2, level, present + 1) / threshold
            else:
                n_eff = _chi2_rows(chi2, level, present) / (8.0 * threshold**2)
        needed.append((n_eff, ref_rows))
    if reference.scores.size:
        values, counts = _distinct(reference.scores)
        std = float(np.std(reference.scores))
        needed.append((_w1_rows(values, counts, std, drift.prediction_threshold, z), float(reference.scores.size)))
    rows = 0
    for n_eff, ref_rows in needed:
        if n_eff >= ref_rows:
            return None
        rows = max(rows, math.ceil(n_eff * ref_rows / (ref_rows - n_eff)))
    return rows


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
    cdf = _cdf_at(values, counts, values[:-1])
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


def _run_tests(reference: ReferenceProfile, window: pd.DataFrame, columns: list[ColumnDrift],
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
    if scores is not None:
        p_values.append(float(ks_2samp(scores, reference.scores).pvalue))
    adjusted = _holm(p_values)
    for column, p in zip(family, adjusted, strict=False):
        column.p_adjusted = p
        column.drifted = bool(p <= alpha)
    return adjusted[-1] if scores is not None else None


def _column_test(reference: ReferenceProfile, column: pd.Series, c: ColumnDrift) -> tuple[str, float]:
    """The small-sample test of one column: (`ks` or `chi2`, p-value). Missing values are left out."""
    from scipy.stats import ks_2samp

    if c.kind == "numeric":
        finite = _finite(column, c.column, "window")
        ref_values, ref_counts = reference.values_and_counts(c.column)
        values, counts = _distinct(finite)
        keys = np.union1d(ref_values, values)
        if keys.size <= FEW_VALUES:  # (nearly) binary numeric: counts per value, as Evidently's chi-squared
            return "chi2", _chi2_p(_counts_on(keys, ref_values, ref_counts), _counts_on(keys, values, counts))
        return "ks", float(ks_2samp(finite, np.repeat(ref_values, ref_counts)).pvalue)
    found, _ = _category_counts(column)
    shares = reference.categories[c.column]
    names = sorted((set(shares) - {MISSING}) | set(found))
    ref_counts = np.array([round(shares.get(k, 0.0) * reference.rows) for k in names], dtype=float)
    return "chi2", _chi2_p(ref_counts, np.array([found.get(k, 0) for k in names], dtype=float))


def _counts_on(keys: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    out = np.zeros(keys.size)
    out[np.searchsorted(keys, values)] = counts
    return out


def _chi2_p(reference: np.ndarray, window: np.ndarray) -> float:
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


# ---------------------------------------------------------------------------- statistics


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (one sort)."""
    distinct, counts = np.unique(values, return_counts=True)
    return distinct, counts


def _cdf_at(values: np.ndarray, counts: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Share of the distribution (values with counts) at or below each point."""
    cumulative = np.concatenate(([0.0], np.cumsum(counts, dtype=np.float64)))
    return cumulative[np.searchsorted(values, points, side="right")] / cumulative[-1]


def _w1(ref_values: np.ndarray, ref_counts: np.ndarray, values: np.ndarray, counts: np.ndarray) -> float:
    """First Wasserstein distance between two weighted samples: the area between their CDFs.

    scipy's `wasserstein_distance` on all values computes the same sum; repeated values only
    add zero-width terms there.
    """
    points = np.union1d(ref_values, values)
    if points.size < 2:
        return 0.0
    gaps = np.diff(points)
    between = points[:-1]
    return float(np.dot(np.abs(_cdf_at(ref_values, ref_counts, between) - _cdf_at(values, counts, between)), gaps))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log), exactly scipy's `jensenshannon` (which Evidently calls)."""
    from scipy.special import rel_entr

    p = p / np.sum(p)
    q = q / np.sum(q)
    m = (p + q) / 2.0
    return float(np.sqrt((np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m))) / 2.0))


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


# ---------------------------------------------------------------------------- reading columns


def _check_frame(frame: pd.DataFrame, features: dict[str, str], side: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{side}: expected a pandas DataFrame, got {type(frame).__name__}")
    absent = [name for name in features if name not in frame.columns]
    if absent:
        raise ValueError(f"{side}: missing feature column(s) {absent}")
    if len(frame) == 0:
        raise ValueError(f"{side}: no rows (empty frame)")


def _finite(column: pd.Series, name: str, side: str) -> np.ndarray:
    """The column's finite values as float64 (missing and +-inf dropped, as Evidently does)."""
    try:
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{side}: column {name!r} is numeric in the config but holds non-numeric values "
                         f"({exc}); canonicalize the frame first") from None
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _category_counts(column: pd.Series) -> tuple[dict[str, int], int]:
    """Count of each present category (as str) and of missing values, by one hash pass."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        tally = np.bincount(codes[codes >= 0], minlength=len(column.cat.categories))
        found = {str(c): int(n) for c, n in zip(column.cat.categories, tally, strict=True) if n}
        return found, int((codes < 0).sum())
    counted = column.value_counts(dropna=True, sort=False)
    found = {}
    for key, count in counted.items():
        found[str(key)] = found.get(str(key), 0) + int(count)
    return found, len(column) - int(counted.sum())


# ---------------------------------------------------------------------------- Evidently


def evidently_report(reference: pd.DataFrame, window: pd.DataFrame, cfg: ModelConfig, out_dir: Path,
                     seed: int = 0) -> dict[str, Any]:
    """Evidently 0.7's `DataDriftPreset` on a sample of both sides, saved as HTML and JSON (for people).

    At most `monitoring.drift.report_max_rows` rows of each side are sampled (seeded), with an
    explicit `DataDefinition` from the config. Methods and thresholds are passed per column as
    `check_drift` resolves them, so the report does not switch to p-value tests when a sample
    has 1,000 rows or fewer. The report is for reading; decisions come from `check_drift` on
    all rows.

    Returns:
        `{"html", "json"}` file paths (str), `evidently_drifted_columns`, `evidently_share`
        (Evidently's share of drifted columns), `methods` (column -> Evidently's method name),
        `values` (column -> Evidently's drift value), and the sampled `rows` of each side.

    Raises:
        ValueError: a side without rows or without a feature column.
    """
    features = _feature_kinds(cfg)
    _check_frame(reference, features, "reference")
    _check_frame(window, features, "window")
    drift = cfg.monitoring.drift
    limit = drift.report_max_rows
    ref = _report_sample(reference, cfg, limit, seed)
    cur = _report_sample(window, cfg, limit, seed + 1)
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for name, kind in features.items():
        configured = drift.methods.get(name, "auto")
        method = _resolve_method(configured, kind, name)
        if configured == "auto" and kind == "numeric":
            together = pd.concat([ref[name], cur[name]]).replace([np.inf, -np.inf], np.nan)
            if together.nunique() <= FEW_VALUES:
                method = "jensenshannon"
        methods[name] = EVIDENTLY_METHODS[method]
        thresholds[name] = _threshold(method, cfg)

    import evidently  # imported here: heavy, and only the report needs it
    from evidently.presets import DataDriftPreset

    definition = evidently.DataDefinition(numerical_columns=cfg.numeric_features,
                                          categorical_columns=cfg.categorical_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        preset = DataDriftPreset(per_column_method=methods, per_column_threshold=thresholds)
        snapshot = evidently.Report([preset]).run(evidently.Dataset.from_pandas(cur, data_definition=definition),
                                                  evidently.Dataset.from_pandas(ref, data_definition=definition))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        html = out_dir / "report.html"
        json_path = out_dir / "report.json"
        snapshot.save_html(str(html))
        snapshot.save_json(str(json_path))
        summary = snapshot.dict()
    values: dict[str, float] = {}
    chosen: dict[str, str] = {}
    drifted: list[str] = []
    share = math.nan
    for metric in summary["metrics"]:
        config = metric.get("config", {})
        metric_type = str(config.get("type", ""))
        if metric_type.endswith("ValueDrift"):
            column = str(config["column"])
            values[column] = float(metric["value"])
            chosen[column] = _evidently_method_name(str(config.get("method")), features[column])
            if values[column] >= float(config.get("threshold", thresholds.get(column, math.inf))):
                drifted.append(column)
        elif metric_type.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return {"html": str(html), "json": str(json_path), "evidently_drifted_columns": drifted,
            "evidently_share": share, "methods": chosen, "values": values,
            "rows": {"reference": len(ref), "window": len(cur)}}


def _evidently_method_name(name: str, kind: str) -> str:
    """Evidently's display name of a method ("wasserstein" -> "Wasserstein distance (normed)")."""
    try:
        from evidently.legacy.calculations.stattests.registry import get_registered_stattest
        from evidently.legacy.core import ColumnType

        column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
        return str(get_registered_stattest(name, column_type).display_name)
    except Exception:  # a display name is cosmetic: an unknown name or a moved module keeps the raw one
        return name


def _report_sample(frame: pd.DataFrame, cfg: ModelConfig, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows (seeded), the feature columns only, numeric ones as float64."""
    sample = frame.sample(limit, random_state=seed) if len(frame) > limit else frame
    out = sample.loc[:, list(cfg.features)].reset_index(drop=True)
    for name in cfg.numeric_features:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    return out
