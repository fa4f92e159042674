"""The fairness gate: group metrics per sensitive attribute, judged by bootstrap confidence intervals.

Groups. A categorical sensitive attribute groups rows by category. A numeric one is binned:
by the edges in `gates.fairness.bins`, else into `quantile_bins` quantile bins of the training
data (the holdout when the gate gets no training data), merged with neighbours until each bin
holds at least `min_group_size` rows; a numeric attribute with at most `quantile_bins` distinct
values is grouped by value. `gates.fairness.intersections` adds attributes made of the
combinations of two or more sensitive attributes (`sex=Female & age=25–40`), judged like the
others. The edges, labels and representative values used are in the report.

Metrics. For every grouping the gate reports fairlearn's `MetricFrame` by group and, over groups
with at least `min_group_size` rows, the demographic parity ratio and difference and the
equalized odds difference (regression: MAE by group and the worst/best MAE ratio). Each gated
metric is `pass` (its whole confidence interval inside the allowed band), `fail` (wholly
outside) or `inconclusive` (straddling the band's edge); `on_inconclusive` decides whether an
inconclusive metric holds the version for review (default), rejects it, or passes. Groups below
`min_group_size` are reported, not gated; an attribute left with fewer than two gated groups
fails, naming what to set. A counterfactual flip test (move each row to every other group:
another category, or another bin's median) and the SHAP attribution share of the sensitive
attributes are gated too; the label bias already present in the data (pre-training bias) is
reported only. Reasons say who is disadvantaged, by how much and what the labels themselves
show, in plain words, then the metric's technical name.

Bootstrap: groups are resampled separately (a stratified bootstrap keeps every group's size).
For classification every statistic depends only on each group's four confusion cells, so a
group's resample is drawn directly as multinomial cell counts: exactly the row bootstrap's
distribution, at a cost independent of the number of rows.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, mean_absolute_error
from threadpoolctl import threadpool_limits

from autopilot.config import FairnessGateConfig, ModelConfig, Task
from autopilot.gates.intervals import FAIL, INCONCLUSIVE, PASS, rows_needed
from autopilot.modeling.training import predict_scores
from autopilot.reports import GateReport, json_safe

__all__ = ["Grouping", "build_groupings", "counterfactual_flip_rate", "evaluate_fairness", "pretraining_bias"]

GATE = "fairness"
MISSING_GROUP = "(missing)"
# Counterfactual rows: bounds the cost at rows x substitutions predictions per attribute.
MAX_COUNTERFACTUAL_ROWS = 2000
# Regression bootstrap: the replicate x row index block held at once.
CHUNK_CELLS = 2_000_000
# Below this share of defined replicates an interval is not trusted (and not gated).
MIN_VALID_SHARE = 0.5
REPORT_ONLY = "report only"
# Where a reason's plain words take the metric's numbers (replaced, not str.format: group names are data).
NUMBERS = "{numbers}"


# ---------------------------------------------------------------------------- groupings


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
    singles = {attr: _single_grouping(attr, cfg, X, reference) for attr in cfg.sensitive_attributes}
    out = list(singles.values())
    for entry in cfg.gates.fairness.intersections:
        out.append(Grouping(name=" & ".join(entry), kind="intersection", columns=tuple(entry),
                            parts=tuple(singles[attr] for attr in entry)))
    return out


def _single_grouping(attr: str, cfg: ModelConfig, X: pd.DataFrame, reference: pd.DataFrame | None) -> Grouping:
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


# ---------------------------------------------------------------------------- the gate


@dataclass
class _Outcome:
    """What judging one grouping found: hard failures and inconclusive metrics kept apart."""

    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    hard: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)


def evaluate_fairness(
    model: Any,
    X: pd.DataFrame,
    y: pd.Series,
    cfg: ModelConfig,
    attribution_share: dict[str, float] | None = None,
    train: pd.DataFrame | None = None,
    y_train: pd.Series | None = None,
    seed: int = 0,
) -> GateReport:
    """Judge `model` on the holdout (X, y) for every sensitive attribute and intersection of `cfg`.

    Args:
        model: a fitted pipeline taking the canonical feature frame.
        X, y: the holdout features and encoded labels.
        cfg: the model config (`sensitive_attributes`, `gates.fairness`).
        attribution_share: sensitive attribute -> its share of the total mean |SHAP|, from the
            explainability step; None when it was not computed (reported, not a failure).
        train, y_train: the training data: quantile bins and bin medians come from `train`, and
            the pre-training bias report from both (else from X, y).
        seed: the bootstrap seed.

    Returns:
        The report. Inconclusive metrics follow `gates.fairness.on_inconclusive`: `review` fails
        it with `details["requires_review"] = True` when nothing failed outright.

    Never raises: an empty holdout, a missing (or entirely empty) sensitive column, NaN scores or
    attributions, or any error give a failed report with a reason.
    """
    thresholds = json_safe(cfg.gates.fairness.model_dump(mode="json"))
    try:
        # One native thread: the gate's predictions are a few batches of ~10k rows, where OpenMP
        # start-up dominates; on a busy 2-core worker two threads measured ~3x slower than one.
        with threadpool_limits(limits=1):
            return _evaluate(model, X, y, cfg, attribution_share, train, y_train, seed, thresholds)
    except Exception as exc:  # a gate that errors fails closed, with the error as its reason
        return GateReport.failed(GATE, [f"fairness gate errored: {type(exc).__name__}: {exc}"], thresholds=thresholds)


def _evaluate(model: Any, X: pd.DataFrame, y: pd.Series, cfg: ModelConfig, attribution_share: dict[str, float] | None,
              train: pd.DataFrame | None, y_train: pd.Series | None, seed: int,
              thresholds: dict[str, Any]) -> GateReport:
    problems = _input_problems(X, y, cfg)
    if problems:
        return GateReport.failed(GATE, problems, thresholds=thresholds)
    scores = np.asarray(predict_scores(model, X, cfg.task), dtype=float)
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        return GateReport.failed(GATE, [f"{bad} of {len(X)} scores are NaN or infinite"], thresholds=thresholds)
    groupings = build_groupings(cfg, X, train)
    total = _Outcome(details={"holdout_rows": len(X), "attributes": {}})
    if not cfg.sensitive_attributes:
        total.details["note"] = "no sensitive attributes configured: nothing to judge"
    for index, grouping in enumerate(groupings):
        rng = np.random.default_rng([seed, index])  # per attribute: independent of the others' draws
        found = _attribute(model, X, y, scores, grouping, cfg, rng)
        total.metrics.update({f"{grouping.name}.{name}": value for name, value in found.metrics.items()})
        total.details["attributes"][grouping.name] = found.details
        total.hard.extend(found.hard)
        total.unsure.extend(found.unsure)
    share_metrics, total.details["attribution"], share_reasons = _attribution(attribution_share, cfg)
    total.metrics.update(share_metrics)
    total.hard.extend(share_reasons)
    if train is not None and y_train is not None:
        total.details["pretraining_bias"] = {"data": "train", **pretraining_bias(train, y_train, cfg, groupings)}
    else:
        total.details["pretraining_bias"] = {"data": "holdout", **pretraining_bias(X, y, cfg, groupings)}
    return _report(total, cfg.gates.fairness, thresholds)


def _report(total: _Outcome, fc: FairnessGateConfig, thresholds: dict[str, Any]) -> GateReport:
    """Apply `on_inconclusive`: the statuses stay in the details whatever it says."""
    details = total.details
    details["metric_status"] = {
        f"{name}.{'counterfactual_flip_rate' if key == 'counterfactual' else key}": entry["status"]
        for name, attr in details["attributes"].items()
        for key, entry in attr.items() if isinstance(entry, dict) and "status" in entry}
    details["on_inconclusive"] = fc.on_inconclusive
    details["inconclusive"] = total.unsure
    counted = total.unsure if fc.on_inconclusive != "pass" else []
    reasons = total.hard + counted
    # A human decides only when the sole obstacle is evidence too thin to judge.
    details["requires_review"] = fc.on_inconclusive == "review" and bool(total.unsure) and not total.hard
    return GateReport(name=GATE, passed=not reasons, metrics=json_safe(total.metrics), thresholds=thresholds,
                      reasons=reasons, details=json_safe(details))


def _input_problems(X: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> list[str]:
    if len(X) == 0:
        return ["the holdout is empty: nothing to judge fairness on"]
    if len(X) != len(y):
        return [f"the holdout has {len(X)} feature rows but {len(y)} labels"]
    if pd.isna(y).any():
        return [f"the holdout has {int(pd.isna(y).sum())} missing labels"]
    missing = [f"{attr}: the sensitive column is missing from the holdout" for attr in cfg.sensitive_attributes
               if attr not in X.columns]
    # A column with no value at all is as missing: its one "(missing)" group cannot be compared
    # with anything, and the gate would judge nothing.
    empty = [f"{attr}: the sensitive column has no values in the holdout (all {len(X)} missing)"
             for attr in cfg.sensitive_attributes if attr in X.columns and X[attr].isna().all()]
    return missing + empty


def _attribute(model: Any, X: pd.DataFrame, y: pd.Series, scores: np.ndarray, grouping: Grouping, cfg: ModelConfig,
               rng: np.random.Generator) -> _Outcome:
    """Group metrics, their intervals and the counterfactual test for one grouping."""
    fc = cfg.gates.fairness
    groups = grouping.assign(X)
    y_true = np.asarray(y, dtype=float)
    if cfg.task is Task.BINARY_CLASSIFICATION:
        found = _classification(grouping, groups, y_true, scores, fc, rng)
    else:
        found = _regression(grouping, groups, y_true, scores, fc, rng)
    found.details["grouping"] = grouping.describe()
    flips = _flip_rate(model, X, grouping, cfg)
    found.details["counterfactual"] = flips
    rate = flips.get("flip_rate")
    if rate is not None:
        found.metrics["counterfactual_flip_rate"] = rate
        limit = fc.max_counterfactual_flip_rate
        found.details["counterfactual"]["status"] = REPORT_ONLY if limit is None else FAIL if rate > limit else PASS
        if limit is not None and rate > limit:
            found.hard.append(_flip_reason(grouping, flips, rate, limit))
    return found


def _flip_reason(grouping: Grouping, flips: dict[str, Any], rate: float, limit: float) -> str:
    name = grouping.name
    how = " (each row moved to every other bin's median)" if grouping.kind in ("bins", "quantile_bins") else ""
    to = flips.get("flip_rate_to") or {}
    most = max(to, key=lambda k: to[k]) if to else None
    where = f"; most often when set to {most} ({to[most]:.0%})" if most is not None else ""
    return (f"{name}: changing {name}{how} flipped {rate:.0%} of decisions (allowed ≤ {limit:.0%}){where} "
            f"(counterfactual_flip_rate {rate:.3f})")


def _split_groups(groups: np.ndarray, fc: FairnessGateConfig) -> tuple[list[str], dict[str, int]]:
    names, counts = np.unique(groups, return_counts=True)
    gated = [str(g) for g, c in zip(names, counts, strict=True) if c >= fc.min_group_size]
    small = {str(g): int(c) for g, c in zip(names, counts, strict=True) if c < fc.min_group_size}
    return gated, small


def _ungroupable(grouping: Grouping, gated: list[str], small: dict[str, int], fc: FairnessGateConfig,
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


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
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
class _Band:
    """One interval-judged metric's band and how to say it."""

    metric: str
    short: str  # "ratio", "difference", "largest gap"
    minimum: float | None = None
    maximum: float | None = None

    @property
    def bound(self) -> float | None:
        return self.minimum if self.minimum is not None else self.maximum

    @property
    def allowed(self) -> str:
        return f"allowed ≥ {self.minimum:g}" if self.minimum is not None else f"allowed ≤ {self.maximum:g}"


def _judge(found: _Outcome, name: str, band: _Band, value: float, ci: list[float] | None, plain: str,
           confidence: float, rows: int) -> None:
    """Record one metric's status and, unless it passed, the reason in words then its technical name."""
    status = _status(ci, band.minimum, band.maximum)
    entry: dict[str, Any] = {"value": value, "ci": ci, "gated": status != REPORT_ONLY, "status": status}
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


def _pair(rates: dict[str, float], among: list[str]) -> tuple[str, str]:
    """The groups with the lowest and the highest rate (two different groups, even when rates tie)."""
    low = min(among, key=lambda g: rates[g])
    return low, max((g for g in among if g != low), key=lambda g: rates[g])


def _of_groups(among: list[str]) -> str:
    return f" (lowest and highest of {len(among)} groups)" if len(among) > 2 else ""


# ---------------------------------------------------------------------------- classification


def _classification(grouping: Grouping, groups: np.ndarray, y: np.ndarray, scores: np.ndarray,
                    fc: FairnessGateConfig, rng: np.random.Generator) -> _Outcome:
    name = grouping.name
    pred = (scores >= fc.threshold).astype(float)
    gated, small = _split_groups(groups, fc)
    odds_groups, odds_small = _odds_groups(groups, y, gated, fc.min_group_size)
    found = _Outcome(details={"by_group": _by_group_classification(groups, y, pred), "gated_groups": gated,
                              "reported_not_gated": small, "equalized_odds_groups": odds_groups,
                              "equalized_odds_reported_not_gated": odds_small})
    if len(gated) < 2:
        found.details["note"] = f"cannot be judged: fewer than two groups with at least {fc.min_group_size} rows"
        found.hard.append(_ungroupable(grouping, gated, small, fc, len(y)))
        return found
    cells = _bootstrap_cells(groups, y, pred, gated, fc.bootstrap_samples, rng)
    mask = np.isin(groups, gated)
    metrics = found.metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ratio = float(demographic_parity_ratio(y[mask], pred[mask], sensitive_features=groups[mask]))
        # fairlearn gives 0/0 = NaN when no one is selected; that is parity, as in the bootstrap.
        metrics["demographic_parity_ratio"] = 1.0 if math.isnan(ratio) and pred[mask].sum() == 0 else ratio
        metrics["demographic_parity_difference"] = float(
            demographic_parity_difference(y[mask], pred[mask], sensitive_features=groups[mask]))
        if len(odds_groups) >= 2:
            odds = np.isin(groups, odds_groups)
            metrics["equalized_odds_difference"] = float(equalized_odds_difference(
                y[odds], pred[odds], sensitive_features=groups[odds], agg="worst_case"))
    replicates = _replicate_disparities(cells, gated, odds_groups)
    words = _Words(groups, y, pred)
    bands = [_Band("demographic_parity_ratio", "ratio", minimum=fc.demographic_parity_ratio_min),
             _Band("demographic_parity_difference", "difference", maximum=fc.demographic_parity_difference_max),
             _Band("equalized_odds_difference", "largest gap", maximum=fc.equalized_odds_difference_max)]
    for band in bands:
        if band.metric in metrics:
            plain = words.odds(odds_groups) if band.metric == "equalized_odds_difference" else words.selection(gated)
            _judge(found, name, band, metrics[band.metric], _interval(replicates[band.metric], fc.confidence), plain,
                   fc.confidence, len(y))
        elif band.bound is not None:  # equalized odds gated, but too few groups with both label classes
            _odds_too_thin(found, name, band, odds_small, fc.min_group_size)
    return found


def _odds_too_thin(found: _Outcome, name: str, band: _Band, odds_small: dict[str, dict[str, int]],
                   min_size: int) -> None:
    """A gated equalized odds that cannot be measured is inconclusive, never a silent pass."""
    found.details[band.metric] = {"value": None, "ci": None, "gated": True, "status": INCONCLUSIVE,
                                  "rows_needed": None}
    listing = ", ".join(f"{g}: {c['positives']} positive and {c['negatives']} negative" for g, c in odds_small.items())
    found.unsure.append(f"{name}: inconclusive: fewer than two groups hold at least {min_size} positive and "
                        f"{min_size} negative labels ({listing}), so true and false positive rates cannot be "
                        f"compared ({band.metric}); give the holdout more rows or lower gates.fairness.min_group_size")


class _Words:
    """Rates by group in plain words, with the holdout labels' own rates beside them."""

    def __init__(self, groups: np.ndarray, y: np.ndarray, pred: np.ndarray) -> None:
        self.selected: dict[str, float] = {}
        self.label: dict[str, float] = {}
        self.tpr: dict[str, float] = {}
        self.fpr: dict[str, float] = {}
        for group in np.unique(groups):
            g = str(group)
            yg, pg = y[groups == group], pred[groups == group]
            self.selected[g], self.label[g] = float(pg.mean()), float(yg.mean())
            self.tpr[g] = float(pg[yg == 1].mean()) if (yg == 1).any() else math.nan
            self.fpr[g] = float(pg[yg == 0].mean()) if (yg == 0).any() else math.nan

    def labels(self, low: str, high: str) -> str:
        return (f"the labels themselves are positive for {self.label[low]:.0%} of {low} and "
                f"{self.label[high]:.0%} of {high}")

    def selection(self, among: list[str]) -> str:
        """A template with {numbers}: who is selected least (the disadvantaged group) and most."""
        low, high = _pair(self.selected, among)
        return (f"selected {self.selected[low]:.0%} of {low} and {self.selected[high]:.0%} of {high}"
                f"{_of_groups(among)}: {{numbers}}; {self.labels(low, high)}")

    def odds(self, among: list[str]) -> str:
        """A template with {numbers}: true and false positive rates, lowest and highest group, and their gaps."""
        t_low, t_high = _pair(self.tpr, among)
        f_low, f_high = _pair(self.fpr, among)
        t_gap, f_gap = self.tpr[t_high] - self.tpr[t_low], self.fpr[f_high] - self.fpr[f_low]
        low, high = (t_low, t_high) if t_gap >= f_gap else (f_low, f_high)
        return (f"true positive rate (positives selected) {self.tpr[t_low]:.0%} for {t_low} and "
                f"{self.tpr[t_high]:.0%} for {t_high}, gap {t_gap:.2f}; false positive rate (negatives selected) "
                f"{self.fpr[f_low]:.0%} for {f_low} and {self.fpr[f_high]:.0%} for {f_high}, gap {f_gap:.2f}"
                f"{_of_groups(among)}: {{numbers}}; {self.labels(low, high)}")


def _odds_groups(groups: np.ndarray, y: np.ndarray, gated: list[str],
                 min_size: int) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Groups with at least `min_size` positive and `min_size` negative labels.

    A TPR rests on a group's positives and an FPR on its negatives: a group of 150 rows with
    12 positives has a TPR too noisy to gate on, and the max-minus-min spread of noisy rates
    is biased upward. (With no positives at all fairlearn reports TPR 0 and would invent a
    large equalized odds difference.)
    """
    kept: list[str] = []
    small: dict[str, dict[str, int]] = {}
    for group in gated:
        labels = y[groups == group]
        positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
        if positives >= min_size and negatives >= min_size:
            kept.append(group)
        else:
            small[group] = {"positives": positives, "negatives": negatives}
    return kept, small


def _by_group_classification(groups: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division warnings for groups without a label class
        frame = MetricFrame(
            metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                     "false_positive_rate": false_positive_rate, "accuracy": accuracy_score, "count": count},
            y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
        )
        table = frame.by_group
    out: dict[str, Any] = {}
    for group, row in table.to_dict(orient="index").items():
        labels = y[groups == group]
        entry = {name: json_safe(value) for name, value in row.items()}
        entry["count"] = int(row["count"])
        if labels.sum() == 0:  # no positives: a TPR is undefined, not 0
            entry["true_positive_rate"] = None
        if labels.sum() == len(labels):  # no negatives: an FPR is undefined
            entry["false_positive_rate"] = None
        out[str(group)] = entry
    return out


def _bootstrap_cells(groups: np.ndarray, y: np.ndarray, pred: np.ndarray, gated: list[str], samples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Resampled confusion cells (TP, FN, FP, TN) per replicate and group: shape (samples, groups, 4)."""
    out = np.empty((samples, len(gated), 4))
    for j, group in enumerate(gated):
        in_group = groups == group
        yg, pg = y[in_group], pred[in_group]
        cells = np.array([(yg * pg).sum(), (yg * (1 - pg)).sum(), ((1 - yg) * pg).sum(), ((1 - yg) * (1 - pg)).sum()])
        out[:, j, :] = rng.multinomial(int(in_group.sum()), cells / cells.sum(), size=samples)
    return out


def _replicate_disparities(cells: np.ndarray, gated: list[str], odds_groups: list[str]) -> dict[str, np.ndarray]:
    tp, fn, fp, tn = (cells[..., k] for k in range(4))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are handled by _interval
        selection = (tp + fp) / (tp + fn + fp + tn)
        top, bottom = selection.max(axis=1), selection.min(axis=1)
        # Nobody selected in any group is parity (ratio 1), not 0/0.
        ratio = np.where(top > 0, bottom / np.where(top > 0, top, 1.0), 1.0)
        columns = [gated.index(g) for g in odds_groups]
        tpr = (tp / (tp + fn))[:, columns]
        fpr = (fp / (fp + tn))[:, columns]
        spread_tpr = np.nanmax(tpr, axis=1) - np.nanmin(tpr, axis=1) if columns else np.full(len(top), np.nan)
        spread_fpr = np.nanmax(fpr, axis=1) - np.nanmin(fpr, axis=1) if columns else np.full(len(top), np.nan)
        odds = np.fmax(spread_tpr, spread_fpr)
    return {"demographic_parity_ratio": ratio, "demographic_parity_difference": top - bottom,
            "equalized_odds_difference": odds}


# ---------------------------------------------------------------------------- regression


def _regression(grouping: Grouping, groups: np.ndarray, y: np.ndarray, pred: np.ndarray, fc: FairnessGateConfig,
                rng: np.random.Generator) -> _Outcome:
    gated, small = _split_groups(groups, fc)
    frame = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_prediction": _mean_prediction, "mean_target": _mean_target,
                 "count": count},
        y_true=y, y_pred=pred, sensitive_features=pd.Series(groups, name="group"),
    )
    table = frame.by_group.to_dict(orient="index")
    found = _Outcome(details={"by_group": {str(g): {**json_safe(row), "count": int(row["count"])}
                                           for g, row in table.items()},
                              "gated_groups": gated, "reported_not_gated": small})
    if len(gated) < 2:
        found.details["note"] = f"cannot be judged: fewer than two groups with at least {fc.min_group_size} rows"
        found.hard.append(_ungroupable(grouping, gated, small, fc, len(y)))
        return found
    errors = np.abs(y - pred)
    mae = {g: float(errors[groups == g].mean()) for g in gated}
    point = float(_error_ratio(np.array([[mae[g] for g in gated]]))[0])
    found.metrics["group_error_ratio"] = point
    replicates = np.column_stack([_bootstrap_means(errors[groups == g], fc.bootstrap_samples, rng) for g in gated])
    best, worst = _pair(mae, gated)
    target = {g: float(y[groups == g].mean()) for g in (best, worst)}
    plain = (f"mean absolute error {mae[worst]:.3g} for {worst} and {mae[best]:.3g} for {best}{_of_groups(gated)}: "
             f"{{numbers}}; the targets themselves average {target[worst]:.3g} for {worst} and {target[best]:.3g} "
             f"for {best}")
    band = _Band("group_error_ratio", "worst/best MAE ratio", maximum=fc.max_group_error_ratio)
    _judge(found, grouping.name, band, point, _interval(_error_ratio(replicates), fc.confidence), plain,
           fc.confidence, len(y))
    return found


def _mean_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred))


def _mean_target(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true))


def _error_ratio(mae: np.ndarray) -> np.ndarray:
    """Worst over best group MAE per row; NaN (undefined) when the best group's MAE is 0."""
    best, worst = mae.min(axis=1), mae.max(axis=1)
    return np.where(best > 0, worst / np.where(best > 0, best, 1.0), np.nan)


def _bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    chunk = max(1, CHUNK_CELLS // len(values))
    return np.concatenate([values[rng.integers(0, len(values), size=(min(chunk, samples - start), len(values)))]
                          .mean(axis=1) for start in range(0, samples, chunk)])


# ---------------------------------------------------------------------------- counterfactual


def counterfactual_flip_rate(model: Any, X: pd.DataFrame, attribute: str, cfg: ModelConfig,
                             grouping: Grouping | None = None) -> dict[str, Any]:
    """How often moving a row to another group of `attribute` alone changes the model's output.

    Every sampled row (at most `MAX_COUNTERFACTUAL_ROWS`, seeded by `cfg.split.seed`) is
    scored once with each other group's value: each allowed category (`features[attr].categories`,
    else the categories seen in X), or for a binned numeric attribute each other bin's median in
    the reference data. Classification: `flip_rate` is the share of rows whose decision
    (score >= `gates.fairness.threshold`) changes for at least one substitution. Regression:
    `mean_relative_change`, the mean absolute relative change of the prediction (report only).

    Args:
        grouping: how to group the attribute (from `build_groupings`); built from X when None.

    Raises:
        ValueError: when the column is missing or X is empty.
    """
    if attribute not in X.columns:
        raise ValueError(f"{attribute}: the sensitive column is missing")
    if len(X) == 0:
        raise ValueError("no rows to run the counterfactual test on")
    if grouping is None:
        grouping = _single_grouping(attribute, cfg, X, None)
    return _flip_rate(model, X, grouping, cfg)


def _flip_rate(model: Any, X: pd.DataFrame, grouping: Grouping, cfg: ModelConfig) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.split.seed)
    rows = X if len(X) <= MAX_COUNTERFACTUAL_ROWS else X.iloc[np.sort(
        rng.choice(len(X), MAX_COUNTERFACTUAL_ROWS, replace=False))]
    subs = grouping.substitutions(cfg, X)
    result: dict[str, Any] = {"attribute": grouping.name}
    if len(subs) < 2:
        return {**result, "flip_rate": None, "note": "fewer than two groups to substitute"}
    # One batched prediction for all substitutions: per-call overhead dominates small batches.
    variants = pd.concat([rows.assign(**values) for _, values in subs], ignore_index=True)
    task = cfg.task
    base = np.asarray(predict_scores(model, rows, task), dtype=float)
    changed = np.asarray(predict_scores(model, variants, task), dtype=float).reshape(len(subs), len(rows))
    labels = [label for label, _ in subs]
    # A row is moved to every *other* group: a binned row set to its own bin's median is no move.
    other = np.asarray(labels)[:, None] != grouping.assign(rows)[None, :]
    result.update(rows=len(rows), categories=labels)
    if grouping.kind in ("bins", "quantile_bins", "values"):
        result["values"] = {label: values[grouping.columns[0]] for label, values in subs}
    if task is Task.BINARY_CLASSIFICATION:
        threshold = cfg.gates.fairness.threshold
        flips = ((changed >= threshold) != (base >= threshold)) & other
        result.update(flip_rate=float(flips.any(axis=0).mean()),
                      flip_rate_to={c: float(f.mean()) for c, f in zip(labels, flips, strict=True)},
                      mean_abs_score_change=float((np.abs(changed - base) * other).mean()))
    else:
        relative = np.abs(changed - base) / np.maximum(np.abs(base), 1e-12)
        result.update(flip_rate=None, mean_relative_change=float((relative * other).mean()))
    return json_safe(result)


# ---------------------------------------------------------------------------- attribution


def _attribution(share: dict[str, float] | None, cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    limit = cfg.gates.fairness.max_sensitive_attribution_share
    if share is None:
        return {}, {"status": "not provided"}, []
    nan = sorted(k for k, v in share.items() if v is None or not math.isfinite(float(v)))
    if nan:
        return {}, {"status": "NaN attributions", "attributes": nan}, [
            f"NaN attributions for {', '.join(nan)}: the sensitive attribution share cannot be judged"]
    total = float(sum(float(v) for v in share.values()))
    details = {"status": "provided", "by_attribute": {k: float(v) for k, v in share.items()}, "total": total,
               "not_provided": [a for a in cfg.sensitive_attributes if a not in share]}
    reasons = []
    if limit is not None and total > limit:
        reasons.append(f"sensitive attributes ({', '.join(sorted(share))}): sensitive_attribution_share "
                       f"{total:.3f} of total mean |SHAP| is above the allowed {limit:g}")
    return {"sensitive_attribution_share": total}, details, reasons


# ---------------------------------------------------------------------------- pre-training bias


def pretraining_bias(frame: pd.DataFrame, y: pd.Series, cfg: ModelConfig,
                     groupings: list[Grouping] | None = None) -> dict[str, Any]:
    """Label bias already in the data (report only), per sensitive attribute and intersection.

    Classification: the positive label share overall (class imbalance) and per group, the
    largest difference between group positive rates (label proportion difference, over groups
    with at least `min_group_size` rows) and the ratio min/max (the label's own demographic
    parity ratio). Regression: the target mean per group and the largest difference. Groups are
    those of `groupings` (the gate's bins), else built from `frame`.
    """
    labels = np.asarray(y, dtype=float)
    classify = cfg.task is Task.BINARY_CLASSIFICATION
    out: dict[str, Any] = {"rows": len(labels), "attributes": {}}
    if classify:
        out["positive_share"] = float(labels.mean()) if len(labels) else None
    else:
        out["target_mean"] = float(labels.mean()) if len(labels) else None
    present = [a for a in cfg.sensitive_attributes if a in frame.columns]
    if groupings is None:
        sub = cfg.model_copy(update={"sensitive_attributes": present})
        groupings = [g for g in build_groupings(sub, frame) if g.kind != "intersection"] if len(frame) else []
    for attr in cfg.sensitive_attributes:
        if attr not in frame.columns:
            out["attributes"][attr] = {"note": "column missing"}
    for grouping in groupings:
        if all(column in frame.columns for column in grouping.columns):
            out["attributes"][grouping.name] = _label_by_group(grouping.assign(frame), labels, classify, cfg)
    return json_safe(out)


def _label_by_group(groups: np.ndarray, labels: np.ndarray, classify: bool, cfg: ModelConfig) -> dict[str, Any]:
    table = pd.DataFrame({"group": groups, "label": labels}).groupby("group")["label"].agg(["mean", "size"])
    rate_name = "positive_rate" if classify else "target_mean"
    result: dict[str, Any] = {
        "by_group": {str(g): {rate_name: float(r["mean"]), "count": int(r["size"]),
                              "share_of_rows": float(r["size"] / len(labels))} for g, r in table.iterrows()},
    }
    gated = table[table["size"] >= cfg.gates.fairness.min_group_size]["mean"]
    if len(gated) >= 2:
        key = "label_proportion_difference" if classify else "target_mean_difference"
        result[key] = float(gated.max() - gated.min())
        if classify:
            result["label_parity_ratio"] = float(gated.min() / gated.max()) if gated.max() > 0 else None
    return result
