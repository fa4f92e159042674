"""`autopilot serve` on every core: worker processes sharing one listening socket, supervised.

Python answers one request at a time per process (the GIL), so one process uses one core for
HTTP parsing, validation and answering, however many the host has. With `serving.workers`
above one, the supervisor (this module) binds the socket once and starts that many worker
processes on it (the kernel hands each new connection to one of them); each worker is the
whole single-process endpoint (its own model, micro-batcher and inference-log connection).

What stays as with one process:

- **Durability.** Each worker appends its answered batches to the inference log before it
  answers them, in its own transactions; a worker killed mid-batch loses only answers it never
  sent. SQLite serializes the workers' commits (WAL, busy timeout); PostgreSQL takes them at once.
- **Admission.** The limits bound the whole endpoint: every worker admits against the load of
  all of them, read from a shared table (`serving.board`).
- **Hot swap.** Each worker follows the alias; the endpoint reports a new version only once
  every worker serves it (`serving.board`), so a rollout's swap is done when all have swapped.
- **Metrics.** Counters and histograms are summed across workers (prometheus_client's
  multiprocess mode, files in a private run directory, a dead worker's counts kept); the
  endpoint's gauges come from the shared table (`serving.board.PoolCollector`).

The supervisor restarts a worker that dies (kill -9, out of memory) and stops the endpoint with
an error when workers keep dying as they start (a setup problem, not a crash to retry forever).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopilot.serving.board import Board

__all__ = ["METRICS_DIR_ENV", "WorkerSpec", "run_pool"]

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when a worker imports it
QUICK_DEATH_SECONDS = 30.0  # a worker that dies sooner than this after its start died "while starting"
MAX_QUICK_DEATHS = 5  # in a row, for one worker: a setup problem, the endpoint stops
SUPERVISE_EVERY = 0.2
ORPHAN_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to build its endpoint (picklable: sent to a fresh interpreter)."""

    cfg: Any
    settings: Any
    host: str
    port: int
    model_dir: Path | None
    workers: int
    log_level: int
    log_socket: Path | None = None  # the supervisor's group-committing inference-log writer (SQLite)


@dataclass
class _Slot:
    process: Any = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


@dataclass
class _Supervisor:
    spec: WorkerSpec
    sock: socket.socket
    board: Board
    run_dir: Path
    context: Any
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False

    def start(self, index: int) -> None:
        self.board.clear_row(index)
        process = self.context.Process(target=worker_main, name=f"autopilot-serve-{index}",
                                       args=(self.spec, self.board.raw, index, self.sock))
        process.start()
        self.board.set_pid(index, process.pid)
        slot = self.slots[index]
        slot.process, slot.started = process, time.monotonic()
        log.info("worker %d started (pid %d)", index, process.pid)

    def check(self) -> None:
        """Restart dead workers (with backoff); raise when one keeps dying as it starts."""
        now = time.monotonic()
        for index, slot in enumerate(self.slots):
            process = slot.process
            if process is not None and process.exitcode is None:
                continue
            if process is not None:
                self._buried(index, slot, now)
            if now >= slot.restart_at and not self.stopping:
                self.start(index)

    def _buried(self, index: int, slot: _Slot, now: float) -> None:
        from prometheus_client import multiprocess

        process = slot.process
        slot.process = None
        self.board.clear_row(index)  # its load is gone; its version no longer counts
        multiprocess.mark_process_dead(process.pid, str(self.run_dir / "metrics"))
        quick = now - slot.started < QUICK_DEATH_SECONDS
        slot.quick_deaths = slot.quick_deaths + 1 if quick else 0
        log.error("worker %d (pid %d) exited with %s; %s", index, process.pid, process.exitcode,
                  "restarting it" if slot.quick_deaths < MAX_QUICK_DEATHS else "giving up")
        if slot.quick_deaths >= MAX_QUICK_DEATHS:
            from autopilot.serving.server import ServingSetupError

            raise ServingSetupError(f"worker {index} died {slot.quick_deaths} times within "
                                    f"{QUICK_DEATH_SECONDS:g} s of starting (last exit code {process.exitcode}); "
                                    "see the log above")
        slot.restart_at = now + (min(0.5 * 2 ** slot.quick_deaths, 30.0) if quick else 0.0)

    def stop(self, grace: float) -> None:
        """Ask every worker to finish its requests and exit; kill the ones still running after `grace`."""
        self.stopping = True
        running = [s.process for s in self.slots if s.process is not None and s.process.exitcode is None]
        for process in running:
            process.terminate()  # SIGTERM: uvicorn stops accepting and finishes what it has
        deadline = time.monotonic() + grace
        for process in running:
            process.join(max(deadline - time.monotonic(), 0.1))
            if process.exitcode is None:
                log.warning("worker pid %d did not stop within %g s; killing it", process.pid, grace)
                process.kill()
                process.join(5)


def run_pool(cfg: Any, settings: Any, host: str, port: int, model_dir: Path | None, workers: int) -> None:
    """Serve with `workers` worker processes on one socket until SIGINT or SIGTERM.

    Raises:
        ServingSetupError: the port cannot be bound, or workers keep dying as they start.
    """
    from autopilot.serving.server import ServingSetupError

    serving = cfg.deployment.serving
    try:
        sock = _bind(host, port, serving.listen_backlog)
    except OSError as exc:
        raise ServingSetupError(f"cannot listen on {host}:{port}: {exc}") from exc
    run_dir = Path(tempfile.mkdtemp(prefix="autopilot-serve-"))  # mode 0700: only this user reads the metrics
    (run_dir / "metrics").mkdir()
    os.environ[METRICS_DIR_ENV] = str(run_dir / "metrics")  # the workers inherit it before importing the client
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no threads or locks inherited
    writer = _log_writer(settings, run_dir)
    spec = WorkerSpec(cfg=cfg, settings=settings, host=host, port=port, model_dir=model_dir, workers=workers,
                      log_level=logging.getLogger().getEffectiveLevel(), log_socket=writer and writer.path)
    supervisor = _Supervisor(spec, sock, Board.create(workers, context), run_dir, context,
                             [_Slot() for _ in range(workers)])
    stop = _stop_on_signals()
    log.info("serving %s on %s:%s with %d worker processes", cfg.name, host, port, workers)
    try:
        while not stop:
            supervisor.check()
            time.sleep(SUPERVISE_EVERY)
    finally:
        supervisor.stop(serving.request_timeout_seconds + 5.0)
        if writer is not None:
            writer.close()
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _log_writer(settings: Any, run_dir: Path) -> Any:
    """On SQLite, the one writer the workers append through (`serving.log_writer`); None on PostgreSQL."""
    from autopilot.adapters.state_db import WriteTurn

    if WriteTurn.for_url(settings.inference_db) is None:
        return None
    from autopilot.serving.log_writer import LogWriter

    settings.ensure_local_dirs()
    writer = LogWriter(settings.inference_db, run_dir / "log.sock")
    writer.start()
    return writer


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _stop_on_signals() -> list[int]:
    """Install SIGINT/SIGTERM handlers that append the signal to the returned list."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def worker_main(spec: WorkerSpec, raw: Any, index: int, sock: socket.socket) -> None:
    """One worker: build the endpoint on the shared table and serve the inherited socket until stopped."""
    logging.basicConfig(level=spec.log_level,
                        format=f"%(asctime)s %(levelname)s worker {index} %(name)s: %(message)s")
    from autopilot.serving.server import build_app, make_server, resolve_token

    _exit_with_supervisor()
    board = Board(raw, spec.workers, index)
    app = build_app(spec.cfg, spec.settings, model_dir=spec.model_dir, token=resolve_token(spec.cfg), board=board,
                    log_socket=spec.log_socket)
    server = make_server(app, spec.cfg, spec.host, spec.port)
    server.run(sockets=[sock])


def _exit_with_supervisor() -> None:
    """Stop this worker (SIGTERM: uvicorn finishes what it has) if the supervisor dies, e.g. of kill -9.

    Spawned processes outlive their parent; an orphaned worker would keep serving the port with
    nobody to restart its peers or clean the run directory.
    """
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        log.error("the supervisor (pid %d) is gone: this worker stops", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="autopilot-orphan-watch", daemon=True).start()
