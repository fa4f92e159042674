"""MLflow and Optuna on the machine's PostgreSQL: the production-mode stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.cli import run_pipeline
from autopilot.config import load_config
from autopilot.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


@pytest.fixture
def pg_settings(tmp_path: Path, postgres_factory: Callable[[], str]) -> Settings:
    # Separate databases: MLflow and Optuna both keep an `alembic_version` table.
    return Settings.from_env({
        "AUTOPILOT_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": postgres_factory(),
        "AUTOPILOT_OPTUNA_STORAGE": postgres_factory(),
    })


def test_pipeline_on_postgres_is_idempotent(small_adult: Callable[..., Path], pg_settings: Settings) -> None:
    import optuna

    cfg = load_config(small_adult())
    first = run_pipeline(cfg, pg_settings, "pg-run", stop_after="register")
    second = run_pipeline(cfg, pg_settings, "pg-run", stop_after="register")
    assert first["version"] == second["version"] == 1
    reg = registry.connect(pg_settings)
    version = reg.resolve_version(cfg.registered_model_name, 1)
    assert version.tags["autopilot.dag_run_id"] == "pg-run"
    summaries = optuna.get_all_study_summaries(pg_settings.optuna_storage)
    assert len(summaries) == 1 and summaries[0].n_trials == 3
    run = reg.client.get_run(version.run_id)
    # MLflow's dataset digest column is 36 characters: PostgreSQL enforces what SQLite does not.
    assert all(len(i.dataset.digest) <= 36 for i in run.inputs.dataset_inputs)
    assert load_version(version, LoadPolicy(), reg) is not None


def test_optuna_study_resumes_on_postgres(postgres_db: str, adult_frames: Any) -> None:
    from autopilot.config import ModelConfig
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import make_splits
    from autopilot.modeling.tuning import tune
    from tests.helpers import adult_config_dict

    raw = adult_config_dict(tuning={"n_trials": 4, "timeout_seconds": 60, "families": ["linear"], "seed": 1,
                                    "n_startup_trials": 2}, split={"cv_folds": 2})
    cfg = ModelConfig.model_validate(raw)
    frame = canonicalize(adult_frames[0].sample(800, random_state=1).reset_index(drop=True), cfg)
    splits = make_splits(frame, None, cfg)
    partial = tune(splits.X_train, splits.y_train, cfg, postgres_db, "resume", n_trials=2)
    assert partial.n_new == 2
    rest = tune(splits.X_train, splits.y_train, cfg, postgres_db, "resume")
    assert rest.n_new == 2 and rest.n_trials == 4
    assert tune(splits.X_train, splits.y_train, cfg, postgres_db, "resume").n_new == 0


def _worker(args: tuple[dict[str, Any], Any, Any, str, int]) -> int:
    """One tuning worker in its own process, as a mapped DAG task on another Celery worker is."""
    from autopilot.config import ModelConfig
    from autopilot.modeling.tuning import run_trials

    raw, X, y, storage, worker = args
    return run_trials(X, y, ModelConfig.model_validate(raw), storage, "shared", worker=worker, n_workers=2)


def test_two_worker_processes_share_one_study_on_postgres(postgres_db: str, adult_frames: Any) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import optuna

    from autopilot.config import ModelConfig
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import make_splits
    from autopilot.modeling.tuning import open_study, study_result
    from tests.helpers import adult_config_dict

    families = ["linear", "hist_gradient_boosting"]
    raw = adult_config_dict(tuning={"n_trials": 8, "timeout_seconds": 120, "families": families, "seed": 3,
                                    "n_startup_trials": 2, "parallel_workers": 2},
                            split={"cv_folds": 2})
    cfg = ModelConfig.model_validate(raw)
    frame = canonicalize(adult_frames[0].sample(800, random_state=2).reset_index(drop=True), cfg)
    splits = make_splits(frame, None, cfg)
    open_study(cfg, postgres_db, "shared")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        started = list(pool.map(_worker, [(raw, splits.X_train, splits.y_train, postgres_db, k) for k in (0, 1)]))
    # Both workers searched, and together they stopped at the budget (a trial running in one
    # worker when the other reached it may finish: at most n_workers - 1 over).
    assert all(n >= 1 for n in started), started
    result = study_result(cfg, postgres_db, "shared", n_new=sum(started))
    assert 8 <= result.n_trials <= 9 and result.n_new == sum(started) == len(result.trials)
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # one numbering: one study, not two
    # A later worker of the same stage (a retried task) finds the budget spent and runs nothing.
    assert _worker((raw, splits.X_train, splits.y_train, postgres_db, 1)) == 0
