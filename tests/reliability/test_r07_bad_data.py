"""Case 7: bad data (a schema violation, a flood of nulls) stops the training DAG at `validate`.

Fault: the model's training file itself is bad, as a broken upstream export would write it:
- schema violation: `hours_per_week` holds words in one row of ten, and `sex` arrives renamed
  `gender` (the config's column is missing, an unknown one is present);
- flood of nulls: `occupation` empty in 60 % of the rows (10 % allowed), `native_country` in 30 %.

Injected by writing that file and running the real training DAG under `dag.test()`, with the
Slack connection pointing at a local webhook receiver.

Invariant: `validate` FAILED (tried once: a failed validation is a decision, not retried) and
every later task `upstream_failed`; the reasons name the columns with counts; exactly one Slack
message, from the failure callback, naming the run, the task and the reason; no MLflow model
version, no snapshot, no dataset input for that data, and the data stage's MLflow run FAILED
with the validation report attached.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.adapters import registry
from tests.reliability.data_support import (
    Receiver,
    airflow_db,  # noqa: F401  (fixture)
    assert_nothing_versioned,
    assert_stopped_at,
    env,  # noqa: F401  (fixture)
    run_dag,
    slack,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


def schema_violation(frame: pd.DataFrame) -> pd.DataFrame:
    hours = frame["hours_per_week"].astype(object)
    hours[frame.index % 10 == 3] = "full-time"
    return frame.assign(hours_per_week=hours).rename(columns={"sex": "gender"})


def flood_of_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    occupation = frame["occupation"].where(rng.random(len(frame)) >= 0.6)
    country = frame["native_country"].where(rng.random(len(frame)) >= 0.3)
    return frame.assign(occupation=occupation, native_country=country)


CASES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = {
    # (how the file is broken, what the reasons must say; the first one must reach Slack too)
    "schema": (schema_violation, ["missing column 'sex'", "column 'hours_per_week': 150 values could not be "
                                                          "parsed as numbers"]),
    "nulls": (flood_of_nulls, ["column 'occupation'", "null, allowed at most 10.0%", "column 'native_country'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_fails_validate_alerts_and_versions_nothing(case: str, airflow_db: None, env: Any,  # noqa: F811
                                                             slack: Receiver,  # noqa: F811
                                                             small_adult: Callable[..., Path]) -> None:
    model = f"bad_{case}"
    breaker, expected = CASES[case]
    small_adult(name=model, mutate_train=breaker)

    dag_run = run_dag(model)

    assert_stopped_at(dag_run, "validate", tries=1)
    assert_nothing_versioned(env, model)
    # The failure is recorded with its reasons: a FAILED data run carrying the report.
    reg = registry.connect(env)
    experiment = reg.client.get_experiment_by_name(f"autopilot/{model}")
    run = reg.find_run(experiment.experiment_id, f"{model}/{dag_run.run_id}/data")
    assert run is not None and run.info.status == "FAILED"
    assert run.data.tags["autopilot.validation.passed"] == "False"
    assert run.data.tags["autopilot.validation.train.passed"] == "False"
    report = json.loads(Path(reg.client.download_artifacts(run.info.run_id,
                                                           "validation/train/report.json")).read_text())
    reasons = " | ".join(report["reasons"])
    assert all(text in reasons for text in expected), reasons
    # The alert: one message (the task-level and DAG-level callbacks share one delivery key).
    assert len(slack.bodies) == 1, slack.bodies
    message = json.dumps(slack.bodies[0])
    assert f"{model} training failed at validate" in message, message
    assert dag_run.run_id in message and expected[0] in message, message
