"""Measure what serving a model costs: size, load time, memory, latency and throughput.

The numbers are taken on this machine, in this process, on the model loaded as a pyfunc model
through `autopilot.adapters.registry.model_loading` (the one door every load goes through, the serving container's
included); they are stored with the model version and feed `autopilot.deploy.selection`.

Core limits are applied with `threadpoolctl` (BLAS and OpenMP pools, which is where
scikit-learn's native code runs threads). The Python-level work of a prediction (pandas
conversion, the pyfunc wrapper, the ColumnTransformer's dispatch) is single-threaded
whatever the limit, so single-row throughput barely changes with cores; large batches of
models with threaded native code (e.g. HistGradientBoosting) are where a second core shows.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from autopilot.adapters.registry.model_loading import VerifiedFiles


WORKER_MEMORY_HEADROOM = 1.25  # a worker's RSS grows past the profiled peak with traffic (batches, caches)
OS_RESERVED_MB = 512.0  # left to the operating system and the supervisor


def workers_that_fit(cores: int, available_mb: float, per_worker_mb: float) -> int:
    """One worker per core, as many as `available_mb` holds at `per_worker_mb` each; at least one."""
    return max(1, min(cores, int(available_mb // max(per_worker_mb, 1.0))))


@dataclass
class Profile:
    """Serving cost of one model version, as measured by `profile_model`.

    Attributes:
        artifact_bytes: total size of the files in the model directory.
        load_seconds: wall time of loading the verified files (`model_loading.load_pyfunc`).
        peak_rss_mb: the profiling process's peak resident memory (MiB) after loading the
            model and predicting at every batch size: a serving process's footprint
            (interpreter, libraries, model, largest batch).
        latency_ms: single-row prediction latency percentiles, keys "p50", "p95", "p99".
        throughput_rps: rows per second, `{str(cores): {str(batch_size): rows_per_second}}`.
        cores_measured: the core limits the throughput was measured at, ascending.
    """

    artifact_bytes: int
    load_seconds: float
    peak_rss_mb: float
    latency_ms: dict[str, float]
    throughput_rps: dict[str, dict[str, float]]
    cores_measured: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored with the model version)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """The profile `as_dict` produced."""
        return cls(
            artifact_bytes=int(data["artifact_bytes"]),
            load_seconds=float(data["load_seconds"]),
            peak_rss_mb=float(data["peak_rss_mb"]),
            latency_ms={str(k): float(v) for k, v in data["latency_ms"].items()},
            throughput_rps={str(c): {str(b): float(r) for b, r in per.items()}
                            for c, per in data["throughput_rps"].items()},
            cores_measured=[int(c) for c in data["cores_measured"]],
        )

    def workers_for(self, cores: int, memory_mb: float, headroom: float = WORKER_MEMORY_HEADROOM) -> int:
        """Serving worker processes for a host with `cores` usable cores and `memory_mb` MiB free.

        One per core (a worker is one Python process: one core of HTTP and validation work), as
        many as fit at the profiled footprint times `headroom`; at least one. A small host (one
        core, or memory for one footprint) gets the single-process endpoint.
        """
        return workers_that_fit(cores, memory_mb - OS_RESERVED_MB, self.peak_rss_mb * headroom)

    def throughput(self, cores: int, batch_size: int = 1) -> float:
        """Measured rows per second at exactly `cores` cores and `batch_size` rows per call.

        Raises:
            KeyError: if that combination was not measured.
        """
        return self.throughput_rps[str(cores)][str(batch_size)]


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (VmHWM; ru_maxrss where /proc is absent)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


def artifact_size(model_dir: Path) -> int:
    """Sum of the sizes of every file under `model_dir`."""
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())


def profile_model(files: VerifiedFiles, X_sample: pd.DataFrame, batch_sizes: Sequence[int] = (1, 8, 64, 256, 1024),
                  cores: Sequence[int] = (1, 2), single_row_calls: int = 200, seed: int = 0,
                  repeats: int = 3) -> Profile:
    """Load a verified model as a pyfunc model (through `model_loading`) and measure its serving cost.

    Time is bounded: one warm-up call, `single_row_calls` single-row predictions (at the
    smallest core limit), and `repeats` timed calls per (core limit, batch size). Batches are
    filled by sampling rows of `X_sample` with replacement, so a small sample serves any size.

    Args:
        files: a verified MLflow model directory (`model_loading.open_version` / `verify_folder`).
        X_sample: feature rows in the model's input schema.
        batch_sizes: rows per call for the throughput measurements.
        cores: thread limits to measure at (applied with `threadpoolctl`).
        single_row_calls: single-row predictions timed for the latency percentiles.
        seed: row sampling.
        repeats: timed calls per throughput measurement (the fastest is kept: the others
            carry scheduler noise, not model cost).

    Raises:
        ValueError: on an empty sample, no batch sizes or core limits, or non-positive counts.
    """
    from autopilot.adapters.registry.model_loading import load_pyfunc

    if len(X_sample) == 0:
        raise ValueError("X_sample is empty: nothing to predict on")
    if not batch_sizes or not cores or min(batch_sizes) < 1 or min(cores) < 1:
        raise ValueError("batch_sizes and cores must be non-empty and positive")
    if single_row_calls < 1 or repeats < 1:
        raise ValueError("single_row_calls and repeats must be at least 1")
    rng = np.random.default_rng(seed)
    core_list = sorted(set(int(c) for c in cores))

    start = time.perf_counter()
    model = load_pyfunc(files)
    load_seconds = time.perf_counter() - start
    model.predict(X_sample.iloc[:1])  # warm-up: first-call imports and caches are not latency

    rows = [X_sample.iloc[[int(i)]] for i in rng.integers(0, len(X_sample), size=single_row_calls)]
    timings = np.empty(single_row_calls)
    with threadpool_limits(limits=core_list[0]):
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            model.predict(row)
            timings[i] = time.perf_counter() - t0
    latency = {f"p{q}": float(np.percentile(timings, q) * 1000.0) for q in (50, 95, 99)}

    batches = {int(b): X_sample.iloc[rng.integers(0, len(X_sample), size=int(b))] for b in sorted(set(batch_sizes))}
    throughput = {str(n): _throughput(model, batches, n, repeats) for n in core_list}
    return Profile(artifact_bytes=artifact_size(files.folder), load_seconds=load_seconds,
                   peak_rss_mb=peak_rss_mb(), latency_ms=latency, throughput_rps=throughput,
                   cores_measured=core_list)


def _throughput(model: Any, batches: dict[int, pd.DataFrame], cores: int, repeats: int) -> dict[str, float]:
    """Rows per second at each batch size under a limit of `cores` threads (the fastest of `repeats` calls)."""
    per: dict[str, float] = {}
    with threadpool_limits(limits=cores):
        model.predict(batches[min(batches)])  # warm-up: a new limit may start a new thread pool
        for size, batch in batches.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.predict(batch)
                best = min(best, time.perf_counter() - t0)
            per[str(size)] = size / max(best, 1e-9)
    return per
