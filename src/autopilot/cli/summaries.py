"""What the commands print: sentences and small tables, never a Python dict or list.

Pure formatting of plain records (a decision's tags, a promotion status, a pipeline result, a
monitoring window): each function returns lines, the command prints them. `--json` flags keep
the machine-readable form where a command has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["decision_lines", "gate_rows", "join", "monitor_lines", "run_lines", "simulation_lines",
           "status_lines", "table", "value_text"]


def value_text(value: Any) -> str:
    """One value as a reader wants it: numbers rounded, lists joined, mappings as `key value` pairs."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {value_text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(value_text(v) for v in value) or "-"
    return str(value)


def join(items: Iterable[Any], empty: str = "none") -> str:
    """Items as `a, b, c` (`empty` when there are none)."""
    shown = [value_text(item) for item in items]
    return ", ".join(shown) if shown else empty


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "  ") -> list[str]:
    """A plain-text table: a header, a rule, one line per row, columns padded to their widest cell."""
    cells = [[value_text(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[k]) for row in cells)]) for k, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return (indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()

    return [line(list(headers)), line(["-" * width for width in widths]), *(line(row) for row in cells)]


def gate_rows(decision: Mapping[str, Any], width: int = 90) -> list[tuple[str, str, str]]:
    """(gate, result, one-line reason) for each gate of a decision read from its tags (`last_decision`)."""
    reasons = [r for r in str(decision.get("reasons") or "").split("; ") if r]
    rows = []
    for gate, result in (decision.get("gates") or {}).items():
        own = [r.removeprefix(f"{gate}: ") for r in reasons if r.startswith(f"{gate}: ")]
        reason = own[0] if own else ("every check passed" if result == "passed" else "no reason recorded")
        if len(own) > 1:
            reason += f" (and {len(own) - 1} more)"
        rows.append((gate, result, reason if len(reason) <= width else reason[: width - 3] + "..."))
    return rows


def decision_lines(decision: Mapping[str, Any] | None) -> list[str]:
    """A decision as a sentence and a table of its gates (gate, result, reason)."""
    if not decision:
        return ["no decision recorded yet"]
    when = f" at {decision['decided_at']}" if decision.get("decided_at") else ""
    lines = [f"version {decision['version']}: {decision['decision']}{when}"]
    rows = gate_rows(decision)
    if rows:
        lines += table(("gate", "result", "reason"), rows)
    return lines


def status_lines(name: str, state: Mapping[str, Any]) -> list[str]:
    """`autopilot status`: champion, challenger, the last decision with its gates, the alias history."""
    lines = [f"{name}: champion {value_text(state['champion'])}, challenger {value_text(state['challenger'])}, "
             f"rollback target {value_text(state['rollback_target'])}"]
    for move in state.get("pending", []):  # a move whose process died half-way; the next move settles it
        lines.append(f"interrupted move, settled by the next move: {move['action']} {value_text(move['from_version'])}"
                     f" -> {move['to_version']} by {move['actor']} at {move['at']}")
    decision = state.get("last_decision")
    if decision:
        lines.append(f"last decision: version {decision['version']} -> {decision['decision']} "
                     f"({decision.get('decided_at') or 'time unknown'})")
        lines += decision_lines(decision)[1:]
        lines += [f"  - {reason}" for reason in str(decision.get("reasons") or "").split("; ") if reason]
    else:
        lines.append("last decision: none recorded yet")
    history = list(state.get("history", []))
    if not history:
        lines.append("alias history: no moves yet")
        return lines
    lines.append("alias history (oldest first):")
    lines += table(("at", "action", "from", "to", "by", "reason"),
                   [(m["at"], m["action"], m["from_version"], m["to_version"], m["actor"], m["reason"])
                    for m in history])
    return lines


def run_lines(result: Mapping[str, Any], decision: Mapping[str, Any] | None) -> list[str]:
    """`autopilot run`'s summary: the version, its test metrics, the decision with its gates, promotion, rollout.

    Args:
        result: what `run_pipeline` returned.
        decision: the version's decision as its tags say (`last_decision`), None when not decided.
    """
    lines = [f"registered      {result['name']} version {result['version']} (MLflow run {result.get('run_id') or '-'})"]
    metrics = result.get("metrics") or {}
    if metrics:
        lines.append("test metrics    " + ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in metrics.items()))
    if decision and int(decision["version"]) == int(result["version"]):
        shown = decision_lines(decision)
        lines += ["decision        " + shown[0], *shown[1:]]
    elif result.get("decision"):
        lines.append(f"decision        {result['decision']}")
    if "promoted" in result:
        lines.append("promoted        " + ("yes: it is the champion now" if result["promoted"] else "no"))
    rollout = result.get("rollout")
    if isinstance(rollout, Mapping):
        said = rollout.get("reason") or ("skipped" if rollout.get("skipped") else
                                         "passed" if rollout.get("passed") else "failed")
        lines.append(f"rollout         {said}")
    return lines


def monitor_lines(result: Mapping[str, Any]) -> list[str]:
    """One monitored window: the version and rows, the action and its reasons, a retrain it asked for, the reports."""
    strategy = f" ({result['strategy']})" if result.get("strategy") else ""
    lines = [f"window {result.get('window_start', '?')} to {result.get('window_end', '?')}: version "
             f"{result.get('version', '?')}, {result.get('rows', 0)} rows -> {result.get('action', '?')}{strategy}"]
    lines += [f"  - {reason}" for reason in result.get("reasons") or []]
    if result.get("blocked_by"):
        lines.append(f"  held back by: {value_text(result['blocked_by'])}")
    if result.get("trigger_run_id"):
        lines.append(f"  retrain run: {result['trigger_run_id']}")
    for key, label in (("report_uri", "report"), ("html_uri", "Evidently")):
        if result.get(key):
            lines.append(f"  {label} {result[key]}")
    return lines


def simulation_lines(result: Any) -> list[str]:
    """One simulated traffic run: requests, rows, failures, labels, the versions that answered, the shift."""
    lines = [f"scenario {result.scenario}: {result.requests} requests, {result.rows} rows, {result.failed} failed, "
             f"{result.labelled_rows} labelled rows, in {result.seconds:.1f} s",
             "  versions that answered: " + join(f"v{v} ({n} rows)" for v, n in dict(result.versions).items()),
             f"  shift: {value_text(result.shift) if result.shift else 'none'}"]
    if result.first_error:
        lines.append(f"  first error: {result.first_error}")
    return lines
