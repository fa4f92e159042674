"""Run every benchmark in sequence, each in its own interpreter, and print a combined summary.

One benchmark at a time (they all want both cores). Each script prints its own table and
writes `bench/results/<name>.json`; this runner reads those files back (only ones written by
this run) and prints one line per benchmark with its headline ratio and goal, then writes
`bench/results/run_all.json`. Exits non-zero when any script failed.

    python bench/run_all.py [--only quality parse_time] [--skip automl_vs_flaml] [--budget 120]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import _common as common

# Order: the quick parse-time check first, then the long model runs.
BENCHMARKS = ("parse_time", "quality", "automl_vs_flaml", "automl_multiclass", "automl_panel", "tpe_vs_random",
              "orchestration_overhead", "shap_paths", "gate_cost", "serving", "overload", "drift",
              "multivariate")


def run_one(name: str, extra: list[str]) -> dict[str, Any]:
    """Run `bench/<name>.py` (output streamed through); return exit code, seconds and its result JSON."""
    script = common.BENCH / f"{name}.py"
    result_file = common.RESULTS / f"{name}.json"
    print(f"\n##### {name}: {sys.executable} {script.relative_to(common.PROJECT)} {' '.join(extra)}", flush=True)
    start_wall = time.time()
    start = time.perf_counter()
    code = subprocess.run([sys.executable, str(script), *extra], cwd=str(common.PROJECT), check=False).returncode
    seconds = time.perf_counter() - start
    fresh = result_file.exists() and result_file.stat().st_mtime >= start_wall
    result = json.loads(result_file.read_text()) if fresh and code == 0 else None
    return {"name": name, "exit_code": code, "seconds": seconds, "result": result}


def summary_rows(outcomes: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per benchmark: ratio, goal, verdict, headline, time."""
    rows = []
    for outcome in outcomes:
        result = outcome["result"]
        if result is None:
            rows.append([outcome["name"], "-", "-", f"FAILED (exit {outcome['exit_code']})", "-",
                         f"{outcome['seconds']:.0f} s"])
            continue
        rows.append([outcome["name"], f"{result['ratio']:.3f}x", result["goal"],
                     common.verdict(bool(result["goal_met"])), result.get("headline", ""),
                     f"{outcome['seconds']:.0f} s"])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[], help="skip these")
    parser.add_argument("--budget", type=float, help="automl_vs_flaml, automl_multiclass and automl_panel: seconds per "
                        "side (defaults: 120, 60, 60)")
    args = parser.parse_args(argv)
    selected = [name for name in (args.only or BENCHMARKS) if name not in args.skip]
    extras: dict[str, list[str]] = {name: [] for name in BENCHMARKS}
    # The panel's own defaults (2 budgets x 3 seeds x 6 datasets) take hours: one seed here.
    extras["automl_panel"] = ["--seeds", "1", "--budgets", "60"]
    if args.budget is not None:
        extras["automl_vs_flaml"] += ["--budget", f"{args.budget:g}"]
        extras["automl_multiclass"] += ["--budget", f"{args.budget:g}"]
        extras["automl_panel"] = ["--seeds", "1", "--budgets", f"{args.budget:g}"]

    started = time.perf_counter()
    outcomes = [run_one(name, extras[name]) for name in selected]
    total = time.perf_counter() - started
    common.print_table(
        f"Benchmark summary ({len(selected)} benchmarks, {total / 60:.1f} min total)",
        ["benchmark", "ratio", "goal", "verdict", "headline", "time"],
        summary_rows(outcomes),
    )
    for outcome in outcomes:
        if outcome["result"] is not None:
            print(f"  {outcome['name']}: ratio = {outcome['result']['ratio_label']}")
    print(f"total runtime {total:.0f} s ({total / 60:.1f} min)")
    path = common.write_result("run_all", {
        "total_seconds": total,
        "benchmarks": [{"name": o["name"], "exit_code": o["exit_code"], "seconds": o["seconds"],
                        "ratio": (o["result"] or {}).get("ratio"), "goal": (o["result"] or {}).get("goal"),
                        "goal_met": (o["result"] or {}).get("goal_met"),
                        "headline": (o["result"] or {}).get("headline")} for o in outcomes],
    })
    print(f"wrote {path}")
    return 0 if all(o["exit_code"] == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
