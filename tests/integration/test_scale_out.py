"""Scale-out: Airflow on PostgreSQL with the CeleryExecutor (Redis broker) and two workers,
MLflow (server on PostgreSQL) and Optuna on PostgreSQL, runs the full training DAG.

Tuning fans out: `tuning.parallel_workers: 2` maps two `tune_worker` tasks, which the two
Celery workers run at the same time on one Optuna study.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopilot.adapters import registry
from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from autopilot.trigger import trigger
from tests.helpers import PROJECT
from tests.integration.conftest import _unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

MODEL = "scaled"
DAG_ID = f"autopilot_training__{MODEL}"
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 9  # a database of its own on the machine's Redis, emptied before and after


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis() -> Any:
    import redis

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"needs Redis at {REDIS[0]}:{REDIS[1]} as the Celery broker: {exc}")
    return client


@pytest.fixture
def stack(tmp_path: Path, small_adult: Callable[..., Path],
          postgres_factory: Callable[[], str]) -> Iterator[tuple[Embedded, str]]:
    """Airflow (PostgreSQL + Celery, two workers), an MLflow server on PostgreSQL, Optuna and state on PostgreSQL."""
    broker = _redis()
    broker.flushdb()
    # 40 trials, 20 per tuning worker: each tuning task must outlast the few seconds a Celery
    # worker stays busy after its previous task succeeded (the task process exits, measured up to
    # 5 s), or the other worker, still busy, leaves both tuning tasks to one worker in turn (seen
    # with 8 trials each: a tuning task done in 3.7 s, the second one after it on the same worker).
    config = small_adult(name=MODEL, rows=2000, tuning={
        "n_trials": 40, "timeout_seconds": 240, "families": ["linear", "hist_gradient_boosting"], "seed": 7,
        "n_startup_trials": 2, "parallel_workers": 2})
    airflow_db, mlflow_db = postgres_factory(), postgres_factory()
    mlflow_port, airflow_port = free_port(), free_port()
    settings = Settings.from_env({
        "AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(config.parent),
        "MLFLOW_TRACKING_URI": mlflow_db,  # the MLflow server's backend store; tasks talk to the server
        "AUTOPILOT_OPTUNA_STORAGE": postgres_factory(), "AUTOPILOT_STATE_DB": postgres_factory()})
    overrides = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}",
        # The driver stays explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.celery_hostname.worker_hostname",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "PYTHONPATH": str(PROJECT),
    }
    embedded = Embedded(settings=settings, project=PROJECT, airflow_port=airflow_port, mlflow_port=mlflow_port,
                        overrides=overrides, celery_workers=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        started = embedded.start()
        try:
            assert embedded.wait_healthy(timeout=240), _logs(embedded)
            _wait_for_workers(embedded)
            password = embedded.admin_password()
            assert password
            yield embedded, password
        finally:
            pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
            stopped = embedded.stop()
            broker.flushdb()
    assert sorted(stopped) == sorted(started)
    assert not any(_alive(pid) for pid in pids), "a service outlived Embedded.stop()"


def _wait_for_workers(embedded: Embedded, timeout: float = 120) -> None:
    """Both Celery workers connected to the broker (Airflow's health endpoint does not cover workers)."""
    logs = [embedded.run_dir / f"celery-worker-{k}.log" for k in (1, 2)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(" ready." in log.read_text() for log in logs if log.exists()) and all(p.exists() for p in logs):
            return
        time.sleep(2)
    raise AssertionError(f"the Celery workers never became ready\n{_logs(embedded)}")


def _logs(embedded: Embedded) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(embedded.run_dir.glob("*.log")))


def _api(url: str, password: str) -> Callable[[str], dict[str, Any]]:
    token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password},
                       timeout=30).json()["access_token"]

    def get(path: str) -> dict[str, Any]:
        response = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    return get


def _wait_for_dag(get: Callable[[str], dict[str, Any]], embedded: Embedded, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the DAG processor parses the file first
        if DAG_ID in {d["dag_id"] for d in get("/api/v2/dags")["dags"]}:
            return
        time.sleep(3)
    raise AssertionError(f"{DAG_ID} never appeared\n{_logs(embedded)}")


@pytest.mark.timeout(1500)
def test_training_dag_on_celery_and_postgres_fans_tuning_out(stack: tuple[Embedded, str]) -> None:
    import optuna

    embedded, password = stack
    url = f"http://127.0.0.1:{embedded.airflow_port}"
    get = _api(url, password)
    _wait_for_dag(get, embedded)
    result = trigger(url, "admin", password, DAG_ID, run_id="scale-out-1", wait=True, timeout=900, poll=3)
    instances = get(f"/api/v2/dags/{DAG_ID}/dagRuns/scale-out-1/taskInstances?limit=100")["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert result.state == "success", (result, states, _logs(embedded))

    # Every task ran on a Celery worker; the two tuning workers ran on different ones, at the same time.
    assert {ti["hostname"] for ti in instances if ti["state"] == "success"} <= {"worker1", "worker2"}
    tuners = sorted((ti for ti in instances if ti["task_id"] == "tune_worker"), key=lambda ti: ti["map_index"])
    assert [ti["map_index"] for ti in tuners] == [0, 1]
    placed = [(t["hostname"], t["start_date"], t["end_date"]) for t in tuners]
    assert {ti["hostname"] for ti in tuners} == {"worker1", "worker2"}, placed
    assert max(t["start_date"] for t in tuners) < min(t["end_date"] for t in tuners), f"no overlap: {placed}"
    for task in ("validate", "snapshot", "plan_tuning", "tune", "train_and_register", "quality",
                 "explainability_and_fairness", "infra", "decide", "promote", "plan_deployment"):
        assert states[(task, -1)] == "success", (task, states)

    # One study on PostgreSQL holds both workers' trials: the budget, not twice the budget.
    settings = embedded.settings
    (summary,) = optuna.get_all_study_summaries(settings.optuna_storage)
    assert 40 <= summary.n_trials <= 41  # MaxTrialsCallback: at most n_workers - 1 over
    # MLflow, through its server on PostgreSQL: one version, champion, with the tuning recorded.
    reg = registry.connect(Settings.from_env({**embedded.env(), "MLFLOW_TRACKING_URI": embedded.overrides[
        "MLFLOW_TRACKING_URI"]}))
    version = reg.resolve_version(MODEL, "champion")
    assert int(version.version) == 1
    tune_run = reg.client.get_run(version.tags["autopilot.tune_run_id"])
    assert tune_run.data.params["tuning_workers"] == "2"
    assert tune_run.data.tags["autopilot.study_name"] == summary.study_name

