"""`autopilot doctor`: each check's judgement on fabricated facts, the probes on local things, redaction,
exit codes and the JSON shape."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.doctor.checks import (
    AirflowFacts,
    Check,
    ConnectionFacts,
    check_auth_manager,
    check_celery,
    check_connection,
    check_database,
    check_executor,
    check_metadata_db,
    check_mlflow,
    check_store,
    check_token,
    executor_names,
    load_configs,
    needed_connections,
    resolve_mode,
)
from autopilot.doctor.probes import Probe, Probes, probe_redis, probe_sql, probe_store, probe_tcp
from autopilot.doctor.report import Report, run_checks, run_cli
from autopilot.redaction import redact, url_secrets
from autopilot.settings import Settings
from tests.helpers import adult_config_dict

PG = "postgresql+psycopg2://postgres@db:5432/airflow"
SQLITE = "sqlite:////tmp/airflow.db"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
GOOD_TOKEN = "Zq3x7PvK2mNc8RtY5wLb1HsJ9dFg4AeU6oIi0TkXyW"


def facts(**values: Any) -> AirflowFacts:
    """Healthy production facts, changed by `values`."""
    base: dict[str, Any] = {"executor": "CeleryExecutor", "sql_alchemy_conn": PG, "metadata_db": Probe(True, "answers"),
                            "auth_manager": FAB, "users": ("alice:admin",), "broker_url": "redis://redis:6379/0",
                            "result_backend": "db+" + PG}
    base.update(values)
    return AirflowFacts(**base)


def write_config(folder: Path, name: str, **sections: Any) -> Path:
    raw = adult_config_dict(name=name)
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(("text", "hidden", "kept"), [
    ("postgresql://postgres:hunter2pw@db:5432/x failed", "hunter2pw", "postgresql://postgres:***@db:5432/x"),
    ("redis://:brokerpass@127.0.0.1:6379/0", "brokerpass", "redis://:***@127.0.0.1:6379/0"),
    ("db+postgresql://u:p@ss@word@h/db", "ss@word", "db+postgresql://u:***@h/db"),
    ("http://h/x?token=abcdef123&a=1", "abcdef123", "?token=***&a=1"),
    ("https://bucket.s3/x?X-Amz-Signature=deadbeef99", "deadbeef99", "X-Amz-Signature=***"),
])
def test_redact_masks_url_passwords_and_secret_parameters(text: str, hidden: str, kept: str) -> None:
    out = redact(text)
    assert hidden not in out and kept in out


def test_redact_leaves_urls_without_passwords_alone() -> None:
    for text in ("http://127.0.0.1:8080/path@x", "s3://bucket/key@v1", "postgresql://postgres@db/x"):
        assert redact(text) == text


def test_redact_replaces_known_secret_values_anywhere_but_not_short_ones() -> None:
    assert redact(f"error: token {GOOD_TOKEN} refused", [GOOD_TOKEN]) == "error: token *** refused"
    assert redact("the abc is ok", ["abc"]) == "the abc is ok"  # too short to be a secret worth masking


def test_url_secrets_gives_raw_and_decoded_passwords() -> None:
    assert url_secrets("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert url_secrets("db+redis://:pw123456@h") == ["pw123456", "pw123456"]
    assert url_secrets("sqlite:///x.db") == [] and url_secrets(None) == []


# ---------------------------------------------------------------------------- mode and executor


def test_mode_defaults_to_production_unless_airflow_runs_on_sqlite() -> None:
    assert resolve_mode(None, facts()) == "production"
    assert resolve_mode(None, facts(sql_alchemy_conn=SQLITE)) == "embedded"
    assert resolve_mode("production", facts(sql_alchemy_conn=SQLITE)) == "production"
    with pytest.raises(ValueError, match="use one of embedded, production"):
        resolve_mode("laptop", facts())


def test_executor_names_handle_lists_aliases_and_paths() -> None:
    assert executor_names("CeleryExecutor, KubernetesExecutor") == ["CeleryExecutor", "KubernetesExecutor"]
    assert executor_names("fast:my_company.executors.FastExecutor") == ["FastExecutor"]
    assert executor_names("") == []


@pytest.mark.parametrize(("executor", "conn", "mode", "status"), [
    ("LocalExecutor", SQLITE, "embedded", "ok"),
    ("LocalExecutor", SQLITE, "production", "warn"),
    ("CeleryExecutor", SQLITE, "embedded", "fail"),
    ("KubernetesExecutor", SQLITE, "embedded", "fail"),
    ("SequentialExecutor", SQLITE, "embedded", "fail"),
    ("CeleryExecutor", PG, "production", "ok"),
    ("LocalExecutor", PG, "production", "ok"),
])
def test_executor_fits_the_database(executor: str, conn: str, mode: str, status: str) -> None:
    check = check_executor(facts(executor=executor, sql_alchemy_conn=conn), mode)
    assert check.status == status
    if status != "ok":
        assert check.fix


def test_sqlite_with_celery_names_the_problem_and_the_move_to_postgres() -> None:
    check = check_executor(facts(sql_alchemy_conn=SQLITE), "embedded")
    assert "CeleryExecutor on SQLite" in check.detail
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql://" in check.fix and "airflow db migrate" in check.fix


def test_celery_checks_broker_and_result_backend() -> None:
    ok = check_celery(facts(), Probe(True, "answers PING"), Probe(True, "answers SELECT 1"))
    assert [(c.name, c.status) for c in ok] == [("celery_broker", "ok"), ("celery_result_backend", "ok")]
    down = check_celery(facts(), Probe(False, "127.0.0.1:6379 does not answer"), Probe(False, "refused"))
    assert [c.status for c in down] == ["fail", "fail"]
    assert "AIRFLOW__CELERY__BROKER_URL" in down[0].fix
    unset = check_celery(facts(result_backend=None), Probe(True, "answers PING"), None)
    assert unset[1].status == "warn" and "AIRFLOW__CELERY__RESULT_BACKEND" in unset[1].fix
    no_broker = check_celery(facts(broker_url=None), None, Probe(True, ""))
    assert no_broker[0].status == "fail"
    assert check_celery(facts(executor="LocalExecutor"), None, None) == []


# ---------------------------------------------------------------------------- metadata DB and auth


def test_metadata_db_judgements() -> None:
    assert check_metadata_db(facts(), "production").status == "ok"
    missing = facts(sql_alchemy_conn=SQLITE, metadata_db=Probe(False, "does not exist", missing=True))
    assert check_metadata_db(missing, "embedded").status == "warn"
    assert check_metadata_db(missing, "production").status == "fail"
    down = check_metadata_db(facts(metadata_db=Probe(False, "does not answer: refused")), "production")
    assert down.status == "fail" and "SQL_ALCHEMY_CONN" in down.fix
    stale = check_metadata_db(facts(migration_error="TimeoutError: unapplied migrations"), "production")
    assert stale.status == "fail" and stale.fix.startswith("run `airflow db migrate`")


def test_metadata_db_names_a_missing_async_driver() -> None:
    check = check_metadata_db(facts(init_error="ModuleNotFoundError: No module named 'asyncpg'",
                                    metadata_db=None), "production")
    assert check.status == "fail" and "pip install asyncpg" in check.fix


def test_all_admins_fails_in_every_mode() -> None:
    simple = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    for mode in ("embedded", "production"):
        check = check_auth_manager(facts(auth_manager=simple, all_admins=True), mode)
        assert check.status == "fail" and "everyone is admin" in check.detail
        assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS=False" in check.fix


def test_simple_auth_manager_is_fine_on_a_laptop_and_a_warning_in_production() -> None:
    simple = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    generated = facts(auth_manager=simple, passwords_file="/h/simple_auth_manager_passwords.json.generated")
    assert check_auth_manager(generated, "embedded").status == "ok"
    warned = check_auth_manager(generated, "production")
    assert warned.status == "warn" and "generated" in warned.detail and "FabAuthManager" in warned.fix
    own = check_auth_manager(facts(auth_manager=simple, passwords_file="/etc/airflow/passwords.json"), "production")
    assert "passwords from /etc/airflow/passwords.json" in own.detail
    assert check_auth_manager(facts(auth_manager=simple, users=()), "embedded").status == "warn"


def test_production_auth_managers_pass_and_missing_ones_fail() -> None:
    assert check_auth_manager(facts(), "production").status == "ok"
    keycloak = "airflow.providers.keycloak.auth_manager.keycloak_auth_manager.KeycloakAuthManager"
    assert check_auth_manager(facts(auth_manager=keycloak), "production").status == "ok"
    missing = check_auth_manager(facts(auth_manager_installed=False), "production")
    assert missing.status == "fail" and "apache-airflow-providers-fab" in missing.fix
    assert check_auth_manager(facts(auth_manager="my.Custom"), "production").status == "ok"


# ---------------------------------------------------------------------------- connections


def test_needed_connections_come_from_every_config(tmp_path: Path) -> None:
    write_config(tmp_path, "a", alerts={"slack_conn_id": "team_slack"})
    write_config(tmp_path, "b", deployment={"target": "aws", "aws": {"aws_conn_id": "aws_prod"}})
    configs, check = load_configs(tmp_path)
    assert check.status == "ok" and [c.name for c in configs] == ["a", "b"]
    needs = {n.conn_id: n for n in needed_connections(configs)}
    assert set(needs) == {"team_slack", "autopilot_slack", "autopilot_airflow_api", "aws_prod"}
    assert needs["autopilot_airflow_api"].models == ("a", "b")
    assert (needs["team_slack"].missing, needs["aws_prod"].missing) == ("warn", "fail")


def test_a_missing_connection_counts_as_its_need_says() -> None:
    needs = {n.conn_id: n for n in needed_connections([_cfg(deployment={"target": "aws"})])}
    slack = check_connection(needs["autopilot_slack"], ConnectionFacts("autopilot_slack", False))
    assert slack.status == "warn" and "alerts are off" in slack.detail
    assert "AIRFLOW_CONN_AUTOPILOT_SLACK" in slack.fix
    api = check_connection(needs["autopilot_airflow_api"], None)
    assert api.status == "warn" and "run's note" in api.detail
    # doctor names the missing connection, what goes missing with it (every run's note), and the fix
    assert api.name == "connection autopilot_airflow_api" and "run notes will not appear" in api.detail
    assert "promoted, rejected, held for review" in api.detail
    assert api.fix is not None and "export AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API='{\"conn_type\": \"http\"" in api.fix
    assert "allowed to edit DAG runs: docs/operations.md" in api.fix
    aws = check_connection(needs["aws_default"], ConnectionFacts("aws_default", False,
                                                                 errors=("the metadata DB: OperationalError",)))
    assert aws.status == "fail" and "OperationalError" in aws.detail


def test_a_found_connection_must_have_the_right_type_and_fields() -> None:
    needs = {n.conn_id: n for n in needed_connections([_cfg()])}
    good = ConnectionFacts("autopilot_slack", True, "slackwebhook", "an AIRFLOW_CONN_* variable", has_password=True)
    assert check_connection(needs["autopilot_slack"], good).status == "ok"
    assert "from an AIRFLOW_CONN_* variable" in check_connection(needs["autopilot_slack"], good).detail
    wrong = ConnectionFacts("autopilot_slack", True, "http", "the metadata DB", has_password=True)
    assert check_connection(needs["autopilot_slack"], wrong).status == "warn"
    partial = ConnectionFacts("autopilot_airflow_api", True, "http", "the metadata DB", has_host=True)
    check = check_connection(needs["autopilot_airflow_api"], partial)
    assert check.status == "warn" and "without login, password" in check.detail


def _cfg(**sections: Any) -> Any:
    from autopilot.config import LoadedConfig

    raw = adult_config_dict(name="m")
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return LoadedConfig.model_validate({**raw, "path": "/tmp/m.yaml"})


def test_invalid_configs_fail_with_the_validate_command(tmp_path: Path) -> None:
    write_config(tmp_path, "good")
    raw = adult_config_dict(name="other")  # name differs from the file name
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    configs, check = load_configs(tmp_path)
    assert [c.name for c in configs] == ["good"]
    assert check.status == "fail" and "must equal the file name" in check.detail
    assert check.fix.startswith("autopilot config validate")
    assert load_configs(tmp_path / "empty")[1].status == "warn"


# ---------------------------------------------------------------------------- stores and tokens


def test_database_judgements() -> None:
    pg = "postgresql://db/state"
    assert check_database("state_db", "AUTOPILOT_STATE_DB", pg, Probe(True, "answers"), "production").status == "ok"
    down = check_database("state_db", "AUTOPILOT_STATE_DB", pg, Probe(False, "refused"), "production")
    assert down.status == "fail" and "AUTOPILOT_STATE_DB" in down.fix
    lite = "sqlite:////h/autopilot.db"
    assert check_database("state_db", "E", lite, Probe(True, "answers"), "embedded").status == "ok"
    assert check_database("state_db", "E", lite, Probe(True, "answers"), "production").status == "warn"
    assert check_database("state_db", "E", lite, Probe(False, "", missing=True), "embedded").status == "ok"


def test_a_missing_database_driver_gets_its_own_fix() -> None:
    probe = Probe(False, "does not answer: ModuleNotFoundError: No module named 'psycopg'")
    check = check_database("state_db", "AUTOPILOT_STATE_DB", "postgresql://db/state", probe, "production")
    assert check.fix.startswith("pip install psycopg, or name an installed driver in AUTOPILOT_STATE_DB")
    assert "postgresql+psycopg2://" in check_mlflow("postgresql://db/mlflow", probe, "production").fix


def test_store_judgements() -> None:
    s3 = "s3://bucket/artifacts"
    assert check_store("artifact_store", "E", s3, Probe(True, "worked"), "production").status == "ok"
    failed = check_store("artifact_store", "AUTOPILOT_ARTIFACT_ROOT", s3, Probe(False, "NoSuchBucket"), "production")
    assert failed.status == "fail" and "aws s3 mb s3://bucket" in failed.fix
    denied = check_store("artifact_store", "E", s3, Probe(False, "ClientError: An error occurred (AccessDenied)"),
                         "production")
    assert "s3:PutObject" in denied.fix
    offline = check_store("artifact_store", "E", s3, Probe(False, "EndpointConnectionError: ..."), "production")
    assert "endpoint does not answer" in offline.fix
    assert check_store("artifact_store", "E", "/data", Probe(True, "worked"), "production").status == "warn"
    assert check_store("artifact_store", "E", "/data", Probe(True, "worked"), "embedded").status == "ok"
    assert check_store("artifact_store", "E", "/data", Probe(False, "", missing=True), "production").status == "fail"


def test_mlflow_judgements() -> None:
    assert check_mlflow("http://mlflow:5000", Probe(True, "lists experiments"), "production").status == "ok"
    down = check_mlflow("http://mlflow:5000", Probe(False, "does not answer"), "production")
    assert down.status == "fail" and "start the MLflow server" in down.fix
    old = check_mlflow("postgresql://db/mlflow", Probe(False, "Detected out-of-date database schema"), "production")
    assert old.fix == "mlflow db upgrade postgresql://db/mlflow"
    assert check_mlflow("sqlite:////h/mlflow.db", Probe(True, "lists"), "production").status == "warn"


@pytest.mark.parametrize(("value", "status"), [
    (None, "fail"), ("", "fail"), ("short-secret", "fail"), ("a" * 40, "fail"), (GOOD_TOKEN, "ok")])
def test_serving_token_must_be_set_long_and_random(value: str | None, status: str) -> None:
    environ = {} if value is None else {"TOKEN_VAR": value}
    check = check_token("TOKEN_VAR", ["m"], environ)
    assert check.status == status
    if value:
        assert value not in check.detail + check.fix
    if status == "fail":
        assert "secrets.token_urlsafe(32)" in check.fix


# ---------------------------------------------------------------------------- probes on local things


def test_probe_sql_reports_a_missing_sqlite_file_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    probe = probe_sql(f"sqlite:///{path}")
    assert probe.missing and not path.exists()
    import sqlite3

    sqlite3.connect(path).execute("CREATE TABLE experiments (id INTEGER)").connection.commit()
    assert probe_sql(f"sqlite:///{path}", table="experiments").extra["has_table"] is True
    assert probe_sql(f"sqlite:///{path}", table="runs").extra["has_table"] is False
    assert not probe_sql("not a url").ok


def test_probe_store_writes_reads_and_deletes(tmp_path: Path) -> None:
    probe = probe_store(str(tmp_path))
    assert probe.ok, probe.detail
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    assert probe_store(str(tmp_path / "nope")).missing


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_redis() -> Iterator[Callable[[list[bytes]], tuple[str, list[bytes]]]]:
    """A one-connection server that answers each command line-by-line with the given replies."""
    servers: list[socket.socket] = []

    def start(replies: list[bytes]) -> tuple[str, list[bytes]]:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)
        received: list[bytes] = []

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                for reply in replies:
                    received.append(conn.recv(1024))
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return f"127.0.0.1:{server.getsockname()[1]}", received

    yield start
    for server in servers:
        server.close()


def test_probe_redis_pings_and_authenticates(fake_redis: Any) -> None:
    address, received = fake_redis([b"+PONG\r\n"])
    assert probe_redis(f"redis://{address}/0").ok
    assert received == [b"*1\r\n$4\r\nPING\r\n"]
    address, received = fake_redis([b"+OK\r\n", b"+PONG\r\n"])
    assert probe_redis(f"redis://:s3cret-pass@{address}/0").ok
    assert received[0] == b"*2\r\n$4\r\nAUTH\r\n$11\r\ns3cret-pass\r\n"
    address, _ = fake_redis([b"-WRONGPASS invalid\r\n"])
    refused = probe_redis(f"redis://:bad@{address}/0")
    assert not refused.ok and "refused the credentials" in refused.detail


def test_probe_redis_and_tcp_report_a_closed_port() -> None:
    port = _closed_port()
    assert "does not answer" in probe_redis(f"redis://127.0.0.1:{port}/0", timeout=1).detail
    assert not probe_tcp("127.0.0.1", port, timeout=1).ok


# ---------------------------------------------------------------------------- the whole run


class FakeProbes:
    """Probes that answer from a table: URL/root -> Probe (default: ok)."""

    def __init__(self, answers: dict[str, Probe] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[str] = []

    def probe(self, target: str, *args: Any, **kwargs: Any) -> Probe:
        self.asked.append(target)
        return self.answers.get(target, Probe(True, "fine"))

    def probes(self) -> Probes:
        return Probes(sql=self.probe, broker=self.probe, store=self.probe, mlflow=self.probe)


def _production(tmp_path: Path, **env: str) -> Settings:
    values = {"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path / "config"),
              "MLFLOW_TRACKING_URI": "http://mlflow:5000", "AUTOPILOT_ARTIFACT_ROOT": "s3://b/artifacts",
              "AUTOPILOT_MLFLOW_ARTIFACT_ROOT": "s3://b/mlflow",
              "AUTOPILOT_OPTUNA_STORAGE": "postgresql://u:optuna-pw-1@db/optuna",
              "AUTOPILOT_STATE_DB": "postgresql://db/state", "AUTOPILOT_INFERENCE_DB": "postgresql://db/inference"}
    values.update(env)
    (tmp_path / "config").mkdir(exist_ok=True)
    write_config(tmp_path / "config", "m")
    return Settings.from_env(values)


def _all_connections(conn_ids: Sequence[str]) -> AirflowFacts:
    found = {c: ConnectionFacts(c, True, "slackwebhook" if "slack" in c else "http", "the metadata DB",
                                True, True, True) for c in conn_ids}
    return facts(connections=found)


def test_a_healthy_deployment_exits_zero_with_every_check_named(tmp_path: Path) -> None:
    fake = FakeProbes()
    report = run_checks(_production(tmp_path, AUTOPILOT_SIGNING_KEY="k" * 40), _all_connections,
                        environ={"AUTOPILOT_SERVING_TOKEN": GOOD_TOKEN}, probes=fake.probes())
    names = [c.name for c in report.checks]
    assert names == ["executor", "celery_broker", "celery_result_backend", "metadata_db", "auth_manager",
                     "model_configs", "connection autopilot_slack", "connection autopilot_airflow_api",
                     "mlflow_tracking", "artifact_store", "mlflow_artifact_root", "optuna_storage", "state_db",
                     "inference_db", "serving_token AUTOPILOT_SERVING_TOKEN", "model_signing"]
    assert report.mode == "production" and report.exit_code == 0
    assert {c.status for c in report.checks} == {"ok"}
    assert "redis://redis:6379/0" in fake.asked and "s3://b/artifacts" in fake.asked


def test_unsigned_manifests_are_fine_on_a_laptop_and_a_warning_in_production(tmp_path: Path) -> None:
    from autopilot.doctor.checks import check_signing

    conn = ConnectionFacts("autopilot_signing_key", True, "generic", "the metadata DB", False, False, True)
    assert check_signing(None, None, "embedded").status == "ok"
    unsigned = check_signing(None, None, "production")
    assert unsigned.status == "warn" and "not signed" in unsigned.detail and "AUTOPILOT_SIGNING_KEY" in unsigned.fix
    assert check_signing(None, conn, "embedded").status == "ok"
    serving = check_signing(None, conn, "production")  # tasks sign; an endpoint here would not check
    assert serving.status == "warn" and "loads unsigned versions" in serving.detail
    assert check_signing("k" * 40, None, "production").status == "ok"
    short = check_signing("short-key", None, "production")
    assert short.status == "fail" and "9 characters" in short.detail
    key = "signing-key-" + "s" * 30  # the key itself never reaches the report
    report = run_checks(_production(tmp_path, AUTOPILOT_SIGNING_KEY=key), _all_connections,
                        environ={"AUTOPILOT_SERVING_TOKEN": GOOD_TOKEN}, probes=FakeProbes().probes())
    assert key not in report.render_text() + report.render_json()


def test_warnings_do_not_fail_but_a_failure_does(tmp_path: Path) -> None:
    settings = _production(tmp_path)
    environ = {"AUTOPILOT_SERVING_TOKEN": GOOD_TOKEN}
    warned = run_checks(settings, lambda ids: facts(), environ=environ, probes=FakeProbes().probes())
    assert {c.status for c in warned.checks} == {"ok", "warn"} and warned.exit_code == 0  # connections missing
    failed = run_checks(settings, _all_connections, environ=environ,
                        probes=FakeProbes({"s3://b/artifacts": Probe(False, "NoSuchBucket")}).probes())
    assert failed.exit_code == 1
    assert [c.name for c in failed.checks if c.status == "fail"] == ["artifact_store"]


def test_no_secret_reaches_the_report(tmp_path: Path) -> None:
    token = GOOD_TOKEN
    settings = _production(tmp_path, MLFLOW_TRACKING_URI="http://user:mlflow-pw-2@mlflow:5000")
    leaky = Probe(False, f"refused for postgresql://u:optuna-pw-1@db/optuna and token {token}")
    fake = FakeProbes({settings.optuna_storage: leaky, settings.mlflow_tracking_uri: leaky})

    def airflow(ids: Sequence[str]) -> AirflowFacts:
        return facts(broker_url="redis://:broker-pw-3@redis:6379/0", connections={})

    report = run_checks(settings, airflow, environ={"AUTOPILOT_SERVING_TOKEN": token}, probes=fake.probes())
    text = report.render_text() + report.render_json()
    for secret in (token, "optuna-pw-1", "mlflow-pw-2", "broker-pw-3"):
        assert secret not in text
    assert "redis://:***@redis:6379/0" in text


def test_an_airflow_that_cannot_be_read_is_one_failed_check(tmp_path: Path) -> None:
    def broken(ids: Sequence[str]) -> AirflowFacts:
        raise RuntimeError("airflow.cfg: bad interpolation")

    report = run_checks(_production(tmp_path), broken, environ={"AUTOPILOT_SERVING_TOKEN": GOOD_TOKEN},
                        probes=FakeProbes().probes())
    first = report.checks[0]
    assert (first.name, first.status) == ("airflow_config", "fail") and "bad interpolation" in first.detail
    assert report.exit_code == 1


def test_json_shape() -> None:
    report = Report("production", (Check("a", "ok", "fine"), Check("b", "warn", "meh", "do x"),
                                   Check("c", "fail", "bad", "do y")))
    data = json.loads(report.render_json())
    assert data == {"mode": "production", "exit_code": 1, "summary": {"ok": 1, "warn": 1, "fail": 1},
                    "checks": [{"name": "a", "status": "ok", "detail": "fine", "fix": ""},
                               {"name": "b", "status": "warn", "detail": "meh", "fix": "do x"},
                               {"name": "c", "status": "fail", "detail": "bad", "fix": "do y"}]}


def test_text_shows_a_fix_under_each_problem_only() -> None:
    text = Report("embedded", (Check("a", "ok", "fine", "unused"), Check("c", "fail", "bad", "do y"))).render_text()
    lines = text.splitlines()
    assert lines[0] == "autopilot doctor (mode: embedded)"
    assert any(line.startswith("FAIL    c") for line in lines)
    assert [line.strip() for line in lines if "fix:" in line] == ["fix: do y"]
    assert lines[-1] == "1 ok, 0 warn, 1 fail"


def test_run_cli_keeps_stdout_for_the_report(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("AUTOPILOT_SERVING_TOKEN", GOOD_TOKEN)
    settings = _production(tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
                           AUTOPILOT_ARTIFACT_ROOT=str(tmp_path), AUTOPILOT_MLFLOW_ARTIFACT_ROOT=str(tmp_path),
                           AUTOPILOT_OPTUNA_STORAGE=f"sqlite:///{tmp_path}/o.db",
                           AUTOPILOT_STATE_DB=f"sqlite:///{tmp_path}/s.db",
                           AUTOPILOT_INFERENCE_DB=f"sqlite:///{tmp_path}/i.db")

    def noisy(ids: Sequence[str]) -> AirflowFacts:
        print("log line from a library")
        os.write(1, b"raw write to fd 1\n")
        return replace(_all_connections(ids), executor="LocalExecutor")  # no broker to reach

    code = run_cli(settings, noisy, mode="embedded", as_json=True)
    out, err = capfd.readouterr()
    data = json.loads(out)
    assert code == data["exit_code"] == 0 and data["mode"] == "embedded"
    assert "log line from a library" in err and "raw write to fd 1" in err


def test_the_cli_has_a_doctor_subcommand() -> None:
    from autopilot.cli import build_parser

    args = build_parser().parse_args(["doctor", "--json", "--mode", "production"])
    assert (args.json, args.mode, args.func.__name__) == (True, "production", "cmd_doctor")
    assert build_parser().parse_args(["doctor"]).mode is None


@pytest.mark.parametrize(("text", "hidden", "kept"), [
    ("postgresql+psycopg2://app:pa/ss+w0rd@db:5432/state", "pa/ss+w0rd", "postgresql+psycopg2://app:***@db:5432/state"),
    ("https://h/x?apikey=abcdef123&a=1", "abcdef123", "?apikey=***&a=1"),
    ("https://h/x?X-Amz-Credential=AKIAEXAMPLE99%2F2026", "AKIAEXAMPLE99", "X-Amz-Credential=***"),
])
def test_redact_passwords_with_slashes_and_more_parameters(text: str, hidden: str, kept: str) -> None:
    out = redact(text)
    assert hidden not in out and kept in out


def test_redact_known_secrets_also_percent_encoded() -> None:
    secret = "pa/ss+word="
    assert redact("in a URL: pa%2Fss%2Bword%3D, in a form: pa%2Fss%2Bword%3D", [secret]) == \
        "in a URL: ***, in a form: ***"


def test_store_checks_say_where_each_setting_came_from(tmp_path: Path) -> None:
    settings = _production(tmp_path)
    environ = {"AUTOPILOT_SERVING_TOKEN": GOOD_TOKEN}
    only_state = lambda ids: facts(connections={  # noqa: E731
        "autopilot_state_db": ConnectionFacts("autopilot_state_db", True, "postgres", "the metadata DB", True, True,
                                              True)})
    checks = {c.name: c for c in run_checks(settings, only_state, environ=environ,
                                            probes=FakeProbes().probes()).checks}
    assert checks["state_db"].detail.endswith("(from env AUTOPILOT_STATE_DB; Airflow tasks take its value from the "
                                              "connection autopilot_state_db (not probed here))")
    assert checks["optuna_storage"].detail.endswith("(from env AUTOPILOT_OPTUNA_STORAGE)")
    assert checks["artifact_store"].detail.endswith("(from env AUTOPILOT_ARTIFACT_ROOT)")
    laptop = run_checks(Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "h"),
                                           "AUTOPILOT_CONFIG_DIR": str(tmp_path / "config")}),
                        lambda ids: facts(), environ=environ, probes=FakeProbes().probes())
    assert {c.name: c for c in laptop.checks}["inference_db"].detail.endswith("(from default)")
