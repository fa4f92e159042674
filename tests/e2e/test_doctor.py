"""The doctor on a good and a bad setup: the real `autopilot doctor` in subprocesses, real services.

Good: a production-like set-up on this machine's services. Airflow's metadata DB on PostgreSQL
(a fresh database, migrated once for the module), the CeleryExecutor with Redis as broker and
the metadata DB as result backend, MLflow tracking on PostgreSQL, artifacts on moto's S3
server, the simple auth manager with users, connections as `AIRFLOW_CONN_*` variables and one
in the metadata DB (added with `airflow connections add`), a serving token.

Bad: everything the doctor exists to catch: all-admins, the CeleryExecutor on SQLite, a broker
on a closed port, an unreachable MLflow, a missing S3 bucket, an unreachable state DB, no
Slack connection, one token unset and one too short. Secrets sit in URLs, connections and
tokens of both; none may reach the output.

PostgreSQL and Redis: skipped when absent, unless AUTOPILOT_REQUIRE_SERVICES=1 (CI), which fails.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import adult_config_dict
from tests.integration.conftest import PG_DSN, _unavailable

pytestmark = pytest.mark.slow

REDIS = os.environ.get("AUTOPILOT_TEST_REDIS", "redis://127.0.0.1:6379/15")
BIN = Path(sys.executable).parent
PG_PASSWORD = "pg-Secret-7f3a91"  # trust auth ignores it; the doctor must still never print it
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/slackSecret4242"
API_PASSWORD = "api-Secret-58c2"
BROKER_PASSWORD = "broker-Secret-9d1e"
MLFLOW_PASSWORD = "mlflow-Secret-3b7c"
STATE_PASSWORD = "state-Secret-6a20"
SHORT_TOKEN = "short-Secret-0e4f"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _base_env(home: Path) -> dict[str, str]:
    """A clean environment: nothing of this test process's Airflow, AWS or autopilot settings leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "AIRFLOW_HOME": str(home / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AUTOPILOT_HOME": str(home / "autopilot"),
                "AUTOPILOT_CONFIG_DIR": str(home / "config"), "GX_ANALYTICS_ENABLED": "False",
                "PYTHONWARNINGS": "ignore"})
    return env


def write_config(folder: Path, name: str, **sections: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    raw = adult_config_dict(name=name)
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def both(self) -> str:
        return self.out + self.err

    def statuses(self) -> dict[str, str]:
        return {c["name"]: c["status"] for c in json.loads(self.out)["checks"]}


def doctor(env: dict[str, str], *args: str) -> Run:
    started = time.monotonic()
    done = subprocess.run([str(BIN / "autopilot"), "doctor", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


# ---------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, Any]]:
    """moto's S3 server on loopback, and a client with a fresh bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    bucket = f"autopilot-doctor-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield url, (client, bucket)
    finally:
        server.stop()


def _aws_env(url: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    """Makes fresh PostgreSQL databases for the module (dropped afterwards); each call gives a URL."""
    import psycopg2

    try:
        admin = psycopg2.connect(PG_DSN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _unavailable(f"needs PostgreSQL at {PG_DSN} (AUTOPILOT_TEST_PG): {exc}")
    admin.autocommit = True
    host = PG_DSN.split("@", 1)[1].rsplit("/", 1)[0]
    made: list[str] = []

    def make(purpose: str) -> str:
        name = f"autopilot_doctor_{purpose}_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"postgresql+psycopg2://postgres:{PG_PASSWORD}@{host}/{name}"

    try:
        yield make
    finally:
        with admin.cursor() as cur:
            for name in made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def redis_url() -> str:
    from autopilot.doctor.probes import probe_redis

    probe = probe_redis(REDIS, timeout=3)
    if not probe.ok:
        _unavailable(f"needs Redis at {REDIS} (AUTOPILOT_TEST_REDIS): {probe.detail}")
    return REDIS


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, postgres: Any, redis_url: str,
         moto: tuple[str, Any]) -> dict[str, Any]:
    """The production-like environment, its metadata DB migrated and one connection stored in it."""
    home = tmp_path_factory.mktemp("good")
    moto_url, (client, bucket) = moto
    airflow_db, mlflow_db = postgres("airflow"), postgres("mlflow")
    env = _base_env(home) | _aws_env(moto_url) | {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "alice:admin,bob:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW_CONN_AUTOPILOT_SLACK": json.dumps({"conn_type": "slackwebhook", "password": SLACK_URL}),
        "AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 8080,
                                                          "login": "alice", "password": API_PASSWORD}),
        "MLFLOW_TRACKING_URI": mlflow_db,
        "AUTOPILOT_MLFLOW_ARTIFACT_ROOT": f"s3://{bucket}/mlflow",
        "AUTOPILOT_ARTIFACT_ROOT": f"s3://{bucket}/artifacts",
        "AUTOPILOT_OPTUNA_STORAGE": postgres("optuna"),
        "AUTOPILOT_STATE_DB": (state := postgres("state")),
        "AUTOPILOT_INFERENCE_DB": state,
        "AUTOPILOT_SERVING_TOKEN": secrets.token_urlsafe(32),
        "AUTOPILOT_SIGNING_KEY": secrets.token_urlsafe(48),
    }
    write_config(home / "config", "adult_income",
                 deployment={"target": "aws", "aws": {"aws_conn_id": "aws_deploy"}})
    started = time.monotonic()
    # MLflow creates its schema on first use: do it, so the doctor lists experiments for real.
    mlflow_init = subprocess.Popen(
        [str(BIN / "python"), "-c", "import sys; from mlflow.tracking import MlflowClient; "
         "MlflowClient(sys.argv[1]).search_experiments()", env["MLFLOW_TRACKING_URI"]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for command in (["airflow", "db", "migrate"],
                    ["airflow", "connections", "add", "aws_deploy", "--conn-json",
                     json.dumps({"conn_type": "aws", "extra": {"region_name": "us-east-1",
                                                               "endpoint_url": moto_url}})]):
        done = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(command[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert mlflow_init.wait(timeout=300) == 0, mlflow_init.stderr.read()[-2000:] if mlflow_init.stderr else ""
    return {"env": env, "client": client, "bucket": bucket, "setup_seconds": time.monotonic() - started}


# ---------------------------------------------------------------------------- the tests


GOOD_EXPECTED = {
    "executor": "ok", "celery_broker": "ok", "celery_result_backend": "ok", "metadata_db": "ok",
    "auth_manager": "warn",  # the simple auth manager is for development, even with users
    "model_configs": "ok", "connection autopilot_slack": "ok", "connection autopilot_airflow_api": "ok",
    "connection aws_deploy": "ok", "mlflow_tracking": "ok", "artifact_store": "ok", "mlflow_artifact_root": "ok",
    "optuna_storage": "ok", "state_db": "ok", "inference_db": "ok", "serving_token AUTOPILOT_SERVING_TOKEN": "ok",
    "model_signing": "ok",
}


def test_the_doctor_passes_a_good_production_setup(good: dict[str, Any]) -> None:
    env = good["env"]
    run = doctor(env, "--json")
    assert run.code == 0, run.both
    report = json.loads(run.out)
    assert report["mode"] == "production" and report["exit_code"] == 0
    assert run.statuses() == GOOD_EXPECTED
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert "from an AIRFLOW_CONN_* variable" in details["connection autopilot_slack"]
    assert "from the metadata DB" in details["connection aws_deploy"]  # `airflow connections add` counts
    assert details["mlflow_tracking"].endswith("lists experiments (from env MLFLOW_TRACKING_URI)")
    assert "schema migrated" in details["metadata_db"]
    for secret in (PG_PASSWORD, SLACK_URL, API_PASSWORD, env["AUTOPILOT_SERVING_TOKEN"], env["AUTOPILOT_SIGNING_KEY"]):
        assert secret not in run.both
    # The probe objects were deleted again.
    listed = good["client"].list_objects_v2(Bucket=good["bucket"])
    assert [o["Key"] for o in listed.get("Contents", [])] == []
    print(f"\ngood setup: setup {good['setup_seconds']:.1f} s, doctor {run.seconds:.1f} s")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, moto: tuple[str, Any]) -> dict[str, str]:
    home = tmp_path_factory.mktemp("bad")
    moto_url, (_, bucket) = moto
    closed = _closed_port()
    env = _base_env(home) | _aws_env(moto_url) | {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{BROKER_PASSWORD}@127.0.0.1:{closed}/0",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "MLFLOW_TRACKING_URI": f"http://mlflow:{MLFLOW_PASSWORD}@127.0.0.1:{closed}",
        "AUTOPILOT_ARTIFACT_ROOT": f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/artifacts",
        "AUTOPILOT_MLFLOW_ARTIFACT_ROOT": f"s3://{bucket}/mlflow",
        "AUTOPILOT_STATE_DB": f"postgresql+psycopg2://postgres:{STATE_PASSWORD}@127.0.0.1:{closed}/state",
        "MODEL_B_TOKEN": SHORT_TOKEN,
    }
    write_config(home / "config", "model_a")
    write_config(home / "config", "model_b", deployment={"serving": {"token_env": "MODEL_B_TOKEN"}})
    return env


BAD_FAILURES = {
    "executor": "CeleryExecutor on SQLite",
    "celery_broker": "does not answer",
    "auth_manager": "everyone is admin",
    "mlflow_tracking": "does not answer",
    "artifact_store": "NoSuchBucket",
    "state_db": "Connection refused",
    "serving_token AUTOPILOT_SERVING_TOKEN": "is not set",
    "serving_token MODEL_B_TOKEN": "weak",
}
BAD_WARNINGS = {"connection autopilot_slack": "alerts are off", "celery_result_backend": "not set",
                "metadata_db": "does not exist", "connection autopilot_airflow_api": "missing"}


def test_the_doctor_names_every_problem_of_a_bad_setup_with_its_fix(bad: dict[str, str]) -> None:
    run = doctor(bad, "--json")
    assert run.code == 1, run.both
    report = json.loads(run.out)
    assert report["mode"] == "embedded"  # the metadata DB is SQLite
    checks = {c["name"]: c for c in report["checks"]}
    for name, words in {**BAD_FAILURES, **BAD_WARNINGS}.items():
        expected = "fail" if name in BAD_FAILURES else "warn"
        assert checks[name]["status"] == expected, (name, checks[name])
        assert words in checks[name]["detail"], (name, checks[name])
        assert checks[name]["fix"], name
    assert checks["mlflow_artifact_root"]["status"] == "ok"  # the bucket that exists works
    assert "secrets.token_urlsafe(32)" in checks["serving_token AUTOPILOT_SERVING_TOKEN"]["fix"]

    text = doctor(bad, "--mode", "production")
    assert text.code == 1
    lines = text.out.splitlines()
    for name in [*BAD_FAILURES, *BAD_WARNINGS]:
        row = next(i for i, line in enumerate(lines) if line.split("  ")[0].strip() in ("FAIL", "warn")
                   and f"  {name}  " in line)
        assert lines[row + 1].strip().startswith("fix: "), (name, lines[row:row + 2])
    assert any(line.startswith("FAIL") and "metadata_db" in line for line in lines)  # no laptop excuse now
    for secret in (BROKER_PASSWORD, MLFLOW_PASSWORD, STATE_PASSWORD, SHORT_TOKEN):
        assert secret not in run.both and secret not in text.both
    print(f"\nbad setup: doctor --json {run.seconds:.1f} s, text {text.seconds:.1f} s")
