"""The training DAG under `dag.test()`: the real task code through Airflow, on a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot import registry
from tests.conftest import PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """`dag.test()` needs a migrated metadata database."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, env=os.environ,
                   capture_output=True, timeout=300)


@pytest.fixture
def env(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AUTOPILOT_HOME", str(settings.home))
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(tmp_path))
    for name in ("MLFLOW_TRACKING_URI", "AUTOPILOT_ARTIFACT_ROOT", "AUTOPILOT_OPTUNA_STORAGE",
                 "AUTOPILOT_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    yield settings


def run_dag(model: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[f"autopilot_training__{model}"].test()


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_training_dag_end_to_end(airflow_db: None, env: Any, small_adult: Callable[..., Path]) -> None:
    small_adult(name="dagtest")
    dag_run = run_dag("dagtest")
    assert str(dag_run.state) == "success", states(dag_run)
    assert set(states(dag_run).values()) == {"success"}
    registry.configure(env)
    version = registry.resolve_version("dagtest", "challenger")
    assert int(version.version) == 1
    assert version.tags["autopilot.dag_run_id"] == dag_run.run_id


def test_bad_data_fails_the_dag_before_training(airflow_db: None, env: Any,
                                                small_adult: Callable[..., Path]) -> None:
    small_adult(name="dagbad", mutate_train=lambda f: f.drop(columns=["sex"]))
    dag_run = run_dag("dagbad")
    result = states(dag_run)
    assert str(dag_run.state) == "failed"
    assert result["validate"] == "failed"
    assert result["snapshot"] == result["tune"] == result["train_and_register"] == "upstream_failed"
    registry.configure(env)
    with pytest.raises(LookupError):
        registry.resolve_version("dagbad", "latest")
