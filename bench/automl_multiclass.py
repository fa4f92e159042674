"""Multiclass AutoML against FLAML: same split, same wall-clock budget, same 2 cores, same run.

The data ships inside an installed package (nothing is downloaded): statsmodels' `fair` dataset
(6,366 rows; the target `rate_marriage`, five classes 1..5 of 99 to 2,684 rows). The config is the
one `autopilot init-config` drafts for it, with the metric set to one-vs-rest ROC AUC (macro over
classes); the split is the config's seeded, stratified split, the same rows for both sides.

Ours: `tune` on the training split with `timeout=budget` and a trial count that never binds, over the
drafted config's model families, then the best params refit on all training rows and scored on the
test rows. FLAML: `AutoML().fit(..., task="classification", metric="roc_auc_ovr", time_budget=budget,
n_jobs=2)` on the same features (categoricals as pandas `category`). Both are scored on the same test
rows with the same sklearn functions: OvR ROC AUC (the ratio), log loss and macro F1 (context).
Goal: ours / FLAML test OvR ROC AUC >= 1.0.

    python bench/automl_multiclass.py [--budget 60] [--seed 42]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import _common as common
from automl_vs_flaml import MANY_TRIALS, flaml_missing, measured

NAME = "automl_multiclass"
TARGET = "rate_marriage"
METRIC = "roc_auc_ovr"


def drafted_config(folder: Path, budget: float, seed: int) -> Any:
    """Write the `fair` data as CSV, draft its config with `init-config`, set metric and tuning budget."""
    import statsmodels.datasets.fair as fair

    from autopilot.cli import main as cli
    from autopilot.config import load_config

    frame = fair.load_pandas().data
    frame[TARGET] = frame[TARGET].astype(int)
    data = folder / "fair.csv"
    frame.to_csv(data, index=False)
    out = folder / "fair_marriage.yaml"
    if cli(["init-config", "--data", str(data), "--target", TARGET, "--out", str(out)]) != 0:
        raise SystemExit("init-config failed on the fair dataset")
    raw = yaml.safe_load(out.read_text())
    raw["metric"] = METRIC
    raw["tuning"] = {**raw.get("tuning", {}), "n_trials": MANY_TRIALS, "timeout_seconds": budget, "seed": seed}
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(out)


def splits_of(cfg: Any) -> Any:
    """The config's seeded, stratified split of the drafted data."""
    from autopilot.data.sources import canonicalize, read_frame
    from autopilot.modeling.splits import make_splits

    frame = canonicalize(read_frame(cfg.resolve(cfg.data.source), cfg.data.format), cfg)
    return make_splits(frame, None, cfg)


def scored(y: Any, proba: Any, classes: list[Any]) -> dict[str, float]:
    """OvR ROC AUC, log loss and macro F1 of class probabilities (columns in `classes` order)."""
    import numpy as np
    from sklearn import metrics

    labels = np.asarray(classes)[np.argmax(proba, axis=1)]
    return {"roc_auc_ovr": float(metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes)),
            "log_loss": float(metrics.log_loss(y, proba, labels=classes)),
            "f1_macro": float(metrics.f1_score(y, labels, average="macro"))}


def run_ours(cfg: Any, splits: Any, budget: float, seed: int) -> dict[str, Any]:
    """Tune for `budget` seconds (fresh SQLite study), refit the best on all train rows, score on test."""
    from autopilot.modeling.training import class_order, fit_pipeline
    from autopilot.modeling.tuning import tune

    storage = f"sqlite:///{common.temp_dir(NAME) / 'optuna.db'}"
    with common.stopwatch() as total:
        with common.stopwatch() as tune_time:
            result = tune(splits.X_train, splits.y_train, cfg, storage, f"{NAME}-{seed}",
                          n_trials=MANY_TRIALS, timeout=budget)
        with common.stopwatch() as refit_time:
            pipeline = fit_pipeline(result.best_params, cfg, splits.X_train, splits.y_train, seed)
    test = scored(splits.y_test, pipeline.predict_proba(splits.X_test), class_order(pipeline))
    return {"test": test, "cv_best_value": result.best_value, "best_family": result.best_params.get("family"),
            "n_trials": result.n_trials, "n_pruned": result.n_pruned,
            "by_family": common.time_by_family(result.trials), "tune_seconds": tune_time["seconds"],
            "refit_seconds": refit_time["seconds"], "seconds": total["seconds"]}


def run_flaml(cfg: Any, splits: Any, budget: float, seed: int) -> dict[str, Any]:
    """FLAML AutoML with the same budget, cores and metric; scored like ours."""
    from flaml import AutoML

    X_train = common.as_category(splits.X_train, cfg.categorical_features)
    X_test = common.as_category(splits.X_test, cfg.categorical_features, like=X_train)
    automl = AutoML()
    with common.stopwatch() as fit_time:
        automl.fit(X_train, splits.y_train, task="classification", metric=METRIC, time_budget=budget,
                   n_jobs=2, seed=seed, verbose=0)
    test = scored(splits.y_test, automl.predict_proba(X_test), list(automl.classes_))
    return {"test": test, "validation_roc_auc_ovr": 1.0 - float(automl.best_loss),
            "best_estimator": automl.best_estimator, "seconds": fit_time["seconds"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write `bench/results/automl_multiclass.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="wall-clock seconds for each side (default 60)")
    parser.add_argument("--seed", type=int, default=42, help="seed for both sides (default 42)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for other work to leave the cores before each side (0: no wait)")
    args = parser.parse_args(argv)
    if flaml_missing():
        return 2
    common.quiet_optuna()
    started = time.perf_counter()
    cfg = drafted_config(common.temp_dir(NAME + "-data"), args.budget, args.seed)
    splits = splits_of(cfg)
    print(f"[{NAME}] fair (statsmodels): {len(splits.X_train)} train / {len(splits.X_test)} test rows, "
          f"{splits.y_train.nunique()} classes; budget {args.budget:g} s each, seed {args.seed}", flush=True)
    ours = measured(lambda: run_ours(cfg, splits, args.budget, args.seed), args.wait_idle)
    peer = measured(lambda: run_flaml(cfg, splits, args.budget, args.seed), args.wait_idle)
    ratio = ours["test"][METRIC] / peer["test"][METRIC]
    common.print_table(
        f"Multiclass AutoML on fair (5 classes), budget {args.budget:g} s, 2 cores",
        ["system", "test OvR ROC AUC", "test log loss", "test macro F1", "wall time", "best"],
        [["autopilot tune + refit", f"{ours['test'][METRIC]:.4f}", f"{ours['test']['log_loss']:.4f}",
          f"{ours['test']['f1_macro']:.4f}", f"{ours['seconds']:.0f} s",
          f"{ours['best_family']} ({ours['n_trials']} trials, {ours['n_pruned']} pruned)"],
         ["FLAML AutoML", f"{peer['test'][METRIC]:.4f}", f"{peer['test']['log_loss']:.4f}",
          f"{peer['test']['f1_macro']:.4f}", f"{peer['seconds']:.0f} s", str(peer["best_estimator"])]],
    )
    met = ratio >= 1.0
    print(f"RATIO ours / FLAML (test OvR ROC AUC): {ratio:.4f}x "
          f"({(ours['test'][METRIC] - peer['test'][METRIC]) * 100:+.2f} points)", f"goal >= 1.0: {common.verdict(met)}")
    print("our tuning time by family: " + common.format_by_family(ours["by_family"]))
    common.warn_if_contended([ours["foreign_cpu_share"], peer["foreign_cpu_share"]])
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio, "ratio_label": "autopilot test OvR ROC AUC / FLAML test OvR ROC AUC, same budget",
        "goal": ">= 1.0", "goal_met": met,
        "headline": f"ours {ours['test'][METRIC]:.4f} vs FLAML {peer['test'][METRIC]:.4f} at {args.budget:g} s",
        "budget_seconds": args.budget, "seed": args.seed, "ours": ours, "flaml": peer, "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
