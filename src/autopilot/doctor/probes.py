"""The doctor's probes: each does one bounded piece of I/O and reports what it found, never raising.

A probe connects with a timeout (`TIMEOUT`, 5 s), or writes and reads back a small object, and
returns a `Probe`: whether it worked, what it saw (one line), and whether a local file or folder
is simply `missing` (not created yet). The judgments are `autopilot.doctor.checks`'; `Probes`
bundles the probes they need so tests can replace the I/O.

- `probe_sql`: SQLAlchemy `SELECT 1` (a SQLite file is opened read-only, never created);
- `probe_redis`, `probe_tcp`, `probe_broker`: a Celery broker or result backend;
- `probe_store`: write, read back and delete a probe object under an artifact root (folder or s3://);
- `probe_mlflow`: MLflow's `/health`, or the database behind it, then listing experiments.

Error messages are summarised by `error_line` (one line, scrubbed of secrets: a driver's error
can quote a URL with its password).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from autopilot.redaction import scrub

__all__ = ["TIMEOUT", "Probe", "Probes", "error_line", "probe_broker", "probe_mlflow", "probe_redis", "probe_sql",
           "probe_store", "probe_tcp"]

TIMEOUT = 5.0  # seconds for any one probe: a doctor that hangs on a dead host helps nobody


@dataclass(frozen=True)
class Probe:
    """What one bounded probe found. `missing`: a local file or folder that does not exist yet."""

    ok: bool
    detail: str = ""
    missing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


def error_line(exc: BaseException) -> str:
    """An exception as one short line (the class and the first line of its message), secrets scrubbed."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {message}", keep_login=True)[:300] if message else type(exc).__name__


def probe_sql(url: str, table: str | None = None, timeout: float = TIMEOUT) -> Probe:
    """Connect with SQLAlchemy and run SELECT 1; with `table`, also say whether that table exists.

    A SQLite file that does not exist is reported as `missing` and never created (connecting
    would create an empty one): it is opened read-only.
    """
    from sqlalchemy.engine import make_url

    from autopilot.adapters.state_db import answers

    try:
        parsed = make_url(url)
    except Exception as exc:
        return Probe(False, f"not a database URL: {error_line(exc)}")
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
        has_table = answers(url, args, table)
    except Exception as exc:
        return Probe(False, f"does not answer: {error_line(exc)}")
    return Probe(True, "answers SELECT 1", extra={"has_table": has_table})


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
        return Probe(False, f"{host}:{port} does not answer: {error_line(exc)}")
    if answer != b"+PONG":
        return Probe(False, f"{host}:{port} answered PING with {answer[:80]!r}")
    return Probe(True, f"{host}:{port} answers PING")


def probe_tcp(host: str, port: int, timeout: float = TIMEOUT) -> Probe:
    """Open (and close) a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Probe(False, f"{host}:{port} does not answer: {error_line(exc)}")
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
    from autopilot.adapters.aws import s3_client as aws_s3_client
    from autopilot.adapters.storage import open_store

    key = f"_doctor/probe-{uuid.uuid4().hex}"
    payload = b"autopilot doctor probe"
    if not root.startswith("s3://"):
        if not Path(root).expanduser().is_dir():
            return Probe(False, f"{root} does not exist", missing=True)
    try:
        if root.startswith("s3://"):
            s3_client = s3_client or aws_s3_client(timeout=TIMEOUT)
        store = open_store(root, s3_client=s3_client)
        store.put(key, payload)
        if store.get(key) != payload:
            return Probe(False, "an object read back differs from the one written")
        _delete(store, key)
    except Exception as exc:
        return Probe(False, f"write/read/delete failed: {error_line(exc)}")
    return Probe(True, "write, read back and delete of a probe object worked")


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
        from autopilot.adapters.registry import list_one_experiment

        list_one_experiment(uri, timeout)  # one short attempt: MLflow would retry a dead server for minutes
    except Exception as exc:
        return Probe(False, f"listing experiments failed: {error_line(exc)}", extra={"listed": False})
    return Probe(True, "lists experiments")


def _http_health(url: str, timeout: float) -> Probe:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except Exception as exc:
        return Probe(False, f"{url} does not answer: {error_line(exc)}")
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
