"""A person's review of a version the gates held for review (`decide` said `review`).

In the training DAG the `review` task is an approval in Airflow's "Required actions"
(`autopilot.orchestration.review`, the standard provider's human-in-the-loop operator): it shows
`review_request`'s subject and body, waits up to `gates.review.timeout_hours`, and turns the
answer into an `Approval` (`answered`, `timed_out`), which `record_review` writes to the version's
tags. `promote` then moves `champion` only for an `approved` answer, recording the reviewer as the
move's actor in the alias history (`autopilot.pipeline.gates.promote_version`).

`autopilot run` has nobody to ask: its `review` stage (`hold_for_review`) leaves the version
`pending` as `challenger`, for `autopilot promote` by hand.

No Airflow here: the operator calls these functions with plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from autopilot.pipeline.context import Approval, Decision, RunContext, coerce

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "APPROVE",
    "REJECT",
    "REVIEW_TAG",
    "ReviewRequest",
    "answered",
    "hold_for_review",
    "pending",
    "record_review",
    "recorded_review",
    "review_request",
    "timed_out",
]

APPROVE, REJECT = "Approve", "Reject"  # the options the reviewer sees
REVIEW_TAG = "autopilot.review"  # approved | rejected | timed_out
REVIEWED_BY_TAG = "autopilot.reviewed_by"
REVIEW_REASON_TAG = "autopilot.review_reason"
REVIEWED_AT_TAG = "autopilot.reviewed_at"
REVIEW_RUN_TAG = "autopilot.review_run"  # the DAG run whose review task recorded the answer
MAX_REASON_CHARS = 1000  # a comment is free text: it goes to tags, notes and Slack


@dataclass(frozen=True)
class ReviewRequest:
    """What the reviewer is shown: a one-line subject and a Markdown body."""

    subject: str
    body: str


def review_request(cfg: LoadedConfig, decided: Mapping[str, Any], timeout_hours: float | None = None) -> ReviewRequest:
    """The approval's subject and body: model, version, the champion it was compared with, the reasons."""
    decision = coerce(decided, Decision)
    model = cfg.registered_model_name
    champion = f"v{decision.champion_version}" if decision.champion_version is not None else "none (first run)"
    reasons = "\n".join(f"- {reason}" for reason in decision.reasons) or "- (no reasons recorded)"
    hours = cfg.gates.review.timeout_hours if timeout_hours is None else timeout_hours
    body = (f"**Model** `{model}`, **version** {decision.version}, compared with **champion** {champion}.\n\n"
            f"The promotion gates held this version for review:\n\n{reasons}\n\n"
            f"**Approve** makes version {decision.version} the champion (if the champion is still {champion}); "
            "**Reject** promotes nothing. The comment is recorded as the reason. "
            f"Without an answer within {hours:g} h nothing is promoted.")
    return ReviewRequest(subject=f"Promote {model} v{decision.version} to champion?", body=body)


def _reviewer(user: Mapping[str, Any] | None) -> str:
    """The actor recorded for a reviewer: `airflow-user:<name>` (their id when the name is empty)."""
    name = str((user or {}).get("name") or (user or {}).get("id") or "").strip()
    return f"airflow-user:{name or 'unknown'}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + " ..."


def answered(decided: Mapping[str, Any], chosen: list[str], user: Mapping[str, Any] | None,
             comment: str | None) -> Approval:
    """A reviewer's answer as an `Approval` (`approved` only for exactly `Approve`).

    Raises:
        ValueError: no option, or one that was not offered (fail closed: nothing is promoted).
    """
    decision = coerce(decided, Decision)
    if len(chosen) != 1 or chosen[0] not in (APPROVE, REJECT):
        raise ValueError(f"a review answers {APPROVE!r} or {REJECT!r}, not {chosen!r}")
    actor = _reviewer(user)
    approved = chosen[0] == APPROVE
    verb = "approved" if approved else "rejected"
    text = (comment or "").strip()
    reason = _clip(text) if text else f"{verb} in Airflow by {actor.removeprefix('airflow-user:')}"
    return Approval(outcome=verb, version=decision.version, actor=actor, reason=reason)


def timed_out(decided: Mapping[str, Any], hours: float) -> Approval:
    """No answer within `hours`: nothing is promoted."""
    decision = coerce(decided, Decision)
    return Approval(outcome="timed_out", version=decision.version, actor=None,
                    reason=f"no reviewer answered within {hours:g} h: version {decision.version} was not promoted "
                           "(it stays challenger; `autopilot promote` can still promote it)")


def record_review(cfg: LoadedConfig, settings: Settings, approval: Mapping[str, Any], run_id: str = "") -> None:
    """Write the review's outcome to the version's tags; a rejected version also loses `challenger`.

    Idempotent (a retry writes the same tags). `run_id` (the DAG run) lets a retried review task
    find the answer already given (`recorded_review`) instead of asking again. The alias history
    records the approval itself, as the actor of `champion`'s move (`promote_version`).
    """
    from autopilot.adapters.registry import connect
    from autopilot.aliases import CHALLENGER
    from autopilot.versions.promotion import current, model_lock

    approval = coerce(approval, Approval)
    name, number = cfg.registered_model_name, approval.version
    registry = connect(settings)
    tags = {REVIEW_TAG: approval.outcome, REVIEWED_BY_TAG: approval.actor or "",
            REVIEW_REASON_TAG: approval.reason, REVIEWED_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds"),
            REVIEW_RUN_TAG: run_id}
    for key, value in tags.items():
        registry.set_version_tag(name, number, key, value)
    if approval.outcome == "rejected":
        with model_lock(settings, name):
            if current(name, CHALLENGER, registry) == number:
                registry.delete_alias(name, CHALLENGER)


def recorded_review(cfg: LoadedConfig, settings: Settings, decided: Mapping[str, Any], run_id: str) -> Approval | None:
    """The answer this DAG run's review already recorded on the version, or None (ask).

    A review task retried after its answer was recorded (Airflow can retry a resumed task when
    its executor's events arrive late) returns that answer rather than asking the reviewer twice.
    """
    from autopilot.adapters.registry import connect

    version = coerce(decided, Decision).version
    tags = connect(settings).resolve_version(cfg.registered_model_name, version).tags or {}
    if not run_id or tags.get(REVIEW_RUN_TAG) != run_id or not tags.get(REVIEW_TAG):
        return None
    return Approval(outcome=tags[REVIEW_TAG], version=version, actor=tags.get(REVIEWED_BY_TAG) or None,
                    reason=tags.get(REVIEW_REASON_TAG, ""))


def hold_for_review(cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                    decided: Mapping[str, Any]) -> Approval | None:
    """`autopilot run`'s review stage: nobody to ask in process, so a `review` stays pending.

    Returns None when the decision is not `review` (the DAG skips its approval task then).
    """
    return pending(cfg, decided) if coerce(decided, Decision).decision == "review" else None


def pending(cfg: LoadedConfig, decided: Mapping[str, Any]) -> Approval:
    """A `review` nobody could answer here: the version stays `challenger`, promotable by hand."""
    version = coerce(decided, Decision).version
    return Approval(outcome="pending", version=version,
                    reason=f"held for review: approve it in the Airflow UI (a training DAG run's `review` task) "
                           f"or run `autopilot promote {cfg.name} --version {version} --reason '...'`")
