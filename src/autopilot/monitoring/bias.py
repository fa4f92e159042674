"""Bias drift: a window's fairness metrics by group against the values recorded when the champion was promoted.

The fairness gate stores, per sensitive attribute (and intersection), each group's row count,
label counts, selection rate, true and false positive rates (`gates/fairness.json` on the
version's run, `details.attributes.<name>.by_group`) and how the attribute was grouped. Each
monitoring window groups its served rows the same way and compares:

- label-free, in every window with `monitoring.bias.min_rows` served rows: each group's
  selection rate (the share predicted positive, at the gate's threshold) and the demographic
  parity difference (highest minus lowest selection rate);
- labeled, once `min_labeled_rows` rows carry labels (from /feedback or the labels source):
  each group's true and false positive rates and the equalized odds difference (the larger
  spread of the two).

A group's rate is compared only when both sides hold `min_group_rows` rows in its denominator.
The interval of a rate's change is Newcombe's hybrid score interval (two Wilson intervals: good
coverage at small counts, unlike the Wald interval); a disparity's change is bootstrapped from
each side's confusion cells (`gates.fairness.metrics.replicate_disparities`, the gate's own
replicate formula). Every interval is at `confidence` Bonferroni-corrected over all the window's
comparisons, so a window with many groups does not alarm more often. A change is flagged only
when it is significant (its interval excludes 0) and material (|change| >= `min_effect`).

A multiclass model is compared one class at a time, one-vs-rest, as its gate judged it: the gate
records each class of each attribute as an attribute of its own (`sex [class high]`, with
`class` set), and for class k a row is selected when its predicted (most probable) class is k
and positive when its label is k (`bias_views.WindowViews.of`); the comparisons above then run
unchanged per class, every class in the one Bonferroni family, and keys and reasons name the
class (`sex=Female [class high].true_positive_rate`, `TPR of class high for sex=Female`). A
regression model compares each group's mean prediction and MAE, and the worst/best MAE ratio,
with a material floor relative to the promoted value (`bias_regression`).

Pure: the caller reads the gate report and the inference log (`window_bias` takes both as
given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from autopilot.config import ModelConfig, Task
from autopilot.gates.fairness.groups import Grouping
from autopilot.gates.fairness.judging import interval
from autopilot.gates.fairness.metrics import replicate_disparities
from autopilot.modeling.multiclass import label_text
from autopilot.monitoring.bias_views import logged_classes, window_views
from autopilot.outages import is_outage
from autopilot.reports import json_safe

__all__ = ["NO_RECORD", "BiasComparison", "BiasDrift", "GroupCounts", "PendingComparison", "attribute_of",
           "check_bias_drift", "failed", "grouping_from", "judge", "newcombe", "not_checked", "stopped",
           "too_few_rows", "window_bias"]

RATES = {"selection_rate": "selection rate", "true_positive_rate": "TPR", "false_positive_rate": "FPR"}
DISPARITIES = {"demographic_parity_difference": "demographic parity difference",
               "equalized_odds_difference": "equalized odds difference"}
# Regression (`bias_regression`): per group, and the attribute's worst/best MAE ratio.
REGRESSION = {"mae": "MAE", "mean_prediction": "mean prediction", "group_error_ratio": "worst/best MAE ratio"}


@dataclass(frozen=True)
class GroupCounts:
    """One group's confusion counts; `positives`, `tp`, `fp` are None when labels are unknown."""

    rows: int
    selected: int
    positives: int | None = None
    tp: int | None = None
    fp: int | None = None

    @property
    def negatives(self) -> int | None:
        """Rows with a negative label."""
        return None if self.positives is None else self.rows - self.positives

    def rate(self, metric: str) -> tuple[int, int] | None:
        """(successes, denominator) of `metric`, or None when it is undefined here."""
        if metric == "selection_rate":
            return self.selected, self.rows
        if self.positives is None or self.tp is None or self.fp is None:
            return None
        if metric == "true_positive_rate":
            return self.tp, self.positives
        return self.fp, self.rows - self.positives

    def cells(self) -> np.ndarray:
        """(TP, FN, FP, TN); without labels every row counts as a negative, which keeps the selection rate."""
        if self.positives is None or self.tp is None or self.fp is None:
            return np.array([0.0, 0.0, self.selected, self.rows - self.selected])
        return np.array([self.tp, self.positives - self.tp, self.fp, self.rows - self.positives - self.fp], float)


@dataclass
class BiasComparison:
    """One metric of one group (or one disparity of an attribute): at promotion, in the window, the change."""

    attribute: str
    group: str | None
    metric: str
    promoted: float
    window: float
    promoted_rows: int
    window_rows: int
    diff: float = math.nan
    ci: list[float] | None = None
    significant: bool = False
    material: bool = False
    flagged: bool = False
    label: str | None = None  # multiclass: the class compared one-vs-rest
    min_change: float | None = None  # the material floor applied (`min_effect`, or relative for regression)

    @property
    def key(self) -> str:
        """`sex=Female.true_positive_rate`, `race.equalized_odds_difference`, with ` [class high]` after the
        group (or attribute) for a multiclass model: the chart's series name."""
        who = f"{self.attribute}={self.group}" if self.group is not None else self.attribute
        return f"{who}{f' [class {self.label}]' if self.label is not None else ''}.{self.metric}"

    def reason(self, confidence: float, tests: int) -> str:
        """The flag in words: the metric (and class), the group, both values, the change and its interval."""
        name = RATES.get(self.metric) or DISPARITIES.get(self.metric) or REGRESSION[self.metric]
        if self.label is not None:
            name = f"{name} of class {self.label}"
        who = (f"{'for' if self.label is not None else 'of'} {_who(self.attribute, self.group)}"
               if self.group is not None else f"by {self.attribute}")
        # Rates and disparities are shares (two decimals); regression values have the target's scale.
        fmt, signed = (".2f", "+.2f") if self.metric not in REGRESSION else (".4g", "+.3g")
        ci = f"[{self.ci[0]:{signed}}, {self.ci[1]:{signed}}]" if self.ci else "[?]"
        return (f"bias drift: {name} {who} {self.window:{fmt}} vs {self.promoted:{fmt}} at promotion (diff "
                f"{self.diff:{signed}}, {_pct(confidence)} CI {ci}, Bonferroni over {tests} comparisons; "
                f"{self.window_rows} window rows)")


@dataclass
class BiasDrift:
    """The bias drift check of one window.

    `status`: `ok` (compared, nothing flagged), `drift` (something flagged), `insufficient`
    (too few rows: no decision), `unavailable` (no promotion-time fairness record to compare
    with), `unsupported` (the record cannot be compared with: a regression gate report written
    before the gate stored each group's spread), `off`, or `error` (the check raised; its reason
    says so, and the window alerts).
    """

    status: str
    rows: int = 0
    labeled_rows: int = 0
    confidence: float = 0.95
    per_test_confidence: float | None = None
    min_effect: float = 0.1
    min_relative_effect: float | None = None  # regression's material floor (a share of the promoted value)
    comparisons: list[BiasComparison] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action: str = "alert"

    @property
    def flagged(self) -> bool:
        """Whether any comparison is a significant, material change."""
        return any(c.flagged for c in self.comparisons)

    def summary(self) -> dict[str, Any]:
        """What the Models page charts per window: each key's window and promotion value, and the flagged keys."""
        return json_safe({"status": self.status, "window": {c.key: c.window for c in self.comparisons},
                          "promoted": {c.key: c.promoted for c in self.comparisons},
                          "flagged": [c.key for c in self.comparisons if c.flagged]})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with `flagged` and the chart `summary`."""
        out = asdict(self)
        out["flagged"] = self.flagged
        out["summary"] = self.summary()
        return dict(json_safe(out))


# ---------------------------------------------------------------------------- the check


def check_bias_drift(promoted: Mapping[str, Any] | None, features: pd.DataFrame, scores: Sequence[Any] | np.ndarray,
                     labels: Sequence[Any] | np.ndarray | None, cfg: ModelConfig, seed: int = 0) -> BiasDrift:
    """Compare a window's fairness metrics by group with those recorded at the champion's promotion.

    Args:
        promoted: the champion's fairness gate report (`GateReport` as a dict); None when not stored.
        features: the window's served rows (canonical features, the sensitive attributes among them).
        scores: the logged predictions of those rows, in order: binary, the scores; regression, the
            predictions; multiclass, the predicted class labels (None where unreadable) or the class
            probabilities (rows x classes, in the report's class order `details.classes`).
        labels: their labels where /feedback attached them (None or NaN elsewhere); None for none.
        cfg: the model config (`sensitive_attributes`, `gates.fairness.threshold`, `monitoring.bias`).
        seed: the bootstrap seed (disparities; regression's worst/best MAE ratio).

    Never raises on thin data: too few rows give `insufficient`, a missing record `unavailable`.
    """
    bc = cfg.monitoring.bias
    skipped = not_checked(cfg)
    if skipped is not None:
        return skipped
    found = BiasDrift(status="ok", rows=len(features), confidence=bc.confidence, min_effect=bc.min_effect,
                      action=bc.action)
    if cfg.task is Task.REGRESSION:  # means and spreads instead of confusion counts: its own module
        from autopilot.monitoring.bias_regression import check_regression

        return check_regression(promoted, features, scores, labels, cfg, found, seed)
    records = _records(promoted, multiclass=cfg.task is Task.MULTICLASS_CLASSIFICATION)
    if not records:
        return stopped(found, "unavailable", NO_RECORD)
    views = window_views(promoted, features, scores, labels, cfg)
    found.rows, found.labeled_rows = views.rows, views.labeled_rows
    found.notes.extend(views.notes)
    if found.rows < bc.min_rows:
        return too_few_rows(found, bc.min_rows)
    if found.labeled_rows < bc.min_labeled_rows:
        found.notes.append(f"{found.labeled_rows} labeled rows, fewer than the {bc.min_labeled_rows} needed: "
                           "selection rates only")
    setup = _Setup(bc.min_group_rows, found.labeled_rows >= bc.min_labeled_rows, bc.bootstrap_samples,
                   np.random.default_rng(seed))
    pending: list[PendingComparison] = []
    for name, (grouping, groups, label) in records.items():
        missing = [c for c in grouping.columns if c not in views.features.columns]
        if missing:
            found.notes.append(f"{name}: the window lacks {missing}")
            continue
        # One-vs-rest for a class of a multiclass model: the binary comparisons on its indicators.
        pred, y = views.of(label)
        window = _window_counts(grouping.assign(views.features), pred, y, setup.labeled)
        pending.extend(_compare_attribute(grouping.name, groups, window, setup, found.notes, label))
    judge(found, pending)
    return found


def window_bias(promoted: Callable[[], Mapping[str, Any] | None], features: pd.DataFrame, frame: pd.DataFrame,
                version: int, cfg: ModelConfig) -> dict[str, Any]:
    """`check_bias_drift` on a window of the inference log, as the monitoring stage calls it (JSON-ready).

    Args:
        promoted: reads the champion's fairness gate report (None when it has none); not called
            when the model is not checked.
        features: the window's canonical features, row for row with `frame`.
        frame: the window's inference-log rows (`version`, `prediction`, `label`).
        version: the champion's version: only its rows are compared.
        cfg: the model config.

    An outage (`outages.is_outage`) is raised, so that the window is retried; any other error
    gives status `error` with its reason, which the decision turns into an alert.
    """
    skipped = not_checked(cfg)
    if skipped is not None:
        return skipped.as_dict()
    try:
        mine = (frame["version"] == version).to_numpy()
        labels = frame["label"].to_numpy()[mine] if "label" in frame else None
        report = promoted()
        scores: list[Any] | np.ndarray
        if cfg.task is Task.MULTICLASS_CLASSIFICATION:  # logged {"label", "probabilities"} records
            scores = logged_classes(frame["prediction"].to_numpy(dtype=object)[mine].tolist(), report, cfg)
        else:
            scores = frame["prediction"].to_numpy(dtype=float)[mine]
        return check_bias_drift(report, features[mine], scores, labels, cfg).as_dict()
    except Exception as exc:  # the check's own failure is said, and alerts; an outage retries the window
        if is_outage(exc):
            raise
        return failed(cfg, exc).as_dict()


def not_checked(cfg: ModelConfig) -> BiasDrift | None:
    """The result of a model whose windows are not checked (`off`: disabled, or no sensitive attributes), else None."""
    bc = cfg.monitoring.bias
    found = BiasDrift(status="off", confidence=bc.confidence, min_effect=bc.min_effect, action=bc.action)
    if not bc.enabled or not cfg.sensitive_attributes:
        return stopped(found, "off", "bias drift is off (monitoring.bias.enabled) or no sensitive attributes are set")
    return None


def failed(cfg: ModelConfig, exc: BaseException) -> BiasDrift:
    """A check that raised: status `error`, its reason said (the decision alerts on it, never retrains)."""
    bc = cfg.monitoring.bias
    return BiasDrift(status="error", confidence=bc.confidence, min_effect=bc.min_effect, action=bc.action,
                     reasons=[f"bias drift could not be checked: {type(exc).__name__}: {str(exc)[:300]}"])


@dataclass
class _Setup:
    min_rows: int
    labeled: bool
    samples: int
    rng: np.random.Generator


# A comparison and how to compute its interval of the change at a given confidence.
PendingComparison = tuple[BiasComparison, Callable[[float], list[float] | None]]


NO_RECORD = "the champion's fairness gate report holds no group metrics to compare with"


def too_few_rows(found: BiasDrift, min_rows: int) -> BiasDrift:
    """`found` is `insufficient`: fewer served rows than bias drift needs."""
    return stopped(found, "insufficient", f"{found.rows} served rows, fewer than the {min_rows} bias drift needs")


def stopped(found: BiasDrift, status: str, note: str) -> BiasDrift:
    """`found` ended early with `status`, the note saying why (shared with `bias_regression`)."""
    found.status = status
    found.notes.append(note)
    return found


def _window_counts(groups: np.ndarray, pred: np.ndarray, y: np.ndarray, labeled: bool) -> dict[str, tuple[
        GroupCounts, GroupCounts | None]]:
    """Per group: counts over all served rows (selection) and over its labeled rows (TPR, FPR)."""
    out: dict[str, tuple[GroupCounts, GroupCounts | None]] = {}
    known = np.isfinite(y)
    for group in np.unique(groups):
        member = groups == group
        every = GroupCounts(rows=int(member.sum()), selected=int(pred[member].sum()))
        with_labels = None
        if labeled:
            rows = member & known
            yg, pg = y[rows], pred[rows]
            with_labels = GroupCounts(rows=int(rows.sum()), selected=int(pg.sum()), positives=int(yg.sum()),
                                      tp=int((yg * pg).sum()), fp=int(((1 - yg) * pg).sum()))
        out[str(group)] = (every, with_labels)
    return out


def _compare_attribute(name: str, promoted: dict[str, GroupCounts],
                       window: dict[str, tuple[GroupCounts, GroupCounts | None]], setup: _Setup, notes: list[str],
                       label: str | None = None) -> list[PendingComparison]:
    """Every group's rates and the attribute's disparities, where both sides have enough rows (of class
    `label` one-vs-rest for a multiclass model)."""
    out: list[PendingComparison] = []
    selection_groups: list[str] = []
    odds_groups: list[str] = []
    for group, before in promoted.items():
        if group not in window:
            continue
        every, with_labels = window[group]
        if _enough(before, every, "selection_rate", setup.min_rows):
            selection_groups.append(group)
            out.append(_rate(name, group, "selection_rate", before, every, label))
        if with_labels is None:
            continue
        # A TPR rests on the group's positives, an FPR on its negatives: each is compared when its own
        # denominator is large enough; the equalized odds difference needs both.
        rates = [m for m in ("true_positive_rate", "false_positive_rate")
                 if _enough(before, with_labels, m, setup.min_rows)]
        out.extend(_rate(name, group, m, before, with_labels, label) for m in rates)
        if len(rates) == 2:
            odds_groups.append(group)
    too_small = sorted(set(promoted) & set(window) - set(selection_groups))
    if too_small:
        of_class = f" [class {label}]" if label is not None else ""
        notes.append(f"{name}{of_class}: too few rows to compare ({', '.join(too_small)}; {setup.min_rows} "
                     "needed on both sides)")
    if len(selection_groups) >= 2:
        after = [window[g][0] for g in selection_groups]
        out.append(_disparity(name, "demographic_parity_difference", [promoted[g] for g in selection_groups], after,
                              selection_groups, [], setup, label))
    if setup.labeled and len(odds_groups) >= 2:
        labeled = [c for g in odds_groups if (c := window[g][1]) is not None]
        out.append(_disparity(name, "equalized_odds_difference", [promoted[g] for g in odds_groups], labeled,
                              odds_groups, odds_groups, setup, label))
    return out


def _enough(before: GroupCounts, after: GroupCounts, metric: str, min_rows: int) -> bool:
    a, b = before.rate(metric), after.rate(metric)
    return a is not None and b is not None and a[1] >= min_rows and b[1] >= min_rows


def _rate(name: str, group: str, metric: str, before: GroupCounts, after: GroupCounts,
          label: str | None = None) -> PendingComparison:
    a, b = before.rate(metric), after.rate(metric)
    assert a is not None and b is not None
    found = BiasComparison(name, group, metric, promoted=a[0] / a[1], window=b[0] / b[1], promoted_rows=a[1],
                           window_rows=b[1], label=label)
    return found, lambda level: newcombe(b[0], b[1], a[0], a[1], level)


def _disparity(name: str, metric: str, before: list[GroupCounts], after: list[GroupCounts], groups: list[str],
               odds: list[str], setup: _Setup, label: str | None = None) -> PendingComparison:
    """A disparity over the same groups on both sides, its change bootstrapped from each side's cells."""
    cells_before, cells_after = np.stack([c.cells() for c in before]), np.stack([c.cells() for c in after])

    def point(cells: np.ndarray) -> float:
        return float(replicate_disparities(cells[None, ...], groups, odds)[metric][0])

    found = BiasComparison(name, None, metric, promoted=point(cells_before), window=point(cells_after),
                           promoted_rows=int(cells_before.sum()), window_rows=int(cells_after.sum()), label=label)
    diffs = (replicate_disparities(_resample(cells_after, setup), groups, odds)[metric]
             - replicate_disparities(_resample(cells_before, setup), groups, odds)[metric])
    return found, lambda level: interval(diffs, level)


def _resample(cells: np.ndarray, setup: _Setup) -> np.ndarray:
    """Multinomial resamples of every group's cells (the gate's stratified bootstrap): (samples, groups, 4)."""
    out = np.empty((setup.samples, len(cells), 4))
    for j, group in enumerate(cells):
        out[:, j, :] = setup.rng.multinomial(int(group.sum()), group / group.sum(), size=setup.samples)
    return out


def judge(found: BiasDrift, pending: list[PendingComparison]) -> None:
    """Each comparison's interval at the Bonferroni-corrected confidence; flags; reasons; the status."""
    tests = len(pending)
    if tests == 0:
        stopped(found, "insufficient", "no group has enough rows on both sides to compare")
        return
    level = 1.0 - (1.0 - found.confidence) / tests
    found.per_test_confidence = level
    for c, ci in pending:
        c.diff = c.window - c.promoted
        c.ci = ci(level)
        c.significant = c.ci is not None and (c.ci[0] > 0 or c.ci[1] < 0)
        if c.min_change is None:  # classification: one absolute floor for rates and disparities
            c.min_change = found.min_effect
        c.material = abs(c.diff) >= c.min_change
        c.flagged = c.significant and c.material
        found.comparisons.append(c)
    flagged = sorted((c for c in found.comparisons if c.flagged), key=lambda c: -abs(c.diff))
    found.reasons = [c.reason(found.confidence, tests) for c in flagged]
    found.status = "drift" if flagged else "ok"


def newcombe(x1: int, n1: int, x0: int, n0: int, confidence: float) -> list[float]:
    """Newcombe's hybrid score interval of p1 - p0 (x successes of n), from two Wilson intervals."""
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = _wilson(x1, n1, z)
    l0, u0 = _wilson(x0, n0, z)
    d = p1 - p0
    return [d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)]


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------- the promotion's record


def _records(report: Mapping[str, Any] | None, multiclass: bool = False) -> dict[str, tuple[
        Grouping, dict[str, GroupCounts], str | None]]:
    """Per attribute record: its grouping, each group's counts at promotion and (multiclass) its class.

    A multiclass gate records each class of each attribute one-vs-rest as an attribute of its own,
    `<attribute> [class <label>]`, with `class` set: the grouping is the attribute's (its columns).
    """
    attributes = ((report or {}).get("details") or {}).get("attributes") or {}
    out: dict[str, tuple[Grouping, dict[str, GroupCounts], str | None]] = {}
    for name, attr in attributes.items():
        if not isinstance(attr, dict) or not attr.get("by_group"):
            continue
        label = label_text(attr["class"]) if attr.get("class") is not None else None
        if (label is not None) != multiclass:  # a record of the other kind of model
            continue
        groups = {str(g): counts for g, entry in attr["by_group"].items()
                  if (counts := _promoted_counts(entry)) is not None}
        if groups:
            out[str(name)] = (grouping_from(attribute_of(str(name), label), attr.get("grouping") or {}), groups, label)
    return out


def attribute_of(name: str, label: str | None) -> str:
    """The attribute of a record name: `sex` of `sex [class high]` (the gate's `class_grouping_name`)."""
    suffix = f" [class {label}]"
    return name[: -len(suffix)] if label is not None and name.endswith(suffix) else name


def _promoted_counts(entry: Mapping[str, Any]) -> GroupCounts | None:
    """A group's counts from its `by_group` entry (label counts derived from the rates for older reports)."""
    rows, selection = entry.get("count"), entry.get("selection_rate")
    if not rows or selection is None:
        return None
    rows = int(rows)
    tpr, fpr = entry.get("true_positive_rate"), entry.get("false_positive_rate")
    positives = entry.get("positives")
    if positives is None:  # selection = p TPR + (1 - p) FPR, so p follows from the three rates
        if tpr is None:
            positives = 0
        elif fpr is None:
            positives = rows
        elif tpr != fpr:
            positives = round(rows * min(1.0, max(0.0, (selection - fpr) / (tpr - fpr))))
    if positives is None:
        return GroupCounts(rows=rows, selected=round(selection * rows))
    positives = int(positives)
    return GroupCounts(rows=rows, selected=round(selection * rows), positives=positives,
                       tp=round((tpr or 0.0) * positives), fp=round((fpr or 0.0) * (rows - positives)))


def grouping_from(name: str, described: Mapping[str, Any]) -> Grouping:
    """The gate's grouping from its description in the report (`Grouping.describe()`), so groups match."""
    kind = str(described.get("kind", "categorical"))
    if kind in ("bins", "quantile_bins"):
        return Grouping(name=name, kind=kind, columns=(name,), edges=tuple(float(e) for e in described["edges"]),
                        labels=tuple(str(v) for v in described["labels"]))
    if kind == "intersection":
        parts = tuple(grouping_from(str(p), d) for p, d in (described.get("parts") or {}).items())
        return Grouping(name=name, kind=kind, columns=tuple(described.get("attributes") or [p.name for p in parts]),
                        parts=parts)
    return Grouping(name=name, kind=kind, columns=(name,))


def _who(attribute: str, group: str) -> str:
    return group if "=" in group else f"{attribute}={group}"


def _pct(level: float) -> str:
    text = f"{level * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"
