"""Case 1: the process running the training stage is killed mid-way; the DAG run is run again.

Fault: `stages.train_and_register` runs in a worker process (forked from the test) on a small Adult
sample with a fixed linear model (the tuning result is given, the tiniest budget) and is killed
with SIGKILL: while it trains (as soon as its MLflow run shows up RUNNING), after the model is
logged but before it is registered (`train.logged`), or just after the version is registered
(`train.registered`; registration sets no alias). Then the stage runs again for the same DAG run
(Airflow's retry, or a rerun after the scheduler and worker restarted).

Invariant: exactly one version carries the DAG run's key, and it holds no alias; the champion
is unchanged; no MLflow run of the model is left RUNNING (the rerun resumed the killed one and
finished it; no second training run for the key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.config import LoadedConfig, load_config
from autopilot.pipeline.context import RunContext, experiment_name
from autopilot.pipeline.data import snapshot_data, validate_data
from autopilot.pipeline.training import train_and_register
from autopilot.settings import Settings
from autopilot.versions.promotion import current, promote
from tests.reliability.crash_support import fork_worker, home_settings, mlflow_uri, sqlite_state  # noqa: F401
from tests.reliability.inject import kill9, wait_for_marker
from tests.serving_support import LINEAR

TUNED = {"tune_run_id": "given", "study_name": "given", "best_params": LINEAR, "best_value": None, "n_trials": 0}


@pytest.fixture
def setup(small_adult: Callable[..., Path], mlflow_uri: str,  # noqa: F811
          tmp_path: Path) -> tuple[LoadedConfig, Settings, dict[str, Any]]:
    """A model with a champion (v1, from an earlier DAG run) and a validated snapshot."""
    cfg = load_config(small_adult(name="r01_model", rows=1200, test_rows=600))
    settings = home_settings(mlflow_uri, tmp_path / "home", sqlite_state(tmp_path))
    first = RunContext(run_id="scheduled__first")
    snapped = snapshot_data(cfg, settings, first, validate_data(cfg, settings, first))
    champion = train_and_register(cfg, settings, first, snapped, TUNED)
    promote(settings, cfg.registered_model_name, champion["version"], actor="dag", reason="first run")
    return cfg, settings, snapped


def train(cfg: LoadedConfig, settings: Settings, ctx: RunContext, snapped: dict[str, Any]) -> dict[str, Any]:
    return train_and_register(cfg, settings, ctx, snapped, TUNED)


def runs_of(reg: registry.Registry, cfg: LoadedConfig) -> list[Any]:
    experiment = reg.client.get_experiment_by_name(experiment_name(cfg))
    assert experiment is not None
    return list(reg.client.search_runs([experiment.experiment_id], max_results=1000))


def train_runs(reg: registry.Registry, cfg: LoadedConfig, key: str) -> list[Any]:
    return [r for r in runs_of(reg, cfg) if r.data.tags.get(registry.IDEMPOTENCY_TAG) == key]


def wait_for_running_run(reg: registry.Registry, cfg: LoadedConfig, key: str, worker: Any, log: Path,
                         timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.info.status == "RUNNING" for r in train_runs(reg, cfg, key)):
            return
        if not worker.is_alive():
            raise AssertionError(f"the worker ended before training started:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError("the training run never showed up")


def test_reruns_after_killed_trainings(setup: tuple[LoadedConfig, Settings, dict[str, Any]], tmp_path: Path,
                                       fault_dir: Path) -> None:
    cfg, settings, snapped = setup
    for number, moment in enumerate(["training", "train.logged", "train.registered"], start=2):
        crash_and_rerun(cfg, settings, snapped, moment, number, tmp_path / moment, fault_dir)


def crash_and_rerun(cfg: LoadedConfig, settings: Settings, snapped: dict[str, Any], moment: str, number: int,
                    folder: Path, fault_dir: Path) -> None:
    """Kill a DAG run's training at `moment`, run it again: its version is `number`."""
    name = cfg.registered_model_name
    reg = registry.connect(settings)
    ctx = RunContext(run_id=f"manual__crashed_at_{moment}")
    key = ctx.key(cfg, "train")
    folder.mkdir()
    log = folder / "worker.log"
    points = () if moment == "training" else (moment,)
    challenger = current(name, "challenger", reg)
    worker = fork_worker(train, cfg, settings, ctx, snapped, log=log, points=points, fault_dir=fault_dir)
    if moment == "training":
        wait_for_running_run(reg, cfg, key, worker, log)
        kill9(worker.pid)
    else:
        kill9(wait_for_marker(fault_dir, moment, timeout=180, log=log))
    worker.join(10)
    assert worker.exitcode == -9, moment
    killed = train_runs(reg, cfg, key)
    assert [r.info.status for r in killed] == ["FINISHED" if moment == "train.registered" else "RUNNING"], moment
    assert len(reg.find_versions(name, key)) == (1 if moment == "train.registered" else 0), moment
    assert current(name, "challenger", reg) == challenger  # the killed run never got the alias

    again = train(cfg, settings, ctx, snapped)

    assert [int(v.version) for v in reg.find_versions(name, key)] == [again["version"]] == [number], moment
    assert again["metrics"]["roc_auc"] > 0.7 and again["name"] == name
    # Registration sets no alias (`decide` gives `challenger` to a version that passed); champion unchanged.
    assert current(name, "challenger", reg) == challenger and current(name, "champion", reg) == 1
    # Resumed, not replaced.
    assert [r.info.run_id for r in train_runs(reg, cfg, key)] == [killed[0].info.run_id], moment
    assert [r.info.status for r in runs_of(reg, cfg) if r.info.status != "FINISHED"] == [], moment
    assert train(cfg, settings, ctx, snapped)["version"] == number  # and once more: nothing new
    assert len(reg.find_versions(name, key)) == 1
