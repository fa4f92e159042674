"""Tasks take their state database and object store from Airflow connections, on a live Airflow.

A real scheduler and LocalExecutor worker run a one-task DAG whose task builds its settings as
every autopilot task does (`task_settings()`), writes a monitoring window to the state database
and a snapshot to the artifact store. The workers' environment names a SQLite state DB and holds
no AWS credentials at all (no keys, no credentials file, no instance metadata); the connections
`autopilot_state_db` (the local PostgreSQL, a dedicated database) and `autopilot_object_store`
(an `aws` connection to moto's server) are the only way to reach what the test finds written. The
connections' passwords must not appear in the task's log.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopilot.settings import Settings
from tests.airflow_support import Airflow, live_airflow, postgres_databases

pytestmark = pytest.mark.slow

PROBE = "connection_probe"
DB_PASSWORD = "pg-Secret-7f3a9c"  # PostgreSQL here trusts loopback: the password travels but is not checked
S3_SECRET = "s3-Secret-b41e2d"
S3_KEY_ID = "AKIAPROBEEXAMPLE"
PROBE_DAG = '''
"""An airflow dag for the connection test: one task that writes state through task_settings()."""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="connection_probe", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def connection_probe():
    @task
    def probe():
        import logging
        from datetime import UTC, datetime

        import pandas as pd

        from autopilot.adapters.storage import open_store
        from autopilot.data.snapshot import write_snapshot
        from autopilot.monitoring.state import record_window
        from autopilot.orchestration.signing import task_settings
        from autopilot.redaction import redact, url_secrets

        settings = task_settings()
        shown = redact(settings.state_db, url_secrets(settings.state_db))
        logging.getLogger("probe").info("state db %s from %s", shown, settings.sources["state_db"])
        end = datetime(2026, 1, 1, 1, tzinfo=UTC)
        record_window(settings, "probe", datetime(2026, 1, 1, tzinfo=UTC), end, 1, "none", {"rows": 3})
        store = open_store(settings.artifact_root, access=settings.object_store)
        snapshot = write_snapshot(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), store, "probe")
        return {"key": snapshot.key, "state_db": settings.sources["state_db"],
                "object_store": settings.sources.get("object_store")}

    probe()


connection_probe()
'''
NO_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_PROFILE",
          "AWS_DEFAULT_REGION", "AWS_REGION")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Iterator[tuple[Airflow, str, str]]:
    import boto3

    root = tmp_path_factory.mktemp("connections")
    bucket = "autopilot-connections"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
                 aws_secret_access_key=S3_SECRET).create_bucket(Bucket=bucket)
    with postgres_databases() as make, pytest.MonkeyPatch.context() as mp:
        url = make()
        database = url.rsplit("/", 1)[1]
        for name in NO_AWS:  # the services inherit this environment: no AWS credentials in it
            mp.delenv(name, raising=False)
        overrides = {
            "AWS_SHARED_CREDENTIALS_FILE": str(root / "none"), "AWS_CONFIG_FILE": str(root / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AIRFLOW_CONN_AUTOPILOT_STATE_DB": json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
                "password": DB_PASSWORD, "schema": database}),
            "AIRFLOW_CONN_AUTOPILOT_OBJECT_STORE": json.dumps({
                "conn_type": "aws", "login": S3_KEY_ID, "password": S3_SECRET,
                "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"}}),
        }
        artifacts = {"AUTOPILOT_ARTIFACT_ROOT": f"s3://{bucket}/artifacts"}
        with live_airflow(root, dag_files={"probe.py": PROBE_DAG}, expect={PROBE}, overrides=overrides,
                          project_dags=(), settings_env=artifacts) as served:
            yield served, url, bucket


def run_probe(airflow: Airflow) -> dict[str, Any]:
    token = airflow.token()
    headers = {"Authorization": f"Bearer {token}"}
    httpx.patch(f"{airflow.url}/api/v2/dags/{PROBE}", json={"is_paused": False}, headers=headers,
                timeout=30).raise_for_status()
    httpx.post(f"{airflow.url}/api/v2/dags/{PROBE}/dagRuns", json={"dag_run_id": "p1", "logical_date": None},
               headers=headers, timeout=30).raise_for_status()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        airflow.assert_alive()
        try:
            run = airflow.get(f"/api/v2/dags/{PROBE}/dagRuns/p1")
        except httpx.HTTPError:
            run = {}
        if run.get("state") in ("success", "failed"):
            return run
        time.sleep(2)
    raise AssertionError("the probe run did not finish in 240 s")


def test_state_db_and_object_store_come_from_connections_and_no_password_is_logged(
        stack: tuple[Airflow, str, str], moto_server: str) -> None:
    import boto3

    from autopilot.monitoring.state import last_windows

    airflow, url, bucket = stack
    run = run_probe(airflow)
    folder = airflow.embedded.airflow_home / "logs"
    logs = "\n".join(p.read_text(errors="replace") for p in folder.rglob("*.log") if f"dag_id={PROBE}" in str(p))
    assert run["state"] == "success", logs[-4000:]
    returned = airflow.get(f"/api/v2/dags/{PROBE}/dagRuns/p1/taskInstances/probe/xcomEntries/return_value")["value"]
    assert returned["state_db"] == "airflow connection autopilot_state_db"
    assert returned["object_store"] == "airflow connection autopilot_object_store"
    # The state went to the connection's PostgreSQL database, not the environment's SQLite one.
    assert "sqlite" in airflow.settings.state_db
    windows = last_windows(dataclasses.replace(Settings.from_env({}), state_db=url), "probe")
    assert [(w["window_end"], w["report"]) for w in windows] == [(datetime(2026, 1, 1, 1, tzinfo=UTC), {"rows": 3})]
    # The snapshot went to moto through the connection's keys (the workers had none of their own).
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id=S3_KEY_ID,
                      aws_secret_access_key=S3_SECRET)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="artifacts/")["Contents"]}
    assert f"artifacts/{returned['key']}" in keys
    # The task log shows where the settings came from, and never a password.
    assert "state_db <- airflow connection autopilot_state_db" in logs, logs[-4000:]
    assert f"127.0.0.1:5432/{url.rsplit('/', 1)[1]}" in logs  # the URL was logged, redacted
    assert DB_PASSWORD not in logs and S3_SECRET not in logs


def test_a_missing_connection_leaves_the_environment(tmp_path: Path) -> None:
    """Outside Airflow's connections (none configured): the environment's settings, unchanged."""
    from autopilot.orchestration.connections import connection_settings

    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path), "AUTOPILOT_STATE_DB": "sqlite:///x.db"})
    off = {"AUTOPILOT_STATE_DB_CONN_ID": "", "AUTOPILOT_OPTUNA_DB_CONN_ID": "", "AUTOPILOT_INFERENCE_DB_CONN_ID": "",
           "AUTOPILOT_MLFLOW_DB_CONN_ID": "", "AUTOPILOT_OBJECT_STORE_CONN_ID": ""}
    assert connection_settings(settings, env=off) is settings
    assert settings.sources["state_db"] == "env AUTOPILOT_STATE_DB" and settings.sources["artifact_root"] == "default"


def test_database_urls_from_connection_fields() -> None:
    from autopilot.orchestration.connections import database_url

    assert database_url("postgres", "db.internal", "ap", "p@ss/word", 5433, "state") == \
        "postgresql+psycopg2://ap:p%40ss%2Fword@db.internal:5433/state"
    assert database_url("postgres", "h", schema="s", extra={"sqlalchemy_scheme": "postgresql+psycopg"}) == \
        "postgresql+psycopg://h/s"
    assert database_url("sqlite", "/var/lib/autopilot/state.db") == "sqlite:////var/lib/autopilot/state.db"
    with pytest.raises(ValueError, match="sqlalchemy_scheme"):
        database_url("http", "h")


def test_connections_fill_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Airflow's own connection lookup (the `AIRFLOW_CONN_*` backend) fills URLs, credentials and sources."""
    from autopilot.orchestration.connections import connection_settings

    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_STATE_DB", json.dumps({
        "conn_type": "postgres", "host": "db", "port": 5432, "login": "ap", "password": DB_PASSWORD,
        "schema": "state"}))
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_OPTUNA", json.dumps({"conn_type": "postgres", "host": "db2",
                                                                "schema": "optuna"}))
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_OBJECT_STORE", json.dumps({
        "conn_type": "aws", "login": S3_KEY_ID, "password": S3_SECRET,
        "extra": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}}))
    env = {"AUTOPILOT_OPTUNA_DB_CONN_ID": "other_optuna", "AUTOPILOT_INFERENCE_DB_CONN_ID": ""}
    settings = connection_settings(Settings.from_env({"AUTOPILOT_HOME": str(tmp_path)}), env=env)
    assert settings.state_db == f"postgresql+psycopg2://ap:{DB_PASSWORD}@db:5432/state"
    assert settings.optuna_storage == "postgresql+psycopg2://db2/optuna"
    assert settings.inference_db.startswith("sqlite:")  # its connection turned off: the default stays
    access = settings.object_store
    assert access is not None and (access.access_key_id, access.secret_access_key) == (S3_KEY_ID, S3_SECRET)
    assert (access.endpoint_url, access.region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert S3_SECRET not in repr(access) and S3_SECRET not in repr(settings)
    assert settings.sources["state_db"] == "airflow connection autopilot_state_db"
    assert settings.sources["optuna_storage"] == "airflow connection other_optuna"
    assert settings.sources["inference_db"] == "default" and settings.sources["mlflow_tracking_uri"] == "default"
