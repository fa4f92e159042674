"""The data stages: validate every batch the config names, then snapshot what was validated.

`validate_data` fails closed with a report on any problem; `snapshot_data` stores each
validated batch once, content-addressed, and records it as an MLflow run input. Both are
idempotent: the data stage's MLflow run is found again by its key (`context.stage_run`), and
two copies of `snapshot` at once take turns on the run's snapshot lock in the state database
(`promotion.state_lock`), released if the holder is killed.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import Registry, RunHandle, connect, pandas_dataset
from autopilot.config import LoadedConfig, config_hash
from autopilot.pipeline.context import (
    RunContext,
    SnapshotRef,
    Snapshots,
    ValidatedBatch,
    ValidatedBatches,
    coerce,
    stage_run,
)
from autopilot.reports import GateFailure, GateReport

if TYPE_CHECKING:
    import pandas as pd

    from autopilot.adapters.storage import ArtifactStore
    from autopilot.settings import Settings

__all__ = ["load_batch", "log_dataset_inputs", "snapshot_data", "validate_data"]


def _store(settings: Settings) -> ArtifactStore:
    from autopilot.adapters.storage import open_store

    return open_store(settings.artifact_root, access=settings.object_store)


def _sources(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> list[tuple[str, str]]:
    found = [("train", cfg.resolve(_event_batch(cfg, ctx.source) if ctx.source else cfg.data.source))]
    if ctx.retrain and ctx.retrain.get("window_end"):
        recent = _recent_labeled_batch(cfg, settings, ctx)
        if recent is not None:
            found.append(("recent", recent))
    if cfg.data.test_source:
        found.append(("test", cfg.resolve(cfg.data.test_source)))
    return found


def _event_batch(cfg: LoadedConfig, location: str) -> str:
    """The batch a data event named, if it lies under the data roots the config may read (as `data.source`).

    Raises:
        ConfigError: naming the location and the allowed roots (the run fails, no retry).
    """
    from autopilot.config import ConfigError, DataRoots

    try:
        return DataRoots.for_config(Path(cfg.path)).check(location)
    except ValueError as exc:
        raise ConfigError(f"the data event's batch: {exc}") from None


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


def _validate_one(cfg: LoadedConfig, split: str, location: str, store: ArtifactStore, workdir: Path,
                  run: RunHandle, home: Path, gx_run: str) -> tuple[GateReport, ValidatedBatch]:
    from autopilot.data.snapshot import digest_frame
    from autopilot.data.sources import DataSourceError
    from autopilot.data.validation import validate_batch

    try:
        frame = load_batch(cfg, location)
    except DataSourceError as exc:
        return GateReport.failed("data_validation", [str(exc)]), ValidatedBatch(source=location)
    digest = digest_frame(frame)[0] if len(frame.columns) else None
    docs_dir = workdir / split
    # Through the model's Checkpoint in the GX file context under the home (its Data Docs keep
    # every validation); this run's page is copied to docs_dir for MLflow.
    report = validate_batch(frame, cfg, docs_dir=docs_dir, home=home, run_name=gx_run)
    payload = report.model_dump(mode="json")
    run.log_dict(payload, f"validation/{split}/report.json")
    if docs_dir.is_dir():
        run.log_artifacts(str(docs_dir), f"validation/{split}/data_docs")
    report_key = f"validations/sha256/{digest or 'empty'}/{config_hash(cfg)[:16]}.json"
    store.put(report_key, json.dumps(payload, indent=2, sort_keys=True).encode())
    numeric = {f"validation.{split}.{k}": float(v) for k, v in report.metrics.items() if isinstance(v, int | float)}
    run.log_metrics(numeric)
    run.set_tags({
        f"autopilot.source.{split}": location,
        f"autopilot.digest.{split}": digest or "",
        f"autopilot.validation.{split}.passed": str(report.passed),
        f"autopilot.validation.{split}.report": store.uri(report_key),
    })
    return report, ValidatedBatch(source=location, digest=digest, rows=len(frame), report_uri=store.uri(report_key))


def validate_data(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> ValidatedBatches:
    """Validate every batch the config names; fail closed with a report on any problem.

    Returns:
        `{"data_run_id", "batches": {split: {source, digest, rows, report_uri}}}`.

    Raises:
        GateFailure: when any batch fails validation (the report is recorded first).
    """
    from autopilot.data.gx_context import run_name as gx_run_name

    store = _store(settings)
    reports: dict[str, GateReport] = {}
    batches: dict[str, ValidatedBatch] = {}
    with (tempfile.TemporaryDirectory() as tmp,
          stage_run(connect(settings), cfg, settings, ctx, "data") as run):
        for split, location in _sources(cfg, settings, ctx):
            reports[split], batches[split] = _validate_one(cfg, split, location, store, Path(tmp), run,
                                                           settings.home, gx_run_name(cfg.name, split, ctx.run_id))
        combined = _combine(reports)
        run.set_tag("autopilot.validation.passed", str(combined.passed))
        if not combined.passed:
            raise GateFailure(combined)
    return ValidatedBatches(data_run_id=run.run_id, batches=batches)


def log_dataset_inputs(run: RunHandle, cfg: LoadedConfig, frames: dict[str, pd.DataFrame],
                       snapshots: Mapping[str, SnapshotRef], contexts: dict[str, str]) -> None:
    """Record each frame as an input of a stage's MLflow run, named by its snapshot (split -> context)."""
    for split, frame in frames.items():
        snap = snapshots[split]
        dataset = pandas_dataset(
            frame, source=snap.uri, name=f"{cfg.name}-{split}", targets=cfg.target.column,
            # MLflow's digest column holds 36 characters; the full SHA-256 is in the source URI.
            digest=snap.digest[:32],
        )
        run.log_input(dataset, context=contexts[split])


def snapshot_data(cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                  validated: Mapping[str, Any]) -> Snapshots:
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
        return _snapshot_data(connect(settings), cfg, settings, ctx, coerce(validated, ValidatedBatches))


def _snapshot_data(registry: Registry, cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                   validated: ValidatedBatches) -> Snapshots:
    from autopilot.data.snapshot import write_snapshot

    store = _store(settings)
    snapshots: dict[str, SnapshotRef] = {}
    frames: dict[str, pd.DataFrame] = {}
    for split, batch in validated.batches.items():
        frame = load_batch(cfg, batch.source)
        written = write_snapshot(frame, store, batch.source, expected_digest=batch.digest)
        snapshots[split] = SnapshotRef.from_xcom(written.as_ref())
        frames[split] = frame
    with stage_run(registry, cfg, settings, ctx, "data") as run:
        existing = run.dataset_digests()
        new = {split: frame for split, frame in frames.items() if snapshots[split].digest[:32] not in existing}
        log_dataset_inputs(run, cfg, new, snapshots, {split: split for split in new})
        for split, snap in snapshots.items():
            run.set_tag(f"autopilot.snapshot.{split}", snap.uri)
    return Snapshots(data_run_id=validated.data_run_id, snapshots=snapshots)
