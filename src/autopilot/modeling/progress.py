"""Tuning progress read from the Optuna study itself: trial n of N, best score so far, time against the budget.

The tuning workers (mapped DAG tasks, or `autopilot run`'s workers one after another) share one
study in RDB storage, so whoever can read that storage can follow the search without a word from
the workers: `TuningWatch` finds the study this run is tuning (its name is deterministic:
`<model>-<data digest>-<search digest>`, `-retune` for a re-tune; the one with trials started
since the run began) and turns what the study holds into lines like

    tuning: trial 12 of 40, best roc_auc 0.9231 (hist_gradient_boosting), 1m10s of 4m budget

at most one line per `min_interval` seconds, only when a trial finished; `final()` gives the
last state (always, once a study was found). Counting the study's finished trials (COMPLETE and
PRUNED, the budget's own rule) counts every parallel worker's trials.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["StudyProgress", "TuningWatch", "format_duration", "progress_line", "read_progress", "schema_ready"]

_RETUNE = "-retune"
READ_INTERVAL = 1.0  # seconds between two reads of the study while polling


@dataclass(frozen=True)
class StudyProgress:
    """What one study holds now."""

    study_name: str
    finished: int  # COMPLETE + PRUNED, every worker's and earlier runs'
    running: int
    best_value: float | None
    best_family: str | None
    first_start: datetime | None  # the first trial started since the watch began (None: none yet)


def format_duration(seconds: float) -> str:
    """`42s`, `1m10s`, `4m`, `1h02m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_line(progress: StudyProgress, metric: str, budget: int, timeout_seconds: float,
                  now: datetime | None = None) -> str:
    """One line: `tuning: trial n of N, best <metric> <value> (<family>), <elapsed> of <budget> budget`."""
    parts = [f"tuning: trial {progress.finished} of {budget}"]
    if progress.running > 1:
        parts[0] += f" ({progress.running} running)"
    if progress.best_value is None:
        parts.append("no trial completed yet")
    else:
        family = f" ({progress.best_family})" if progress.best_family else ""
        parts.append(f"best {metric} {progress.best_value:.4f}{family}")
    if progress.first_start is not None:
        elapsed = ((now or datetime.now()) - progress.first_start).total_seconds()
        parts.append(f"{format_duration(elapsed)} of {format_duration(timeout_seconds)} budget")
    return ", ".join(parts)


def read_progress(storage: Any, study_id: int, study_name: str, maximize: bool, since: datetime) -> StudyProgress:
    """The progress of one study in an Optuna storage object (trials started before `since` count, not time)."""
    from optuna.trial import TrialState

    trials = storage.get_all_trials(study_id, deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = (max if maximize else min)(complete, key=lambda t: t.value) if complete else None
    starts = [t.datetime_start for t in trials if t.datetime_start is not None and t.datetime_start >= since]
    family = (best.user_attrs.get("params") or {}).get("family") if best is not None else None
    return StudyProgress(study_name=study_name, finished=len(finished),
                         running=sum(1 for t in trials if t.state == TrialState.RUNNING),
                         best_value=float(best.value) if best is not None else None,
                         best_family=str(family) if family else None, first_start=min(starts) if starts else None)


def schema_ready(url: str) -> bool:
    """Whether the Optuna storage at `url` exists with its schema complete (Alembic's version row written last).

    The watcher opens the storage only then: Optuna creates its tables and version rows on the first
    open, and a watcher doing so while the tuning task does the same made one of them fail on a
    duplicate `alembic_version` row (seen in the demo: the task failed once and was retried).
    """
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from autopilot.adapters.state_db.engines import answers

    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and not (parsed.database and Path(parsed.database).is_file()):
            return False  # not created yet; connecting would create an empty file
        return bool(answers(url, {}, table="alembic_version"))
    except Exception:  # not answering (yet): the next poll asks again
        return False


class TuningWatch:
    """Follows the study a training run of one model is tuning, through the Optuna storage.

    Args:
        cfg: the model config (name, metric, `tuning.n_trials`, `tuning.timeout_seconds`, the re-tune budget).
        storage: the Optuna RDB URL (`Settings.optuna_storage`).
        since: when the run began (local time, as Optuna stores trial times): the study tuned
            now is the one with trials started since.
        min_interval: seconds between two lines.
    """

    def __init__(self, cfg: Any, storage: str, since: datetime | None = None, min_interval: float = 3.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.storage_url = storage
        self.since = since or datetime.now()
        self.min_interval = min_interval
        self.clock = clock
        self._storage: Any = None
        self._study: tuple[int, str, bool] | None = None  # id, name, maximize
        self._pattern = re.compile(rf"{re.escape(cfg.name)}-[0-9a-f]{{12}}-[0-9a-f]{{10}}(?:{_RETUNE})?")
        self._shown: int | None = None  # the finished count last shown
        self._shown_at = float("-inf")
        self._read_at = float("-inf")
        self._latest: StudyProgress | None = None

    def poll(self) -> str | None:
        """A line when a trial finished since the last line and `min_interval` has passed; else None.

        The storage is read at most once a second, and not at all while no line could be shown.
        """
        now = self.clock()
        if now - self._shown_at < self.min_interval or now - self._read_at < READ_INTERVAL:
            return None
        self._read_at = now
        progress = self._read()
        if progress is None or progress.finished in (self._shown, 0):
            return None
        return self._show(progress)

    def final(self) -> str | None:
        """The study's last state, unless that line was just shown (None: no study of this run was found)."""
        progress = self._read() or self._latest
        if progress is None or progress.finished == self._shown:
            return None
        return self._show(progress)

    def _show(self, progress: StudyProgress) -> str:
        self._shown, self._shown_at = progress.finished, self.clock()
        retune = progress.study_name.endswith(_RETUNE)
        budget = self.cfg.monitoring.retrain.retune_trials if retune else self.cfg.tuning.n_trials
        return progress_line(progress, self.cfg.metric, int(budget), float(self.cfg.tuning.timeout_seconds))

    def _read(self) -> StudyProgress | None:
        """The study's progress now; None while no study of this run is found, or the storage is busy."""
        try:
            if self._storage is None:
                if not schema_ready(self.storage_url):
                    return None
                import optuna

                # Read-only use: never create tables or version rows, which the tuning task does.
                self._storage = optuna.storages.RDBStorage(self.storage_url, skip_table_creation=True,
                                                           skip_compatibility_check=True)
            if self._study is None:
                self._study = self._find()
            if self._study is None:
                return None
            study_id, name, maximize = self._study
            self._latest = read_progress(self._storage, study_id, name, maximize, self.since)
        except Exception:  # a locked or busy storage: try again at the next poll
            return None
        return self._latest

    def _find(self) -> tuple[int, str, bool] | None:
        """The model's study with the latest trial started since the watch began (None: none yet)."""
        from optuna.study import StudyDirection

        found: list[tuple[datetime, tuple[int, str, bool]]] = []
        for study in self._storage.get_all_studies():
            if not self._pattern.fullmatch(study.study_name):
                continue
            study_id = self._storage.get_study_id_from_name(study.study_name)
            trials = self._storage.get_all_trials(study_id, deepcopy=False)
            starts = [t.datetime_start for t in trials
                      if t.datetime_start is not None and t.datetime_start >= self.since]
            if starts:
                maximize = study.directions[0] == StudyDirection.MAXIMIZE
                found.append((max(starts), (study_id, study.study_name, maximize)))
        return max(found, key=lambda item: item[0])[1] if found else None
