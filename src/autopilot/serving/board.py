"""The state the worker processes of one endpoint share: a small table in shared memory.

With `serving.workers` above one, `autopilot serve` runs that many worker processes on one
listening socket (`serving.pool`). Each worker publishes, in its own row of this table, what
the endpoint as a whole must know about it: its pid, the version it serves, the version whose
load failed last, and its load (requests in progress, rows queued, open connections). A worker
writes only its own row (one writer per cell, aligned 8-byte stores), so no lock is needed;
readers sum or compare the rows.

What the table makes endpoint-wide:

- **Admission limits.** `max_concurrent_requests`, `max_queued_rows` and `max_connections`
  bound the whole endpoint, as with one process: a worker admits a request against the sum of
  all rows. Two workers deciding at the same instant can each admit the last place, so the
  bound can be passed by at most `workers - 1` for that instant.
- **The reported version.** The endpoint reports a version (`/model`, `/reload`, `/health`,
  `/ready`, `autopilot_model_version`) only once every worker serves it: until then it reports
  the last version they all served, and `/model` shows each worker's. A rollout that waits for
  the new version therefore waits for the last worker's swap. Each answer's own
  `X-Model-Version` is the version that computed it.
- **Reload.** `/reload` lands on one worker; it bumps the table's reload generation, which
  every other worker watches, so all of them check the registry at once. It answers once every
  worker has tried the alias's version: all serve it, or (a version that fails) each has failed it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ctypes import c_int64
from dataclasses import dataclass
from typing import Any

__all__ = ["Board", "Field", "PoolCollector"]

# Header cells, then one row of `Field`s per worker.
GENERATION, AGREED, HEADER = 0, 1, 2


class Field:
    """The columns of a worker's row."""

    PID = 0
    VERSION = 1  # the version the worker serves (0 before its first load)
    FAILED = 2  # the version whose load failed last (0 after a successful swap)
    IN_FLIGHT = 3
    QUEUED_ROWS = 4
    CONNECTIONS = 5
    STARTED = 6  # 1 once the worker's first load was tried (it then waits for the others to start)
    COUNT = 7


@dataclass(frozen=True)
class Agreement:
    """What the endpoint reports: the version every worker serves, and each worker's."""

    version: int | None  # the last version all live workers served (None before the first)
    swapping: bool  # the workers do not all serve the same version now
    versions: list[int]  # per worker, 0 = not loaded (or restarting)


class Board:
    """One endpoint's shared table; `index` is the row this process writes (None in the supervisor)."""

    def __init__(self, raw: Any, workers: int, index: int | None = None) -> None:
        self.raw = raw  # a multiprocessing RawArray: what is passed to the worker processes
        self.workers = workers
        self.index = index
        self._cells = memoryview(raw).cast("B").cast("q")  # ~30 ns a read or write from Python
        self._own = HEADER + (index or 0) * Field.COUNT

    @classmethod
    def create(cls, workers: int, context: Any) -> Board:
        """A zeroed table for `workers` workers, in memory the processes of `context` can share."""
        return cls(context.RawArray(c_int64, HEADER + workers * Field.COUNT), workers)

    def for_worker(self, index: int) -> Board:
        """The same table as seen by worker `index` (which writes its row)."""
        return Board(self.raw, self.workers, index)

    # ----------------------------------------------------------------- one worker's row

    def set(self, column: int, value: int) -> None:
        """Write this worker's cell."""
        self._cells[self._own + column] = value

    def get(self, worker: int, column: int) -> int:
        """Read one worker's cell."""
        return int(self._cells[HEADER + worker * Field.COUNT + column])

    def total(self, column: int) -> int:
        """The column's sum over all workers (the endpoint's load)."""
        cells = self._cells
        return sum(cells[HEADER + i * Field.COUNT + column] for i in range(self.workers))

    def column(self, column: int) -> list[int]:
        """The column, per worker."""
        return [self.get(i, column) for i in range(self.workers)]

    def clear_row(self, worker: int) -> None:
        """Zero a worker's row (the supervisor does, when the worker has died: its load is gone)."""
        start = HEADER + worker * Field.COUNT
        for column in range(Field.COUNT):
            self._cells[start + column] = 0

    def set_pid(self, worker: int, pid: int) -> None:
        """Mark the row as owned by a started process (the supervisor clears the row before the start)."""
        self._cells[HEADER + worker * Field.COUNT + Field.PID] = pid

    # ----------------------------------------------------------------- versions and reloads

    def agreement(self) -> Agreement:
        """The version the endpoint reports; records it when all workers serve the same one."""
        versions = self.column(Field.VERSION)
        live = all(self.get(i, Field.PID) for i in range(self.workers))
        if live and versions[0] > 0 and len(set(versions)) == 1:
            self._cells[AGREED] = versions[0]
            return Agreement(versions[0], False, versions)
        agreed = int(self._cells[AGREED])
        return Agreement(agreed or None, True, versions)

    @property
    def generation(self) -> int:
        """The reload generation: bumped by a `/reload` on any worker."""
        return int(self._cells[GENERATION])

    def request_reload(self) -> None:
        """Ask every worker to check the registry now (two concurrent bumps still change it)."""
        self._cells[GENERATION] = self._cells[GENERATION] + 1

    def wait_started(self, timeout: float, poll: float = 0.05) -> bool:
        """Block until every worker has tried its first load (or `timeout`); whether they all have.

        A worker that accepted connections before the others had loaded could serve a version they
        will never load: the alias may move in between (the endpoint would then serve two versions).
        """
        deadline = time.monotonic() + timeout
        while not all(self.get(i, Field.STARTED) for i in range(self.workers)):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def wait_tried(self, version: int, timeout: float, poll: float = 0.02) -> bool:
        """Block until every worker has tried `version` (serves it, or its load failed); whether all have.

        A `/reload` to a version that fails answers only after each worker has failed it too, so
        the report, `/model` and the failed-swap count describe the whole endpoint, not one worker.
        """
        deadline = time.monotonic() + timeout
        while not all(self.get(i, Field.VERSION) == version or self.get(i, Field.FAILED) == version
                      for i in range(self.workers)):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def wait_for(self, version: int, timeout: float, poll: float = 0.02) -> Agreement:
        """Block until every worker serves `version` or `timeout` passes; the agreement at the end."""
        deadline = time.monotonic() + timeout
        while True:
            agreed = self.agreement()
            if (agreed.version == version and not agreed.swapping) or time.monotonic() >= deadline:
                return agreed
            time.sleep(poll)


class PoolCollector:
    """The endpoint-wide gauges of a worker pool, read from the board at scrape time.

    In pool mode counters and histograms are summed across processes by prometheus_client's
    multiprocess collector; gauges that describe the endpoint come from here instead (exact,
    never stale): the agreed version, the last failed version, the load, the workers alive, and
    the memory and CPU of all workers together (what a rollout records for the endpoint).
    """

    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Any]:
        """Yield the gauge families."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        board = self.board
        agreed = board.agreement()
        gauges = [
            ("autopilot_model_version", "The version every worker serves (the last one they all served while a "
                                        "swap is under way; 0 = none).", agreed.version or 0),
            ("autopilot_model_swap_failed_version", "The highest version whose load or warm-up failed last in a "
                                                    "worker, while an older one keeps serving (0 = none).",
             max(board.column(Field.FAILED))),
            ("autopilot_requests_in_progress", "Requests admitted to the model routes and not yet answered, "
                                               "all workers.", board.total(Field.IN_FLIGHT)),
            ("autopilot_queued_rows", "Rows waiting for the micro-batchers, all workers.",
             board.total(Field.QUEUED_ROWS)),
            ("autopilot_open_connections", "Open client connections, all workers.", board.total(Field.CONNECTIONS)),
            ("autopilot_workers", "Worker processes configured.", board.workers),
            ("autopilot_workers_alive", "Worker processes running now.",
             sum(1 for pid in board.column(Field.PID) if pid)),
            ("autopilot_workers_swapping", "1 while the workers do not all serve the same version.",
             int(agreed.swapping)),
        ]
        for name, text, value in gauges:
            family = GaugeMetricFamily(name, text)
            family.add_metric([], float(value))
            yield family
        rss, cpu = _usage([pid for pid in board.column(Field.PID) if pid])
        memory = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of all worker processes.")
        memory.add_metric([], sum(rss))
        yield memory
        # What one process's profile predicts (rollouts compare the two): the largest worker.
        largest = GaugeMetricFamily("autopilot_worker_resident_memory_bytes_max",
                                    "Resident memory of the largest worker process.")
        largest.add_metric([], max(rss, default=0.0))
        yield largest
        seconds = CounterMetricFamily("process_cpu_seconds", "CPU time of the live worker processes (seconds).")
        seconds.add_metric([], cpu)
        yield seconds


def _usage(pids: list[int]) -> tuple[list[float], float]:
    """Resident bytes of each process still running, and their summed CPU seconds."""
    import psutil

    rss: list[float] = []
    cpu = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                rss.append(float(process.memory_info().rss))
                times = process.cpu_times()
                cpu += times.user + times.system
        except psutil.Error:  # it died between the read and now: the supervisor restarts it
            continue
    return rss, cpu
