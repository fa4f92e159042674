"""Case 21: malformed, oversized, chunked and slow request bodies against a real `autopilot serve`.

Fault: requests an attacker or a broken client sends, over plain sockets to a real server
process (no TestClient): malformed JSON, NaN/Infinity, a body nested 100,000 deep, missing,
extra and mistyped columns, a 100 MB body announced by Content-Length, a 100 MB chunked body
(no length announced), and bodies trickled slower than `serving.body_timeout_seconds`.

Invariant: each gets the status that names its problem (400 malformed, 422 naming the field,
413 before the body is buffered, 408 for the slow body); the server's resident memory grows by
less than 50 MB while 100 MB bodies stream at it (it counts bytes, it does not store them); the
process stays alive and the next valid request, on the same connection where HTTP allows it,
is answered with the served model's scores.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopilot.settings import Settings
from tests.reliability.serving_http import (
    AUTH,
    PeakRss,
    is_closed,
    metric,
    predict_bytes,
    read_answer,
    request_bytes,
    serving_config,
)
from tests.serving_support import Server, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
LIMIT = 4_000_000  # the default deployment.serving.max_body_bytes
BODY_TIMEOUT = 1.0
HUNDRED_MB = 100 * 2**20
MB = b"x" * 2**20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any) -> Iterator[tuple[Server, Any, list[Any]]]:
    root = tmp_path_factory.mktemp("r21")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home")})
    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames)
    server = Server(serving_config(root / "config", body_timeout_seconds=BODY_TIMEOUT), settings.home, free_port())
    try:
        server.wait_ready()
        yield server, v1, feature_rows(adult_frames, cfg, n=5)
    finally:
        server.kill()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def assert_still_serving(server: Server, v1: Any, rows: list[Any], sock: socket.socket | None = None) -> None:
    """The process is alive and a valid request (on `sock` when given) gets v1's scores."""
    assert server.proc.poll() is None, "the server died"
    if sock is None:
        answer = httpx.post(server.url + "/predict", json={"records": rows}, headers=AUTH, timeout=30)
        status, body = answer.status_code, answer.json()
    else:
        sock.sendall(predict_bytes(rows))
        got = read_answer(sock)
        status, body = got.status, got.json()
    assert status == 200, body
    assert body["model_version"] == int(v1.version) and len(body["predictions"]) == len(rows)


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b'{"records": [{"age": 3', 400, "malformed JSON"),
    (b'{"records": [{"age": NaN}]}', 400, "NaN and infinite numbers are not valid JSON"),
    (b'{"records": [{"age": Infinity}]}', 400, "NaN and infinite numbers are not valid JSON"),
    (b'{"records": [{"age": -Infinity}]}', 400, "NaN and infinite numbers are not valid JSON"),
    (b'{"records": [{"age": 1e999}]}', 400, "NaN and infinite numbers are not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    (b'{"records": "\xff\xfe"}', 400, "malformed JSON"),
    (b"", 400, "empty body"),
])
def test_malformed_bodies_get_400_and_the_server_carries_on(served: tuple[Server, Any, list[Any]], body: bytes,
                                                            status: int, fragment: str) -> None:
    server, v1, rows = served
    with connect(server) as sock:
        sock.sendall(request_bytes("POST", "/predict", body, AUTH))
        answer = read_answer(sock)
        assert answer.status == status, answer.body
        assert fragment in answer.json()["error"], answer.json()
        assert_still_serving(server, v1, rows, sock)  # the same keep-alive connection still works


def test_schema_violations_get_422_naming_the_field(served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    row = rows[0]
    cases = [
        ({k: v for k, v in row.items() if k != "education"}, "record 1: missing columns ['education']"),
        ({**row, "salary": 100}, "record 1: unexpected columns ['salary']"),
        ({**row, "age": "forty"}, "record 1: column 'age' must be a number, got str 'forty'"),
        ({**row, "hours_per_week": [40]}, "record 1: column 'hours_per_week' must be a number, got list"),
        ({**row, "sex": 1}, "record 1: column 'sex' must be a string, got int 1"),
        ({**row, "age": True}, "record 1: column 'age' must be a number, got bool"),
    ]
    with connect(server) as sock:
        for record, fragment in cases:
            sock.sendall(predict_bytes([row, record]))
            answer = read_answer(sock)
            assert answer.status == 422, answer.body
            assert fragment in answer.json()["error"], answer.json()
        assert_still_serving(server, v1, rows, sock)


def test_a_100_mb_body_with_content_length_gets_413_before_it_is_sent(served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    with connect(server) as sock:
        head = request_bytes("POST", "/predict", b"", {**AUTH, "Content-Length": str(HUNDRED_MB)})
        with PeakRss(server.proc.pid) as rss:
            sock.sendall(head)
            answer = read_answer(sock)  # answered from the headers alone: not one body byte was sent
            assert answer.status == 413, answer.body
            assert f"body of {HUNDRED_MB} bytes exceeds the limit of {LIMIT} bytes" in answer.json()["error"]
            # Send the 100 MB anyway, as a client that does not read before writing would: the
            # server reads and drops it, and the connection stays usable afterwards.
            for _ in range(100):
                sock.sendall(MB)
            assert_still_serving(server, v1, rows, sock)
    assert rss.growth_mb < 50, f"RSS grew by {rss.growth_mb:.0f} MB while a refused 100 MB body streamed in"


def test_a_100_mb_chunked_body_gets_413_without_being_buffered(served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    with connect(server) as sock:
        head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                + f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode())
        answers: list[Any] = []
        reader = threading.Thread(target=lambda: answers.append(read_answer(sock)))
        with PeakRss(server.proc.pid) as rss:
            sock.sendall(head)
            reader.start()
            sent = 0
            chunk = b"%x\r\n" % len(MB) + MB + b"\r\n"
            while sent < HUNDRED_MB:  # all 100 MB, as a client that never reads while writing would
                sock.sendall(chunk)
                sent += len(MB)
            sock.sendall(b"0\r\n\r\n")
            reader.join(timeout=60)
            assert answers, "no answer to the chunked body"
            answer = answers[0]
            assert answer.status == 413, answer.body
            assert f"body exceeds the limit of {LIMIT} bytes" in answer.json()["error"]
            assert_still_serving(server, v1, rows, sock)  # the rest was read and dropped
    assert rss.growth_mb < 50, f"RSS grew by {rss.growth_mb:.0f} MB while a 100 MB chunked body streamed in"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_slow_body_gets_408_and_its_connection_closed(served: tuple[Server, Any, list[Any]], chunked: bool) -> None:
    server, v1, rows = served
    body = json.dumps({"records": rows}).encode()
    with connect(server) as sock:
        if chunked:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         + f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode())
        else:
            sock.sendall(request_bytes("POST", "/predict", b"", AUTH).replace(b"Content-Length: 0",
                                                                              f"Content-Length: {len(body)}".encode()))
        # A byte every 0.2 s: never idle for long, so only a deadline on the whole body stops it.
        answers: list[Any] = []
        reader = threading.Thread(target=lambda: answers.append(read_answer(sock)))
        reader.start()
        start = time.monotonic()
        for byte in body:
            if answers or not reader.is_alive():
                break
            try:
                sock.sendall(b"1\r\n" + bytes([byte]) + b"\r\n" if chunked else bytes([byte]))
            except OSError:  # the server closed the connection after its answer
                break
            time.sleep(0.2)
        reader.join(timeout=30)
        took = time.monotonic() - start
        assert answers, "no answer to the slow body"
        assert answers[0].status == 408, answers[0].body
        assert "not received within 1 s" in answers[0].json()["error"]
        assert answers[0].closes and is_closed(sock)
        assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 10, took
    assert_still_serving(server, v1, rows)


def test_a_body_trickled_after_an_early_401_does_not_hold_its_connection(
        served: tuple[Server, Any, list[Any]]) -> None:
    """Answered before its body was read (no token: 401), a chunked body trickling in is cut off at the deadline.

    uvicorn reads and drops the rest of an answered request's body with no deadline of its own: an
    anonymous client could otherwise hold a connection (and a place under max_connections) forever.
    """
    server, v1, rows = served
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = read_answer(sock)
        assert answer.status == 401, answer.body
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < BODY_TIMEOUT + 10:
            try:
                sock.sendall(b"1\r\nx\r\n")  # one byte every 0.2 s, never idle for long
            except OSError:
                closed = True
                break
            if is_closed(sock, timeout=0.2):
                closed = True
                break
        took = time.monotonic() - start
        assert closed, "the connection was still open after the body deadline"
        assert took < BODY_TIMEOUT + 5, took
    assert_still_serving(server, v1, rows)


def test_the_refusals_were_counted_and_the_process_is_alive(served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    assert_still_serving(server, v1, rows)
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for kind in ("400", "408", "413", "422"):
        assert metric(text, "autopilot_errors_total", endpoint="predict", kind=kind) >= 1, kind
    assert metric(text, "autopilot_requests_total", endpoint="predict", status="500") == 0
    assert Path(server.log.name).read_text().count("Traceback") == 0, "an attack request raised inside the server"
