"""Case 19: a hot swap in the middle of 60 s of steady traffic on a real `autopilot serve`.

Fault: an open-loop client sends 200 requests/s (4 rows each, on keep-alive connections, a new
connection whenever none is free) for 60 s; at 30 s the champion alias moves to a new version
and `/reload` is asked for, so the server loads, verifies and warms the new version beside the
old one and swaps while requests are in flight.

Invariant: every request is answered 200 (0 errors, 0 resets, 0 timeouts); every answer comes
from exactly one complete model version: its `X-Model-Version` equals the body's version and
all of its scores equal that version's own in-process pipeline predictions for those rows (the
two versions score every row used differently, so a mixed or half-swapped answer cannot pass);
requests sent before the swap began are answered by the old version and those sent after it
finished by the new one; the admitted p99 after the swap is within 2x of the p99 before it; and
every acknowledged row is in the inference log, under the version that answered it.

The p99s compared are the medians of the p99s of 5 s slices (five before the swap, five after):
the suite runs on two xdist workers on 2 cores, and a burst of the other worker's CPU (a model
fit, a server start) raised one slice's p99 past 300 ms in CI while the next slice was back at
20 ms. A swap that leaves the server slower (a version served by its slow path, two models in
memory thrashing) raises every slice after it, and the median with them.

The server runs the default settings except `max_concurrent_requests`, raised from 32 to 1,000:
at 200 requests/s, a stall of the whole server process longer than 0.16 s (a busy shared CI
machine) puts 32 requests in progress and the admission bound then sheds with 429, correctly;
here only the swap may fail the test. Shedding is case 23's subject, and `bench/overload.py`'s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from autopilot.adapters import registry
from autopilot.serving.inference_log import InferenceLog
from autopilot.serving.model import RegistrySource
from autopilot.serving.schema import ServingSchema
from autopilot.settings import Settings
from tests.reliability.serving_http import AUTH, read_answer_async, request_bytes, serving_config
from tests.serving_support import HGB, Server, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
RATE = 200.0        # requests per second
SECONDS = 60.0
SWAP_AT = 30.0
ROWS_PER_REQUEST = 4
SETTLE = 5.0        # the first seconds (connections, caches) are not part of the "before" p99
P99_FLOOR_MS = 10.0  # below this, p99 differences are scheduler noise on a shared 2-core machine
SLICE = 5.0         # seconds per p99 slice
# The server closes a keep-alive connection idle for 30 s (uvicorn's timeout_keep_alive); like
# any HTTP client's pool, the test client does not reuse one idle for this long (a connection
# opened in the first seconds and left at the bottom of the pool until a burst at 33 s was
# closed by the server as the request went out: 0 bytes read, a client-pool race, not a drop).
POOL_IDLE_MAX = 20.0


@dataclass
class Outcome:
    """One request: when it was sent (s from the start), its latency, and what came back."""

    index: int
    sent: float
    latency: float | None = None
    status: int | None = None
    error: str | None = None
    header_version: str | None = None
    body: dict[str, Any] | None = None


@pytest.fixture
def served(tmp_path: Path, adult_frames: Any) -> Iterator[tuple[Server, Settings, Any, Any]]:
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames, params={**HGB, "hgb.max_iter": 60})
    v2 = register_version(settings, cfg, adult_frames, params={**HGB, "hgb.max_iter": 40}, alias=None)
    server = Server(serving_config(tmp_path / "config", max_concurrent_requests=1000), settings.home, free_port())
    try:
        server.wait_ready()
        yield server, settings, v1, v2
    finally:
        server.kill()


async def drive(server: Server, bodies: list[bytes], swap: Any) -> tuple[list[Outcome], dict[str, Any]]:
    """Send RATE requests/s for SECONDS on a fixed schedule; call `swap()` (blocking) at SWAP_AT."""
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    outcomes: list[Outcome] = []
    swap_times: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    start = time.perf_counter()

    async def pooled() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The most recently used idle connection young enough to reuse, else a new one."""
        while idle:
            reader, writer, used = idle.pop()
            if time.perf_counter() - used < POOL_IDLE_MAX and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(host, port)

    async def one(i: int) -> None:
        outcome = Outcome(index=i, sent=time.perf_counter() - start)
        outcomes.append(outcome)
        try:
            reader, writer = await pooled()
            outcome.sent = time.perf_counter() - start
            writer.write(bodies[i])
            answer = await asyncio.wait_for(read_answer_async(reader), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return
        outcome.latency = time.perf_counter() - start - outcome.sent
        outcome.status = answer.status
        outcome.header_version = answer.headers.get("x-model-version")
        outcome.body = answer.json()
        if answer.closes:
            writer.close()
        else:
            idle.append((reader, writer, time.perf_counter()))

    async def swapper() -> None:
        await asyncio.sleep(SWAP_AT)
        swap_times["begun"] = time.perf_counter() - start
        swap_times["report"] = await loop.run_in_executor(None, swap)
        swap_times["done"] = time.perf_counter() - start

    swap_task = asyncio.ensure_future(swapper())
    tasks = []
    total = int(RATE * SECONDS)
    for i in range(total):
        delay = i / RATE - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    await swap_task
    for _, writer, _ in idle:
        writer.close()
    return outcomes, swap_times


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)] * 1000.0


def sliced_p99_ms(outcomes: list[Outcome], start: float, end: float) -> float:
    """The median of the p99s of the SLICE-second slices of [start, end) (by send time)."""
    slices: dict[int, list[float]] = {}
    for o in outcomes:
        if start <= o.sent < end and o.latency is not None:
            slices.setdefault(int((o.sent - start) // SLICE), []).append(o.latency)
    full = [p99_ms(lat) for lat in slices.values() if len(lat) >= RATE * SLICE / 2]
    assert full, (start, end)
    return float(np.median(full))


def test_a_hot_swap_under_200_requests_per_second_drops_nothing_and_never_mixes_versions(
        served: tuple[Server, Settings, Any, Any], adult_frames: Any) -> None:
    server, settings, v1, v2 = served
    cfg = adult_cfg()
    rows = feature_rows(adult_frames, cfg, n=200)
    # Each version's own in-process predictions (the pipeline itself, not the server's fast path).
    reg = registry.connect(settings)
    schema = ServingSchema.from_config(cfg)
    source = RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(settings))
    expected = {int(v.version): source.load(int(v.version))
                .pipeline.predict_proba(schema.frame(rows))[:, 1] for v in (v1, v2)}
    assert np.all(np.abs(expected[int(v1.version)] - expected[int(v2.version)]) > 1e-6), \
        "the two versions must score every row differently for an answer to identify its version"
    picks = [[(i * ROWS_PER_REQUEST + k) % len(rows) for k in range(ROWS_PER_REQUEST)]
             for i in range(int(RATE * SECONDS))]
    bodies = [request_bytes("POST", "/predict", json.dumps({"records": [rows[r] for r in pick]}).encode(),
                            {**AUTH, "X-Request-ID": f"r19-{i}"}) for i, pick in enumerate(picks)]

    def swap() -> dict[str, Any]:
        reg.set_alias(cfg.registered_model_name, "champion", int(v2.version))
        return dict(httpx.post(server.url + "/reload", headers=AUTH, timeout=120).json())

    outcomes, swap_times = asyncio.run(drive(server, bodies, swap))
    report = swap_times["report"]
    assert report["changed"] is True and report["model_version"] == int(v2.version), report

    # 0 errors, 0 resets, 0 timeouts: every request answered 200.
    assert len(outcomes) == len(bodies)
    failed = [o for o in outcomes if o.error is not None or o.status != 200]
    assert not failed, (f"{len(failed)} of {len(outcomes)} requests failed, e.g. "
                        f"{[(o.index, o.status, o.error, o.body) for o in failed[:5]]}")

    # Each answer from exactly one complete version.
    versions = {int(v1.version), int(v2.version)}
    for o in outcomes:
        assert o.body is not None
        version = o.body["model_version"]
        assert version in versions and o.header_version == str(version), (o.index, version, o.header_version)
        want = expected[version][picks[o.index]]
        other = expected[(versions - {version}).pop()][picks[o.index]]
        got = np.array(o.body["predictions"])
        assert np.allclose(got, want, rtol=0, atol=1e-9), (o.index, version, got, want)
        assert not np.any(np.isclose(got, other, rtol=0, atol=1e-9)), (o.index, "a score of the other version")
    before = [o for o in outcomes if o.sent + o.latency <= swap_times["begun"]]  # type: ignore[operator]
    after = [o for o in outcomes if o.sent >= swap_times["done"]]
    assert before and after
    assert {o.body["model_version"] for o in before} == {int(v1.version)}  # type: ignore[index]
    assert {o.body["model_version"] for o in after} == {int(v2.version)}  # type: ignore[index]

    # p99 after the swap within 2x of before it (median of 5 s slices; see the module docstring).
    whole_before = p99_ms([o.latency for o in before if o.sent >= SETTLE])  # type: ignore[misc]
    whole_after = p99_ms([o.latency for o in after])  # type: ignore[misc]
    p99_before = sliced_p99_ms(before, SETTLE, swap_times["begun"])
    p99_after = sliced_p99_ms(after, swap_times["done"], SECONDS)
    during = [o.latency for o in outcomes if swap_times["begun"] <= o.sent < swap_times["done"]]
    print(f"p99 before {p99_before:.1f} ms (whole window {whole_before:.1f}), after {p99_after:.1f} ms "
          f"({whole_after:.1f}); swap took {swap_times['done'] - swap_times['begun']:.2f} s, "
          f"{len(during)} requests during it, max {max(during, default=0) * 1000:.0f} ms")
    assert p99_after <= 2 * max(p99_before, P99_FLOOR_MS), (p99_before, p99_after, whole_before, whole_after)

    # Every acknowledged row is in the inference log, under the version that answered it.
    log = InferenceLog(settings.inference_db)
    try:
        assert log.count(cfg.name) == len(outcomes) * ROWS_PER_REQUEST
    finally:
        log.close()
    assert server.proc.poll() is None
