"""Airflow plugin: task progress as JSON lines, for `autopilot demo` following its DAG run.

Wiring only; the listener is `autopilot.orchestration.progress_listener`. It writes only when
`AUTOPILOT_PROGRESS_FILE` is set (the demo sets it in the environment of the services it starts),
so the scheduler and workers of a deployment, or of `make up`, load it and it does nothing there.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from autopilot.orchestration import progress_listener


class AutopilotProgressPlugin(AirflowPlugin):
    """Registers the progress listener (`on_task_instance_running/success/failed/skipped`)."""

    name = "autopilot_progress"
    listeners = [progress_listener]
