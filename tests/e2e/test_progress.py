"""Progress while training runs, and summaries that read well, on real runs.

- `autopilot demo` starts the embedded services, triggers the training run through the REST API
  and follows it on the real scheduler through the progress listener (`plugins/autopilot_progress.py`,
  whose file the services' environment names): task lines and a failed task's reason come from
  its events, tuning lines from the Optuna study; the summary's decision is a table. The task
  logs land in the folder the Airflow UI reads, the run stays in the metadata database, and the
  services are stopped at the end.
- `autopilot run` shows each stage and the tuning progress (trial n of N, best score, time
  against the budget), then a summary; `status`, `lineage`, `compare`, `promote`, `rollback` on
  the state it made print sentences and tables, never a Python dict or list.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.cli import main
from tests.helpers import PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

# What a Python dict, list or tuple looks like when printed whole.
REPR = re.compile(r"""\{'|\['|\("|\{"|\('|\[\(""")
TUNING_LINE = re.compile(r"tuning: trial (\d+) of (\d+)(?: \(\d+ running\))?, best roc_auc (0\.\d{4}) "
                         r"\((linear|hist_gradient_boosting)\), (\d+m)?\d+s of 1m budget")


@pytest.fixture
def env(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AUTOPILOT_HOME", str(settings.home))
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")  # nothing to roll out to
    for name in ("MLFLOW_TRACKING_URI", "AUTOPILOT_ARTIFACT_ROOT", "AUTOPILOT_OPTUNA_STORAGE",
                 "AUTOPILOT_MLFLOW_ARTIFACT_ROOT", "AUTOPILOT_STATE_DB", "AUTOPILOT_PROGRESS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(PROJECT)  # the demo runs the project's dags/ and plugins/
    yield settings


def assert_readable(text: str) -> None:
    bad = [line for line in text.splitlines() if REPR.search(line)]
    assert not bad, "printed a Python repr:\n" + "\n".join(bad)


def demo(model: str) -> int:
    from autopilot.cli.services import cmd_demo

    return cmd_demo(argparse.Namespace(model=model, no_loop=True, keep_up=False))


def events(settings: Any, model: str) -> list[dict[str, Any]]:
    """The training run's events among everything the demo's services wrote."""
    path = settings.home / "run" / "demo.events.jsonl"
    seen = [json.loads(line) for line in path.read_text().splitlines()]
    ours = [e for e in seen if e["dag_id"] == f"autopilot_training__{model}"]
    assert len({e["run_id"] for e in ours}) == 1, ours  # one run, triggered through the API
    return ours


def runs_in_metadata_db(settings: Any, dag_id: str) -> list[tuple[str, str, str]]:
    """(run_id, run_type, state) of every run of `dag_id` in the embedded Airflow's database."""
    with sqlite3.connect(settings.home / "airflow" / "airflow.db") as db:
        return list(db.execute("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = ?", (dag_id,)))


def task_log(settings: Any, dag_id: str, run_id: str, task_id: str) -> str:
    """The task's log where the api-server reads it (the UI's log pane)."""
    folder = settings.home / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "".join(path.read_text() for path in sorted(folder.glob("attempt=*.log")))


def assert_services_stopped(settings: Any) -> None:
    from autopilot.orchestration.embedded import Embedded

    assert Embedded(settings=settings, project=PROJECT).running() == []


def test_the_demo_shows_a_failed_tasks_reason_from_the_listener(
        env: Any, small_adult: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    small_adult(name="progbad", mutate_train=lambda f: f.drop(columns=["sex"]))
    assert demo("progbad") != 0
    out = capsys.readouterr().out
    seen = events(env, "progbad")
    # The listener wrote the events, and nothing ran after the failed validation.
    assert [(e["event"], e["task_id"]) for e in seen] == [("running", "validate"), ("failed", "validate")]
    error = seen[1]["error"]
    assert "sex" in error and "Traceback" not in error and not error.startswith("AirflowFailException")
    lines = out.splitlines()
    failed = next(k for k, line in enumerate(lines) if re.match(r"\s+validate\s+failed \(\d+\.\d s\)$", line))
    assert lines[failed + 1].strip().startswith("reason: ") and "sex" in lines[failed + 1]
    run_id = seen[0]["run_id"]
    assert re.search(rf"\[demo\] the DAG run {run_id} failed: task validate failed: .*sex", out)
    assert "Traceback" not in out and "File \"" not in out
    # The run went through the scheduler: the UI shows it, with the task's log.
    assert runs_in_metadata_db(env, "autopilot_training__progbad") == [(run_id, "manual", "failed")]
    assert "sex" in task_log(env, "autopilot_training__progbad", run_id, "validate")
    assert_services_stopped(env)
    assert_readable(out)


def test_the_demo_follows_tasks_and_tuning_and_prints_a_gate_table(
        env: Any, small_adult: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    small_adult(name="progdemo", tuning={"n_trials": 4, "timeout_seconds": 60, "families": ["linear"],
                                         "seed": 7, "n_startup_trials": 2, "parallel_workers": 2})
    assert demo("progdemo") == 0
    out = capsys.readouterr().out
    assert_readable(out)
    for task in ("validate", "snapshot", "plan_tuning", "tune_worker[0]", "tune_worker[1]", "tune",
                 "train_and_register", "decide", "promote"):
        assert re.search(rf"^  {re.escape(task)}\s+running$", out, re.M), out
        assert re.search(rf"^  {re.escape(task)}\s+success \(\d+\.\d s\)$", out, re.M), out
    tuning = [TUNING_LINE.search(line) for line in out.splitlines() if "tuning: trial" in line]
    assert tuning and all(tuning), out
    # Two workers share the study: the last line counts both workers' trials, against the budget.
    last = tuning[-1]
    assert last is not None and int(last.group(2)) == 4 and 4 <= int(last.group(1)) <= 5
    # The decision: a sentence, then each gate's verdict in a table.
    assert re.search(r"^decision\s+version 1: promote", out, re.M)
    lines = out.splitlines()
    head = next(k for k, line in enumerate(lines) if re.fullmatch(r"\s+gate\s+result\s+reason", line))
    table = lines[head:]
    assert not table[1].replace("-", "").strip()
    assert {row.split()[0] for row in table[2:6]} == {"quality", "explainability", "fairness", "infra"}
    assert all(row.split()[1] == "passed" for row in table[2:6])
    seen = events(env, "progdemo")
    kinds = {e["event"] for e in seen}
    assert kinds == {"running", "success", "skipped"}  # rollout skips itself: nothing serves
    run_id = seen[0]["run_id"]
    assert runs_in_metadata_db(env, "autopilot_training__progdemo") == [(run_id, "manual", "success")]
    for task in ("validate", "train_and_register", "promote"):  # the UI's log pane is not empty
        assert task_log(env, "autopilot_training__progdemo", run_id, task).strip(), task
    assert "browse the runs: make up" in out and "user admin, the password make up prints" in out
    assert_services_stopped(env)


def test_run_shows_tuning_progress_and_the_commands_print_no_reprs(
        env: Any, small_adult: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = small_adult(name="progrun", tuning={"n_trials": 5, "timeout_seconds": 60,
                                               "families": ["linear", "hist_gradient_boosting"],
                                               "seed": 7, "n_startup_trials": 2})
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert_readable(out)
    tuning = [TUNING_LINE.search(line) for line in out.splitlines() if "tuning: trial" in line]
    assert tuning and all(tuning), out
    assert tuning[-1] is not None and tuning[-1].group(1) == "5" and tuning[-1].group(2) == "5"
    assert re.search(r"^  tune_worker\s+done \(\d+\.\d s\)$", out, re.M)
    assert re.search(r"^registered\s+progrun version 1 ", out, re.M)
    assert re.search(r"^decision\s+version 1: promote", out, re.M)
    assert re.search(r"^\s+quality\s+passed\s+", out, re.M)
    # Second version, so compare and rollback have something to show.
    assert main(["run", str(path), "--run-id", "second"]) == 0
    capsys.readouterr()
    for command in (["status", "progrun"], ["lineage", "progrun"], ["compare", "progrun", "1", "2"]):
        assert main(command) == 0, command
        shown = capsys.readouterr().out
        assert shown.strip(), command
        assert_readable(shown)
    from autopilot.cli.versions import cmd_promote, cmd_rollback

    assert cmd_promote(argparse.Namespace(model="progrun", version=1, reason="keep the first")) == 0
    assert cmd_rollback(argparse.Namespace(model="progrun", to=None, reason="back again")) == 0
    assert main(["status", "progrun"]) == 0
    shown = capsys.readouterr().out
    assert_readable(shown)
    assert re.search(r"^\s+at\s+action\s+from\s+to\s+by\s+reason$", shown, re.M)
    assert "keep the first" in shown and "back again" in shown
