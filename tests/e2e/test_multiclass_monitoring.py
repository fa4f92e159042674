"""A multiclass champion monitored through the monitoring stage (issue 16.1): quiet and drifted windows.

A real registered multiclass model (HistGradientBoosting on the synthetic three-class problem of
`tests/multiclass_support.py`, logged with skops and its manifest as training logs it), its
explainability report stored on its run (the SHAP shares drift weighs columns by: multiclass
mean |SHAP| over rows and classes), train and test snapshots tagged on the version. Traffic is
logged to the inference log in the multiclass shape (`{"label", "probabilities"}`), with labels
fed back for the realized metrics. `monitor_window` then builds the reference (predicted class
indices, the per-class calibration), and decides each window:

- quiet: rows from the same population -> action `none`, no prediction drift, the label-free
  estimate of `roc_auc_ovr` within a few points of the realized one;
- drifted class mix: the same population served with one class's rows three times as often ->
  the drift reasons name the predicted class distribution and the class whose share moved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import manifest_tags
from autopilot.adapters.storage import open_store
from autopilot.config import LoadedConfig
from autopilot.data.snapshot import write_snapshot
from autopilot.data.sources import canonicalize
from autopilot.explain import shap_attributions
from autopilot.gates.explainability import evaluate_explainability
from autopilot.modeling.search_space import build_pipeline
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.monitoring import monitor_window
from autopilot.pipeline.training import signature_for
from autopilot.serving.inference_log import InferenceLog, InferenceRecord
from autopilot.settings import Settings
from tests.multiclass_support import FEATURES, HGB, binary_twin, frame, labels

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

START = datetime(2026, 6, 1, tzinfo=UTC)
ROWS = 1200


def _config(tmp: Path) -> LoadedConfig:
    return LoadedConfig.model_validate({
        "name": "grades", "task": "multiclass_classification", "data": {"source": "unused.csv"},
        "target": {"column": "y"}, "features": FEATURES, "metric": "roc_auc_ovr", "sensitive_attributes": ["group"],
        "monitoring": {"drift": {"evidently_report": False}}, "path": str(tmp / "grades.yaml"),
    })


def _champion(tmp: Path) -> tuple[LoadedConfig, Settings, Any]:
    """Register, explain and tag a multiclass champion in a fresh home."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp)})
    cfg = _config(tmp)
    X = frame(3000, 0)
    y = labels(X, 1)
    with threadpool_limits(limits=1):
        model = build_pipeline(HGB, binary_twin(cfg), seed=0).fit(X, y)
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("multiclass-monitoring", settings.mlflow_artifact_root)
    with reg.start_run(experiment) as run:
        signature = signature_for(cfg, X, model.predict_proba(X.head(20)))
        info = run.log_sklearn_model(model, X.head(5), signature, allow_pickle=False, predict_fn="predict_proba")
        attr = shap_attributions(model, X.iloc[:300], cfg)
        report = evaluate_explainability(attr, None, cfg)
        reg.client.log_text(run.run_id, report.model_dump_json(), "gates/explainability.json")
    manifest = registry.sha256_manifest(reg.download(info.model_uri))
    tags = manifest_tags(cfg.registered_model_name, manifest, settings.signing_key)
    version = reg.create_version(cfg.registered_model_name, info.model_uri, run.run_id,
                                 {**tags, "autopilot.family": "hist_gradient_boosting",
                                  "autopilot.test_roc_auc_ovr": "0.83",
                                  "autopilot.classes": '["high", "low", "mid"]'})
    store = open_store(settings.artifact_root)
    for split, seed in (("train", 0), ("test", 5)):
        rows = frame(3000, seed)
        data = canonicalize(rows.assign(y=labels(rows, seed + 1)), cfg)
        ref = write_snapshot(data, store, f"multiclass monitoring {split}")
        reg.client.set_model_version_tag(cfg.registered_model_name, version.version, f"autopilot.snapshot.{split}",
                                         f"sha256:{ref.digest}")
    reg.set_alias(cfg.registered_model_name, "champion", int(version.version))
    return cfg, settings, (model, int(version.version))


def _serve(settings: Settings, cfg: LoadedConfig, champion: tuple[Any, int], rows: pd.DataFrame, start: datetime,
           prefix: str) -> None:
    """Log `rows` as the endpoint logs a multiclass answer (requests of 100 rows), then feed back their labels."""
    model, version = champion
    with threadpool_limits(limits=1):
        probabilities = model.predict_proba(rows[list(cfg.features)])
    classes = [str(c) for c in model.classes_]
    step = timedelta(seconds=3000 / len(rows))
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
               for row in rows[list(cfg.features)].to_dict("records")]
    log = InferenceLog(settings.inference_db)
    try:
        log.append([InferenceRecord(
            request_id=f"{prefix}-{i // 100}", row=i % 100, model=cfg.name, version=version,
            at=start + timedelta(seconds=1) + i * step, features=features, latency_ms=10.0,
            prediction={"label": classes[int(np.argmax(p))], "probabilities": [float(x) for x in p]})  # type: ignore[arg-type]
            for i, (features, p) in enumerate(zip(records, probabilities, strict=True))])
        for start_row in range(0, len(rows), 100):
            log.add_feedback(f"{prefix}-{start_row // 100}", list(rows["y"].iloc[start_row:start_row + 100]))
    finally:
        log.close()


def test_multiclass_quiet_window_then_drifted_class_mix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")  # no live endpoint here
    cfg, settings, champion = _champion(tmp_path)
    ctx = RunContext(run_id="monitoring-test", dag_id="autopilot_monitoring__grades", actor="test")

    quiet = frame(ROWS, 40)
    _serve(settings, cfg, champion, quiet.assign(y=labels(quiet, 41)), START, "quiet")
    first = monitor_window(cfg, settings, ctx, START, START + timedelta(hours=1))
    assert first["action"] == "none", first["reasons"]
    report = _window_report(settings, first)
    assert report["drift"]["prediction_drifted"] is False
    assert report["drift"]["prediction_method"] == "jensenshannon"
    realized = report["performance"]["realized"]
    estimated = report["performance"]["estimated"]["roc_auc_ovr"]
    assert realized["rows"] == ROWS
    assert abs(estimated["value"] - realized["roc_auc_ovr"]) < 0.03, (estimated, realized)
    assert "prediction_confidence" in report["series"]
    # Attribution drift ranks the window's features by mean |SHAP| over rows and classes, like the gate.
    assert report["attribution"]["method"] == "tree" and report["attribution"]["drifted"] is False

    # The same people, but those the model calls "high" served three times as often.
    pool = frame(6000, 50)
    model, _ = champion
    with threadpool_limits(limits=1):
        predicted = np.asarray(model.classes_)[np.argmax(model.predict_proba(pool), axis=1)]
    weights = np.where(predicted == "high", 3.0, 1.0)
    rng = np.random.default_rng(51)
    drifted = pool.iloc[rng.choice(len(pool), ROWS, replace=False, p=weights / weights.sum())].reset_index(drop=True)
    second_start = START + timedelta(hours=1)
    _serve(settings, cfg, champion, drifted.assign(y=labels(drifted, 52)), second_start, "drifted")
    second = monitor_window(cfg, settings, ctx, second_start, second_start + timedelta(hours=1))
    assert second["action"] in ("alert", "retrain"), second["reasons"]
    joined = " | ".join(second["reasons"])
    assert "predicted class distribution drifted" in joined
    assert "high" in joined and "predicted class shares moved most" in joined


def _window_report(settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    import json

    from autopilot.monitoring import state

    del result
    windows = state.last_windows(settings, "grades", limit=1, before=START + timedelta(days=1))
    uri = windows[-1]["report"]["report_uri"]
    return dict(json.loads(Path(uri.removeprefix("file://")).read_text()))
