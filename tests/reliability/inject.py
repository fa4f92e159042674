"""Fault injection for the reliability suite: real faults, not mocks of the code under test.

- `FaultProxy`: an HTTP reverse proxy on loopback in front of a real service (an MLflow server,
  moto's server, a Slack receiver) that passes requests through, or answers a status (503, 429
  with Retry-After), hangs, or resets the connection, for every request or the next N, optionally
  only for paths matching a pattern.
- `run_child` / `wait_for_marker` / `kill9`: run a function in a child process started with
  `autopilot.faults` crash points armed, wait until it reaches the point, and `kill -9` it there.
- `MlflowServer`: a real `mlflow server` process on loopback (SQLite or PostgreSQL backend, local
  artifacts served through the server).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[2]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fault:
    """What the proxy does with a request: `pass`, `status`, `hang` or `reset`."""

    mode: str = "pass"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected by the test"}'
    hang_seconds: float = 30.0
    remaining: int | None = None  # None: every matching request; N: the next N, then pass
    path: str | None = None  # a regex on "METHOD /path?query"; None: every request


class FaultProxy:
    """A threaded reverse proxy to `upstream` with a switchable fault (see `Fault`)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = Fault()
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []  # (request line, what was done)
        self._client = httpx.Client(timeout=120.0)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def set(self, mode: str = "pass", **kwargs: Any) -> None:
        """Switch the fault (`pass` clears it)."""
        with self.lock:
            self.fault = Fault(mode=mode, **kwargs)

    def count(self, what: str) -> int:
        """How many requests were handled as `what` (`pass`, `status`, `hang`, `reset`)."""
        with self.lock:
            return sum(1 for _, done in self.seen if done == what)

    def _take(self, line: str) -> Fault:
        with self.lock:
            fault = self.fault
            applies = fault.mode != "pass" and (fault.path is None or re.search(fault.path, line))
            if applies and fault.remaining is not None:
                if fault.remaining <= 0:
                    applies = False
                else:
                    fault.remaining -= 1
            chosen = fault if applies else Fault()
            self.seen.append((line, chosen.mode))
            return chosen

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        line = f"{handler.command} {handler.path}"
        fault = self._take(line)
        if fault.mode == "reset":
            sock = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            handler.close_connection = True
            return
        if fault.mode == "hang":
            time.sleep(fault.hang_seconds)
            fault = Fault(mode="status", status=504)
        if fault.mode == "status":
            handler.send_response(fault.status)
            for key, value in fault.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(fault.body)))
            handler.end_headers()
            if handler.command != "HEAD":  # a body after a HEAD answer would desynchronise a kept-alive connection
                handler.wfile.write(fault.body)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            answer = self._client.request(handler.command, self.upstream + handler.path, headers=headers,
                                          content=body)
        except httpx.HTTPError as exc:
            payload = f"proxy: upstream failed: {exc}".encode()
            handler.send_response(502)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        handler.send_response(answer.status_code)
        for key, value in answer.headers.multi_items():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                handler.send_header(key, value)
        content = answer.content
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(content)


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    length = handler.headers.get("Content-Length")
    if length is not None:
        return handler.rfile.read(int(length))
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                break
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(parts)
    return b""


# ---------------------------------------------------------------------------- crash points


def armed_env(fault_dir: Path, *points: str, **extra: str) -> dict[str, str]:
    """The environment of a child that pauses at `points` (see `autopilot.faults`)."""
    return {**os.environ, "AUTOPILOT_FAULT_POINTS": ",".join(points), "AUTOPILOT_FAULT_DIR": str(fault_dir),
            "PYTHONPATH": str(PROJECT) + os.pathsep + str(PROJECT / "src"), **extra}


def run_child(code: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Run Python `code` in a child process (its own process group), output to `log`."""
    handle = log.open("wb")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=handle, stderr=subprocess.STDOUT,
                            cwd=str(PROJECT), start_new_session=True)


def wait_for_marker(fault_dir: Path, point: str, proc: subprocess.Popen[bytes] | None = None,
                    timeout: float = 180.0, log: Path | None = None) -> int:
    """Wait until a process reaches crash point `point`; its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(fault_dir.glob(f"{point}.*"))
        if found:  # the pid from the name: the file may exist before its content is written
            return int(found[0].name.rsplit(".", 1)[1])
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(f"the child exited ({proc.returncode}) before reaching {point}:\n{tail}")
        time.sleep(0.05)
    raise AssertionError(f"no process reached {point} within {timeout} s")


def kill9(pid: int) -> None:
    """SIGKILL a process (and its group, when it leads one); return once it is dead (or a zombie)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} survived SIGKILL for 10 s")


# ---------------------------------------------------------------------------- MLflow server


class MlflowServer:
    """A real `mlflow server` on loopback, serving its artifacts (clients upload through it)."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        artifacts.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey job consumers
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        self.proc = subprocess.Popen(
            [str(Path(bindir) / "mlflow"), "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log

    def wait(self, timeout: float = 120.0) -> MlflowServer:
        """Block until /health answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        raise AssertionError(f"mlflow server not healthy: {self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        """Stop the server's process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._log.close()


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[MlflowServer]:
    """A started, healthy MLflow server, stopped afterwards."""
    server = MlflowServer(backend_uri, artifacts, log)
    try:
        yield server.wait()
    finally:
        server.stop()
