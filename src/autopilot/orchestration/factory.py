"""DAG factory: one training DAG per model config file.

This module is imported by the scheduler's DAG parser every few seconds, so it imports only
Airflow's SDK and the standard library at module level; each task imports the library code
it needs when it runs. Config files are only listed here (their names give the DAG ids); they
are read and validated inside the tasks.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, dag, get_current_context, task

__all__ = ["DEFAULT_ARGS", "config_dir", "training_dag", "training_dags"]

# Transient failures (a database blip, a slow object store) deserve retries; gates do not.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "autopilot",
    "retries": 2,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}
START_DATE = datetime(2026, 1, 1)
DOC = """
### Training: `{model}`

Takes the data named in `{config}` through the lifecycle core:

1. **validate**: Great Expectations suite built from the config; fails closed, no retry.
2. **snapshot**: content-addressed canonical Parquet (SHA-256), recorded as an MLflow input.
3. **tune**: Optuna TPE with pruning over four scikit-learn families, study in RDB storage.
4. **train_and_register**: refit, evaluate on the held-out split, log with the environment
   fingerprint, register a version with alias `challenger` and a SHA-256 manifest.

Every task is idempotent: a retry or a rerun of this DAG run creates no second snapshot, study
or model version. Trigger with the Airflow UI, `airflow dags trigger`, or the REST API.
"""


def config_dir(default: Path) -> Path:
    """The folder of model configs: `AUTOPILOT_CONFIG_DIR` when set, else `default`."""
    configured = os.environ.get("AUTOPILOT_CONFIG_DIR")
    return Path(configured) if configured else default


def _context() -> tuple[Any, Any]:
    from autopilot.settings import Settings
    from autopilot.stages import RunContext

    context = get_current_context()
    dag_run = context["dag_run"]
    ctx = RunContext(run_id=dag_run.run_id, dag_id=dag_run.dag_id, actor=f"airflow:{dag_run.dag_id}")
    return ctx, Settings.from_env()


def _config(path: str, model: str) -> Any:
    from autopilot.config import ConfigError, load_config

    cfg = load_config(path)
    if cfg.name != model:
        raise ConfigError(f"{path}: name: {cfg.name!r} must match the file name {model!r} (it names the DAG)")
    return cfg


def _gate(func: Any, *args: Any) -> Any:
    """Run a stage; a failed gate fails the task at once (no retry: it is a decision)."""
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.config import ConfigError
    from autopilot.reports import GateFailure

    try:
        return func(*args)
    except GateFailure as exc:
        raise AirflowFailException(str(exc)) from exc
    except ConfigError as exc:  # a broken config will not fix itself on retry
        raise AirflowFailException(str(exc)) from exc


def training_dag(model: str, config_path: Path) -> DAG:
    """Build the training DAG `autopilot_training__<model>` for one config file."""
    path = str(config_path)

    @dag(
        dag_id=f"autopilot_training__{model}",
        description=f"Validate, version, tune, train and register {model}",
        doc_md=DOC.format(model=model, config=config_path.name),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["autopilot", "training", f"model:{model}"],
    )
    def training() -> None:
        @task(retries=0)  # a failed gate is a decision, not a transient error
        def validate() -> dict[str, Any]:
            from autopilot.stages import validate_data

            ctx, settings = _context()
            return dict(_gate(validate_data, _config(path, model), settings, ctx))

        @task
        def snapshot(validated: dict[str, Any]) -> dict[str, Any]:
            from autopilot.stages import snapshot_data

            ctx, settings = _context()
            return dict(_gate(snapshot_data, _config(path, model), settings, ctx, validated))

        @task
        def tune(snapped: dict[str, Any]) -> dict[str, Any]:
            from autopilot.stages import tune_model

            ctx, settings = _context()
            return dict(_gate(tune_model, _config(path, model), settings, ctx, snapped))

        @task
        def train_and_register(snapped: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
            from autopilot.stages import train_and_register as stage

            ctx, settings = _context()
            return dict(_gate(stage, _config(path, model), settings, ctx, snapped, tuned))

        # The decorated calls return XComArgs (references resolved at run time), not dicts.
        snapped: Any = snapshot(validate())  # type: ignore[arg-type]
        tuned: Any = tune(snapped)
        train_and_register(snapped, tuned)

    return training()


def training_dags(default_folder: Path) -> dict[str, DAG]:
    """One training DAG per `*.yaml` file in the config folder, keyed by DAG id.

    Args:
        default_folder: used when `AUTOPILOT_CONFIG_DIR` is not set.
    """
    found = {}
    for path in sorted(config_dir(default_folder).glob("*.yaml")):
        built = training_dag(path.stem, path.resolve())
        found[built.dag_id] = built
    return found
