"""Case 9: an unreachable data source, and an exception inside Great Expectations, fail the task.

Faults, injected for real:
- S3 answers 503: the model's `s3://` source lives on moto's server behind `FaultProxy`, which
  answers every GET with 503 (training DAG under `dag.test()`); the proxy resetting connections,
  and moto's server stopped (connection refused), hit the `validate` stage as the task calls it;
- the local training file vanishes between `validate` and `snapshot` (stage functions);
- an exception raised inside Great Expectations: the config names a feature `""` (a Parquet
  file can hold such a column). GX's own `ExpectColumnToExist` refuses it with a pydantic
  error while the suite is built from the config (DAG under `dag.test()`).

Before this case an S3 outage was reported as a failed validation: the batch recorded as
invalid and the run stopped like a gate decision, never retried. Now an outage raises
`DataSourceUnavailable`, so the task fails and Airflow retries it; a missing object is still a
verdict (validation fails, no retry).

Invariant: the task is FAILED (never skipped, never success): after its retries for an outage,
at once for the GX error; every later task `upstream_failed`; one Slack message, after the last
try; no model version, no snapshot, no recorded batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autopilot.config import load_config
from autopilot.data.sources import DataSourceError, DataSourceUnavailable
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.data import snapshot_data, validate_data
from autopilot.reports import GateFailure
from tests.helpers import adult_config_dict
from tests.reliability.data_support import (
    Receiver,
    airflow_db,  # noqa: F401  (fixture)
    assert_nothing_versioned,
    assert_stopped_at,
    env,  # noqa: F401  (fixture)
    run_dag,
    slack,  # noqa: F401  (fixture)
)
from tests.reliability.inject import FaultProxy, free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAG's own retry policy (2 retries), with 1-2 s instead of 15-30 s between tries."""
    from autopilot.orchestration import factory

    monkeypatch.setitem(factory.DEFAULT_ARGS, "retry_delay", timedelta(seconds=1))
    monkeypatch.setitem(factory.DEFAULT_ARGS, "max_retry_delay", timedelta(seconds=2))


def on_s3(name: str, s3_client: Any, small_adult: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small Adult model whose train and test batches are objects in the test bucket (an allowed data root)."""
    bucket = s3_client.bucket
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", f"s3://{bucket}/{name}")
    path = small_adult(name=name, data={"source": f"s3://{bucket}/{name}/train.csv",
                                        "test_source": f"s3://{bucket}/{name}/test.csv"})
    for split in ("train", "test"):
        s3_client.upload_file(str(path.parent / "data" / f"{name}_{split}.csv"), bucket, f"{name}/{split}.csv")
    return path


@pytest.fixture
def proxied_s3(s3: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every S3 call of the code under test goes through a `FaultProxy` in front of moto's server."""
    with FaultProxy(moto_server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        # botocore's own retries stay on (standard mode), bounded so a try ends in seconds.
        monkeypatch.setenv("AWS_RETRY_MODE", "standard")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        yield proxy


def test_s3_answering_503_fails_validate_after_its_retries(airflow_db: None, env: Any,  # noqa: F811
                                                           slack: Receiver, quick_retries: None,  # noqa: F811
                                                           s3: Any, proxied_s3: FaultProxy,
                                                           small_adult: Callable[..., Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    on_s3("s3_down", s3, small_adult, monkeypatch)
    proxied_s3.set("status", status=503, headers={"Retry-After": "0"})

    dag_run = run_dag("s3_down")

    assert_stopped_at(dag_run, "validate", tries=3)  # an outage is retried, then FAILED
    assert proxied_s3.count("status") >= 3  # every try asked S3 (and botocore retried inside each)
    assert_nothing_versioned(env, "s3_down")
    assert len(slack.bodies) == 1, slack.bodies  # after the last try, not on each retry
    message = json.dumps(slack.bodies[0])
    assert "s3_down training failed at validate" in message and "S3 is unavailable" in message, message


def test_s3_resetting_connections_is_an_outage_not_a_verdict(s3: Any, proxied_s3: FaultProxy,
                                                             small_adult: Callable[..., Path],
                                                             settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(on_s3("s3_reset", s3, small_adult, monkeypatch))
    proxied_s3.set("reset")
    with pytest.raises(DataSourceUnavailable, match=r"s3://.*/s3_reset/train\.csv: S3 is unavailable"):
        validate_data(cfg, settings, RunContext(run_id="reset"))
    assert proxied_s3.count("reset") >= 2
    assert_nothing_versioned(settings, "s3_reset")
    # Once S3 answers again the same run validates: nothing was recorded as invalid meanwhile.
    proxied_s3.set("pass")
    validated = validate_data(cfg, settings, RunContext(run_id="reset"))
    assert validated["batches"]["train"]["rows"] == 1500


def test_moto_stopped_is_an_outage_and_a_missing_object_a_verdict(s3: Any,
                                                                  small_adult: Callable[..., Path],
                                                                  settings: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=s3.bucket)
    client.bucket = s3.bucket  # type: ignore[attr-defined]
    cfg = load_config(on_s3("s3_gone", client, small_adult, monkeypatch))
    client.delete_object(Bucket=s3.bucket, Key="s3_gone/test.csv")
    with pytest.raises(GateFailure, match="NoSuchKey"):  # S3 answered: the object is not there
        validate_data(cfg, settings, RunContext(run_id="missing"))
    server.stop()
    with pytest.raises(DataSourceUnavailable, match="Could not connect"):
        validate_data(cfg, settings, RunContext(run_id="stopped"))
    assert_nothing_versioned(settings, "s3_gone")


def test_a_file_vanishing_after_validation_is_never_snapshotted(small_adult: Callable[..., Path],
                                                                settings: Any) -> None:
    path = small_adult(name="vanished")
    cfg = load_config(path)
    ctx = RunContext(run_id="vanish")
    validated = validate_data(cfg, settings, ctx)
    (path.parent / "data" / "vanished_train.csv").unlink()
    with pytest.raises(DataSourceError, match="vanished_train.csv: cannot read the file"):
        snapshot_data(cfg, settings, ctx, validated)
    assert_nothing_versioned(settings, "vanished", validated=True)


def with_empty_named_column(path: Path, name: str) -> None:
    """Rewrite the model's CSVs as Parquet with one more numeric column, named ``""``."""
    for split in ("train", "test"):
        frame = pd.read_csv(path.parent / "data" / f"{name}_{split}.csv")
        frame[""] = frame["age"]
        frame.to_parquet(path.parent / "data" / f"{name}_{split}.parquet", index=False)


def test_an_exception_inside_great_expectations_fails_validate(airflow_db: None, env: Any,  # noqa: F811
                                                                small_adult: Callable[..., Path]) -> None:
    name = "gx_raises"
    features = {**adult_config_dict()["features"], "": {"type": "numeric", "nullable": False}}
    path = small_adult(name=name, features=features, data={"source": f"data/{name}_train.parquet",
                                                           "test_source": f"data/{name}_test.parquet"})
    with_empty_named_column(path, name)
    assert "" in load_config(path).features  # the config loads: the error comes from GX

    dag_run = run_dag(name)

    assert_stopped_at(dag_run, "validate", tries=1)  # a failed validation is a verdict: not retried
    assert_nothing_versioned(env, name)
    from autopilot.adapters import registry

    reg = registry.connect(env)
    experiment = reg.client.get_experiment_by_name(f"autopilot/{name}")
    run = reg.find_run(experiment.experiment_id, f"{name}/{dag_run.run_id}/data")
    report = json.loads(Path(reg.client.download_artifacts(run.info.run_id,
                                                           "validation/train/report.json")).read_text())
    assert report["reasons"][0].startswith("validation could not run: ValidationError"), report["reasons"]
    assert "ExpectColumnToExist" in report["reasons"][0]
