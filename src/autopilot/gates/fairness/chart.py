"""The fairness report as a chart: per sensitive attribute, the group metric with its bootstrap
intervals and the gated disparity metrics with theirs, each against its threshold.

One row per grouping (attribute or intersection). Left: each group's selection rate
(classification) or MAE (regression) as a bar, with its bootstrap interval for gated groups
(groups below `min_group_size` are drawn pale, without one); the dashed line is where the
parity bound falls on this scale (the ratio floor times the highest gated rate; the error ratio
ceiling times the lowest gated MAE). Right: each judged disparity metric, its value, its interval
and its threshold, coloured by status. Drawn from the report alone (`GateReport.details`), on a
bare matplotlib `Figure` (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopilot.reports import GateReport

__all__ = ["BOUNDS", "draw_fairness", "fairness_chart"]

# Disparity metric -> the fairness config key bounding it and whether it is a floor.
BOUNDS: dict[str, tuple[str, bool]] = {
    "demographic_parity_ratio": ("demographic_parity_ratio_min", True),
    "demographic_parity_difference": ("demographic_parity_difference_max", False),
    "equalized_odds_difference": ("equalized_odds_difference_max", False),
    "group_error_ratio": ("max_group_error_ratio", False),
}
COLOURS = {"pass": "#2ca02c", "fail": "#d62728", "inconclusive": "#ff7f0e"}
REPORT_ONLY_COLOUR = "#7f7f7f"


def fairness_chart(report: GateReport, path: Path) -> Path | None:
    """Write the chart of a fairness report as a PNG at `path`; None when it judged no attribute."""
    fig = draw_fairness(report)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def draw_fairness(report: GateReport) -> Any:
    """The chart of a fairness report as a matplotlib `Figure` (two axes per attribute); None without attributes."""
    from matplotlib.figure import Figure

    attributes = {name: attr for name, attr in (report.details.get("attributes") or {}).items()
                  if isinstance(attr, dict) and attr.get("by_group")}
    if not attributes:
        return None
    fig = Figure(figsize=(12, 3.4 * len(attributes)), dpi=100)
    axes = fig.subplots(len(attributes), 2, squeeze=False)
    for (name, attr), (left, right) in zip(attributes.items(), axes, strict=True):
        _groups_panel(left, name, attr, report.thresholds)
        _metrics_panel(right, name, attr, report.thresholds)
    verdict = "passed" if report.passed else "review" if report.details.get("requires_review") else "failed"
    fig.suptitle(f"Fairness gate: {verdict} (holdout rows: {report.details.get('holdout_rows', '?')})")
    fig.tight_layout()
    return fig


def _groups_panel(ax: Any, name: str, attr: dict[str, Any], thresholds: dict[str, Any]) -> None:
    """One bar per group: the group metric, with its interval where the group is gated."""
    intervals = attr.get("group_intervals") or {}
    metric = intervals.get("metric") or ("mae" if "group_error_ratio" in attr else "selection_rate")
    ci_by_group = intervals.get("groups") or {}
    groups = list(attr["by_group"])
    values = [_number(attr["by_group"][g].get(metric)) for g in groups]
    gated = set(attr.get("gated_groups") or [])
    colours = ["#1f77b4" if g in gated else "#c7c7c7" for g in groups]
    positions = range(len(groups))
    ax.bar(positions, values, color=colours)
    for x, (group, value) in enumerate(zip(groups, values, strict=True)):
        ci = ci_by_group.get(group)
        if ci is not None:
            ax.errorbar(x, value, yerr=[[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]], color="black",
                        capsize=4, linewidth=1)
    line = _parity_line(metric, [v for g, v in zip(groups, values, strict=True) if g in gated], thresholds)
    if line is not None:
        ax.axhline(line[0], color="#d62728", linestyle="--", linewidth=1, label=line[1])
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(list(positions), [f"{g}\n(n={attr['by_group'][g].get('count', '?')})" for g in groups],
                  fontsize=8, rotation=30 if len(groups) > 4 else 0)
    confidence = intervals.get("confidence")
    ax.set_ylabel(metric.replace("_", " ") + (f" ({confidence:.0%} CI)" if confidence else ""))
    ax.set_title(f"{name}: {metric.replace('_', ' ')} by group (grey: below min_group_size, not gated)",
                 fontsize=9)


def _parity_line(metric: str, gated_values: list[float], thresholds: dict[str, Any]) -> tuple[float, str] | None:
    """Where the disparity bound falls on the group metric's scale, and its label."""
    finite = [v for v in gated_values if v == v]
    if not finite:
        return None
    if metric == "selection_rate" and thresholds.get("demographic_parity_ratio_min") is not None:
        floor = float(thresholds["demographic_parity_ratio_min"])
        return floor * max(finite), f"parity ratio floor: {floor:g} x highest rate"
    if metric == "mae" and thresholds.get("max_group_error_ratio") is not None:
        ceiling = float(thresholds["max_group_error_ratio"])
        return ceiling * min(finite), f"error ratio ceiling: {ceiling:g} x lowest MAE"
    return None


def _metrics_panel(ax: Any, name: str, attr: dict[str, Any], thresholds: dict[str, Any]) -> None:
    """Each judged disparity metric: value, interval, threshold, coloured by status."""
    judged = [(metric, attr[metric]) for metric in BOUNDS if isinstance(attr.get(metric), dict)]
    if not judged:
        ax.text(0.5, 0.5, attr.get("note") or "no disparity metric judged", ha="center", va="center",
                transform=ax.transAxes, fontsize=9, wrap=True)
        ax.set_axis_off()
        return
    for y, (metric, entry) in enumerate(judged):
        colour = COLOURS.get(str(entry.get("status")), REPORT_ONLY_COLOUR)
        value, ci = entry.get("value"), entry.get("ci")
        if value is not None:
            ax.plot([value], [y], "o", color=colour)
        if ci is not None:
            ax.plot(ci, [y, y], color=colour, linewidth=3, alpha=0.7)
        key, is_floor = BOUNDS[metric]
        bound = thresholds.get(key)
        if bound is not None:
            ax.plot([bound], [y], marker="|", markersize=22, color="#d62728", markeredgewidth=2)
            ax.annotate(f"{'≥' if is_floor else '≤'} {bound:g}", (bound, y), textcoords="offset points",
                        xytext=(4, 8), fontsize=8, color="#d62728")
    ax.set_yticks(range(len(judged)), [f"{m.replace('_', ' ')}\n[{e.get('status')}]" for m, e in judged], fontsize=8)
    ax.set_ylim(-0.7, len(judged) - 0.3)
    ax.set_xlabel("value, bootstrap interval (bar) and threshold (red tick)")
    ax.set_title(f"{name}: gated disparity metrics", fontsize=9)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)
