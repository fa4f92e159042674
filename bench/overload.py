"""Overload: `autopilot serve` offered twice its measured capacity, open loop, for 60 s.

The same model and server as `bench/serving.py` (the demo's native-categorical HGB with
`hgb.max_iter` 200, fitted on the full Adult training split, registered the way training does
it, served by `autopilot serve` with its default `deployment.serving` settings, single-row
`POST /predict` requests cycling over 2,000 real Adult test rows). Three phases, one server:

1. **Capacity** (closed loop, `bench/serving.py`'s load generator): C connections each send a
   request, wait for the answer, send the next; for each C in `--concurrency`. Capacity = the
   highest req/s measured; the p99 at that concurrency is the reference latency.
2. **Overload** (open loop): a separate load generator fires requests on a fixed schedule at
   `--factor` x capacity (default 2x) for `--seconds` (default 60), never waiting for answers
   before sending the next: each request takes an idle keep-alive connection or opens a new
   one. Latency runs from the request's scheduled time (no coordinated omission). Requests
   still unanswered `--grace` seconds after the last one was sent count as "without an
   answer"; a connection closed or reset before its answer counts as a reset.
3. **Recovery**: the closed loop again at the capacity's concurrency, right after.

While the overload runs, the parent samples the server's resident memory (`VmRSS` from
`/proc/<pid>/status`, every 0.2 s) and its CPU. Goals (issue 11): admitted (200) p99 under
overload <= 2x the p99 at capacity; 0 connection resets; RSS growth <= 100 MB; 0 requests
without an answer. Also printed: the share answered 429 (shed, with Retry-After), the goodput
(200/s) under overload against capacity, and the distance to the physical limit: goodput
rows/s against in-process `predict_proba` on one 16k-row batch.

Usage: python bench/overload.py [--seconds 60] [--factor 2] [--concurrency 16 32]
                                [--set max_concurrent_requests=64 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

import _common as common
import serving as serving_bench

GOAL_P99_RATIO = 2.0      # admitted p99 under overload / p99 at capacity
GOAL_RSS_MB = 100.0       # server RSS growth during the overload
GOAL_RESETS = 0
GOAL_UNANSWERED = 0
CLIENT_MAX_CONNECTIONS = 4000   # the open-loop client never holds more (a request finding none is "not sent")


# ---------------------------------------------------------------------------- open-loop load generator (child)


def _openloop_main(spec_path: str) -> int:
    """The open-loop generator's process: run the schedule in the spec file, print one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    print(json.dumps(runner(_open_loop(spec))), flush=True)
    return 0


class _Client(asyncio.Protocol):
    """One keep-alive client connection: writes a request, parses the answer, reports it (no task per request).

    The generator shares the machine's two cores with the server, so it must cost little:
    a protocol with a byte buffer, not a stream reader and a task per request.
    """

    def __init__(self, gen: _OpenLoop) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.current: int | None = None  # the request waiting for its answer
        self.served = 0  # answers received on this connection
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, i: int) -> None:
        self.current = i
        assert self.transport is not None
        self.transport.write(self.gen.requests[i % len(self.gen.requests)])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at, length = head.find(b"\r\ncontent-length:"), 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            status = int(head[9:12])
            close = b"\r\nconnection: close" in head
            kind = str(status) if status not in (429, 503) or b"\r\nretry-after:" in head \
                else f"{status}_without_retry_after"
            i, self.current = self.current, None
            self.served += 1
            self.gen.answered(i, kind, self, close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.current is not None:
            i, self.current = self.current, None
            if self.served and not self.buffer:
                # A reused keep-alive connection the server closed while it was idle (its keep-alive
                # timeout), crossing our request on the wire: not a reset of the request. HTTP
                # clients resend in this case, and so does this one, on another connection.
                self.gen.stale_reuses += 1
                self.gen.lost(self)
                self.gen.fire(i)
                return
            self.gen.answered(i, "reset", self, True)  # closed or reset before a whole answer arrived
        self.gen.lost(self)


class _OpenLoop:
    """Requests on a fixed schedule over a pool of keep-alive connections (a new one when none is idle)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host, self.port, self.rate = spec["host"], int(spec["port"]), float(spec["rate"])
        headers = (f"POST {spec['path']} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Content-Type: application/json\r\nAuthorization: Bearer {spec['token']}\r\n")
        bodies = [b.encode() for b in json.loads(Path(spec["bodies"]).read_text())]
        self.requests = [headers.encode() + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies]
        self.idle: list[_Client] = []
        self.open = 0
        self.peak = 0
        self.opened = 0
        self.stale_reuses = 0
        self.t0 = 0.0
        # Request i -> (latency from its scheduled time in s, or None; outcome). No entry at the end:
        # still waiting at the grace deadline.
        self.outcomes: dict[int, tuple[float | None, str]] = {}
        self.loop = asyncio.get_running_loop()

    def answered(self, i: int, kind: str, client: _Client, close: bool) -> None:
        latency = time.perf_counter() - self.t0 - i / self.rate if kind != "reset" else None
        self.outcomes[i] = (latency, kind)
        if close:
            if client.transport is not None and not client.closed:
                client.transport.close()
        elif not client.closed:
            self.idle.append(client)

    def lost(self, client: _Client) -> None:
        self.open -= 1
        if client in self.idle:
            self.idle.remove(client)

    def fire(self, i: int) -> None:
        while self.idle:
            client = self.idle.pop()
            if not client.closed:
                client.send(i)
                return
        if self.open >= CLIENT_MAX_CONNECTIONS:
            self.outcomes[i] = (None, "not_sent")
            return
        self.open += 1
        self.opened += 1
        self.peak = max(self.peak, self.open)
        task = self.loop.create_task(self.loop.create_connection(lambda: _Client(self), self.host, self.port))
        task.add_done_callback(lambda t: self._connected(t, i))

    def _connected(self, task: asyncio.Task[Any], i: int) -> None:
        if task.cancelled() or task.exception() is not None:
            self.open -= 1
            error = task.exception() if not task.cancelled() else None
            self.outcomes[i] = (None, "refused" if isinstance(error, ConnectionRefusedError) else "connect_error")
            return
        task.result()[1].send(i)


async def _open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    gen = _OpenLoop(spec)
    warmup, seconds, grace = float(spec["warmup"]), float(spec["seconds"]), float(spec["grace"])
    total = int((warmup + seconds) * gen.rate)
    clock = time.perf_counter
    lag = 0.0
    cpu0 = time.process_time()
    gen.t0 = clock() + 0.2
    await asyncio.sleep(0.2)
    sent = 0
    while sent < total:
        now = clock() - gen.t0
        due = min(int(now * gen.rate) + 1, total)
        lag = max(lag, (now - sent / gen.rate) * 1000.0)
        while sent < due:
            gen.fire(sent)
            sent += 1
        await asyncio.sleep(max(sent / gen.rate - (clock() - gen.t0), 0.0005))
    send_seconds = clock() - gen.t0
    deadline = clock() + grace
    while len(gen.outcomes) < total and clock() < deadline:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    for client in list(gen.idle):
        if client.transport is not None:
            client.transport.close()

    first = int(warmup * gen.rate)  # the measured window: after the warm-up
    by_kind: dict[str, int] = {}
    admitted: list[float] = []
    shed: list[float] = []
    for i in range(first, total):
        latency, kind = gen.outcomes.get(i, (None, "no_answer"))
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if latency is not None and kind == "200":
            admitted.append(latency)
        elif latency is not None and kind in ("429", "503"):
            shed.append(latency)
    admitted.sort()
    shed.sort()

    def pct(values: list[float], q: float) -> float | None:
        return values[min(int(q * len(values)), len(values) - 1)] * 1000.0 if values else None

    return {"rate": gen.rate, "seconds": seconds, "warmup": warmup, "scheduled": total - first,
            "by_outcome": by_kind, "admitted": len(admitted), "admitted_per_s": len(admitted) / seconds,
            "admitted_p50_ms": pct(admitted, 0.5), "admitted_p99_ms": pct(admitted, 0.99),
            "admitted_max_ms": admitted[-1] * 1000.0 if admitted else None,
            "shed_p50_ms": pct(shed, 0.5), "shed_p99_ms": pct(shed, 0.99),
            "unanswered_at_grace": total - len(gen.outcomes), "send_seconds": send_seconds,
            "loadgen_cpu_cores": cpu / max(send_seconds, 1e-9), "peak_connections": gen.peak,
            "connections_opened": gen.opened, "stale_keepalive_resent": gen.stale_reuses,
            "max_dispatch_lag_ms": lag}


# ---------------------------------------------------------------------------- the server side (parent)


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Sample a process's RSS every `interval` seconds on a thread; `peak` and `samples` afterwards."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        """The highest sample."""
        return max(self.samples) if self.samples else 0


def closed_loop(server: serving_bench.Server, token: str, bodies: Path, concurrency: int, warmup: float,
                seconds: float, work: Path) -> dict[str, Any]:
    """`bench/serving.py`'s closed-loop generator against `server`, with the server's CPU over the window."""
    spec = work / f"closed-{concurrency}-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": server.port, "path": "/predict", "token": token,
                                "bodies": str(bodies), "concurrency": concurrency, "warmup": warmup,
                                "seconds": seconds}))
    child = subprocess.Popen([sys.executable, str(common.BENCH / "serving.py"), "--loadgen", str(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env=common.clean_env())
    cpu: dict[str, float] = {}
    lines = []
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line)
        if line.strip() in (serving_bench.MEASURE_START, serving_bench.MEASURE_END):
            cpu[line.strip()] = server.cpu_seconds()
    _, err = child.communicate(timeout=60)
    if child.returncode != 0:
        raise RuntimeError(f"closed-loop generator failed ({child.returncode}): {err[-2000:]}")
    result = common.last_json_line("".join(lines))
    result["ok_rps"] = (result["completed"] - result["errors"]) / result["seconds"]  # 200 answers only
    if len(cpu) == 2:
        result["server_cpu_cores"] = (cpu[serving_bench.MEASURE_END] - cpu[serving_bench.MEASURE_START]) / seconds
    return result


def open_loop(server: serving_bench.Server, token: str, bodies: Path, rate: float, warmup: float, seconds: float,
              grace: float, work: Path) -> dict[str, Any]:
    """Run the open-loop generator (a child process) while sampling the server's RSS and CPU."""
    spec = work / "open.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": server.port, "path": "/predict", "token": token,
                                "bodies": str(bodies), "rate": rate, "warmup": warmup, "seconds": seconds,
                                "grace": grace}))
    baseline = rss_bytes(server.proc.pid)
    cpu0 = server.cpu_seconds()
    start = time.perf_counter()
    with common.neighbours() as others, RssSampler(server.proc.pid) as rss:
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--openloop", str(spec)],
                               capture_output=True, text=True, env=common.clean_env(),
                               timeout=warmup + seconds + grace + 120, check=False)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"open-loop generator failed ({child.returncode}): {child.stderr[-3000:]}")
    result = common.last_json_line(child.stdout)
    result.update({"server_rss_baseline_mb": baseline / 2**20, "server_rss_peak_mb": rss.peak / 2**20,
                   "server_rss_growth_mb": max(rss.peak - baseline, 0) / 2**20,
                   "server_rss_after_mb": rss_bytes(server.proc.pid) / 2**20,
                   "server_cpu_cores": (server.cpu_seconds() - cpu0) / wall})
    # `neighbours` counts every process but this one and its waited-for children: the load
    # generator is one of those, the server (still running) is not, so take it out here.
    share = others["foreign_cpu_share"]
    result["foreign_cpu_share"] = (None if share is None else
                                   round(max(share - result["server_cpu_cores"] / (os.cpu_count() or 1), 0.0), 3))
    return result


def scrape(server: serving_bench.Server) -> dict[str, float]:
    """autopilot's shedding counters and gauges from /metrics (summed over labels per name and reason)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("autopilot_rejected_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[f"rejected_{reason}"] = out.get(f"rejected_{reason}", 0.0) + float(line.split()[-1])
        elif line.startswith(("autopilot_requests_in_progress ", "autopilot_queued_rows ",
                              "autopilot_open_connections ")):
            out[line.split()[0]] = float(line.split()[-1])
    return out


def physical_limit(pipeline: Any, frame: Any) -> float:
    """In-process `predict_proba` rows/s on one 16k-row batch (median of 5): the model's own limit here."""
    big = frame.head(serving_bench.BATCH_ROWS)
    pipeline.predict_proba(big)
    runs = []
    for _ in range(5):
        with common.stopwatch() as t:
            pipeline.predict_proba(big)
        runs.append(t["seconds"])
    return len(big) / common.median(runs)


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Set up the model and server, measure capacity, overload it, check recovery, print and save."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--openloop"]:
        return _openloop_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds of open-loop overload")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load as a multiple of the capacity")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32],
                        help="closed-loop concurrencies tried for the capacity (above max_concurrent_requests, "
                             "the excess is refused)")
    parser.add_argument("--capacity-seconds", type=float, default=8.0, help="measured seconds per concurrency")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds the open-loop client waits for answers after its last request")
    parser.add_argument("--rate", type=float, help="offered req/s (default: factor x measured capacity)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="deployment.serving settings for the server (e.g. max_concurrent_requests=32)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for a quiet machine before each timed part (0: off)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (server log) afterwards")
    args = parser.parse_args(argv)

    from autopilot.config import load_config
    from autopilot.settings import Settings

    home = common.temp_dir("overload", cleanup=not args.keep)
    work = home / "bench"
    work.mkdir(parents=True)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    cfg = load_config(common.ADULT_CONFIG)
    print(f"[overload] home {home}; fitting HGB (max_iter {serving_bench.HGB['hgb.max_iter']}) on the full Adult "
          "train split", flush=True)
    pipeline, _, version, _ = serving_bench.fit_and_register(settings, cfg)
    test_frame, records = serving_bench.test_rows(cfg)
    quiet: list[dict[str, Any]] = []
    if args.wait_idle > 0:
        quiet.append(common.wait_for_quiet(args.wait_idle))
    limit = physical_limit(pipeline, test_frame)
    print(f"[overload] in-process predict_proba: {limit:,.0f} rows/s in one batch of {serving_bench.BATCH_ROWS:,}",
          flush=True)

    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    raw_deployment = yaml.safe_load(common.ADULT_CONFIG.read_text()).get("deployment", {})
    raw_deployment["serving"] = {**raw_deployment.get("serving", {}), **overrides}
    config = common.write_config_copy(work / "config", cfg.name, {}, deployment=raw_deployment)
    serving = load_config(config).deployment.serving
    token = secrets.token_urlsafe(32)
    bodies = work / "bodies.json"
    bodies.write_text(json.dumps([json.dumps({"records": [r]}) for r in records]))
    exe = Path(sys.executable).parent / "autopilot"
    argv_server = [str(exe)] if exe.exists() else [sys.executable, "-m", "autopilot.cli"]
    port = serving_bench.free_port()
    server = serving_bench.Server("autopilot", [*argv_server, "serve", str(config), "--port", str(port)],
                                  common.clean_env(AUTOPILOT_HOME=str(home), AUTOPILOT_SERVING_TOKEN=token), port,
                                  "/ready", work)
    try:
        print(f"[overload] autopilot serve ready in {server.wait_ready():.1f} s on {server.url} "
              f"(max_concurrent_requests {serving.max_concurrent_requests}, max_queued_rows "
              f"{serving.max_queued_rows}, max_connections {serving.max_connections})", flush=True)
        capacity_runs = []
        for concurrency in args.concurrency:
            if args.wait_idle > 0:
                quiet.append(common.wait_for_quiet(args.wait_idle))
            run = closed_loop(server, token, bodies, concurrency, args.warmup, args.capacity_seconds, work)
            capacity_runs.append(run)
            print(f"[overload] closed loop c={concurrency:<3} {run['ok_rps']:8.1f} req/s answered 200  p50 "
                  f"{serving_bench.fmt(run['p50_ms'])} ms  p99 {serving_bench.fmt(run['p99_ms'])} ms  "
                  f"non-200 {run['errors']}  connection errors {run['connection_errors']}", flush=True)
        best = max(capacity_runs, key=lambda r: r["ok_rps"])
        rate = args.rate or args.factor * best["ok_rps"]
        if args.wait_idle > 0:
            quiet.append(common.wait_for_quiet(args.wait_idle))
        print(f"[overload] open loop: {rate:,.0f} req/s offered for {args.seconds:g} s (+{args.warmup:g} s warm-up)",
              flush=True)
        before = scrape(server)
        overload = open_loop(server, token, bodies, rate, args.warmup, args.seconds, args.grace, work)
        after = scrape(server)
        print(f"[overload] outcomes {overload['by_outcome']}; admitted {overload['admitted_per_s']:,.0f}/s, p99 "
              f"{serving_bench.fmt(overload['admitted_p99_ms'])} ms; RSS +{overload['server_rss_growth_mb']:.1f} MB",
              flush=True)
        recovery = closed_loop(server, token, bodies, int(best["concurrency"]), 1.0, 4.0, work)
        print(f"[overload] recovery c={best['concurrency']}: {recovery['ok_rps']:,.1f} req/s answered 200, p99 "
              f"{serving_bench.fmt(recovery['p99_ms'])} ms", flush=True)
        if server.proc.poll() is not None:
            raise RuntimeError("the server died during the run")
    except BaseException:
        print(f"\n--- server log tail ({server.log_path}) ---\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
    shed = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k.startswith("rejected_")}
    return report(args, capacity_runs, best, overload, recovery, shed, limit, quiet, home, int(version.version))


def report(args: argparse.Namespace, capacity_runs: list[dict[str, Any]], best: dict[str, Any],
           overload: dict[str, Any], recovery: dict[str, Any], shed: dict[str, float], limit: float,
           quiet: list[dict[str, Any]], home: Path, version: int) -> int:
    """Print the tables and write `bench/results/overload.json`."""
    fmt = serving_bench.fmt
    common.print_table(
        f"Capacity: closed loop, single-row requests, {args.capacity_seconds:g} s per concurrency",
        ["concurrency", "200 answers/s", "p50 ms", "p99 ms", "non-200", "connection errors"],
        [[r["concurrency"], fmt(r["ok_rps"]), fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), r["errors"],
          r["connection_errors"]] for r in capacity_runs])
    kinds = overload["by_outcome"]
    scheduled = overload["scheduled"]
    resets = kinds.get("reset", 0)
    unanswered = kinds.get("no_answer", 0)
    not_sent = sum(kinds.get(k, 0) for k in ("not_sent", "refused", "connect_error"))
    without_retry_after = sum(v for k, v in kinds.items() if k.endswith("_without_retry_after"))
    other = scheduled - sum(kinds.get(k, 0) for k in ("200", "429", "503")) - resets - unanswered - not_sent \
        - without_retry_after
    p99_ratio = (overload["admitted_p99_ms"] / best["p99_ms"]
                 if overload["admitted_p99_ms"] is not None and best["p99_ms"] else None)
    growth = overload["server_rss_growth_mb"]
    goals = {
        "p99": p99_ratio is not None and p99_ratio <= GOAL_P99_RATIO,
        "resets": resets <= GOAL_RESETS,
        "rss": growth <= GOAL_RSS_MB,
        "unanswered": unanswered + not_sent <= GOAL_UNANSWERED,
        "retry_after": without_retry_after == 0,
    }
    share = {k: v / scheduled for k, v in kinds.items()} if scheduled else {}
    common.print_table(
        f"Overload: open loop at {overload['rate']:,.0f} req/s ({args.factor:g}x capacity {best['ok_rps']:,.0f}) for "
        f"{args.seconds:g} s, {scheduled:,} requests",
        ["measure", "value", "goal", "verdict"],
        [["admitted (200) p99 / p99 at capacity",
          f"{fmt(overload['admitted_p99_ms'], 1)} / {fmt(best['p99_ms'], 1)} ms = {fmt(p99_ratio, 2)}x",
          f"<= {GOAL_P99_RATIO:g}x", common.verdict(goals["p99"])],
         ["answered 200", f"{kinds.get('200', 0):,} ({share.get('200', 0):.1%})", "-", "-"],
         ["answered 429 (shed, Retry-After)", f"{kinds.get('429', 0):,} ({share.get('429', 0):.1%})", "-", "-"],
         ["answered 503 (shed, Retry-After)", f"{kinds.get('503', 0):,} ({share.get('503', 0):.1%})", "-", "-"],
         ["429/503 without Retry-After", without_retry_after, "0", common.verdict(goals["retry_after"])],
         ["connection resets", resets, f"{GOAL_RESETS}", common.verdict(goals["resets"])],
         ["requests without an answer (incl. not sent)", f"{unanswered} (+{not_sent} not sent)",
          f"{GOAL_UNANSWERED}", common.verdict(goals["unanswered"])],
         ["other answers", other, "-", "-"],
         ["server RSS growth", f"{growth:.1f} MB (from {overload['server_rss_baseline_mb']:.0f} MB; "
                               f"{overload['server_rss_after_mb']:.0f} MB after)",
          f"<= {GOAL_RSS_MB:g} MB", common.verdict(goals["rss"])],
         ["shed p50 / p99 (time to a 429/503)",
          f"{fmt(overload['shed_p50_ms'], 2)} / {fmt(overload['shed_p99_ms'], 2)} ms", "-", "-"],
         ["server CPU / load generator CPU",
          f"{overload['server_cpu_cores']:.2f} / {overload['loadgen_cpu_cores']:.2f} cores", "-", "-"],
         ["client connections (peak)", overload["peak_connections"], "-", "-"],
         ["requests resent: an idle keep-alive connection closed by the server crossed them",
          overload["stale_keepalive_resent"], "-", "-"]])
    goodput = overload["admitted_per_s"]
    common.print_table("Goodput and the physical limit (rows/s; single-row requests)", ["measure", "rows/s", "share"], [
        [f"capacity (closed loop, c={best['concurrency']})", fmt(best["ok_rps"], 0), "100%"],
        [f"goodput under {args.factor:g}x overload (200 answers/s)", fmt(goodput, 0),
         f"{goodput / best['ok_rps']:.0%}"],
        [f"recovery right after (closed loop, c={best['concurrency']}; p99 {fmt(recovery['p99_ms'], 1)} ms)",
         fmt(recovery["ok_rps"], 0), f"{recovery['ok_rps'] / best['ok_rps']:.0%}"],
        [f"in-process predict_proba, one batch of {serving_bench.BATCH_ROWS:,} (physical limit)", fmt(limit, 0),
         f"capacity {best['ok_rps'] / limit:.2%}, goodput {goodput / limit:.2%}"],
    ])
    contended = common.warn_if_contended([overload["foreign_cpu_share"]])
    met = all(goals.values())
    path = common.write_result("overload", {
        "ratio": p99_ratio if p99_ratio is not None else float("inf"),
        "ratio_label": f"admitted p99 under {args.factor:g}x open-loop overload / p99 at capacity (closed loop)",
        "goal": f"<= {GOAL_P99_RATIO:g}x p99, 0 resets, 0 unanswered, RSS growth <= {GOAL_RSS_MB:g} MB",
        "goal_met": met,
        "headline": (f"{overload['rate']:,.0f} req/s offered ({args.factor:g}x {best['ok_rps']:,.0f}): p99 "
                     f"{fmt(overload['admitted_p99_ms'])} vs {fmt(best['p99_ms'])} ms, "
                     f"{share.get('429', 0):.0%} shed 429, {resets} resets, {unanswered + not_sent} unanswered, "
                     f"RSS +{growth:.0f} MB, goodput {goodput / best['ok_rps']:.0%} of capacity"),
        "goals": goals, "capacity_runs": capacity_runs, "capacity": best, "overload": overload,
        "recovery": recovery, "shed_counters": shed, "physical_limit_rows_per_s": limit,
        "settings": {"seconds": args.seconds, "factor": args.factor, "concurrency": args.concurrency,
                     "serving_overrides": args.set,
                     "capacity_seconds": args.capacity_seconds, "warmup": args.warmup, "grace": args.grace},
        "model_version": version, "quiet_at_start": quiet, "contended": contended,
    })
    print(f"\nwrote {path}")
    if args.keep:
        print(f"kept the temporary home with the server log: {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
