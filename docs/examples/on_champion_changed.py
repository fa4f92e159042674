"""Example: a team's DAG that runs each time a new champion of a model is promoted.

The training DAG emits an event on the Asset `autopilot_champion__<model>` only when `promote`
moved the `champion` alias (not on a rejected or review run). The event's `extra` carries
`model`, `version`, `from_version` (the champion it replaced, None for the first) and `run_id`
(the training DAG run). Here the task records it under `AUTOPILOT_HOME` (default `.autopilot`);
yours might warm a cache, refresh a batch scoring job or post to a channel.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import dag, task

from autopilot.orchestration.schedules import champion_asset

MODEL = os.environ.get("AUTOPILOT_EXAMPLE_MODEL", "adult_income")
CHAMPION = champion_asset(MODEL)


@dag(dag_id=f"on_champion_changed__{MODEL}", schedule=CHAMPION, start_date=datetime(2026, 1, 1, tzinfo=UTC),
     catchup=False, tags=["autopilot", "example"])
def on_champion_changed() -> None:
    """React to a new champion: read which version it is from the triggering event."""

    @task
    def new_champion(triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        import json
        from pathlib import Path

        events = [event for event in triggering_asset_events[CHAMPION]]
        latest = dict(events[-1].extra)
        folder = Path(os.environ.get("AUTOPILOT_HOME", ".autopilot")) / "champion_events"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{MODEL}-v{latest['version']}.json").write_text(json.dumps(latest, sort_keys=True))
        return latest

    new_champion()


on_champion_changed()
