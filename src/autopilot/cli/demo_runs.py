"""`autopilot demo`'s DAG runs on the real scheduler: its services, its runs, and following them.

The demo starts the embedded services (`Embedded.start`: api-server, scheduler with the
LocalExecutor, DAG processor, triggerer, MLflow) with its own environment, so every task's log
lands in the log folder the Airflow UI reads and every run stays in the metadata database for
`make up` to show later:

- `AUTOPILOT_PROGRESS_FILE`: the progress listener (`plugins/autopilot_progress.py`) in every
  task process appends its events to one file; `SchedulerRuns` reads it and hands each run's
  events (by dag_id and run_id) to whoever follows that run;
- `AUTOPILOT_SERVING_URL` and the serving token (`deployment.serving.token_env`): the rollout
  task reaches the endpoint the demo serves; the port is picked before the services start, the
  token travels only in the environment (never on a command line or in a log).

Services of this home that already run (an earlier `make up`) were started without that
environment, so the demo refuses to start (`ServicesRunning`, naming `make down`) rather than
follow runs whose events would go nowhere. Whatever ends the demo (its end, an error, Ctrl-C,
SIGTERM, SIGHUP), the services it started are stopped, unless `--keep-up` asked to keep them
after a demo that ended normally.
"""

from __future__ import annotations

import signal
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from autopilot.adapters.airflow_api import TransientError

if TYPE_CHECKING:
    from autopilot.adapters.airflow_api import AirflowApi
    from autopilot.orchestration.embedded import Embedded, EventFile

__all__ = ["FINISHED", "SchedulerRuns", "ServicesRunning", "free_port", "services_for_demo"]

FINISHED = ("success", "failed")
EVENTS_FILE = "demo.events.jsonl"  # in the run folder: every task event of the demo's services


class ServicesRunning(RuntimeError):
    """Services of this home already run, started without the demo's environment."""


def free_port(preferred: int) -> int:
    """`preferred` when it is free on loopback, else any free port (a server the user started keeps its own)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP during the demo unwinds as Ctrl-C does, so the services are stopped."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def services_for_demo(embedded: Embedded, keep_up: bool = False,
                      say: Callable[[str], None] = print, healthy_timeout: float = 240.0) -> Iterator[AirflowApi]:
    """Start the services for the demo, wait until they are healthy, yield a logged-in REST client; stop them after.

    Raises:
        ServicesRunning: services of this home already run (before anything is started).
        RuntimeError: the services were not healthy in time (they are stopped first).
    """
    running = embedded.running()
    if running:
        raise ServicesRunning(
            f"the services of {embedded.settings.home} already run ({', '.join(running)}), started without the "
            "demo's environment (its progress file and serving endpoint). Stop them with `make down` "
            "(autopilot down), then run the demo again; `make up` afterwards shows its runs")
    handlers = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    ended_normally = False
    try:
        say(f"[demo] starting Airflow (api-server, scheduler with the LocalExecutor, DAG processor, triggerer) "
            f"and MLflow for the demo; their logs in {embedded.run_dir}")
        embedded.start()
        if not embedded.wait_healthy(timeout=healthy_timeout):
            raise RuntimeError(f"the services were not healthy after {healthy_timeout:.0f} s; "
                               f"see the logs in {embedded.run_dir}")
        api = embedded.api()
        try:
            yield api
        finally:
            api.close()
        ended_normally = True
    finally:
        try:
            if not (keep_up and ended_normally):
                stopped = embedded.stop()
                say(f"[demo] stopped the services it started: {', '.join(stopped) or 'none was running'}")
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


class SchedulerRuns:
    """Triggers DAG runs through the REST API and follows them through the listener's events.

    Every task process appends its events to one file; events of a run nobody follows yet (the
    retrain a monitoring run triggers, while the demo still waits for that monitoring run) are
    kept until its turn comes, so none is lost.
    """

    def __init__(self, api: AirflowApi, events: EventFile, poll_seconds: float = 2.0, tick_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.api = api
        self.events = events
        self.poll_seconds = poll_seconds
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.sleep = sleep
        self.pending: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None,
                data_interval: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
        """Start a run (unpausing its DAG first: a paused DAG's run stays queued); return it."""
        self.api.unpause(dag_id)
        _, run = self.api.trigger_run(dag_id, run_id, conf=conf, data_interval=data_interval)
        return run

    def follow(self, dag_id: str, run_id: str, on_event: Callable[[dict[str, Any]], None] | None = None,
               on_tick: Callable[[], None] | None = None, timeout: float = 1800.0,
               human_task: str | None = None) -> dict[str, Any]:
        """Pass the run's task events to `on_event` as they come, until it succeeds or fails; return the run.

        A run that does not exist yet (a triggered retrain) is waited for. `on_tick` is called
        every `tick_seconds` (e.g. to poll the Optuna study). `human_task`: a task that may park
        the run for a person's answer (the training DAG's `review`); once it runs, its state is
        read at each poll, and when it is `awaiting_input` the still-running run is returned
        with `awaiting_input` set to that task (nobody answers a demo: it would wait for hours).

        Raises:
            TimeoutError: the run has not ended after `timeout` seconds (it goes on in Airflow).
        """
        deadline = self.clock() + timeout
        asked = float("-inf")
        run: dict[str, Any] | None = None
        watched = _Watched(human_task, on_event)
        while True:
            self._deliver(dag_id, run_id, watched)
            if on_tick is not None:
                on_tick()
            if self.clock() - asked >= self.poll_seconds:
                asked = self.clock()
                try:
                    run = self.api.run(dag_id, run_id) or run
                    if run is not None and watched.running and human_task is not None and (
                            self.api.task_instance(dag_id, run_id, human_task).get("state") == "awaiting_input"):
                        return {**run, "awaiting_input": human_task}
                except TransientError:  # SQLite busy under the scheduler's writes: ask again next time
                    pass
                if run is not None and run.get("state") in FINISHED:
                    # The listener writes before the task reports its state: every event is in the file.
                    self._deliver(dag_id, run_id, watched)
                    return run
            if self.clock() > deadline:
                state = run.get("state") if run else "not created"
                raise TimeoutError(f"run {run_id} of {dag_id} is still {state} after {timeout:.0f} s")
            self.sleep(self.tick_seconds)

    def _deliver(self, dag_id: str, run_id: str, on_event: Callable[[dict[str, Any]], None] | None) -> None:
        for event in self.events.read():
            self.pending[(str(event.get("dag_id")), str(event.get("run_id")))].append(event)
        for event in self.pending.pop((dag_id, run_id), []):
            if on_event is not None:
                on_event(event)


class _Watched:
    """Passes events on, noting whether the task a person may have to answer runs (started, not ended)."""

    def __init__(self, task: str | None, on_event: Callable[[dict[str, Any]], None] | None) -> None:
        self.task, self.on_event, self.running = task, on_event, False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.task is not None and event.get("task_id") == self.task:
            self.running = event.get("event") == "running"
        if self.on_event is not None:
            self.on_event(event)


def events_path(run_dir: Path) -> Path:
    """Where the demo's services write their task events."""
    return run_dir / EVENTS_FILE
