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
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from autopilot.config import ModelConfig
from autopilot.serving.batcher import Job, MicroBatcher, QueueFull
from autopilot.serving.holder import ModelHolder, SwapFailure
from autopilot.serving.model import LoadedModel, ModelSource
from autopilot.serving.schema import RequestError

log = logging.getLogger(__name__)

__all__ = ["Admission", "AdmissionGuard", "Refusal", "ServingMetrics", "create_app"]

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
BACKGROUND_ROWS = 200
# Routes whose requests hold model, batcher or database work: the concurrency bound applies.
ADMITTED = {"/predict": "predict", "/invocations": "invocations", "/explain": "explain", "/feedback": "feedback"}
ENDPOINTS = {**ADMITTED, "/model": "model", "/reload": "reload"}  # metric labels; any other path is "other"
# Probes and the scraper are answered even past the connection bound: they are cheap and
# carry no body, and an orchestrator must not restart a server because it is busy.
PROBES = frozenset({"/health", "/ready", "/ping", "/metrics"})


class ServingMetrics:
    """The endpoint's Prometheus metrics, on a registry of its own (several apps per process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes etc.: rollouts record memory
        self.requests = Counter("autopilot_requests_total", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("autopilot_request_latency_seconds", "Time to answer, by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("autopilot_errors_total", "Requests refused or failed, by endpoint and kind.",
                              ["endpoint", "kind"], registry=self.registry)
        self.version = Gauge("autopilot_model_version", "The model version serving now (0 = none).",
                             registry=self.registry)
        self.rows = Counter("autopilot_predicted_rows_total", "Rows predicted.", registry=self.registry)
        self.batch_rows = Histogram("autopilot_batch_rows", "Rows per micro-batch.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.swaps = Counter("autopilot_model_swaps_total", "Model swaps, by outcome.", ["outcome"],
                             registry=self.registry)
        self.swap_failed = Gauge("autopilot_model_swap_failed_version",
                                 "The version whose load or warm-up failed last, while an older one keeps serving "
                                 "(0 = the last swap succeeded).", registry=self.registry)
        self.rejected = Counter("autopilot_rejected_total",
                                "Requests shed under load (429/503 with Retry-After), by endpoint and reason "
                                "(concurrency, queue, connections); not counted in autopilot_requests_total.",
                                ["endpoint", "reason"], registry=self.registry)
        self.in_flight = Gauge("autopilot_requests_in_progress", "Requests admitted to the model routes and not "
                               "yet answered.", registry=self.registry)
        self.queued_rows = Gauge("autopilot_queued_rows", "Rows waiting for the micro-batcher.",
                                 registry=self.registry)
        self.connections = Gauge("autopilot_open_connections", "Open client connections (-1 when unknown).",
                                 registry=self.registry)
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


@dataclass
class _State:
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

    def __post_init__(self) -> None:
        self.admission = Admission(self)

    @property
    def version(self) -> int | None:
        model = self.holder.current
        return model.version if model else None


def create_app(cfg: ModelConfig, source: ModelSource, *, token: str | None, inference_log: Any | None = None,
               follow: bool = True) -> FastAPI:
    """The serving app for one model.

    Args:
        cfg: the model config (features, task, `deployment.serving` limits).
        source: where versions come from (registry alias or a fixed package folder).
        token: the bearer token clients must send; None disables auth (only for SageMaker,
            where IAM authenticates `/invocations` and the container is not reachable otherwise).
        inference_log: an `InferenceLog`; every acknowledged prediction is appended to it first.
        follow: poll the source every `serving.poll_seconds` and hot-swap on a new version.
    """
    metrics = ServingMetrics()
    state = _State(cfg=cfg, holder=ModelHolder(source), metrics=metrics, token=token, inference_log=inference_log)
    state.holder._on_swap = lambda old, new: _swapped(state, old, new)
    state.holder._on_failure = lambda failure: _failed(state, failure)
    serving = cfg.deployment.serving
    # Read at scrape time only: the hot path pays nothing for these.
    metrics.in_flight.set_function(lambda: state.in_flight)
    metrics.queued_rows.set_function(lambda: state.batcher.queued_rows if state.batcher else 0)
    metrics.connections.set_function(lambda: state.open_connections() if state.open_connections else -1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.batcher = MicroBatcher(lambda jobs: _process(state, jobs), serving.micro_batch_max_rows,
                                     serving.micro_batch_wait_ms, thread_init=_one_native_thread,
                                     max_queued_rows=serving.max_queued_rows)
        state.batcher.start()
        await asyncio.get_running_loop().run_in_executor(None, state.holder.refresh)
        if follow:
            state.holder.follow(serving.poll_seconds)
        try:
            yield
        finally:
            state.holder.stop()
            await state.batcher.stop()
            state.side_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"autopilot: {cfg.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.autopilot = state
    app.add_middleware(AdmissionGuard, state=state)
    _routes(app, state)
    return app


def _one_native_thread() -> None:
    """Limit OpenMP to one thread on the batch thread (OpenMP's thread count is per calling thread).

    The event loop needs the other core; and on tiny batches HGB's OpenMP team costs more than it
    saves (measured under load: a 32-row predict took ~575 ms with 2 threads, 4.7 ms with 1).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def _swapped(state: _State, old: LoadedModel | None, new: LoadedModel) -> None:
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


def _failed(state: _State, failure: SwapFailure) -> None:
    state.metrics.swaps.labels("failed").inc()
    state.metrics.swap_failed.set(failure.version)


# ---------------------------------------------------------------------------- admission


@dataclass(frozen=True)
class Refusal:
    """A request shed for load: its status, why (the metric's reason), and whether to close the connection."""

    status: int
    reason: str
    message: str
    close: bool = False


class Admission:
    """The load-shedding decision, made before routing or reading the body.

    Shared by `AdmissionGuard` (the ASGI middleware, which also counts the requests it admits)
    and by `serving.server`'s uvicorn protocol, which answers a refusal straight from the parsed
    headers: no ASGI task, no routing, one write. Shedding must cost far less than serving, or a
    server offered twice its capacity spends its CPU refusing.
    """

    def __init__(self, state: _State) -> None:
        self.state = state
        self.serving = serving = state.cfg.deployment.serving
        self._busy = Refusal(429, "concurrency", f"{serving.max_concurrent_requests} requests are in progress "
                                                 "(the limit)")
        self._crowded = Refusal(503, "connections", f"this connection was opened past the limit of "
                                                    f"{serving.max_connections} open connections", close=True)
        # Answers built once per (reason, version) and reused: (ASGI headers, body, whole HTTP/1.1 bytes).
        self._answers: dict[tuple[str, int | None], tuple[list[tuple[bytes, bytes]], bytes, bytes]] = {}

    def refusal(self, path: str) -> Refusal | None:
        """Why a request for `path` must be refused now, or None to admit it (no side effects)."""
        if path in ADMITTED and self.state.in_flight >= self.serving.max_concurrent_requests:
            return self._busy
        return None

    def connection_refusal(self, path: str) -> Refusal | None:
        """The refusal for a request on a connection opened past `max_connections` (None for probes).

        Only connections opened while the server was already at the bound are refused (and
        closed, which gives the file descriptor back); the ones it had are served as usual.
        Probes are answered on any connection: an orchestrator must not restart a busy server.
        """
        return None if path in PROBES else self._crowded

    def over_connection_bound(self, open_connections: int) -> bool:
        """Whether a connection that makes `open_connections` open is past `max_connections`."""
        return open_connections > self.serving.max_connections

    def answer(self, path: str, refusal: Refusal) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
        """Count the refusal and return its answer: ASGI headers, body, and the whole response as bytes."""
        self.state.metrics.shed(ENDPOINTS.get(path, "other"), refusal.reason)
        key = (refusal.reason, self.state.version)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) > 32:  # one entry per reason and version: forget old versions
                self._answers.clear()
            response = _shed_response(self.state, refusal.status, f"overloaded: {refusal.message}; retry after "
                                                                   f"{self.serving.retry_after_seconds} s",
                                      refusal.close)
            body = bytes(response.body)
            head = b"HTTP/1.1 %d %s\r\n" % (refusal.status, HTTPStatus(refusal.status).phrase.encode())
            raw = head + b"".join(b"%s: %s\r\n" % pair for pair in response.raw_headers) + b"\r\n" + body
            answer = self._answers[key] = (response.raw_headers, body, raw)
        return answer


class AdmissionGuard:
    """Shed load before it queues: a plain ASGI middleware in front of the routes.

    It runs before routing and before the body is read, and counts the requests it admits to
    the model routes (`serving.max_concurrent_requests` bounds that count). Under
    `autopilot serve` most refusals never reach it: the server's protocol answers them from the
    parsed headers with the same decision (`serving.server.http_protocol`).
    """

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app = app
        self.state = state
        self.admission = state.admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit the request to the app, or answer 429 with Retry-After at once."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        refusal = self.admission.refusal(path)
        if refusal is not None:
            headers, body, _ = self.admission.answer(path, refusal)
            await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if path not in ADMITTED:
            await self.app(scope, receive, send)
            return
        state = self.state
        state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1


def _shed_response(state: _State, status: int, message: str, close: bool = False) -> Response:
    """A 429/503 load-shedding answer: Retry-After, the model version, and `Connection: close` if asked."""
    response = _error(state, status, message)
    response.headers["Retry-After"] = str(state.cfg.deployment.serving.retry_after_seconds)
    response.headers["X-Model-Version"] = str(state.version or "")
    if close:
        response.headers["Connection"] = "close"
    return response


# ---------------------------------------------------------------------------- the batch worker


@dataclass(frozen=True)
class _Answer:
    version: int
    scores: list[float]
    labels: list[Any] | None


def _process(state: _State, jobs: Sequence[Job]) -> list[Any]:
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
    for job in jobs:
        end = start + len(job.rows)
        answers.append(_Answer(model.version, [float(s) for s in scores[start:end]],
                               labels[start:end] if labels is not None else None))
        start = end
    if state.inference_log is not None:
        answers = _log(state, model, jobs, answers)
    return answers


def _log(state: _State, model: LoadedModel, jobs: Sequence[Job], answers: list[Any]) -> list[Any]:
    """Append the batch in one transaction; if that fails, job by job, so one bad request fails alone."""
    from autopilot.serving.inference_log import DuplicateRequest, InferenceRecord

    inference_log = state.inference_log
    assert inference_log is not None
    now = datetime.now(UTC)
    done = time.monotonic()

    def records(job: Job, answer: _Answer) -> list[InferenceRecord]:
        # The score (probability for classifiers), not the label: monitoring needs it for
        # prediction drift and for estimating performance before labels arrive.
        latency = (done - job.enqueued) * 1000.0
        return [InferenceRecord(request_id=job.request_id, row=i, model=model.name, version=model.version, at=now,
                                features=row, prediction=score, latency_ms=latency)
                for i, (row, score) in enumerate(zip(job.rows, answer.scores, strict=True))]

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


# ---------------------------------------------------------------------------- routes


Handler = Callable[[Request, Any], Awaitable[Any]]
CLIENT_GONE = 499  # nginx's "client closed request": recorded in metrics, never sent


SIDE_WORKERS = 2  # threads for /explain and /feedback (SHAP is CPU-bound: more threads buy nothing here)
SIDE_JOBS = 4  # jobs running or waiting for those threads; past it, 429


class SideBusy(Exception):
    """Every /explain and /feedback slot is taken: shed with 429, like a full batch queue."""


async def _side_job(state: _State, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn` on the bounded side pool; shed (429) when its jobs are all taken.

    The slot is released when the thread finishes, not when the request stops waiting for it.
    """
    if not state.side_slots.acquire(blocking=False):
        raise SideBusy(f"{SIDE_JOBS} explain/feedback jobs are running or waiting (the limit)")
    try:
        future = state.side_pool.submit(fn, *args)
    except BaseException:
        state.side_slots.release()
        raise
    future.add_done_callback(lambda _: state.side_slots.release())
    return await asyncio.wrap_future(future)


def _routes(app: FastAPI, state: _State) -> None:
    serving = state.cfg.deployment.serving

    async def handle(request: Request, endpoint: str, fn: Handler, auth: bool, reads_body: bool) -> Response:
        start = time.perf_counter()
        status = 200
        answered_by = None  # the version that computed the answer (a swap may have happened since)
        try:
            if auth:
                _authorize(state, request)  # before the body: an unauthenticated body is never read
            body = await _json_body(request, serving.max_body_bytes, serving.body_timeout_seconds) \
                if reads_body else None
            # asyncio.timeout, not wait_for: no second task per request on the hot path.
            async with asyncio.timeout(serving.request_timeout_seconds):
                payload = await fn(request, body)
            if isinstance(payload, dict):
                answered_by = payload.get("model_version")
            content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            response = Response(content, media_type="application/json")
        except (QueueFull, SideBusy) as exc:  # shed, like the guard's refusals: not an admitted request
            state.metrics.shed(endpoint, "queue" if isinstance(exc, QueueFull) else "side_jobs")
            return _shed_response(state, 429, f"overloaded: {exc}; retry after {serving.retry_after_seconds} s")
        except RequestError as exc:
            status = exc.status
            state.metrics.errors.labels(endpoint, str(status)).inc()
            response = _error(state, status, exc.message)
        except TimeoutError:
            status = 504
            state.metrics.errors.labels(endpoint, "504").inc()
            response = _error(state, 504, f"no answer within {serving.request_timeout_seconds:g} s")
        except ClientDisconnect:  # the client left mid-body: nothing to answer, and not our failure
            status = CLIENT_GONE
            state.metrics.errors.labels(endpoint, "disconnect").inc()
            response = Response(status_code=400)
        except Exception as exc:  # a bug or a failed dependency: say so, do not leak a traceback
            status = 500
            log.exception("%s failed", endpoint)
            state.metrics.errors.labels(endpoint, "500").inc()
            response = _error(state, 500, f"internal error: {type(exc).__name__}")
        if status != 200:
            _error_headers(response, status, serving.retry_after_seconds)
        response.headers["X-Model-Version"] = str(answered_by if answered_by is not None else state.version or "")
        state.metrics.answered(endpoint, status, time.perf_counter() - start)
        return response

    async def predict(request: Request, body: Any) -> Any:
        model = state.holder.current
        if model is None or state.batcher is None:
            raise RequestError(503, "no model is loaded yet")
        rows = model.schema.records(body)
        unseen = model.unseen_categories(rows)
        if unseen:
            _unseen(state, model, unseen)
        request_id = _request_id(request)
        answer = await state.batcher.submit(rows, request_id)
        result: dict[str, Any] = {"request_id": request_id, "model": state.cfg.name,
                                  "model_version": answer.version, "predictions": answer.scores}
        if answer.labels is not None:
            result["labels"] = answer.labels
        if unseen:
            result["warnings"] = [{"warning": "unseen_category", "row": i, "column": column,
                                   "value": value[:MAX_VALUE_CHARS]} for i, column, value in unseen]
        return result

    async def explain(request: Request, body: Any) -> Any:
        model = state.holder.current
        if model is None:
            raise RequestError(503, "no model is loaded yet")
        rows = model.schema.records(body)
        if len(rows) > serving.explain_max_rows:
            raise RequestError(422, f"{len(rows)} records exceed the /explain limit of {serving.explain_max_rows}")
        return await _side_job(state, _explain, state, model, rows)

    async def feedback(request: Request, body: Any) -> Any:
        if state.inference_log is None:
            raise RequestError(503, "this endpoint keeps no inference log")
        items = body.get("feedback", [body]) if isinstance(body, dict) else body
        if not isinstance(items, list) or not all(isinstance(i, dict) and "request_id" in i and "labels" in i
                                                  for i in items):
            raise RequestError(422, "feedback must be {'request_id': ..., 'labels': [...]} or a list of them")
        labelled = await _side_job(state, _feedback, state, items)
        return {"labelled_rows": labelled, "model_version": state.version}

    async def model_info(request: Request, body: Any) -> Any:
        model = state.holder.current
        failure = state.holder.last_failure
        return {"model_version": state.version, "serving": model.describe() if model else None,
                "last_swap_failure": {"version": failure.version, "error": failure.error} if failure else None}

    async def reload(request: Request, body: Any) -> Any:
        report = await asyncio.get_running_loop().run_in_executor(None, state.holder.refresh)
        return {"model_version": state.version, **report}

    async def health(request: Request, body: Any) -> Any:
        return {"status": "ok", "model_version": state.version}

    async def ready(request: Request, body: Any) -> Any:
        if state.holder.current is None:
            failure = state.holder.last_failure
            raise RequestError(503, "no model loaded" + (f": {failure.error}" if failure else ""))
        return {"status": "ready", "model_version": state.version}

    def route(path: str, endpoint: str, fn: Handler, method: str, auth: bool = True) -> None:
        reads_body = path in ADMITTED

        async def view(request: Request) -> Response:
            return await handle(request, endpoint, fn, auth, reads_body)

        # A plain Starlette route: these handlers read the request themselves, so FastAPI's
        # dependency and parameter machinery would only add per-request cost.
        app.router.routes.append(Route(path, view, methods=[method], name=endpoint))

    need_token = state.token is not None
    route("/predict", "predict", predict, "POST", need_token)
    route("/invocations", "invocations", predict, "POST", need_token)
    route("/explain", "explain", explain, "POST", need_token)
    route("/feedback", "feedback", feedback, "POST", need_token)
    route("/model", "model", model_info, "GET", need_token)
    route("/reload", "reload", reload, "POST", need_token)
    route("/health", "health", health, "GET", False)
    route("/ready", "ready", ready, "GET", False)
    route("/ping", "ping", ready, "GET", False)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _authorize(state: _State, request: Request) -> None:
    if state.token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise RequestError(401, "missing bearer token (send 'Authorization: Bearer <token>')")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.token.encode()):
        raise RequestError(401, "invalid bearer token")


def _error_headers(response: Response, status: int, retry_after: int) -> None:
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="autopilot"'
    elif status in (429, 503):
        response.headers["Retry-After"] = str(retry_after)
    elif status == 408:
        # The client is still sending (slowly): nothing more on this connection can be parsed in
        # time, so close it rather than keep reading for it.
        response.headers["Connection"] = "close"


async def _json_body(request: Request, limit: int, timeout: float) -> Any:
    """The parsed JSON body, read within `timeout` seconds and up to `limit` bytes.

    A declared Content-Length over the limit is refused before any of the body is read; a
    chunked (or understated) body is counted as it streams and refused as soon as it passes the
    limit, so at most `limit` bytes are ever held. What the client still sends after the answer
    is read and discarded by the server (the connection stays usable), never stored.

    Raises:
        RequestError: 413 (too large), 408 (not received within `timeout`), 400 (empty or not JSON).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body was not received within {timeout:g} s "
                                f"({size} bytes arrived)") from None
    raw = b"".join(chunks)
    if not raw:
        raise RequestError(400, "empty body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity literals (and numbers that overflow to infinity), which
        # is what we want: they are not JSON, and a model must not see them.
        if "infinity" in str(exc).lower() or b"NaN" in raw or b"Infinity" in raw:
            raise RequestError(400, f"NaN and infinite numbers are not valid JSON; send null for a missing value "
                                    f"({exc})") from None
        raise RequestError(400, f"malformed JSON: {exc}") from None


MAX_VALUE_CHARS = 100  # a value quoted back in a warning or a 422: enough to recognise, bounded


def _unseen(state: _State, model: LoadedModel, found: list[tuple[int, str, str]]) -> None:
    """Count a request's unseen categories; refuse it (422) when the config says `reject`.

    The refusal quotes the first value only (truncated), and nothing of the body is logged.
    """
    state.metrics.unseen_categories(model.name, found)
    if state.cfg.deployment.serving.unseen_categories == "reject":
        i, column, value = found[0]
        more = f" ({len(found) - 1} more unseen values in this request)" if len(found) > 1 else ""
        raise RequestError(422, f"record {i}: column {column!r} has the category {value[:MAX_VALUE_CHARS]!r}, never "
                                f"seen in training (serving.unseen_categories: reject){more}")


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given is None:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(given):
        raise RequestError(400, "X-Request-ID must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    return given


def _error(state: _State, status: int, message: str) -> Response:
    body = {"error": message, "status": status, "model_version": state.version}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _explain(state: _State, model: LoadedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row SHAP contributions on the original features (exact tree path where the model allows)."""
    from autopilot.explain import shap_attributions

    frame = model.schema.frame(rows)
    background_rows = list(state.recent) or rows
    background = model.schema.frame(background_rows)
    attr = shap_attributions(model.pipeline, frame, model.cfg, background=background, method="auto", seed=0)
    values = attr.values.to_dict("records")
    return {"model_version": model.version, "method": attr.method, "output": attr.output,
            "base_value": _finite(attr.base_value),
            "contributions": [{k: _finite(v) for k, v in row.items()} for row in values]}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _feedback(state: _State, items: list[dict[str, Any]]) -> int:
    from autopilot.serving.inference_log import UnknownRequest

    total = 0
    for item in items:
        try:
            total += state.inference_log.add_feedback(str(item["request_id"]), item["labels"])  # type: ignore[union-attr]
        except UnknownRequest as exc:
            raise RequestError(404, str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None
    return total
