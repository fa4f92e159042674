"""The training stages: tune (plan, mapped workers, finish), then train and register the winner.

Each stage is idempotent. Its MLflow run is found again by an idempotency key
(`<model>/<dag run id>/<stage>`, `context.stage_run`), the Optuna study is named after the data
and search space, and the model version carries the key as a tag: a retry or rerun of the same
DAG run finds what it already made and does nothing twice. Two copies of `train_and_register`
at once (Airflow delivers at least once) take turns on the run's lock in the state database
(`promotion.state_lock`), released if the holder is killed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import (
    IDEMPOTENCY_TAG,
    ModelRef,
    Registry,
    RunHandle,
    connect,
    model_signature,
    pandas_dataset,
    sha256_manifest,
)
from autopilot.aliases import CHAMPION
from autopilot.config import LoadedConfig, Task, config_hash
from autopilot.modeling.multiclass import CLASSES_TAG
from autopilot.pipeline.context import (
    RegisteredVersion,
    RunContext,
    Snapshots,
    TunedResult,
    TuningAssignment,
    TuningWork,
    coerce,
    stage_run,
)
from autopilot.pipeline.data import log_dataset_inputs
from autopilot.reports import GateFailure, GateReport

if TYPE_CHECKING:
    import pandas as pd

    from autopilot.adapters.registry import ModelVersion
    from autopilot.modeling.splits import Splits
    from autopilot.settings import Settings

__all__ = [
    "CONFIG_TAG",
    "finish_tuning",
    "plan_tuning",
    "run_tuning_worker",
    "signature_for",
    "study_name",
    "train_and_register",
    "trained_on",
    "tune_model",
]


def study_name(cfg: LoadedConfig, train_digest: str) -> str:
    """The Optuna study for a model, its training data and its search settings."""
    import hashlib

    search = {
        "tuning": cfg.tuning.model_dump(mode="json"),
        "split": cfg.split.model_dump(mode="json"),
        "features": {k: v.type for k, v in cfg.features.items()},
        "metric": cfg.metric,
    }
    digest = hashlib.sha256(json.dumps(search, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.name}-{train_digest[:12]}-{digest}"


def plan_tuning(cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                snapped: Mapping[str, Any]) -> list[TuningAssignment]:
    """Open the run's Optuna study and hand out one assignment per tuning worker.

    The study lives in RDB storage under a name derived from the data and search settings,
    so a retry resumes it and a rerun spends no second budget (a run's own trial budget,
    `RunContext.n_trials`, gets a study of its own, so it holds exactly that many trials). A `refit` retrain searches
    nothing: it gets one assignment that runs no trial. A `retune` gets its own study, seeded
    with the champion's best trials and the retrain budget.

    Returns:
        `tuning.parallel_workers` assignments `{"study_name", "worker", "n_workers", "n_trials"}`
        (small: they travel through XCom to mapped tasks).
    """
    from autopilot.modeling.tuning import open_study

    strategy = (ctx.retrain or {}).get("strategy")
    if strategy == "refit":
        return [TuningAssignment(study_name=None, worker=0, n_workers=1, n_trials=0, strategy="refit")]
    name = study_name(cfg, _data_digest(coerce(snapped, Snapshots)))
    warm: list[dict[str, Any]] = []
    budget = cfg.tuning.n_trials
    if strategy == "retune":
        warm = _previous_best_trials(connect(settings), cfg, settings)
        budget = cfg.monitoring.retrain.retune_trials
        name += "-retune"
    if ctx.n_trials:  # the run's own budget (the trigger form's): a study of its own, so it holds exactly that
        budget = ctx.n_trials
        name += f"-n{budget}"
    open_study(cfg, settings.optuna_storage, name, warm_start=warm)
    workers = cfg.tuning.parallel_workers
    return [TuningAssignment(study_name=name, worker=k, n_workers=workers, n_trials=budget, strategy=strategy)
            for k in range(workers)]


def run_tuning_worker(cfg: LoadedConfig, settings: Settings, assignment: Mapping[str, Any],
                      snapped: Mapping[str, Any]) -> TuningWork:
    """Run one worker's share of the study (all workers stop when the study holds the budget).

    Returns:
        `{"worker", "n_new"}`: how many trials this worker started.
    """
    from autopilot.modeling.splits import load_splits
    from autopilot.modeling.tuning import run_trials

    assignment = coerce(assignment, TuningAssignment)
    if not assignment.study_name:  # refit: nothing to search
        return TuningWork(worker=assignment.worker, n_new=0)
    splits, _ = load_splits(cfg, settings, coerce(snapped, Snapshots).snapshots)
    n_new = run_trials(splits.X_train, splits.y_train, cfg, settings.optuna_storage, assignment.study_name,
                       worker=int(assignment.worker), n_workers=int(assignment.n_workers),
                       n_trials=int(assignment.n_trials))
    return TuningWork(worker=assignment.worker, n_new=n_new)


def finish_tuning(cfg: LoadedConfig, settings: Settings, ctx: RunContext, assignments: Sequence[Mapping[str, Any]],
                  worked: Sequence[Mapping[str, Any]]) -> TunedResult:
    """Read the study's winner and log the search to MLflow (trials CSV, history and parameter importance plots,
    best params).

    Returns:
        `{"tune_run_id", "study_name", "best_params", "best_value", "n_trials"}`.
    """
    from autopilot.modeling.tuning import param_importance, plot_history, plot_param_importance, study_result

    if not assignments:
        raise ValueError("finish_tuning needs the assignments plan_tuning returned; got none")
    registry = connect(settings)
    name = coerce(assignments[0], TuningAssignment).study_name
    if name is None:
        return _refit_params(registry, cfg, settings, ctx)
    n_new = sum(int(coerce(w, TuningWork).n_new) for w in worked)
    result = study_result(cfg, settings.optuna_storage, name, n_new=n_new)
    with tempfile.TemporaryDirectory() as tmp, stage_run(registry, cfg, settings, ctx, "tune") as run:
        trials_csv = Path(tmp) / "trials.csv"
        result.trials.to_csv(trials_csv, index=False)
        run.log_artifact(str(trials_csv), "tuning")
        run.log_artifact(str(plot_history(result, Path(tmp) / "optimization_history.png")), "tuning")
        importance = param_importance(settings.optuna_storage, name, str(result.best_params["family"]),
                                      cfg.evaluation.importance_min_trials)
        run.log_artifact(str(plot_param_importance(importance, Path(tmp) / "param_importance.png")), "tuning")
        run.log_dict(importance, "tuning/param_importance.json")
        run.log_dict(result.best_params, "tuning/best_params.json")
        run.log_metrics({f"cv_{cfg.metric}": result.best_value, "n_trials": result.n_trials,
                         "n_pruned": result.n_pruned, "n_complete": result.n_complete})
        run.log_params({"tuning_workers": len(assignments)})
        run.set_tags({"autopilot.study_name": name, "autopilot.best_family": str(result.best_params["family"])})
    return TunedResult(tune_run_id=run.run_id, study_name=name, best_params=result.best_params,
                       best_value=result.best_value, n_trials=result.n_trials)


def tune_model(cfg: LoadedConfig, settings: Settings, ctx: RunContext, snapped: Mapping[str, Any]) -> TunedResult:
    """The whole tuning stage in one process: plan, every worker in turn, finish.

    The training DAG runs the same three functions as separate tasks, the workers mapped
    (`tuning.parallel_workers`), so Celery or Kubernetes workers share the study.
    """
    assignments = plan_tuning(cfg, settings, ctx, snapped)
    worked = [run_tuning_worker(cfg, settings, a, snapped) for a in assignments]
    return finish_tuning(cfg, settings, ctx, assignments, worked)


def _data_digest(snapped: Snapshots) -> str:
    """The training data's identity: the reference snapshot, plus the recent batch in a retrain."""
    snaps = snapped.snapshots
    if "recent" not in snaps:
        return str(snaps["train"].digest)
    import hashlib

    return hashlib.sha256(f"{snaps['train'].digest}+{snaps['recent'].digest}".encode()).hexdigest()


def _champion(registry: Registry, cfg: LoadedConfig) -> ModelVersion:
    """The champion version (an unreachable registry raises: the task retries)."""
    return registry.resolve_version(cfg.registered_model_name, CHAMPION)


def _refit_params(registry: Registry, cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> TunedResult:
    """`refit`: the champion's hyperparameters on the new training window, no search (moderate drift)."""
    version = _champion(registry, cfg)
    params = registry.load_dict(str(version.run_id), "model_params.json")
    with stage_run(registry, cfg, settings, ctx, "tune") as run:
        run.log_dict(params, "tuning/best_params.json")
        run.set_tags({"autopilot.retrain.strategy": "refit", "autopilot.retrain.from_version": str(version.version),
                      "autopilot.best_family": str(params["family"])})
    return TunedResult(tune_run_id=run.run_id, study_name=f"refit-of-v{version.version}", best_params=params,
                       best_value=None, n_trials=0)


def _previous_best_trials(registry: Registry, cfg: LoadedConfig, settings: Settings,
                          k: int = 5) -> list[dict[str, Any]]:
    """The champion's study's best `k` trials (raw Optuna params), to warm-start a re-tune."""
    import optuna

    version = _champion(registry, cfg)
    name = (version.tags or {}).get("autopilot.study_name")
    if not name:
        return []
    try:
        study = optuna.load_study(study_name=name, storage=settings.optuna_storage)
    except KeyError:  # the study was deleted: start cold
        return []
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return [dict(t.params) for t in sorted(done, key=lambda t: float(t.value or 0.0), reverse=reverse)[:k]]


def _quality_floor(cfg: LoadedConfig, metrics: dict[str, float]) -> GateReport:
    import math

    reasons = []
    for name, floor in cfg.gates.quality.min_metrics.items():
        value = metrics.get(name, math.nan)
        if not value >= floor:  # NaN fails too
            reasons.append(f"test {name} {value:.4f} is below the floor {floor}")
    for name, ceiling in cfg.gates.quality.max_metrics.items():
        value = metrics.get(name, math.nan)
        if not value <= ceiling:
            reasons.append(f"test {name} {value:.4f} is above the ceiling {ceiling}")
    thresholds = {**{k: f">= {v}" for k, v in cfg.gates.quality.min_metrics.items()},
                  **{k: f"<= {v}" for k, v in cfg.gates.quality.max_metrics.items()}}
    return GateReport(name="quality_floor", passed=not reasons, metrics=metrics, thresholds=thresholds, reasons=reasons)


def signature_for(cfg: LoadedConfig, X: pd.DataFrame, served: Any) -> Any:
    """The MLflow signature: inputs typed from the config (not guessed), outputs as served."""
    return model_signature({name: "double" if spec.type == "numeric" else "string"
                            for name, spec in cfg.features.items()}, X, served)


def train_and_register(cfg: LoadedConfig, settings: Settings, ctx: RunContext, snapped: Mapping[str, Any],
                       tuned: Mapping[str, Any]) -> RegisteredVersion:
    """Refit the best pipeline, evaluate it on the held-out split, log and register it.

    Returns:
        `ModelRef.as_ref()` plus `metrics`; the version has a SHA-256 manifest tag and no alias
        (`decide` gives it `challenger` once it passes the gates).

    Raises:
        GateFailure: when the test metrics miss the configured floors (nothing is registered).
        locks.LockTimeout: another copy of this task held the run's registration lock too long.

    Airflow runs a task at least once, so two copies may run at the same time: the DAG run's
    registration lock (in the state database, released if its holder is killed) makes the
    second wait, then find and return the first one's version. A run killed mid-way is resumed
    by the rerun (`stage_run` finds it by key); one killed after registering is finished by it.
    """
    import numpy as np

    from autopilot.adapters.registry.model_loading import manifest_tags
    from autopilot.adapters.state_db.locks import state_lock
    from autopilot.faults import checkpoint
    from autopilot.modeling.splits import load_splits

    snapped, tuned = coerce(snapped, Snapshots), coerce(tuned, TunedResult)
    name = cfg.registered_model_name
    key = ctx.key(cfg, "train")
    registry = connect(settings)
    with state_lock(settings, f"register:{key}"):
        found = registry.find_version(name, key)
        if found is not None:  # this DAG run already registered its version
            return _finish_registration(registry, name, key, found)
        splits, frames = load_splits(cfg, settings, snapped.snapshots)
        with tempfile.TemporaryDirectory() as tmp, stage_run(registry, cfg, settings, ctx, "train") as run:
            info, metrics, manifest = _fit_and_log(run, cfg, snapped, tuned, splits, frames, Path(tmp))
            tags = _version_tags(cfg, ctx, snapped, tuned, metrics, key)
            if cfg.task is Task.MULTICLASS_CLASSIFICATION:
                # sklearn classifiers order their classes as numpy.unique of the training labels.
                tags[CLASSES_TAG] = json.dumps([str(c) for c in np.unique(np.asarray(splits.y_train, dtype=str))])
            tags.update(manifest_tags(name, manifest, settings.signing_key))  # signed when a key is configured
            checkpoint("train.logged")
        version = registry.create_version(name, info.model_uri, run.run_id, tags)
        checkpoint("train.registered")
        return replace(_finish_registration(registry, name, key, version), metrics=metrics)


def _finish_registration(registry: Registry, name: str, key: str, version: ModelVersion) -> RegisteredVersion:
    """Finish a registered version of this run, once, and return its reference.

    The version gets no alias here: `challenger` goes only to a version that passed the gates
    (`gates.decide_version`), so a rejected version never holds one. A duplicate
    registration (MLflow's client retries a POST whose answer was lost, and the server had
    registered it) is deleted: one version per DAG run.
    """
    found = registry.find_versions(name, key) or [version]
    version = found[0]
    for extra in found[1:]:
        if not (extra.aliases or []):
            registry.delete_version(name, extra.version)
    run = registry.get_run(str(version.run_id))
    metrics = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return RegisteredVersion.from_xcom({**_version_ref(version), "metrics": metrics})


def _fit_and_log(run: RunHandle, cfg: LoadedConfig, snapped: Snapshots, tuned: TunedResult, splits: Splits,
                 frames: dict[str, pd.DataFrame], workdir: Path) -> tuple[Any, dict[str, float], dict[str, str]]:
    import numpy as np

    from autopilot.modeling.fingerprint import environment_fingerprint, fingerprint_tags
    from autopilot.modeling.training import class_order, fit_pipeline, metrics_from_scores, predict_scores

    params, seed = tuned.best_params, cfg.tuning.seed
    log_dataset_inputs(run, cfg, frames, snapped.snapshots,
                       {"train": "training", "test": "testing", "recent": "training"})
    pipeline = fit_pipeline(params, cfg, splits.X_train, splits.y_train, seed)
    if len(splits.X_test) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    scores = predict_scores(pipeline, splits.X_test, cfg.task)  # once: for the metrics and the record
    labels = class_order(pipeline) if cfg.task is Task.MULTICLASS_CLASSIFICATION else None
    metrics = metrics_from_scores(splits.y_test, scores, cfg.task, labels=labels)
    if labels is not None:  # the class order of every probability it serves (`CLASSES_TAG`)
        run.set_tags({CLASSES_TAG: json.dumps([str(label) for label in labels])})
    run.log_params({f"model.{k}": v for k, v in params.items()})
    run.log_dict(params, "model_params.json")
    run.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    seeds = {"split": cfg.split.seed, "tuning": cfg.tuning.seed, "estimator": seed}
    fingerprint = environment_fingerprint(config_hash(cfg), seeds)
    run.log_dict(fingerprint, "environment.json")
    run.set_tags(fingerprint_tags(fingerprint))
    run.log_dict(json.loads(cfg.model_dump_json(exclude={"path"})), "config.json")
    np.save(workdir / "test_scores.npy", scores)
    run.log_artifact(str(workdir / "test_scores.npy"), "evaluation")
    floor = _quality_floor(cfg, metrics)
    run.log_dict(floor.model_dump(mode="json"), "gates/quality_floor.json")
    if not floor.passed:
        run.set_tag("autopilot.decision", "rejected: " + "; ".join(floor.reasons))
        raise GateFailure(floor)
    predict_fn = "predict_proba" if cfg.task.classification else "predict"
    served = getattr(pipeline, predict_fn)(splits.X_test.head(50))
    info = run.log_sklearn_model(pipeline, splits.X_test.head(5), signature_for(cfg, splits.X_test, served),
                                 cfg.registry.allow_pickle, predict_fn)
    manifest = sha256_manifest(run.registry.download(info.model_uri, workdir / "model"))
    run.log_dict(manifest, "model_manifest.json")
    _evaluate_version(run, cfg, snapped, splits, pipeline, info, metrics, workdir / "model" / "MLmodel")
    return info, metrics, manifest


def _evaluate_version(run: RunHandle, cfg: LoadedConfig, snapped: Snapshots, splits: Splits, pipeline: Any,
                      info: Any, metrics: dict[str, float], mlmodel: Path) -> None:
    """Link the test metrics to the logged model and the test dataset, then run MLflow's evaluator on the holdout.

    The evaluator's metrics (`holdout_*`) and plots (ROC, precision-recall, calibration, confusion
    matrix; regression residuals) go to the version's run, linked to its logged model; it sees at
    most `evaluation.max_rows` rows (a seeded sample above), the test metrics all of them.
    """
    from autopilot.adapters.registry.evaluation import evaluate_fitted
    from autopilot.modeling.evaluation import capped, holdout, model_type, residuals_plot
    from autopilot.modeling.training import class_order

    snaps = snapped.snapshots
    test = snaps.get("test")
    full = holdout(cfg, splits.X_test, splits.y_test, test_digest=test.digest if test else None,
                   source=(test or snaps["train"]).uri)
    dataset = _as_dataset(cfg, full)
    run.log_metrics({f"test_{k}": v for k, v in metrics.items()}, model_id=info.model_id, dataset=dataset)
    sample = capped(full, cfg.evaluation.max_rows, cfg.split.seed)
    figures = {"residuals_plot": residuals_plot} if cfg.task is Task.REGRESSION else {}
    labels = class_order(pipeline) if cfg.task is Task.MULTICLASS_CLASSIFICATION else None
    result = evaluate_fitted(run.registry, run.run_id, model_id=info.model_id, mlmodel=mlmodel, estimator=pipeline,
                             # a holdout within the cap is evaluated whole: the dataset already built
                             dataset=dataset if sample is full else _as_dataset(cfg, sample),
                             model_type=model_type(cfg), figures=figures,
                             labels=labels)
    run.log_dict({**sample.describe(cfg), "metrics": result.metrics, "artifacts": result.artifacts},
                 "evaluation/holdout.json")


def _as_dataset(cfg: LoadedConfig, data: Any) -> Any:
    """An MLflow dataset of a `Holdout` (its name, digest and source; the encoded target as targets)."""
    return pandas_dataset(data.frame, source=data.source, name=data.name, targets=cfg.target.column,
                          digest=data.digest)


def _version_tags(cfg: LoadedConfig, ctx: RunContext, snapped: Snapshots, tuned: TunedResult,
                  metrics: dict[str, float], key: str) -> dict[str, str]:
    snaps = snapped.snapshots
    tags = {
        IDEMPOTENCY_TAG: key,
        "autopilot.model": cfg.name,
        "autopilot.dag_run_id": ctx.run_id,
        "autopilot.data_run_id": snapped.data_run_id,
        "autopilot.tune_run_id": tuned.tune_run_id,
        "autopilot.study_name": tuned.study_name,
        "autopilot.family": str(tuned.best_params["family"]),
        "autopilot.snapshot.train": f"sha256:{snaps['train'].digest}",
        f"autopilot.test_{cfg.metric}": f"{metrics[cfg.metric]:.6f}",
        CONFIG_TAG: config_hash(cfg),
    }
    if "test" in snaps:
        tags["autopilot.snapshot.test"] = f"sha256:{snaps['test'].digest}"
    if "recent" in snaps:  # a monitoring retrain: labeled served rows joined the training data
        tags["autopilot.snapshot.recent"] = f"sha256:{snaps['recent'].digest}"
    if ctx.retrain:
        tags["autopilot.retrain.strategy"] = str(ctx.retrain.get("strategy"))
        tags["autopilot.retrain.reason"] = str(ctx.retrain.get("reason", ""))[:500]
    return tags


CONFIG_TAG = "autopilot.config_sha256"  # the config a version was trained with (`config_hash`)


def trained_on(cfg: LoadedConfig, settings: Settings, snapped: Mapping[str, Any], newest: int = 100) -> int | None:
    """The newest version (of the last `newest`) trained on these snapshots with this config, else None.

    The snapshots are content-addressed, so a batch delivered twice is found however it was named.
    Retrains (with served rows) never match: their data is more than the snapshots say.
    """
    snaps = coerce(snapped, Snapshots).snapshots
    wanted = {f"autopilot.snapshot.{split}": f"sha256:{snaps[split].digest}" for split in ("train", "test")
              if split in snaps}
    wanted[CONFIG_TAG] = config_hash(cfg)
    for version in connect(settings).versions(cfg.registered_model_name, newest_first=True, limit=newest):
        tags = version.tags or {}
        same_splits = ("autopilot.snapshot.test" in tags) == ("autopilot.snapshot.test" in wanted)
        if same_splits and "autopilot.snapshot.recent" not in tags and \
                all(tags.get(key) == value for key, value in wanted.items()):
            return int(version.version)
    return None


def _version_ref(version: Any) -> dict[str, Any]:
    return ModelRef(
        name=version.name, version=int(version.version), run_id=version.run_id,
        model_uri=f"models:/{version.name}/{version.version}", source=version.source,
    ).as_ref()
