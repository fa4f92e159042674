"""Progress on the console while training runs: task starts and outcomes, a failed task's reason, tuning.

Both ways of running the pipeline report through here:

- `autopilot demo` follows its runs on the embedded scheduler through Airflow's listener interface
  (`cli/demo_runs.SchedulerRuns` passes each event of `plugins/autopilot_progress.py` for the run
  to `RunConsole.event`) and polls the Optuna study (`RunConsole.tick`);
- `autopilot run` reports each stage it runs in-process (`StageConsole`), with a thread polling
  the study while the tuning workers run.

Tuning lines come from `autopilot.modeling.progress.TuningWatch` (trial n of N, best score, time
against the budget), at most one every few seconds and always the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from autopilot.task_ids import TaskId

__all__ = ["RunConsole", "StageConsole", "TuningPoller", "task_label"]

_WIDTH = 28
_PAD = " " * (_WIDTH + 3)
# The tasks of the tuning stage: the study is followed from the first one to the end of the last.
_TUNING = (TaskId.PLAN_TUNING, TaskId.TUNE_WORKER, TaskId.TUNE)


def task_label(task_id: str, map_index: int = -1) -> str:
    """`tune_worker[1]` for a mapped task instance, the task id otherwise."""
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


def _watch(cfg: Any, settings: Any, since: datetime) -> Any:
    from autopilot.modeling.progress import TuningWatch

    return TuningWatch(cfg, settings.optuna_storage, since=since)


class RunConsole:
    """Lines for one DAG run from the progress listener's events, and the tuning study's progress.

    Args:
        say: where lines go (`print`, or the demo loop's prefixer).
        cfg, settings: the model's config and settings, to follow its Optuna study (None: no tuning lines).
    """

    def __init__(self, say: Callable[[str], None], cfg: Any = None, settings: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.clock = clock
        self.started: dict[tuple[str, int], float] = {}
        self.failed: list[tuple[str, str]] = []  # (task label, reason), in the order they failed
        self.tuning = _watch(cfg, settings, datetime.now()) if cfg is not None and settings is not None else None
        self.tuning_active = False

    def event(self, event: dict[str, Any]) -> None:
        """Show one listener event: a task running, or its outcome (with the reason of a failure)."""
        key = (str(event.get("task_id", "?")), int(event.get("map_index", -1)))
        label, kind = task_label(*key), str(event.get("event", "?"))
        if key[0] in _TUNING and kind == "running":
            self.tuning_active = True
        # The listener's own time stamps (`at`), so durations do not depend on how often events are read.
        at = float(event["at"]) if isinstance(event.get("at"), int | float) else self.clock()
        if kind == "running":
            self.started[key] = at
            self.say(f"  {label:{_WIDTH}s} running")
            return
        began = self.started.pop(key, None)
        took = f" ({at - began:.1f} s)" if began is not None else ""
        self.say(f"  {label:{_WIDTH}s} {kind}{took}")
        if kind == "failed":
            reason = str(event.get("error") or "no reason was given")
            self.failed.append((label, reason))
            for k, line in enumerate(reason.splitlines()):
                self.say(f"{_PAD}{'reason: ' if k == 0 else '        '}{line}")
        if key[0] == TaskId.TUNE and kind in ("success", "failed", "skipped"):
            self._end_tuning()

    def tick(self) -> None:
        """Show the tuning study's progress when a trial finished (throttled by the watch)."""
        if self.tuning is not None and self.tuning_active and (line := self.tuning.poll()):
            self.say(f"  {line}")

    def finish(self) -> None:
        """After the run: the last tuning line, if the run ended while tuning."""
        if self.tuning_active:
            self._end_tuning()

    def _end_tuning(self) -> None:
        if self.tuning is not None and self.tuning_active and (line := self.tuning.final()):
            self.say(f"  {line}")
        self.tuning_active = False


class TuningPoller:
    """Polls a `TuningWatch` on a thread (for `autopilot run`, where the workers run in this process)."""

    def __init__(self, watch: Any, say: Callable[[str], None], interval: float = 1.0) -> None:
        self.watch = watch
        self.say = say
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tuning-progress", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and show the last state."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if line := self.watch.final():
            self.say(f"  {line}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if line := self.watch.poll():
                self.say(f"  {line}")


class StageConsole:
    """`autopilot run`'s progress: one line per stage outcome, tuning lines while the workers run."""

    def __init__(self, cfg: Any, settings: Any, say: Callable[[str], None] = print) -> None:
        self.cfg, self.settings, self.say = cfg, settings, say
        self.since = datetime.now()
        self.began = 0.0
        self.poller: TuningPoller | None = None

    def started(self, task: str) -> None:
        """A stage starts (the tuning stage's first task starts following the study)."""
        self.began = time.monotonic()
        if task == TaskId.PLAN_TUNING and self.poller is None:
            self.poller = TuningPoller(_watch(self.cfg, self.settings, self.since), self.say)
            self.poller.start()

    def finished(self, task: str, outcome: str) -> None:
        """A stage ended (`done` or `failed`)."""
        if task == TaskId.TUNE or outcome == "failed":
            self._stop_tuning()
        self.say(f"  {task:{_WIDTH}s} {outcome} ({time.monotonic() - self.began:.1f} s)")

    def _stop_tuning(self) -> None:
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
