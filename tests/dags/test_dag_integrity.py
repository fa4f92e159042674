"""DAG integrity: every DAG file imports cleanly, fast, without heavy imports, and is well-formed."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import PROJECT

DAGS = PROJECT / "dags"
HEAVY = ("pandas", "sklearn", "mlflow", "optuna", "great_expectations", "shap", "evidently", "pyarrow")


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert "autopilot_training__adult_income" in dagbag.dags


def test_every_dag_is_well_formed(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "autopilot" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert dag.catchup is False and dag.max_active_runs == 1, dag_id
        assert dag.start_date is not None and dag.start_date.year == 2026, dag_id
        assert dag.start_date.utcoffset() == timedelta(0), dag_id  # timezone-aware, UTC
        for task in dag.tasks:
            assert task.owner == "autopilot", (dag_id, task.task_id)


def test_training_dag_shape_and_retries(dagbag) -> None:  # type: ignore[no-untyped-def]
    dag = dagbag.dags["autopilot_training__adult_income"]
    assert dag.tags == ["autopilot", "training", "model:adult_income"] or set(dag.tags) == {
        "autopilot", "training", "model:adult_income"}
    tasks = {t.task_id: t for t in dag.tasks}
    gates = {"quality", "explainability_and_fairness", "infra"}
    deployment = {"plan_deployment", "deploy", "rollout"}
    tuning = {"plan_tuning", "tune_worker", "tune"}
    assert set(tasks) == {"validate", "snapshot", *tuning, "train_and_register", *gates, "decide", "review",
                          "shadow", "promote", *deployment}
    assert tasks["rollout"].retries == 0  # a failed rollout has rolled back: a retry would deploy again
    # validate, the gates and the decision retry an outage (a source, MLflow); their verdicts raise
    # AirflowFailException, which is never retried.
    for name in ("validate", "snapshot", *tuning, "train_and_register", *gates, "decide", "promote",
                 "plan_deployment", "deploy"):
        assert tasks[name].retries == 2 and tasks[name].retry_exponential_backoff, name
    # the edges follow the lifecycle (tests/dags/test_graph.py checks each): one mapped worker per
    # `tuning.parallel_workers`, the gates in parallel, one task deciding
    assert type(tasks["tune_worker"]).__name__.endswith("MappedOperator")
    for gate in gates:
        assert tasks[gate].downstream_task_ids == {"decide"}
    # a `review` decision waits for an approval in "Required actions"; promote runs after a skipped review too
    assert type(tasks["review"]).__name__ == "VersionReview" and tasks["review"].options == ["Approve", "Reject"]
    assert tasks["promote"].trigger_rule == "none_failed"
    # the shadow phase (a no-op unless deployment.rollout.shadow) runs after a skipped review too
    assert tasks["shadow"].trigger_rule == "none_failed" and tasks["promote"].upstream_task_ids == {"shadow"}
    assert tasks["promote"].pool == "autopilot_promotion"
    # on demand by default (`training.schedule: null`); the trigger form's fields
    assert type(dag.timetable).__name__ == "NullTimetable" and not dag.timetable.can_be_scheduled
    assert list(dag.params) == ["strategy", "reason", "n_trials", "window_start", "window_end"]
    assert dag.params.get_param("strategy").schema["enum"] == ["full", "refit", "retune"]
    assert dag.params.get_param("n_trials").schema["minimum"] == 1
    assert all(dag.params.get_param(name).schema.get("title") and dag.params.get_param(name).description
               for name in dag.params)
    # mapped tuning tasks are labelled by worker; only `promote` may emit (the champion alias)
    assert tasks["tune_worker"].map_index_template == "{{ autopilot_map_label }}"
    assert {name: [o.name for o in t.outlets] for name, t in tasks.items() if t.outlets} == {
        "promote": ["autopilot_champion_alias__adult_income"]}


def test_one_dag_per_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.orchestration.factory import training_dags

    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.yaml").write_text("name: x\n")  # not read at parse time
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(tmp_path))
    assert sorted(training_dags(Path("/nonexistent"))) == ["autopilot_training__alpha", "autopilot_training__beta"]


def test_monitoring_dag_shape_schedule_and_branches(dagbag) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag.dags["autopilot_monitoring__adult_income"]
    assert set(dag.tags) == {"autopilot", "monitoring", "model:adult_income"}
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"monitor", "branch", "trigger_retraining", "alert", "healthy", "drain_alerts"}
    assert tasks["branch"].downstream_task_ids == {"trigger_retraining", "alert", "healthy"}
    # housekeeping beside the window: the alert outbox is drained every run, whatever the window decides
    assert not tasks["drain_alerts"].upstream_task_ids and not tasks["drain_alerts"].downstream_task_ids
    trigger = tasks["trigger_retraining"]
    assert trigger.trigger_dag_id == "autopilot_training__adult_income" and trigger.skip_when_already_exists
    # Cron with data intervals: each run monitors exactly the time since the previous one.
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert tasks["monitor"].retries == 2
    assert list(dag.params) == ["reason", "window_minutes"]


def test_monitoring_schedule_comes_from_the_config(tmp_path: Path) -> None:
    from autopilot.orchestration.schedules import monitoring_schedule

    (tmp_path / "a.yaml").write_text("monitoring:\n  schedule: '*/15 * * * *'\n")
    (tmp_path / "b.yaml").write_text("monitoring:\n  schedule: null\n")
    (tmp_path / "c.yaml").write_text("name: c\n")
    assert monitoring_schedule(tmp_path / "a.yaml").expression == "*/15 * * * *"
    assert monitoring_schedule(tmp_path / "b.yaml") is None
    assert monitoring_schedule(tmp_path / "c.yaml").expression == "0 * * * *"  # @hourly by default


def test_a_monitoring_schedule_that_cannot_run_is_an_import_error_naming_file_and_key(tmp_path: Path) -> None:
    """A bad cron or broken YAML must not yield a monitoring DAG without a schedule that never runs."""
    import os

    from autopilot.orchestration.factory import ScheduleError
    from autopilot.orchestration.schedules import monitoring_schedule

    (tmp_path / "cron.yaml").write_text("monitoring:\n  schedule: '0 25 * * *'\n")
    (tmp_path / "yaml.yaml").write_text("monitoring: [unclosed\n")
    (tmp_path / "good.yaml").write_text("monitoring:\n  schedule: '@daily'\n")
    with pytest.raises(ScheduleError, match=r"cron\.yaml: monitoring\.schedule: '0 25 \* \* \*' is not a cron"):
        monitoring_schedule(tmp_path / "cron.yaml")
    with pytest.raises(ScheduleError, match=r"yaml\.yaml: cannot read monitoring\.schedule"):
        monitoring_schedule(tmp_path / "yaml.yaml")
    # Parsed as the DAG processor does: the file's import error names both files and the key.
    code = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
            "bag = DagBag(dag_folder=sys.argv[1])\nprint(repr(bag.import_errors))\n")
    env = {**os.environ, "AUTOPILOT_CONFIG_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(PROJECT / "dags" / "autopilot_monitoring.py")], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert "cron.yaml: monitoring.schedule" in done.stdout and "yaml.yaml: cannot read" in done.stdout, done.stdout


PROBE = """
import sys, time
start = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
base = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
end = time.perf_counter()
heavy = [m for m in {heavy!r} if m in sys.modules]
print(len(bag.dags), len(bag.import_errors), end - base, ",".join(heavy))
"""


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_parse_is_fast_and_imports_nothing_heavy(dag_file: str) -> None:
    """Parsed in a fresh interpreter, as the DAG processor would; heavy libraries stay unimported."""
    probe = PROBE.format(heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", probe, str(DAGS / dag_file)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    n_dags, n_errors, seconds, heavy = out.split(" ") if out.count(" ") == 3 else (*out.split(" "), "")
    assert int(n_errors) == 0 and int(n_dags) >= 1
    assert heavy == "", f"{dag_file} imports heavy modules at parse time: {heavy}"
    # Generous bound against pathologies (the benchmark measures the real ratio).
    assert float(seconds) < 5.0
