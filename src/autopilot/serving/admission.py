"""Load shedding: decided from the path alone, before routing and before any of the body is read.

Past `serving.max_concurrent_requests` requests in progress on the model routes a request gets
429; on a connection opened while `serving.max_connections` were already open, 503 and the
connection is closed. `Admission` makes that decision and prepares its answers; `AdmissionGuard`
applies it in front of the app, and `serving.server`'s protocol applies it straight from the
parsed headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson
from fastapi import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from autopilot.serving.board import Field

if TYPE_CHECKING:
    from autopilot.serving.app import ServingState

__all__ = ["ADMITTED", "ENDPOINTS", "PROBES", "Admission", "AdmissionGuard", "Refusal", "error_response",
           "shed_response"]

# Routes whose requests hold model, batcher or database work: the concurrency bound applies.
ADMITTED = {"/predict": "predict", "/invocations": "invocations", "/explain": "explain", "/feedback": "feedback"}
ENDPOINTS = {**ADMITTED, "/model": "model", "/reload": "reload"}  # metric labels; any other path is "other"
# Probes and the scraper are answered even past the connection bound: they are cheap and
# carry no body, and an orchestrator must not restart a server because it is busy.
PROBES = frozenset({"/health", "/ready", "/ping", "/metrics"})


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

    def __init__(self, state: ServingState) -> None:
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
        if path not in ADMITTED:
            return None
        board = self.state.board  # in a pool, the limit bounds all workers together
        in_flight = self.state.in_flight if board is None else board.total(Field.IN_FLIGHT)
        return self._busy if in_flight >= self.serving.max_concurrent_requests else None

    def connection_refusal(self, path: str) -> Refusal | None:
        """The refusal for a request on a connection opened past `max_connections` (None for probes).

        Only connections opened while the server was already at the bound are refused (and
        closed, which gives the file descriptor back); the ones it had are served as usual.
        Probes are answered on any connection: an orchestrator must not restart a busy server.
        """
        return None if path in PROBES else self._crowded

    def over_connection_bound(self, open_connections: int) -> bool:
        """Whether a connection that makes `open_connections` open (here) is past `max_connections`."""
        board = self.state.board
        if board is not None:  # in a pool, the bound counts every worker's connections
            board.set(Field.CONNECTIONS, open_connections)
            open_connections = board.total(Field.CONNECTIONS)
        return open_connections > self.serving.max_connections

    def connections_now(self, open_connections: int) -> None:
        """Publish this process's open connections after one closed (in a pool; nothing otherwise)."""
        if self.state.board is not None:
            self.state.board.set(Field.CONNECTIONS, open_connections)

    def answer(self, path: str, refusal: Refusal) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
        """Count the refusal and return its answer: ASGI headers, body, and the whole response as bytes."""
        self.state.metrics.shed(ENDPOINTS.get(path, "other"), refusal.reason)
        key = (refusal.reason, self.state.version)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) > 32:  # one entry per reason and version: forget old versions
                self._answers.clear()
            response = shed_response(self.state, refusal.status, f"overloaded: {refusal.message}; retry after "
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

    def __init__(self, app: ASGIApp, state: ServingState) -> None:
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
        board = state.board
        state.in_flight += 1
        if board is not None:
            board.set(Field.IN_FLIGHT, state.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            state.in_flight -= 1
            if board is not None:
                board.set(Field.IN_FLIGHT, state.in_flight)


def shed_response(state: ServingState, status: int, message: str, close: bool = False) -> Response:
    """A 429/503 load-shedding answer: Retry-After, the model version, and `Connection: close` if asked."""
    response = error_response(state, status, message)
    response.headers["Retry-After"] = str(state.cfg.deployment.serving.retry_after_seconds)
    response.headers["X-Model-Version"] = str(state.version or "")
    if close:
        response.headers["Connection"] = "close"
    return response


def error_response(state: ServingState, status: int, message: str) -> Response:
    """A JSON error answer: the message, the status and the model version serving now."""
    body = {"error": message, "status": status, "model_version": state.version}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")

