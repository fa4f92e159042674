"""Shared by the crash-safety modules (r01, r02, r03, r15, r17): one MLflow store, cheap versions, forked workers.

Workers are forked from the test process (`fork_worker`): real processes, killed with SIGKILL at
a crash point, but started in milliseconds because the libraries are already imported (a fresh
interpreter needs ~10 s to import MLflow and scikit-learn on a busy CI machine). A worker uses
none of the test process's database connections: MLflow's store runs without a pool (see
`mlflow_uri`), and autopilot's state-database engines (and MLflow's HTTP sessions) are cached
per process id, so a worker opens its own.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.config import LoadedConfig, load_config
from autopilot.faults import ENV_DIR, ENV_POINTS
from autopilot.settings import Settings
from tests.helpers import ADULT_CONFIG

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One MLflow store (SQLite) for a module: creating its tables costs seconds, so tests share it.

    MLflow's engine gets no connection pool (`MLFLOW_SQLALCHEMYSTORE_POOLCLASS=NullPool`), so a
    forked worker never inherits an open SQLite connection of the test process.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
        yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def logged_model(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One tiny logged model (its URI and run id) that every cheap version points at."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from autopilot.adapters.registry.runs import fluent_uris

    settings = home_settings(mlflow_uri, tmp_path_factory.mktemp("logged"), "sqlite:///unused.db")
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("crash-tests", settings.mlflow_artifact_root)
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model",
                                        serialization_format="skops", pip_requirements=[])
    return info.model_uri, run.info.run_id


def home_settings(tracking_uri: str, home: Path, state_db: str) -> Settings:
    """Settings with MLflow at `tracking_uri` and the state database at `state_db`."""
    return Settings.from_env({"AUTOPILOT_HOME": str(home), "MLFLOW_TRACKING_URI": tracking_uri,
                              "AUTOPILOT_STATE_DB": state_db, "AUTOPILOT_CONFIG_DIR": str(home)})


def sqlite_state(tmp_path: Path) -> str:
    """A state database URL on SQLite under `tmp_path`."""
    return f"sqlite:///{tmp_path / 'state.db'}"


def new_model(settings: Settings, logged: tuple[str, str], count: int) -> str:
    """A fresh registered model with `count` versions (all pointing at the one logged model)."""
    reg = registry.connect(settings)
    name = f"crash_{uuid.uuid4().hex[:8]}"
    for _ in range(count):
        reg.create_version(name, logged[0], logged[1], {})
    return name


def config_for(name: str) -> LoadedConfig:
    """The demo config, registering under `name`."""
    cfg = load_config(ADULT_CONFIG)
    return cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"name": name})})


def fork_worker(target: Callable[..., Any], *args: Any, log: Path, points: tuple[str, ...] = (),
                fault_dir: Path | None = None, env: dict[str, str] | None = None) -> Any:
    """Run `target(*args)` in a forked process; its JSON result goes to `<log>.json`, output to `log`.

    `points` arms crash points (`autopilot.faults`): the worker pauses there, for the test to kill it.
    """
    def main() -> None:
        handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, 1)
        os.dup2(handle, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        # Log to the worker's own output, as a task does (not to the test's capture handlers).
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        os.environ.update(env or {})
        if points:
            os.environ[ENV_POINTS] = ",".join(points)
            os.environ[ENV_DIR] = str(fault_dir)
        try:
            result = {"ok": target(*args)}
        except BaseException as exc:  # reported to the test, which asserts on it
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__}
        Path(f"{log}.json").write_text(json.dumps(result, default=str))
        sys.stdout.flush()
        sys.stderr.flush()

    process = FORK.Process(target=main, daemon=False)
    process.start()
    return process


def result_of(log: Path) -> dict[str, Any]:
    """What a finished worker returned (`{"ok": ...}` or `{"error": ..., "type": ...}`)."""
    path = Path(f"{log}.json")
    if not path.exists():
        raise AssertionError(f"worker left no result; its output:\n{log.read_text(errors='replace')[-3000:]}")
    found: dict[str, Any] = json.loads(path.read_text())
    return found

