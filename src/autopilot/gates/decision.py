"""The decision: every gate report of one version becomes one record and one verdict.

Pure: the record is a JSON-safe dict; storing it (MLflow artifact, version tags) is the
caller's job. A missing report counts as a failure: a gate that did not report did not pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autopilot.reports import GateReport

__all__ = [
    "EXPECTED_GATES",
    "decide",
    "decision_record",
    "decision_tags",
    "second_opinion",
    "second_opinion_tags",
    "with_second_opinion",
]

EXPECTED_GATES = ("quality", "explainability", "fairness", "infra")
PROMOTE, REJECT, REVIEW = "promote", "reject", "review"


def decide(reports: list[GateReport], expected: tuple[str, ...] = EXPECTED_GATES) -> tuple[str, list[str]]:
    """The verdict over all gate reports, with the reasons behind it.

    Returns:
        (`promote` | `reject` | `review`, reasons). `review` only when the one thing holding the
        version back is the first-run policy `require_review` (every check otherwise passed).
    """
    names = {report.name for report in reports}
    missing = [f"{name}: the gate did not report (fails closed)" for name in expected if name not in names]
    failing = [report for report in reports if not report.passed]
    hard = [report for report in failing if not report.details.get("requires_review")]
    reasons = missing + [f"{r.name}: {reason}" for r in failing for reason in (r.reasons or ["failed"])]
    if missing or hard:
        return REJECT, reasons
    return (REVIEW, reasons) if failing else (PROMOTE, [])


def decision_record(model: str, version: int, reports: list[GateReport], *, run_id: str,
                    data_snapshot: str, actor: str, dag_run: str | None,
                    baseline_version: int | None) -> dict[str, Any]:
    """One JSON-safe record of every gate report and the verdict for a version."""
    verdict, reasons = decide(reports)
    return {
        "model": model,
        "version": version,
        "run_id": run_id,
        "data_snapshot": data_snapshot,
        "baseline_version": baseline_version,
        "gates": [report.model_dump(mode="json") for report in reports],
        "decision": verdict,
        "reasons": reasons,
        "actor": actor,
        "dag_run": dag_run,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def decision_tags(record: dict[str, Any]) -> dict[str, str]:
    """The record's summary as model-version tags (the full record is an artifact)."""
    tags = {
        "autopilot.decision": record["decision"],
        "autopilot.decided_at": record["decided_at"],
        "autopilot.decided_by": record["actor"],
    }
    if record.get("baseline_version") is not None:  # the champion it was compared with (the Models page lists it)
        tags["autopilot.compared_with"] = str(record["baseline_version"])
    for gate in record["gates"]:
        tags[f"autopilot.gate.{gate['name']}"] = "passed" if gate["passed"] else "failed"
    if record["reasons"]:
        tags["autopilot.decision_reasons"] = "; ".join(record["reasons"])[:4000]
    return tags


# ---------------------------------------------------------------------------- second opinions


def second_opinion(source: str, report: GateReport | None, *, first_decision: str, rows: int, labeled_rows: int,
                   needed_labeled_rows: int, on_worse: str, on_too_few: str,
                   context: dict[str, Any] | None = None) -> dict[str, Any]:
    """A second opinion on a version already decided: the quality comparison on other traffic.

    `report` is the quality gate's report (`gates.quality.evaluate_quality`) of the challenger
    against the champion on that traffic (shadow: the same live requests, with their labels);
    None when there were too few labeled rows to compare. The opinion is the comparison's
    champion verdict (`better`, `equivalent`, `worse`, `inconclusive`, `undefined`); only
    `worse` can change what happens: `on_worse` (`note`: nothing, `review`, `reject`).
    Without a comparison, `on_too_few` (`promote`: as decided, `review`, `reject`).

    Returns a JSON-safe dict: source, status (`compared` | `too_few_labels`), opinion, action
    (what happens now: `promote`, `review` or `reject`), reasons, rows, labeled_rows, and the
    comparison (CI, difference, metrics of both) when there was one.
    """
    opinion: dict[str, Any] = {"source": source, "first_decision": first_decision, "rows": rows,
                               "labeled_rows": labeled_rows, "needed_labeled_rows": needed_labeled_rows,
                               **(context or {})}
    if report is None:
        action = first_decision if on_too_few == PROMOTE else on_too_few
        opinion.update(status="too_few_labels", opinion=None, action=action, reasons=[
            f"{source}: {labeled_rows} labeled rows of the {needed_labeled_rows} needed for a second opinion; "
            f"none given (on_too_few_labels: {on_too_few})"])
        return opinion
    comparison = dict(report.details.get("baseline") or {})
    verdict = str(comparison.get("decision") or "undefined")
    worse = verdict == "worse"
    action = on_worse if worse and on_worse != "note" else first_decision
    ci = comparison.get("ci")
    interval = f", interval {ci[0]:.4f} to {ci[1]:.4f}" if ci else ""
    reasons = [f"{source}: challenger {verdict} than the champion on {labeled_rows:,} labeled live rows "
               f"({comparison.get('metric')} difference {comparison.get('difference', float('nan')):.4f}{interval})"]
    if worse:
        outcome = {"note": "noted; the first decision stands", REJECT: "the version is rejected",
                   REVIEW: "held for a human (autopilot promote)"}.get(on_worse, on_worse)
        reasons.append(f"{source}: on_worse is {on_worse}: {outcome}")
    opinion.update(status="compared", opinion=verdict, action=action, reasons=reasons, comparison=comparison,
                   challenger_metrics=report.metrics, report_reasons=report.reasons)
    return opinion


def with_second_opinion(record: dict[str, Any], opinion: dict[str, Any]) -> dict[str, Any]:
    """The decision record with `opinion` under `second_opinions[<source>]` (a repeat replaces it:
    idempotent), and `final_decision`: the first decision unless an opinion changed it."""
    opinions = {**dict(record.get("second_opinions") or {}), opinion["source"]: opinion}
    actions = {str(other.get("action")) for other in opinions.values()}
    final = REJECT if REJECT in actions else REVIEW if REVIEW in actions else record["decision"]
    return {**record, "second_opinions": opinions, "final_decision": final}


def second_opinion_tags(opinion: dict[str, Any]) -> dict[str, str]:
    """The opinion's summary as model-version tags."""
    source = opinion["source"]
    tags = {f"autopilot.second_opinion.{source}": str(opinion.get("opinion") or opinion["status"]),
            f"autopilot.second_opinion.{source}.action": str(opinion["action"])}
    if opinion.get("reasons"):
        tags[f"autopilot.second_opinion.{source}.reasons"] = "; ".join(opinion["reasons"])[:4000]
    return tags
