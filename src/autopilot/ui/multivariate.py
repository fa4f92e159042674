"""The Models page's multivariate drift section: each window's reconstruction error against its bounds.

Each monitoring window stores its multivariate check (`drift.multivariate`, the PCA data
reconstruction of `monitoring/drift/multivariate.py`: the window's mean error, the lower and
upper bound at the window's size, whether it drifted, and why) in the state database. One inline
SVG chart: per window the bound as a grey band, the error as a dot on a line (red and larger when
outside the band), the reference's own error dashed; windows the check did not decide (disabled,
too few rows, no fitted reference) leave a gap, and the latest one's reason is said below. No
scripts; every text escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from autopilot.ui.svg import CHART_H, CHART_W, FLAG_COLOUR, Frame
from autopilot.ui.svg import esc as _esc

__all__ = ["multivariate_points", "multivariate_section"]

LINE_COLOUR, BAND_COLOUR = "#1565c0", "#dfe6ee"


class _Window(Protocol):
    start: str
    end: str
    multivariate: dict[str, Any] | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value == value else None


def multivariate_points(windows: Sequence[_Window]) -> list[tuple[float, float, float, bool] | None]:
    """Per window, in order: (error, lower, upper, drifted) when the check decided it, else None."""
    out: list[tuple[float, float, float, bool] | None] = []
    for window in windows:
        result = window.multivariate or {}
        error, lower, upper = (_number(result.get(k)) for k in ("error", "lower", "upper"))
        if not result.get("checked") or error is None or lower is None or upper is None:
            out.append(None)
        else:
            out.append((error, lower, upper, bool(result.get("drifted"))))
    return out


def multivariate_section(windows: Sequence[_Window]) -> str:
    """The section's HTML: a heading, then the chart, or a note saying why no window was checked."""
    heading = "<h3>Multivariate drift · reconstruction error against its bounds</h3>"
    points = multivariate_points(windows)
    last = next((w.multivariate for w in reversed(windows) if w.multivariate), None)
    said = f" The latest: {_esc(last.get('reason'))}." if last and last.get("reason") else ""
    if not any(points):
        return heading + (f'<p class="muted">No window was checked for multivariate drift yet (too few rows, the '
                          "check disabled, a reference fitted before it existed, or windows recorded before the page "
                          f"showed it).{said}</p>")
    flagged = sum(1 for p in points if p and p[3])
    checked = sum(1 for p in points if p)
    summary = (f'<p class="muted">{flagged} of {checked} checked windows drifted: how well each window still fits '
               "the reference's joint structure (PCA data reconstruction). Grey: the bounds at the window's size; "
               f"dashed: the reference's error; red dots: outside the bounds.{said}</p>")
    reference = next((_number(w.multivariate.get("reference_error")) for w in reversed(windows)
                      if w.multivariate and _number(w.multivariate.get("reference_error")) is not None), None)
    return heading + summary + _chart(points, reference, windows)


def _chart(points: list[tuple[float, float, float, bool] | None], reference: float | None,
           windows: Sequence[_Window]) -> str:
    values = [v for p in points if p for v in p[:3]] + ([reference] if reference is not None else [])
    bottom, top = min(values), max(values)
    margin = 0.1 * ((top - bottom) or abs(top) or 1.0)
    frame = Frame(max(bottom - margin, 0.0), top + margin, len(windows))
    x, y, slot = frame.x, frame.y, frame.slot
    parts = frame.axis(f"{frame.top:.3g}")
    for i, point in enumerate(points):
        if point is not None:
            parts.append(f'<rect class="mv-bound" x="{x(i) - slot * 0.35:.1f}" y="{y(point[2]):.1f}" '
                         f'width="{slot * 0.7:.1f}" height="{max(y(point[1]) - y(point[2]), 1.0):.1f}" '
                         f'fill="{BAND_COLOUR}"/>')
    if reference is not None:
        parts.append(frame.dashed(reference, "mv-reference", "#52606d"))
    known = [(i, p) for i, p in enumerate(points) if p is not None]
    if len(known) > 1:
        path = " ".join(f"{x(i):.1f},{y(p[0]):.1f}" for i, p in known)
        parts.append(f'<polyline class="mv-line" points="{path}" fill="none" stroke="{LINE_COLOUR}" '
                     'stroke-width="1.6"/>')
    for i, (error, lower, upper, drifted) in known:
        title = (f"{windows[i].end[:16].replace('T', ' ')} UTC: error {error:.4f}, bounds {lower:.4f}-{upper:.4f}"
                 + (" drifted" if drifted else ""))
        parts.append(f'<circle class="mv-point{" flagged" if drifted else ""}" cx="{x(i):.1f}" cy="{y(error):.1f}" '
                     f'r="{3.5 if drifted else 2}" fill="{FLAG_COLOUR if drifted else LINE_COLOUR}">'
                     f"<title>{_esc(title)}</title></circle>")
    svg = (f'<svg class="mv-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" role="img" '
           'aria-label="Multivariate reconstruction error by window" font-size="11" '
           f'fill="#52606d">{"".join(parts)}</svg>')
    return f'<div class="chart multivariate">{svg}</div>'
