"""An Airflow listener that reports task progress as JSON lines, for whoever follows a DAG run.

`plugins/autopilot_progress.py` registers this module with Airflow's listener manager (hook
specs: `airflow/sdk/_shared/listeners/spec/taskinstance.py` in Airflow 3.3.2). Each hook appends
one JSON object per line to the file `AUTOPILOT_PROGRESS_FILE` names:

    {"event": "running" | "success" | "failed" | "skipped", "task_id": ..., "map_index": -1,
     "try_number": 1, "dag_id": ..., "run_id": ..., "at": <unix seconds>, "error": "..." (failed only)}

`autopilot demo` sets the variable in the environment it starts the embedded services with (so
every task process of its scheduler has it) and reads the file while its runs go on, taking each
run's events by dag_id and run_id. Nowhere else is it set, so in a scheduler or worker of a real
deployment (and under `make up`) every hook returns at once and writes nothing. A hook never
raises: progress is not worth failing a task.
The error of a failed task is its final exception, secrets scrubbed, clipped to a few lines.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from airflow.listeners import hookimpl

from autopilot.orchestration.embedded import PROGRESS_FILE_ENV

__all__ = ["error_reason", "on_task_instance_failed", "on_task_instance_running",
           "on_task_instance_skipped", "on_task_instance_success"]

# Exceptions whose type says nothing: the DAG factory re-raises config errors and gate verdicts as these.
WRAPPERS = frozenset({"AirflowFailException", "AirflowException"})
REASON_LINES = 12
REASON_LINE_CHARS = 500


def error_reason(error: BaseException | str | None) -> str:
    """A failed task's reason: `Type: message` of its exception (just the message for Airflow's wrappers)."""
    from autopilot.redaction import env_secrets, scrub

    if error is None:
        return "no error was given (the task was failed from outside, or its process died)"
    if isinstance(error, BaseException):
        kind, message = type(error).__name__, str(error)
        text = message if kind in WRAPPERS and message else f"{kind}: {message}" if message else kind
    else:
        text = str(error)
    lines = [line.rstrip()[:REASON_LINE_CHARS] for line in text.strip().splitlines() if line.strip()]
    return scrub("\n".join(lines[:REASON_LINES]), env_secrets(os.environ))


def _number(value: Any, default: int) -> int:
    """An int attribute of a task instance (0 is a map index like any other; None is the default)."""
    return default if value is None else int(value)


def _write(event: str, task_instance: Any, **extra: Any) -> None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return
    try:
        record = {"event": event, "task_id": str(task_instance.task_id),
                  "map_index": _number(getattr(task_instance, "map_index", None), -1),
                  "try_number": _number(getattr(task_instance, "try_number", None), 0),
                  "dag_id": str(getattr(task_instance, "dag_id", "")),
                  "run_id": str(getattr(task_instance, "run_id", "")),
                  "at": time.time(), **extra}
        line = json.dumps(record, default=str) + "\n"
        # One write of one line in append mode: lines of concurrent task processes do not interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except Exception:  # progress must never fail a task
        return


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """A task started: one `running` line."""
    _write("running", task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """A task succeeded: one `success` line."""
    _write("success", task_instance)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: BaseException | str | None) -> None:
    """A task failed (or will be retried): one `failed` line with its reason."""
    if os.environ.get(PROGRESS_FILE_ENV):
        try:
            reason = error_reason(error)
        except Exception:  # progress must never fail a task
            reason = "the reason could not be read"
        _write("failed", task_instance, error=reason)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    """A task skipped itself: one `skipped` line."""
    _write("skipped", task_instance)
