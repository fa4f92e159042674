"""Shared by the data reliability cases (r07-r09): run the training DAG under `dag.test()` and check
that a run stopped before training left nothing versioned behind.

The DAG fixtures come from `tests/e2e/test_dag_run.py` (a migrated metadata database, an isolated
autopilot home) and the Slack stand-in from `tests/e2e/test_embedded_services.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from tests.e2e.test_dag_run import airflow_db, env, run_dag, states
from tests.e2e.test_embedded_services import Receiver
from tests.e2e.test_pipeline import versions

__all__ = ["AFTER_VALIDATE", "Receiver", "airflow_db", "assert_nothing_versioned", "assert_stopped_at", "env",
           "run_dag", "slack", "states"]

# Every task after `validate`: none of them may run once validation failed.
AFTER_VALIDATE = ("snapshot", "plan_tuning", "tune_worker", "tune", "train_and_register", "quality",
                  "explainability_and_fairness", "infra", "decide", "promote", "plan_deployment", "deploy",
                  "rollout")


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A local Slack webhook receiver wired as the Airflow connection `autopilot_slack`."""
    receiver = Receiver()
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                                    "password": receiver.url}))
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def assert_stopped_at(dag_run: Any, task: str = "validate", tries: int | None = None) -> dict[str, str]:
    """The run failed at `task` (FAILED: never skipped, never success) and nothing after it ran."""
    result = states(dag_run)
    assert str(dag_run.state) == "failed", result
    assert result[task] == "failed", result
    after = AFTER_VALIDATE[AFTER_VALIDATE.index(task) + 1:] if task in AFTER_VALIDATE else AFTER_VALIDATE
    assert {result[name] for name in after} == {"upstream_failed"}, result
    if tries is not None:
        ti = dag_run.get_task_instance(task)
        assert ti.try_number == tries, f"{task} ran {ti.try_number} time(s), expected {tries}"
    return result


def assert_nothing_versioned(settings: Any, model: str, validated: bool = False) -> None:
    """No model version, no snapshot, no recorded batch; the data stage's MLflow run FAILED (if any).

    `validated`: validation passed and a later step failed, so the data run itself FINISHED.
    """
    reg = registry.connect(settings)
    assert versions(reg, model) == [], f"{model} has registered versions"
    stored = list(Path(settings.artifact_root).rglob("*.parquet"))
    assert stored == [], f"snapshots were written: {stored}"
    experiment = reg.client.get_experiment_by_name(f"autopilot/{model}")
    if experiment is None:
        return
    runs = reg.client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("autopilot.stage") for r in runs} <= {"data"}, "a stage after validation ran"
    status = "FINISHED" if validated else "FAILED"
    assert all(r.info.status == status for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all(not r.inputs.dataset_inputs for r in runs), "a batch was recorded as a run input"
    assert not any(k.startswith("autopilot.snapshot.") for r in runs for k in r.data.tags), "a snapshot was tagged"
