"""Case 23: 1,000 concurrent connections from one client against a real `autopilot serve`.

Fault: one test client (asyncio, raw sockets) opens 700 connections and sends a prediction on
each at the same instant, then opens 300 more, so that 1,000 are open together (past this
server's `max_connections` of 800), and sends a prediction on every one of them at once; then
1,000 connections that never send a byte, and one that sends its headers a byte at a time.
The server runs the default admission bounds (32 requests in progress) except that cap of 800.

Invariant: every request gets a status, none a reset or a timeout: 200, or 429 (too many in
progress) or, on the connections opened past the cap (and only on those), 503 with the
connection closed to give it back; every refusal carries Retry-After; the server's resident
memory grows by less than 100 MB; connections that send nothing or trickle their headers are
closed after `header_timeout_seconds` (408), so they cannot hold the connection cap; and
afterwards the server recovers: a normal request is answered 200 within seconds and the
open-connection count is back to a handful.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autopilot.settings import Settings
from tests.reliability.serving_http import (
    AUTH,
    Answer,
    PeakRss,
    metric,
    predict_bytes,
    read_answer_async,
    serving_config,
)
from tests.serving_support import Server, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
MAX_CONNECTIONS = 800
# Long enough that 300 idle connections outlive the poll that counts them on a fully loaded CI
# machine (with 2 s the count once never reached 1,000), short enough to test the deadline.
HEADER_TIMEOUT = 10.0
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any) -> Iterator[tuple[Server, Any, list[Any]]]:
    root = tmp_path_factory.mktemp("r23")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home")})
    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames)
    config = serving_config(root / "config", max_connections=MAX_CONNECTIONS, header_timeout_seconds=HEADER_TIMEOUT)
    server = Server(config, settings.home, free_port())
    try:
        server.wait_ready()
        yield server, v1, feature_rows(adult_frames, cfg, n=50)
    finally:
        server.kill()


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def open_connections(server: Server) -> float:
    return metric(httpx.get(server.url + "/metrics", timeout=30).text, "autopilot_open_connections")


async def wait_for_connections(server: Server, at_least: int, timeout: float = 60.0,
                               ours: list[Connection] | None = None) -> float:
    """Until the server has accepted `at_least` connections (its own count, from /metrics).

    On failure the message says how many of `ours` the server had already closed, and what it
    sent on them: a server that closed idle connections early is a different bug from one that
    never accepted them (CI once saw a count of 1 here, under a fully loaded machine).
    """
    deadline = time.monotonic() + timeout
    count = 0.0
    seen: list[float] = []
    while time.monotonic() < deadline:
        count = await asyncio.to_thread(open_connections, server)
        seen.append(count)
        if count >= at_least:
            return count
        await asyncio.sleep(0.1)
    closed = [reader for reader, _ in ours or [] if getattr(reader, "_eof", False)]
    sample = [bytes(reader._buffer[:60]) for reader in closed[:3]]
    raise AssertionError(f"the server accepted only {count:.0f} of {at_least} connections in {timeout:g} s "
                         f"(counts seen: max {max(seen, default=0):.0f}, {len(seen)} polls); "
                         f"{len(closed)} of our {len(ours or [])} connections closed by the server, e.g. {sample}; "
                         f"server alive: {server.proc.poll() is None}")


async def ask(conn: Connection, request: bytes) -> Answer | str:
    """Send one request and read its answer; a string names what went wrong instead."""
    reader, writer = conn
    try:
        writer.write(request)
        return await asyncio.wait_for(read_answer_async(reader), 60)
    except TimeoutError:
        return "timeout"
    except (OSError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"


def check(answers: list[Answer | str], allowed: set[int]) -> dict[int, int]:
    """Every request got an allowed status, refusals with Retry-After; returns the count per status."""
    failures = [a for a in answers if isinstance(a, str)]
    assert not failures, f"{len(failures)} of {len(answers)} requests got no status, e.g. {failures[:3]}"
    counts: dict[int, int] = {}
    for answer in answers:
        assert isinstance(answer, Answer)
        assert answer.status in allowed, (answer.status, answer.body[:200])
        if answer.status != 200:
            assert answer.headers.get("retry-after") == "1", answer.headers
        if answer.status == 503:
            assert answer.closes, "a 503 for too many connections must close its connection"
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return counts


async def thousand(server: Server, rows: list[Any]) -> tuple[dict[int, int], dict[int, int]]:
    port = port_of(server)
    requests = [predict_bytes([rows[i % len(rows)]]) for i in range(1000)]
    first = list(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(700))))
    wave_a = check(list(await asyncio.gather(*(ask(c, requests[i]) for i, c in enumerate(first)))), {200, 429})
    # A connection the server closed after answering (allowed: an early 429 may leave the body
    # unread, and HTTP lets a server close then) is replaced while fewer than the cap are open,
    # so that 1,000 are open together below.
    first = [c if not getattr(c[0], "_eof", False) else await asyncio.open_connection("127.0.0.1", port)
             for c in first]
    # 300 more: 1,000 open together, past the cap of 800; then a request on every one at once.
    second = list(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(300))))
    everyone = first + second
    await wait_for_connections(server, 1000, ours=everyone)
    answers = list(await asyncio.gather(*(ask(c, requests[i]) for i, c in enumerate(everyone))))
    wave_b = check(answers, {200, 429, 503})
    # The connections the server already had are served as before: only new ones past the cap get 503.
    assert not any(isinstance(a, Answer) and a.status == 503 for a in answers[:700])
    for _, writer in everyone:
        writer.close()
    return wave_a, wave_b


async def idle_and_trickling(server: Server) -> tuple[list[bytes], float]:
    """1,000 connections that send nothing, one that trickles its head; how each ended, and how long."""
    port = port_of(server)
    start = time.monotonic()  # before the server accepts any of them: its deadlines start later
    idle = list(await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(1000))))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\n":
            if writer.is_closing():
                return
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except OSError:
                return
            await asyncio.sleep(0.1)

    trickler = asyncio.ensure_future(trickle())
    ends = await asyncio.gather(*(asyncio.wait_for(r.read(), 60) for r, _ in [*idle, (reader, writer)]))
    took = time.monotonic() - start
    trickler.cancel()
    for _, w in [*idle, (reader, writer)]:
        w.close()
    return ends, took


def test_a_thousand_connections_all_get_a_status_and_the_server_recovers(
        served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    httpx.post(server.url + "/predict", json={"records": rows[:1]}, headers=AUTH, timeout=30).raise_for_status()
    before = httpx.get(server.url + "/metrics", timeout=30).text
    with PeakRss(server.proc.pid) as rss:
        wave_a, wave_b = asyncio.run(thousand(server, rows))
    print(f"700 at once: {wave_a}; 1,000 at once: {wave_b}; RSS +{rss.growth_mb:.1f} MB")
    assert wave_a.get(200, 0) >= 1 and wave_a.get(429, 0) >= 1, wave_a  # admitted up to the bound, the rest shed
    # Connections 801 to 1,000 (a probe's own connection may shift that by one or two) got 503.
    assert 190 <= wave_b.get(503, 0) <= 210, wave_b
    assert rss.growth_mb < 100, f"RSS grew by {rss.growth_mb:.0f} MB under 1,000 connections"

    # Recovers: a normal request is answered at once, and the connections are given back.
    start = time.monotonic()
    answer = httpx.post(server.url + "/predict", json={"records": rows[:2]}, headers=AUTH, timeout=30)
    assert answer.status_code == 200 and answer.json()["model_version"] == int(v1.version)
    assert time.monotonic() - start < 5.0
    deadline = time.monotonic() + 30
    while open_connections(server) > 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_connections(server) <= 5
    after = httpx.get(server.url + "/metrics", timeout=30).text
    assert metric(after, "autopilot_rejected_total", endpoint="predict", reason="concurrency") > metric(
        before, "autopilot_rejected_total", endpoint="predict", reason="concurrency")
    assert metric(after, "autopilot_rejected_total", endpoint="predict", reason="connections") >= wave_b[503]
    assert metric(after, "autopilot_requests_in_progress") == 0
    assert server.proc.poll() is None


def test_idle_and_trickling_connections_cannot_hold_the_cap(served: tuple[Server, Any, list[Any]]) -> None:
    server, v1, rows = served
    with PeakRss(server.proc.pid) as rss:
        ends, took = asyncio.run(idle_and_trickling(server))
    # Every one was closed by the server after the header deadline, with a 408 that says why.
    said = f"not received within {HEADER_TIMEOUT:g} s".encode()
    assert all(end.startswith(b"HTTP/1.1 408 ") and said in end for end in ends), \
        {end[:40] for end in ends}
    assert HEADER_TIMEOUT <= took < HEADER_TIMEOUT + 30, took
    assert rss.growth_mb < 100, f"RSS grew by {rss.growth_mb:.0f} MB under 1,000 idle connections"
    answer = httpx.post(server.url + "/predict", json={"records": rows[:1]}, headers=AUTH, timeout=30)
    assert answer.status_code == 200 and answer.json()["model_version"] == int(v1.version)
