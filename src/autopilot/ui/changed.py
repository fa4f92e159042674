"""The Models page's "Changed predictions" section: per monitoring window (newest first), the
predictions that changed most against their nearest reference rows, with what drove each change
(`explain.changed`; the state database keeps the compact form from `monitoring.changed.compact_changed`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_WINDOWS_SHOWN", "render_changed"]

MAX_WINDOWS_SHOWN = 3  # the newest windows that listed changes; older ones are in their JSON reports


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_changed(windows: Sequence[Any]) -> str:
    """HTML for the newest windows with a `changed` section (WindowView-like: start, end, changed)."""
    listed = [w for w in reversed(windows) if getattr(w, "changed", None)][:MAX_WINDOWS_SHOWN]
    if not listed:
        return ('<p class="muted">No window listed changed predictions yet (too few rows, or '
                '<code>monitoring.changed_predictions.top_n: 0</code>).</p>')
    return "".join(_window(w) for w in listed)


def _window(window: Any) -> str:
    changed = window.changed
    head = f'<h4 class="changed-window">Window {_e(window.start)} – {_e(window.end)} UTC</h4>'
    if "error" in changed:
        return head + f'<p class="muted">Could not list changed predictions: {_e(changed["error"])}</p>'
    drivers = ", ".join(f'{_e(d["feature"])} ({_e(d["rows"])} rows)' for d in changed.get("drivers", []))
    shift = changed.get("shift") or {}
    moved = ", ".join(_e(name) for name in shift.get("top_features") or []) or _e(shift.get("skipped") or "–")
    intro = (f'<p class="muted">{_e(changed.get("sampled_rows"))} rows sampled, each paired with its nearest '
             f'reference row. What moved the window\'s scores (mean SHAP change over {_e(shift.get("pairs"))} '
             f'pairs): <span class="shift">{moved}</span>; what drove the largest changes below: '
             f'{drivers or "nothing"}.</p>')
    if changed.get("lime_error"):
        intro += f'<p class="muted">LIME could not explain these rows: {_e(changed["lime_error"])}</p>'
    rows = "".join(_row(r) for r in changed.get("rows", []))
    return (head + intro + '<table class="windows changed"><tr><th>#</th><th>score (reference → window)</th>'
            "<th>change</th><th>driver</th><th>features that differ</th><th>SHAP of the change</th>"
            f"<th>LIME (window row)</th></tr>{rows}</table>")


def _row(row: dict[str, Any]) -> str:
    differing = "<br>".join(f'{_e(d["feature"])}: {_e(_value(d.get("reference")))} → {_e(_value(d.get("window")))}'
                            for d in row.get("differing", []))
    return (f'<tr class="changed-row"><td>{_e(row.get("rank"))}</td>'
            f'<td class="num">{_num(row.get("score_reference"))} → {_num(row.get("score_window"))}</td>'
            f'<td class="num">{_num(row.get("change"), signed=True)}</td><td>{_e(row.get("driver") or "–")}</td>'
            f"<td>{differing or '–'}</td><td>{_weights(row.get('shap_change'))}</td>"
            f"<td>{_weights(row.get('lime'))}</td></tr>")


def _weights(values: dict[str, Any] | None) -> str:
    return "<br>".join(f"{_e(name)} {_num(v, signed=True)}" for name, v in (values or {}).items()) or "–"


def _num(value: Any, signed: bool = False) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _value(value: Any) -> str:
    if value is None:
        return "missing"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
