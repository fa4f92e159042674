"""Progress on the console: the listener's events, tuning progress from a real Optuna study, readable summaries."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from threadpoolctl import threadpool_limits

from autopilot.cli.progress import RunConsole, StageConsole
from autopilot.cli.summaries import (
    decision_lines,
    monitor_lines,
    run_lines,
    simulation_lines,
    status_lines,
    table,
)
from autopilot.config import ModelConfig
from autopilot.modeling.progress import StudyProgress, TuningWatch, format_duration, progress_line

REPR = re.compile(r"""\{'|\['|\("|\{"|\('""")


def _config(n_trials: int = 4, name: str = "unit_model") -> ModelConfig:
    return ModelConfig.model_validate({
        "name": name, "task": "binary_classification", "data": {"source": "unused.csv"},
        "features": {f"f{i}": {"type": "numeric"} for i in range(4)}, "metric": "roc_auc",
        "target": {"column": "label", "positive_class": 1},
        "tuning": {"n_trials": n_trials, "n_startup_trials": 2, "families": ["linear"], "seed": 3,
                   "timeout_seconds": 90},
        "split": {"cv_folds": 2},
    })


def _data() -> tuple[pd.DataFrame, pd.Series]:
    data = load_breast_cancer(as_frame=True)
    X = data.data.iloc[:200, :4].set_axis([f"f{i}" for i in range(4)], axis=1).astype("float64")
    return X, pd.Series(np.asarray(data.target[:200]), name="label")


# ---------------------------------------------------------------------------- the listener


def test_listener_writes_one_json_line_per_event_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.orchestration import progress_listener as listener

    ti = SimpleNamespace(task_id="validate", map_index=-1, try_number=1, dag_id="d", run_id="r")
    path = tmp_path / "events.jsonl"
    monkeypatch.delenv("AUTOPILOT_PROGRESS_FILE", raising=False)
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    assert not path.exists()  # unset (a real scheduler or worker): nothing is written

    monkeypatch.setenv("AUTOPILOT_PROGRESS_FILE", str(path))
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_DB", "postgresql://user:hunter2hunter2@db/airflow")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    try:
        try:
            raise ValueError("config: bad key\nsecond line hunter2hunter2")
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
    except AirflowFailException as exc:
        listener.on_task_instance_failed(previous_state=None, task_instance=ti, error=exc)
    mapped = SimpleNamespace(task_id="tune_worker", map_index=1, try_number=2, dag_id="d", run_id="r")
    listener.on_task_instance_failed(previous_state=None, task_instance=mapped, error=KeyError("split"))
    listener.on_task_instance_success(previous_state=None, task_instance=mapped)
    listener.on_task_instance_skipped(previous_state=None, task_instance=ti)
    first = SimpleNamespace(task_id="tune_worker", map_index=0, try_number=None, dag_id="d", run_id="r")
    listener.on_task_instance_running(previous_state=None, task_instance=first)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["event"], e["task_id"], e["map_index"]) for e in events] == [
        ("running", "validate", -1), ("failed", "validate", -1), ("failed", "tune_worker", 1),
        ("success", "tune_worker", 1), ("skipped", "validate", -1), ("running", "tune_worker", 0)]
    # The wrapper's type says nothing, so the reason is its message; a secret in it is scrubbed.
    assert events[1]["error"].splitlines()[0] == "config: bad key"
    assert "hunter2hunter2" not in events[1]["error"]
    assert events[2]["error"] == "KeyError: 'split'" and events[2]["try_number"] == 2


def test_console_shows_task_outcomes_and_the_failed_tasks_reason() -> None:
    lines: list[str] = []
    now = [100.0]
    console = RunConsole(lines.append, clock=lambda: now[0])
    console.event({"event": "running", "task_id": "validate", "map_index": -1})
    now[0] += 2.5
    console.event({"event": "failed", "task_id": "validate", "map_index": -1,
                   "error": "invalid model config:\n/tmp/c.yaml: tuning.budget: unknown key"})
    console.event({"event": "running", "task_id": "tune_worker", "map_index": 0, "at": 1000.25})
    console.event({"event": "success", "task_id": "tune_worker", "map_index": 0, "at": 1003.5})
    assert [line.rstrip() for line in lines] == [
        "  validate                     running",
        "  validate                     failed (2.5 s)",
        "                               reason: invalid model config:",
        "                                       /tmp/c.yaml: tuning.budget: unknown key",
        "  tune_worker[0]               running",
        "  tune_worker[0]               success (3.2 s)",
    ]
    assert console.failed == [("validate", "invalid model config:\n/tmp/c.yaml: tuning.budget: unknown key")]


# ---------------------------------------------------------------------------- tuning progress


def test_progress_line_and_durations() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    progress = StudyProgress(study_name="m-x", finished=12, running=2, best_value=0.92314,
                             best_family="hist_gradient_boosting", first_start=start)
    assert progress_line(progress, "roc_auc", 40, 300, now=start + timedelta(seconds=70)) == (
        "tuning: trial 12 of 40 (2 running), best roc_auc 0.9231 (hist_gradient_boosting), 1m10s of 5m budget")
    empty = StudyProgress(study_name="m-x", finished=0, running=1, best_value=None, best_family=None,
                          first_start=None)
    assert progress_line(empty, "rmse", 5, 60) == "tuning: trial 0 of 5, no trial completed yet"
    assert [format_duration(s) for s in (0, 42, 60, 61, 3720)] == ["0s", "42s", "1m", "1m01s", "1h02m"]


def test_watch_follows_a_real_study_shared_by_two_workers(tmp_path: Path) -> None:
    from autopilot.modeling.tuning import open_study, run_trials

    cfg = _config(n_trials=6)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    X, y = _data()
    # An older study of the same model (an earlier run): not the one this run tunes.
    old = "unit_model-aaaaaaaaaaaa-bbbbbbbbbb"
    open_study(cfg, storage, old)
    with threadpool_limits(limits=1):
        run_trials(X, y, cfg, storage, old, n_trials=2)
    since = datetime.now()
    now = [0.0]
    watch = TuningWatch(cfg, storage, since=since, min_interval=5.0, clock=lambda: now[0])
    assert watch.poll() is None and watch.final() is None  # no study of this run yet
    name = "unit_model-cccccccccccc-dddddddddd"
    open_study(cfg, storage, name)
    with threadpool_limits(limits=1):
        run_trials(X, y, cfg, storage, name, worker=0, n_workers=2, n_trials=3)
        assert watch.poll() is None  # read a moment ago: the storage is read at most once a second
        now[0] += 1
        first = watch.poll()
        assert first is not None and first.startswith("tuning: trial 3 of 6, best roc_auc 0.")
        assert first.endswith("of 1m30s budget") and "(linear)" in first
        run_trials(X, y, cfg, storage, name, worker=1, n_workers=2)
    assert watch.poll() is None  # throttled: a line at most every 5 s
    now[0] += 5
    line = watch.poll()
    assert line is not None and line.startswith("tuning: trial 6 of 6, best roc_auc")
    assert watch.poll() is None and watch.final() is None  # the last state was shown already


def test_run_console_polls_the_study_while_tuning(tmp_path: Path) -> None:
    from autopilot.modeling.tuning import open_study, run_trials

    cfg = _config(n_trials=3)
    settings = SimpleNamespace(optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    lines: list[str] = []
    console = RunConsole(lines.append, cfg, settings)
    console.event({"event": "running", "task_id": "plan_tuning", "map_index": -1})
    name = "unit_model-eeeeeeeeeeee-ffffffffff-retune"
    open_study(cfg, settings.optuna_storage, name)
    X, y = _data()
    stop = threading.Event()
    poller = threading.Thread(target=lambda: [console.tick() for _ in iter(lambda: stop.wait(0.2), True)])
    poller.start()
    try:
        with threadpool_limits(limits=1):
            run_trials(X, y, cfg, settings.optuna_storage, name, n_trials=3)
    finally:
        stop.set()
        poller.join()
    console.event({"event": "success", "task_id": "tune", "map_index": -1})
    tuning = [line for line in lines if "tuning:" in line]
    # A re-tune's budget is the retrain's (monitoring.retrain.retune_trials), whatever the study holds.
    budget = cfg.monitoring.retrain.retune_trials
    assert tuning and tuning[-1].startswith(f"  tuning: trial 3 of {budget}, best roc_auc")
    assert len(tuning) == len(set(tuning))


def test_stage_console_and_poller_show_the_last_tuning_line(tmp_path: Path) -> None:
    from autopilot.modeling.tuning import open_study, run_trials

    cfg = _config(n_trials=2)
    settings = SimpleNamespace(optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    lines: list[str] = []
    stages = StageConsole(cfg, settings, say=lines.append)
    stages.started("plan_tuning")
    name = "unit_model-111111111111-2222222222"
    open_study(cfg, settings.optuna_storage, name)
    stages.finished("plan_tuning", "done")
    X, y = _data()
    with threadpool_limits(limits=1):
        run_trials(X, y, cfg, settings.optuna_storage, name)
    stages.started("tune")
    stages.finished("tune", "done")
    assert re.fullmatch(r"  tuning: trial 2 of 2, best roc_auc 0\.\d{4} \(linear\), \d+s of 1m30s budget", lines[-2])
    assert re.fullmatch(r"  tune\s+done \(\d+\.\d s\)", lines[-1])
    assert stages.poller is None  # stopped


# ---------------------------------------------------------------------------- summaries


DECISION = {"version": 3, "decision": "reject", "decided_at": "2026-12-06T22:00:00+00:00",
            "reasons": "quality: roc_auc 0.81 below the floor 0.85; quality: worse than the champion; "
                       "fairness: demographic parity ratio 0.61 < 0.8",
            "gates": {"quality": "failed", "explainability": "passed", "fairness": "failed", "infra": "passed"}}


def test_decision_is_a_sentence_and_a_gate_table() -> None:
    lines = decision_lines(DECISION)
    assert lines[0] == "version 3: reject at 2026-12-06T22:00:00+00:00"
    assert [line.split()[:2] for line in lines[1:2]] == [["gate", "result"]]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert rows["quality"].split()[1] == "failed"
    assert rows["quality"].endswith("roc_auc 0.81 below the floor 0.85 (and 1 more)")
    assert rows["fairness"].endswith("demographic parity ratio 0.61 < 0.8")
    assert rows["infra"].endswith("every check passed")
    assert decision_lines(None) == ["no decision recorded yet"]


def test_summaries_print_no_python_reprs() -> None:
    state: dict[str, Any] = {
        "champion": 2, "challenger": 3, "rollback_target": None,
        "pending": [{"action": "promote", "from_version": 1, "to_version": 2, "actor": "cli", "at": "t0"}],
        "last_decision": DECISION,
        "history": [{"at": "t1", "action": "promote", "from_version": None, "to_version": 1, "actor": "airflow",
                     "reason": "every gate passed"},
                    {"at": "t2", "action": "rollback", "from_version": 2, "to_version": 1, "actor": "alice",
                     "reason": "latency"}]}
    result = {"name": "m", "version": 3, "run_id": "abc", "metrics": {"test_roc_auc": 0.91, "test_f1": 0.7},
              "decision": "reject", "promoted": False, "rollout": {"skipped": True, "reason": "no endpoint"}}
    from autopilot.monitoring.simulate import SimulationResult

    window = {"action": "retrain", "strategy": "refit", "reasons": ["age drifted (0.30 >= 0.10)"],
              "blocked_by": ["cooldown", "budget"], "window_start": "t0", "window_end": "t1", "rows": 2000,
              "version": 2, "trigger_run_id": "retrain__m__t1", "conf": {"strategy": "refit"},
              "report_uri": "/r/window.json", "html_uri": None}
    simulated = SimulationResult(scenario="covariate", requests=100, rows=2000, failed=0, request_ids=["a"],
                                 labelled_rows=2000, versions={1: 1500, 2: 500}, seconds=12.34,
                                 shift={"age": "+0.8 sd (+10.96)"})
    text = "\n".join([*status_lines("m", state), *run_lines(result, DECISION), *monitor_lines(window),
                      *simulation_lines(simulated), *table(("a", "b"), [({"x": 1}, [1, 2]), ((3, 4), None)])])
    assert not REPR.search(text), text
    assert "rollback target -" in text and "x 1" in text and "1, 2" in text
    assert re.search(r"^  t2\s+rollback\s+2\s+1\s+alice\s+latency$", text, re.M)
    assert "promoted        no" in text and "rollout         no endpoint" in text
    assert "window t0 to t1: version 2, 2000 rows -> retrain (refit)" in text
    assert "held back by: cooldown, budget" in text and "Evidently" not in text
    assert "versions that answered: v1 (1500 rows), v2 (500 rows)" in text and "shift: age +0.8 sd (+10.96)" in text
