"""The training DAG's `shadow` task: a waiting shadow phase is rescheduled, holding no worker slot.

The task body is the generic stage body (`factory._run_stage`), which calls
`autopilot.pipeline.shadow.shadow_phase` once per try. While that look says `waiting`, the task
raises Airflow's reschedule signal: the task instance goes `up_for_reschedule` and the scheduler
runs it again after `deployment.rollout.shadow.poll_minutes`, like a sensor in reschedule mode
(no slot, no process, between looks). `max_hours` is measured from the phase's start, recorded
on the version, so the total wait is bounded whatever the number of looks.

A test run (`dag.test()` / `airflow dags test`) cannot wait hours: its look is final, and a
waiting phase becomes `pending` (the version stays `challenger` in shadow, promotable by hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["after_look"]

DAG_TEST_USER = "dag_test"  # the `triggering_user_name` of a run made by `dag.test()` / `airflow dags test`


def after_look(cfg: Any, result: Mapping[str, Any], dag_run: Any) -> Any:
    """The shadow task's result, or the reschedule signal while it waits (a test run: `pending`)."""
    if result.get("outcome") != "waiting":
        return result
    from autopilot.pipeline.shadow import pending

    if getattr(dag_run, "triggering_user_name", None) == DAG_TEST_USER:
        return pending(cfg, result)
    from airflow.sdk.exceptions import AirflowRescheduleException

    minutes = cfg.deployment.rollout.shadow.poll_minutes
    raise AirflowRescheduleException(datetime.now(UTC) + timedelta(minutes=minutes))
