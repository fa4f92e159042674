"""The worker pool's shared table, endpoint-wide admission, worker sizing and reload nudges (in one process)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autopilot.deploy.profile import Profile
from autopilot.serving.app import create_app, join_pool
from autopilot.serving.batcher import MicroBatcher, QueueFull
from autopilot.serving.board import Board, Field
from autopilot.serving.holder import ModelHolder
from autopilot.serving.server import ServingSetupError, resolve_workers
from tests.serving_support import adult_cfg


def board_of(workers: int = 2) -> Board:
    board = Board.create(workers, multiprocessing.get_context("spawn"))
    for i in range(workers):
        board.set_pid(i, 1000 + i)
    return board


def test_each_worker_writes_its_row_and_totals_sum_all_rows() -> None:
    board = board_of(3)
    for i, load in enumerate((2, 5, 7)):
        board.for_worker(i).set(Field.IN_FLIGHT, load)
    assert board.total(Field.IN_FLIGHT) == 14
    assert board.column(Field.IN_FLIGHT) == [2, 5, 7]
    board.clear_row(1)  # a dead worker's load is gone
    assert board.total(Field.IN_FLIGHT) == 9
    assert board.get(1, Field.PID) == 0


def test_the_reported_version_moves_only_when_every_worker_serves_it() -> None:
    board = board_of(2)
    first, second = board.for_worker(0), board.for_worker(1)
    assert board.agreement().version is None  # nothing loaded yet
    first.set(Field.VERSION, 1)
    assert board.agreement().version is None and board.agreement().swapping
    second.set(Field.VERSION, 1)
    assert board.agreement().version == 1 and not board.agreement().swapping
    first.set(Field.VERSION, 2)  # one worker swapped: the endpoint still reports 1
    agreed = board.agreement()
    assert (agreed.version, agreed.swapping, agreed.versions) == (1, True, [2, 1])
    second.set(Field.VERSION, 2)
    assert board.agreement().version == 2
    first.set(Field.VERSION, 1)  # a rollback is no exception: 1 only once both serve it
    assert board.agreement().version == 2
    second.set(Field.VERSION, 1)
    assert board.agreement().version == 1


def test_a_restarting_worker_holds_the_reported_version() -> None:
    board = board_of(2)
    for i in range(2):
        board.for_worker(i).set(Field.VERSION, 3)
    assert board.agreement().version == 3
    board.clear_row(1)  # died: until its replacement serves a version, nothing new is agreed
    board.for_worker(0).set(Field.VERSION, 4)
    assert board.agreement().version == 3 and board.agreement().swapping


def test_wait_for_returns_when_the_last_worker_swaps_and_gives_up_at_the_deadline() -> None:
    board = board_of(2)
    board.for_worker(0).set(Field.VERSION, 5)
    later = threading.Timer(0.2, lambda: board.for_worker(1).set(Field.VERSION, 5))
    later.start()
    start = time.monotonic()
    assert board.wait_for(5, timeout=5).version == 5
    assert 0.15 < time.monotonic() - start < 3
    agreed = board.wait_for(6, timeout=0.1)
    assert agreed.version == 5 and not agreed.swapping


def test_wait_tried_counts_a_worker_that_failed_the_version_or_serves_it() -> None:
    board = board_of(2)
    board.for_worker(0).set(Field.FAILED, 7)
    assert not board.wait_tried(7, timeout=0.1)  # worker 1 has not tried 7 yet
    later = threading.Timer(0.2, lambda: board.for_worker(1).set(Field.FAILED, 7))
    later.start()
    start = time.monotonic()
    assert board.wait_tried(7, timeout=5)
    assert 0.15 < time.monotonic() - start < 3
    board.for_worker(1).set(Field.VERSION, 8)
    board.for_worker(0).set(Field.FAILED, 8)
    assert board.wait_tried(8, timeout=0.1)


class NoSource:
    """A model source the tests never load from (admission does not need a model)."""

    def current_version(self) -> int:
        raise RuntimeError("not used")

    def load(self, version: int) -> Any:
        raise RuntimeError("not used")


def pooled_state(board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **serving: Any) -> Any:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = create_app(adult_cfg(**serving), NoSource(), token=None, board=board)  # type: ignore[arg-type]
    return app.state.autopilot


def test_admission_counts_every_workers_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = board_of(2)
    here = pooled_state(board.for_worker(0), tmp_path, monkeypatch, max_concurrent_requests=4)
    assert here.admission.refusal("/predict") is None
    board.for_worker(1).set(Field.IN_FLIGHT, 4)  # the other worker holds the whole limit
    refusal = here.admission.refusal("/predict")
    assert refusal is not None and refusal.status == 429
    assert here.admission.refusal("/health") is None  # probes are never shed


def test_the_connection_bound_counts_every_workers_connections(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    board = board_of(2)
    here = pooled_state(board.for_worker(0), tmp_path, monkeypatch, max_connections=10)
    board.for_worker(1).set(Field.CONNECTIONS, 8)
    assert not here.admission.over_connection_bound(2)
    assert here.admission.over_connection_bound(3)  # 3 here + 8 there > 10
    here.admission.connections_now(1)
    assert board.total(Field.CONNECTIONS) == 9


def test_the_queue_bound_counts_every_workers_queued_rows() -> None:
    board = board_of(2)
    batcher = MicroBatcher(lambda jobs: [None] * len(jobs), max_rows=32, max_queued_rows=100,
                           board=board.for_worker(0))
    board.for_worker(1).set(Field.QUEUED_ROWS, 95)

    async def submit() -> None:
        batcher.start()
        try:
            with pytest.raises(QueueFull, match="95 rows are waiting"):
                await batcher.submit([{}] * 10, "r1")
            await batcher.submit([{}] * 5, "r2")  # fits: 95 + 5 = 100
        finally:
            await batcher.stop()

    asyncio.run(submit())
    assert board.get(0, Field.QUEUED_ROWS) == 0  # taken into a batch: published back to zero


def test_pool_metrics_report_the_endpoint_gauges_from_the_board(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest

    board = board_of(2)
    state = pooled_state(board.for_worker(0), tmp_path, monkeypatch)
    for i in range(2):
        board.for_worker(i).set(Field.VERSION, 7)
        board.for_worker(i).set(Field.IN_FLIGHT, 3)
    text = generate_latest(state.metrics.exposition).decode()
    assert "autopilot_model_version 7.0" in text
    assert "autopilot_requests_in_progress 6.0" in text
    assert "autopilot_workers_alive 2.0" in text
    assert text.count("autopilot_model_version{") == 0  # no per-process copy beside the endpoint's


def profile(rss_mb: float) -> Profile:
    return Profile(artifact_bytes=1, load_seconds=0.1, peak_rss_mb=rss_mb, latency_ms={"p50": 1, "p95": 2, "p99": 3},
                   throughput_rps={"1": {"1": 100.0}}, cores_measured=[1])


@pytest.mark.parametrize(("cores", "memory_mb", "rss_mb", "workers"), [
    (2, 8000, 300, 2),  # room for one per core
    (8, 2000, 400, 2),  # memory for two footprints (x1.25) after the OS's 512 MiB
    (4, 900, 300, 1),  # a small host: the single-process endpoint
    (1, 64000, 300, 1),  # one core
])
def test_workers_are_sized_from_the_measured_footprint(cores: int, memory_mb: float, rss_mb: float,
                                                       workers: int) -> None:
    assert profile(rss_mb).workers_for(cores, memory_mb) == workers


def test_resolve_workers_order_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.settings import Settings

    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path)})
    cfg = adult_cfg(workers=3)
    assert resolve_workers(cfg, settings, tmp_path, requested=2, environ={})[0] == 2
    assert resolve_workers(cfg, settings, tmp_path, environ={"AUTOPILOT_SERVING_WORKERS": "4"})[0] == 4
    assert resolve_workers(cfg, settings, tmp_path, environ={}) == (3, "configured")
    with pytest.raises(ServingSetupError, match="AUTOPILOT_SERVING_WORKERS='many'"):
        resolve_workers(cfg, settings, tmp_path, environ={"AUTOPILOT_SERVING_WORKERS": "many"})
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert resolve_workers(adult_cfg(), settings, tmp_path, environ={}) == (1, "one usable core")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    count, why = resolve_workers(adult_cfg(), settings, tmp_path, environ={})  # a package folder: no profile
    assert count == 3 and "no measured profile" in why


class CountingSource:
    """A source whose version never changes, counting how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    def current_version(self) -> int:
        self.asked += 1
        raise RuntimeError("registry down")  # refresh never raises: it reports

    def load(self, version: int) -> Any:
        raise AssertionError("not reached")


def test_a_nudge_makes_a_following_worker_check_at_once() -> None:
    source = CountingSource()
    holder = ModelHolder(source)  # type: ignore[arg-type]
    generation = [0]
    holder.follow(3600.0, nudged=lambda: generation[0])
    try:
        deadline = time.monotonic() + 5
        while source.asked < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.asked == 1  # the first check; the next poll is an hour away
        generation[0] += 1
        while source.asked < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.asked == 2
    finally:
        holder.stop()


def _hold_turn(url: str, held: Any, release: Any) -> None:
    from autopilot.adapters.state_db import WriteTurn

    turn = WriteTurn.for_url(url)
    assert turn is not None
    with turn:
        held.set()
        release.wait(10)


def test_sqlite_appenders_in_two_processes_take_turns(tmp_path: Path) -> None:
    from autopilot.adapters.state_db import WriteTurn

    url = f"sqlite:///{tmp_path / 'inference.db'}"
    assert WriteTurn.for_url("postgresql://localhost/x") is None
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    other = context.Process(target=_hold_turn, args=(url, held, release))
    other.start()
    try:
        assert held.wait(30)
        turn = WriteTurn.for_url(url)
        assert turn is not None
        threading.Timer(0.3, release.set).start()
        start = time.monotonic()
        with turn:  # waits for the other process's turn to end, and no longer
            waited = time.monotonic() - start
        assert 0.25 < waited < 2.0
    finally:
        release.set()
        other.join(10)


def test_threads_of_one_process_take_turns_too(tmp_path: Path) -> None:
    from autopilot.adapters.state_db import WriteTurn

    turn = WriteTurn.for_url(f"sqlite:///{tmp_path / 'inference.db'}")
    assert turn is not None
    inside: list[int] = []
    overlaps: list[int] = []

    def write() -> None:
        for _ in range(50):
            with turn:
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps


def test_a_rollout_compares_one_workers_memory_with_the_one_process_profile() -> None:
    from autopilot.deploy.rollout import parse_metrics

    total = "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 6e8\n"
    largest = ("# TYPE autopilot_worker_resident_memory_bytes_max gauge\n"
               "autopilot_worker_resident_memory_bytes_max 3.5e8\n")
    assert parse_metrics(total + largest).rss_bytes == parse_metrics(largest + total).rss_bytes == 3.5e8
    single = "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 3e8\n"
    assert parse_metrics(single).rss_bytes == 3e8


def _records(request_id: str, rows: int = 2) -> list[Any]:
    from datetime import UTC, datetime

    from autopilot.serving.inference_log import InferenceRecord

    return [InferenceRecord(request_id=request_id, row=i, model="m", version=3, at=datetime.now(UTC),
                            features={"age": 39.5 + i, "sex": None, "job": "é"}, prediction=0.1 + i / 3,
                            latency_ms=1.25) for i in range(rows)]


def test_workers_append_through_one_writer_that_commits_them_together(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from autopilot.serving.inference_log import DuplicateRequest, InferenceLog
    from autopilot.serving.log_writer import LogWriter, RemoteLog

    url = f"sqlite:///{tmp_path / 'inference.db'}"
    writer = LogWriter(url, tmp_path / "log.sock")
    writer.start()
    remotes = [RemoteLog(InferenceLog(url), writer.path, timeout=10) for _ in range(4)]
    try:
        def append(n: int) -> None:
            for k in range(25):
                remotes[n].append(_records(f"w{n}-{k}"))

        threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert writer.batches == 100 and writer.commits < 100  # batches sent together share a commit
        with pytest.raises(DuplicateRequest, match="w0-0"):  # a duplicate fails its own batch, nothing else
            remotes[0].append(_records("w0-0"))
        remotes[1].append(_records("fresh"))
        window = remotes[2].window("m", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        assert len(window) == 202 and window["request_id"].nunique() == 101  # reads go to the local log
        row = window[window["request_id"] == "w3-7"].sort_values("row").iloc[1]
        assert (row["prediction"], row["feature_age"] if "feature_age" in row else row["age"]) == (0.1 + 1 / 3, 40.5)
    finally:
        writer.close()


def test_a_worker_whose_writer_is_gone_fails_its_appends(tmp_path: Path) -> None:
    from autopilot.serving.inference_log import InferenceLog
    from autopilot.serving.log_writer import LogWriter, RemoteLog

    url = f"sqlite:///{tmp_path / 'inference.db'}"
    writer = LogWriter(url, tmp_path / "log.sock")
    writer.start()
    remote = RemoteLog(InferenceLog(url), writer.path, timeout=2)
    remote.append(_records("before"))
    writer.close()
    (tmp_path / "log.sock").unlink()
    with pytest.raises(ConnectionError):
        remote.append(_records("after"))


def _balanced(board: Board, index: int, open_here: int) -> Any:
    import uvicorn

    from autopilot.serving.accept import BalancedServer

    server = BalancedServer(uvicorn.Config(app=None), board.for_worker(index))
    server.server_state.connections = {object() for _ in range(open_here)}  # type: ignore[assignment]
    return server


def test_a_worker_ahead_of_the_least_loaded_one_lets_it_accept_first() -> None:
    board = board_of(3)
    for i, connections in enumerate((16, 18, 30)):
        board.for_worker(i).set(Field.CONNECTIONS, connections)
    assert not _balanced(board, 0, 16)._ahead()
    assert not _balanced(board, 1, 18)._ahead()  # within the slack (an eighth of the fewest, at least one)
    assert _balanced(board, 1, 19)._ahead() and _balanced(board, 2, 30)._ahead()
    board.clear_row(0)  # a dead worker is not waited for: the fewest live is now 18
    assert not _balanced(board, 2, 20)._ahead() and _balanced(board, 2, 21)._ahead()


def _accepted_after(server: Any) -> float:
    """Seconds from `server`'s accept loop starting to its taking a connection already waiting (real loopback)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname())  # in the backlog before the loop starts
    taken: list[float] = []

    async def record(connection: socket.socket) -> None:
        taken.append(time.monotonic())
        connection.close()

    async def scenario() -> float:
        server._connect = record
        started = time.monotonic()
        task = asyncio.get_running_loop().create_task(server._accept_loop(listener))
        while not taken and time.monotonic() - started < 2:
            await asyncio.sleep(0.001)
        task.cancel()
        return taken[0] - started

    try:
        return asyncio.run(scenario())
    finally:
        client.close()
        listener.close()


def test_a_worker_ahead_leaves_new_connections_to_the_others_but_never_strands_them() -> None:
    from autopilot.serving.accept import MAX_YIELD_SECONDS

    board = board_of(2)
    board.for_worker(1).set(Field.CONNECTIONS, 0)  # e.g. stopped: it never takes the connection
    delay = _accepted_after(_balanced(board, 0, 20))
    assert MAX_YIELD_SECONDS <= delay <= MAX_YIELD_SECONDS + 0.5  # left to the other worker, then taken
    assert _accepted_after(_balanced(board, 0, 1)) < MAX_YIELD_SECONDS  # not ahead: at once
    assert _accepted_after(_balanced(board_of(1), 0, 20)) < MAX_YIELD_SECONDS  # alone: nobody to yield to


def test_after_its_yield_a_worker_ahead_takes_one_connection_if_the_others_are_accepting_all_if_not() -> None:
    import socket

    from autopilot.serving.accept import MAX_YIELD_SECONDS

    def taken_after_one_yield(others_accepting: bool) -> int:
        board = board_of(2)
        other = board.for_worker(1)
        other.set(Field.CONNECTIONS, 2)
        server = _balanced(board, 0, 20)  # ahead all along
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        taken: list[socket.socket] = []

        async def record(connection: socket.socket) -> None:
            taken.append(connection)

        async def scenario() -> None:
            server._connect = record
            task = asyncio.get_running_loop().create_task(server._yield_turn(listener))
            await asyncio.sleep(MAX_YIELD_SECONDS / 2)
            if others_accepting:
                other.set(Field.CONNECTIONS, 3)  # it took one meanwhile, the rest are still waiting
            await task

        try:
            asyncio.run(scenario())
            return len(taken)
        finally:
            for connection in (*taken, *clients, listener):
                connection.close()

    assert taken_after_one_yield(others_accepting=True) == 1
    assert taken_after_one_yield(others_accepting=False) == 3


def test_joining_the_pool_asks_for_one_more_look_only_when_the_workers_disagree() -> None:
    """A worker slow to join must not make the others follow an alias moved after the endpoint was up."""
    for versions, nudged in (((1, 1), False), ((1, 2), True), ((1, 0), True)):
        board = board_of(2)
        for i, version in enumerate(versions):
            board.for_worker(i).set(Field.VERSION, version)
        board.for_worker(0).set(Field.STARTED, 1)
        before = board.generation
        asyncio.run(join_pool(board.for_worker(1)))
        assert (board.generation != before) is nudged, versions
