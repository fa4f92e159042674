"""The decision: every gate report of one version becomes one record and one verdict.

Pure: the record is a JSON-safe dict; storing it (MLflow artifact, version tags) is the
caller's job. A missing report counts as a failure: a gate that did not report did not pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autopilot.reports import GateReport

__all__ = ["EXPECTED_GATES", "decide", "decision_record", "decision_tags"]

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
