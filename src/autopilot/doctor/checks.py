"""`autopilot doctor`: check a deployment and say how to fix each problem.

The checks judge facts; probes gather them. A probe does one bounded piece of I/O (connect
with a timeout, write and read back a small object) and never raises; a check turns facts into
a `Check` (`ok`, `warn` or `fail`, what was found, and the fix). The Airflow facts (its
effective configuration, its metadata DB, connections through its own secrets backends) are
gathered by `autopilot.orchestration.airflow_facts`, the only part that imports Airflow; this module
receives them as plain data, so every judgement is testable on fabricated facts.

`--mode` decides how laptop-only choices count: SQLite, local folders and the simple auth
manager are the embedded set-up (`ok` there) and a `warn` in production. The default mode is
production unless Airflow's metadata DB is SQLite. Exit code: 1 when any check fails (warns
do not fail), else 0.

Secrets are never printed: URL passwords and secret-looking query parameters are masked in
every detail, and the values of known secrets (serving tokens, URL passwords, the AWS secret
key) are replaced wherever they appear, e.g. inside a driver's error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "AirflowFacts",
    "Check",
    "ConnectionFacts",
    "Probe",
    "Probes",
    "Report",
    "redact",
    "resolve_mode",
    "run_checks",
    "run_cli",
]

Status = Literal["ok", "warn", "fail"]
MODES = ("embedded", "production")
TIMEOUT = 5.0  # seconds for any one probe: a doctor that hangs on a dead host helps nobody
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
class Probe:
    """What one bounded probe found. `missing`: a local file or folder that does not exist yet."""

    ok: bool
    detail: str = ""
    missing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Report:
    """Every check of one doctor run."""

    mode: str
    checks: tuple[Check, ...]

    @property
    def exit_code(self) -> int:
        """1 when any check failed, else 0 (warnings do not fail)."""
        return 1 if any(c.status == "fail" for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        """How many checks ended in each status."""
        return {s: sum(c.status == s for c in self.checks) for s in ("ok", "warn", "fail")}

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: mode, exit code, counts, and the checks in order."""
        return {"mode": self.mode, "exit_code": self.exit_code, "summary": self.counts(),
                "checks": [asdict(c) for c in self.checks]}

    def render_json(self) -> str:
        """The report as JSON."""
        return json.dumps(self.as_dict(), indent=2)

    def render_text(self) -> str:
        """The report as a table: one line per check, its fix under each problem."""
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"autopilot doctor (mode: {self.mode})", "", f"{'STATUS':6s}  {'CHECK':{width}s}  DETAIL"]
        for check in self.checks:
            status = check.status.upper() if check.status == "fail" else check.status
            lines.append(f"{status:6s}  {check.name:{width}s}  {check.detail}")
            if check.fix and check.status != "ok":
                lines.append(f"{'':6s}  {'':{width}s}  fix: {check.fix}")
        counts = self.counts()
        lines += ["", f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- redaction

# user:password@ in a URL. The password runs to the last "@" before the path (an unencoded "@"
# in it), or, as SQLAlchemy reads URLs, to the first "@" even across an unencoded "/" (a state
# database URL may hold one), unless what precedes that "/" is a port (host:8080/path@x).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?:[^\s/]*@|(?!\d*/)[^\s@]*@)")
_QUERY_SECRET = re.compile(
    r"(?i)(?P<head>[?&;][\w.-]*?(?:password|passwd|pwd|secret|token|key|sig|signature|credential)=)[^&\s]+")
MIN_SECRET_CHARS = 6  # shorter values would replace ordinary words


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords, secret query parameters and every known secret value (also percent-encoded) in `text`."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    text = _QUERY_SECRET.sub(r"\g<head>***", text)
    forms = {form for s in secrets if len(s) >= MIN_SECRET_CHARS for form in (s, quote(s, safe=""), quote_plus(s))}
    for secret in sorted(forms, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def url_secrets(url: str | None) -> list[str]:
    """The password of a URL, raw and percent-decoded (empty when it has none)."""
    if not url:
        return []
    try:
        password = urlsplit(url.removeprefix("db+")).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def _scrub(check: Check, secrets: Sequence[str]) -> Check:
    return replace(check, detail=redact(check.detail, secrets), fix=redact(check.fix, secrets))


# ---------------------------------------------------------------------------- probes


def _error(exc: BaseException) -> str:
    """An exception as one short line (the class and the first line of its message)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def probe_sql(url: str, table: str | None = None, timeout: float = TIMEOUT) -> Probe:
    """Connect with SQLAlchemy and run SELECT 1; with `table`, also say whether that table exists.

    A SQLite file that does not exist is reported as `missing` and never created (connecting
    would create an empty one): it is opened read-only.
    """
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as exc:
        return Probe(False, f"not a database URL: {_error(exc)}")
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            return Probe(False, "an in-memory SQLite database keeps nothing between processes")
        if not Path(database).is_file():
            return Probe(False, f"{database} does not exist", missing=True)
        url, args = f"sqlite:///file:{database}?mode=ro&uri=true", {"timeout": timeout}
    elif parsed.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        args = {"connect_timeout": int(timeout)}
    try:
        engine = create_engine(url, connect_args=args, poolclass=_null_pool())
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                has_table = inspect(conn).has_table(table) if table else None
        finally:
            engine.dispose()
    except Exception as exc:
        return Probe(False, f"does not answer: {_error(exc)}")
    return Probe(True, "answers SELECT 1", extra={"has_table": has_table})


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _resp(*parts: str) -> bytes:
    """A Redis command in RESP (the protocol is small enough to speak without a client library)."""
    return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)


def probe_redis(url: str, timeout: float = TIMEOUT) -> Probe:
    """Connect to a Redis URL, authenticate if it carries a password, and PING."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if parts.scheme == "rediss":
                sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            reader = sock.makefile("rb")
            if parts.password:
                auth = (unquote(parts.username), unquote(parts.password)) if parts.username else \
                    (unquote(parts.password),)
                sock.sendall(_resp("AUTH", *auth))
                answer = reader.readline().strip()
                if not answer.startswith(b"+OK"):
                    return Probe(False, f"{host}:{port} refused the credentials")
            sock.sendall(_resp("PING"))
            answer = reader.readline().strip()
    except OSError as exc:
        return Probe(False, f"{host}:{port} does not answer: {_error(exc)}")
    if answer != b"+PONG":
        return Probe(False, f"{host}:{port} answered PING with {answer[:80]!r}")
    return Probe(True, f"{host}:{port} answers PING")


def probe_tcp(host: str, port: int, timeout: float = TIMEOUT) -> Probe:
    """Open (and close) a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Probe(False, f"{host}:{port} does not answer: {_error(exc)}")
    return Probe(True, f"{host}:{port} accepts connections")


AMQP_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}


def probe_broker(url: str, timeout: float = TIMEOUT) -> Probe:
    """Reach a Celery broker or result backend: Redis PING, SQL SELECT 1, AMQP TCP connect."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("redis", "rediss"):
        return probe_redis(url, timeout)
    if scheme.startswith("db+"):
        return probe_sql(url.removeprefix("db+"), timeout=timeout)
    if scheme in AMQP_PORTS:
        parts = urlsplit(url)
        return probe_tcp(parts.hostname or "localhost", parts.port or AMQP_PORTS[scheme], timeout)
    return Probe(False, f"scheme {scheme or '?'}: the doctor cannot probe it", extra={"unchecked": True})


def probe_store(root: str, s3_client: Any | None = None) -> Probe:
    """Write, read back and delete a small probe object under an artifact root (folder or s3://)."""
    from autopilot.adapters.storage import open_store

    key = f"_doctor/probe-{uuid.uuid4().hex}"
    payload = b"autopilot doctor probe"
    if not root.startswith("s3://"):
        if not Path(root).expanduser().is_dir():
            return Probe(False, f"{root} does not exist", missing=True)
    try:
        if root.startswith("s3://"):
            s3_client = s3_client or _s3_client()
        store = open_store(root, s3_client=s3_client)
        store.put(key, payload)
        if store.get(key) != payload:
            return Probe(False, "an object read back differs from the one written")
        _delete(store, key)
    except Exception as exc:
        return Probe(False, f"write/read/delete failed: {_error(exc)}")
    return Probe(True, "write, read back and delete of a probe object worked")


def _s3_client() -> Any:
    """An S3 client that gives up fast: one attempt, short timeouts (AWS_ENDPOINT_URL honoured)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT,
                                            retries={"max_attempts": 1, "mode": "standard"}))


def _delete(store: Any, key: str) -> None:
    """Remove the probe object (the store itself never deletes: it is put-if-absent by design)."""
    if hasattr(store, "bucket"):
        full = f"{store.prefix}/{key}" if store.prefix else key
        store.client.delete_object(Bucket=store.bucket, Key=full)
        return
    path = Path(store.uri(key))
    path.unlink()
    with contextlib.suppress(OSError):  # leave the folder if anything else is in it
        path.parent.rmdir()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def probe_mlflow(uri: str, timeout: float = TIMEOUT) -> Probe:
    """Reach MLflow tracking: GET /health of a server, or the database behind it; then list experiments."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        health = _http_health(uri.rstrip("/") + "/health", timeout)
        if not health.ok:
            return health
    elif scheme in ("", "file"):
        # MLflow's file store creates its folder on first use: never create it from the doctor.
        folder = Path(urlsplit(uri).path if scheme else uri).expanduser()
        if not folder.is_dir():
            return Probe(False, f"{folder} does not exist", missing=True)
    elif scheme != "databricks":
        database = probe_sql(uri, table="experiments", timeout=timeout)
        if not database.ok:
            return database
        if not database.extra.get("has_table"):
            return Probe(True, "the database answers and is empty (MLflow creates its tables on first use)")
    try:
        from mlflow.tracking import MlflowClient

        # MLflow retries a dead server for minutes by default: one short attempt is the point here.
        with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout * 2))):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        return Probe(False, f"listing experiments failed: {_error(exc)}", extra={"listed": False})
    return Probe(True, "lists experiments")


def _http_health(url: str, timeout: float) -> Probe:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except Exception as exc:
        return Probe(False, f"{url} does not answer: {_error(exc)}")
    if response.status_code != 200:
        return Probe(False, f"{url} answered {response.status_code}")
    return Probe(True, f"{url} answers")


@dataclass(frozen=True)
class Probes:
    """The I/O the checks need, replaceable in tests."""

    sql: Callable[..., Probe] = probe_sql
    broker: Callable[[str], Probe] = probe_broker
    store: Callable[[str], Probe] = probe_store
    mlflow: Callable[[str], Probe] = probe_mlflow


# ---------------------------------------------------------------------------- mode


def resolve_mode(requested: str | None, facts: AirflowFacts) -> str:
    """The requested mode, else embedded when Airflow's metadata DB is SQLite, else production."""
    if requested:
        if requested not in MODES:
            raise ValueError(f"mode {requested!r}: use one of {', '.join(MODES)}")
        return requested
    return "embedded" if _is_sqlite(facts.sql_alchemy_conn) else "production"


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
                 "a gate's reasons will not reach the DAG run's note (they stay in the task log)",
                 ("http", "https"), ("host", "login", "password"),
                 '{"conn_type": "http", "host": "<api-server host>", "port": 8080, "login": "<user>", '
                 '"password": "<password>"}'), cfg.name)
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
           "or in your secrets backend")
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
    if _is_sqlite(url):
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
    from autopilot.adapters.model_loading import MIN_KEY_LENGTH

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


# ---------------------------------------------------------------------------- the run


def run_checks(settings: Settings, airflow_facts: Callable[[Sequence[str]], AirflowFacts], *,
               mode: str | None = None, environ: Mapping[str, str] | None = None,
               probes: Probes | None = None) -> Report:
    """Run every check and return the report (never raises for what it finds).

    Args:
        settings: where autopilot's state lives (from the environment).
        airflow_facts: gathers Airflow's facts for the given connection ids
            (`autopilot.orchestration.airflow_facts.gather_airflow_facts`; a fake in tests).
        mode: `embedded` or `production`; None: embedded when Airflow's DB is SQLite.
        environ: the environment the serving tokens are read from (default: this process's).
        probes: the I/O (default: the real probes).
    """
    env = os.environ if environ is None else environ
    probes = probes or Probes()
    configs, config_check = load_configs(settings.config_dir)
    needs = needed_connections(configs)
    try:
        facts = airflow_facts([*(n.conn_id for n in needs), SIGNING_CONN])
    except Exception as exc:  # the doctor reports; it does not crash on the thing it examines
        facts = AirflowFacts(config_error=_error(exc))
    chosen = resolve_mode(mode, facts)
    checks = _airflow_checks(facts, chosen, probes) + [config_check]
    checks += [check_connection(n, facts.connections.get(n.conn_id)) for n in needs]
    checks += _store_checks(settings, chosen, probes)
    checks += _token_checks(configs, env)
    checks.append(check_signing(settings.signing_key, facts.connections.get(SIGNING_CONN), chosen))
    secrets = _known_secrets(settings, facts, configs, env)
    return Report(chosen, tuple(_scrub(c, secrets) for c in checks))


def _airflow_checks(facts: AirflowFacts, mode: str, probes: Probes) -> list[Check]:
    if facts.config_error:
        return [Check("airflow_config", "fail", f"Airflow's configuration cannot be read: {facts.config_error}",
                      "run `airflow config list` for the whole error; fix airflow.cfg or the AIRFLOW__* variables")]
    celery = "CeleryExecutor" in executor_names(facts.executor)
    broker = probes.broker(facts.broker_url) if celery and facts.broker_url else None
    backend = probes.broker(facts.result_backend) if celery and facts.result_backend else None
    return [check_executor(facts, mode), *check_celery(facts, broker, backend), check_metadata_db(facts, mode),
            check_auth_manager(facts, mode)]


def _store_checks(settings: Settings, mode: str, probes: Probes) -> list[Check]:
    checks = [check_mlflow(settings.mlflow_tracking_uri, probes.mlflow(settings.mlflow_tracking_uri), mode),
              check_store("artifact_store", "AUTOPILOT_ARTIFACT_ROOT", settings.artifact_root,
                          probes.store(settings.artifact_root), mode),
              check_store("mlflow_artifact_root", "AUTOPILOT_MLFLOW_ARTIFACT_ROOT", settings.mlflow_artifact_root,
                          probes.store(settings.mlflow_artifact_root), mode)]
    for name, env, url in (("optuna_storage", "AUTOPILOT_OPTUNA_STORAGE", settings.optuna_storage),
                           ("state_db", "AUTOPILOT_STATE_DB", settings.state_db),
                           ("inference_db", "AUTOPILOT_INFERENCE_DB", settings.inference_db)):
        checks.append(check_database(name, env, url, probes.sql(url), mode))
    return checks


def _token_checks(configs: Sequence[LoadedConfig], environ: Mapping[str, str]) -> list[Check]:
    by_env: dict[str, list[str]] = {}
    for cfg in configs:
        by_env.setdefault(cfg.deployment.serving.token_env, []).append(cfg.name)
    return [check_token(env, models, environ) for env, models in by_env.items()]


def _known_secrets(settings: Settings, facts: AirflowFacts, configs: Sequence[LoadedConfig],
                   environ: Mapping[str, str]) -> list[str]:
    """Values that must never appear in the output, wherever an error message might carry them."""
    secrets = [environ.get(cfg.deployment.serving.token_env, "") for cfg in configs]
    secrets.append(environ.get("AWS_SECRET_ACCESS_KEY", ""))
    secrets.append(settings.signing_key or "")
    for url in (settings.mlflow_tracking_uri, settings.optuna_storage, settings.state_db, settings.inference_db,
                facts.sql_alchemy_conn, facts.broker_url, facts.result_backend):
        secrets += url_secrets(url)
    return [s for s in secrets if s]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (file descriptor 1) to stderr meanwhile.

    Airflow and MLflow log to stdout from wherever they are imported; the report must be the only
    thing on stdout (`--json` is read by programs). Redirecting the descriptor catches every
    writer, including loggers that kept a reference to the original stream.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):  # and the Python stream, should it not be fd 1
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_cli(settings: Settings, airflow_facts: Callable[[Sequence[str]], AirflowFacts], *,
            mode: str | None = None, as_json: bool = False) -> int:
    """Run the doctor, print the report (text table or JSON) on stdout, return the exit code."""
    with stdout_to_stderr():
        report = run_checks(settings, airflow_facts, mode=mode)
    print(report.render_json() if as_json else report.render_text(), flush=True)
    return report.exit_code
