"""Serving: `autopilot serve` against `mlflow models serve`, MLServer and an empty endpoint, same model version.

One Adult model (the demo's native-categorical HGB, `hgb.max_iter` 200, fitted on the full
training split) is logged and registered in a fresh AUTOPILOT_HOME the way training does it
(skops, signature, SHA-256 manifest tag, alias `champion`). The servers then run on loopback,
each in its own process group:

- **ours:** `autopilot serve <copy of the demo config> --port P1` (default serving
  settings: a worker process per core, micro-batching, durable inference log, bearer token;
  `--workers N` sets the count), `POST /predict` with `{"records": [row]}`;
- **mlflow:** `mlflow models serve -m models:/adult_income/<v> --env-manager local`, its
  defaults (one uvicorn worker), `POST /invocations` with `{"dataframe_records": [row]}`;
- **mlserver:** MLServer 1.7.1 with mlserver-mlflow's `MLflowRuntime` on the version's MLflow
  model folder, adaptive batching on (`max_batch_size` 32, `max_batch_time` 0.01 s),
  `parallel_workers` = os.cpu_count(); `POST /v2/models/adult_income/infer` (V2 protocol, pandas
  content type, one input per column). It conflicts with our environment, so it runs from its
  own venv, `bench/.peers/mlserver/` (gitignored; created with `python3.11 -m venv` on first use,
  then reused): `mlserver==1.7.1 mlserver-mlflow==1.7.1 'uvloop<0.20'` (MLServer's parallel
  workers die at start with uvloop >= 0.20) plus the model's runtime libraries at this venv's versions;
- **empty:** the ceiling, a minimal ASGI app on uvicorn with our server's settings (httptools,
  uvloop, no access log) that reads the body and answers a fixed JSON.

`--peers mlflow mlserver empty` chooses the servers beside autopilot (default all). Before the load,
each model server's scores on the first 200 test rows are compared with the in-process pipeline.

One load generator drives all: a separate process (`python bench/serving.py --loadgen ...`)
with asyncio streams and hand-written HTTP/1.1 keep-alive requests (bodies pre-encoded, the
response framed by Content-Length), so the client costs little CPU on a 2-core machine. It
runs a closed loop: C connections, each sends one single-row request (real Adult test rows),
waits for the answer and sends the next; an answer other than 200, or a 200 without the
server's outputs (`predictions`, `outputs`), counts as an error. A warm-up comes first, then
`--seconds` are measured. Each concurrency level runs every server, the order rotated per level.
CPU per request = the server's process tree's user + system CPU time (psutil) over the measured
window / requests answered in it.

Goals at concurrency 32: throughput >= 3x MLflow's and p99 latency <= 0.5x MLflow's; issue 17:
throughput >= 4x MLServer's, p99 <= 0.1x MLServer's, and >= 15% of the empty endpoint's rate.
Serving efficiency = autopilot's rows/s at concurrency 32 / in-process `predict_proba`
rows/s on one 16k-row batch (the physical limit of the model on this machine).

Usage: python bench/serving.py [--seconds 10] [--concurrency 1 8 32] [--warmup 1.5]
                               [--peers mlflow mlserver empty] [--workers N] [--inference-db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import _common as common

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "most_frequent", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 200, "hgb.max_leaf_nodes": 31,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.1}
GOAL_CONCURRENCY = 32
GOAL_THROUGHPUT = 3.0   # autopilot / mlflow requests per second, at GOAL_CONCURRENCY
GOAL_P99 = 0.5          # autopilot / mlflow p99 latency, at GOAL_CONCURRENCY
TEST_ROWS = 2000        # distinct request bodies, cycled
BATCH_ROWS = 16_000     # the in-process batch (the physical limit)
MEASURE_START, MEASURE_END = "#MEASURE_START", "#MEASURE_END"
PEERS = ("mlflow", "mlserver", "empty")
# Issue 17's targets at GOAL_CONCURRENCY, against MLServer and the empty endpoint
GOAL_MLSERVER_THROUGHPUT = 4.0   # autopilot / MLServer requests per second
GOAL_MLSERVER_P99 = 0.1          # autopilot / MLServer p99 latency
GOAL_EMPTY_SHARE = 0.15          # autopilot / empty endpoint requests per second
MLSERVER_VENV = Path(__file__).resolve().parent / ".peers" / "mlserver"
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop<0.20")
MODEL_RUNTIME = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops", "cloudpickle")
MLSERVER_BATCH_SIZE, MLSERVER_BATCH_TIME = 32, 0.01


# ---------------------------------------------------------------------------- load generator (child process)


def _loadgen_main(spec_path: str) -> int:
    """The load generator's process: run the closed loop described by the spec file, print one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    runner: Any = asyncio.run
    loop_name = "asyncio"
    try:  # the cheaper event loop, as uvicorn uses it for both servers
        import uvloop

        runner, loop_name = uvloop.run, "uvloop"
    except ImportError:
        pass
    result = runner(_load(spec))
    result["event_loop"] = loop_name
    print(json.dumps(result), flush=True)
    return 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server wants to close) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.find(b"\r\n", at + 2)
        body = await reader.readexactly(int(lower[at + 17:end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        raise ValueError(f"response without Content-Length or chunked encoding: {head[:200]!r}")
    return status, body, b"\r\nconnection: close" in lower


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, concurrency = spec["host"], int(spec["port"]), int(spec["concurrency"])
    headers = f"POST {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    if spec.get("token"):
        headers += f"Authorization: Bearer {spec['token']}\r\n"
    bodies = [b.encode() for b in json.loads(Path(spec["bodies"]).read_text())]
    requests = [headers.encode() + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies]
    clock = time.perf_counter
    start = clock()
    measure_from = start + float(spec["warmup"])
    measure_to = measure_from + float(spec["seconds"])
    expect = spec.get("expect", "").encode()  # a 200 without it counts as an error ("no_outputs")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counts = {"sent": 0, "reconnects": 0, "connection_errors": 0}
    sample: dict[str, Any] = {}

    async def connection(worker: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        i = worker
        try:
            while True:
                t0 = clock()
                if t0 >= measure_to:
                    return
                request = requests[i % len(requests)]
                i += concurrency
                try:
                    writer.write(request)
                    status, body, close = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    counts["connection_errors"] += 1
                    status, body, close = -1, b"", True
                t1 = clock()
                counts["sent"] += 1
                if status == 200 and expect and expect not in body:
                    status = "no_outputs"  # type: ignore[assignment]
                if measure_from <= t1 < measure_to:
                    latencies.append(t1 - t0)
                    if status != 200:
                        statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200 and "body" not in sample:
                    sample["body"] = body[:300].decode(errors="replace")
                elif status != 200 and "error_body" not in sample:
                    sample.update(error=status, error_body=body[:300].decode(errors="replace"))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    counts["reconnects"] += 1
        finally:
            writer.close()

    async def marks() -> float:
        await asyncio.sleep(max(measure_from - clock(), 0.0))
        cpu0 = time.process_time()
        print(MEASURE_START, flush=True)
        await asyncio.sleep(max(measure_to - clock(), 0.0))
        print(MEASURE_END, flush=True)
        return time.process_time() - cpu0

    marker = asyncio.ensure_future(marks())
    await asyncio.gather(*(connection(w) for w in range(concurrency)))
    cpu = await marker
    seconds = measure_to - measure_from
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000.0 if ordered else None

    return {"concurrency": concurrency, "seconds": seconds, "completed": len(ordered),
            "rps": len(ordered) / seconds, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": ordered[-1] * 1000.0 if ordered else None,
            "mean_ms": sum(ordered) / len(ordered) * 1000.0 if ordered else None,
            "errors": sum(statuses.values()), "error_statuses": statuses, **counts,
            "loadgen_cpu_cores": cpu / seconds, "sample": sample}


# ---------------------------------------------------------------------------- processes and CPU accounting


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its live descendants (MLServer's workers, uvicorn under
    mlflow); psutil is a dependency of autopilot itself (the infra gate's memory meter)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Server:
    """A server process in its own session (so its whole process group can be stopped)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 log_dir: Path) -> None:
        self.name, self.port, self.ready_path = name, port, ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=str(log_dir))

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Seconds until `ready_path` answered 200 (raises with the log's tail if it never does)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server's live process tree (psutil)."""
        return tree_cpu_seconds(self.proc.pid)

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers."""
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            try:  # the leader is gone; make sure no child of it (uvicorn under mlflow) is left
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
        self._log.close()


def post_json(url: str, body: dict[str, Any], token: str | None = None) -> Any:
    """One JSON POST (setup checks only, never under load)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


# ------------------------------------------------------------------ the peers: MLServer and the empty endpoint


def _empty_server_main(port: str) -> int:
    """The empty endpoint's process: uvicorn as `autopilot serve` runs it, an app that answers a fixed JSON."""
    import uvicorn

    answer = b'{"predictions":[0.5]}'
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]}
    reply = {"type": "http.response.body", "body": answer}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send(start)
        await send(reply)

    config = uvicorn.Config(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False,
                            timeout_keep_alive=30, proxy_headers=False, server_header=False, http="httptools",
                            lifespan="off")
    uvicorn.Server(config).run()
    return 0


def mlserver_python() -> Path:
    """The MLServer venv's interpreter, `bench/.peers/mlserver/` (created and filled once, then reused).

    MLServer 1.7.1 conflicts with our environment, so it gets its own venv: mlserver and mlserver-mlflow 1.7.1,
    `uvloop<0.20` (with uvloop >= 0.20 its parallel workers die at start: "There is no current event loop") and
    the model's runtime libraries at the versions of this venv.
    """
    from importlib.metadata import version

    python = MLSERVER_VENV / "bin" / "python"
    marker = MLSERVER_VENV / ".installed"
    pins = [*MLSERVER_PACKAGES, *(f"{name}=={version(name)}" for name in MODEL_RUNTIME)]
    if marker.exists() and marker.read_text().split() == pins:
        return python
    if not python.exists():
        subprocess.run(["python3.11", "-m", "venv", str(MLSERVER_VENV)], check=True)
    print(f"[serving] installing MLServer into {MLSERVER_VENV}: {' '.join(pins)}", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
    marker.write_text("\n".join(pins))
    return python


def mlserver_repository(root: Path, name: str, model_folder: Path, port: int) -> Path:
    """An MLServer model repository serving the MLflow model folder: settings.json and model-settings.json."""
    root.mkdir(parents=True)
    model_dir = root / name
    shutil.copytree(model_folder, model_dir / "model")
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "parallel_workers": os.cpu_count() or 1, "load_models_at_startup": True}))
    # Adaptive batching is a per-model setting in MLServer (ModelSettings.max_batch_size / max_batch_time).
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_mlflow.MLflowRuntime",
        "max_batch_size": MLSERVER_BATCH_SIZE, "max_batch_time": MLSERVER_BATCH_TIME,
        "parameters": {"uri": str(model_dir / "model")}}))
    return root


def v2_datatypes(frame: Any) -> dict[str, str]:
    """The V2 protocol datatype of each column (pandas content type)."""
    out = {}
    for column, dtype in frame.dtypes.items():
        kind = getattr(dtype, "kind", "O")
        out[str(column)] = {"i": "INT64", "u": "INT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")
    return out


def v2_body(rows: list[dict[str, Any]], datatypes: dict[str, str]) -> dict[str, Any]:
    """A V2 inference request with the pandas content type: one input per column."""
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": column, "shape": [len(rows)], "datatype": datatype,
                        "data": [row[column] for row in rows]} for column, datatype in datatypes.items()]}


def mlserver_check(server: Server, name: str, pipeline: Any, frame: Any, records: list[dict[str, Any]],
                   datatypes: dict[str, str], n: int = 200) -> dict[str, Any]:
    """MLServer against the in-process pipeline on the first `n` test rows without nulls (setup only)."""
    import numpy as np

    complete = [i for i, row in enumerate(records[:n]) if not any(v is None for v in row.values())]
    local = pipeline.predict_proba(frame.iloc[complete])[:, 1]
    answer = post_json(f"{server.url}/v2/models/{name}/infer", v2_body([records[i] for i in complete], datatypes))
    output = np.asarray(answer["outputs"][0]["data"], dtype=float).reshape(len(complete), -1)[:, -1]
    return {"rows": len(complete), "mlserver_max_diff_complete_rows": float(np.abs(output - local).max())}


def same_model_check(ours: Server, peer: Server, token: str, pipeline: Any, frame: Any,
                     records: list[dict[str, Any]], n: int = 200) -> dict[str, Any]:
    """Both servers against the in-process pipeline on the same `n` test rows (setup only, not timed).

    On rows without nulls all three must agree. MLflow's pyfunc hands JSON nulls of string
    columns to the pipeline as None, which the pipeline's imputer does not take for missing
    (it looks for NaN) and the encoder then maps None to "unknown" instead of the most frequent
    category, so those rows can get another score there; that is counted, not fatal.
    """
    import numpy as np

    rows = records[:n]
    local = pipeline.predict_proba(frame.head(n))[:, 1]
    mine = np.asarray(post_json(ours.url + "/predict", {"records": rows}, token)["predictions"])
    model = urllib.request.Request(ours.url + "/model", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(model, timeout=30) as answer:
        fast_path = json.loads(answer.read())["serving"]["fast_path"]
    answer = post_json(peer.url + "/invocations", {"dataframe_records": rows})
    theirs = np.asarray([p[1] for p in answer["predictions"]])
    nulls = np.array([any(v is None for v in row.values()) for row in rows])
    peer_diff = np.abs(theirs - local)
    return {"rows": n, "rows_with_nulls": int(nulls.sum()), "autopilot_fast_path": fast_path,
            "autopilot_max_diff": float(np.abs(mine - local).max()),
            "mlflow_max_diff_complete_rows": float(peer_diff[~nulls].max()),
            "mlflow_rows_differing_with_nulls": int((peer_diff[nulls] > 1e-9).sum()),
            "mlflow_max_diff_rows_with_nulls": float(peer_diff[nulls].max()) if nulls.any() else 0.0}


def batch_metrics(server: Server) -> dict[str, float]:
    """autopilot's `autopilot_batch_rows` histogram (sum, count, cumulative buckets) from /metrics."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("autopilot_batch_rows_sum"):
            out["sum"] = float(line.split()[-1])
        elif line.startswith("autopilot_batch_rows_count"):
            out["count"] = float(line.split()[-1])
        elif line.startswith("autopilot_batch_rows_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[f"le_{le}"] = float(line.split()[-1])
    return out


def batch_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Batches, mean rows per batch and the share of batches per size range during the measured window."""
    count = after.get("count", 0.0) - before.get("count", 0.0)
    rows = after.get("sum", 0.0) - before.get("sum", 0.0)
    shares: dict[str, float] = {}
    previous, label_from = 0.0, 1
    for key in [k for k in after if k.startswith("le_")]:
        le = key[3:]
        cumulative = after[key] - before.get(key, 0.0)
        if count and cumulative - previous:
            label = f">{label_from - 1:g}" if le == "+Inf" else (
                f"{label_from}-{float(le):g}" if float(le) > label_from else f"{float(le):g}")
            shares[label] = round((cumulative - previous) / count, 3)
        previous = cumulative
        if le != "+Inf":
            label_from = int(float(le)) + 1
    return {"batches": int(count), "rows": int(rows), "mean_rows": rows / count if count else None,
            "batch_size_shares": shares}


def run_load(server: Server, others: list[Server], path: str, token: str | None, bodies: Path, concurrency: int,
             warmup: float, seconds: float, work: Path, expect: str = "") -> dict[str, Any]:
    """Drive `server` with the load generator; add CPU accounting (and batch sizes for autopilot).

    `others` are the idle servers (their CPU is counted apart); `expect`, a string every 200 answer must contain.
    """
    spec = work / f"spec-{server.name}-{concurrency}.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": server.port, "path": path, "token": token,
                                "bodies": str(bodies), "concurrency": concurrency, "warmup": warmup,
                                "seconds": seconds, "expect": expect}))
    stderr = (work / f"loadgen-{server.name}-{concurrency}.log").open("w")
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--loadgen", str(spec)],
                             stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
                             env=common.clean_env())
    is_autopilot = server.name == "autopilot"
    marks: dict[str, Any] = {}
    lines = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            tag = line.strip()
            if tag in (MEASURE_START, MEASURE_END):
                key = "start" if tag == MEASURE_START else "end"
                marks[key] = {"wall": time.perf_counter(), "proc": common._cpu_times(),
                              "server": server.cpu_seconds(), "other": sum(o.cpu_seconds() for o in others),
                              "batches": batch_metrics(server) if is_autopilot else None}
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        stderr.close()
    if child.returncode != 0 or "start" not in marks or "end" not in marks:
        raise RuntimeError(f"load generator failed ({child.returncode}): "
                           f"{(work / f'loadgen-{server.name}-{concurrency}.log').read_text()[-2000:]}")
    result = common.last_json_line("".join(lines))
    start, end = marks["start"], marks["end"]
    wall = end["wall"] - start["wall"]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (end["proc"][0] - start["proc"][0]) / ticks
    total = (end["proc"][1] - start["proc"][1]) / ticks
    server_cpu = end["server"] - start["server"]
    other_cpu = end["other"] - start["other"]
    loadgen_cpu = result["loadgen_cpu_cores"] * result["seconds"]
    result.update({
        "server": server.name,
        "server_cpu_cores": server_cpu / wall,
        "idle_peers_cpu_cores": other_cpu / wall,
        "server_cpu_ms_per_request": server_cpu / max(result["completed"], 1) * 1000.0,
        # What is left of the machine's busy time once both servers and the load generator are
        # taken out: other processes (the neighbours), plus this parent's few /metrics reads.
        "foreign_cpu_share": round(max(busy - server_cpu - other_cpu - loadgen_cpu, 0.0) / total, 3) if total else None,
        "machine_busy_share": round(busy / total, 3) if total else None,
    })
    if is_autopilot:
        result["batching"] = batch_summary(start["batches"], end["batches"])
    return result


# ---------------------------------------------------------------------------- the model and the in-process floor


def fit_and_register(settings: Any, cfg: Any) -> tuple[Any, Any, Any, dict[str, float], Path]:
    """Fit the HGB pipeline on the full Adult train split and register it as `champion` (as training does)."""
    import mlflow  # noqa: F401 - imported here so that its import time is not counted as logging time
    import pandas as pd

    from autopilot.adapters import registry
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import encode_target, feature_frame
    from autopilot.modeling.training import fit_pipeline
    from autopilot.pipeline.training import signature_for

    seconds: dict[str, float] = {}
    frame = canonicalize(pd.read_csv(common.PROJECT / "data/adult/adult_train.csv.gz"), cfg)
    X, y = feature_frame(frame, cfg), encode_target(frame, cfg)
    with common.stopwatch() as fit:
        pipeline = fit_pipeline(HGB, cfg, X, y, seed=0)
    seconds["fit"] = fit["seconds"]
    with common.stopwatch() as timed:
        store = registry.connect(settings)
        experiment = store.ensure_experiment("serving-bench", settings.mlflow_artifact_root)
        with store.start_run(experiment) as run:
            info = run.log_sklearn_model(pipeline, X.head(5), signature_for(cfg, X, pipeline.predict_proba(X.head(20))),
                                         allow_pickle=False, predict_fn="predict_proba")
        folder = store.download(info.model_uri)
        manifest = registry.sha256_manifest(folder)
        version = store.create_version(cfg.registered_model_name, info.model_uri, run.run_id,
                                       {registry.MANIFEST_TAG: json.dumps(manifest, sort_keys=True),
                                        "autopilot.family": HGB["family"]})
        store.set_alias(cfg.registered_model_name, "champion", int(version.version))
    seconds["log_and_register"] = timed["seconds"]
    return pipeline, X, version, seconds, folder


def test_rows(cfg: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The canonical Adult test features (frame) and the first TEST_ROWS of them as JSON-ready records."""
    import pandas as pd

    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import feature_frame

    frame = feature_frame(canonicalize(pd.read_csv(common.PROJECT / "data/adult/adult_test.csv.gz"), cfg), cfg)
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
               for row in frame.head(TEST_ROWS).to_dict("records")]
    return frame, records


def in_process_floor(pipeline: Any, frame: Any, records: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """predict_proba rows/s in this process: one 16k batch, one row per call, and a few batch sizes."""
    from autopilot.serving.compiled import compile_pipeline
    from autopilot.serving.schema import ServingSchema

    schema = ServingSchema.from_config(cfg)
    compiled = compile_pipeline(pipeline, schema, frame.head(5))
    estimator = pipeline.steps[-1][1]
    big = frame.head(BATCH_ROWS)
    pipeline.predict_proba(big)  # warm
    runs = []
    for _ in range(5):
        with common.stopwatch() as t:
            pipeline.predict_proba(big)
        runs.append(t["seconds"])
    batch_seconds = common.median(runs)

    def per_call(size: int, budget: float = 1.5, via_records: bool = False, via_compiled: bool = False) -> float:
        chunks = [frame.iloc[i:i + size] for i in range(0, min(len(frame), 200 * size), size)]
        groups = [records[i:i + size] for i in range(0, len(records) - size + 1, size)]
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            if via_compiled:
                estimator.predict_proba(compiled.transform(groups[calls % len(groups)]))
            elif via_records:
                pipeline.predict_proba(schema.frame(groups[calls % len(groups)]))
            else:
                pipeline.predict_proba(chunks[calls % len(chunks)])
            calls += 1
        return calls * size / (time.perf_counter() - start)

    by_size = {str(size): per_call(size) for size in (1, 8, 32, 128)}
    return {"batch_rows": len(big), "batch_seconds": batch_seconds, "batch_rows_per_s": len(big) / batch_seconds,
            "single_row_rows_per_s": by_size["1"], "rows_per_s_by_batch_size": by_size,
            # the server's own path for a batch: JSON-ready records -> canonical frame -> predict_proba
            "records_path_rows_per_s": {str(size): per_call(size, via_records=True) for size in (1, 32)},
            # the server's fast path: records -> compiled preprocessing -> the estimator alone
            "compiled_path_rows_per_s": {str(size): per_call(size, via_compiled=True) for size in (1, 32)}}


# ---------------------------------------------------------------------------- main


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for the table, `-` when missing."""
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Set up the model and both servers, run the load at each concurrency, print and save the results."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        return _loadgen_main(argv[1])
    if argv[:1] == ["--empty-server"]:
        return _empty_server_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per server and concurrency")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="connections (closed loop)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for a quiet machine before each timed part (0: off)")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS),
                        help="the servers to run beside autopilot (default: all)")
    parser.add_argument("--workers", type=int, default=None,
                        help="autopilot serve's worker processes (default: deployment.serving.workers, auto)")
    parser.add_argument("--inference-db", default=None,
                        help="autopilot's inference log (SQLAlchemy URL; default: SQLite in the bench home). Every "
                             "answer is committed there before it is sent: on SQLite one fsync per micro-batch")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (server logs) afterwards")
    args = parser.parse_args(argv)
    mlserver_py = mlserver_python() if "mlserver" in args.peers else None

    from autopilot.config import load_config
    from autopilot.settings import Settings

    home = common.temp_dir("serving", cleanup=not args.keep)
    work = home / "bench"
    work.mkdir(parents=True)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    cfg = load_config(common.ADULT_CONFIG)
    print(f"[serving] home {home}; fitting HGB (max_iter {HGB['hgb.max_iter']}) on the full Adult train split",
          flush=True)
    pipeline, X_train, version, setup_seconds, model_folder = fit_and_register(settings, cfg)
    estimator = pipeline.steps[-1][1]
    print(f"[serving] registered {cfg.registered_model_name} v{version.version} (fit {setup_seconds['fit']:.1f} s, "
          f"{getattr(estimator, 'n_iter_', '?')} boosting iterations; log+register "
          f"{setup_seconds['log_and_register']:.1f} s)", flush=True)
    test_frame, records = test_rows(cfg)

    quiet: list[dict[str, Any]] = []
    if args.wait_idle > 0:
        quiet.append(common.wait_for_quiet(args.wait_idle))
    with common.neighbours() as floor_neighbours:
        floor = in_process_floor(pipeline, test_frame, records, cfg)
    floor["foreign_cpu_share"] = floor_neighbours["foreign_cpu_share"]
    print(f"[serving] in-process predict_proba: {floor['batch_rows_per_s']:,.0f} rows/s in one batch of "
          f"{floor['batch_rows']:,}; {floor['single_row_rows_per_s']:,.0f} rows/s one row per call", flush=True)

    config = common.write_config_copy(work / "config", cfg.name, {})
    token = secrets.token_urlsafe(32)
    name = cfg.registered_model_name
    datatypes = v2_datatypes(test_frame)
    bodies = {"autopilot": [{"records": [r]} for r in records], "mlflow": [{"dataframe_records": [r]} for r in records],
              "mlserver": [v2_body([r], datatypes) for r in records], "empty": [{"records": [r]} for r in records]}
    body_files = {}
    for key, items in bodies.items():
        body_files[key] = work / f"bodies-{key}.json"
        body_files[key].write_text(json.dumps([json.dumps(b) for b in items]))
    bin_dir = Path(sys.executable).parent
    autopilot_exe = bin_dir / "autopilot"
    ours_argv = ([str(autopilot_exe)] if autopilot_exe.exists() else [sys.executable, "-m", "autopilot.cli"])
    model_uri = f"models:/{name}/{version.version}"
    servers: dict[str, Server] = {}
    # name -> (path, token, string every 200 answer must hold)
    routes = {"autopilot": ("/predict", token, '"predictions"'), "mlflow": ("/invocations", None, '"predictions"'),
              "mlserver": (f"/v2/models/{name}/infer", None, '"outputs"'), "empty": ("/predict", None, "")}
    runs: list[dict[str, Any]] = []
    same_model: dict[str, Any] = {}
    try:
        port = free_port()
        workers = ["--workers", str(args.workers)] if args.workers else []  # default: the config's `auto`
        log_db = {"AUTOPILOT_INFERENCE_DB": args.inference_db} if args.inference_db else {}
        servers["autopilot"] = Server("autopilot", [*ours_argv, "serve", str(config), "--port", str(port), *workers],
                                      common.clean_env(AUTOPILOT_HOME=str(home), AUTOPILOT_SERVING_TOKEN=token,
                                                       **log_db), port,
                                      "/ready", work)
        # Loaded before the peers start: `mlflow models serve` writes `registered_model_meta` into the
        # version's folder of a local artifact store, which autopilot's SHA-256 manifest then refuses.
        ours_ready = servers["autopilot"].wait_ready()
        if "mlflow" in args.peers:
            port = free_port()
            servers["mlflow"] = Server(
                "mlflow", [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                           "-h", "127.0.0.1", "-p", str(port)],
                common.clean_env(MLFLOW_TRACKING_URI=settings.mlflow_tracking_uri,
                                 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"), port, "/ping", work)
        if mlserver_py is not None:
            port = free_port()
            repository = mlserver_repository(work / "mlserver-models", name, model_folder, port)
            env = common.clean_env()
            env["PATH"] = str(mlserver_py.parent) + os.pathsep + env["PATH"]
            servers["mlserver"] = Server("mlserver", [str(mlserver_py.parent / "mlserver"), "start", str(repository)],
                                         env, port, f"/v2/models/{name}/ready", work)
        if "empty" in args.peers:
            port = free_port()
            servers["empty"] = Server("empty", [sys.executable, str(Path(__file__).resolve()), "--empty-server",
                                                str(port)], common.clean_env(), port, "/", work)
        ready = {key: ours_ready if key == "autopilot" else server.wait_ready() for key, server in servers.items()}
        print("[serving] ready: " + ", ".join(f"{key} {seconds:.1f} s on {servers[key].url}"
                                              for key, seconds in ready.items()) + f" ({model_uri})", flush=True)

        ours = servers["autopilot"]
        if "mlflow" in servers:
            same_model = same_model_check(ours, servers["mlflow"], token, pipeline, test_frame, records)
            print(f"[serving] same model: max |p_autopilot - p_in_process| {same_model['autopilot_max_diff']:.1e}, "
                  f"max |p_mlflow - p_in_process| {same_model['mlflow_max_diff_complete_rows']:.1e} on rows without "
                  f"nulls; mlflow differs on {same_model['mlflow_rows_differing_with_nulls']} of "
                  f"{same_model['rows_with_nulls']} rows with nulls "
                  f"(max {same_model['mlflow_max_diff_rows_with_nulls']:.3f}); autopilot fast path: "
                  f"{same_model['autopilot_fast_path']['note']}",
                  flush=True)
            if same_model["autopilot_max_diff"] > 1e-9 or same_model["mlflow_max_diff_complete_rows"] > 1e-9:
                raise RuntimeError(f"the servers do not serve the fitted model: {same_model}")
        if "mlserver" in servers:
            same_model["mlserver"] = mlserver_check(servers["mlserver"], name, pipeline, test_frame, records,
                                                    datatypes)
            print(f"[serving] same model: max |p_mlserver - p_in_process| "
                  f"{same_model['mlserver']['mlserver_max_diff_complete_rows']:.1e} on "
                  f"{same_model['mlserver']['rows']} rows without nulls", flush=True)
            if same_model["mlserver"]["mlserver_max_diff_complete_rows"] > 1e-9:
                raise RuntimeError(f"MLServer does not serve the fitted model: {same_model['mlserver']}")

        names = list(servers)
        for index, concurrency in enumerate(args.concurrency):
            order = names[index % len(names):] + names[:index % len(names)]
            for key in order:
                server = servers[key]
                path, tok, expect = routes[key]
                if args.wait_idle > 0:
                    quiet.append(common.wait_for_quiet(args.wait_idle))
                others = [s for k, s in servers.items() if k != key]
                result = run_load(server, others, path, tok, body_files[key], concurrency, args.warmup, args.seconds,
                                  work, expect)
                runs.append(result)
                batching = result.get("batching")
                extra = (f", mean batch {batching['mean_rows']:.1f} rows" if batching and batching["mean_rows"]
                         else "")
                print(f"[serving] c={concurrency:<3} {key:<9} {result['rps']:8.1f} req/s  p50 "
                      f"{fmt(result['p50_ms'])} ms  p99 {fmt(result['p99_ms'])} ms  errors {result['errors']}  "
                      f"server {result['server_cpu_cores']:.2f} cores "
                      f"({result['server_cpu_ms_per_request']:.3f} ms/request), loadgen "
                      f"{result['loadgen_cpu_cores']:.2f}, foreign {result['foreign_cpu_share']}{extra}", flush=True)
        dead = [s.name for s in servers.values() if s.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"server(s) died during the runs: {dead}")
    except BaseException:
        for server in servers.values():
            print(f"\n--- {server.name} log tail ({server.log_path}) ---\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        for server in servers.values():
            server.stop()

    return report(args, runs, floor, version, setup_seconds, quiet, home, same_model)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], floor: dict[str, Any], version: Any,
           setup_seconds: dict[str, float], quiet: list[dict[str, Any]], home: Path,
           same_model: dict[str, Any]) -> int:
    """Print the tables, write `bench/results/serving.json`."""
    by = {(r["server"], r["concurrency"]): r for r in runs}
    names = ["autopilot", *(p for p in PEERS if p in args.peers)]
    common.print_table(
        f"Single-row requests, closed loop, {args.seconds:g} s measured after {args.warmup:g} s warm-up",
        ["concurrency", "server", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors", "server CPU (cores)",
         "server CPU ms/request", "loadgen CPU (cores)", "foreign CPU", "mean batch rows"],
        [[r["concurrency"], r["server"], fmt(r["rps"]), fmt(r["p50_ms"], 2), fmt(r["p95_ms"], 2), fmt(r["p99_ms"], 2),
          fmt(r["max_ms"]), r["errors"] + r["connection_errors"], f"{r['server_cpu_cores']:.2f}",
          f"{r['server_cpu_ms_per_request']:.3f}", f"{r['loadgen_cpu_cores']:.2f}",
          f"{r['foreign_cpu_share']:.0%}" if r["foreign_cpu_share"] is not None else "-",
          fmt((r.get("batching") or {}).get("mean_rows"))]
         for c in args.concurrency for r in (by[(n, c)] for n in names)])

    goal_c = GOAL_CONCURRENCY if GOAL_CONCURRENCY in args.concurrency else max(args.concurrency)

    def ratio_of(peer: str, c: int, key: str) -> float | None:
        ours, theirs = by[("autopilot", c)], by.get((peer, c))
        if theirs is None or not ours[key] or not theirs[key]:
            return None
        return ours[key] / theirs[key]

    ratios = {c: {f"{peer}_{what}": ratio_of(peer, c, key) for peer in names[1:]
                  for what, key in (("throughput", "rps"), ("p99", "p99_ms"))} for c in args.concurrency}
    errors = sum(r["errors"] + r["connection_errors"] for r in runs)
    verdicts: dict[str, bool] = {}
    rows: list[list[Any]] = []

    def target(c: int, label: str, value: float | None, key: str, goal: float, at_least: bool) -> None:
        at_goal = c == goal_c
        text = f"{fmt(value, 3)}x"
        if not at_goal:
            rows.append([c, label, text, "-", "-"])
            return
        met = value is not None and (value >= goal if at_least else value <= goal)
        verdicts[key] = met
        rows.append([c, label, text, f"{'>=' if at_least else '<='} {goal:g}x", "PASS" if met else "MISS"])

    for c in args.concurrency:
        if "mlflow" in args.peers:
            target(c, "throughput autopilot / mlflow", ratios[c]["mlflow_throughput"], "mlflow_throughput",
                   GOAL_THROUGHPUT, True)
            target(c, "p99 latency autopilot / mlflow", ratios[c]["mlflow_p99"], "mlflow_p99", GOAL_P99, False)
        if "mlserver" in args.peers:
            target(c, "throughput autopilot / MLServer (issue 17)", ratios[c]["mlserver_throughput"],
                   "mlserver_throughput", GOAL_MLSERVER_THROUGHPUT, True)
            target(c, "p99 latency autopilot / MLServer (issue 17)", ratios[c]["mlserver_p99"], "mlserver_p99",
                   GOAL_MLSERVER_P99, False)
        if "empty" in args.peers:
            target(c, "throughput autopilot / empty endpoint (issue 17)", ratios[c]["empty_throughput"], "empty_share",
                   GOAL_EMPTY_SHARE, True)
    rows.append(["all", "non-200 answers, answers without outputs, connection errors", errors, "0",
                 "PASS" if errors == 0 else "MISS"])
    common.print_table(f"autopilot against its peers (same model version); targets at concurrency {goal_c}",
                       ["concurrency", "ratio", "value", "goal", "verdict"], rows)

    if "empty" in args.peers:
        common.print_table("The ceiling: an empty HTTP endpoint (uvicorn, httptools, uvloop, fixed JSON answer)",
                           ["concurrency", "empty req/s", *[f"{n} share" for n in names if n != "empty"]],
                           [[c, fmt(by[("empty", c)]["rps"]),
                             *[f"{by[(n, c)]['rps'] / by[('empty', c)]['rps']:.1%}" if by[("empty", c)]["rps"] else "-"
                               for n in names if n != "empty"]] for c in args.concurrency])

    served = by[("autopilot", goal_c)]["rps"]
    efficiency = served / floor["batch_rows_per_s"]
    common.print_table("Serving efficiency (rows/s)", ["measure", "rows/s"], [
        [f"autopilot serve, concurrency {goal_c}, single-row requests", fmt(served, 0)],
        [f"in-process predict_proba, one batch of {floor['batch_rows']:,} rows (physical limit)",
         fmt(floor["batch_rows_per_s"], 0)],
        ["efficiency = served / physical limit", f"{efficiency:.2%}"],
        ["in-process predict_proba, one row per call (context)", fmt(floor["single_row_rows_per_s"], 0)],
        *[[f"in-process predict_proba, batches of {size}", fmt(v, 0)]
          for size, v in floor["rows_per_s_by_batch_size"].items() if size != "1"],
        *[[f"in-process records -> frame -> pipeline, batches of {size} (without the fast path)", fmt(v, 0)]
          for size, v in floor["records_path_rows_per_s"].items()],
        *[[f"in-process records -> compiled -> estimator, batches of {size} (the server's fast path)", fmt(v, 0)]
          for size, v in floor["compiled_path_rows_per_s"].items()],
    ])
    shares = [r["foreign_cpu_share"] for r in runs] + [floor.get("foreign_cpu_share")]
    contended = common.warn_if_contended(shares)
    met = all(verdicts.values()) and errors == 0
    ratio = ratios[goal_c].get("mlflow_throughput") or ratios[goal_c].get("mlserver_throughput") or 0.0
    peer_label = "mlflow models serve" if "mlflow" in args.peers else "MLServer"
    headline = ", ".join(f"{n} {by[(n, goal_c)]['rps']:,.0f} req/s p99 {fmt(by[(n, goal_c)]['p99_ms'])} ms"
                         for n in names)
    path = common.write_result("serving", {
        "ratio": ratio,
        "ratio_label": f"autopilot / {peer_label} requests per second, single-row, concurrency {goal_c}",
        "goal": (f"at concurrency {goal_c}: >= {GOAL_THROUGHPUT:g}x mlflow's throughput and <= {GOAL_P99:g}x its p99; "
                 f">= {GOAL_MLSERVER_THROUGHPUT:g}x MLServer's throughput and <= {GOAL_MLSERVER_P99:g}x its p99; "
                 f">= {GOAL_EMPTY_SHARE:.0%} of the empty endpoint's rate; 0 errors"),
        "goal_met": met,
        "headline": f"c={goal_c}: {headline}; efficiency {efficiency:.1%}",
        "goals": {"concurrency": goal_c, "met": verdicts, "errors": errors,
                  "mlflow_throughput_min": GOAL_THROUGHPUT, "mlflow_p99_max": GOAL_P99,
                  "mlserver_throughput_min": GOAL_MLSERVER_THROUGHPUT, "mlserver_p99_max": GOAL_MLSERVER_P99,
                  "empty_share_min": GOAL_EMPTY_SHARE},
        "ratios": {str(c): v for c, v in ratios.items()},
        "efficiency": {"served_rows_per_s": served, "physical_limit_rows_per_s": floor["batch_rows_per_s"],
                       "ratio": efficiency},
        "in_process": floor,
        "runs": runs,
        "model": {"params": HGB, "version": int(version.version), "setup_seconds": setup_seconds},
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "concurrency": args.concurrency,
                     "peers": args.peers,
                     "test_rows_cycled": TEST_ROWS},
        "same_model_check": same_model,
        "quiet_at_start": quiet,
        "contended": contended,
    })
    print(f"\nwrote {path}")
    if args.keep:
        print(f"kept the temporary home with server and load generator logs: {home}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
