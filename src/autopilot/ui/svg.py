"""The frame the Models page's per-window SVG charts share (bias drift, multivariate drift).

One size, padding and flag colour; a value axis from `bottom` to `top`; one slot per window on
the x axis. Every text that reaches the page goes through `esc` (the page's own escaping too).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

__all__ = ["CHART_H", "CHART_W", "FLAG_COLOUR", "PAD_LEFT", "PAD_RIGHT", "Frame", "esc"]

CHART_W, CHART_H = 640, 140
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 46, 12, 10, 22
FLAG_COLOUR = "#c62828"


def esc(value: object) -> str:
    """`value` as HTML text (None: empty), quotes escaped too: values also land in attributes."""
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class Frame:
    """A chart's coordinates: values from `bottom` to `top` (clipped), `windows` slots left to right."""

    bottom: float
    top: float
    windows: int

    @property
    def slot(self) -> float:
        """The width of one window's slot."""
        return (CHART_W - PAD_LEFT - PAD_RIGHT) / max(self.windows, 1)

    def x(self, i: int) -> float:
        """The centre of window `i`'s slot."""
        return PAD_LEFT + self.slot * (i + 0.5)

    def y(self, value: float) -> float:
        """The height of `value`, clipped to the axis."""
        plot_h = CHART_H - PAD_TOP - PAD_BOTTOM
        clipped = min(max(value, self.bottom), self.top)
        return PAD_TOP + plot_h - (clipped - self.bottom) / (self.top - self.bottom) * plot_h

    def axis(self, top_label: str) -> list[str]:
        """The base line and the two value labels (the top one as given)."""
        base = self.y(self.bottom)
        return [f'<line x1="{PAD_LEFT}" y1="{base:.1f}" x2="{CHART_W - PAD_RIGHT}" y2="{base:.1f}" stroke="#9aa5b1"/>',
                f'<text x="{PAD_LEFT - 6}" y="{base + 4:.1f}" text-anchor="end">{self.bottom:.3g}</text>',
                f'<text x="{PAD_LEFT - 6}" y="{self.y(self.top) + 4:.1f}" text-anchor="end">{top_label}</text>']

    def dashed(self, value: float, css_class: str, colour: str) -> str:
        """A dashed line across the chart at `value` (a reference or promotion-time value)."""
        at = self.y(value)
        return (f'<line class="{css_class}" x1="{PAD_LEFT}" y1="{at:.1f}" x2="{CHART_W - PAD_RIGHT}" y2="{at:.1f}" '
                f'stroke="{colour}" stroke-dasharray="4 3" opacity="0.7"/>')
