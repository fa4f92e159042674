"""Multivariate drift check cost: `check_multivariate` against one pass of the per-column checks.

Reference: the Adult training file (32,561 rows, 14 feature columns, canonical), summarized once
by `build_reference` (the per-column profile and the PCA reconstruction check, fitted together;
the build time is printed apart, it is paid once per champion). Windows of `--sizes` rows
(default 2,000 and 20,000) are rows of the Adult *test* file resampled with a seed, with
`relationship` shuffled within the window (its ties to marital status and sex broken: the
multivariate check finds it, the per-column checks cannot; both verdicts are printed). For each size, in one interpreter
after an untimed warm-up on 1,000 rows:

- **per-column:** `check_drift(profile, window, None, cfg)`: the 14 per-column checks (tests
  below the large-sample threshold, effect sizes above), the weighted severity.
- **multivariate:** `check_multivariate(profile.multivariate, window, cfg)`: encode the window
  (a float view per numeric column, a hash lookup per categorical one), standardize, project on
  the components, the mean error against the bounds.
- **floor (physical limit):** the one matrix product no reconstruction check can skip: the
  already-encoded window times the components (`X @ C.T`), nothing else.

Time: median of `--repeats` calls. RATIO = multivariate / per-column wall time at the largest
size; goal <= 2. Also printed: multivariate / floor (how far from the physical limit) and the
encoding's share of the multivariate time.

    python bench/multivariate.py [--sizes 2000 20000] [--repeats 15] [--wait-idle 120]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import _common as common

NAME = "multivariate"
GOAL = 2.0
METHODS = ("per-column", "multivariate", "floor")


def make_data(rows: int, seed: int) -> tuple[Any, Any, Any]:
    """The demo config, the canonical Adult training features (reference) and a window of test rows."""
    import numpy as np
    import pandas as pd

    from autopilot.config import load_config
    from autopilot.data.sources import canonicalize

    cfg = load_config(common.ADULT_CONFIG)

    def read(name: str) -> pd.DataFrame:
        return canonicalize(pd.read_csv(common.PROJECT / "data/adult" / name), cfg, require_target=False)

    reference, held_out = read("adult_train.csv.gz"), read("adult_test.csv.gz")
    rng = np.random.default_rng(seed)
    window = held_out.iloc[rng.choice(len(held_out), size=rows, replace=True)].reset_index(drop=True)
    window["relationship"] = rng.permutation(window["relationship"].to_numpy())
    return cfg, reference, window


def timed(run: Any, repeats: int) -> float:
    """Median wall seconds of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return common.median(seconds)


def measure(rows: int, repeats: int, seed: int, wait_idle: float) -> dict[str, Any]:
    """Time the three methods on one window size; return times and both checks' verdicts."""
    from threadpoolctl import threadpool_limits

    from autopilot.monitoring.drift import build_reference, check_drift, check_multivariate
    from autopilot.monitoring.drift.multivariate import encode

    cfg, reference, window = make_data(rows, seed)
    start = time.perf_counter()
    profile = build_reference(reference, None, cfg, None)
    build = time.perf_counter() - start
    fitted = profile.multivariate
    assert fitted is not None, "the multivariate check is disabled in the demo config"
    encoded = encode(fitted, window)
    runs = {"per-column": lambda: check_drift(profile, window, None, cfg),
            "multivariate": lambda: check_multivariate(fitted, window, cfg),
            "floor": lambda: encoded @ fitted.components.T,
            "encode": lambda: encode(fitted, window)}
    quiet = common.wait_for_quiet(wait_idle) if wait_idle > 0 else {"quiet": None}
    out: dict[str, Any] = {"rows": rows, "build_seconds": build, "quiet_at_start": quiet}
    # One native thread, as the monitoring task runs (`monitor_window`).
    with threadpool_limits(limits=1), common.neighbours() as others:
        small = window.iloc[:1000].reset_index(drop=True)
        check_drift(profile, small, None, cfg)  # warm-up: lazy imports (scipy) and first-call set-up
        check_multivariate(fitted, small, cfg)
        for name, run in runs.items():
            out[f"{name}_seconds"] = timed(run, repeats)
    out["foreign_cpu_share"] = others["foreign_cpu_share"]
    per_column = check_drift(profile, window, None, cfg)
    found = check_multivariate(fitted, window, cfg)
    out.update(per_column_severity=per_column.severity, per_column_drifted=per_column.drifted_columns,
               multivariate_drifted=found.drifted, multivariate_reason=found.reason,
               components=int(fitted.components.shape[0]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write `bench/results/multivariate.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000], help="window rows")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per method, median")
    parser.add_argument("--seed", type=int, default=0, help="seeds the window resampling")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for other work to leave the cores before each size (0: no wait)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes = sorted(set(args.sizes))
    runs = {}
    for rows in sizes:
        print(f"[multivariate] {rows:,} rows ...", flush=True)
        runs[rows] = measure(rows, args.repeats, args.seed, args.wait_idle)
    table = []
    for rows in sizes:
        r = runs[rows]
        r["ratio"] = r["multivariate_seconds"] / r["per-column_seconds"]
        r["over_floor"] = r["multivariate_seconds"] / r["floor_seconds"]
        r["encode_share"] = r["encode_seconds"] / r["multivariate_seconds"]
        table.append([f"{rows:,}", f"{r['per-column_seconds'] * 1e3:.1f} ms",
                      f"{r['multivariate_seconds'] * 1e3:.1f} ms",
                      f"{r['floor_seconds'] * 1e3:.2f} ms", f"{r['ratio']:.2f}x", f"{r['over_floor']:.0f}x",
                      f"{r['encode_share']:.0%}", r["per_column_severity"],
                      "drifted" if r["multivariate_drifted"] else "no drift"])
    common.print_table(
        f"Per window, 14 Adult columns, relationship shuffled in the window (median of {args.repeats}; one thread)",
        ["window", "per-column", "multivariate", "floor X@C'", "mv / per-col", "mv / floor", "encoding",
         "per-column verdict", "multivariate verdict"], table)
    largest = runs[sizes[-1]]
    print(f"reference build, both checks (once per champion, not in the timings): {largest['build_seconds']:.3f} s; "
          f"{largest['components']} components")
    shares = [runs[r]["foreign_cpu_share"] for r in sizes]
    common.warn_if_contended(shares)
    ratio = float(largest["ratio"])
    print(f"RATIO multivariate / per-column wall time at {sizes[-1]:,} rows: {ratio:.3f}x   goal <= {GOAL}x: "
          f"{common.verdict(ratio <= GOAL)}")
    print(f"Distance from the physical limit: {largest['over_floor']:.0f}x one matrix product of the encoded window "
          f"by the components ({largest['multivariate_seconds'] * 1e3:.1f} ms vs {largest['floor_seconds'] * 1e3:.2f} "
          f"ms); encoding the frame is {largest['encode_share']:.0%} of the check")
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": f"check_multivariate / check_drift wall time, {sizes[-1]:,}-row window, 14 columns",
        "goal": f"<= {GOAL}",
        "goal_met": ratio <= GOAL,
        "headline": (f"{sizes[-1]:,} rows: {largest['multivariate_seconds'] * 1e3:.0f} ms vs "
                     f"{largest['per-column_seconds'] * 1e3:.0f} ms per-column; finds the broken relation: "
                     f"{largest['multivariate_drifted']}, per-column: {largest['per_column_severity']}"),
        "runs": {str(k): v for k, v in runs.items()},
        "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
