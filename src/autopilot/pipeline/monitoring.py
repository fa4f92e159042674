"""The monitoring stage: one window of served traffic -> drift, performance, attribution, anomalies, decision.

`monitor_window` is what the monitoring DAG's task calls for its data interval. It reads the
inference-log rows of `[start, end)` (a rerun reads the same rows), compares them with the
champion's reference (built once per champion from its training snapshot and stored with the
version), estimates performance before labels arrive and measures it once they do, feeds the
metric series to the adaptive anomaly detector, and decides `none | alert | retrain | rollback`
(`monitoring.decision`). The report (JSON, plus Evidently's HTML) is stored per window in the
artifact store and in the state database; a retrain is recorded once per window (its run id
derives from the window) before the DAG triggers it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.adapters.registry import Registry, connect
from autopilot.aliases import CHAMPION
from autopilot.config import Task
from autopilot.reports import json_safe

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.pipeline.context import RunContext
    from autopilot.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Reference", "load_reference", "monitor_window", "retrain_run_id"]

REFERENCE_ROWS = 50_000  # a seeded sample of the training snapshot: plenty for distributions
MIN_LABELED_ROWS = 50  # fewer labels than this measure noise, not performance
SMOKE_PREFIX = "rollout-"  # the rollout's own requests are not traffic
REFERENCE_FILES = ("reference.npz", "calibrator.json", "reference.json")  # under `monitoring/` on the run


class Reference:
    """What every window of one champion is compared with (built once, stored with the version)."""

    def __init__(self, profile: Any, calibrator: Any, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        self.profile = profile
        self.calibrator = calibrator
        self.frame = frame
        self.meta = meta


def retrain_run_id(model: str, window_end: datetime) -> str:
    """The training DAG run a window's retrain triggers (one per window, so a rerun finds it)."""
    return f"retrain__{model}__{window_end.astimezone(UTC):%Y%m%dT%H%M%S}"


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- reference


def load_reference(registry: Registry, cfg: LoadedConfig, settings: Settings, version: Any) -> Reference:
    """The champion's reference: from its run's artifacts (in `registry`) if stored, else built and stored now."""
    from autopilot.monitoring.drift import ReferenceProfile
    from autopilot.monitoring.multiclass import load_calibrator

    run_id = str(version.run_id)
    frame = _training_frame(cfg, settings, version)
    if not set(REFERENCE_FILES) <= _artifact_names(registry, run_id, "monitoring"):  # not built yet for it
        log.info("building the monitoring reference of %s v%s", cfg.name, version.version)
        return _build_reference(registry, cfg, settings, version, frame)
    # Stored: read it. A download or read error fails the window (and Airflow retries it) rather
    # than rebuild the reference: until this was narrowed, a wrong path here failed every read
    # and the reference was silently rebuilt and logged again for every window.
    cache = settings.home / "monitoring" / cfg.name / f"v{version.version}"
    folder = registry.download_artifacts(run_id, "monitoring", _fresh(cache))  # .../monitoring
    profile = ReferenceProfile.load(folder / "reference.npz")
    calibrated = json.loads((folder / "calibrator.json").read_text())  # null for a regression model
    calibrator = load_calibrator(calibrated)  # binary isotonic, or one map per class (multiclass)
    meta = json.loads((folder / "reference.json").read_text())
    return Reference(profile, calibrator, frame, meta)


def _artifact_names(registry: Registry, run_id: str, folder: str) -> set[str]:
    """File names stored under a run's artifact folder (empty when there is none)."""
    return {Path(path).name for path in registry.list_artifacts(run_id, folder)}


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _snapshot(cfg: LoadedConfig, settings: Settings, version: Any, split: str) -> pd.DataFrame:
    from autopilot.adapters.storage import open_store
    from autopilot.data.snapshot import load_snapshot

    tag = (version.tags or {}).get(f"autopilot.snapshot.{split}", "")
    if not tag.startswith("sha256:"):
        raise LookupError(f"version {version.version} of {version.name} has no {split} snapshot tag")
    frame = load_snapshot(open_store(settings.artifact_root, access=settings.object_store), tag.removeprefix("sha256:"))
    return frame.sample(min(REFERENCE_ROWS, len(frame)), random_state=0).reset_index(drop=True)


def _training_frame(cfg: LoadedConfig, settings: Settings, version: Any) -> pd.DataFrame:
    """What the version was trained on: the reference snapshot, plus the served rows of a retrain."""
    frame = _snapshot(cfg, settings, version, "train")
    if (version.tags or {}).get("autopilot.snapshot.recent"):
        recent = _snapshot(cfg, settings, version, "recent")
        frame = pd.concat([frame, recent], ignore_index=True)
    return frame


def _build_reference(registry: Registry, cfg: LoadedConfig, settings: Settings, version: Any,
                     frame: pd.DataFrame) -> Reference:
    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.modeling.splits import encode_target, feature_frame
    from autopilot.modeling.training import predict_scores
    from autopilot.monitoring.drift import build_reference
    from autopilot.monitoring.performance import fit_calibrator

    model = load_version(version, LoadPolicy.of(cfg, settings), registry)
    scores = predict_scores(model, feature_frame(frame, cfg), cfg.task)
    classes = _classes(model) if cfg.task is Task.MULTICLASS_CLASSIFICATION else None
    if classes is not None:  # a multiclass model's drift check compares its predicted classes
        scores = np.argmax(scores, axis=1).astype(float)
    importance = _importance(registry, str(version.run_id))
    profile = build_reference(feature_frame(frame, cfg), scores, cfg, importance)
    try:
        holdout = _snapshot(cfg, settings, version, "test")
    except LookupError:
        holdout = frame
    calibrator: Any = None
    if cfg.task is Task.BINARY_CLASSIFICATION:
        calibrator = fit_calibrator(predict_scores(model, feature_frame(holdout, cfg), cfg.task),
                                    np.asarray(encode_target(holdout, cfg)))
    elif classes is not None:
        calibrator = _class_calibrator(model, holdout, cfg, classes)
    metric_tag = (version.tags or {}).get(f"autopilot.test_{cfg.metric}")
    meta = {"version": int(version.version), "rows": len(frame), "metric": cfg.metric,
            "reference_metric": float(metric_tag) if metric_tag else None, "importance": importance,
            "classes": classes}
    with tempfile.TemporaryDirectory() as tmp:
        profile.save(Path(tmp) / "reference.npz")
        (Path(tmp) / "calibrator.json").write_text(json.dumps(calibrator.as_dict() if calibrator else None))
        (Path(tmp) / "reference.json").write_text(json.dumps(json_safe(meta)))
        registry.run(str(version.run_id)).log_artifacts(tmp, "monitoring")
    return Reference(profile, calibrator, frame, meta)


def _classes(model: Any) -> list[str]:
    """A multiclass model's labels as text, in the order of its probabilities."""
    from autopilot.modeling.training import class_order
    from autopilot.monitoring.multiclass import label_text

    return [label_text(c) for c in class_order(model)]


def _class_calibrator(model: Any, holdout: pd.DataFrame, cfg: LoadedConfig, classes: list[str]) -> Any:
    """The per-class calibration on the held-out rows (None, with a warning, when a class is missing there)."""
    from autopilot.modeling.splits import feature_frame
    from autopilot.modeling.training import predict_scores
    from autopilot.monitoring.multiclass import fit_class_calibrator

    probabilities = predict_scores(model, feature_frame(holdout, cfg), cfg.task)
    try:
        return fit_class_calibrator(probabilities, holdout[cfg.target.column].tolist(), classes)
    except ValueError as exc:  # no label-free estimate then; realized metrics still come with labels
        log.warning("no multiclass calibration for %s: %s", cfg.name, exc)
        return None


def _importance(registry: Registry, run_id: str) -> dict[str, float] | None:
    """SHAP shares from the version's explainability gate report (None: uniform weights)."""
    if "explainability.json" not in _artifact_names(registry, run_id, "gates"):
        return None
    report = registry.load_dict(run_id, "gates/explainability.json")
    shares = (report.get("details") or {}).get("shares") or (report.get("metrics") or {}).get("shares")
    return {str(k): float(v) for k, v in shares.items()} if isinstance(shares, dict) else None


# ---------------------------------------------------------------------------- the window


def _window_frame(cfg: LoadedConfig, settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    from autopilot.serving.inference_log import InferenceLog

    inference_log = InferenceLog(settings.inference_db)
    try:
        frame = inference_log.window(cfg.name, start, end)
    finally:
        inference_log.close()
    if len(frame):
        frame = frame[~frame["request_id"].astype(str).str.startswith(SMOKE_PREFIX)].reset_index(drop=True)
    if cfg.monitoring.labels_source and len(frame):
        frame = _with_labels_source(cfg, frame)
    return frame


def _with_labels_source(cfg: LoadedConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """Fill labels /feedback did not bring from the configured labels file (request_id, row, label)."""
    from autopilot.data.sources import read_frame

    source = cfg.monitoring.labels_source
    assert source is not None
    labels = read_frame(cfg.resolve(source), "auto")[["request_id", "row", "label"]]
    merged = frame.merge(labels.rename(columns={"label": "_label"}), on=["request_id", "row"], how="left")
    merged["label"] = merged["label"].where(merged["label"].notna(), merged["_label"])
    return merged.drop(columns="_label")


def _features(cfg: LoadedConfig, frame: pd.DataFrame) -> pd.DataFrame:
    from autopilot.data.sources import canonicalize

    renamed = frame.rename(columns={f"feature_{name}": name for name in cfg.features})
    return canonicalize(renamed, cfg, require_target=False)


def monitor_window(cfg: LoadedConfig, settings: Settings, ctx: RunContext, start: datetime | str,
                   end: datetime | str, running_retrain: str | None = None) -> dict[str, Any]:
    """Monitor one window of the champion's traffic; return the decision and where the report is.

    `running_retrain`: the run id of a retrain triggered earlier that is still queued or running
    (the orchestrator knows; see `decision.decide`): a wanted retrain then becomes a recorded alert.

    Returns (small, for XCom): `{"action", "strategy", "reasons", "window_start", "window_end",
    "rows", "version", "trigger_run_id", "conf", "report_uri", "html_uri"}`.
    """
    from threadpoolctl import threadpool_limits

    # One native thread, as in the gates: the window's predictions (reference scores, SHAP
    # margins) are batches of a few thousand rows, where OpenMP start-up dominates; on a busy
    # 2-core worker HGB's two threads measured 11x slower than one (0.85 s vs 0.075 s for
    # 2,000 rows), which made a window cost ~10 s.
    with threadpool_limits(limits=1):
        return _monitor_window(cfg, settings, ctx, start, end, running_retrain)


def _monitor_window(cfg: LoadedConfig, settings: Settings, ctx: RunContext, start: datetime | str,
                    end: datetime | str, running_retrain: str | None) -> dict[str, Any]:
    from autopilot.monitoring import state
    from autopilot.monitoring.changed import compact_changed, window_changed_predictions
    from autopilot.versions.promotion import current

    start, end = _utc(start), _utc(end)
    registry = connect(settings)
    if current(cfg.registered_model_name, CHAMPION, registry) is None:  # an unreachable registry raises: retried
        return _no_champion(start, end)
    champion = registry.resolve_version(cfg.registered_model_name, CHAMPION)
    version = int(champion.version)
    reference = load_reference(registry, cfg, settings, champion)
    frame = _window_frame(cfg, settings, start, end)
    features = _features(cfg, frame)
    served = frame[frame["version"] == version] if len(frame) else frame
    drift = _drift(cfg, reference, features, served)
    performance = _performance(cfg, reference, served) if drift["sufficient"] else {"realized": None,
                                                                                     "estimated": None}
    attribution = (_attribution(registry, cfg, settings, champion, reference, features)
                   if drift["sufficient"] else None)
    changed = window_changed_predictions(registry, cfg, settings, champion, reference.frame, features) \
        if drift["sufficient"] else None
    bias = _bias(registry, cfg, champion, features, frame) if drift["sufficient"] else None
    series = _series(cfg, drift, performance, served, reference)
    counters, unreachable = _endpoint_counters(cfg)
    rate = _error_rate(settings, cfg, end, counters)
    if rate is not None:
        series["error_rate"] = rate
    alarms = _alarms(cfg, settings, end, series) + _endpoint_alarm(settings, cfg, end, unreachable)
    trigger_run_id = retrain_run_id(cfg.name, end)
    decision = _decide(cfg, settings, champion, reference, drift, performance, alarms, end, trigger_run_id,
                       running_retrain, bias)
    paths = _store_report(cfg, settings, reference, features, start, end, drift["sufficient"], {
        "model": cfg.name, "version": version, "window_start": start.isoformat(), "window_end": end.isoformat(),
        "rows": len(frame), "drift": drift, "performance": performance, "attribution": attribution,
        "changed_predictions": changed, "series": series, "alarms": alarms, "bias": bias,
        "decision": decision.as_dict()})
    state.record_window(settings, cfg.name, start, end, version, decision.action,
                        {"series": series, "decision": decision.as_dict(), "rows": len(frame), "counters": counters,
                         "endpoint_unreachable": unreachable, "changed_predictions": compact_changed(changed),
                         "bias": bias and bias["summary"], "multivariate": drift.get("multivariate"),
                         "endpoint_down": any(a.get("metric") == "endpoint" for a in alarms), **paths})
    conf = None
    if decision.action == "retrain":
        reason = "; ".join(decision.reasons)[:500]
        state.record_trigger(settings, cfg.name, trigger_run_id, end, str(decision.strategy), reason)
        conf = {"reason": reason, "strategy": decision.strategy, "window_start": start.isoformat(),
                "window_end": end.isoformat(), "monitoring_run": ctx.run_id}
    elif decision.action == "rollback":
        _roll_back(cfg, settings, ctx, champion, decision.reasons)
    log.info("%s window %s - %s: %s %s", cfg.name, start, end, decision.action, "; ".join(decision.reasons))
    return json_safe({"action": decision.action, "strategy": decision.strategy, "reasons": decision.reasons,
                      "blocked_by": decision.blocked_by, "window_start": start.isoformat(),
                      "window_end": end.isoformat(), "rows": len(frame), "version": version,
                      "trigger_run_id": trigger_run_id if conf else None, "conf": conf, **paths})


def _drift(cfg: LoadedConfig, reference: Reference, features: pd.DataFrame, served: pd.DataFrame) -> dict[str, Any]:
    from autopilot.monitoring.drift import check_drift, check_multivariate

    if len(features) == 0:
        return {"rows": 0, "sufficient": False, "severity": "none", "reasons": ["no traffic in the window"]}
    scores = _served(cfg, reference, served).scores if len(served) else None
    multivariate = check_multivariate(getattr(reference.profile, "multivariate", None), features, cfg).as_dict()
    return {**check_drift(reference.profile, features, scores, cfg, reference.meta.get("classes")).as_dict(),
            "multivariate": multivariate}


def _served(cfg: LoadedConfig, reference: Reference, served: pd.DataFrame) -> Any:
    """The window's logged predictions read back (`monitoring.multiclass.read_predictions`)."""
    from autopilot.monitoring.multiclass import read_predictions

    return read_predictions(served["prediction"].tolist(), cfg.task, reference.meta.get("classes"))


def _performance(cfg: LoadedConfig, reference: Reference, served: pd.DataFrame) -> dict[str, Any]:
    from autopilot.monitoring.performance import estimate_performance, realized_performance

    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return _class_performance(cfg, reference, served)
    scores = served["prediction"].astype(float).to_numpy()
    labeled = served[served["label"].notna()] if "label" in served else served.iloc[:0]
    realized = None
    if len(labeled) >= MIN_LABELED_ROWS:
        realized = realized_performance(labeled["label"].to_numpy(), labeled["prediction"].astype(float).to_numpy(),
                                        cfg)
    estimated = None
    if reference.calibrator is not None and len(scores):
        estimated = {name: asdict(e) for name, e in estimate_performance(scores, reference.calibrator, cfg).items()}
    return {"realized": realized, "estimated": estimated, "labeled_rows": len(labeled),
            "reference_metric": reference.meta.get("reference_metric")}


def _class_performance(cfg: LoadedConfig, reference: Reference, served: pd.DataFrame) -> dict[str, Any]:
    """A multiclass window's realized metrics (enough labeled rows) and label-free estimate
    (`monitoring.multiclass`)."""
    from autopilot.monitoring.multiclass import ClassCalibrator, estimate_multiclass, realized_multiclass

    read = _served(cfg, reference, served)
    assert read.probabilities is not None
    readable = np.isfinite(read.probabilities).all(axis=1)
    labeled = readable & (served["label"].notna().to_numpy() if "label" in served else False)
    realized = None
    if labeled.sum() >= MIN_LABELED_ROWS:
        realized = realized_multiclass(served["label"].to_numpy()[labeled], read.probabilities[labeled], read.classes)
    estimated = None
    if isinstance(reference.calibrator, ClassCalibrator) and readable.any():
        estimated = {name: asdict(e) for name, e in
                     estimate_multiclass(read.probabilities[readable], reference.calibrator, cfg).items()}
    return {"realized": realized, "estimated": estimated, "labeled_rows": int(labeled.sum()),
            "unreadable_predictions": read.unreadable, "reference_metric": reference.meta.get("reference_metric")}


def _no_champion(start: datetime, end: datetime) -> dict[str, Any]:
    """A window before the first promotion: nothing is served, so nothing is recorded or decided (the task is
    skipped; `make up` unpauses the monitoring DAG of a model that may have no champion yet)."""
    reason = "no champion yet: nothing is served to monitor (monitoring starts with the first promotion)"
    return {"action": "skipped", "skipped": True, "reason": reason, "reasons": [reason], "strategy": None,
            "window_start": start.isoformat(), "window_end": end.isoformat(), "rows": None, "version": None,
            "trigger_run_id": None, "conf": None, "report_uri": None, "html_uri": None}


def _attribution(registry: Registry, cfg: LoadedConfig, settings: Settings, champion: Any, reference: Reference,
                 features: pd.DataFrame) -> dict[str, Any] | None:
    from autopilot.adapters.registry.model_loading import LoadPolicy, ModelRefused, load_version
    from autopilot.monitoring.performance import attribution_drift

    shares = reference.meta.get("importance")
    if not shares:
        return None
    try:
        model = load_version(champion, LoadPolicy.of(cfg, settings), registry)
    except ModelRefused:
        raise  # a champion that fails verification is an alarm, not a diagnostic
    try:
        return dict(attribution_drift(model, features, cfg, shares))
    except Exception as exc:  # attribution is a diagnostic: report the failure, do not stop the monitor
        log.warning("attribution drift failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _bias(registry: Registry, cfg: LoadedConfig, champion: Any, features: pd.DataFrame,
          frame: pd.DataFrame) -> dict[str, Any]:
    """Bias drift (`monitoring.bias`): the champion's rows against its fairness gate report of promotion."""
    from autopilot.monitoring.bias import window_bias

    run_id = str(champion.run_id)

    def promoted() -> Any:
        return registry.load_dict(run_id, "gates/fairness.json") \
            if "fairness.json" in _artifact_names(registry, run_id, "gates") else None

    return window_bias(promoted, features, frame, int(champion.version), cfg)


def _series(cfg: LoadedConfig, drift: dict[str, Any], performance: dict[str, Any],
            served: pd.DataFrame, reference: Reference | None = None) -> dict[str, float]:
    """The metric values the anomaly detector learns baselines for (NaN-free; absent when unknown)."""
    values: dict[str, float] = {}
    if drift.get("sufficient"):
        values["drift_weighted_share"] = float(drift["weighted_share"])
        # A window under the large-sample threshold (decided by tests) still reports the scores'
        # effect, but noise inflates it there (about sqrt(2,000/300) = 2.6 times at 300 rows):
        # as a point of the series it would look like an anomaly against the large windows.
        if drift.get("prediction_effect") is not None and drift.get("decided_by", "effect") == "effect":
            values["prediction_drift"] = float(drift["prediction_effect"])
    if len(served) and cfg.task is Task.MULTICLASS_CLASSIFICATION:
        # The mean of class indices means nothing; the mean top-class probability (confidence) does.
        probabilities = _served(cfg, reference, served).probabilities if reference is not None else None
        readable = (probabilities[np.isfinite(probabilities).all(axis=1)] if probabilities is not None
                    else np.empty((0, 1)))
        if len(readable):
            values["prediction_confidence"] = float(readable.max(axis=1).mean())
    elif len(served):
        values["prediction_mean"] = float(served["prediction"].astype(float).mean())
    if len(served):
        values["latency_p95_ms"] = float(np.percentile(served["latency_ms"].astype(float), 95))
        values["rows"] = float(len(served))
    realized = performance.get("realized") or {}
    if realized.get(cfg.metric) is not None:
        values[f"realized_{cfg.metric}"] = float(realized[cfg.metric])
    estimated = (performance.get("estimated") or {}).get(cfg.metric)
    if estimated:
        values[f"estimated_{cfg.metric}"] = float(estimated["value"])
    return {k: v for k, v in values.items() if np.isfinite(v)}


def _endpoint_counters(cfg: LoadedConfig) -> tuple[dict[str, float] | None, str | None]:
    """The live endpoint's cumulative prediction request and 5xx counters, or None and why not.

    Errors never reach the inference log (only answered requests do), so the error rate comes
    from the endpoint's own Prometheus counters, read when the window is monitored.
    """
    import httpx

    from autopilot.deploy.rollback import serving_url
    from autopilot.deploy.rollout import parse_metrics

    url = serving_url(cfg) + "/metrics"
    try:
        answer = httpx.get(url, timeout=ENDPOINT_TIMEOUT_SECONDS)
        answer.raise_for_status()
        sample = parse_metrics(answer.text)
    except (httpx.HTTPError, ValueError) as exc:  # down, hung, erroring, or not ours
        return None, f"{url} did not answer: {type(exc).__name__}: {str(exc)[:200]}"
    return {"requests": sample.requests, "server_errors": sample.server_errors}, None


ENDPOINT_TIMEOUT_SECONDS = 3.0
def _endpoint_alarm(settings: Settings, cfg: LoadedConfig, end: datetime,
                    unreachable: str | None) -> list[dict[str, Any]]:
    """A critical alarm while a local endpoint that answered stays silent, window after window.

    The previous window decides: it read the endpoint's counters (it was up), or it already raised
    this alarm (it is still down); the alarm repeats until the endpoint answers again, whatever the
    schedule. A model never served locally (nothing started yet) has no alarm; the AWS target's
    endpoint health is SageMaker's, watched through its CloudWatch alarms during rollouts.
    A dead endpoint must not look healthy because its traffic, and every series with it, went quiet.
    """
    from autopilot.monitoring import state

    if unreachable is None or cfg.deployment.target != "local":
        return []
    previous = state.last_windows(settings, cfg.name, limit=1, before=end)
    report = previous[-1]["report"] if previous else {}
    if not (report.get("counters") or report.get("endpoint_down")):
        return []
    return [{"metric": "endpoint", "critical": True,
             "reason": f"the live endpoint stopped answering (it answered before): {unreachable}"}]


def _error_rate(settings: Settings, cfg: LoadedConfig, end: datetime,
                counters: dict[str, float] | None) -> float | None:
    """5xx share since the previous window's reading; None on the first reading or after a restart."""
    from autopilot.monitoring import state

    if counters is None:
        return None
    previous = state.last_windows(settings, cfg.name, limit=1, before=end)
    before = (previous[-1]["report"].get("counters") if previous else None) or None
    if not before:
        return None
    requests = counters["requests"] - before["requests"]
    errors = counters["server_errors"] - before["server_errors"]
    if requests < 0 or errors < 0:  # the endpoint restarted: its counters began again
        return None
    return errors / requests if requests > 0 else 0.0


def _alarms(cfg: LoadedConfig, settings: Settings, end: datetime, series: dict[str, float]) -> list[dict[str, Any]]:
    from autopilot.monitoring.anomaly import observe

    watched = {k: v for k, v in series.items() if k != "rows"}  # traffic volume is context, not health
    return [json_safe(a.as_dict()) for a in observe(settings, cfg.name, end, watched, cfg.monitoring.anomaly)]


def _decide(cfg: LoadedConfig, settings: Settings, champion: Any, reference: Reference, drift: dict[str, Any],
            performance: dict[str, Any], alarms: list[dict[str, Any]], end: datetime, trigger_run_id: str,
            running_retrain: str | None = None, bias: dict[str, Any] | None = None) -> Any:
    from autopilot.monitoring import state
    from autopilot.monitoring.decision import decide

    triggers = [t["at"] for t in state.triggers_since(settings, cfg.name, end - timedelta(hours=24),
                                                      exclude_run_id=trigger_run_id)]
    recent_retrain, previous = _after_retrain(cfg, settings, champion, end)
    return decide(cfg, drift=drift, performance=performance, alarms=alarms,
                  reference_metric=reference.meta.get("reference_metric"), previous_champion_metric=previous,
                  recent_retrain=recent_retrain, triggers=triggers, now=end, running_retrain=running_retrain,
                  bias=bias)


def _after_retrain(cfg: LoadedConfig, settings: Settings, champion: Any, end: datetime) -> tuple[bool, float | None]:
    """Whether the champion came from a monitoring retrain, and its predecessor's recent metric."""
    from autopilot.monitoring import state
    from autopilot.versions.promotion import history

    if not str((champion.tags or {}).get("autopilot.dag_run_id", "")).startswith("retrain__"):
        return False, None
    moves = [m for m in history(settings, cfg.registered_model_name) if m.to_version == int(champion.version)]
    if not moves or moves[-1].from_version is None:
        return False, None
    previous = moves[-1].from_version
    metric = cfg.metric
    values = []
    for window in state.last_windows(settings, cfg.name, limit=48, before=end):
        if window["version"] != previous:
            continue
        series = window["report"].get("series", {})
        value = series.get(f"realized_{metric}", series.get(f"estimated_{metric}"))
        if value is not None:
            values.append(float(value))
    return True, (float(np.mean(values[-3:])) if values else None)


def _roll_back(cfg: LoadedConfig, settings: Settings, ctx: RunContext, champion: Any, reasons: list[str]) -> None:
    """The one rollback (`deploy.rollback`): the alias back, then the endpoint (local or SageMaker) with it.

    A failure to move the alias fails the window (retried); an endpoint that did not follow is
    logged, not raised: locally it follows the alias at its next poll anyway.
    """
    from autopilot.adapters.registry import connect
    from autopilot.deploy.rollback import roll_back

    done = roll_back(cfg, settings, connect(settings), actor=ctx.actor, reason="monitoring: " + "; ".join(reasons),
                     idempotency_key=ctx.key(cfg, "monitor-rollback"), failed=int(champion.version))
    log.error("monitoring rolled %s back from v%s to v%s", cfg.name, done.move.from_version, done.move.to_version)
    if done.problem is not None:
        log.warning("the endpoint did not follow the rollback: %s", done.problem)


def _store_report(cfg: LoadedConfig, settings: Settings, reference: Reference, features: pd.DataFrame,
                  start: datetime, end: datetime, sufficient: bool, report: dict[str, Any]) -> dict[str, Any]:
    """The window's JSON report (and Evidently's HTML, when configured and there was enough traffic) in the store."""
    from autopilot.adapters.storage import open_store
    from autopilot.monitoring.drift import evidently_report

    store = open_store(settings.artifact_root, access=settings.object_store)
    prefix = f"monitoring/{cfg.name}/{end.astimezone(UTC):%Y%m%dT%H%M%S}"
    paths: dict[str, Any] = {"report_uri": store.uri(f"{prefix}/window.json"), "html_uri": None}
    if sufficient and cfg.monitoring.drift.evidently_report:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                found = evidently_report(reference.frame[list(cfg.features)], features, cfg, Path(tmp))
                store.put(f"{prefix}/evidently.html", Path(found["html"]).read_bytes())
                store.put(f"{prefix}/evidently.json", Path(found["json"]).read_bytes())
                paths["html_uri"] = store.uri(f"{prefix}/evidently.html")
                report["evidently"] = {k: v for k, v in found.items() if k not in ("html", "json")}
        except Exception as exc:  # the HTML is for people; the decision does not depend on it
            log.warning("Evidently report failed: %s", exc)
            report["evidently"] = {"error": f"{type(exc).__name__}: {exc}"}
    store.put(f"{prefix}/window.json", json.dumps(json_safe(report), indent=2, sort_keys=True).encode())
    return paths
