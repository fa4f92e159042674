"""The review of a version held for review: what the reviewer sees, their answer, and the promotion it allows.

The approval itself (Airflow's HITL operator, through a live api-server) is tested in
tests/e2e/test_review_approval.py; here the pure parts, and `promote_version` / `record_review`
on a real MLflow registry and state database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.config import load_config
from autopilot.pipeline.context import Approval, RunContext
from autopilot.pipeline.gates import promote_version
from autopilot.pipeline.review import (
    APPROVE,
    REJECT,
    answered,
    hold_for_review,
    pending,
    record_review,
    recorded_review,
    review_request,
    timed_out,
)
from autopilot.versions.promotion import current, history
from tests.lifecycle_support import register_version, write_config

DECIDED = {"decision": "review", "version": 3, "champion_version": 2,
           "reasons": ["quality: inconclusive against the champion (interval [-0.012, 0.004])",
                       "fairness: demographic parity ratio by sex inconclusive"]}


@pytest.fixture
def cfg(tmp_path: Path) -> Any:
    return load_config(write_config(tmp_path / "config", "reviewed"))


def test_the_request_names_model_version_champion_and_reasons(cfg: Any) -> None:
    request = review_request(cfg, DECIDED)
    assert request.subject == "Promote reviewed v3 to champion?"
    assert "`reviewed`" in request.body and "**version** 3" in request.body and "**champion** v2" in request.body
    for reason in DECIDED["reasons"]:
        assert f"- {reason}" in request.body
    assert "72 h" in request.body  # the default `gates.review.timeout_hours`
    first = review_request(cfg, {**DECIDED, "champion_version": None, "reasons": []}, timeout_hours=0.5)
    assert "none (first run)" in first.body and "(no reasons recorded)" in first.body and "0.5 h" in first.body


def test_an_answer_names_the_reviewer_and_takes_the_comment_as_reason() -> None:
    yes = answered(DECIDED, [APPROVE], {"id": "7", "name": "alice"}, "  holdout checked by hand ")
    assert yes == {"outcome": "approved", "version": 3, "actor": "airflow-user:alice",
                   "reason": "holdout checked by hand"}
    no = answered(DECIDED, [REJECT], {"id": "bob-id", "name": ""}, None)
    assert (no.outcome, no.actor, no.reason) == ("rejected", "airflow-user:bob-id", "rejected in Airflow by bob-id")
    assert answered(DECIDED, [REJECT], None, "x" * 5000).reason.endswith(" ...")
    for bad in ([], [APPROVE, REJECT], ["Maybe"]):  # fail closed: nothing is promoted on a malformed answer
        with pytest.raises(ValueError, match="a review answers"):
            answered(DECIDED, bad, {"name": "alice"}, None)


def test_timeout_and_pending_say_nothing_was_promoted(cfg: Any) -> None:
    late = timed_out(DECIDED, 72)
    assert late.outcome == "timed_out" and late.actor is None
    assert "no reviewer answered within 72 h: version 3 was not promoted" in late.reason
    assert hold_for_review(cfg, None, None, {**DECIDED, "decision": "promote"}) is None
    held = hold_for_review(cfg, None, None, DECIDED)
    assert held == pending(cfg, DECIDED) and held is not None and held.outcome == "pending"
    assert "autopilot promote reviewed --version 3 --reason" in held.reason


def test_the_operator_offers_the_options_the_review_reads() -> None:
    from autopilot.orchestration.review import OPTIONS

    assert OPTIONS == [APPROVE, REJECT]


def test_review_timeout_is_a_config_key(tmp_path: Path) -> None:
    from autopilot.config import ConfigError
    from tests.helpers import adult_config_dict

    assert load_config(write_config(tmp_path, "defaulted")).gates.review.timeout_hours == 72.0
    import yaml

    raw = adult_config_dict(name="bad", registry={"name": "bad"})
    raw["gates"]["review"] = {"timeout_hours": 0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="timeout_hours"):
        load_config(tmp_path / "bad.yaml")


def _promote(cfg: Any, settings: Any, number: int, approval: Any) -> Any:
    dag_id = f"autopilot_training__{cfg.name}"
    ctx = RunContext(run_id="r1", dag_id=dag_id, actor=f"airflow:{dag_id}")
    reg = registry.connect(settings)
    run_id = str(reg.resolve_version(cfg.registered_model_name, number).run_id)
    registered = {"name": cfg.registered_model_name, "version": number, "run_id": run_id}
    decided = {"decision": "review", "version": number, "champion_version": None, "reasons": ["first run: review"]}
    return promote_version(cfg, settings, ctx, registered, decided, approval)


@pytest.mark.usefixtures("mlflow_clean")
def test_only_an_approval_promotes_a_reviewed_version_and_names_the_reviewer(settings: Any, tmp_path: Path) -> None:
    cfg = load_config(write_config(Path(settings.config_dir), "reviewed"))
    assert register_version(cfg, settings, 1) == 1
    name = cfg.registered_model_name
    for refused in (None, pending(cfg, {**DECIDED, "version": 1}), timed_out({**DECIDED, "version": 1}, 72),
                    Approval(outcome="rejected", version=1, actor="airflow-user:alice", reason="no"),
                    Approval(outcome="approved", version=2, actor="airflow-user:alice", reason="another version")):
        result = _promote(cfg, settings, 1, refused)
        assert result["promoted"] is False and result["decision"] == "review", refused
    assert current(name, CHAMPION, registry.connect(settings)) is None and history(settings, name) == []

    approval = Approval(outcome="approved", version=1, actor="airflow-user:alice", reason="checked by hand")
    first = _promote(cfg, settings, 1, approval)
    again = _promote(cfg, settings, 1, approval)  # a retried promote task: the same move, recorded once
    assert first["promoted"] and again["promoted"]
    assert current(name, CHAMPION, registry.connect(settings)) == 1
    moves = history(settings, name)
    assert [(m.from_version, m.to_version, m.actor, m.reason) for m in moves] == [
        (None, 1, "airflow-user:alice", "approved on review: checked by hand")]


@pytest.mark.usefixtures("mlflow_clean")
def test_a_rejection_is_recorded_on_the_version_and_takes_challenger_off(settings: Any) -> None:
    cfg = load_config(write_config(Path(settings.config_dir), "reviewed"))
    assert register_version(cfg, settings, 1) == 1
    reg = registry.connect(settings)
    name = cfg.registered_model_name
    reg.set_alias(name, CHALLENGER, 1)
    rejected = answered({**DECIDED, "version": 1}, [REJECT], {"name": "alice"}, "not convinced")
    decided = {**DECIDED, "version": 1}
    assert recorded_review(cfg, settings, decided, "r1") is None  # nothing answered yet: ask
    record_review(cfg, settings, rejected, "r1")
    record_review(cfg, settings, rejected, "r1")  # a retry changes nothing
    # A retried review task of the same run finds the answer; another run's review asks again.
    assert recorded_review(cfg, settings, decided, "r1") == rejected
    assert recorded_review(cfg, settings, decided, "r2") is None
    tags = reg.resolve_version(name, 1).tags
    assert (tags["autopilot.review"], tags["autopilot.reviewed_by"], tags["autopilot.review_reason"]) == (
        "rejected", "airflow-user:alice", "not convinced")
    assert current(name, CHALLENGER, reg) is None and current(name, CHAMPION, reg) is None
