"""The Models page's bias drift section: the fairness metrics by group, window after window.

Each monitoring window stores a small summary of its bias drift check (`monitoring.bias`,
`BiasDrift.summary()`: each `attribute=group.metric` key's window value, its value at the
champion's promotion, and the keys flagged). One inline SVG line chart per metric (selection
rate, true and false positive rate, the disparities; for a regression model the mean prediction,
the MAE and the worst/best MAE ratio), one line per group (a multiclass model's per class:
`sex=Female [class high]`), the promotion's value dashed in the same colour, flagged windows as
red dots. Rates share a 0-1 axis; regression values have the target's scale. No scripts; every
text escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from autopilot.ui.svg import CHART_H, CHART_W, FLAG_COLOUR, Frame
from autopilot.ui.svg import esc as _esc

__all__ = ["bias_section", "bias_series"]

PALETTE = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#546e7a")
METRICS = {"selection_rate": "Selection rate by group (label-free)",
           "true_positive_rate": "True positive rate by group (labeled rows)",
           "false_positive_rate": "False positive rate by group (labeled rows)",
           "demographic_parity_difference": "Demographic parity difference by attribute",
           "equalized_odds_difference": "Equalized odds difference by attribute",
           "mean_prediction": "Mean prediction by group (label-free)",
           "mae": "Mean absolute error by group (labeled rows)",
           "group_error_ratio": "Worst/best MAE ratio by attribute (labeled rows)"}
# Shares, drawn on an axis from 0 to at most 1; the others take the scale of their values.
SHARES = frozenset({"selection_rate", "true_positive_rate", "false_positive_rate", "demographic_parity_difference",
                    "equalized_odds_difference"})


class _Window(Protocol):
    start: str
    end: str
    bias: dict[str, Any] | None


def bias_series(windows: Sequence[_Window]) -> dict[str, dict[str, list[Any]]]:
    """metric -> series name (`sex=Female`, or the attribute for a disparity) -> per window
    `(value | None, promoted | None, flagged)`, in window order."""
    out: dict[str, dict[str, list[Any]]] = {}
    for i, window in enumerate(windows):
        summary = window.bias or {}
        flagged = set(summary.get("flagged") or [])
        promoted = summary.get("promoted") or {}
        for key, value in (summary.get("window") or {}).items():
            name, _, metric = key.rpartition(".")
            if metric not in METRICS or not name:
                continue
            series = out.setdefault(metric, {}).setdefault(name, [(None, None, False)] * len(windows))
            series[i] = (value, promoted.get(key), key in flagged)
    return out


def bias_section(windows: Sequence[_Window]) -> str:
    """The section's HTML: a heading, then a chart per metric, or a note when no window compared anything."""
    series = bias_series(windows)
    heading = "<h3>Bias drift · fairness metrics by group against promotion</h3>"
    if not series:
        return heading + ('<p class="muted">No window compared fairness metrics yet (too few rows, labels or '
                          "sensitive attributes, or no promotion-time fairness record).</p>")
    flagged = sum(1 for w in windows if (w.bias or {}).get("flagged"))
    summary = (f'<p class="muted">{flagged} of {len(windows)} windows flagged bias drift. Solid: the window; dashed: '
               "the value at promotion; red dots: a significant, material change.</p>")
    charts = "".join(_chart(metric, series[metric], windows) for metric in METRICS if metric in series)
    return heading + summary + charts


def _chart(metric: str, lines: dict[str, list[Any]], windows: Sequence[_Window]) -> str:
    values = [v for points in lines.values() for p in points for v in p[:2] if isinstance(v, int | float)]
    frame = Frame(*_axis(metric, values), len(windows))
    x, y = frame.x, frame.y
    fmt = ".3f" if metric in SHARES else ".4g"
    parts = frame.axis(f"{frame.top:.2f}" if metric in SHARES else f"{frame.top:.3g}")
    legend = []
    for n, (name, points) in enumerate(sorted(lines.items())):
        colour = PALETTE[n % len(PALETTE)]
        legend.append(f'<span><i style="background:{colour}"></i>{_esc(name)}</span>')
        known = [(i, p) for i, p in enumerate(points) if isinstance(p[0], int | float)]
        path = " ".join(f"{x(i):.1f},{y(p[0]):.1f}" for i, p in known)
        if len(known) > 1:
            parts.append(f'<polyline class="bias-line" points="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.6"><title>{_esc(name)}</title></polyline>')
        promoted = next((p[1] for _, p in reversed(known) if isinstance(p[1], int | float)), None)
        if promoted is not None:
            parts.append(frame.dashed(promoted, "bias-promoted", colour))
        for i, (value, before, flag) in known:
            title = (f"{windows[i].end[:16].replace('T', ' ')} UTC: {name} {value:{fmt}}"
                     + (f" (at promotion {before:{fmt}})" if isinstance(before, int | float) else "")
                     + (" flagged" if flag else ""))
            parts.append(f'<circle class="bias-point{" flagged" if flag else ""}" cx="{x(i):.1f}" cy="{y(value):.1f}" '
                         f'r="{3.5 if flag else 2}" fill="{FLAG_COLOUR if flag else colour}">'
                         f"<title>{_esc(title)}</title></circle>")
    svg = (f'<svg class="bias-chart" data-metric="{_esc(metric)}" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="{_esc(METRICS[metric])}" font-size="11" '
           f'fill="#52606d">{"".join(parts)}</svg>')
    return (f'<div class="chart bias"><p class="muted">{_esc(METRICS[metric])}</p>{svg}'
            f'<div class="legend">{"".join(legend)}</div></div>')


def _axis(metric: str, values: list[float]) -> tuple[float, float]:
    """(bottom, top) of a chart's value axis: 0 to at most 1 for shares; else from 0 (or the lowest
    value, when negative) to a tenth above the highest."""
    if metric in SHARES:
        return 0.0, min(1.0, max([*values, 0.05]) * 1.1)
    bottom = min([*values, 0.0])
    top = max([*values, bottom])
    top += 0.1 * ((top - bottom) or abs(top) or 1.0)
    return bottom, top
