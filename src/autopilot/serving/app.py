"""The serving endpoint: FastAPI on uvicorn, serving the champion with micro-batching.

Routes: `/predict` (and SageMaker's `/invocations`), `/explain`, `/feedback`, `/model`,
`/reload` take a bearer token; `/health`, `/ready` (and SageMaker's `/ping`) and `/metrics`
do not (probes and scrapers carry no secrets, and they expose no data). Every answer carries
the model version (`X-Model-Version`, and `model_version` in JSON bodies).

Handlers read the body themselves rather than through pydantic models: the size limit is
enforced while reading (a chunked body is counted as it streams and never buffered past the
limit), a body slower than `serving.body_timeout_seconds` gets 408, malformed JSON gets a 400
that says so, and validation costs microseconds per row (`serving.schema`).

Overload is shed, never queued without bound (`Admission`, decided before routing): past
`serving.max_concurrent_requests` requests in progress on the model routes, or
`serving.max_queued_rows` rows waiting for the batcher, a request gets 429; on a connection
opened while `serving.max_connections` were already open, 503 and the connection is closed
(`serving.server` enforces that one, where connections are seen). All carry Retry-After and
are answered at once, without reading the body; they are counted in
`autopilot_rejected_total`, not in `autopilot_requests_total` (which counts admitted requests,
so shedding is not read as the model failing).

This module builds the app and runs the batch worker; the routes are in `serving.routes`, load
shedding in `serving.admission`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from autopilot.config import ModelConfig
from autopilot.serving.admission import Admission, AdmissionGuard
from autopilot.serving.batcher import Job, MicroBatcher
from autopilot.serving.holder import ModelHolder, SwapFailure
from autopilot.serving.model import LoadedModel, ModelSource
from autopilot.serving.routes import SIDE_JOBS, SIDE_WORKERS, add_routes
from autopilot.serving.schema import RequestError

log = logging.getLogger(__name__)

__all__ = ["ServingMetrics", "ServingState", "create_app", "join_pool"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
BACKGROUND_ROWS = 200
POOL_START_SECONDS = 300.0  # how long a pool worker waits for the others' first load before it serves anyway


class _Unexported:
    """A gauge a pool worker does not export: the pool's collector reports it for the whole endpoint."""

    def set(self, value: float) -> None:
        """Ignored."""

    def set_function(self, function: Callable[[], float]) -> None:
        """Ignored."""


class ServingMetrics:
    """The endpoint's Prometheus metrics, on a registry of its own (several apps per process in tests).

    With `board` (a pool worker), `exposition` is what /metrics serves: every worker's counters
    and histograms summed (prometheus_client's multiprocess files) and the endpoint's gauges from
    the shared table; the per-process gauges here are not exported.
    """

    def __init__(self, board: Any = None) -> None:
        self.registry = CollectorRegistry()
        self.exposition = self.registry if board is None else _pool_registry(board)
        pooled = board is not None
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes etc.: rollouts record memory
        self.requests = Counter("autopilot_requests_total", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("autopilot_request_latency_seconds", "Time to answer, by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("autopilot_errors_total", "Requests refused or failed, by endpoint and kind.",
                              ["endpoint", "kind"], registry=self.registry)
        self.version: Any = _Unexported() if pooled else Gauge(
            "autopilot_model_version", "The model version serving now (0 = none).", registry=self.registry)
        self.rows = Counter("autopilot_predicted_rows_total", "Rows predicted.", registry=self.registry)
        self.batch_rows = Histogram("autopilot_batch_rows", "Rows per micro-batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.swaps = Counter("autopilot_model_swaps_total", "Model swaps, by outcome.", ["outcome"],
                             registry=self.registry)
        self.swap_failed: Any = _Unexported() if pooled else Gauge("autopilot_model_swap_failed_version",
                                 "The version whose load or warm-up failed last, while an older one keeps serving "
                                 "(0 = the last swap succeeded).", registry=self.registry)
        self.rejected = Counter("autopilot_rejected_total",
                                "Requests shed under load (429/503 with Retry-After), by endpoint and reason "
                                "(concurrency, queue, connections); not counted in autopilot_requests_total.",
                                ["endpoint", "reason"], registry=self.registry)
        self.in_flight: Any = _Unexported() if pooled else Gauge(
            "autopilot_requests_in_progress", "Requests admitted to the model routes and not yet answered.",
            registry=self.registry)
        self.queued_rows: Any = _Unexported() if pooled else Gauge(
            "autopilot_queued_rows", "Rows waiting for the micro-batcher.", registry=self.registry)
        self.connections: Any = _Unexported() if pooled else Gauge(
            "autopilot_open_connections", "Open client connections (-1 when unknown).", registry=self.registry)
        self.unseen = Counter("autopilot_unseen_categories_total",
                              "Categorical values never seen in training, in /predict and /invocations requests, "
                              "by model and column (null is missing, not unseen).", ["model", "column"],
                              registry=self.registry)
        # `labels()` takes a lock and builds a key on every call (~5-25 us): the hot path and the
        # shedding path use these per-label caches of the labelled children instead.
        self._children: dict[tuple[str, ...], Any] = {}

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one admitted request and its latency."""
        key = ("answered", endpoint, str(status))
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(endpoint, str(status)),
                                          self.latency.labels(endpoint))
        pair[0].inc()
        pair[1].observe(seconds)

    def unseen_categories(self, model: str, found: Sequence[tuple[int, str, str]]) -> None:
        """Count each unseen categorical value under its column."""
        for _, column, _ in found:
            key = ("unseen", model, column)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.unseen.labels(model, column)
            child.inc()

    def shed(self, endpoint: str, reason: str) -> None:
        """Count one request refused for load."""
        key = ("shed", endpoint, reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.rejected.labels(endpoint, reason)
        child.inc()


def _pool_registry(board: Any) -> CollectorRegistry:
    """What a pool worker's /metrics serves: all workers' counters and histograms, and the pool's gauges."""
    import os

    from prometheus_client import multiprocess

    from autopilot.serving.board import PoolCollector
    from autopilot.serving.pool import METRICS_DIR_ENV

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[METRICS_DIR_ENV])
    registry.register(PoolCollector(board))
    return registry


@dataclass
class ServingState:
    """Everything one app's routes, admission and batch worker share: the model, the limits, the counters."""

    cfg: ModelConfig
    holder: ModelHolder
    metrics: ServingMetrics
    token: str | None
    inference_log: Any | None
    batcher: MicroBatcher | None = None
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BACKGROUND_ROWS))
    in_flight: int = 0  # admitted model-route requests not yet answered (event-loop thread only)
    # The server's count of open connections, for /metrics (set by `serving.server` from
    # uvicorn's own state; None in-process, e.g. under TestClient, with no connections to count).
    open_connections: Callable[[], int] | None = None
    admission: Admission = field(init=False)
    # /explain and /feedback run on their own threads, bounded: a job that outlives its request's
    # timeout keeps its slot until its thread finishes (a 504 does not stop a thread), so slow
    # SHAP work can neither pile up without bound nor starve /reload on the default executor.
    side_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=SIDE_WORKERS, thread_name_prefix="autopilot-side"))
    side_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(SIDE_JOBS))
    shadow: Any | None = None  # a `serving.shadow.ShadowRunner` when shadow deployment is on
    board: Any | None = None  # the pool's shared table (`serving.board.Board`) in a worker process

    def __post_init__(self) -> None:
        self.admission = Admission(self)

    def reported_version(self) -> int | None:
        """The version the endpoint reports: this process's, or in a pool the one every worker serves."""
        if self.board is None:
            return self.version
        return self.board.agreement().version

    @property
    def version(self) -> int | None:
        """The version serving now (None before the first load)."""
        model = self.holder.current
        return model.version if model else None


def create_app(cfg: ModelConfig, source: ModelSource, *, token: str | None, inference_log: Any | None = None,
               follow: bool = True, shadow_source: ModelSource | None = None, board: Any = None) -> FastAPI:
    """The serving app for one model.

    Args:
        cfg: the model config (features, task, `deployment.serving` limits).
        source: where versions come from (registry alias or a fixed package folder).
        token: the bearer token clients must send; None disables auth (only for SageMaker,
            where IAM authenticates `/invocations` and the container is not reachable otherwise).
        inference_log: an `InferenceLog`; every acknowledged prediction is appended to it first.
        follow: poll the source every `serving.poll_seconds` and hot-swap on a new version.
        shadow_source: the challenger's source (`challenger` alias); with the inference log and
            `deployment.rollout.shadow.enabled`, a copy of the traffic goes to it (`serving.shadow`).
        board: in a pool worker (`serving.pool`), the workers' shared table: admission counts all
            workers' load, the reported version is the one they all serve, /reload reaches them all.
    """
    state = ServingState(cfg=cfg, holder=ModelHolder(source), metrics=(metrics := ServingMetrics(board)),
                         token=token, inference_log=inference_log, board=board)
    state.holder._on_swap = lambda old, new: _swapped(state, old, new)
    state.holder._on_failure = lambda failure: _failed(state, failure)
    serving = cfg.deployment.serving
    # Read at scrape time only: the hot path pays nothing for these.
    metrics.in_flight.set_function(lambda: state.in_flight)
    metrics.queued_rows.set_function(lambda: state.batcher.queued_rows if state.batcher else 0)
    metrics.connections.set_function(lambda: state.open_connections() if state.open_connections else -1)
    shadow = cfg.deployment.rollout.shadow
    if shadow.enabled and shadow_source is not None and inference_log is not None:
        from autopilot.serving.shadow import ShadowRunner

        state.shadow = ShadowRunner(shadow_source, inference_log, max_queued_rows=shadow.max_queued_rows,
                                    sample=shadow.sample, registry=metrics.registry, serving=lambda: state.version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher = MicroBatcher(lambda jobs: _process(state, jobs), serving.micro_batch_max_rows,
                                     serving.micro_batch_wait_ms, thread_init=_one_native_thread,
                                     max_queued_rows=serving.max_queued_rows, board=board)
        state.batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, state.holder.refresh)
        await join_pool(board)
        if follow:
            state.holder.follow(serving.poll_seconds, nudged=(lambda: board.generation) if board else None)
        if state.shadow is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, state.shadow.start, serving.poll_seconds if follow else None)
        try:
            yield
        finally:
            if state.shadow is not None:
                state.shadow.stop()
            state.holder.stop()
            await state.batcher.stop()
            state.side_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"autopilot: {cfg.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.autopilot = state
    app.add_middleware(AdmissionGuard, state=state)
    add_routes(app, state)
    return app


async def join_pool(board: Any) -> None:
    """In a pool, accept connections only once every worker has tried its first load (uvicorn listens after).

    If the workers then serve different versions (the alias moved while they loaded), each looks
    once more, so they converge on one. Only then: a worker slow to get here must not make the
    others follow an alias moved after the endpoint was up (with a long `poll_seconds`, swaps
    come from an authorized /reload only; seen in CI under load).
    """
    from autopilot.serving.board import Field

    if board is None:
        return

    board.set(Field.STARTED, 1)
    if not await asyncio.get_running_loop().run_in_executor(None, board.wait_started, POOL_START_SECONDS):
        log.warning("not every worker started within %g s; serving anyway", POOL_START_SECONDS)
    if board.agreement().swapping:
        board.request_reload()


def _one_native_thread() -> None:
    """Limit OpenMP to one thread on the batch thread (OpenMP's thread count is per calling thread).

    The event loop needs the other core; and on tiny batches HGB's OpenMP team costs more than it
    saves (measured under load: a 32-row predict took ~575 ms with 2 threads, 4.7 ms with 1).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def _swapped(state: ServingState, old: LoadedModel | None, new: LoadedModel) -> None:
    if state.board is not None:
        from autopilot.serving.board import Field

        state.board.set(Field.VERSION, new.version)
        state.board.set(Field.FAILED, 0)
        state.board.request_reload()  # the others check the alias now: the workers converge on one version
    state.metrics.version.set(new.version)
    state.metrics.swaps.labels("ok").inc()
    state.metrics.swap_failed.set(0)
    # A full collection of a process holding a model and its libraries takes 170-270 ms, holds
    # the GIL, and stalls every request in flight (it was the whole p99 tail; under the
    # admission bound, a burst of 429s). So freeze what is loaded now, and later collections
    # skip it. Nothing is unfrozen first: the model this swap drops is freed by reference
    # counting, frozen or not (a fitted pipeline holds no reference cycles; a test checks it),
    # and `collect` here only walks what was created since the last freeze (~0.2 ms). The price:
    # a reference cycle frozen while alive (a connection's protocol and its request cycle, open
    # at the swap) is never collected once it dies: a few KB per open connection, per swap.
    gc.collect()
    gc.freeze()


def _failed(state: ServingState, failure: SwapFailure) -> None:
    if state.board is not None:
        from autopilot.serving.board import Field

        state.board.set(Field.FAILED, failure.version)
    state.metrics.swaps.labels("failed").inc()
    state.metrics.swap_failed.set(failure.version)


# ---------------------------------------------------------------------------- the batch worker


@dataclass(frozen=True)
class _Answer:
    version: int
    scores: list[Any]  # a probability or value per row; multiclass: {label: probability} in class order
    labels: list[Any] | None
    logged: list[Any]  # what the inference log records per row (`_logged`)


def _process(state: ServingState, jobs: Sequence[Job]) -> list[Any]:
    """Predict a micro-batch, log it durably, and split the answers per request (worker thread)."""
    model = state.holder.current  # read once: the whole batch uses one version
    if model is None:
        return [RequestError(503, "no model is loaded yet")] * len(jobs)
    rows = [row for job in jobs for row in job.rows]
    scores = model.predict_rows(rows)
    if not np.all(np.isfinite(scores)):
        return [RequestError(500, "the model produced a non-finite score")] * len(jobs)
    labels = model.labels(scores) if model.classifier else None
    state.metrics.rows.inc(len(rows))
    state.metrics.batch_rows.observe(len(rows))
    state.recent.extend(rows[-BACKGROUND_ROWS:])
    answers: list[Any] = []
    start = 0
    answered, logged = _answered(model, scores, labels)
    for job in jobs:
        end = start + len(job.rows)
        answers.append(_Answer(model.version, answered[start:end], labels[start:end] if labels is not None else None,
                               logged[start:end]))
        start = end
    if state.inference_log is not None:
        answers = _log(state, model, jobs, answers)
        # After the durable log, so a shadow row always has its served row.
        if state.shadow is not None and state.shadow.challenger is not None:
            _copy_to_shadow(state, model, jobs, answers)
    return answers


def _copy_to_shadow(state: ServingState, model: LoadedModel, jobs: Sequence[Job], answers: list[Any]) -> None:
    """Offer the answered requests to the shadow challenger (non-blocking, never raises)."""
    from autopilot.serving.shadow import ShadowCopy

    assert state.shadow is not None
    state.shadow.offer(model.version, [ShadowCopy(job.request_id, job.rows)
                                       for job, answer in zip(jobs, answers, strict=True)
                                       if isinstance(answer, _Answer)])


def _answered(model: LoadedModel, scores: np.ndarray, labels: list[Any] | None) -> tuple[list[Any], list[Any]]:
    """Per row, the answer and what the log records. The score (probability for classifiers), not the
    label, is logged: monitoring needs it for prediction drift and for estimating performance before
    labels arrive. Multiclass answers `{label: probability}` (labels as text, class order) and logs
    `prediction_record(label, probabilities)`, the contract `read_prediction` reads back."""
    if not model.multiclass:
        values = [float(s) for s in scores]
        return values, values
    from autopilot.modeling.multiclass import prediction_record

    classes = model.classes
    probabilities = [[float(p) for p in row] for row in scores]
    answered = [dict(zip(classes, row, strict=True)) for row in probabilities]
    assert labels is not None
    return answered, [dict(prediction_record(label, row)) for label, row in zip(labels, probabilities, strict=True)]


def _log(state: ServingState, model: LoadedModel, jobs: Sequence[Job], answers: list[Any]) -> list[Any]:
    """Append the batch in one transaction; if that fails, job by job, so one bad request fails alone."""
    from autopilot.serving.inference_log import DuplicateRequest, InferenceRecord

    inference_log = state.inference_log
    assert inference_log is not None
    now = datetime.now(UTC)
    done = time.monotonic()

    def records(job: Job, answer: _Answer) -> list[InferenceRecord]:
        latency = (done - job.enqueued) * 1000.0  # what is logged: see `_answered`
        return [InferenceRecord(request_id=job.request_id, row=i, model=model.name, version=model.version, at=now,
                                features=row, prediction=logged, latency_ms=latency)
                for i, (row, logged) in enumerate(zip(job.rows, answer.logged, strict=True))]

    try:
        inference_log.append([r for job, a in zip(jobs, answers, strict=True) for r in records(job, a)])
        return answers
    except Exception as exc:
        log.warning("inference log batch append failed (%s); retrying request by request", exc)
    out: list[Any] = []
    for job, answer in zip(jobs, answers, strict=True):
        try:
            inference_log.append(records(job, answer))
            out.append(answer)
        except Exception as exc:
            duplicate = isinstance(exc, DuplicateRequest)
            out.append(RequestError(409 if duplicate else 503,
                                    f"request id {job.request_id!r} is already in the inference log" if duplicate
                                    else f"the inference log is unavailable, nothing was recorded: {exc}"))
    return out


