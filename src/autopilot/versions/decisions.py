"""A version's decision as its tags say it: the summary `decide` writes next to the full record.

The decision task stores the full record as an artifact (`decision/decision.json`) and a summary
as model-version tags (`autopilot.gates.decision.decision_tags`): the verdict, when and by whom,
each gate's result and the reasons. This module reads that summary back, for every reader of
it (the CLI's `status` and `demo`, the Models page when the artifact is unreadable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DECIDED_AT_TAG", "DECISION_TAG", "DecisionTags", "read_decision_tags"]

DECISION_TAG = "autopilot.decision"
DECIDED_AT_TAG = "autopilot.decided_at"
DECIDED_BY_TAG = "autopilot.decided_by"
REASONS_TAG = "autopilot.decision_reasons"
GATE_TAG_PREFIX = "autopilot.gate."


@dataclass(frozen=True)
class DecisionTags:
    """The decision summary on one version (`decision` None: the version was never decided)."""

    version: int
    decision: str | None
    decided_at: str | None
    decided_by: str | None
    reasons_text: str  # the reasons tag as stored: "; "-joined, cut at 4,000 characters ("" when none)
    gates: dict[str, str]  # gate name -> "passed" | "failed", in the tags' order

    @property
    def reasons(self) -> list[str]:
        """The reasons, one by one."""
        return [reason for reason in self.reasons_text.split("; ") if reason]


def read_decision_tags(version: Any) -> DecisionTags:
    """The decision summary in a model version's tags (an MLflow `ModelVersion`)."""
    tags = dict(version.tags or {})
    return DecisionTags(
        version=int(version.version),
        decision=tags.get(DECISION_TAG),
        decided_at=tags.get(DECIDED_AT_TAG),
        decided_by=tags.get(DECIDED_BY_TAG),
        reasons_text=tags.get(REASONS_TAG, ""),
        gates={key.removeprefix(GATE_TAG_PREFIX): value for key, value in tags.items()
               if key.startswith(GATE_TAG_PREFIX)},
    )
