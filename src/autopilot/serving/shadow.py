"""Shadow deployment on the local endpoint: the challenger answers a copy of live traffic, off the request path.

With `deployment.rollout.shadow.enabled`, the endpoint that serves `champion` also follows the
`challenger` alias (loaded through the same verified door, `RegistrySource` ->
`adapters/registry/model_loading.py`). Each micro-batch the champion answered and logged is
offered here: `offer` never waits and never raises. It samples `shadow.sample` of the requests,
and puts their rows on a queue bounded in rows (`shadow.max_queued_rows`); a copy that would
exceed the bound is dropped and counted. One background thread takes the queue, predicts with
the challenger and appends the answers to the inference log's shadow table (`append_shadow`),
joined later with the served rows and their `/feedback` labels (`shadow_window`).

So the challenger never slows or fails a client's answer: the copy is a deque append under a
lock, the prediction runs on its own thread (one native thread, like the batch thread), and a
challenger that raises only counts `failed` rows. Nothing is shadowed while there is no
challenger, or while it is the version serving.

Metrics: `autopilot_shadow_rows_total{outcome}` (copied, dropped, predicted, failed),
`autopilot_shadow_queued_rows`, `autopilot_shadow_version` (0 = none loaded).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from autopilot.serving.model import LoadedModel, ModelSource

log = logging.getLogger(__name__)

__all__ = ["ShadowCopy", "ShadowRunner"]

RETRY_FAILED_AFTER = 60.0  # a challenger that failed to load is tried again after this, not on every poll
BATCH_ROWS = 256  # rows the shadow thread predicts per call


@dataclass(frozen=True)
class ShadowCopy:
    """One served request's rows, copied for the challenger."""

    request_id: str
    rows: list[dict[str, Any]]


class _ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("autopilot_shadow_rows_total",
                            "Rows copied to the shadow challenger, by outcome: copied (queued), dropped (queue "
                            "full), predicted (logged as shadow), failed (the challenger or the log failed).",
                            ["outcome"], registry=registry)
        # Set, never read through a function: in a worker pool (`serving.pool`) gauges are summed
        # or maxed across the workers' files, and a function gauge would export 0.
        self.version = Gauge("autopilot_shadow_version", "The challenger version in shadow (0 = none).",
                             registry=registry, multiprocess_mode="livemax")
        self.queued = Gauge("autopilot_shadow_queued_rows", "Rows waiting for the shadow challenger.",
                            registry=registry, multiprocess_mode="livesum")
        self.children = {name: self.rows.labels(name) for name in ("copied", "dropped", "predicted", "failed")}


class ShadowRunner:
    """Follows the challenger alias and predicts copies of served rows with it, on its own thread."""

    def __init__(self, source: ModelSource, inference_log: Any, *, max_queued_rows: int, sample: float = 1.0,
                 registry: CollectorRegistry | None = None, seed: int | None = None,
                 serving: Callable[[], int | None] | None = None) -> None:
        """`serving` reads the version the endpoint serves now (the champion): a challenger that is
        that version is not loaded a second time, and nothing is copied to it."""
        self.source = source
        self.inference_log = inference_log
        self.max_queued_rows = max_queued_rows
        self.sample = sample
        self.challenger: LoadedModel | None = None
        self._serving = serving
        self.serving_version: int | None = None  # the champion's, set by the endpoint on each offer
        self.last_error: str | None = None
        self._failed: tuple[int, float] | None = None
        self._queue: deque[ShadowCopy] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(seed)
        self.metrics = _ShadowMetrics(registry or CollectorRegistry())

    # ------------------------------------------------------------------ the request path (never blocks)

    @property
    def active(self) -> bool:
        """Whether a challenger other than the serving version is loaded (else nothing is copied)."""
        model = self.challenger
        return model is not None and model.version != self.serving_version

    def offer(self, serving_version: int, copies: Sequence[ShadowCopy]) -> int:
        """Queue copies of served requests for the challenger; returns the rows queued. Never blocks or raises.

        A request is sampled with probability `sample`; one whose rows would take the queue past
        `max_queued_rows` is dropped (counted), so the champion's path never waits for the challenger.
        """
        try:
            self.serving_version = serving_version
            if not self.active:
                return 0
            queued = dropped = 0
            with self._cond:
                for copy in copies:
                    if self.sample < 1.0 and self._random.random() >= self.sample:
                        continue
                    if self._queued_rows + len(copy.rows) > self.max_queued_rows:
                        dropped += len(copy.rows)
                        continue
                    self._queue.append(copy)
                    self._queued_rows += len(copy.rows)
                    queued += len(copy.rows)
                if queued:
                    self.metrics.queued.set(self._queued_rows)
                    self._cond.notify()
            self.metrics.children["copied"].inc(queued)
            self.metrics.children["dropped"].inc(dropped)
            return queued
        except Exception:  # a copy must never fail a served request
            log.exception("shadow copy failed; the request was answered by the champion as usual")
            return 0

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the challenger."""
        return self._queued_rows

    # ------------------------------------------------------------------ the challenger

    def refresh(self) -> dict[str, Any]:
        """Follow the challenger alias once: load a new version, drop one whose alias is gone. Never raises."""
        try:
            wanted: int | None = int(self.source.current_version())
        except Exception as exc:  # no challenger alias (the usual case between shadow phases), or unreachable
            log.debug("no challenger to shadow: %s", exc)
            wanted = None
        serving = self._serving() if self._serving is not None else self.serving_version
        if wanted is None or wanted == serving:  # no challenger, or it is serving already (promoted)
            self._set(None)
        elif self.challenger is None or self.challenger.version != wanted:
            self._load(wanted)
        return {"version": self.challenger.version if self.challenger else None, "error": self.last_error}

    def _load(self, version: int) -> None:
        if self._failed and self._failed[0] == version and time.monotonic() - self._failed[1] < RETRY_FAILED_AFTER:
            return
        try:
            model = self.source.load(version)
        except Exception as exc:  # a broken challenger is reported; the champion is not affected
            self._failed = (version, time.monotonic())
            self.last_error = f"challenger v{version} failed to load: {type(exc).__name__}: {exc}"
            log.error("%s; nothing is shadowed", self.last_error)
            self._set(None)
            return
        self._failed, self.last_error = None, None
        self._set(model)
        log.info("shadowing live traffic with challenger v%s", version)

    def _set(self, model: LoadedModel | None) -> None:
        self.challenger = model
        self.metrics.version.set(model.version if model else 0)

    # ------------------------------------------------------------------ the shadow thread

    def start(self, poll_seconds: float | None) -> None:
        """Start the shadow thread and, with `poll_seconds`, the alias follower (first check at once)."""
        self.refresh()
        worker = threading.Thread(target=self._work, name="autopilot-shadow", daemon=True)
        self._threads.append(worker)
        if poll_seconds is not None:
            def follow() -> None:
                while not self._stop.wait(poll_seconds):
                    self.refresh()

            self._threads.append(threading.Thread(target=follow, name="autopilot-shadow-follow", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; rows still queued are not predicted (a shadow copy is best effort)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty (tests and shutdown); True when it emptied in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    _busy = False

    def _work(self) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="openmp")  # the batch thread and the event loop keep the cores
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(timeout=1.0)
                batch = self._take()
                self._busy = bool(batch)
            try:
                if batch:
                    self._predict(batch)
            finally:
                self._busy = False

    def _take(self) -> list[ShadowCopy]:
        """Up to BATCH_ROWS rows of whole requests off the queue (called under the lock)."""
        batch: list[ShadowCopy] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= BATCH_ROWS):
            copy = self._queue.popleft()
            batch.append(copy)
            rows += len(copy.rows)
        self._queued_rows -= rows
        self.metrics.queued.set(self._queued_rows)
        return batch

    def _predict(self, batch: list[ShadowCopy]) -> None:
        from autopilot.serving.inference_log import InferenceRecord

        rows = [row for copy in batch for row in copy.rows]
        model = self.challenger
        if model is None or model.version == self.serving_version:
            return  # the challenger left (or was promoted) while these waited
        try:
            start = time.perf_counter()
            scores = np.asarray(model.predict_rows(rows), dtype=float)
            latency = (time.perf_counter() - start) * 1000.0
            if scores.shape[0] != len(rows):
                raise ValueError(f"the challenger gave {scores.shape[0]} scores for {len(rows)} rows")
            now = datetime.now(UTC)
            records, i = [], 0
            for copy in batch:
                for row_index in range(len(copy.rows)):
                    records.append(InferenceRecord(request_id=copy.request_id, row=row_index, model=model.name,
                                                   version=model.version, at=now, features={},
                                                   prediction=_score(scores[i]), latency_ms=latency))
                    i += 1
            self.inference_log.append_shadow(records)
            self.metrics.children["predicted"].inc(len(rows))
        except Exception as exc:  # the challenger (or the log) failed: counted, never a client's problem
            self.metrics.children["failed"].inc(len(rows))
            self.last_error = (f"challenger v{model.version} failed on {len(rows)} shadow rows: "
                               f"{type(exc).__name__}: {exc}")
            log.warning("%s", self.last_error)

    def describe(self) -> Mapping[str, Any]:
        """The shadow's state, for `/model`-like views and tests."""
        return {"challenger": self.challenger.version if self.challenger else None, "active": self.active,
                "queued_rows": self._queued_rows, "max_queued_rows": self.max_queued_rows, "sample": self.sample,
                "error": self.last_error}


def _score(value: Any) -> Any:
    """A JSON-safe score: a float, or a list of class probabilities (multiclass)."""
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else [float(v) for v in array.ravel()]
