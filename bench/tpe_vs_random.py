"""TPE against random sampling: how many trials each needs to get near the best CV ROC AUC on Adult.

For each seed, `tune` runs twice on the Adult training split with the same config, seed and
trial count, once with `sampler="tpe"` and once with `sampler="random"`, each in a fresh
SQLite storage. The target is the best CV value either sampler found for that seed, minus a
tolerance (default 0.002). For each sampler the best-so-far curve is read from
`result.trials` in trial-number order (pruned and failed trials count as trials but never
improve the best), and the trials needed to reach the target are counted. A sampler that never
gets there within the budget is censored at budget + 1 (marked `>`).

RATIO = random / TPE trials-to-target; > 1 means TPE gets there faster. The median over seeds
is the headline. The physical floor is 1 trial (the first trial already within tolerance).

    python bench/tpe_vs_random.py [--trials 40] [--seeds 3] [--max-train-rows 12000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import _common as common

NAME = "tpe_vs_random"
SAMPLERS = ("tpe", "random")


def best_so_far(trials: Any, direction: str) -> list[float]:
    """The best COMPLETE value after each trial, in trial-number order (NaN before the first completes)."""
    better = max if direction == "maximize" else min
    curve: list[float] = []
    best = math.nan
    for _, row in trials.sort_values("number").iterrows():
        value = row.get("value")
        if row["state"] == "COMPLETE" and value is not None and not math.isnan(float(value)):
            best = float(value) if math.isnan(best) else better(best, float(value))
        curve.append(best)
    return curve


def trials_to_reach(curve: list[float], target: float, direction: str) -> int | None:
    """1-based count of trials until the best-so-far reaches `target`; None when it never does."""
    for count, best in enumerate(curve, start=1):
        if not math.isnan(best) and (best >= target if direction == "maximize" else best <= target):
            return count
    return None


def run_sampler(splits: Any, sampler: str, seed: int, n_trials: int, max_train_rows: int | None) -> dict[str, Any]:
    """One `tune` call in a fresh SQLite storage; its curve and counts."""
    from autopilot.modeling.tuning import tune

    cfg = common.load_adult_config(seed=seed, sampler=sampler, n_trials=n_trials, timeout_seconds=86_400,
                                   max_train_rows=max_train_rows)
    storage = f"sqlite:///{common.temp_dir(f'{NAME}-{sampler}-{seed}') / 'optuna.db'}"
    with common.stopwatch() as clock, common.neighbours() as others:
        result = tune(splits.X_train, splits.y_train, cfg, storage, f"{NAME}-{sampler}-{seed}",
                      n_trials=n_trials, timeout=86_400, sampler=sampler)
    curve = best_so_far(result.trials, result.direction)
    return {
        "sampler": sampler,
        "seed": seed,
        "best_value": result.best_value,
        "best_family": result.best_params.get("family"),
        "n_trials": len(result.trials),
        "n_complete": result.n_complete,
        "n_pruned": result.n_pruned,
        "by_family": common.time_by_family(result.trials),
        "curve": curve,
        "direction": result.direction,
        "seconds": clock["seconds"],
        "foreign_cpu_share": others["foreign_cpu_share"],
    }


def compare(runs: dict[str, dict[str, Any]], tolerance: float, n_trials: int) -> dict[str, Any]:
    """Trials-to-target for both samplers of one seed, against the better of their two bests."""
    direction = runs["tpe"]["direction"]
    bests = [run["best_value"] for run in runs.values()]
    best = max(bests) if direction == "maximize" else min(bests)
    target = best - tolerance if direction == "maximize" else best + tolerance
    counts: dict[str, int] = {}
    censored: dict[str, bool] = {}
    for sampler, run in runs.items():
        reached = trials_to_reach(run["curve"], target, direction)
        censored[sampler] = reached is None
        counts[sampler] = n_trials + 1 if reached is None else reached
    return {"target": target, "best_of_both": best, "counts": counts, "censored": censored,
            "ratio": counts["random"] / counts["tpe"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write `bench/results/tpe_vs_random.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials per sampler and seed (default 40)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 42, 43, ... (default 3)")
    parser.add_argument("--tolerance", type=float, default=0.002, help="distance from the best CV value (0.002)")
    parser.add_argument("--max-train-rows", type=int, default=12_000,
                        help="tuning.max_train_rows: subsample the CV folds to keep the run short (0 = all rows)")
    args = parser.parse_args(argv)
    max_rows = args.max_train_rows or None

    common.quiet_optuna()
    started = time.perf_counter()
    cfg = common.load_adult_config()
    splits = common.load_splits(cfg)
    seeds = [42 + i for i in range(args.seeds)]
    print(f"[tpe_vs_random] {args.trials} trials x {len(SAMPLERS)} samplers x seeds {seeds}; "
          f"CV on {max_rows or len(splits.X_train)} of {len(splits.X_train)} train rows, "
          f"{cfg.split.cv_folds} folds, families {[f.value for f in cfg.tuning.families]}", flush=True)
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        runs = {}
        for sampler in SAMPLERS:
            runs[sampler] = run_sampler(splits, sampler, seed, args.trials, max_rows)
            run = runs[sampler]
            print(f"[tpe_vs_random] seed {seed} {sampler:6s}: best CV {run['best_value']:.4f} ({run['best_family']}), "
                  f"{run['n_pruned']} pruned, {run['seconds']:.0f} s", flush=True)
        per_seed.append({"seed": seed, **compare(runs, args.tolerance, args.trials), "runs": runs})

    def shown(entry: dict[str, Any], sampler: str) -> str:
        return (">" if entry["censored"][sampler] else "") + str(entry["counts"][sampler])

    rows = [[entry["seed"], f"{entry['best_of_both']:.4f}", f"{entry['target']:.4f}",
             f"{entry['runs']['tpe']['best_value']:.4f}", shown(entry, "tpe"),
             f"{entry['runs']['random']['best_value']:.4f}", shown(entry, "random"), f"{entry['ratio']:.2f}x"]
            for entry in per_seed]
    med_tpe = common.median([e["counts"]["tpe"] for e in per_seed])
    med_random = common.median([e["counts"]["random"] for e in per_seed])
    ratio = common.median([e["ratio"] for e in per_seed])
    rows.append(["median", "", "", "", f"{med_tpe:g}", "", f"{med_random:g}", f"{ratio:.2f}x"])
    common.print_table(
        f"Trials to come within {args.tolerance} of the best CV ROC AUC ({args.trials} trials per run)",
        ["seed", "best of both", "target", "TPE best", "TPE trials", "random best", "random trials",
         "random/TPE"],
        rows,
    )
    met = ratio > 1.0
    censored = sum(entry["censored"]["random"] for entry in per_seed)
    bound = ">=" if any(entry["censored"]["random"] for entry in per_seed) else ""
    print(f"RATIO random / TPE trials-to-target (median over {len(seeds)} seeds): {bound}{ratio:.2f}x   "
          f"goal > 1.0 (TPE faster): {common.verdict(met)}")
    if censored:
        print(f"  random sampling missed the target within {args.trials} trials for {censored} of {len(seeds)} seeds: "
              "those ratios are lower bounds")
    print(f"Median trials: TPE {med_tpe:g}, random {med_random:g}; floor is 1 trial. "
          f"('>' = not reached within {args.trials} trials, counted as {args.trials + 1})")
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": "random / TPE trials to reach best-of-both minus tolerance (median over seeds)",
        "goal": "> 1.0",
        "goal_met": met,
        "headline": f"median trials TPE {med_tpe:g} vs random {med_random:g}",
        "median_trials": {"tpe": med_tpe, "random": med_random},
        "ratio_of_medians": med_random / med_tpe,
        "trials": args.trials,
        "tolerance": args.tolerance,
        "max_train_rows": max_rows,
        "random_censored_seeds": censored,
        "seeds": per_seed,
        "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
