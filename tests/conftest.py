"""Shared fixtures. Airflow reads its configuration when first imported, so the environment
for an isolated, example-free Airflow is set here, before any test module imports it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import PROJECT, TINY_TUNING, adult_config_dict

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="autopilot-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT / "dags"))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    """Embedded-default settings under a fresh temporary home."""
    from autopilot.settings import Settings

    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})


@pytest.fixture
def reg(settings: Any) -> Any:
    """The MLflow store `settings` names (`registry.connect`): what tests read runs, versions and aliases through."""
    from autopilot.adapters import registry

    return registry.connect(settings)


@pytest.fixture(scope="session")
def adult_frames() -> tuple[Any, Any]:
    """The bundled Adult train and test splits, raw."""
    import pandas as pd

    return (pd.read_csv(PROJECT / "data/adult/adult_train.csv.gz"),
            pd.read_csv(PROJECT / "data/adult/adult_test.csv.gz"))


@pytest.fixture
def small_adult(tmp_path: Path, adult_frames: tuple[Any, Any]) -> Callable[..., Path]:
    """Write a small Adult sample and a config with a tiny budget; return the config path.

    Keyword arguments replace config sections; `mutate_train` edits the training frame first.
    """

    def make(name: str = "adult_small", rows: int = 1500, test_rows: int = 800,
             mutate_train: Callable[[Any], Any] | None = None, **overrides: Any) -> Path:
        train, test = adult_frames
        train = train.sample(rows, random_state=0).reset_index(drop=True)
        test = test.sample(test_rows, random_state=0).reset_index(drop=True)
        if mutate_train is not None:
            train = mutate_train(train)
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        train.to_csv(data_dir / f"{name}_train.csv", index=False)
        test.to_csv(data_dir / f"{name}_test.csv", index=False)
        sections = {
            "name": name,
            "data": {"source": f"data/{name}_train.csv", "test_source": f"data/{name}_test.csv"},
            "validation": {"min_rows": 100, "max_rows": 1_000_000},
            "tuning": TINY_TUNING,
            "split": {"seed": 42, "cv_folds": 2},
            # Merged into the demo's gates. On 800 holdout rows the quality intervals are ~0.015 wide,
            # three times the 0.005 margin, so a first run (vs the linear baseline) or an equivalent
            # retrain is mostly inconclusive; and the holdout holds ~29 positive women and ~10
            # positive Black rows, so equalized odds cannot be judged. Inconclusive goes to review by
            # default; the tests using this fixture test something else, so it passes (recorded).
            # tests/unit/test_quality_floors.py and test_fairness_types.py test review.
            "gates": {"quality": {"min_metrics": {"roc_auc": 0.7}, "on_inconclusive": "pass"},
                      "fairness": {"on_inconclusive": "pass"}},
            "registry": {"name": name},
        }
        gates = overrides.pop("gates", {})
        sections.update(overrides)
        raw = adult_config_dict(**{k: v for k, v in sections.items() if k != "gates"})
        for part in (sections["gates"], gates):  # section by section, so the demo's other gates stay
            for section, values in part.items():
                raw["gates"][section] = {**raw["gates"].get(section, {}), **values}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return make


@pytest.fixture
def mlflow_clean() -> Iterator[None]:
    """End any MLflow run a failed test left active."""
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


# The longest test files, longest first (measured on the 2-core CI machine). With
# `--dist loadfile` each worker takes whole files in collection order, so a long file collected
# last would run alone at the end while the other worker idles; starting them first keeps
# both workers busy until the short files fill the gaps.
SLOW_FILES_FIRST = (
    "tests/integration/test_scale_out.py",
    "tests/e2e/test_airflow_ui.py",
    "tests/e2e/test_gates.py",
    "tests/e2e/test_embedded_services.py",
    "tests/e2e/test_progress.py",
    "tests/e2e/test_review_approval.py",
    "tests/e2e/test_assets.py",
    "tests/e2e/test_models_page.py",
    "tests/e2e/test_monitoring_loop.py",
    "tests/e2e/test_multiclass.py",
    "tests/e2e/test_pipeline.py",
    "tests/e2e/test_trigger.py",
    "tests/e2e/test_dag_run.py",
    "tests/e2e/test_monitoring_dag.py",
    "tests/e2e/test_generic_datasets.py",
    "tests/e2e/test_doctor.py",
    "tests/e2e/test_simulate.py",
    "tests/e2e/test_shadow_deployment.py",
    "tests/e2e/test_multivariate_drift.py",
    "tests/e2e/test_multiclass_monitoring.py",
    "tests/integration/test_postgres.py",
    # The reliability suite (`make test-reliability`), measured the same way.
    "tests/reliability/test_r06_concurrent_triggers.py",
    "tests/reliability/test_r24_quiet_windows.py",
    "tests/reliability/test_r19_hot_swap_under_load.py",
    "tests/reliability/test_r28_canary_secrets.py",
    "tests/reliability/test_r17_mlflow_outage.py",
    "tests/reliability/test_r05_trigger_auth.py",
    "tests/reliability/test_r04_duplicate_trigger.py",
    "tests/reliability/test_r27_slack_outage.py",
    "tests/reliability/test_r16_rollout_rollback.py",
    "tests/reliability/test_r13_partial_upload.py",
    "tests/reliability/test_r18_aws_outage.py",
    "tests/reliability/test_r10_tuning_worker_killed.py",
    "tests/reliability/test_r14_pickle_payload.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slowest files first (a stable sort: everything else keeps its order)."""
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
