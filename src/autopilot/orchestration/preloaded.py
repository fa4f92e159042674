"""Airflow with the task layer's libraries imported first: `python -m autopilot.orchestration.preloaded scheduler`.

Airflow 3 runs each task in a process forked from the executor's worker: the LocalExecutor's
workers are forked from the scheduler, a Celery worker's pool processes from the worker. Every
autopilot task then imports pandas, scikit-learn, MLflow and skops (and its stage's own library:
Great Expectations, Optuna, SHAP) before it does any work: 3-6 s of CPU per task on a 2-core
machine, paid by each of a training run's fifteen-odd tasks. Imported once in the parent, they
are inherited by every forked task, as gunicorn's `--preload` does for web workers: the pages are
shared copy-on-write and a task starts with its imports done.

Only imports happen here: no Python thread is started, no native parallel region runs (OpenMP
state is not fork-safe once used), no connection is opened and no settings are read, so what a
task inherits is what it would have imported itself. The native pools the imports create (OpenBLAS's
worker, pyarrow's jemalloc thread) re-create themselves in a forked child through their own fork
handlers, as they do under the scheduler's own forks. `AUTOPILOT_PRELOAD=0` turns it off (each task
then imports for itself, as under a plain `airflow scheduler`). A deployment of its own gets the
same effect by starting its scheduler and Celery workers with this module in place of `airflow`.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

__all__ = ["PRELOAD_ENV", "PRELOADED", "main", "preload"]

PRELOAD_ENV = "AUTOPILOT_PRELOAD"

# What the training and monitoring DAGs' tasks import, heaviest first. The task layer's own
# modules import the rest lazily, inside the functions that need it: these are those insides.
PRELOADED = (
    "numpy", "pandas", "pyarrow.parquet", "sklearn.ensemble", "sklearn.linear_model", "sklearn.pipeline",
    "mlflow", "mlflow.sklearn", "mlflow.models", "optuna", "shap", "great_expectations",
    "autopilot.pipeline.data", "autopilot.pipeline.training", "autopilot.pipeline.gates",
    "autopilot.gates.quality", "autopilot.gates.infra", "autopilot.gates.explainability", "autopilot.gates.fairness",
    "autopilot.explain", "autopilot.adapters.registry.model_loading",
)


def preload(modules: tuple[str, ...] = PRELOADED) -> dict[str, float]:
    """Import `modules` (and skops, through the registry adapter's quiet import); seconds per module.

    A module that fails to import is skipped: the task that needs it then raises the error in
    its own log, where it belongs, and a missing optional library never stops the scheduler.
    """
    from autopilot.adapters.registry.common import skops_io

    seconds: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # see the docstring: the task that needs it reports it
            continue
        seconds[name] = time.perf_counter() - started
    started = time.perf_counter()
    skops_io()  # through the registry adapter: a plain import floods task logs with Airflow's warnings
    seconds["skops.io"] = time.perf_counter() - started
    return seconds


def main() -> None:
    """Preload (unless `AUTOPILOT_PRELOAD=0`), then run Airflow's CLI with this process's arguments."""
    if os.environ.get(PRELOAD_ENV, "1").strip() != "0":
        preload()
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    airflow_main()


if __name__ == "__main__":
    main()
