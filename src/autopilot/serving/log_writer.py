"""Group commit across a worker pool's processes, for an inference log on SQLite.

SQLite takes one writer at a time, and each commit is an fsync (`synchronous=FULL`, 3 ms on the
development machine's disk). With one process, a micro-batch holds every concurrent request, so
one fsync covers them all. With several workers each would commit its own share, one after the
other: the same fsyncs for half the rows. So in a pool on SQLite the supervisor runs one writer
(`LogWriter`) and the workers append through it (`RemoteLog`): whatever the workers sent while
the previous commit ran goes into the next transaction together, one fsync for all of them.

Nothing changes for durability: a worker's append returns only after the transaction holding
its rows committed, and it answers its requests only after that; a batch that cannot be
committed with the others is retried alone, so a duplicate request id fails only its own batch
(`DuplicateRequest`, 409), and an error fails the batch's requests (503), as before. The socket
lives in the pool's private run directory (mode 0700); messages are JSON (orjson), never pickle.
PostgreSQL commits concurrent transactions together on its own: workers append to it directly.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from autopilot.serving.inference_log import DuplicateRequest, InferenceLog, InferenceRecord

__all__ = ["LogWriter", "RemoteLog"]

log = logging.getLogger(__name__)

FRAME = struct.Struct("!I")  # a 4-byte length, then a JSON body
MAX_FRAME = 64 * 2**20  # a batch is at most max_queued_rows rows: far below this


@dataclass
class _Pending:
    connection: socket.socket
    lock: threading.Lock  # one reply at a time on a connection
    records: list[InferenceRecord]


class LogWriter:
    """The pool's one appender: commits what the workers sent meanwhile in one transaction."""

    def __init__(self, url: str, path: Path) -> None:
        self.log = InferenceLog(url)
        self.path = path
        self.commits = 0  # transactions committed (for tests and the curious: fewer than batches under load)
        self.batches = 0
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._connections: set[socket.socket] = set()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)

    def start(self) -> None:
        """Accept workers and commit their appends, on daemon threads."""
        threading.Thread(target=self._accept, name="autopilot-log-accept", daemon=True).start()
        threading.Thread(target=self._commit_loop, name="autopilot-log-commit", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and hang up on the workers (their next appends fail); the threads end with them."""
        with contextlib.suppress(OSError):
            self._server.close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.log.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._read, args=(connection,), name="autopilot-log-read", daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        lock = threading.Lock()
        self._connections.add(connection)
        with connection:
            while (body := _receive_or_none(connection)) is not None:
                try:
                    records = [_record(item) for item in orjson.loads(body)]
                except (ValueError, TypeError, KeyError) as exc:  # a malformed message: answered, never committed
                    _reply(connection, lock, {"error": "invalid", "message": f"malformed append: {exc}"})
                    continue
                self._queue.put(_Pending(connection, lock, records))
        self._connections.discard(connection)

    def _commit_loop(self) -> None:
        while True:
            group = [self._queue.get()]
            while True:  # everything that arrived during the previous commit goes in this one
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        self.batches += len(group)
        try:
            self.log.append([record for pending in group for record in pending.records])
            self.commits += 1
            outcomes = [{"ok": True}] * len(group)
        except Exception:  # one batch's duplicate (or any error) must fail that batch alone: one by one
            outcomes = [self._alone(pending) for pending in group]
        for pending, outcome in zip(group, outcomes, strict=True):
            _reply(pending.connection, pending.lock, outcome)

    def _alone(self, pending: _Pending) -> dict[str, Any]:
        try:
            self.log.append(pending.records)
            self.commits += 1
            return {"ok": True}
        except DuplicateRequest as exc:
            return {"error": "duplicate", "message": str(exc)}
        except Exception as exc:
            return {"error": "unavailable", "message": f"{type(exc).__name__}: {exc}"}


class RemoteLog:
    """A worker's inference log: appends go through the pool's `LogWriter`, everything else directly."""

    def __init__(self, local: InferenceLog, path: Path, timeout: float) -> None:
        self.local = local
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: socket.socket | None = None

    def append(self, records: list[InferenceRecord]) -> None:
        """Append in the writer's next transaction; return once it committed.

        Raises:
            DuplicateRequest: a (request_id, row) is already logged (nothing of this batch was written).
            ConnectionError: the writer is unreachable or did not answer in time (treat as not written).
        """
        if not records:
            return
        body = orjson.dumps(records)  # orjson writes dataclasses itself: no deep copy, as `asdict` makes
        with self._lock:  # the batch thread is the one caller; the lock keeps a stray second one in order
            answer = self._roundtrip(body)
        if answer.get("ok"):
            return
        if answer.get("error") == "duplicate":
            raise DuplicateRequest(answer.get("message", "duplicate request id"))
        raise ConnectionError(f"the inference log writer could not commit: {answer.get('message')}")

    def _roundtrip(self, body: bytes) -> dict[str, Any]:
        try:
            connection = self._connect()
            connection.sendall(FRAME.pack(len(body)) + body)
            reply = _receive(connection)
            if reply is None:
                raise ConnectionError("the inference log writer closed the connection")
            return dict(orjson.loads(reply))
        except (OSError, ValueError) as exc:  # a timeout or a broken pipe: the next append reconnects
            self._drop()
            raise ConnectionError(f"the inference log writer did not answer: {exc}") from exc

    def _connect(self) -> socket.socket:
        if self._connection is None:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.settimeout(self.timeout)
            connection.connect(str(self.path))
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
            self._connection = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)  # feedback, shadow rows, windows: the worker's own connection


def _record(item: dict[str, Any]) -> InferenceRecord:
    return InferenceRecord(**{**item, "at": datetime.fromisoformat(item["at"])})


def _receive_or_none(connection: socket.socket) -> bytes | None:
    """A frame, or None when the connection closed, broke or sent an oversized frame (it is then dropped)."""
    try:
        return _receive(connection)
    except (OSError, ValueError):
        return None


def _receive(connection: socket.socket) -> bytes | None:
    """One frame's body, or None when the peer closed the connection."""
    head = _exactly(connection, FRAME.size)
    if head is None:
        return None
    (size,) = FRAME.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes is over the limit of {MAX_FRAME}")
    return _exactly(connection, size)


def _exactly(connection: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _reply(connection: socket.socket, lock: threading.Lock, answer: dict[str, Any]) -> None:
    body = orjson.dumps(answer)
    with lock, contextlib.suppress(OSError):  # the worker died meanwhile: its rows are committed, nobody waits
        connection.sendall(FRAME.pack(len(body)) + body)
