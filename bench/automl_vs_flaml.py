"""Our AutoML against FLAML: same Adult split, same wall-clock budget, same 2 cores, same run.

Ours: `tune` on the training split with `timeout=budget` and a trial count that never binds
(10,000), over the config's model families, then the best params refit on all training rows
and scored on the Adult test split. Optuna's timeout stops *starting* trials, so the trial
running at the deadline finishes and the refit comes on top: the wall time of tune + refit is
reported against the budget as it is, overrun included.

FLAML: `flaml.AutoML().fit(..., task="classification", metric="roc_auc", time_budget=budget,
n_jobs=2)` on the same canonical features (object columns as pandas `category`), scored with
`predict_proba` on the same test rows. Its wall time (search + its own final retrain) is
reported the same way. Goal: ours / FLAML test ROC AUC >= 1.0.

    python bench/automl_vs_flaml.py [--budget 120] [--seed 42] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as common

NAME = "automl_vs_flaml"
MANY_TRIALS = 10_000
INSTALL_HINT = "FLAML is not installed; install the bench extra:  pip install -e '.[bench]'  (flaml[automl]>=2.3)"


def run_ours(splits: Any, budget: float, seed: int, threads: int | None = None) -> dict[str, Any]:
    """Tune for `budget` seconds (fresh SQLite study), refit the best on all train rows, evaluate on test.

    `threads` is passed to `tune` when given; otherwise the library's default applies.
    """
    from autopilot.modeling.training import evaluate, fit_pipeline
    from autopilot.modeling.tuning import tune

    cfg = common.load_adult_config(n_trials=MANY_TRIALS, timeout_seconds=budget, seed=seed)
    storage = f"sqlite:///{common.temp_dir(NAME) / 'optuna.db'}"
    options: dict[str, Any] = {} if threads is None else {"threads": threads}
    with common.stopwatch() as total:
        with common.stopwatch() as tune_time:
            result = tune(splits.X_train, splits.y_train, cfg, storage, f"{NAME}-{seed}",
                          n_trials=MANY_TRIALS, timeout=budget, **options)
        with common.stopwatch() as refit_time:
            pipeline = fit_pipeline(result.best_params, cfg, splits.X_train, splits.y_train, seed)
    metrics = evaluate(pipeline, splits.X_test, splits.y_test, cfg.task)
    return {
        "test_roc_auc": metrics["roc_auc"],
        "test_metrics": metrics,
        "cv_best_value": result.best_value,
        "best_family": result.best_params.get("family"),
        "best_params": result.best_params,
        "n_trials": result.n_trials,
        "n_complete": result.n_complete,
        "n_pruned": result.n_pruned,
        "families": [f.value for f in cfg.tuning.families],
        "threads": "library default" if threads is None else threads,
        "by_family": common.time_by_family(result.trials),
        "tune_seconds": tune_time["seconds"],
        "refit_seconds": refit_time["seconds"],
        "seconds": total["seconds"],
    }


def run_flaml(cfg: Any, splits: Any, budget: float, seed: int) -> dict[str, Any]:
    """FLAML AutoML with the same budget and cores; test ROC AUC from `predict_proba`."""
    from flaml import AutoML
    from sklearn.metrics import roc_auc_score

    X_train = common.as_category(splits.X_train, cfg.categorical_features)
    X_test = common.as_category(splits.X_test, cfg.categorical_features, like=X_train)
    automl = AutoML()
    with common.stopwatch() as fit_time:
        automl.fit(X_train, splits.y_train, task="classification", metric="roc_auc", time_budget=budget,
                   n_jobs=2, seed=seed, verbose=0)
    scores = automl.predict_proba(X_test)[:, 1]
    return {
        "test_roc_auc": float(roc_auc_score(splits.y_test, scores)),
        "validation_roc_auc": 1.0 - float(automl.best_loss),
        "best_estimator": automl.best_estimator,
        "best_config": automl.best_config,
        "seconds": fit_time["seconds"],
    }


def measured(side: Callable[[], dict[str, Any]], wait_idle: float) -> dict[str, Any]:
    """Run one side after waiting for a quiet machine; add how much CPU other processes took meanwhile."""
    quiet = common.wait_for_quiet(wait_idle) if wait_idle > 0 else {"quiet": None}
    with common.neighbours() as others:
        result = side()
    return {**result, "quiet_at_start": quiet, "foreign_cpu_share": others["foreign_cpu_share"]}


def add_side_options(parser: argparse.ArgumentParser, wait_idle: float) -> None:
    """`--threads` (ours) and `--wait-idle` (both sides), shared by the FLAML comparisons."""
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for our tuning fits (passed to tune); default: the library's own default")
    parser.add_argument("--wait-idle", type=float, default=wait_idle,
                        help="seconds to wait for other work to leave the cores before each side (0: no wait)")


def flaml_missing() -> bool:
    """True (after printing how to install it) when FLAML cannot be imported."""
    try:
        import flaml  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write `bench/results/automl_vs_flaml.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="wall-clock seconds for each side (default 120)")
    parser.add_argument("--seed", type=int, default=42, help="seed for both sides (default 42)")
    add_side_options(parser, wait_idle=120.0)
    args = parser.parse_args(argv)
    if flaml_missing():
        return 2

    common.quiet_optuna()
    started = time.perf_counter()
    cfg = common.load_adult_config()
    splits = common.load_splits(cfg)
    print(f"[automl_vs_flaml] Adult: {len(splits.X_train)} train / {len(splits.X_test)} test rows; "
          f"budget {args.budget:g} s each, seed {args.seed}; ours first, then FLAML", flush=True)
    ours = measured(lambda: run_ours(splits, args.budget, args.seed, args.threads), args.wait_idle)
    print(f"[automl_vs_flaml] ours: test ROC AUC {ours['test_roc_auc']:.4f} in {ours['seconds']:.0f} s", flush=True)
    peer = measured(lambda: run_flaml(cfg, splits, args.budget, args.seed), args.wait_idle)
    print(f"[automl_vs_flaml] FLAML: test ROC AUC {peer['test_roc_auc']:.4f} in {peer['seconds']:.0f} s", flush=True)

    ratio = ours["test_roc_auc"] / peer["test_roc_auc"]
    budget = args.budget

    def over(seconds: float) -> str:
        return f"{seconds:.0f} s ({(seconds / budget - 1) * 100:+.0f}% vs budget)"

    common.print_table(
        f"AutoML on Adult (train {len(splits.X_train)} rows, test {len(splits.X_test)} rows), budget {budget:g} s, "
        f"2 cores",
        ["system", "test ROC AUC", "internal val. AUC", "wall time (search + refit)", "best"],
        [["autopilot tune + refit", f"{ours['test_roc_auc']:.4f}", f"{ours['cv_best_value']:.4f} (CV)",
          f"{over(ours['seconds'])}: tune {ours['tune_seconds']:.0f} + refit {ours['refit_seconds']:.1f}",
          f"{ours['best_family']} ({ours['n_trials']} trials, {ours['n_pruned']} pruned)"],
         ["FLAML AutoML", f"{peer['test_roc_auc']:.4f}", f"{peer['validation_roc_auc']:.4f}",
          over(peer["seconds"]), str(peer["best_estimator"])]],
    )
    met = ratio >= 1.0
    gap = (ours["test_roc_auc"] - peer["test_roc_auc"]) * 100
    print(f"RATIO ours / FLAML (test ROC AUC): {ratio:.4f}x ({gap:+.2f} AUC points)",
          f"goal >= 1.0: {common.verdict(met)}")
    print("our tuning time by family: " + common.format_by_family(ours["by_family"]))
    print(f"other processes' share of CPU time: ours {ours['foreign_cpu_share']}, FLAML {peer['foreign_cpu_share']}")
    common.warn_if_contended([ours["foreign_cpu_share"], peer["foreign_cpu_share"]])
    print(f"Wall time ours / FLAML: {ours['seconds'] / peer['seconds']:.2f}x")
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": "autopilot test ROC AUC / FLAML test ROC AUC, same budget",
        "goal": ">= 1.0",
        "goal_met": met,
        "headline": f"ours {ours['test_roc_auc']:.4f} vs FLAML {peer['test_roc_auc']:.4f} at {budget:g} s",
        "budget_seconds": budget,
        "seed": args.seed,
        "ours": ours,
        "flaml": peer,
        "wall_time_ratio": ours["seconds"] / peer["seconds"],
        "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
