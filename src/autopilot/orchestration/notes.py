"""DAG run notes: what every run decided, where an operator opening the run sees it.

Every training run ends with a note naming its outcome (promoted, rejected, held for review, rolled
back) and each gate's one-line reason; every monitoring run with its window's action and reasons.
The text is `autopilot.pipeline.run_notes`'s; the tasks that know write it (`decide`, then
`review`, `promote` and `rollout` update it, so the last one standing says how the run ended;
`monitor` writes its window's). A retry writes the same text again.

Airflow 3's task SDK cannot write a run's note, so the task asks the Airflow REST API
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`, through `autopilot.adapters.airflow_api`) with
a JWT from `/auth/token`, using the Airflow connection `autopilot_airflow_api` (host, port, login,
password; never logged). Setting the note is best effort: without the connection, or when the
API is unreachable, the reasons are still in the task log and the decision record, and the
task's outcome is unchanged. A busy API is asked again: a 5xx, a 429, a timeout or a refused
connection is retried after `autopilot.adapters.airflow_api.RETRY_DELAYS` (on SQLite the
api-server answers 500 "database is locked" while the scheduler writes; seen in CI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from autopilot.adapters.airflow_api import NoteNotSet, patch_run_note
from autopilot.task_ids import TaskId

__all__ = ["CONN_ID", "RECORD_PATH", "failure_note_writer", "set_run_note", "write_known_data_note",
           "write_monitoring_note", "write_stage_note", "write_training_note"]

RECORD_PATH = "decision/decision.json"  # where `decide` stores a version's decision record (on its run)

CONN_ID = "autopilot_airflow_api"
log = logging.getLogger(__name__)


def set_run_note(dag_id: str, run_id: str, note: str, conn_id: str = CONN_ID) -> bool:
    """Set a DAG run's note through the REST API; return whether it was set."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # not configured: the note is optional
        log.warning("DAG run note not set: Airflow connection %r is not configured", conn_id)
        return False
    base = f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8080}"
    try:
        patch_run_note(base, conn.login, conn.password, dag_id, run_id, note)
    except NoteNotSet as exc:  # the API is down or refused us: the task log has the reasons anyway
        log.warning("DAG run note not set after %d attempt(s): %s", exc.attempts, exc.kind)
        return False
    return True


def write_training_note(context: Mapping[str, Any], settings: Any, *, approval: Mapping[str, Any] | None = None,
                        promotion: Mapping[str, Any] | None = None, rollout: Mapping[str, Any] | None = None,
                        pull: tuple[TaskId, ...] = (), fallback: str | None = None) -> bool:
    """Set a training run's note from its version's decision record and what the later tasks did.

    `pull` names the later tasks (`review`, `promote`) whose results are read from XCom when not
    given; the writer passes only those that ran before it, so a rerun of an earlier task never
    quotes a later one's old result. When the record cannot be read (MLflow unreachable), the
    `fallback` text is set instead, if any: a note is never worth failing the task for.
    """
    from autopilot.pipeline.run_notes import training_note

    ti, dag_run = context["ti"], context["dag_run"]
    text: str | None
    try:
        record = _decision_record(settings, ti.xcom_pull(task_ids=TaskId.TRAIN_AND_REGISTER.value))
        if approval is None and TaskId.REVIEW in pull:
            approval = ti.xcom_pull(task_ids=TaskId.REVIEW.value)
        if promotion is None and TaskId.PROMOTE in pull:
            promotion = ti.xcom_pull(task_ids=TaskId.PROMOTE.value)
        text = training_note(record, conf=dict(dag_run.conf or {}), approval=approval, promotion=promotion,
                             rollout=rollout)
    except Exception as exc:  # the note is optional; the task's outcome is not
        log.warning("DAG run note not built from the decision record: %s", type(exc).__name__)
        text = fallback
    if text is None:
        return False
    return set_run_note(dag_run.dag_id, dag_run.run_id, text)


def _decision_record(settings: Any, registered: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The decision record `decide` stored on the registered version's run."""
    from autopilot.adapters.registry import connect

    if not registered:
        raise LookupError("no registered version in this run")
    registry = connect(settings)
    version = registry.resolve_version(str(registered["name"]), int(registered["version"]))
    record: Mapping[str, Any] = registry.load_dict(str(version.run_id), RECORD_PATH)
    return record


def failure_note_writer(task: TaskId, context: Mapping[str, Any], settings: Any) -> Callable[[Exception], Any] | None:
    """How a gate failure of a training task is put on the run's note (None: the factory's default,
    `Stopped by a gate: <reasons>`): `decide` names the rejected version and every gate's line; a
    rollout that rolled back says so."""
    from autopilot.pipeline.run_notes import STOPPED

    if task is TaskId.DECIDE:
        return lambda exc: write_training_note(context, settings, fallback=f"{STOPPED}{exc}")
    if task is TaskId.ROLLOUT:
        return lambda exc: write_training_note(context, settings, pull=(TaskId.REVIEW, TaskId.PROMOTE),
                                               rollout={"rolled_back": True, "reason": str(exc)},
                                               fallback=f"{STOPPED}{exc}")
    return None


def write_stage_note(task: TaskId, context: Mapping[str, Any], settings: Any, result: Any) -> None:
    """The run's note after a training task that changes how the run ends: the decision, the
    promotion, the rollout (other tasks leave it as it is)."""
    if task is TaskId.DECIDE:
        write_training_note(context, settings)
    elif task is TaskId.PROMOTE:
        write_training_note(context, settings, promotion=result, pull=(TaskId.REVIEW,))
    elif task is TaskId.ROLLOUT:
        rollout = {"skipped": True, "reason": result.get("reason")} if result.get("skipped") else {"passed": True}
        write_training_note(context, settings, rollout=rollout, pull=(TaskId.REVIEW, TaskId.PROMOTE))


def write_known_data_note(dag_run: Any, version: Any) -> bool:
    """A run that ends at `snapshot`: `no new version: this data was already trained on (v2)`."""
    from autopilot.pipeline.run_notes import known_data_note

    return set_run_note(dag_run.dag_id, dag_run.run_id, known_data_note(version))


def write_monitoring_note(dag_id: str, run_id: str, result: Mapping[str, Any]) -> bool:
    """A monitoring run's note from its window's result (`monitor_window`)."""
    from autopilot.pipeline.run_notes import monitoring_note

    return set_run_note(dag_id, run_id, monitoring_note(result))
