"""Drift check cost: `autopilot.monitoring.drift.check_drift` against Evidently's `DataDriftPreset`.

Reference: the Adult training file (32,561 rows, 14 feature columns, canonical). Windows of
`--sizes` rows (default 10k, 100k, 1M) are Adult training rows resampled with a mild shift
(Husband rows drawn at 0.85x weight, age +1 year, hours_per_week x1.03), seeded. For each size,
three measurements, each in a fresh interpreter (data built and libraries imported first, not
timed):

- **ours:** `check_drift(profile, window, None, cfg)` on all 14 columns. The profile is built
  once per champion (`build_reference`), outside the timing; its build time is printed apart.
- **Evidently:** a plain `Report([DataDriftPreset()]).run(current, reference)` with an explicit
  `DataDefinition`, on the same reference and window, `Dataset.from_pandas` and `.dict()`
  included (what it takes to get the per-column values out).
- **floor (physical limit):** one vectorized pass that any exact check must make over the
  window: `np.sort` of each numeric column and one hash count (`value_counts`) of each
  categorical column. Nothing else.

Time: median of `--repeats` runs inside the child, after one untimed warm-up call on 1,000 rows
(lazy imports and first-call set-up); Evidently runs once at >= 500k rows (~72 s each).
Memory: peak RSS growth during the timed call, from `/proc/self/status` (VmHWM reset through
`/proc/self/clear_refs` right before the call; growth = VmHWM - VmRSS before), so it counts
numpy/pandas buffers as the OS sees them, not just Python objects (tracemalloc would miss
allocations that bypass it and slow the run). The window's own size is printed for scale.
The children also return the per-column values, so the script checks that ours equal
Evidently's (same work) and prints the largest difference.

RATIO = ours / Evidently wall time at the largest size run; goal <= 0.5. Also printed: the
memory ratio, ours / floor, and time per row at each size (linear cost = a flat time per row).

    python bench/drift.py [--sizes 10000 100000 1000000] [--repeats 3] [--wait-idle 120]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import _common as common

NAME = "drift"
GOAL = 0.5
METHODS = ("ours", "evidently", "floor")
EVIDENTLY_SINGLE_RUN_ROWS = 500_000  # Evidently takes ~72 s at 1M rows: one run is enough there


# ---------------------------------------------------------------------------- the child


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS, so the next call's peak is not hidden in reused free memory."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the growth is then a lower bound


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def make_data(rows: int, seed: int) -> tuple[Any, Any, Any]:
    """The demo config, the canonical Adult training features (reference) and a mildly shifted window."""
    import numpy as np
    import pandas as pd

    from autopilot.config import load_config
    from autopilot.data.sources import canonicalize

    cfg = load_config(common.ADULT_CONFIG)
    raw = pd.read_csv(common.PROJECT / "data/adult/adult_train.csv.gz")
    reference = canonicalize(raw, cfg, require_target=False)
    rng = np.random.default_rng(seed)
    weights = np.where(reference["relationship"] == "Husband", 0.85, 1.0)
    picked = rng.choice(len(reference), size=rows, replace=True, p=weights / weights.sum())
    window = reference.iloc[picked].reset_index(drop=True)
    window["age"] = window["age"] + 1.0
    window["hours_per_week"] = window["hours_per_week"] * 1.03
    return cfg, reference, window


def child(method: str, rows: int, repeats: int, seed: int) -> dict[str, Any]:
    """Run one method `repeats` times on one window size; return times, peak memory and values."""
    import numpy as np

    cfg, reference, window = make_data(rows, seed)
    out: dict[str, Any] = {"method": method, "rows": rows,
                           "window_mb": float(window.memory_usage(deep=True).sum()) / 2**20}
    if method == "ours":
        from autopilot.monitoring.drift import build_reference, check_drift

        start = time.perf_counter()
        profile = build_reference(reference, None, cfg, None)
        out["build_seconds"] = time.perf_counter() - start

        def run() -> dict[str, float]:
            result = check_drift(profile, window, None, cfg)
            out["severity"] = result.severity
            return {c.column: c.effect for c in result.columns}
    elif method == "evidently":
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset
        out["import_seconds"] = time.perf_counter() - start
        definition = DataDefinition(numerical_columns=cfg.numeric_features,
                                    categorical_columns=cfg.categorical_features)

        def run() -> dict[str, float]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(window, data_definition=definition),
                                                           Dataset.from_pandas(reference, data_definition=definition))
                metrics = snapshot.dict()["metrics"]
            return {m["config"]["column"]: float(m["value"]) for m in metrics if "column" in m["config"]}
    else:
        numeric, categorical = cfg.numeric_features, cfg.categorical_features

        def run() -> dict[str, float]:
            for name in numeric:
                np.sort(window[name].to_numpy(dtype=np.float64))
            for name in categorical:
                window[name].value_counts(dropna=True, sort=False)
            return {}

    # An untimed warm-up on a small slice pays lazy imports and first-call set-up (scipy in ours,
    # Evidently's metric machinery), which would otherwise land in the first timed run.
    full_window = window
    window = full_window.iloc[:1000].reset_index(drop=True)
    run()
    window = full_window
    if method == "evidently" and rows >= EVIDENTLY_SINGLE_RUN_ROWS:
        repeats = 1
    seconds: list[float] = []
    peaks: list[float] = []
    values: dict[str, float] = {}
    out["rss_before_mb"] = _status_kb("VmRSS") / 1024
    for _ in range(repeats):
        gc.collect()
        _trim_heap()
        before = _status_kb("VmRSS")
        reset = _reset_peak()
        start = time.perf_counter()
        values = run()
        seconds.append(time.perf_counter() - start)
        peaks.append((_status_kb("VmHWM") - before) / 1024 if reset else float("nan"))
    out.update(seconds=seconds, median_seconds=common.median(seconds), peak_extra_mb=max(peaks),
               peak_rss_mb=_status_kb("VmHWM") / 1024, values=values, repeats=repeats)
    return out


# ---------------------------------------------------------------------------- the parent


def measure(method: str, rows: int, repeats: int, seed: int, wait_idle: float) -> dict[str, Any]:
    """One child run, after waiting for a quiet machine; records how busy the machine was meanwhile."""
    quiet = common.wait_for_quiet(wait_idle) if wait_idle > 0 else {"quiet": None}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--rows", str(rows),
               "--repeats", str(repeats), "--seed", str(seed)]
    with common.neighbours() as others:
        done = subprocess.run(command, cwd=str(common.PROJECT), env=common.clean_env(), capture_output=True,
                              text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} at {rows} rows failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = common.last_json_line(done.stdout)
    result.update(quiet_at_start=quiet, foreign_cpu_share=others["foreign_cpu_share"])
    return result


def _fmt_rows(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write `bench/results/drift.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="window rows (default 10000 100000 1000000; Evidently needs ~72 s and 1.2 GB at 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per child, median (Evidently: 1 at >= 500k)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the window resampling")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for other work to leave the cores before each child (0: no wait)")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.rows, args.repeats, args.seed)))
        return 0

    started = time.perf_counter()
    sizes = sorted(set(args.sizes))
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    for rows in sizes:
        runs[rows] = {}
        for method in METHODS:
            print(f"[drift] {method} on {rows:,} rows ...", flush=True)
            runs[rows][method] = measure(method, rows, args.repeats, args.seed, args.wait_idle)

    table = []
    summary: dict[int, dict[str, Any]] = {}
    for rows in sizes:
        ours, theirs, floor = (runs[rows][m] for m in METHODS)
        diff = max(abs(ours["values"][c] - v) for c, v in theirs["values"].items())
        time_ratio = ours["median_seconds"] / theirs["median_seconds"]
        memory_ratio = ours["peak_extra_mb"] / theirs["peak_extra_mb"] if theirs["peak_extra_mb"] > 0 else float("nan")
        summary[rows] = {"ours_seconds": ours["median_seconds"], "evidently_seconds": theirs["median_seconds"],
                         "floor_seconds": floor["median_seconds"], "ours_peak_extra_mb": ours["peak_extra_mb"],
                         "evidently_peak_extra_mb": theirs["peak_extra_mb"],
                         "floor_peak_extra_mb": floor["peak_extra_mb"], "window_mb": ours["window_mb"],
                         "time_ratio": time_ratio, "memory_ratio": memory_ratio,
                         "ours_over_floor": ours["median_seconds"] / floor["median_seconds"],
                         "max_abs_diff_vs_evidently": diff, "build_seconds": ours["build_seconds"],
                         "severity": ours.get("severity")}
        table.append([_fmt_rows(rows), f"{ours['median_seconds']:.3f} s", f"{ours['peak_extra_mb']:.1f} MB",
                      f"{theirs['median_seconds']:.2f} s", f"{theirs['peak_extra_mb']:.1f} MB",
                      f"{floor['median_seconds']:.3f} s", f"{time_ratio:.3f}x", f"{memory_ratio:.3f}x",
                      f"{summary[rows]['ours_over_floor']:.1f}x", f"{ours['window_mb']:.0f} MB", f"{diff:.1e}"])
    common.print_table(
        f"Drift check of 14 Adult columns against a 32,561-row reference (median of {args.repeats}; "
        "memory = peak RSS growth during the call)",
        ["window", "ours", "ours mem", "Evidently", "Evidently mem", "floor", "time ours/Ev", "mem ours/Ev",
         "ours/floor", "window size", "max |diff|"], table)
    per_row = [[_fmt_rows(rows)] + [f"{runs[rows][m]['median_seconds'] / rows * 1e6:.3f}" for m in METHODS]
               for rows in sizes]
    common.print_table("Time per window row (microseconds; flat = linear cost)", ["window", *METHODS], per_row)
    growth: dict[str, float] = {}
    if 100_000 in runs and 1_000_000 in runs:
        for m in METHODS:
            growth[m] = (runs[1_000_000][m]["median_seconds"] / 1e6) / (runs[100_000][m]["median_seconds"] / 1e5)
        print("time per row at 1M / at 100k: " + ", ".join(f"{m} {v:.2f}" for m, v in growth.items())
              + "  (1.0 = linear)")
    build = runs[sizes[0]]["ours"]["build_seconds"]
    print(f"reference profile build (once per champion, not in the timings): {build:.3f} s")
    print(f"Evidently import (not in the timings): {runs[sizes[0]]['evidently']['import_seconds']:.1f} s")
    shares = [runs[r][m]["foreign_cpu_share"] for r in sizes for m in METHODS]
    print(f"other processes used up to {max((s for s in shares if s is not None), default=0):.0%} of the CPU "
          "during the children")
    common.warn_if_contended(shares)
    largest = sizes[-1]
    ratio = summary[largest]["time_ratio"]
    print(f"RATIO ours / Evidently wall time at {_fmt_rows(largest)} rows: {ratio:.3f}x   goal <= {GOAL}x: "
          f"{common.verdict(ratio <= GOAL)}")
    print(f"Distance from the floor: ours {summary[largest]['ours_over_floor']:.1f}x the one-pass floor "
          f"({summary[largest]['ours_seconds']:.3f} s vs {summary[largest]['floor_seconds']:.3f} s)")
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": (f"check_drift / Evidently DataDriftPreset wall time, {_fmt_rows(largest)}-row window, "
                        "14 columns"),
        "goal": f"<= {GOAL}",
        "goal_met": ratio <= GOAL,
        "headline": (f"{_fmt_rows(largest)} rows: {summary[largest]['ours_seconds']:.2f} s vs "
                     f"{summary[largest]['evidently_seconds']:.1f} s, {summary[largest]['ours_peak_extra_mb']:.0f} "
                     f"vs {summary[largest]['evidently_peak_extra_mb']:.0f} MB"),
        "summary": {str(k): v for k, v in summary.items()},
        "per_row_growth_1m_over_100k": growth,
        "runs": {str(rows): {m: {k: v for k, v in r.items() if k != "values"} for m, r in by.items()}
                 for rows, by in runs.items()},
        "memory_measure": "peak RSS growth during the call: VmHWM (reset via /proc/self/clear_refs) - VmRSS before",
        "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
