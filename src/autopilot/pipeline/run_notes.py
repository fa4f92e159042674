"""The text of a DAG run's note: what the run decided, in words, for the Airflow UI.

Pure: the note is built from the shapes the tasks already have (the decision record of
`autopilot.gates.decision.decision_record`, the `Approval` and `Promotion` dicts of the review and
promotion tasks, `autopilot.pipeline.monitoring.monitor_window`'s result); writing it through the
REST API is `autopilot.orchestration.notes`'s job. The same inputs give the same text, so a
retried task writes the same note again.

Training, first line = the outcome (it holds `promoted`, `rejected` or `held for review`):
`v2 promoted over v1: every gate passed`, `v3 rejected by alice in review`, ...; a rejection by
the gates keeps the `Stopped by a gate: ` prefix. Then one line per gate
(`quality: passed - roc_auc 0.9301 vs v1 0.9277 (diff +0.0024, 95% CI [...])`) and, for a retrain
the monitoring loop asked for, the window and its reason. Monitoring: the window, its action and
strategy, the rows, the top reasons and the retrain triggered or blocked.

A note holds at most `MAX_NOTE` characters (the API's limit): detail lines are clipped or left
out, never the first line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["GATE_ORDER", "MAX_NOTE", "STOPPED", "gate_line", "known_data_note", "monitoring_note", "retrain_line",
           "training_note"]

MAX_NOTE = 1000  # autopilot.adapters.airflow_api.MAX_NOTE (not imported: that module needs httpx)
STOPPED = "Stopped by a gate: "  # the prefix of a run a gate stopped (Slack alerts and tests read it)
INCOMPLETE = "ROLLBACK INCOMPLETE:"  # autopilot.pipeline.deploy.RollbackIncomplete's first words
GATE_ORDER = ("quality", "explainability", "fairness", "infra")  # autopilot.gates.decision.EXPECTED_GATES
MAX_WHY = 300  # the reason quoted in a first line
MAX_LINE = 240  # one detail line
TOP_REASONS = 3  # a monitoring note's reasons
BULLET = "\n- "  # a detail line: a Markdown list item


# ---------------------------------------------------------------------------- training


def training_note(record: Mapping[str, Any], *, conf: Mapping[str, Any] | None = None,
                  approval: Mapping[str, Any] | None = None, promotion: Mapping[str, Any] | None = None,
                  rollout: Mapping[str, Any] | None = None) -> str:
    """The note of a training run, as far as it got.

    Args:
        record: the version's decision record (`decision_record`: version, baseline_version,
            gates, decision, reasons).
        conf: the DAG run's conf (a retrain the monitoring loop asked for carries its window).
        approval: the `review` task's answer (`Approval`'s dict), once there is one.
        promotion: the `promote` task's result (`Promotion`'s dict), once it ran.
        rollout: what the rollout did: `{"rolled_back": True, "reason": ...}` after a rollback,
            `{"passed": True}` after the smoke test and bake, `{"skipped": True, "reason": ...}`.
    """
    lines = [_training_headline(record, approval, promotion, rollout)]
    if approval and approval.get("reason") and approval.get("outcome") in ("approved", "rejected"):
        lines.append(f"review comment: {approval['reason']}")
    lines.extend(gate_lines(record))
    asked = retrain_line(conf)
    if asked:
        lines.append(asked)
    if rollout and rollout.get("passed"):
        lines.append("rollout: smoke test and bake passed on the live endpoint")
    elif rollout and rollout.get("skipped"):
        lines.append(f"rollout: skipped ({rollout.get('reason') or 'nothing to roll out'})")
    return _fit(lines)


def _training_headline(record: Mapping[str, Any], approval: Mapping[str, Any] | None,
                       promotion: Mapping[str, Any] | None, rollout: Mapping[str, Any] | None) -> str:
    version = f"v{record.get('version')}"
    if record.get("decision") == "reject":
        return f"{STOPPED}{version} rejected: {_failed_gates(record)} failed"
    if promotion is not None and promotion.get("promoted"):
        promoted = _promoted(version, record, approval, promotion)
        if rollout and rollout.get("rolled_back"):
            back = _clip(str(rollout.get("reason") or "the rollout failed"), MAX_WHY)
            if back.startswith(INCOMPLETE):  # said first, as the task's error and the Slack alert say it
                return f"{STOPPED}{back} ({promoted})"
            return f"{STOPPED}{promoted}, then rolled back: {back}"
        return promoted
    answer = (approval or {}).get("outcome")
    who = _reviewer(approval)
    if answer == "rejected":
        return f"{version} rejected by {who} in review"
    if answer == "timed_out":
        return f"{version} held for review, then timed out: {_clip(str((approval or {}).get('reason')), MAX_WHY)}"
    if promotion is not None:  # promote ran and promoted nothing: a review nobody approved
        return f"{version} held for review: {_why(promotion.get('reasons') or record.get('reasons'))}"
    if answer == "approved":
        return f"{version} approved by {who} in review: to be promoted{_over(record.get('baseline_version'))}"
    if record.get("decision") == "review":
        return f"{version} held for review: {_why(record.get('reasons'))}"
    return f"{version} passed every gate: to be promoted{_over(record.get('baseline_version'))}"


def _promoted(version: str, record: Mapping[str, Any], approval: Mapping[str, Any] | None,
              promotion: Mapping[str, Any]) -> str:
    """`v2 promoted over v1: every gate passed`, `v1 promoted (first champion): ...`, `v3 approved by ..."""
    before = promotion.get("from", record.get("baseline_version"))
    if (approval or {}).get("outcome") == "approved":
        place = _over(before) if before is not None else " (first champion)"
        return f"{version} approved by {_reviewer(approval)} and promoted{place}"
    if before is None:
        return f"{version} promoted (first champion): every gate passed"
    return f"{version} promoted over v{before}: every gate passed"


def _over(before: Any) -> str:
    return f" over v{before}" if before is not None else " (first champion)"


def _reviewer(approval: Mapping[str, Any] | None) -> str:
    """The reviewer's name (`airflow-user:alice` -> `alice`)."""
    actor = str((approval or {}).get("actor") or "a reviewer")
    return actor.removeprefix("airflow-user:")


def _why(reasons: Any) -> str:
    found = [str(reason) for reason in (reasons or []) if reason]
    return _clip("; ".join(found) if found else "a reviewer must approve it", MAX_WHY)


def _failed_gates(record: Mapping[str, Any]) -> str:
    """The gates that did not pass (a missing report counts), e.g. `quality, fairness`."""
    reports = {str(g.get("name")): g for g in record.get("gates") or []}
    names = [name for name in _ordered(reports) if not reports[name].get("passed")]
    missing = [name for name in GATE_ORDER if name not in reports]
    failed = [*names, *missing]
    return ", ".join(failed) if failed else "the decision"


def _ordered(reports: Mapping[str, Any]) -> list[str]:
    return [name for name in GATE_ORDER if name in reports] + [name for name in reports if name not in GATE_ORDER]


def gate_lines(record: Mapping[str, Any]) -> list[str]:
    """One line per gate of the record, in the lifecycle's order; a gate that did not report fails."""
    reports = {str(g.get("name")): g for g in record.get("gates") or []}
    lines = [gate_line(reports[name], record.get("baseline_version")) for name in _ordered(reports)]
    return lines + [f"{name}: failed - the gate did not report" for name in GATE_ORDER if name not in reports]


def gate_line(report: Mapping[str, Any], baseline: Any = None) -> str:
    """`<gate>: <passed | failed | inconclusive | report-only> - <one-line reason>`."""
    name = str(report.get("name"))
    status, reason = _status_and_reason(name, report, baseline)
    return _clip(f"{name}: {status} - {reason}" if reason else f"{name}: {status}", MAX_LINE)


def _status_and_reason(name: str, report: Mapping[str, Any], baseline: Any) -> tuple[str, str]:
    details = report.get("details") or {}
    reasons = [str(r) for r in report.get("reasons") or [] if r]
    if not report.get("passed"):
        if details.get("requires_review") and not _inconclusive(name, report):  # held by a policy, not the numbers
            summary = _PASSED.get(name, _nothing)(report, baseline)
            return "passed", "; ".join(part for part in (summary, "held for review (gates.quality.first_run)") if part)
        status = "inconclusive" if details.get("requires_review") else "failed"
        return status, _first(reasons) or "failed without a reason"
    let_through = details.get("passed_inconclusive") or (details.get("inconclusive") if
                                                          details.get("on_inconclusive") == "pass" else None)
    if let_through:
        return "inconclusive", "let through (on_inconclusive: pass): " + _first([str(r) for r in let_through])
    summary = _PASSED.get(name, _nothing)(report, baseline)
    if summary is None:
        return "report-only", _report_only(details)
    return "passed", summary


def _inconclusive(name: str, report: Mapping[str, Any]) -> bool:
    """Whether a report held for review holds for evidence too thin to judge, not for a policy (the
    quality gate's `first_run: require_review` holds a first run whose comparisons passed, or were
    inconclusive and let through by `on_inconclusive: pass`)."""
    if name != "quality":
        return True
    details = report.get("details") or {}
    if (report.get("thresholds") or {}).get("on_inconclusive", "review") != "review":
        return False
    comparisons = [details.get("baseline") or {}, *(details.get("first_run_baselines") or {}).values()]
    return any(isinstance(c, Mapping) and c.get("status") == "inconclusive" for c in comparisons)


def _first(reasons: Sequence[str]) -> str:
    if not reasons:
        return ""
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return _clip(reasons[0], MAX_LINE - 40 - len(more)) + more


def _report_only(details: Mapping[str, Any]) -> str:
    return str(details.get("note") or "nothing gated")


def _nothing(report: Mapping[str, Any], baseline: Any) -> str | None:
    return ""


def _quality(report: Mapping[str, Any], baseline: Any) -> str | None:
    """`roc_auc 0.9301 vs v1 0.9277 (diff +0.0024, 95% CI [-0.0010, +0.0058])`, or against the first-run baselines."""
    metrics, details = report.get("metrics") or {}, report.get("details") or {}
    thresholds = report.get("thresholds") or {}
    compared = details.get("baseline") or {}
    metric = str(compared.get("metric") or thresholds.get("metric") or "")
    ours = metrics.get(metric)
    level = float(thresholds.get("confidence") or 0.95)
    if compared.get("ci") is not None or compared.get("metrics"):
        who = compared.get("champion_version", baseline)
        name = f"v{who}" if who is not None else "the champion"
        return f"{metric} {_num(ours)} vs {name} {_num((compared.get('metrics') or {}).get(metric))} " \
               f"{_interval(compared, level)}"
    firsts = details.get("first_run_baselines") or {}
    if firsts:
        against = ", ".join(f"vs {kind} {_num((c.get('metrics') or {}).get(metric))} {_interval(c, level)}"
                            for kind, c in firsts.items() if isinstance(c, Mapping))
        return f"{metric} {_num(ours)} (first run) {against}"
    return f"{metric} {_num(ours)} (first run: no champion to compare with)" if metric else "first run"


def _interval(comparison: Mapping[str, Any], level: float) -> str:
    ci = comparison.get("ci")
    shown = f"[{_signed(ci[0])}, {_signed(ci[1])}]" if ci else "undefined"
    return f"(diff {_signed(comparison.get('difference'))}, {level:.0%} CI {shown})"


def _explainability(report: Mapping[str, Any], baseline: Any) -> str | None:
    """`top feature relationship 0.214 (max 0.5); nDCG@5 0.93 vs the champion (min 0.8)`."""
    metrics, thresholds = report.get("metrics") or {}, report.get("thresholds") or {}
    parts = []
    if metrics.get("max_share") is not None:
        parts.append(f"top feature {metrics.get('max_share_feature')} {_num(metrics['max_share'], 3)} of "
                     f"attribution (max {thresholds.get('max_feature_share')})")
    if metrics.get("ndcg_at_k") is not None:
        parts.append(f"nDCG@{thresholds.get('top_k')} {_num(metrics['ndcg_at_k'], 3)} vs the champion "
                     f"(min {thresholds.get('min_ndcg')})")
    return "; ".join(parts) or "attributions usable"


def _fairness(report: Mapping[str, Any], baseline: Any) -> str | None:
    """`7 gated metrics within bounds (sex, race); 2 report-only`; None when nothing was gated."""
    details = report.get("details") or {}
    statuses = details.get("metric_status") or {}
    gated = [name for name, status in statuses.items() if status not in ("report only", "report-only")]
    attributes = list((details.get("attributes") or {}).keys())
    share = (report.get("metrics") or {}).get("sensitive_attribution_share")
    if not gated and share is None:
        return None
    shown = f" ({', '.join(attributes)})" if attributes else ""
    only = len(statuses) - len(gated)
    tail = f"; {only} report-only" if only else ""
    if share is not None:
        tail += f"; sensitive attribution share {_num(share, 3)}"
    return f"{len(gated)} gated metric{'s' if len(gated) != 1 else ''} within bounds{shown}{tail}"


def _infra(report: Mapping[str, Any], baseline: Any) -> str | None:
    """`loads in 1.2 s, p95 3.4 ms per row, 210 MB peak; predictions match in process`."""
    metrics = report.get("metrics") or {}
    if not metrics:
        return ""
    parts = []
    if metrics.get("load_seconds") is not None:
        parts.append(f"loads in {float(metrics['load_seconds']):.1f} s")
    if metrics.get("p95_latency_ms") is not None:
        parts.append(f"p95 {float(metrics['p95_latency_ms']):.1f} ms per row")
    if metrics.get("peak_memory_mb") is not None:
        parts.append(f"{float(metrics['peak_memory_mb']):.0f} MB peak")
    if metrics.get("predictions_equal"):
        parts.append("predictions match in process")
    return ", ".join(parts)


_PASSED = {"quality": _quality, "explainability": _explainability, "fairness": _fairness, "infra": _infra}


def retrain_line(conf: Mapping[str, Any] | None) -> str | None:
    """`Retrain asked by monitoring window <start>-<end>: <reason>`, for a run the monitoring loop triggered."""
    conf = conf or {}
    start, end = conf.get("window_start"), conf.get("window_end")
    if not start or not end:
        return None
    reason = str(conf.get("reason") or "no reason given")
    return _clip(f"Retrain asked by monitoring window {_window(start, end)}: {reason}", MAX_LINE * 2)


def known_data_note(version: Any) -> str:
    """A scheduled or data-triggered run on data some version was already trained on."""
    return f"no new version: this data was already trained on (v{version})"


# ---------------------------------------------------------------------------- monitoring


def monitoring_note(result: Mapping[str, Any]) -> str:
    """The note of a monitoring run from `monitor_window`'s result.

    `Window <start>-<end> UTC: <action> (<strategy>)`, the rows, the top reasons, then
    `retrain triggered: run <id>` or `retrain blocked: <why>`.
    """
    action = str(result.get("action") or "none")
    strategy = result.get("strategy")
    head = f"Window {_window(result.get('window_start'), result.get('window_end'))} UTC: {action}"
    lines = [head + (f" ({strategy})" if strategy else "")]
    rows = result.get("rows")
    if not result.get("skipped"):  # a skipped window read no rows: its reason says why
        lines.append(f"{int(rows):,} rows" if isinstance(rows, int | float) else "rows unknown")
    lines.extend(_clip(str(reason), MAX_LINE) for reason in (result.get("reasons") or [])[:TOP_REASONS])
    if result.get("trigger_run_id"):
        lines.append(f"retrain triggered: run {result['trigger_run_id']}")
    elif result.get("blocked_by"):
        lines.append(_clip(f"retrain blocked: {result['blocked_by']}", MAX_LINE))
    return _fit(lines)


def _window(start: Any, end: Any) -> str:
    """`2026-12-07 01:00-02:00` (UTC); the end's date too when it differs from the start's."""
    first, last = _moment(start), _moment(end)
    if first is None or last is None:
        return f"{start}-{end}"
    tail = f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}-{tail}"


def _moment(value: Any) -> datetime | None:
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- text


def _num(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}f}" if math.isfinite(number) else "NaN"


def _signed(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:+.4f}" if math.isfinite(number) else "NaN"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _fit(lines: list[str]) -> str:
    """The lines as Markdown, at most `MAX_NOTE` characters: the first line whole, then detail lines as list
    items while they fit (Airflow renders a note as Markdown: single newlines would run the lines together)."""
    kept = [_clip(lines[0], MAX_NOTE)]
    used = len(kept[0]) + 1  # the blank line after the first line
    for line in lines[1:]:
        room = MAX_NOTE - used - len(BULLET)
        if room < 20:  # not even a readable start of the line: leave it out
            break
        kept.append(BULLET + _clip(line, room))
        used += len(kept[-1])
    return kept[0] + ("\n\n" + "".join(kept[1:]).removeprefix("\n") if len(kept) > 1 else "")
