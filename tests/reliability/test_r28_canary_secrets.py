"""Case 28: canary secrets through a full training run with a failed gate and a failed Slack delivery.

Fault: unique, recognisable secrets are put where a real installation keeps them, in the
environment and the Airflow connections of every Airflow process (api-server, scheduler, DAG
processor, task runners): a fake AWS access key id and secret key (environment and an `aws`
connection), a Slack webhook URL with a unique token (the `autopilot_slack` connection), an
MLflow user and password (`MLFLOW_TRACKING_USERNAME`/`PASSWORD`, and in the tracking URI itself:
`http://user:password@host`, which the tasks use to reach a real MLflow server), and passwords in
the URLs of the state database and the Optuna storage (PostgreSQL; trust auth ignores them, so
the run works while the URLs carry them). A real scheduler runs the training DAG of a model whose
quality floor no model meets: the run trains, then fails its gate, which writes the run note; Slack
answers every post with 429 and a Retry-After past the notifier's budget, so the message stays in
the alert outbox (the task-level and the DAG processor's DAG-level callbacks both run); then Slack
recovers and the outbox is drained.

Invariant: no canary, raw or percent-encoded (or the MLflow basic-auth header's base64), appears
in any task or service log, anywhere in Airflow's metadata database (XCom values, rendered
template fields, run notes, the audit log), in any MLflow param, tag, metric name, dataset,
logged model or artifact (each downloaded), in autopilot's state database and Optuna storage, in
the artifact store, or in any Slack payload the receiver got (delivered or refused).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import string
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from tests.helpers import PROJECT
from tests.integration.test_slack_alerts import Receiver, slack_receiver
from tests.reliability.inject import free_port, kill9

pytestmark = pytest.mark.slow

MODEL = "canary"
DAG_ID = f"autopilot_training__{MODEL}"
RUN_ID = "canary-1"


def _token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Canaries:
    """This run's secrets, each unique and each containing a marker no real text has."""

    def __init__(self) -> None:
        self.aws_key_id = "AKIA" + _token(16, string.ascii_uppercase + string.digits)
        self.aws_secret = f"cnryAwsSecret/{_token(12)}+{_token(12)}="  # "/", "+", "=": encoded forms differ
        self.slack_token = f"cnrySlack{_token(20)}"
        self.slack_path = f"/services/T0CNRY/B0CNRY/{self.slack_token}"
        self.mlflow_user = f"cnry-user-{_token(6)}"
        self.mlflow_password = f"cnryMlflow-{_token(16)}"
        self.uri_password = f"cnryUri{_token(16)}"  # in the tracking URI: its own canary
        self.db_password = f"cnryDb{_token(16)}"

    def values(self) -> dict[str, str]:
        """Every secret by name (the webhook URL's token stands for the URL)."""
        return {"AWS access key id": self.aws_key_id, "AWS secret key": self.aws_secret,
                "Slack webhook token": self.slack_token, "MLflow password": self.mlflow_password,
                "MLflow URI password": self.uri_password, "database password": self.db_password}

    def forms(self) -> dict[bytes, str]:
        """Each secret as bytes in every form a leak could take: raw, percent-encoded, basic-auth base64."""
        found: dict[bytes, str] = {}
        for name, value in self.values().items():
            for form in {value, quote(value, safe=""), quote(value), quote_plus(value), json.dumps(value)[1:-1]}:
                found[form.encode()] = name
        for user, password in ((self.mlflow_user, self.mlflow_password), (self.mlflow_user, self.uri_password)):
            found[base64.b64encode(f"{user}:{password}".encode())] = "MLflow basic-auth header"
        return found


def hits(data: bytes, canaries: Canaries, where: str) -> list[str]:
    """Which canaries `data` contains, as `where: name`."""
    return sorted({f"{where}: {name}" for form, name in canaries.forms().items() if form in data})


# ---------------------------------------------------------------------------- the run


@pytest.fixture
def canary_run(tmp_path: Path, small_adult: Callable[..., Path], postgres_factory: Callable[[], str],
               monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Start the embedded Airflow + MLflow with the canaries in every process; yield what the test needs."""
    canaries = Canaries()
    # The tiniest budget; a quality floor no model meets: the run trains, then its gate fails.
    small_adult(name=MODEL, rows=600, test_rows=400, split={"seed": 42, "cv_folds": 2},
                tuning={"n_trials": 1, "timeout_seconds": 60, "families": ["linear"], "seed": 7,
                        "n_startup_trials": 1},
                gates={"quality": {"min_metrics": {"roc_auc": 0.9999}}})
    state_db, optuna_db = (url.replace("postgres@", f"postgres:{canaries.db_password}@")
                           for url in (postgres_factory(), postgres_factory()))
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path),
                                  "AUTOPILOT_STATE_DB": state_db, "AUTOPILOT_OPTUNA_STORAGE": optuna_db})
    with slack_receiver(canaries.slack_path) as slack:
        # Slack refuses every post for the whole run: 429 with a Retry-After past the notifier's
        # budget, so each callback gives up after one attempt and leaves the message in the outbox.
        slack.always, slack.headers = 429, {"Retry-After": "600"}
        mlflow_port = free_port()
        environ = {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
            "AWS_ACCESS_KEY_ID": canaries.aws_key_id, "AWS_SECRET_ACCESS_KEY": canaries.aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AIRFLOW_CONN_AUTOPILOT_AWS": json.dumps({"conn_type": "aws", "login": canaries.aws_key_id,
                                                      "password": canaries.aws_secret,
                                                      "extra": {"region_name": "us-east-1"}}),
            "AIRFLOW_CONN_AUTOPILOT_SLACK": json.dumps({"conn_type": "slackwebhook", "password": slack.url}),
            "MLFLOW_TRACKING_USERNAME": canaries.mlflow_user, "MLFLOW_TRACKING_PASSWORD": canaries.mlflow_password,
            "AUTOPILOT_SERVING_URL": "http://127.0.0.1:9",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        # The tasks reach the real MLflow server through a URI that carries credentials.
        tracking = f"http://{canaries.mlflow_user}:{canaries.uri_password}@127.0.0.1:{mlflow_port}"
        embedded = Embedded(settings=settings, project=PROJECT, airflow_port=free_port(), mlflow_port=mlflow_port,
                            overrides={"MLFLOW_TRACKING_URI": tracking})
        embedded.start()
        try:
            assert embedded.wait_healthy(timeout=240), (embedded.run_dir / "api-server.log").read_text()[-3000:]
            yield {"canaries": canaries, "slack": slack, "settings": settings, "embedded": embedded,
                   "mlflow": f"http://127.0.0.1:{mlflow_port}", "tmp": tmp_path}
        finally:
            pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
            for pid in pids:  # no graceful stop needed here (`make down` is tested elsewhere): 40 s saved
                kill9(pid)
            embedded.stop()
            assert not any(_alive(pid) for pid in pids), "a service outlived its SIGKILL"


class Api:
    """The Airflow REST API v2 as the admin (a fresh token per call: the api-server may restart a worker)."""

    def __init__(self, embedded: Embedded) -> None:
        self.base = f"http://127.0.0.1:{embedded.airflow_port}"
        self.password = embedded.admin_password()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        # 30 s: the SQLite-backed api-server can stall while the scheduler writes on a loaded machine.
        token = httpx.post(f"{self.base}/auth/token", json={"username": "admin", "password": self.password},
                           timeout=30).json()["access_token"]
        response = httpx.request(method, f"{self.base}/api/v2{path}", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        return dict(response.json())


def run_to_the_end(api: Api) -> dict[str, Any]:
    """Unpause the DAG once it is parsed, trigger the run, and wait for its end."""
    deadline = time.monotonic() + 180
    while True:  # the DAG processor parses the file first
        try:
            api.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
            break
        except (httpx.HTTPError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(3)
    run = api.call("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "dag_run_id": RUN_ID})
    deadline = time.monotonic() + 420
    while run["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, f"the run did not end: {run}"
        time.sleep(3)
        try:
            run = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}")
        except (httpx.HTTPError, ValueError):  # a slow answer is asked again
            continue
    return run


def wait_for_dag_callback(embedded: Embedded, timeout: float = 120.0) -> None:
    """Wait until the DAG-level failure callback (run by the DAG processor, after the run ended) has logged."""
    key = f"Slack alert {DAG_ID}/{RUN_ID}/failed"
    folder = embedded.airflow_home / "logs" / "dag_processor"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(key in path.read_text(errors="replace") for path in folder.rglob("*.log")):
            return
        time.sleep(2)
    raise AssertionError(f"the DAG-level callback did not run within {timeout} s")


# ---------------------------------------------------------------------------- the searches


def search_files(root: Path, canaries: Canaries, skip: Callable[[Path], bool] = lambda p: False) -> list[str]:
    """Every file under `root`, byte for byte (SQLite files included: a string in any page is found)."""
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not skip(p)):
        found += hits(path.read_bytes(), canaries, str(path.relative_to(root)))
    return found


def search_sqlite(path: Path, canaries: Canaries) -> tuple[list[str], dict[str, int]]:
    """Every value of every table of a SQLite database (compressed serialized DAGs decompressed); rows per table."""
    found: list[str] = []
    rows: dict[str, int] = {}
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows[table] = 0
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                rows[table] += 1
                for value in row:
                    data = value if isinstance(value, bytes) else str(value).encode()
                    if isinstance(value, bytes):
                        try:
                            data += zlib.decompress(value)
                        except zlib.error:
                            pass
                    found += hits(data, canaries, f"airflow db table {table}")
    return sorted(set(found)), rows


def search_postgres(url: str, canaries: Canaries) -> tuple[list[str], dict[str, int]]:
    """Every value of every table of a PostgreSQL database, as text; rows per table."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    found: list[str] = []
    rows: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            tables = [t for (t,) in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            for table in tables:
                values = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars().all()
                rows[table] = len(values)
                for value in values:
                    found += hits(str(value).encode(), canaries, f"{engine.url.database} table {table}")
    finally:
        engine.dispose()
    return sorted(set(found)), rows


def search_mlflow(url: str, canaries: Canaries, scratch: Path) -> tuple[list[str], dict[str, int]]:
    """Every experiment, run (params, tags, metric names, datasets), logged model and artifact, through the server."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    found: list[str] = []
    seen = {"runs": 0, "artifacts": 0, "params": 0, "tags": 0, "models": 0}

    def check(value: Any, where: str) -> None:
        found.extend(hits(json.dumps(value, default=str).encode(), canaries, where))

    experiments = client.search_experiments(view_type=ViewType.ALL)
    for experiment in experiments:
        check({"name": experiment.name, "tags": experiment.tags, "location": experiment.artifact_location},
              f"mlflow experiment {experiment.name}")
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            seen["runs"] += 1
            seen["params"] += len(run.data.params)
            seen["tags"] += len(run.data.tags)
            where = f"mlflow run {run.info.run_name}"
            check({"params": run.data.params, "tags": run.data.tags, "metrics": sorted(run.data.metrics),
                   "info": str(run.info.to_proto())}, where)
            for dataset in run.inputs.dataset_inputs if run.inputs else []:
                check({"name": dataset.dataset.name, "source": dataset.dataset.source,
                       "profile": dataset.dataset.profile, "schema": dataset.dataset.schema,
                       "tags": [(t.key, t.value) for t in dataset.tags]}, f"{where} dataset")
            pending = [""]
            while pending:
                for item in client.list_artifacts(run.info.run_id, pending.pop() or None):
                    if item.is_dir:
                        pending.append(item.path)
                        continue
                    local = Path(client.download_artifacts(run.info.run_id, item.path, str(scratch)))
                    seen["artifacts"] += 1
                    found.extend(hits(local.read_bytes(), canaries, f"{where} artifact {item.path}"))
        for model in client.search_logged_models([experiment.experiment_id]):
            seen["models"] += 1
            check({"params": model.params, "tags": model.tags, "name": model.name}, f"mlflow logged model {model.name}")
    for registered in client.search_registered_models():
        check({"tags": registered.tags, "description": registered.description}, f"registered model {registered.name}")
        for version in client.search_model_versions(f"name = '{registered.name}'"):
            check({"tags": version.tags, "source": version.source}, f"version {version.version}")
    return sorted(set(found)), seen


# ---------------------------------------------------------------------------- the test


def test_no_canary_anywhere(canary_run: dict[str, Any], tmp_path: Path) -> None:
    canaries: Canaries = canary_run["canaries"]
    slack: Receiver = canary_run["slack"]
    embedded: Embedded = canary_run["embedded"]
    settings: Settings = canary_run["settings"]

    api = Api(embedded)
    run = run_to_the_end(api)
    # The run failed at its gate, as it would without Slack: trained and stopped by the quality floor.
    assert run["state"] == "failed", run
    tasks = {t["task_id"]: t["state"] for t in api.call("GET", f"/dags/{DAG_ID}/dagRuns/{RUN_ID}/taskInstances")[
        "task_instances"]}
    assert tasks["tune"] == "success" and tasks["train_and_register"] == "failed", tasks
    assert run["note"] and "Stopped by a gate" in run["note"] and "roc_auc" in run["note"], run
    wait_for_dag_callback(embedded)
    assert slack.bodies and slack.messages == [], "Slack refused every post during the run"
    assert set(slack.requests) == {canaries.slack_path}  # the canary webhook URL is what the run used

    # Slack recovers; the outbox (as the next notifier call or the monitoring DAG would) delivers it once.
    from autopilot.alerts.ledger import counts
    from autopilot.orchestration.slack import drain_outbox

    assert counts(settings).get("pending") == 1, counts(settings)
    slack.always = None
    drained = drain_outbox(settings, now=datetime.now(UTC) + timedelta(minutes=11))  # past the Retry-After
    assert drained["sent"] == 1 and len(slack.messages) == 1, (drained, slack.requests)
    message = json.dumps(slack.messages[0])
    assert "train_and_register" in message and "roc_auc" in message, message

    found: list[str] = []
    # every task log and every service log (the DAG processor runs the DAG-level callbacks)
    logs = embedded.airflow_home / "logs"
    run_logs = logs / f"dag_id={DAG_ID}" / f"run_id={RUN_ID}"
    logged = {path.parent.name.removeprefix("task_id=") for path in run_logs.rglob("attempt=*.log")}
    assert {"validate", "snapshot", "tune", "train_and_register"} <= logged, logged
    found += search_files(logs, canaries)
    found += search_files(embedded.run_dir, canaries)
    # Airflow's metadata: XCom values, rendered template fields, run notes, audit log, serialized DAGs
    airflow_hits, airflow_rows = search_sqlite(embedded.airflow_home / "airflow.db", canaries)
    found += airflow_hits
    assert airflow_rows.get("xcom", 0) >= 4 and airflow_rows.get("rendered_task_instance_fields", 0) >= 4
    # MLflow, through the server: params, tags, datasets, logged models, every artifact downloaded
    mlflow_hits, mlflow_seen = search_mlflow(canary_run["mlflow"], canaries, tmp_path / "downloads")
    found += mlflow_hits
    assert mlflow_seen["runs"] >= 2 and mlflow_seen["params"] > 0 and mlflow_seen["artifacts"] >= 2, mlflow_seen
    # autopilot's own state (the alert outbox holds the message) and the Optuna study
    for url in (settings.state_db, settings.optuna_storage):
        db_hits, db_rows = search_postgres(url, canaries)
        found += db_hits
        assert sum(db_rows.values()) > 0, db_rows
    # everything else under the home folder, byte for byte: artifact store, MLflow's database, files
    found += search_files(settings.home, canaries,
                          skip=lambda p: p.is_relative_to(logs) or p.is_relative_to(embedded.run_dir))
    # every Slack payload, delivered or refused
    assert len(slack.bodies) >= 2
    for index, body in enumerate(slack.bodies):
        found += hits(body, canaries, f"Slack payload {index}")
    assert found == [], "\n".join(sorted(set(found)))
