"""Named locks in the state database that span several transactions and die with their holder.

A promotion commits an intent, moves the alias in MLflow, then commits the history row: three
steps, so the per-model lock must outlive a transaction. A registration holds its DAG run's
lock while it trains (minutes). And when the holder is killed (`kill -9`, a lost worker) the
lock must go with it, or every later promotion would wait for a lock nobody will release.

- PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) taken on a dedicated
  connection, which the holder also uses for its own transactions. The server releases it when
  that session ends, and a killed process's session ends with its socket. Waiting is bounded by
  `lock_timeout`. The state database must be reached without transaction pooling (PgBouncer in
  `transaction` mode would hand the session's lock to another client); `session` pooling is fine.
- SQLite (one host): `flock` on a file beside the database (`<db>.locks/<hash>.lock`); the
  kernel releases it when the holder's descriptor closes, by exit or by `kill -9`. SQLite's own
  `BEGIN IMMEDIATE` cannot serve here: it would keep other writers of the state database out for
  the whole hold. The holder deletes the file on release (a waiter that opened the old file sees
  it is gone and opens the new one), so lock files do not pile up.

Locks are not re-entrant: a holder must not ask for the same name again.

`state_lock(settings, name)` holds one on the state database of `settings`; `hold(engine, name)`
on any engine of PostgreSQL or SQLite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from autopilot.adapters.state_db.engines import engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from autopilot.settings import Settings

__all__ = ["WAIT_SECONDS", "LockTimeout", "file_lock", "hold", "state_lock"]

log = logging.getLogger(__name__)

# How long a caller waits for a lock before failing (the task then fails and Airflow retries it).
# Promotions hold their model's lock for a few MLflow calls; a registration holds its run's lock
# while a second copy of the same task trains, which the second copy is right to wait for.
WAIT_SECONDS = 600.0
POLL_SECONDS = 0.05
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout expires


class LockTimeout(TimeoutError):
    """The lock stayed held by someone else for the whole wait."""


@contextlib.contextmanager
def hold(engine: Engine, name: str, wait: float = WAIT_SECONDS) -> Iterator[Connection]:
    """Hold the lock `name` while the block runs; yield a connection of `engine` for the holder's work.

    The connection is not in a transaction; use `with conn.begin():` for each one. The lock
    outlives those transactions and is released when the block exits, or when the process dies.

    Raises:
        LockTimeout: the lock was not free within `wait` seconds.
    """
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name, wait) as conn:
            yield conn
    elif engine.dialect.name == "sqlite":
        with _file_lock(engine, name, wait), engine.connect() as conn:
            yield conn
    else:
        raise ValueError(f"no lock for a {engine.dialect.name} state database: use PostgreSQL or SQLite")


@contextlib.contextmanager
def state_lock(settings: Settings, name: str, wait: float = WAIT_SECONDS) -> Iterator[Connection]:
    """Hold the lock `name` of the state database of `settings`; yield a connection to work on (see `hold`)."""
    with hold(engine(settings), name, wait) as conn:
        yield conn


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name (a collision only serializes two names)."""
    return int.from_bytes(hashlib.sha256(f"autopilot:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _advisory(engine: Engine, name: str, wait: float) -> Iterator[Connection]:
    key = _key(name)
    conn = engine.connect()
    try:
        try:
            # Local to this transaction: the pooled session keeps its default afterwards.
            conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{max(1, int(wait * 1000))}ms"})
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            conn.commit()
        except DBAPIError as exc:
            conn.invalidate()  # never pool a session that may hold the lock
            if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
                raise LockTimeout(f"lock {name!r} in the state database stayed held for {wait:.0f} s") from exc
            raise
        except BaseException:
            conn.invalidate()
            raise
        try:
            yield conn
        finally:
            _unlock(conn, key, name)
    finally:
        conn.close()


def _unlock(conn: Connection, key: int, name: str) -> None:
    """Release an advisory lock; when that fails, close the session (the server then releases it)."""
    try:
        if conn.in_transaction():
            conn.rollback()
        released = conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key}).scalar()
        conn.commit()
    except Exception as exc:  # a broken session: closing it releases whatever it held
        log.warning("releasing lock %r failed (%s); closing its session", name, exc)
        conn.invalidate()
        return
    if not released:
        log.warning("lock %r was no longer held by this session when released", name)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _lock_path(engine: Engine, name: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    db = Path(database).resolve()
    return db.with_name(db.name + ".locks") / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")


@contextlib.contextmanager
def _file_lock(engine: Engine, name: str, wait: float) -> Iterator[None]:
    path = _lock_path(engine, name)
    if path is None:  # an in-memory database lives in one process: a thread lock is enough
        with _THREAD_LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=wait):
            raise LockTimeout(f"lock {name!r} stayed held for {wait:.0f} s")
        try:
            yield
        finally:
            lock.release()
        return
    with file_lock(path, name, wait):
        yield


@contextlib.contextmanager
def file_lock(path: Path, name: str, wait: float = WAIT_SECONDS,
              timeout_error: type[LockTimeout] = LockTimeout) -> Iterator[None]:
    """An exclusive `flock` on the file at `path` across processes, released on exit or when the holder dies.

    Args:
        name: what is locked, for the holder line written in the file and the timeout's message.
        wait: seconds to wait for another holder.
        timeout_error: the `LockTimeout` subclass raised when the wait runs out.
    """
    fd = _acquire_file(path, name, time.monotonic() + wait, wait, timeout_error)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {name}\n".encode())  # who holds it, for an operator
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it: waiters on this file will see it is gone
        os.close(fd)  # releases the flock


def _acquire_file(path: Path, name: str, deadline: float, wait: float,
                  timeout_error: type[LockTimeout] = LockTimeout) -> int:
    """Lock the file at `path`: the file still there once locked (not one a releaser just deleted)."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, name, deadline, wait, timeout_error)
            locked = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
            return fd
        os.close(fd)  # the previous holder deleted this file after we opened it: take the new one


def _flock(fd: int, name: str, deadline: float, wait: float, timeout_error: type[LockTimeout]) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            raise timeout_error(f"lock {name!r} (a file lock) stayed held for {wait:.0f} s")
        time.sleep(POLL_SECONDS)
