"""Connections shared evenly between a pool's workers.

The workers inherit one listening socket. Left to the event loops, whichever worker wakes
first accepts a whole burst of new connections (uvloop accepts until the backlog is empty), and
keep-alive clients then stay where they landed: measured with 32 connections on 2 workers, one
worker held most or all of them and saturated its core while the other idled (22 against 4 requests per
micro-batch). `BalancedServer` accepts one connection at a time, and a worker holding more open
connections than the least loaded live worker (by more than a slack of an eighth) stops
competing for them: every `MAX_YIELD_SECONDS` it takes only what the others left waiting in the
backlog (one connection if they are accepting, slowly; all if they took none), so a worker that
is stuck or slow to wake delays new connections by that much, never strands them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from autopilot.serving.board import Field

__all__ = ["MAX_YIELD_SECONDS", "BalancedServer"]

log = logging.getLogger(__name__)

MAX_YIELD_SECONDS = 0.02
MAX_DRAIN = 256  # connections taken at once after a yield (a backlog nobody else accepted)
ERROR_PAUSE_SECONDS = 0.1  # after a failed accept (EMFILE: out of file descriptors), before the next try


class BalancedServer(uvicorn.Server):
    """uvicorn's server with the accept loop above, for a pool worker serving inherited sockets."""

    def __init__(self, config: uvicorn.Config, board: Any) -> None:
        """`board`: the pool's shared table, where every worker publishes its open connections."""
        super().__init__(config)
        self.board = board
        self._acceptors: list[asyncio.Task[None]] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (lifespan, state) without its listeners; then one accept loop per socket."""
        if not sockets:
            await super().startup(sockets)
            return
        await super().startup(sockets=[])
        loop = asyncio.get_running_loop()
        for sock in sockets:
            sock.setblocking(False)
            self._acceptors.append(loop.create_task(self._accept_loop(sock), name="autopilot-accept"))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, then uvicorn's graceful shutdown of the open connections."""
        for task in self._acceptors:
            task.cancel()
        for task in self._acceptors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().shutdown(sockets)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._ahead():
                    await self._yield_turn(sock)
                    continue
                connection, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if sock.fileno() < 0:  # closed: shutting down
                    return
                log.warning("accepting a connection failed (%s); trying again in %g s", exc, ERROR_PAUSE_SECONDS)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            await self._connect(connection)

    async def _yield_turn(self, sock: socket.socket) -> None:
        """Let the less loaded workers take what arrives for MAX_YIELD_SECONDS; then take what they left.

        Still ahead after the yield, with connections still waiting: the worker that is not ahead
        (there always is one) did not take them. If it took none meanwhile it is stuck or busy, so
        every waiting connection is taken here (delayed, never stranded); if it is accepting, only
        slowly, one is taken and the turn goes back to it.
        """
        others_before = self._others_total()
        await asyncio.sleep(MAX_YIELD_SECONDS)
        if not self._ahead():
            return
        limit = MAX_DRAIN if self._others_total() <= others_before else 1
        for connection in _waiting(sock, limit):
            await self._connect(connection)

    async def _connect(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the event loop's own accept does
        try:
            await loop.connect_accepted_socket(self._protocol, connection)
        except OSError as exc:
            log.warning("a new connection could not be served: %s", exc)
            connection.close()

    def _protocol(self) -> asyncio.Protocol:
        """A protocol for one connection, built as uvicorn's own listeners build it."""
        config = self.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state)
        return protocol

    def _others_total(self) -> int:
        board = self.board
        return board.total(Field.CONNECTIONS) - board.get(board.index, Field.CONNECTIONS)

    def _ahead(self) -> bool:
        """Whether another live worker holds fewer open connections than this one, by more than the slack."""
        board = self.board
        mine = len(self.server_state.connections)
        others = [board.get(i, Field.CONNECTIONS) for i in range(board.workers)
                  if i != board.index and board.get(i, Field.PID)]
        if not others:
            return False
        fewest = min(others)
        return mine > fewest + max(1, fewest // 8)


def _waiting(sock: socket.socket, limit: int) -> list[socket.socket]:
    """The connections waiting in the (non-blocking) listening socket's backlog now, up to `limit`."""
    waiting: list[socket.socket] = []
    while len(waiting) < limit:
        try:
            connection, _ = sock.accept()
        except BlockingIOError:  # nothing (more) waiting
            break
        except OSError as exc:  # e.g. out of file descriptors: serve what was taken, try again later
            log.warning("accepting a waiting connection failed: %s", exc)
            break
        waiting.append(connection)
    return waiting
