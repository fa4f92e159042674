"""Hyperparameter search with Optuna: seeded, prunable, resumable from an RDB storage.

Each trial samples one point of the conditional space (`search_space.suggest_params`) and
cross-validates the pipeline on the training split only. After every fold it reports the
running mean (step = number of folds done), so `MedianPruner` can stop a hopeless trial early.

Resuming: the study lives in `storage` under `study_name` and is loaded when it exists. The
trial budget counts the trials already finished there (COMPLETE + PRUNED), so a rerun after a
full run runs no trial and a rerun after a crash runs only the remainder. Trials a crashed
process left RUNNING are marked FAIL by `open_study` (with a `fail_reason` user attr), which
runs before any worker of a stage starts, and never count. Several workers can share one study
(`run_trials(worker=k, n_workers=n)`, one mapped DAG task each); they beat heartbeats
(`tuning.heartbeat_seconds`), so a trial whose worker died mid-stage is failed by the next trial
any worker starts once three beats are missed, and enqueued once more with the same params; a
trial still RUNNING when the stage's workers are all done is failed by `study_result`.

Every trial stores the full flat params dict (`user_attrs["params"]`, family included) and
the seed, so `build_pipeline(result.best_params, cfg, result.seed)` rebuilds the winner.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import BaseTrial, TrialState
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from autopilot.config import LOWER_IS_BETTER, ModelConfig, Task
from autopilot.faults import checkpoint
from autopilot.modeling.family_focus import FamilyFocusSampler
from autopilot.modeling.search_space import build_pipeline, default_params, suggest_params
from autopilot.modeling.splits import check_stratifiable

__all__ = [
    "PROBA_METRICS",
    "TuningError",
    "TuningResult",
    "make_objective",
    "open_study",
    "param_importance",
    "plot_history",
    "plot_param_importance",
    "predict_for_metric",
    "score",
    "run_trials",
    "score_pipeline",
    "study_result",
    "tune",
]

PROBA_METRICS = frozenset({"roc_auc", "log_loss", "brier"})
# Errors a single bad configuration can raise while fitting (LinAlgError is a ValueError):
# the trial is recorded as FAIL and the study goes on. Anything else is a bug and stops it.
TRIAL_ERRORS: tuple[type[Exception], ...] = (ValueError, ArithmeticError)
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A trial whose worker died is run again this many times (a second death gives its params up:
# they may be what kills the worker, e.g. a model too large for its memory).
STALE_TRIAL_RETRIES = 1


class TuningError(RuntimeError):
    """Tuning could not produce a model (no trial completed, or the study does not fit)."""


@dataclass(frozen=True)
class TuningResult:
    """The outcome of `tune`: the best trial and the whole study's trial table."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    n_trials: int  # finished (COMPLETE + PRUNED) in the study, this call included
    n_complete: int
    n_pruned: int
    n_new: int  # trials started by this call, whatever their state
    trials: pd.DataFrame
    direction: str
    seed: int  # the `seed` to pass to build_pipeline with best_params


# ---------------------------------------------------------------------------- metrics


def score(metric: str, y_true: Any, y_pred_or_proba: Any) -> float:
    """Compute `metric` from encoded labels and predictions.

    For `roc_auc`, `log_loss` and `brier` pass the positive-class probability (a 1-d array,
    or `predict_proba` output whose column 1 is used); for the other metrics pass predictions.
    """
    y_true = np.asarray(y_true)
    pred = np.asarray(y_pred_or_proba)
    if metric in PROBA_METRICS and pred.ndim == 2:
        pred = pred[:, 1]
    functions: dict[str, Callable[[], Any]] = {
        "roc_auc": lambda: roc_auc_score(y_true, pred),
        "log_loss": lambda: log_loss(y_true, pred, labels=[0, 1]),
        "brier": lambda: brier_score_loss(y_true, pred, pos_label=1),
        "accuracy": lambda: accuracy_score(y_true, pred),
        "precision": lambda: precision_score(y_true, pred, zero_division=0),
        "recall": lambda: recall_score(y_true, pred, zero_division=0),
        "f1": lambda: f1_score(y_true, pred, zero_division=0),
        "rmse": lambda: root_mean_squared_error(y_true, pred),
        "mae": lambda: mean_absolute_error(y_true, pred),
        "r2": lambda: r2_score(y_true, pred),
    }
    if metric not in functions:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(functions)}")
    return float(functions[metric]())


def predict_for_metric(metric: str, pipeline: Pipeline, X: pd.DataFrame, task: Task | None = None) -> np.ndarray:
    """What `metric` is computed from: positive-class probability or predicted values; for a
    multiclass `task` always the class probabilities (every multiclass metric is read from them)."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        return np.asarray(pipeline.predict_proba(X), dtype=float)
    if metric in PROBA_METRICS:
        return np.asarray(pipeline.predict_proba(X))[:, 1]
    return np.asarray(pipeline.predict(X))


def score_pipeline(metric: str, pipeline: Pipeline, X: pd.DataFrame, y: pd.Series, task: Task | None = None) -> float:
    """Score a fitted pipeline on (X, y) with `metric` (multiclass: in the pipeline's class order)."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        from autopilot.modeling.multiclass import multiclass_score

        return multiclass_score(metric, y, predict_for_metric(metric, pipeline, X, task), list(pipeline.classes_))
    return score(metric, y, predict_for_metric(metric, pipeline, X))


# ---------------------------------------------------------------------------- objective


def make_objective(
    X: pd.DataFrame, y: pd.Series, cfg: ModelConfig, *, n_jobs: int | None = -1
) -> Callable[[BaseTrial], float]:
    """The Optuna objective: seeded K-fold CV of one sampled pipeline on (X, y).

    The folds (and the optional `tuning.max_train_rows` subsample) are drawn once here, so
    every trial is scored on the same folds. `n_jobs` only sets forest threads, which does not
    change results.
    """
    X_cv, y_cv = _subsample(X, y, cfg)
    folds = _folds(X_cv, y_cv, cfg)
    seed = cfg.tuning.seed

    def objective(trial: BaseTrial) -> float:
        params = suggest_params(trial, cfg)
        trial.set_user_attr("params", params)
        trial.set_user_attr("seed", seed)
        values: list[float] = []
        for step, (fit_idx, val_idx) in enumerate(folds, start=1):
            values.append(_fit_and_score(trial, params, cfg, X_cv, y_cv, fit_idx, val_idx, n_jobs))
            running = float(np.mean(values))
            trial.report(running, step)
            checkpoint("tuning.fold_reported")  # mid-trial: where the reliability suite kills a worker
            # After the last fold the CV value is complete: record it rather than prune it.
            if step < len(folds) and trial.should_prune():
                raise optuna.TrialPruned(f"running mean {running:.5f} after {step} folds is below the median")
        return float(np.mean(values))

    return objective


def _fit_and_score(
    trial: BaseTrial,
    params: dict[str, Any],
    cfg: ModelConfig,
    X: pd.DataFrame,
    y: pd.Series,
    fit_idx: np.ndarray,
    val_idx: np.ndarray,
    n_jobs: int | None,
) -> float:
    pipeline = build_pipeline(params, cfg, cfg.tuning.seed, n_jobs=n_jobs)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # A non-converged linear model is just a worse trial; its score says so.
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(X.iloc[fit_idx], y.iloc[fit_idx])
        value = score_pipeline(cfg.metric, pipeline, X.iloc[val_idx], y.iloc[val_idx], cfg.task)
    except Exception as exc:
        # Kept on the trial so a study where nothing completes can say why.
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        raise
    seconds = list(trial.user_attrs.get("fold_seconds", []))
    trial.set_user_attr("fold_seconds", [*seconds, round(time.perf_counter() - started, 3)])
    return value


def _subsample(X: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> tuple[pd.DataFrame, pd.Series]:
    limit = cfg.tuning.max_train_rows
    if limit is None or len(X) <= limit:
        return X, y
    stratify = y if cfg.task.classification else None
    keep, _ = train_test_split(np.arange(len(X)), train_size=limit, random_state=cfg.tuning.seed, stratify=stratify)
    keep = np.sort(keep)
    return X.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True)


def _folds(X: pd.DataFrame, y: pd.Series, cfg: ModelConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    n_splits, seed = cfg.split.cv_folds, cfg.split.seed
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        # Every fold must see every class, or a fold's model lacks a probability column.
        check_stratifiable(y, n_splits, f"split.cv_folds ({n_splits} folds)")
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
    if cfg.task is Task.BINARY_CLASSIFICATION and cfg.split.stratify:
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
    return list(KFold(n_splits, shuffle=True, random_state=seed).split(X))


# ---------------------------------------------------------------------------- the study


def tune(
    splits_X: pd.DataFrame,
    splits_y: pd.Series,
    cfg: ModelConfig,
    storage: str,
    study_name: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    sampler: str | None = None,
    threads: int | None = 1,
    warm_start: list[dict[str, Any]] | None = None,
) -> TuningResult:
    """Run (or resume) the study `study_name` in `storage` until the trial budget is spent.

    One process does it all: `open_study`, then `run_trials` as the only worker, then
    `study_result`. The DAG splits the same three steps over mapped tasks (`tuning.parallel_workers`).

    Args:
        splits_X, splits_y: the training split only; the test split never enters tuning.
        cfg: the model config (metric, families, folds, seeds, budget).
        storage: an Optuna RDB URL, e.g. `sqlite:////path/optuna.db` or a PostgreSQL URL.
        study_name: the study to create or resume. Name it after everything that changes the
            search (config hash, data snapshot), or a rerun resumes a different experiment.
        n_trials: total finished trials wanted in the study (default `tuning.n_trials`).
        timeout: seconds for this call (default `tuning.timeout_seconds`); a running trial is
            not interrupted, so the call can overrun by one trial.
        sampler: "tpe" or "random", overriding `tuning.sampler`.
        warm_start: Optuna params of earlier good trials (a re-tune after drift), enqueued first
            when the study is new, so the search starts from what worked before.
        threads: OpenMP/BLAS threads per fit and forest `n_jobs` while tuning; None keeps the
            libraries' defaults (all cores). 1 by default: on a shared 2-core machine HGB's
            OpenMP threads made Adult trials ~8x slower (19 s vs 2.4 s per trial; the budget
            ran out after 16 of 30 trials), while a single-threaded HGB fit on Adult took as
            long as a 2-thread fit on the idle machine (~2 s). Tree results do not depend on it;
            BLAS sums in a non-converged linear fit can differ in the 4th decimal.

    Raises:
        TuningError: the study has no completed trial afterwards, or its direction does not
            match `cfg.metric`.
    """
    open_study(cfg, storage, study_name, warm_start=warm_start)
    n_new = run_trials(splits_X, splits_y, cfg, storage, study_name, n_trials=n_trials, timeout=timeout,
                       sampler=sampler, threads=threads)
    return study_result(cfg, storage, study_name, n_new=n_new)


def _direction(cfg: ModelConfig) -> Literal["minimize", "maximize"]:
    return "minimize" if cfg.metric in LOWER_IS_BETTER else "maximize"


def open_study(cfg: ModelConfig, storage: str, study_name: str, *,
               warm_start: list[dict[str, Any]] | None = None) -> optuna.Study:
    """Create or load the study before any worker starts; fail trials a dead process left RUNNING.

    Run once per tuning stage, while no worker runs: a RUNNING trial then can only belong to
    a process that died (a retried or rerun stage), and it must not count or block the budget.
    Warm-start params are enqueued only into a new study: the caller's first, then (with
    `tuning.warm_start_defaults`) one known-good configuration per family.
    """
    direction = _direction(cfg)
    storage_obj = optuna.storages.get_storage(storage)
    study = optuna.create_study(
        study_name=study_name, storage=storage_obj, load_if_exists=True, direction=direction, pruner=_pruner(cfg)
    )
    if study.direction.name.lower() != direction:
        raise TuningError(f"study {study_name!r} exists with direction {study.direction.name.lower()}, "
                          f"but metric {cfg.metric!r} needs {direction}")
    _fail_stale_trials(study, storage_obj)
    if not study.trials:
        defaults = default_params(cfg) if cfg.tuning.warm_start_defaults else []
        for params in [*(warm_start or []), *defaults]:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def run_trials(
    splits_X: pd.DataFrame,
    splits_y: pd.Series,
    cfg: ModelConfig,
    storage: str,
    study_name: str,
    *,
    worker: int = 0,
    n_workers: int = 1,
    n_trials: int | None = None,
    timeout: float | None = None,
    sampler: str | None = None,
    threads: int | None = 1,
) -> int:
    """Run trials of an opened study until it holds the budget's finished trials; return how many started.

    Several workers (processes, or Celery workers on several machines) can run this at once on
    one RDB study: each asks the shared storage for its next point, and `MaxTrialsCallback`
    stops each worker once the study as a whole holds `n_trials` finished trials (the others'
    running trials finish, so the total can exceed the budget by at most `n_workers - 1`).
    Worker `k` seeds its sampler `seed + trials already there + k * 10007`: worker 0 of a single
    worker reproduces exactly; parallel workers draw different start-up points, and TPE's
    proposals then depend on which trials finished first (parallel search is not bit-for-bit
    reproducible; the winner's params and seed are recorded, so the model is).
    With more than one worker, trials send heartbeats, and a trial whose worker died is failed
    by the next trial any worker starts (Optuna's `fail_stale_trials`).
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be None or at least 1, got {threads}")
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker must be in [0, {n_workers}), got {worker}")
    budget = cfg.tuning.n_trials if n_trials is None else n_trials
    seconds = cfg.tuning.timeout_seconds if timeout is None else timeout
    storage_obj = optuna.storages.get_storage(storage) if n_workers == 1 else _beating_storage(storage, cfg)
    study = optuna.load_study(study_name=study_name, storage=storage_obj, pruner=_pruner(cfg))
    # Enqueued (WAITING) warm-start points are not trials run yet: they do not move the seed.
    n_before = sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)
    # Offsetting the seed by the trials already there keeps a fresh study exactly reproducible
    # and stops a resumed study from replaying the same random start-up points.
    study.sampler = _sampler(sampler or cfg.tuning.sampler, cfg, cfg.tuning.seed + n_before + worker * 10007)
    remaining = budget - len(study.get_trials(deepcopy=False, states=_FINISHED))
    if remaining <= 0:
        return 0
    objective = make_objective(splits_X, splits_y, cfg, n_jobs=threads or -1)
    mine: list[int] = []
    with threadpool_limits(limits=threads):
        study.optimize(objective, n_trials=remaining, timeout=seconds, n_jobs=1, catch=TRIAL_ERRORS,
                       callbacks=[MaxTrialsCallback(budget, states=_FINISHED),
                                  lambda _s, trial: mine.append(trial.number)])
    return len(mine)


def _beating_storage(storage: str, cfg: ModelConfig) -> optuna.storages.RDBStorage:
    """The RDB storage of a parallel worker: heartbeats, and a dead worker's trial run once more."""
    beat = cfg.tuning.heartbeat_seconds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        retry = RetryHeartbeatStaleTrialCallback(max_retry=STALE_TRIAL_RETRIES)
        return optuna.storages.RDBStorage(storage, heartbeat_interval=beat, grace_period=3 * beat,
                                          heartbeat_stale_trial_callback=retry)


def study_result(cfg: ModelConfig, storage: str, study_name: str, *, n_new: int) -> TuningResult:
    """The study's best trial and trial table once the workers are done.

    Every worker of the stage has finished, so a trial still RUNNING belongs to a worker that
    died without any other worker starting a trial after its heartbeat went stale (for example
    the last trial of the budget): it is failed here, so the stage never leaves one behind.

    Raises:
        TuningError: no trial completed (the message gives the last trial error).
    """
    storage_obj = optuna.storages.get_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=storage_obj)
    _fail_stale_trials(study, storage_obj)
    return _result(study, n_new=n_new, direction=_direction(cfg), seed=cfg.tuning.seed)


def _sampler(name: str, cfg: ModelConfig, seed: int) -> optuna.samplers.BaseSampler:
    base = _base_sampler(name, cfg, seed)
    if cfg.tuning.family_retire_trials <= 0 or len(cfg.tuning.families) < 2:
        return base
    # Trials the sampler gives a family that cannot win go to the families that still can.
    return FamilyFocusSampler(base, min_trials=cfg.tuning.family_retire_trials,
                              margin=cfg.tuning.family_retire_margin, seed=seed)


def _base_sampler(name: str, cfg: ModelConfig, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name != "tpe":
        raise ValueError(f"unknown sampler {name!r}; expected 'tpe' or 'random'")
    with warnings.catch_warnings():
        # `multivariate`/`group` are still flagged experimental in Optuna 5.0.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # group=True: TPE models each conditional sub-space (one per family) jointly.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.tuning.n_startup_trials, multivariate=True, group=True
        )


def _pruner(cfg: ModelConfig) -> optuna.pruners.BasePruner:
    # Steps are folds done (1-based), so warmup N means "always finish N folds".
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.tuning.n_startup_trials, n_warmup_steps=cfg.tuning.pruner_warmup_folds
    )


def _fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "fail_reason", "left RUNNING by a process that died")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _result(study: optuna.Study, *, n_new: int, direction: str, seed: int) -> TuningResult:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    if not complete:
        raise TuningError(_no_trial_message(study))
    best = study.best_trial
    return TuningResult(
        study_name=study.study_name,
        best_params=dict(best.user_attrs.get("params", best.params)),
        best_value=float(study.best_value),
        n_trials=len(complete) + len(pruned),
        n_complete=len(complete),
        n_pruned=len(pruned),
        n_new=n_new,
        trials=study.trials_dataframe(),
        direction=direction,
        seed=int(best.user_attrs.get("seed", seed)),
    )


def _no_trial_message(study: optuna.Study) -> str:
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    errors = [t.user_attrs.get("error") or t.user_attrs.get("fail_reason") for t in failed]
    last = next((e for e in reversed(errors) if e), "no error recorded")
    return (
        f"study {study.study_name!r}: no trial completed ({len(failed)} failed, "
        f"{len(study.trials)} in total); last error: {last}"
    )


# ---------------------------------------------------------------------------- plotting


def plot_history(study_or_result: optuna.Study | TuningResult, path: Path) -> Path:
    """Write the optimization history as a PNG: trial values and the best-so-far line.

    Uses a bare matplotlib `Figure` (Agg canvas), so no pyplot state or GUI backend is touched.
    Pruned trials are drawn at the running mean they were pruned at.
    """
    if isinstance(study_or_result, TuningResult):
        frame, direction, name = study_or_result.trials, study_or_result.direction, study_or_result.study_name
    else:
        frame = study_or_result.trials_dataframe()
        direction, name = study_or_result.direction.name.lower(), study_or_result.study_name
    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    _draw_history(ax, frame, direction)
    ax.set_title(f"Optimization history: {name}")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"objective value ({direction})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _draw_history(ax: Any, frame: pd.DataFrame, direction: str) -> None:
    if frame.empty or "value" not in frame.columns:
        ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes)
        return
    complete = frame[frame["state"] == "COMPLETE"].sort_values("number")
    pruned = frame[(frame["state"] == "PRUNED") & frame["value"].notna()]
    ax.scatter(complete["number"], complete["value"], s=18, label="complete")
    if not pruned.empty:
        ax.scatter(pruned["number"], pruned["value"], s=18, marker="x", color="grey", label="pruned")
    if not complete.empty:
        values = complete["value"].to_numpy(dtype=float)
        best = np.maximum.accumulate(values) if direction == "maximize" else np.minimum.accumulate(values)
        # Carry the line to the last trial, so trials after the last improvement show as flat.
        numbers = [*complete["number"], int(frame["number"].max())]
        ax.step(numbers, [*best, best[-1]], where="post", color="tab:red", label="best so far")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)


def param_importance(storage: str, study_name: str, family: str, min_trials: int) -> dict[str, Any]:
    """Optuna's parameter importance (its default evaluator) within one model family of a study.

    Parameters are conditional on the family, so importance is computed on the family's complete
    trials (the winner's family, as a rule) over the parameters every one of them has. Never
    raises for a study too small or too uniform: `importances` is then empty and `reason` says why.

    Returns:
        `{"family", "complete_trials", "parameters", "importances", "evaluator", "reason"}`.
    """
    from optuna.importance import get_param_importances

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.params.get("family") == family]
    shared = sorted(set.intersection(*(set(t.params) for t in trials)) - {"family"}) if trials else []
    out: dict[str, Any] = {"family": family, "complete_trials": len(trials), "parameters": shared,
                           "importances": {}, "evaluator": "optuna default (PED-ANOVA)", "reason": None}
    if len(trials) < min_trials:
        out["reason"] = (f"{len(trials)} complete trial(s) of family {family}; parameter importance needs at "
                         f"least {min_trials} (evaluation.importance_min_trials)")
    elif not shared:
        out["reason"] = f"the trials of family {family} share no tuned parameter"
    else:
        family_study = optuna.create_study(direction=study.direction)
        family_study.add_trials(trials)
        try:
            found = get_param_importances(family_study, params=shared)
        except (ValueError, ArithmeticError, RuntimeError) as exc:  # e.g. every trial scored the same
            out["reason"] = f"Optuna could not compute importance: {type(exc).__name__}: {exc}"
        else:
            out["importances"] = {name: float(value) for name, value in found.items()}
    return out


def plot_param_importance(importance: dict[str, Any], path: Path) -> Path:
    """Write `param_importance`'s result as a PNG: a bar per parameter, or the reason there is none."""
    found = importance["importances"]
    fig = Figure(figsize=(8, 0.4 * max(len(found), 4) + 1.5), dpi=100)
    ax = fig.add_subplot()
    if found:
        names = list(reversed(list(found)))  # Optuna sorts them, most important first
        ax.barh(names, [found[n] for n in names])
        ax.set_xlabel("importance (normalized)")
    else:
        ax.text(0.5, 0.5, f"no parameter importance:\n{importance['reason']}", ha="center", va="center",
                transform=ax.transAxes, wrap=True)
        ax.set_axis_off()
    ax.set_title(f"Parameter importance within family {importance['family']} "
                 f"({importance['complete_trials']} complete trials; parameters all of them share)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
