"""The lifecycle stages: one function per DAG task, each taking and returning small references.

Each stage is idempotent. Its MLflow run is found again by an idempotency key
(`<model>/<dag run id>/<stage>`), snapshots are content-addressed, the Optuna study is named
after the data and search space, and the model version carries the key as a tag: a retry or
rerun of the same DAG run finds what it already made and does nothing twice. Two copies of one
task at once (Airflow delivers at least once) take turns: `snapshot` and `train_and_register` hold
their run's lock in the state database (`promotion.state_lock`), released if the holder is killed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters import registry
from autopilot.aliases import CHAMPION
from autopilot.config import LoadedConfig, config_hash
from autopilot.reports import GateFailure, GateReport

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run

    from autopilot.adapters.storage import ArtifactStore
    from autopilot.modeling.splits import Splits
    from autopilot.settings import Settings

__all__ = [
    "RunContext",
    "experiment_name",
    "finish_tuning",
    "load_batch",
    "plan_tuning",
    "run_tuning_worker",
    "snapshot_data",
    "train_and_register",
    "tune_model",
    "validate_data",
]

@dataclass(frozen=True)
class RunContext:
    """Who is running the pipeline: the DAG run (or CLI invocation) behind every side effect."""

    run_id: str
    dag_id: str = ""
    actor: str = "autopilot"
    # Set when the monitoring loop triggered this run: {"strategy": "refit"|"retune", "reason",
    # "window_start", "window_end"}. None for a regular run.
    retrain: dict[str, Any] | None = None

    def key(self, cfg: LoadedConfig, stage: str) -> str:
        """The idempotency key of one stage of this run."""
        return f"{cfg.name}/{self.run_id}/{stage}"


def experiment_name(cfg: LoadedConfig) -> str:
    """The MLflow experiment holding every run of a model."""
    return f"autopilot/{cfg.name}"


def _store(settings: Settings) -> ArtifactStore:
    from autopilot.adapters.storage import open_store

    return open_store(settings.artifact_root)


@contextmanager
def _stage_run(cfg: LoadedConfig, settings: Settings, ctx: RunContext, stage: str) -> Iterator[Run]:
    """Start, or resume after a retry, the MLflow run of one stage of one DAG run."""
    import mlflow

    registry.configure(settings)
    experiment_id = registry.ensure_experiment(experiment_name(cfg), settings.mlflow_artifact_root)
    key = ctx.key(cfg, stage)
    existing = registry.find_run(experiment_id, key)
    tags = {
        registry.IDEMPOTENCY_TAG: key,
        "autopilot.model": cfg.name,
        "autopilot.stage": stage,
        "autopilot.dag_id": ctx.dag_id,
        "autopilot.dag_run_id": ctx.run_id,
        "autopilot.actor": ctx.actor,
    }
    run_id = existing.info.run_id if existing else None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=stage, tags=tags) as run:
        yield run


def _sources(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> list[tuple[str, str]]:
    found = [("train", cfg.resolve(cfg.data.source))]
    if ctx.retrain:
        recent = _recent_labeled_batch(cfg, settings, ctx)
        if recent is not None:
            found.append(("recent", recent))
    if cfg.data.test_source:
        found.append(("test", cfg.resolve(cfg.data.test_source)))
    return found


def _recent_labeled_batch(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> str | None:
    """Served rows with labels, as one more training batch (the retraining window), stored once.

    The window policy (`monitoring.retrain.window`): `sliding` takes labeled traffic of the last
    `window_days` before the triggering window's end, `expanding` all labeled traffic up to it;
    both add it to the reference data (the config's source), which keeps the model anchored.
    Fewer labeled rows than `validation.min_rows` add nothing (logged).
    """
    import io
    import logging
    from datetime import datetime, timedelta

    from autopilot.serving.inference_log import InferenceLog

    assert ctx.retrain is not None
    end = datetime.fromisoformat(str(ctx.retrain["window_end"]))
    retrain = cfg.monitoring.retrain
    start = end - timedelta(days=retrain.window_days) if retrain.window == "sliding" else datetime(1970, 1, 1,
                                                                                                    tzinfo=end.tzinfo)
    inference_log = InferenceLog(settings.inference_db)
    try:
        frame = inference_log.window(cfg.name, start, end)
    finally:
        inference_log.close()
    labeled = frame[frame["label"].notna()] if len(frame) else frame
    if len(labeled) < cfg.validation.min_rows:
        logging.getLogger(__name__).info("retrain of %s: %d labeled served rows (< validation.min_rows %d); "
                                         "training on the reference data only", cfg.name, len(labeled),
                                         cfg.validation.min_rows)
        return None
    batch = labeled.rename(columns={f"feature_{n}": n for n in cfg.features})[list(cfg.features)].copy()
    batch[cfg.target.column] = labeled["label"].astype(str).to_numpy()
    # In content order: the log's order depends on how concurrent requests were batched, and the
    # same labeled rows must give the same training data (and model) whatever that order was.
    batch = batch.sort_values(list(batch.columns), kind="mergesort", na_position="last").reset_index(drop=True)
    buffer = io.BytesIO()
    batch.to_parquet(buffer, index=False)
    store = _store(settings)
    key = f"retrain/{cfg.name}/{ctx.run_id}/recent.parquet"
    store.put(key, buffer.getvalue())  # once per run: a retry reads the same rows back
    return store.uri(key)


def load_batch(cfg: LoadedConfig, location: str) -> pd.DataFrame:
    """Read a source and bring it to the canonical layout."""
    from autopilot.data.sources import canonicalize, read_frame

    return canonicalize(read_frame(location, cfg.data.format), cfg)


def _combine(reports: dict[str, GateReport]) -> GateReport:
    reasons = [f"{split}: {reason}" for split, report in reports.items() for reason in report.reasons]
    metrics = {f"{split}.{name}": value for split, report in reports.items() for name, value in report.metrics.items()}
    return GateReport(
        name="data_validation",
        passed=all(report.passed for report in reports.values()),
        metrics=metrics,
        reasons=reasons,
        details={split: report.details for split, report in reports.items()},
    )


def _validate_one(cfg: LoadedConfig, split: str, location: str, store: ArtifactStore, workdir: Path) -> tuple[
        GateReport, dict[str, Any]]:
    import mlflow

    from autopilot.data.snapshot import digest_frame
    from autopilot.data.sources import DataSourceError
    from autopilot.data.validation import validate_batch

    try:
        frame = load_batch(cfg, location)
    except DataSourceError as exc:
        return GateReport.failed("data_validation", [str(exc)]), {"source": location, "digest": None}
    digest = digest_frame(frame)[0] if len(frame.columns) else None
    docs_dir = workdir / split
    report = validate_batch(frame, cfg, docs_dir=docs_dir)
    payload = report.model_dump(mode="json")
    mlflow.log_dict(payload, f"validation/{split}/report.json")
    if docs_dir.is_dir():
        mlflow.log_artifacts(str(docs_dir), f"validation/{split}/data_docs")
    report_key = f"validations/sha256/{digest or 'empty'}/{config_hash(cfg)[:16]}.json"
    store.put(report_key, json.dumps(payload, indent=2, sort_keys=True).encode())
    numeric = {f"validation.{split}.{k}": float(v) for k, v in report.metrics.items() if isinstance(v, int | float)}
    mlflow.log_metrics(numeric)
    mlflow.set_tags({
        f"autopilot.source.{split}": location,
        f"autopilot.digest.{split}": digest or "",
        f"autopilot.validation.{split}.passed": str(report.passed),
        f"autopilot.validation.{split}.report": store.uri(report_key),
    })
    return report, {"source": location, "digest": digest, "rows": len(frame), "report_uri": store.uri(report_key)}


def validate_data(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> dict[str, Any]:
    """Validate every batch the config names; fail closed with a report on any problem.

    Returns:
        `{"data_run_id", "batches": {split: {source, digest, rows, report_uri}}}`.

    Raises:
        GateFailure: when any batch fails validation (the report is recorded first).
    """
    store = _store(settings)
    reports: dict[str, GateReport] = {}
    batches: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, _stage_run(cfg, settings, ctx, "data") as run:
        for split, location in _sources(cfg, settings, ctx):
            reports[split], batches[split] = _validate_one(cfg, split, location, store, Path(tmp))
        combined = _combine(reports)
        import mlflow

        mlflow.set_tag("autopilot.validation.passed", str(combined.passed))
        if not combined.passed:
            raise GateFailure(combined)
    return {"data_run_id": run.info.run_id, "batches": batches}


def _log_dataset_inputs(cfg: LoadedConfig, frames: dict[str, pd.DataFrame], snapshots: dict[str, Any],
                        contexts: dict[str, str]) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    for split, frame in frames.items():
        snap = snapshots[split]
        dataset = from_pandas(
            frame, source=snap["uri"], name=f"{cfg.name}-{split}", targets=cfg.target.column,
            # MLflow's digest column holds 36 characters; the full SHA-256 is in the source URI.
            digest=snap["digest"][:32],
        )
        mlflow.log_input(dataset, context=contexts[split])


def snapshot_data(cfg: LoadedConfig, settings: Settings, ctx: RunContext, validated: dict[str, Any]) -> dict[str, Any]:
    """Store each validated batch once, content-addressed, and record it as an MLflow run input.

    The batch is read again and must hash to the digest validation saw, so data that changed
    in between is refused rather than versioned unvalidated.

    Returns:
        `{"data_run_id", "snapshots": {split: Snapshot.as_ref()}}`.

    Two copies of the task at once (Airflow delivers at least once) take turns on the run's
    snapshot lock: the objects are content-addressed anyway, and the second copy then finds the
    MLflow inputs the first logged instead of logging them again.
    """
    from autopilot.adapters.state_db.locks import state_lock

    with state_lock(settings, f"snapshot:{ctx.key(cfg, 'data')}"):
        return _snapshot_data(cfg, settings, ctx, validated)


def _snapshot_data(cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                   validated: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    from autopilot.data.snapshot import write_snapshot

    store = _store(settings)
    snapshots: dict[str, Any] = {}
    frames: dict[str, pd.DataFrame] = {}
    for split, batch in validated["batches"].items():
        frame = load_batch(cfg, batch["source"])
        snapshots[split] = write_snapshot(frame, store, batch["source"], expected_digest=batch["digest"]).as_ref()
        frames[split] = frame
    with _stage_run(cfg, settings, ctx, "data"):
        existing = {d.dataset.digest for d in (mlflow.active_run().inputs.dataset_inputs or [])}  # type: ignore[union-attr]
        new = {split: frame for split, frame in frames.items() if snapshots[split]["digest"][:32] not in existing}
        _log_dataset_inputs(cfg, new, snapshots, {split: split for split in new})
        for split, snap in snapshots.items():
            mlflow.set_tag(f"autopilot.snapshot.{split}", snap["uri"])
    return {"data_run_id": validated["data_run_id"], "snapshots": snapshots}


def _load_splits(cfg: LoadedConfig, settings: Settings,
                 snapshots: dict[str, Any]) -> tuple[Splits, dict[str, pd.DataFrame]]:
    from autopilot.data.snapshot import load_snapshot
    from autopilot.modeling.splits import make_splits

    store = _store(settings)
    frames = {split: load_snapshot(store, snap["digest"]) for split, snap in snapshots.items()}
    train = frames["train"]
    if "recent" in frames:  # a retrain: the reference plus labeled served rows
        import pandas

        train = pandas.concat([train, frames["recent"]], ignore_index=True)
    return make_splits(train, frames.get("test"), cfg), frames


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
                snapped: dict[str, Any]) -> list[dict[str, Any]]:
    """Open the run's Optuna study and hand out one assignment per tuning worker.

    The study lives in RDB storage under a name derived from the data and search settings,
    so a retry resumes it and a rerun spends no second budget. A `refit` retrain searches
    nothing: it gets one assignment that runs no trial. A `retune` gets its own study, seeded
    with the champion's best trials and the retrain budget.

    Returns:
        `tuning.parallel_workers` assignments `{"study_name", "worker", "n_workers", "n_trials"}`
        (small: they travel through XCom to mapped tasks).
    """
    from autopilot.modeling.tuning import open_study

    strategy = (ctx.retrain or {}).get("strategy")
    if strategy == "refit":
        return [{"study_name": None, "worker": 0, "n_workers": 1, "n_trials": 0, "strategy": "refit"}]
    name = study_name(cfg, _data_digest(snapped))
    warm: list[dict[str, Any]] = []
    budget = cfg.tuning.n_trials
    if strategy == "retune":
        warm, budget = _previous_best_trials(cfg, settings), cfg.monitoring.retrain.retune_trials
        name += "-retune"
    open_study(cfg, settings.optuna_storage, name, warm_start=warm)
    workers = cfg.tuning.parallel_workers
    return [{"study_name": name, "worker": k, "n_workers": workers, "n_trials": budget, "strategy": strategy}
            for k in range(workers)]


def run_tuning_worker(cfg: LoadedConfig, settings: Settings, assignment: dict[str, Any],
                      snapped: dict[str, Any]) -> dict[str, Any]:
    """Run one worker's share of the study (all workers stop when the study holds the budget).

    Returns:
        `{"worker", "n_new"}`: how many trials this worker started.
    """
    from autopilot.modeling.tuning import run_trials

    if not assignment.get("study_name"):  # refit: nothing to search
        return {"worker": assignment["worker"], "n_new": 0}
    splits, _ = _load_splits(cfg, settings, snapped["snapshots"])
    n_new = run_trials(splits.X_train, splits.y_train, cfg, settings.optuna_storage, assignment["study_name"],
                       worker=int(assignment["worker"]), n_workers=int(assignment["n_workers"]),
                       n_trials=int(assignment["n_trials"]))
    return {"worker": assignment["worker"], "n_new": n_new}


def finish_tuning(cfg: LoadedConfig, settings: Settings, ctx: RunContext, assignments: list[dict[str, Any]],
                  worked: list[dict[str, Any]]) -> dict[str, Any]:
    """Read the study's winner and log the search to MLflow (trials CSV, history plot, best params).

    Returns:
        `{"tune_run_id", "study_name", "best_params", "best_value", "n_trials"}`.
    """
    import mlflow

    from autopilot.modeling.tuning import plot_history, study_result

    if not assignments:
        raise ValueError("finish_tuning needs the assignments plan_tuning returned; got none")
    name = assignments[0]["study_name"]
    if name is None:
        return _refit_params(cfg, settings, ctx)
    result = study_result(cfg, settings.optuna_storage, name, n_new=sum(int(w["n_new"]) for w in worked))
    with tempfile.TemporaryDirectory() as tmp, _stage_run(cfg, settings, ctx, "tune") as run:
        trials_csv = Path(tmp) / "trials.csv"
        result.trials.to_csv(trials_csv, index=False)
        mlflow.log_artifact(str(trials_csv), "tuning")
        mlflow.log_artifact(str(plot_history(result, Path(tmp) / "optimization_history.png")), "tuning")
        mlflow.log_dict(result.best_params, "tuning/best_params.json")
        mlflow.log_metrics({f"cv_{cfg.metric}": result.best_value, "n_trials": result.n_trials,
                            "n_pruned": result.n_pruned, "n_complete": result.n_complete})
        mlflow.log_params({"tuning_workers": len(assignments)})
        mlflow.set_tags({"autopilot.study_name": name, "autopilot.best_family": str(result.best_params["family"])})
    return {"tune_run_id": run.info.run_id, "study_name": name, "best_params": result.best_params,
            "best_value": result.best_value, "n_trials": result.n_trials}


def tune_model(cfg: LoadedConfig, settings: Settings, ctx: RunContext, snapped: dict[str, Any]) -> dict[str, Any]:
    """The whole tuning stage in one process: plan, every worker in turn, finish.

    The training DAG runs the same three functions as separate tasks, the workers mapped
    (`tuning.parallel_workers`), so Celery or Kubernetes workers share the study.
    """
    assignments = plan_tuning(cfg, settings, ctx, snapped)
    worked = [run_tuning_worker(cfg, settings, a, snapped) for a in assignments]
    return finish_tuning(cfg, settings, ctx, assignments, worked)


def _data_digest(snapped: dict[str, Any]) -> str:
    """The training data's identity: the reference snapshot, plus the recent batch in a retrain."""
    snaps = snapped["snapshots"]
    if "recent" not in snaps:
        return str(snaps["train"]["digest"])
    import hashlib

    return hashlib.sha256(f"{snaps['train']['digest']}+{snaps['recent']['digest']}".encode()).hexdigest()


def _champion_run(cfg: LoadedConfig) -> Any:
    version = registry.resolve_version(cfg.registered_model_name, CHAMPION)
    return version, registry.client().get_run(str(version.run_id))


def _refit_params(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> dict[str, Any]:
    """`refit`: the champion's hyperparameters on the new training window, no search (moderate drift)."""
    import mlflow

    registry.configure(settings)
    version, _ = _champion_run(cfg)
    params = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/model_params.json")
    with _stage_run(cfg, settings, ctx, "tune") as run:
        mlflow.log_dict(params, "tuning/best_params.json")
        mlflow.set_tags({"autopilot.retrain.strategy": "refit", "autopilot.retrain.from_version": str(version.version),
                         "autopilot.best_family": str(params["family"])})
    return {"tune_run_id": run.info.run_id, "study_name": f"refit-of-v{version.version}", "best_params": params,
            "best_value": None, "n_trials": 0}


def _previous_best_trials(cfg: LoadedConfig, settings: Settings, k: int = 5) -> list[dict[str, Any]]:
    """The champion's study's best `k` trials (raw Optuna params), to warm-start a re-tune."""
    import optuna

    registry.configure(settings)
    version, _ = _champion_run(cfg)
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
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("double" if spec.type == "numeric" else "string", name)
                     for name, spec in cfg.features.items()])
    return ModelSignature(inputs=inputs, outputs=infer_signature(X, served).outputs)


def train_and_register(cfg: LoadedConfig, settings: Settings, ctx: RunContext, snapped: dict[str, Any],
                       tuned: dict[str, Any]) -> dict[str, Any]:
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
    by the rerun (`_stage_run` finds it by key); one killed after registering is finished by it.
    """
    from autopilot.adapters.model_loading import manifest_tags
    from autopilot.adapters.state_db.locks import state_lock
    from autopilot.faults import checkpoint

    name = cfg.registered_model_name
    key = ctx.key(cfg, "train")
    registry.configure(settings)
    with state_lock(settings, f"register:{key}"):
        found = registry.find_version(name, key)
        if found is not None:  # this DAG run already registered its version
            return _finish_registration(name, key, found)
        splits, frames = _load_splits(cfg, settings, snapped["snapshots"])
        with tempfile.TemporaryDirectory() as tmp, _stage_run(cfg, settings, ctx, "train") as run:
            info, metrics, manifest = _fit_and_log(cfg, snapped, tuned, splits, frames, Path(tmp))
            tags = _version_tags(cfg, ctx, snapped, tuned, metrics, key)
            tags.update(manifest_tags(name, manifest, settings.signing_key))  # signed when a key is configured
            checkpoint("train.logged")
        version = registry.create_version(name, info.model_uri, run.info.run_id, tags)
        checkpoint("train.registered")
        return {**_finish_registration(name, key, version), "metrics": metrics}


def _finish_registration(name: str, key: str, version: Any) -> dict[str, Any]:
    """Finish a registered version of this run, once, and return its reference.

    The version gets no alias here: `challenger` goes only to a version that passed the gates
    (`gate_stages.decide_version`), so a rejected version never holds one. A duplicate
    registration (MLflow's client retries a POST whose answer was lost, and the server had
    registered it) is deleted: one version per DAG run.
    """
    found = registry.find_versions(name, key) or [version]
    version = found[0]
    for extra in found[1:]:
        if not (extra.aliases or []):
            registry.client().delete_model_version(name, str(extra.version))
    run = registry.client().get_run(str(version.run_id))
    metrics = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return {**_version_ref(version), "metrics": metrics}


def _fit_and_log(cfg: LoadedConfig, snapped: dict[str, Any], tuned: dict[str, Any], splits: Splits,
                 frames: dict[str, pd.DataFrame], workdir: Path) -> tuple[Any, dict[str, float], dict[str, str]]:
    import mlflow
    import numpy as np

    from autopilot.modeling.fingerprint import environment_fingerprint, fingerprint_tags
    from autopilot.modeling.training import fit_pipeline, metrics_from_scores, predict_scores

    params, seed = tuned["best_params"], cfg.tuning.seed
    _log_dataset_inputs(cfg, frames, snapped["snapshots"], {"train": "training", "test": "testing",
                                                           "recent": "training"})
    pipeline = fit_pipeline(params, cfg, splits.X_train, splits.y_train, seed)
    if len(splits.X_test) == 0:
        raise ValueError("the test split is empty: nothing to evaluate")
    scores = predict_scores(pipeline, splits.X_test, cfg.task)  # once: for the metrics and the record
    metrics = metrics_from_scores(splits.y_test, scores, cfg.task)
    mlflow.log_params({f"model.{k}": v for k, v in params.items()})
    mlflow.log_dict(params, "model_params.json")
    mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    seeds = {"split": cfg.split.seed, "tuning": cfg.tuning.seed, "estimator": seed}
    fingerprint = environment_fingerprint(config_hash(cfg), seeds)
    mlflow.log_dict(fingerprint, "environment.json")
    mlflow.set_tags(fingerprint_tags(fingerprint))
    mlflow.log_dict(json.loads(cfg.model_dump_json(exclude={"path"})), "config.json")
    np.save(workdir / "test_scores.npy", scores)
    mlflow.log_artifact(str(workdir / "test_scores.npy"), "evaluation")
    floor = _quality_floor(cfg, metrics)
    mlflow.log_dict(floor.model_dump(mode="json"), "gates/quality_floor.json")
    if not floor.passed:
        mlflow.set_tag("autopilot.decision", "rejected: " + "; ".join(floor.reasons))
        raise GateFailure(floor)
    predict_fn = "predict_proba" if cfg.task.value == "binary_classification" else "predict"
    served = getattr(pipeline, predict_fn)(splits.X_test.head(50))
    info = registry.log_sklearn_model(pipeline, splits.X_test.head(5), signature_for(cfg, splits.X_test, served),
                                      cfg.registry.allow_pickle, predict_fn)
    manifest = registry.sha256_manifest(Path(mlflow.artifacts.download_artifacts(info.model_uri)))
    mlflow.log_dict(manifest, "model_manifest.json")
    return info, metrics, manifest


def _version_tags(cfg: LoadedConfig, ctx: RunContext, snapped: dict[str, Any], tuned: dict[str, Any],
                  metrics: dict[str, float], key: str) -> dict[str, str]:
    snaps = snapped["snapshots"]
    tags = {
        registry.IDEMPOTENCY_TAG: key,
        "autopilot.model": cfg.name,
        "autopilot.dag_run_id": ctx.run_id,
        "autopilot.data_run_id": snapped["data_run_id"],
        "autopilot.tune_run_id": tuned["tune_run_id"],
        "autopilot.study_name": tuned["study_name"],
        "autopilot.family": str(tuned["best_params"]["family"]),
        "autopilot.snapshot.train": f"sha256:{snaps['train']['digest']}",
        f"autopilot.test_{cfg.metric}": f"{metrics[cfg.metric]:.6f}",
    }
    if "test" in snaps:
        tags["autopilot.snapshot.test"] = f"sha256:{snaps['test']['digest']}"
    if "recent" in snaps:  # a monitoring retrain: labeled served rows joined the training data
        tags["autopilot.snapshot.recent"] = f"sha256:{snaps['recent']['digest']}"
    if ctx.retrain:
        tags["autopilot.retrain.strategy"] = str(ctx.retrain.get("strategy"))
        tags["autopilot.retrain.reason"] = str(ctx.retrain.get("reason", ""))[:500]
    return tags


def _version_ref(version: Any) -> dict[str, Any]:
    return registry.ModelRef(
        name=version.name, version=int(version.version), run_id=version.run_id,
        model_uri=f"models:/{version.name}/{version.version}", source=version.source,
    ).as_ref()
