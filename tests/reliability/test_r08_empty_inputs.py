"""Case 8: zero rows, and a suite that checks nothing, fail closed.

Faults, each a real input the pipeline reads:
- zero rows: the training file is a CSV header without rows (training DAG under `dag.test()`);
  an empty (0-byte) holdout file, and a "wrong file" whose columns are none of the config's, so
  no expectation about the data can run (the `validate` stage as the task calls it);
- a suite that evaluates nothing: `features.age.max: .nan` in the config. Great Expectations reads
  a NaN bound as "no bound", so before this case the age range check silently passed ages of 250
  (found here; `config.py` now refuses NaN bounds). Run through the training DAG.

Invariant: `validate` FAILED (once: neither an empty batch nor a broken config is retried), every
later task `upstream_failed`, the reason names the problem; no model version and no snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autopilot.config import ConfigError, load_config
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.data import validate_data
from autopilot.reports import GateFailure
from tests.helpers import adult_config_dict
from tests.reliability.data_support import (
    airflow_db,  # noqa: F401  (fixture)
    assert_nothing_versioned,
    assert_stopped_at,
    env,  # noqa: F401  (fixture)
    run_dag,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


def nan_bound_features() -> dict[str, Any]:
    features: dict[str, Any] = adult_config_dict()["features"]
    features["age"] = {**features["age"], "max": math.nan}  # written to YAML as .nan
    return features


def ages_of_250(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(age=frame["age"].where(frame.index % 10 != 0, 250))


def test_zero_rows_stop_the_dag_at_validate(airflow_db: None, env: Any,  # noqa: F811
                                            small_adult: Callable[..., Path]) -> None:
    small_adult(name="zero_rows", mutate_train=lambda f: f.iloc[0:0])
    dag_run = run_dag("zero_rows")
    assert_stopped_at(dag_run, "validate", tries=1)
    assert_nothing_versioned(env, "zero_rows")


def test_a_nan_bound_is_refused_not_read_as_no_bound(airflow_db: None, env: Any,  # noqa: F811
                                                     small_adult: Callable[..., Path]) -> None:
    path = small_adult(name="nan_bound", features=nan_bound_features(), mutate_train=ages_of_250)
    assert ".nan" in path.read_text()
    with pytest.raises(ConfigError, match=r"features\.age.*max is NaN"):
        load_config(path)
    dag_run = run_dag("nan_bound")
    assert_stopped_at(dag_run, "validate", tries=1)  # a config error is not retried
    assert_nothing_versioned(env, "nan_bound")


def wrong_file(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": range(len(frame)), "comment": ["unrelated export"] * len(frame)})


@pytest.mark.parametrize("case", ["empty holdout file", "no known column"])
def test_nothing_to_check_fails_the_validate_stage(case: str, small_adult: Callable[..., Path],
                                                   settings: Any) -> None:
    model = "nothing_to_check"
    if case == "no known column":
        path = small_adult(name=model, mutate_train=wrong_file)
        expected = ["train: table has no columns"]
    else:
        path = small_adult(name=model)
        (path.parent / "data" / f"{model}_test.csv").write_bytes(b"")
        expected = ["test: table has 0 rows", "test: table has no columns"]
    cfg = load_config(path)
    with pytest.raises(GateFailure) as failed:
        validate_data(cfg, settings, RunContext(run_id=f"r08-{case}"))
    report = failed.value.report
    assert not report.passed and all(any(text in r for r in report.reasons) for text in expected), report.reasons
    if case == "no known column":
        # Nothing about the data could be checked: every column is named missing, no check ran
        # (so none passed), and the row count, which is fine, is not blamed.
        assert all(f"train: missing column '{c}'" in report.reasons for c in cfg.columns), report.reasons
        assert report.metrics["train.evaluated_expectations"] == 0
        assert not any("train: table has" in r and "rows" in r for r in report.reasons), report.reasons
    assert_nothing_versioned(settings, model)
