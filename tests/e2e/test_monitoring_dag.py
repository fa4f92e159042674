"""The monitoring DAG under `dag.test()`: a drifted hour of logged traffic triggers the training DAG."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.cli import run_pipeline
from autopilot.config import load_config
from autopilot.data.sources import canonicalize
from autopilot.monitoring.simulate import shift_frame
from autopilot.serving.inference_log import InferenceLog, InferenceRecord
from autopilot.serving.schema import ServingSchema
from tests.e2e.test_dag_run import airflow_db, env, notes_api  # noqa: F401  (fixtures)
from tests.helpers import PROJECT, note_lines

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
HOUR_END = datetime(2026, 11, 20, 11, tzinfo=UTC)


def log_traffic(cfg: Any, settings: Any, frame: Any, start: datetime, prefix: str) -> None:
    """Append rows as the endpoint would have served them, at times inside [start, start + 1 h)."""
    reg = registry.connect(settings)
    model = load_version(reg.resolve_version(cfg.registered_model_name, "champion"), LoadPolicy(), reg)
    schema = ServingSchema.from_config(cfg)
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame[list(cfg.features)].to_dict("records")]
    scores = model.predict_proba(schema.frame(rows))[:, 1]
    step = timedelta(minutes=58) / len(rows)
    log = InferenceLog(settings.inference_db)
    log.append([InferenceRecord(request_id=f"{prefix}-{i}", row=0, model=cfg.name, version=1,
                                at=start + timedelta(minutes=1) + i * step, features=row, prediction=float(s),
                                latency_ms=12.0) for i, (row, s) in enumerate(zip(rows, scores, strict=True))])
    log.close()


def test_a_drifted_window_triggers_the_training_dag_once(airflow_db: None, env: Any,  # noqa: F811
                                                         small_adult: Callable[..., Path], adult_frames: Any,
                                                         notes_api: Any) -> None:  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import DagRun

    path = small_adult(name="mondag")
    cfg = load_config(path)
    assert run_pipeline(cfg, env, "first", stop_after="promote")["promoted"]
    test = canonicalize(adult_frames[1].sample(1200, random_state=5), cfg)
    shifted, _, _ = shift_frame(test, cfg, "covariate", strength=1.5, seed=5)
    log_traffic(cfg, env, shifted, HOUR_END - timedelta(hours=1), "shifted")

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    run = bag.dags["autopilot_monitoring__mondag"].test(logical_date=HOUR_END)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["monitor"] == "success" and states["trigger_retraining"] == "success"
    assert states["alert"] == "skipped" and states["healthy"] == "skipped"
    result = run.get_task_instance("monitor").xcom_pull(task_ids="monitor")
    assert result["action"] == "retrain" and result["rows"] == 1200
    triggered = DagRun.find(dag_id="autopilot_training__mondag", run_id=result["trigger_run_id"])
    assert len(triggered) == 1
    assert triggered[0].conf["strategy"] == result["strategy"] and triggered[0].conf["window_end"]
    # The run's note, written by `monitor`: the window, its action, the rows, the reasons, the retrain.
    note = note_lines(notes_api.patches[-1]["note"])
    assert note[0] == f"Window 2026-11-20 10:00-11:00 UTC: retrain ({result['strategy']})", note
    assert note[1] == "1,200 rows", note
    assert note[2] == result["reasons"][0] or (note[2].endswith("...") and result["reasons"][0].startswith(
        note[2][:-3])), note
    assert note[-1] == f"retrain triggered: run {result['trigger_run_id']}", note


def test_a_window_before_the_first_champion_is_skipped_not_failed(airflow_db: None, env: Any,  # noqa: F811
                                                                  small_adult: Callable[..., Path],
                                                                  notes_api: Any) -> None:  # noqa: F811
    """`make up` unpauses the monitoring DAG of a model that may have no champion yet: its hourly
    runs must not fail (and alert) until the first promotion; each says why it did nothing."""
    from airflow.dag_processing.dagbag import DagBag

    from autopilot.monitoring.state import last_windows

    small_adult(name="nochamp")
    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    run = bag.dags["autopilot_monitoring__nochamp"].test(logical_date=HOUR_END)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["monitor"] == "skipped" and states["trigger_retraining"] == "skipped", states
    assert states["alert"] == "skipped" and states["healthy"] == "skipped", states
    assert last_windows(env, "nochamp", limit=5) == []  # nothing recorded for a window nobody served
    note = note_lines(notes_api.patches[-1]["note"])
    assert note[0] == "Window 2026-11-20 10:00-11:00 UTC: skipped", note
    assert note[1].startswith("no champion yet: nothing is served to monitor"), note
