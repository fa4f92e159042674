"""`autopilot doctor`'s judgments: each turns facts into a `Check` (ok, warn or fail), with the fix.

Probes gather the facts (`autopilot.doctor.probes`); Airflow's facts (its effective
configuration, its metadata DB, connections through its own secrets backends) are gathered by
`autopilot.orchestration.airflow_facts`, the only part that imports Airflow; this module receives
them as plain data, so every judgment is testable on fabricated facts. The run that calls them
and the report are `autopilot.doctor.report`'s.

`mode` decides how laptop-only choices count: SQLite, local folders and the simple auth manager
are the embedded set-up (`ok` there) and a `warn` in production. The default mode is production
unless Airflow's metadata DB is SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from autopilot.doctor.probes import Probe

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig

__all__ = [
    "AirflowFacts",
    "Check",
    "ConnectionFacts",
    "Need",
    "check_auth_manager",
    "check_celery",
    "check_connection",
    "check_database",
    "check_executor",
    "check_metadata_db",
    "check_mlflow",
    "check_signing",
    "check_store",
    "check_token",
    "executor_names",
    "load_configs",
    "needed_connections",
    "resolve_mode",
]

Status = Literal["ok", "warn", "fail"]
MODES = ("embedded", "production")
MIN_TOKEN_CHARS = 32
AIRFLOW_API_CONN = "autopilot_airflow_api"  # autopilot.orchestration.notes.CONN_ID (not imported: Airflow-free)
SIGNING_CONN = "autopilot_signing_key"  # autopilot.orchestration.signing.SIGNING_CONN_ID
SIGNING_FIX = ("set AUTOPILOT_SIGNING_KEY (or AUTOPILOT_SIGNING_KEY_FILE) wherever models are registered or loaded, "
               "or the Airflow connection autopilot_signing_key (password = the key) for tasks: "
               "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
TOKEN_FIX = "export {env}=$(python -c 'import secrets;print(secrets.token_urlsafe(32))') in the environment of " \
            "`autopilot serve` and of the Airflow workers (the same value in both)"
REMOVED_EXECUTORS = {"SequentialExecutor", "DebugExecutor"}  # removed in Airflow 3


@dataclass(frozen=True)
class Check:
    """The result of one check: `ok`, `warn` or `fail`, what was found, and how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class ConnectionFacts:
    """An Airflow connection as Airflow's secrets backends answer for it (never its secrets)."""

    conn_id: str
    found: bool
    conn_type: str | None = None
    source: str | None = None  # the secrets backend that answered
    has_host: bool = False
    has_login: bool = False
    has_password: bool = False
    errors: tuple[str, ...] = ()  # backends that could not be asked (e.g. the metadata DB)


@dataclass(frozen=True)
class AirflowFacts:
    """Airflow's effective configuration and what its metadata DB and secrets backends answered."""

    config_error: str | None = None  # the configuration could not be read at all
    executor: str = "LocalExecutor"
    sql_alchemy_conn: str = ""
    init_error: str | None = None  # Airflow could not set up its database engines (settings.initialize)
    metadata_db: Probe | None = None  # None: not probed
    migration_error: str | None = None
    auth_manager: str = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    auth_manager_installed: bool = True
    all_admins: bool = False
    users: tuple[str, ...] = ()
    passwords_file: str = ""
    broker_url: str | None = None
    result_backend: str | None = None  # None: not set (the Celery provider falls back to the metadata DB)
    connections: Mapping[str, ConnectionFacts] = field(default_factory=dict)


def is_sqlite(url: str) -> bool:
    """Whether a database URL is SQLite (one machine only)."""
    return url.startswith("sqlite")


# ---------------------------------------------------------------------------- mode


def resolve_mode(requested: str | None, facts: AirflowFacts) -> str:
    """The requested mode, else embedded when Airflow's metadata DB is SQLite, else production."""
    if requested:
        if requested not in MODES:
            raise ValueError(f"mode {requested!r}: use one of {', '.join(MODES)}")
        return requested
    return "embedded" if is_sqlite(facts.sql_alchemy_conn) else "production"


def _laptop(mode: str) -> Status:
    """How a laptop-only choice counts: fine in the embedded set-up, a warning in production."""
    return "ok" if mode == "embedded" else "warn"


# ---------------------------------------------------------------------------- Airflow checks


def executor_names(executor: str) -> list[str]:
    """Class names of the configured executors (`[core] executor` may list several, with aliases)."""
    names = []
    for item in executor.split(","):
        item = item.strip()
        if item:
            names.append(item.split(":")[-1].split(".")[-1])
    return names


def check_executor(facts: AirflowFacts, mode: str) -> Check:
    """The executor fits the metadata DB: SQLite takes only the LocalExecutor, and only on a laptop."""
    names = executor_names(facts.executor)
    dialect = _dialect(facts.sql_alchemy_conn)
    removed = sorted(REMOVED_EXECUTORS.intersection(names))
    if removed:
        return Check("executor", "fail", f"{', '.join(removed)} was removed in Airflow 3",
                     "set AIRFLOW__CORE__EXECUTOR=LocalExecutor (one machine) or CeleryExecutor (workers)")
    if not names:
        return Check("executor", "fail", "no executor configured", "set AIRFLOW__CORE__EXECUTOR")
    if dialect == "sqlite":
        others = [n for n in names if n != "LocalExecutor"]
        if others:
            return Check("executor", "fail",
                         f"{', '.join(others)} on SQLite: SQLite has one writer on one machine; "
                         "workers elsewhere cannot share it",
                         "move the metadata DB to PostgreSQL (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql://...; "
                         "then `airflow db migrate`), or use AIRFLOW__CORE__EXECUTOR=LocalExecutor on a laptop")
        return Check("executor", _laptop(mode), "LocalExecutor on SQLite (the embedded laptop set-up)",
                     "for production: PostgreSQL as the metadata DB and CeleryExecutor (or LocalExecutor "
                     "on one machine)")
    return Check("executor", "ok", f"{', '.join(names)} on {dialect or 'an unknown database'}")


def _dialect(url: str) -> str:
    scheme = url.split(":", 1)[0] if ":" in url else ""
    return scheme.split("+", 1)[0].lower()


def check_celery(facts: AirflowFacts, broker: Probe | None, backend: Probe | None) -> list[Check]:
    """With the CeleryExecutor: the broker answers, and the result backend is set and answers."""
    if "CeleryExecutor" not in executor_names(facts.executor):
        return []
    checks = []
    url = facts.broker_url or ""
    if broker is None or not url:
        checks.append(Check("celery_broker", "fail", "no broker URL", "set AIRFLOW__CELERY__BROKER_URL "
                            "(e.g. redis://redis-host:6379/0)"))
    elif broker.extra.get("unchecked"):
        checks.append(Check("celery_broker", "warn", f"{url}: {broker.detail}", "check it by hand"))
    elif broker.ok:
        checks.append(Check("celery_broker", "ok", f"{url}: {broker.detail}"))
    else:
        checks.append(Check("celery_broker", "fail", f"{url}: {broker.detail}",
                            "start the broker, or point AIRFLOW__CELERY__BROKER_URL at a running one "
                            "(the scheduler queues every task there; workers read it)"))
    result = facts.result_backend
    if not result:
        checks.append(Check("celery_result_backend", "warn",
                            "not set: the Celery provider falls back to db+ the metadata DB",
                            "set AIRFLOW__CELERY__RESULT_BACKEND explicitly (e.g. db+postgresql://...)"))
    elif backend is None or not backend.ok:
        detail = backend.detail if backend is not None else "not probed"
        checks.append(Check("celery_result_backend", "fail", f"{result}: {detail}",
                            "start it, or point AIRFLOW__CELERY__RESULT_BACKEND at a running one"))
    else:
        checks.append(Check("celery_result_backend", "ok", f"{result}: {backend.detail}"))
    return checks


ASYNC_DRIVERS = {"asyncpg": "postgresql", "aiomysql": "mysql", "aiosqlite": "sqlite"}


def check_metadata_db(facts: AirflowFacts, mode: str) -> Check:
    """Airflow can open its metadata DB, the DB answers, and its schema is migrated."""
    url = facts.sql_alchemy_conn or "(not set)"
    if facts.init_error:
        driver = next((d for d in ASYNC_DRIVERS if f"'{d}'" in facts.init_error), None)
        fix = (f"pip install {driver} (Airflow 3 opens an async engine on the metadata DB too; "
               "the apache-airflow[postgres] extra brings it for PostgreSQL)") if driver else \
            "run `airflow db check` for the whole error"
        return Check("metadata_db", "fail", f"Airflow cannot set up its database engine: {facts.init_error}", fix)
    probe = facts.metadata_db
    if probe is None:
        return Check("metadata_db", "fail", f"{url}: not probed", "fix the Airflow configuration first")
    if probe.missing:
        return Check("metadata_db", "warn" if mode == "embedded" else "fail", f"{url}: {probe.detail}",
                     "run `airflow db migrate` (`make demo` does it for the embedded set-up)")
    if not probe.ok:
        env = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
        return Check("metadata_db", "fail", f"{url}: {probe.detail}",
                     _driver_fix(probe.detail, env) or f"start the database, or fix {env}")
    if facts.migration_error:
        return Check("metadata_db", "fail", f"{url}: schema not at this Airflow's revision ({facts.migration_error})",
                     "run `airflow db migrate` with this Airflow version")
    return Check("metadata_db", "ok", f"{url}: answers, schema migrated")


SIMPLE_AUTH = "SimpleAuthManager"
PRODUCTION_AUTH = {"FabAuthManager": "apache-airflow-providers-fab",
                   "KeycloakAuthManager": "apache-airflow-providers-keycloak"}
FAB_FIX = "use FAB (pip install apache-airflow-providers-fab; AIRFLOW__CORE__AUTH_MANAGER=" \
          "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager) or Keycloak"


def check_auth_manager(facts: AirflowFacts, mode: str) -> Check:
    """The auth manager does not let everyone in as admin, and is one meant for production there."""
    cls = facts.auth_manager.rsplit(".", 1)[-1]
    if not facts.auth_manager_installed:
        package = PRODUCTION_AUTH.get(cls, "the package that provides it")
        return Check("auth_manager", "fail", f"{facts.auth_manager} is not installed",
                     f"pip install {package} on every Airflow host")
    if cls == SIMPLE_AUTH:
        return _check_simple_auth(facts, mode)
    if cls in PRODUCTION_AUTH:
        return Check("auth_manager", "ok", f"{cls}")
    return Check("auth_manager", "ok", f"custom auth manager {facts.auth_manager} (not checked further)")


def _check_simple_auth(facts: AirflowFacts, mode: str) -> Check:
    if facts.all_admins:
        return Check("auth_manager", "fail",
                     "SimpleAuthManager with simple_auth_manager_all_admins=True: everyone is admin, no login",
                     "set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False and list the users in "
                     "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (e.g. alice:admin,bob:viewer); "
                     f"for production {FAB_FIX}")
    if not facts.users:
        return Check("auth_manager", "warn", "SimpleAuthManager with no users: nobody can log in",
                     "list users in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (e.g. alice:admin)")
    generated = facts.passwords_file.endswith(".generated") or not facts.passwords_file
    where = "passwords generated by Airflow" if generated else f"passwords from {facts.passwords_file}"
    detail = f"SimpleAuthManager, users {', '.join(facts.users)}; {where} (plain text, no rotation)"
    return Check("auth_manager", _laptop(mode), detail,
                 f"SimpleAuthManager is for development: {FAB_FIX}")


@dataclass(frozen=True)
class Need:
    """A connection some model needs, why, and how bad its absence is."""

    conn_id: str
    purpose: str
    missing: Status
    consequence: str
    types: tuple[str, ...]
    fields: tuple[str, ...]  # which of host/login/password must be set
    example: str
    models: tuple[str, ...] = ()
    guide: str = ""  # where the docs say how to set it up (added to the fix)


def needed_connections(configs: Sequence[LoadedConfig]) -> list[Need]:
    """The Airflow connections the model configs use: Slack, the REST API for run notes, AWS."""
    needs: dict[str, Need] = {}

    def add(need: Need, model: str) -> None:
        known = needs.get(need.conn_id)
        if known is None or (known.missing != "fail" and need.missing == "fail"):
            known = replace(need, models=known.models if known else ())
        needs[need.conn_id] = replace(known, models=(*known.models, model))

    for cfg in configs:
        add(Need(cfg.alerts.slack_conn_id, "Slack alerts (alerts.slack_conn_id)", "warn",
                 "alerts are off: no message about any run outcome", ("slackwebhook",), ("password",),
                 '{"conn_type": "slackwebhook", "password": "<webhook URL>"}'), cfg.name)
        add(Need(AIRFLOW_API_CONN, "DAG run notes through the REST API", "warn",
                 "run notes will not appear: no DAG run's note in the Airflow UI will say what the run decided "
                 "(promoted, rejected, held for review, rolled back; a monitoring window's action and reasons); "
                 "only the task logs will",
                 ("http", "https"), ("host", "login", "password"),
                 '{"conn_type": "http", "host": "<api-server host>", "port": 8080, "login": "<user>", '
                 '"password": "<password>"}',
                 guide="a dedicated Airflow user allowed to edit DAG runs: docs/operations.md, \"Run notes\""),
            cfg.name)
        if cfg.deployment.target == "aws":
            add(Need(cfg.deployment.aws.aws_conn_id, "SageMaker deployment (deployment.aws.aws_conn_id)", "fail",
                     "the deploy task cannot reach AWS", ("aws",), (),
                     '{"conn_type": "aws", "extra": {"region_name": "<region>"}} (credentials: a role, or '
                     'login/password = access key id/secret)'), cfg.name)
    return list(needs.values())


def check_connection(need: Need, found: ConnectionFacts | None) -> Check:
    """One needed connection: present through Airflow's secrets backends, of the right type and complete."""
    name = f"connection {need.conn_id}"
    models = ", ".join(need.models)
    env = "AIRFLOW_CONN_" + need.conn_id.upper()
    fix = (f"define it: export {env}='{need.example}', or `airflow connections add {need.conn_id} --conn-json ...`, "
           "or in your secrets backend" + (f" ({need.guide})" if need.guide else ""))
    if found is None or not found.found:
        unread = f"; not all backends answered: {'; '.join(found.errors)}" if found and found.errors else ""
        return Check(name, need.missing, f"missing ({need.purpose}; {models}): {need.consequence}{unread}", fix)
    where = f"from {found.source}" if found.source else "found"
    if need.types and (found.conn_type or "") not in need.types:
        return Check(name, "warn", f"{where}, but of type {found.conn_type!r}, not {' or '.join(need.types)}", fix)
    missing_fields = [f for f in need.fields if not getattr(found, f"has_{f}")]
    if missing_fields:
        return Check(name, "warn", f"{where}, but without {', '.join(missing_fields)}: {need.consequence}", fix)
    return Check(name, "ok", f"{where} ({found.conn_type}; {need.purpose})")


# ---------------------------------------------------------------------------- autopilot's own stores


_NO_MODULE = re.compile(r"No module named '([\w.]+)'")


def _driver_fix(detail: str, env: str) -> str | None:
    """The fix for a database driver that is not installed (SQLAlchemy 2.1 takes psycopg 3 for postgresql://)."""
    match = _NO_MODULE.search(detail)
    if not match:
        return None
    module = match.group(1).split(".")[0]
    return (f"pip install {module}, or name an installed driver in {env} "
            "(e.g. postgresql+psycopg2://...: psycopg2 is installed with autopilot)")


def check_database(name: str, env: str, url: str, probe: Probe, mode: str) -> Check:
    """One of autopilot's databases (Optuna, state, inference log) answers; SQLite only on a laptop."""
    if probe.missing:
        status: Status = "ok" if mode == "embedded" else "warn"
        return Check(name, status, f"{url}: not created yet (created on first use)",
                     f"point {env} at PostgreSQL for production")
    if not probe.ok:
        fix = _driver_fix(probe.detail, env) or f"start the database, or fix {env}"
        return Check(name, "fail", f"{url}: {probe.detail}", fix)
    if is_sqlite(url):
        return Check(name, _laptop(mode), f"{url}: SQLite answers (one machine only)",
                     f"point {env} at PostgreSQL so every worker and host sees the same state")
    return Check(name, "ok", f"{url}: {probe.detail}")


def check_store(name: str, env: str, root: str, probe: Probe, mode: str) -> Check:
    """An artifact root takes a write, a read and a delete; a local folder only on a laptop."""
    if probe.missing:
        if mode == "embedded":
            return Check(name, "ok", f"{root}: not created yet (the first run creates it)")
        return Check(name, "fail", f"{root}: {probe.detail} (a volume not mounted?)",
                     f"mkdir -p {root}, or set {env} to s3://bucket/prefix")
    if not probe.ok:
        fix = _s3_fix(root, env, probe.detail) if root.startswith("s3://") else \
            f"make {root} writable by this user, or fix {env}"
        return Check(name, "fail", f"{root}: {probe.detail}", fix)
    if not root.startswith("s3://"):
        return Check(name, _laptop(mode), f"{root}: local folder, {probe.detail}",
                     f"set {env} to s3://bucket/prefix so workers on other hosts see the same files")
    return Check(name, "ok", f"{root}: {probe.detail}")


_S3_CREDENTIALS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentialsError",
                   "ExpiredToken")


def _s3_fix(root: str, env: str, detail: str) -> str:
    """What to do about a failed S3 probe, by what failed."""
    if "EndpointConnectionError" in detail or "ConnectTimeout" in detail:
        return "the S3 endpoint does not answer: check the network, or AWS_ENDPOINT_URL (moto, MinIO, a VPC endpoint)"
    if any(code in detail for code in _S3_CREDENTIALS):
        return (f"give this host's AWS credentials (AWS_* variables, profile or role) s3:GetObject, s3:PutObject "
                f"and s3:DeleteObject on {root}/*")
    return (f"create the bucket (aws s3 mb s3://{urlsplit(root).netloc}) or fix {env}; "
            "the AWS credentials and AWS_ENDPOINT_URL come from the environment")


def check_mlflow(uri: str, probe: Probe, mode: str) -> Check:
    """MLflow tracking answers and lists experiments."""
    scheme = urlsplit(uri).scheme.lower()
    if not probe.ok:
        if probe.missing:
            return Check("mlflow_tracking", "ok" if mode == "embedded" else "fail",
                         f"{uri}: not created yet (the first run creates it)", "set MLFLOW_TRACKING_URI")
        if "out-of-date database schema" in probe.detail:
            return Check("mlflow_tracking", "fail", f"{uri}: {probe.detail}", f"mlflow db upgrade {uri}")
        fix = "start the MLflow server, or fix MLFLOW_TRACKING_URI" if scheme in ("http", "https") else \
            _driver_fix(probe.detail, "MLFLOW_TRACKING_URI") or "start the database, or fix MLFLOW_TRACKING_URI"
        return Check("mlflow_tracking", "fail", f"{uri}: {probe.detail}", fix)
    if scheme in ("", "file", "sqlite"):
        return Check("mlflow_tracking", _laptop(mode), f"{uri}: {probe.detail} (local to this machine)",
                     "set MLFLOW_TRACKING_URI to an MLflow server or PostgreSQL")
    return Check("mlflow_tracking", "ok", f"{uri}: {probe.detail}")


def check_token(env: str, models: Sequence[str], environ: Mapping[str, str]) -> Check:
    """The serving token's variable is set and long enough (its value is never shown)."""
    name = f"serving_token {env}"
    value = environ.get(env, "")
    fix = TOKEN_FIX.format(env=env)
    if not value:
        return Check(name, "fail", f"{env} is not set (deployment.serving.token_env of {', '.join(models)}): "
                                   "`autopilot serve` refuses to start and the rollout cannot call the endpoint", fix)
    if len(value) < MIN_TOKEN_CHARS or len(set(value)) < 10:
        return Check(name, "fail", f"{env} is set but weak ({len(value)} characters; at least {MIN_TOKEN_CHARS} "
                                   "random ones are needed)", fix)
    return Check(name, "ok", f"{env} is set ({len(value)} characters)")


def check_signing(env_key: str | None, conn: ConnectionFacts | None, mode: str) -> Check:
    """Model manifests are signed (a key in the environment or the Airflow connection); a warning in production.

    Without a key the SHA-256 manifest guards against corruption only: anyone who can write to
    MLflow can register a version with a matching manifest and move `champion`.
    """
    from autopilot.adapters.registry.model_loading import MIN_KEY_LENGTH

    if env_key is not None and len(env_key) < MIN_KEY_LENGTH:
        return Check("model_signing", "fail", f"AUTOPILOT_SIGNING_KEY is set but has {len(env_key)} characters "
                                              f"(at least {MIN_KEY_LENGTH} are needed): registration would fail",
                     SIGNING_FIX)
    if env_key:
        return Check("model_signing", "ok", "manifests are signed (AUTOPILOT_SIGNING_KEY); every load checks the "
                                            "signature")
    if conn is not None and conn.found and conn.has_password:
        # Tasks sign and verify; `autopilot serve` reads the environment only, so an endpoint
        # without the variable would load unsigned versions.
        detail = (f"manifests are signed and checked in Airflow tasks (connection {SIGNING_CONN} from "
                  f"{conn.source}), but AUTOPILOT_SIGNING_KEY is not set here: an endpoint started like this "
                  "loads unsigned versions")
        return Check("model_signing", _laptop(mode), detail,
                     "set AUTOPILOT_SIGNING_KEY (the same key) on every host that runs `autopilot serve`")
    return Check("model_signing", _laptop(mode), "manifests are not signed: anyone who can write to MLflow can "
                                                 "register a version that loads", SIGNING_FIX)


# ---------------------------------------------------------------------------- configs


def load_configs(config_dir: Path) -> tuple[list[LoadedConfig], Check]:
    """Every model config in the folder, and a check saying whether they all load."""
    from autopilot.config import ConfigError, load_config

    files = sorted(config_dir.glob("*.yaml"))
    if not files:
        return [], Check("model_configs", "warn", f"no *.yaml in {config_dir}: no connections or tokens to check",
                         "set AUTOPILOT_CONFIG_DIR to the folder of model configs")
    configs, problems = [], []
    for path in files:
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            problems.append(str(exc).splitlines()[0] + (" ..." if "\n" in str(exc) else ""))
            continue
        if cfg.name != path.stem:
            problems.append(f"{path}: name {cfg.name!r} must equal the file name {path.stem!r}")
            continue
        configs.append(cfg)
    if problems:
        return configs, Check("model_configs", "fail", f"{len(problems)} of {len(files)} invalid: "
                              + "; ".join(problems), f"autopilot config validate {config_dir}/*.yaml")
    return configs, Check("model_configs", "ok", f"{len(configs)} in {config_dir}: "
                          + ", ".join(c.name for c in configs))
