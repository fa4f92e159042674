"""SQLAlchemy engines: the one factory for autopilot's own databases, and the cached state-database engine.

`open_engine` makes an engine for a PostgreSQL or SQLite URL with the settings autopilot relies
on; the state database (`Settings.state_db`) and the serving inference log
(`autopilot.serving.inference_log`) both use it. `engine` opens the state database once per
process, bringing its schema to the newest migration (`schema.upgrade`) on the way.

- SQLite: the driver opens no transaction of its own; every transaction begins IMMEDIATE (it
  takes the write lock at BEGIN, so one that reads and then writes never fails half-way with
  "database is locked"; a second writer waits, up to `SQLITE_BUSY_SECONDS`). A connection with
  the execution option `READ_OPTION` begins DEFERRED instead (the inference log's readers).
- PostgreSQL: `pool_pre_ping`, so a connection the server dropped is replaced, not used.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from autopilot.settings import Settings

__all__ = ["READ_OPTION", "SQLITE_BUSY_SECONDS", "WriteTurn", "answers", "engine", "open_engine", "reset_engines"]

SQLITE_BUSY_SECONDS = 60.0
READ_OPTION = "autopilot_read"  # execution option: this connection only reads (SQLite: BEGIN DEFERRED)

_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


class WriteTurn:
    """Writers of one SQLite file take turns through a `flock` on `<file>.write-turn` before BEGIN IMMEDIATE.

    SQLite's own wait for its write lock sleeps 1, 2, 5, 10 ms... between tries: with several
    processes committing every few milliseconds (a serving worker pool, each commit an fsync),
    a writer keeps sleeping past the moment the lock was free, and its requests wait. The turn
    is polled every `POLL` seconds instead, so a writer starts as soon as the other committed;
    SQLite's lock then never waits. Threads of one process take turns on a threading lock first
    (a flock is held per open file, not per thread). Held for one transaction only; released
    by the kernel if the process dies. None of this for PostgreSQL (`for_url` gives None).
    """

    POLL = 0.0002

    def __init__(self, path: Path, wait: float = SQLITE_BUSY_SECONDS) -> None:
        self.path, self.wait = path, wait
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url_text: str) -> WriteTurn | None:
        """The turn of a SQLite file URL; None for any other database."""
        url = make_url(url_text)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(Path(url.database).with_name(Path(url.database).name + ".write-turn"))

    def __enter__(self) -> None:
        import fcntl
        import time

        if not self._thread_lock.acquire(timeout=self.wait):
            raise TimeoutError(f"another thread kept the write turn on {self.path} for {self.wait:g} s")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"another process kept the write turn on {self.path} for {self.wait:g} s"
                                           ) from None
                    time.sleep(self.POLL)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        import fcntl

        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


def engine(settings: Settings) -> Engine:
    """The state database's engine, opened (and its schema migrated to the newest revision) on first use."""
    # Imported here: the inference log opens its engines through this module and needs no Alembic.
    from autopilot.adapters.state_db import schema

    key = (settings.state_db, os.getpid())  # a pooled connection must never cross a fork
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            opened = open_engine(settings.state_db)
            schema.upgrade(opened)
            _ENGINES[key] = opened
        return _ENGINES[key]


def reset_engines() -> None:
    """Dispose the cached state-database engines (a restart, as far as this process is concerned)."""
    with _ENGINES_LOCK:
        for opened in _ENGINES.values():
            opened.dispose()
        _ENGINES.clear()


def open_engine(url_text: str, *, name: str = "state_db", wal: bool = False) -> Engine:
    """A new engine for a PostgreSQL or SQLite URL (no schema is touched).

    Args:
        url_text: the SQLAlchemy URL; a SQLite file's folder is created when missing.
        name: the setting the URL came from, for the error message.
        wal: SQLite only: journal in WAL mode with FULL sync (readers never block the writer,
            and a commit survives a power loss).

    Raises:
        ValueError: the URL is neither PostgreSQL nor SQLite.
    """
    url = make_url(url_text)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        created = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(created, "connect", _sqlite_connect_wal if wal else _sqlite_connect)
        event.listen(created, "begin", _sqlite_begin)
        return created
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise ValueError(f"{name} {url.render_as_string(hide_password=True)}: use PostgreSQL or SQLite")


def answers(url: str, connect_args: dict[str, Any], table: str | None = None) -> bool | None:
    """Connect once (no pool), run SELECT 1, and say whether `table` exists (None without one).

    For `autopilot doctor`, which asks any database a URL names (MLflow's, Optuna's, the state
    and inference databases, Airflow's) whether it answers, without keeping a connection.

    Raises:
        Exception: whatever the driver raised: the database did not answer.
    """
    from sqlalchemy import inspect, text
    from sqlalchemy.pool import NullPool

    probe = create_engine(url, connect_args=connect_args, poolclass=NullPool)
    try:
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
            return inspect(conn).has_table(table) if table else None
    finally:
        probe.dispose()


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # The driver must not open transactions on its own: `_sqlite_begin` opens every one.
    dbapi_connection.isolation_level = None


def _sqlite_connect_wal(dbapi_connection: Any, record: Any) -> None:
    _sqlite_connect(dbapi_connection, record)
    # Wait for another writer (thread or process) instead of failing at once; set before the
    # journal-mode switch, which itself needs a lock when two processes open a new file together.
    dbapi_connection.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
    # WAL: readers (the monitoring job) never block the appending endpoint, nor it them.
    dbapi_connection.execute("PRAGMA journal_mode = WAL")
    # Durability: FULL syncs the WAL to disk at every commit, so an acknowledged batch survives a
    # power loss or OS crash; WAL's usual NORMAL could lose the last commits in that case.
    dbapi_connection.execute("PRAGMA synchronous = FULL")


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock at BEGIN: a transaction that reads and then writes never fails
    # half-way with "database is locked" (a deferred transaction upgraded to a writer fails at
    # once, with no busy wait, if another wrote meanwhile); a second writer waits here, up to the
    # busy timeout. (Promotions are serialized by `locks`, which spans several of these.)
    reading = conn.get_execution_options().get(READ_OPTION, False)
    conn.exec_driver_sql("BEGIN DEFERRED" if reading else "BEGIN IMMEDIATE")
