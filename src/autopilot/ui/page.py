"""Render the Models page: one self-contained HTML document, server-side, no scripts.

Every value that came from a config, the registry or the state DB passes through `esc` (model
descriptions, gate reasons and actors are free text). Styles are inline and the drift chart is
inline SVG: the page loads nothing from anywhere (it runs where there is no internet, inside
Airflow's sandboxed iframe), and the app's Content-Security-Policy forbids scripts outright.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.ui.bias import bias_section
from autopilot.ui.changed import render_changed
from autopilot.ui.classes import classes_row, metric_label
from autopilot.ui.gated import GATED, CheckView
from autopilot.ui.lifecycle import DecisionView, GateView, ModelView, VersionView, WindowView
from autopilot.ui.multivariate import multivariate_section
from autopilot.ui.svg import esc

__all__ = ["drift_chart", "esc", "render_page"]

# The chart's geometry (SVG user units); bars are centred in equal slots, one per window.
CHART_W, CHART_H = 640, 150
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 82, 12, 12, 26
MAX_BAR_W = 26
INSUFFICIENT_H = 3.0  # a window too small to decide still gets a (grey) mark

LEVEL_COLOURS = {"ok": "#2e7d32", "alert": "#f9a825", "retrain": "#c62828", "insufficient": "#b0b7c3"}
ACTION_COLOURS = {"alert": "#f9a825", "retrain": "#c62828", "rollback": "#6a1b9a"}

STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 24px 40px; background: #f4f6f8; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 19px; margin: 0; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #52606d; margin: 18px 0 6px; }
a { color: #1565c0; text-decoration: none; }
a:hover { text-decoration: underline; }
.meta, .muted { color: #616e7c; font-size: 12.5px; }
.toc { margin: 10px 0 16px; display: flex; flex-wrap: wrap; gap: 6px; }
.toc a { background: #fff; border: 1px solid #d9dee4; border-radius: 14px; padding: 2px 10px; font-size: 13px; }
.model { background: #fff; border: 1px solid #dde2e8; border-radius: 8px; padding: 16px 18px; margin: 0 0 18px;
  box-shadow: 0 1px 2px rgba(16, 24, 40, .05); }
.model-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 10px; }
.model-head .links { margin-left: auto; font-size: 13px; }
.description { margin: 6px 0 0; color: #3e4c59; }
table.versions { table-layout: fixed; }
table.versions th:first-child { width: 130px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #edf0f3; vertical-align: top; }
th { color: #52606d; font-weight: 600; background: #f8fafc; }
td.num { font-variant-numeric: tabular-nums; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
  line-height: 19px; white-space: nowrap; }
.b-champion { background: #e3f2fd; color: #0d47a1; }
.b-challenger { background: #ede7f6; color: #4527a0; }
.b-pass, .b-promote { background: #e6f4ea; color: #1b5e20; }
.b-fail, .b-reject { background: #fdecea; color: #b71c1c; }
.b-review, .b-alert { background: #fff4e0; color: #8a5300; }
.b-retrain { background: #fdecea; color: #b71c1c; }
.b-rollback { background: #f3e5f5; color: #6a1b9a; }
.b-none, .b-other, .b-report-only { background: #eef1f4; color: #3e4c59; }
.b-gated { background: #e3f2fd; color: #0d47a1; }
.b-inconclusive { background: #fff4e0; color: #8a5300; }
.b-passed { background: #e6f4ea; color: #1b5e20; }
.b-failed { background: #fdecea; color: #b71c1c; }
table.checks { margin: 4px 0 2px; font-size: 12.5px; }
table.checks th, table.checks td { padding: 3px 6px; }
.links a { margin-right: 8px; white-space: nowrap; }
.note { background: #f8fafc; border: 1px dashed #c7d0d9; border-radius: 6px; padding: 8px 10px; color: #3e4c59;
  margin: 6px 0; }
.note.error { background: #fdf3f2; border-color: #e8b4ae; color: #8e2a1f; }
ul.reasons { margin: 2px 0 0; padding-left: 18px; }
.chart svg { width: 100%; max-width: 640px; height: auto; display: block; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: #52606d; margin-top: 2px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
  vertical-align: -1px; }
"""


def render_page(models: list[ModelView], generated_at: str, mlflow_ui: str | None) -> str:
    """The whole page: a header, a jump list, and one card per model."""
    count = f"{len(models)} model{'s' if len(models) != 1 else ''}"
    mlflow = f' · <a href="{esc(mlflow_ui)}" target="_blank" rel="noopener noreferrer">MLflow UI</a>' \
        if mlflow_ui else " · MLflow UI link not configured (AUTOPILOT_MLFLOW_UI_URL)"
    toc = "".join(f'<a href="#model-{esc(m.name)}">{esc(m.name)}</a>' for m in models)
    cards = "".join(_model_card(m) for m in models) or \
        '<p class="note">No model configs found in the config folder (AUTOPILOT_CONFIG_DIR).</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Models · autopilot</title><style>{STYLE}</style></head><body>"
        f'<header><h1>Models</h1><p class="meta">{count} · read-only lifecycle view · generated '
        f"{esc(_short_time(generated_at))} UTC{mlflow}</p></header>"
        f'<nav class="toc">{toc}</nav><main>{cards}</main></body></html>'
    )


def _model_card(model: ModelView) -> str:
    parts = [_head(model)]
    if model.description:
        parts.append(f'<p class="description">{esc(model.description)}</p>')
    if "config" in model.notes:
        parts.append(_note(model, "config"))
        return _card(model, parts)
    parts.append("<h3>Champion and challenger</h3>" + (_note(model, "versions") if "versions" in model.notes else "")
                 + _versions_table(model))
    parts.append("<h3>Recent versions</h3>" + _recent_table(model))
    parts.append("<h3>Last decision</h3>" + (_note(model, "decision") if "decision" in model.notes else "")
                 + (_decision(model.decision) if model.decision else ""))
    parts.append(f"<h3>Drift · last {len(model.windows)} windows</h3>" if model.windows else "<h3>Drift</h3>")
    parts.append(_note(model, "monitoring") if "monitoring" in model.notes else "")
    parts.append(_drift(model) if model.windows else "")
    parts.append("<h3>Changed predictions</h3>" + render_changed(model.windows) if model.windows else "")
    parts.append(multivariate_section(model.windows) if model.windows else "")
    parts.append(bias_section(model.windows) if model.windows else "")
    parts.append("<h3>Champion alias history</h3>")
    parts.append(_note(model, "history") if "history" in model.notes else _history(model.history))
    return _card(model, parts)


def _card(model: ModelView, parts: list[str]) -> str:
    name = esc(model.name)
    return f'<section class="model" id="model-{name}" data-model="{name}">{"".join(parts)}</section>'


def _head(model: ModelView) -> str:
    badges = "".join(f'<span class="badge b-{alias}">{alias} v{version.version}</span>'
                     for alias, version in ((CHAMPION, model.champion), (CHALLENGER, model.challenger))
                     if version is not None)
    registered = "" if model.registered_name in (None, model.name) else \
        f' <span class="muted">registered as {esc(model.registered_name)}</span>'
    links = "".join(_link(url, text) for url, text in ((model.url, "MLflow"), (model.data_docs_url, "Data Docs"))
                    if url)
    return (f'<div class="model-head"><h2>{esc(model.name)}</h2>{registered}{badges}'
            f'<span class="muted">{esc(model.config_file)}</span><span class="links">{links}</span></div>')


def _note(model: ModelView, section: str) -> str:
    text = model.notes[section]
    error = " error" if "unavailable" in text or section == "config" else ""
    return f'<p class="note{error}" data-section="{esc(section)}">{esc(text)}</p>'


def _versions_table(model: ModelView) -> str:
    """Champion and challenger side by side: one column per version (a version holding both is one column)."""
    columns: list[VersionView] = []
    for version in (model.champion, model.challenger):
        if version is not None and all(v.version != version.version for v in columns):
            columns.append(version)
    if not columns:
        return ""
    head = "".join(f'<th data-version="{v.version}">{_version_heading(v)}</th>' for v in columns)
    names: list[str] = []
    for version in columns:
        names += [n for n in version.metrics if n not in names]
    rows = [_row("registered", [esc(_short_time(v.created_at)) for v in columns])]
    rows += [_row(_metric_label(n, model.metric), [_metric(v.metrics.get(n)) for v in columns], numeric=True)
             for n in names]
    rows.append(_row("family", [esc(v.family or "–") for v in columns]) + classes_row([v.classes for v in columns]))
    rows.append(_row("decision", [_badge(v.decision) if v.decision else "–" for v in columns]))
    rows.append(_row("compared with", [_compared(v) for v in columns]))
    rows.append(_row("links", [_version_links(v) for v in columns]))
    return f'<table class="versions"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _compared(version: VersionView) -> str:
    if version.compared_with is not None:
        return f"compared with v{version.compared_with}"
    return "first run (no champion)" if version.decision else "–"


def _version_links(version: VersionView) -> str:
    links = [(version.airflow_url, "Airflow run"), (version.run_url, "MLflow run"), (version.url, "MLflow version")]
    links += [(url, f"Data Docs ({split})") for split, url in sorted(version.data_docs.items())]
    shown = [_link(url, text) for url, text in links if url]
    return f'<span class="links">{"".join(shown)}</span>' if shown else "–"


def _recent_table(model: ModelView) -> str:
    """The newest versions, one row each, with the champion each was compared with."""
    if not model.versions:
        return '<p class="muted">No versions yet.</p>'
    rows = "".join(_recent_row(v, model.metric or "") for v in model.versions)
    return (f'<table class="recent"><tr><th>version</th><th>aliases</th><th>registered</th>'
            f"<th>{esc(model.metric or 'metric')}</th><th>decision</th><th>compared with</th><th>Airflow</th></tr>"
            f"{rows}</table>")


def _recent_row(version: VersionView, metric: str) -> str:
    aliases = " ".join(f'<span class="badge b-{esc(a)}">{esc(a)}</span>' for a in version.aliases)
    compared = "–" if version.compared_with is None else f"v{version.compared_with}"
    decision = _badge(version.decision) if version.decision else "–"
    airflow = _link(version.airflow_url, "run") if version.airflow_url else "–"
    return (f'<tr class="version" data-version="{version.version}"><td>{_link(version.url, f"v{version.version}")}'
            f"</td><td>{aliases}</td><td>{esc(_short_time(version.created_at))}</td>"
            f'<td class="num">{_metric(version.metrics.get(metric))}</td><td>{decision}</td><td>{compared}</td>'
            f"<td>{airflow}</td></tr>")


def _version_heading(version: VersionView) -> str:
    aliases = " ".join(f'<span class="badge b-{esc(a)}">{esc(a)}</span>' for a in version.aliases
                       if a in (CHAMPION, CHALLENGER))
    return f"{aliases} {_link(version.url, f'v{version.version}')}"


def _metric_label(name: str, primary: str | None) -> str:
    return f"<strong>{esc(metric_label(name))}</strong>" if name == primary else esc(metric_label(name))


def _row(label: str, cells: Iterable[str], numeric: bool = False) -> str:
    cls = ' class="num"' if numeric else ""
    return f"<tr><th>{label}</th>{''.join(f'<td{cls}>{c}</td>' for c in cells)}</tr>"


def _metric(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _link(url: str | None, text: str) -> str:
    if not url:
        return esc(text)
    return f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{esc(text)} ↗</a>'


def _badge(verdict: str | None) -> str:
    known = {"promote", "reject", "review", "none", "alert", "retrain", "rollback", "pass", "fail"}
    kind = verdict if verdict in known else "other"
    return f'<span class="badge b-{kind}">{esc(verdict)}</span>'


def _decision(decision: DecisionView) -> str:
    baseline = f" · compared with v{decision.baseline_version}" if decision.baseline_version is not None else ""
    source = "" if decision.source == "record" else " · from version tags (record unreadable)"
    summary = (f'<p>{_badge(decision.decision)} version {_link(decision.url, f"v{decision.version}")}'
               f' <span class="muted">{esc(_short_time(decision.decided_at))} by {esc(decision.actor or "?")}'
               f"{esc(baseline)}{esc(source)}</span></p>")
    # Reasons a gate row already shows ("fairness: ...") are not repeated above the table.
    shown = {f"{g.name}: {r}" for g in decision.gates for r in g.reasons}
    others = [r for r in decision.reasons if r not in shown]
    reasons = _reasons(others) if others else ""
    gates = "".join(_gate_row(g) for g in decision.gates)
    table = f'<table class="gates"><tr><th>gate</th><th>result</th><th>detail</th></tr>{gates}</table>'
    return summary + reasons + table


def _gate_row(gate: GateView) -> str:
    result = "review" if gate.requires_review and not gate.passed else ("pass" if gate.passed else "fail")
    label = {"pass": "passed", "fail": "missing" if gate.missing else "failed", "review": "review"}[result]
    if gate.checks:
        extra = _checks(gate.checks)
    else:  # an old or unfamiliar report: its first numbers, as before
        numbers = " · ".join(f"{esc(k)} {'–' if v is None else f'{v:.4g}'}" for k, v in gate.highlights.items())
        extra = f'<span class="muted">{numbers}</span>' if numbers else ""
    detail = (_reasons(gate.reasons) if gate.reasons else "") + extra
    return (f'<tr class="gate" data-gate="{esc(gate.name)}" data-result="{result}"><td>{esc(gate.name)}</td>'
            f'<td><span class="badge b-{result}">{label}</span></td><td>{detail or "–"}</td></tr>')


def _checks(checks: list[CheckView]) -> str:
    """The gate's gated metrics: challenger, champion, interval, threshold, status."""
    rows = "".join(
        f'<tr class="check" data-status="{esc(c.status)}" data-outcome="{esc(c.outcome or "")}">'
        f'<td>{esc(c.metric)}</td><td class="num">{_metric(c.value)}</td>'
        f'<td class="num">{_champion_cell(c)}</td><td class="num">{_interval(c)}</td>'
        f"<td>{esc(c.threshold or '–')}</td><td>{_check_status(c)}</td></tr>"
        for c in checks)
    return ('<table class="checks"><tr><th>metric</th><th>challenger</th><th>compared</th><th>interval</th>'
            f"<th>threshold</th><th>status</th></tr>{rows}</table>")


def _champion_cell(check: CheckView) -> str:
    if check.champion is None:
        return esc(check.compared_with) if check.compared_with else "–"
    who = f' <span class="muted">{esc(check.compared_with)}</span>' if check.compared_with else ""
    return f"{_metric(check.champion)}{who}"


def _interval(check: CheckView) -> str:
    level = f"{check.confidence:.0%} " if check.confidence else ""
    if check.interval is None:
        return "–" if check.difference is None else f"Δ {check.difference:+.4f}"
    low, high = check.interval
    if check.difference is not None:
        return f'Δ {check.difference:+.4f} <span class="muted">{level}CI {low:+.4f} … {high:+.4f}</span>'
    return f'{low:.4f} … {high:.4f} <span class="muted">{level}CI</span>'


def _check_status(check: CheckView) -> str:
    """gated (passed / failed), inconclusive or report-only."""
    status = f'<span class="badge b-{esc(check.status)}">{esc(check.status)}</span>'
    if check.status == GATED and check.outcome:
        status += f' <span class="badge b-{esc(check.outcome)}">{esc(check.outcome)}</span>'
    return status


def _reasons(reasons: list[str]) -> str:
    return '<ul class="reasons">' + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>"


def _drift(model: ModelView) -> str:
    latest = model.windows[-1]
    share = "too few rows to decide" if latest.drift_share is None else f"drift share {latest.drift_share:.3f}"
    rows = "" if latest.rows is None else f", {latest.rows:,} rows"
    summary = (f'<p class="muted">Latest window ending {esc(_short_time(latest.end))} UTC: {esc(share)}, action '
               f"{_badge(latest.action)}{esc(rows)}. Bars: importance-weighted share of drifted columns.</p>")
    legend = "".join(f'<span><i style="background:{colour}"></i>{esc(label)}</span>' for label, colour in (
        ("below alert", LEVEL_COLOURS["ok"]), ("alert", LEVEL_COLOURS["alert"]),
        ("retrain", LEVEL_COLOURS["retrain"]), ("too few rows", LEVEL_COLOURS["insufficient"]),
        ("action taken (dot)", "#3e4c59")))
    return f'<div class="chart">{drift_chart(model.windows, model.thresholds)}<div class="legend">{legend}</div>' \
           f"{summary}</div>{_window_reports(model.windows)}"


def _window_reports(windows: list[WindowView]) -> str:
    """Each window that stored an Evidently report, newest first, with its link."""
    reported = [w for w in reversed(windows) if w.report_url]
    if not reported:
        return '<p class="muted">No window stored an Evidently report (too few rows, or reports turned off).</p>'
    rows = "".join(
        f'<tr class="window-report"><td>{esc(_short_time(w.start))} – {esc(_short_time(w.end))}</td>'
        f"<td>{'–' if w.drift_share is None else f'{w.drift_share:.3f}'}</td><td>{_badge(w.action)}</td>"
        f"<td>{'–' if w.rows is None else f'{w.rows:,}'}</td><td>{_link(w.report_url, 'Evidently report')}</td></tr>"
        for w in reported)
    return ('<table class="windows"><tr><th>window (UTC)</th><th>drift share</th><th>action</th><th>rows</th>'
            f"<th>report</th></tr>{rows}</table>")


def drift_chart(windows: list[WindowView], thresholds: dict[str, float]) -> str:
    """An inline SVG bar chart: one bar (`rect.window-mark`) per window, dashed threshold lines."""
    plot_w, plot_h = CHART_W - PAD_LEFT - PAD_RIGHT, CHART_H - PAD_TOP - PAD_BOTTOM
    shares = [w.drift_share for w in windows if w.drift_share is not None]
    alert, retrain = thresholds.get("alert", 0.1), thresholds.get("retrain", 0.15)
    top = min(1.0, max([*shares, retrain * 1.3, 0.05]) * 1.05)  # thresholds always visible

    def y(value: float) -> float:
        return PAD_TOP + plot_h - min(value, top) / top * plot_h

    slot = plot_w / max(len(windows), 1)
    bar_w = max(2.0, min(MAX_BAR_W, slot * 0.7))
    marks = [_bar(w, PAD_LEFT + i * slot + (slot - bar_w) / 2, bar_w, y, alert, retrain)
             for i, w in enumerate(windows)]
    lines = [_threshold(name, value, y) for name, value in (("alert", alert), ("retrain", retrain)) if value <= top]
    axis = (f'<line x1="{PAD_LEFT}" y1="{y(0):.1f}" x2="{CHART_W - PAD_RIGHT}" y2="{y(0):.1f}" stroke="#9aa5b1"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>'
            f'<text x="{PAD_LEFT - 6}" y="{y(top) + 4:.1f}" text-anchor="end">{top:.2f}</text>')
    labels = (f'<text x="{PAD_LEFT}" y="{CHART_H - 8}">{esc(_short_time(windows[0].end))}</text>'
              f'<text x="{CHART_W - PAD_RIGHT}" y="{CHART_H - 8}" text-anchor="end">'
              f"{esc(_short_time(windows[-1].end))}</text>") if windows else ""
    return (f'<svg class="drift-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" '
            f'role="img" aria-label="Drift share of the last {len(windows)} monitoring windows" '
            f'font-size="11" fill="#52606d">{axis}{"".join(lines)}{"".join(marks)}{labels}</svg>')


def _bar(window: WindowView, x: float, width: float, y: Callable[[float], float], alert: float,
         retrain: float) -> str:
    share = window.drift_share
    if share is None:
        level, top, height = "insufficient", y(0) - INSUFFICIENT_H, INSUFFICIENT_H
        what = "too few rows to decide"
    else:
        level = "retrain" if share >= retrain else "alert" if share >= alert else "ok"
        top, height = y(share), max(1.5, y(0) - y(share))
        what = f"drift share {share:.3f}"
    rows = "" if window.rows is None else f", {window.rows:,} rows"
    title = f"{_short_time(window.start)} – {_short_time(window.end)} UTC: {what}, action {window.action}{rows}"
    bar = (f'<rect class="window-mark {level}" x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{height:.1f}" '
           f'rx="1.5" fill="{LEVEL_COLOURS[level]}" data-end="{esc(window.end)}"><title>{esc(title)}</title></rect>')
    if window.action in ACTION_COLOURS:  # what the monitor did, above its window's bar
        bar += (f'<circle class="action-mark" cx="{x + width / 2:.1f}" cy="{top - 6:.1f}" r="3" '
                f'fill="{ACTION_COLOURS[window.action]}"><title>{esc(window.action)}</title></circle>')
    return bar


def _threshold(name: str, value: float, y: Callable[[float], float]) -> str:
    level = y(value)
    return (f'<line class="threshold" x1="{PAD_LEFT}" y1="{level:.1f}" x2="{CHART_W - PAD_RIGHT}" y2="{level:.1f}" '
            f'stroke="{LEVEL_COLOURS[name]}" stroke-dasharray="4 3"/>'
            f'<text x="{PAD_LEFT - 6}" y="{level + 4:.1f}" text-anchor="end">{esc(name)} {value:g}</text>')


def _history(moves: list[dict[str, object]]) -> str:
    rows = "".join(
        f'<tr class="move"><td>{esc(_short_time(str(m.get("at"))))}</td>'
        f'<td>{_version_or_none(m.get("from_version"))} → {_version_or_none(m.get("to_version"))}</td>'
        f'<td>{_badge(str(m.get("action")))}</td><td>{esc(m.get("actor"))}</td><td>{esc(m.get("reason"))}</td></tr>'
        for m in moves)
    return ('<table class="history"><tr><th>when (UTC)</th><th>move</th><th>action</th><th>actor</th>'
            f"<th>reason</th></tr>{rows}</table>")


def _version_or_none(value: object) -> str:
    return "none" if value is None else f"v{esc(value)}"


def _short_time(value: str | None) -> str:
    """`2026-11-27T14:05:00+00:00` -> `2026-11-27 14:05` (every time on the page is UTC)."""
    if not value:
        return "–"
    return value.replace("T", " ")[:16]
