from __future__ import annotations

import json

from autopilot.gates.decision import decide, decision_record, decision_tags
from autopilot.reports import GateReport


def reports(**passed: bool) -> list[GateReport]:
    return [GateReport(name=name, passed=ok, reasons=[] if ok else [f"{name} broke"]) for name, ok in passed.items()]


def test_all_passing_gates_promote() -> None:
    assert decide(reports(quality=True, explainability=True, fairness=True, infra=True)) == ("promote", [])


def test_any_failure_rejects_with_every_reason() -> None:
    verdict, reasons = decide(reports(quality=True, explainability=False, fairness=False, infra=True))
    assert verdict == "reject"
    assert reasons == ["explainability: explainability broke", "fairness: fairness broke"]


def test_a_missing_report_fails_closed() -> None:
    verdict, reasons = decide(reports(quality=True, explainability=True, fairness=True))
    assert verdict == "reject" and reasons == ["infra: the gate did not report (fails closed)"]


def test_first_run_review_is_not_a_rejection_unless_something_else_failed() -> None:
    review = GateReport(name="quality", passed=False, reasons=["first run: a human must promote it"],
                        details={"requires_review": True})
    others = reports(explainability=True, fairness=True, infra=True)
    assert decide([review, *others])[0] == "review"
    assert decide([review, *reports(explainability=True, fairness=False, infra=True)])[0] == "reject"


def test_record_and_tags() -> None:
    gates = reports(quality=True, explainability=True, fairness=False, infra=True)
    record = decision_record("m", 3, gates, run_id="r", data_snapshot="abc", actor="airflow:x", dag_run="d",
                             baseline_version=2)
    json.dumps(record)
    assert record["decision"] == "reject" and record["version"] == 3 and record["baseline_version"] == 2
    assert [g["name"] for g in record["gates"]] == ["quality", "explainability", "fairness", "infra"]
    tags = decision_tags(record)
    assert tags["autopilot.decision"] == "reject" and tags["autopilot.gate.fairness"] == "failed"
    assert tags["autopilot.decision_reasons"] == "fairness: fairness broke"
    assert tags["autopilot.compared_with"] == "2"
    first = decision_tags(decision_record("m", 1, gates, run_id="r", data_snapshot="abc", actor="a", dag_run="d",
                                          baseline_version=None))
    assert "autopilot.compared_with" not in first  # a first run was compared with no champion


def test_a_second_opinion_is_recorded_beside_the_decision_and_only_a_worse_one_can_change_it() -> None:
    from autopilot.gates.decision import second_opinion, second_opinion_tags, with_second_opinion

    record = {"decision": "promote", "reasons": []}

    def report(verdict: str) -> GateReport:
        return GateReport(name="quality", passed=verdict != "worse", details={"baseline": {
            "decision": verdict, "metric": "roc_auc", "difference": -0.03 if verdict == "worse" else 0.02,
            "ci": [-0.05, -0.01] if verdict == "worse" else [0.01, 0.03]}})

    common = {"first_decision": "promote", "rows": 900, "labeled_rows": 400, "needed_labeled_rows": 200,
              "on_too_few": "promote"}
    better = second_opinion("shadow", report("better"), on_worse="reject", **common)
    assert better["action"] == "promote" and better["opinion"] == "better"
    assert with_second_opinion(record, better)["final_decision"] == "promote"
    noted = second_opinion("shadow", report("worse"), on_worse="note", **common)
    assert noted["action"] == "promote" and "noted" in noted["reasons"][-1]
    rejected = second_opinion("shadow", report("worse"), on_worse="reject", **common)
    updated = with_second_opinion(record, rejected)
    assert updated["final_decision"] == "reject" and updated["decision"] == "promote"  # the first decision is kept
    assert with_second_opinion(updated, better)["final_decision"] == "promote"  # the same source replaces itself
    held = second_opinion("shadow", report("worse"), on_worse="review", **common)
    assert with_second_opinion(record, held)["final_decision"] == "review"
    few = second_opinion("shadow", None, on_worse="reject", **{**common, "labeled_rows": 50, "on_too_few": "review"})
    assert (few["status"], few["opinion"], few["action"]) == ("too_few_labels", None, "review")
    assert second_opinion_tags(few)["autopilot.second_opinion.shadow"] == "too_few_labels"
    assert second_opinion_tags(rejected)["autopilot.second_opinion.shadow.action"] == "reject"
