"""Micro-batching: concurrent requests are predicted together, in one call of the model.

A scikit-learn pipeline costs about the same for 1 row as for 32 (the per-call overhead is the
ColumnTransformer's dispatch, not the trees), so serving requests one call each wastes most of
the CPU. One worker coroutine takes the first queued request, gathers whatever else is queued
(up to `max_rows` rows, optionally waiting `max_wait_ms` for more), and runs the batch on a
single dedicated thread. Requests that arrive while a batch is predicting form the next one,
so batches grow with load by themselves ("natural batching").

Natural batching alone splits a closed loop of N clients into two groups that take turns
(measured: 32 clients gave batches of 16 on average). The adaptive wait closes that gap: when
the last batch held more than one request, the next one waits up to the last prediction's
duration for the others to arrive, and stops waiting once as many requests as last time are
in; a lone client (the last batch held one request) never waits.

The queue is bounded in rows (`max_queued_rows`): a request that would exceed it is refused
at once (`QueueFull`) rather than queued, so waiting time and memory stay bounded under
overload and the endpoint can answer 429 instead of letting every request time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from autopilot.serving.board import Field

log = logging.getLogger(__name__)

__all__ = ["Job", "MicroBatcher", "QueueFull"]

MAX_ADAPTIVE_WAIT = 0.025  # seconds: a slow model must not turn the wait into latency


@dataclass
class Job:
    """One request's rows waiting for a prediction; `future` receives the result or the error."""

    rows: list[dict[str, Any]]
    request_id: str
    future: asyncio.Future[Any]
    enqueued: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        """The client is gone (timed out): skip its work."""
        return self.future.done()


class QueueFull(Exception):
    """The batcher holds as many rows as it may: the request was not queued."""

    def __init__(self, queued: int, rows: int, limit: int) -> None:
        super().__init__(f"{queued} rows are waiting for a batch; {rows} more would exceed the limit of {limit}")
        self.queued, self.rows, self.limit = queued, rows, limit


class MicroBatcher:
    """Queue requests and process them in batches on one thread.

    `process(jobs)` runs on the worker thread and returns one result (or an Exception instance,
    delivered to that job alone) per job, in order.
    """

    def __init__(self, process: Callable[[Sequence[Job]], list[Any]], max_rows: int,
                 max_wait_ms: float | None = None, thread_init: Callable[[], None] | None = None,
                 max_queued_rows: int | None = None, board: Any = None) -> None:
        """`board`: in a worker pool, the shared table; `max_queued_rows` then bounds all workers' queues."""
        self._process = process
        self._board = board
        self.max_rows = max_rows
        self.max_queued_rows = max_queued_rows
        self.queued_rows = 0  # rows submitted and not yet taken into a batch (event-loop thread only)
        self.fixed_wait = None if max_wait_ms is None else max_wait_ms / 1000.0
        self._last_jobs = 0
        self._last_seconds = 0.0
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carry: Job | None = None
        # One thread: predictions never run concurrently with each other (the model's own
        # native code may use the second core), and the order of the inference log follows it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autopilot-batch",
                                            initializer=thread_init)

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="autopilot-batcher")

    async def stop(self) -> None:
        """Stop the worker; queued requests fail with 503-worthy errors."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                job = self._take(self._queue.get_nowait())
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, rows: list[dict[str, Any]], request_id: str, **meta: Any) -> Any:
        """Queue one request and wait for its result.

        Raises:
            QueueFull: when its rows would take the queue past `max_queued_rows` (nothing was queued).
        """
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        if self.max_queued_rows is not None:
            queued = self.queued_rows if self._board is None else self._board.total(Field.QUEUED_ROWS)
            if queued + len(rows) > self.max_queued_rows:
                raise QueueFull(queued, len(rows), self.max_queued_rows)
        loop = asyncio.get_running_loop()
        job = Job(rows=rows, request_id=request_id, future=loop.create_future(), enqueued=loop.time(), meta=meta)
        self.queued_rows += len(rows)
        if self._board is not None:
            self._board.set(Field.QUEUED_ROWS, self.queued_rows)
        self._queue.put_nowait(job)  # unbounded asyncio queue: bounded by the row count above
        return await job.future

    def _take(self, job: Job) -> Job:
        self.queued_rows -= len(job.rows)
        if self._board is not None:
            self._board.set(Field.QUEUED_ROWS, self.queued_rows)
        return job

    def _wait(self) -> float:
        if self.fixed_wait is not None:
            return self.fixed_wait
        return min(self._last_seconds, MAX_ADAPTIVE_WAIT) if self._last_jobs > 1 else 0.0

    async def _gather(self, first: Job) -> list[Job]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch, rows = [first], len(first.rows)
        deadline = loop.time() + self._wait()
        while rows < self.max_rows:
            try:
                job = self._take(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                # Adaptive: as many requests as last time are here, so the group is complete.
                if remaining <= 0 or (self.fixed_wait is None and len(batch) >= self._last_jobs):
                    break
                try:
                    job = self._take(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            if rows + len(job.rows) > self.max_rows:
                self._carry = job  # too big to join: it starts the next batch (a request is never split)
                break
            batch.append(job)
            rows += len(job.rows)
        return batch

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first, self._carry = ((self._carry, None) if self._carry is not None
                                  else (self._take(await self._queue.get()), None))
            batch = [j for j in await self._gather(first) if not j.cancelled]
            if not batch:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._process, batch)
            except Exception as exc:  # the whole batch failed: every job gets the error
                log.exception("batch of %d requests failed", len(batch))
                results = [exc] * len(batch)
            self._last_jobs, self._last_seconds = len(batch), loop.time() - started
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
