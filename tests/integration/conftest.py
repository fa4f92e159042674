"""Real services for integration tests: PostgreSQL on 127.0.0.1:5432 and moto's S3 server.

When `AUTOPILOT_REQUIRE_SERVICES=1` (set by `.ci/run`), a missing service fails the tests
instead of skipping them, so CI cannot pass by skipping."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PG_DSN = os.environ.get("AUTOPILOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(reason: str) -> None:
    if os.environ.get("AUTOPILOT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases (dropped afterwards); each call gives a URL.

    A context manager, so fixtures of any scope can use it (`postgres_factory` below; module-scoped
    fixtures of the e2e and reliability suites).
    """
    import psycopg2

    try:
        admin = psycopg2.connect(PG_DSN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _unavailable(f"needs PostgreSQL at {PG_DSN} (set AUTOPILOT_TEST_PG to another server; "
                     f"CI sets AUTOPILOT_REQUIRE_SERVICES=1 and fails instead): {exc}")
    admin.autocommit = True
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://")
    made: list[str] = []

    def make() -> str:
        name = f"autopilot_test_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    try:
        yield make
    finally:
        with admin.cursor() as cur:
            for name in made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_factory() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases (dropped after the test); each call gives a URL."""
    with postgres_databases() as make:
        yield make


@pytest.fixture
def postgres_db(postgres_factory: Callable[[], str]) -> str:
    """One fresh PostgreSQL database URL."""
    return postgres_factory()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


AWS_REGION = "us-east-1"
MODELS_BUCKET = "autopilot-models"


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The project's AWS clients (`adapters.aws.AwsClients`) on a freshly reset moto server, with the
    bucket `autopilot-models`; credentials are dummies and no profile or endpoint leaks in."""
    import urllib.request

    from autopilot.adapters.aws import aws_clients

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": AWS_REGION}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # Assertions like "no model exists" need an empty server, not one other tests wrote to.
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).close()
    clients = aws_clients(AWS_REGION, moto_server)
    clients.s3.create_bucket(Bucket=MODELS_BUCKET)
    yield clients


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 S3 client on moto's server, with a fresh bucket; the same code path as AWS."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    bucket = f"autopilot-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.bucket = bucket  # type: ignore[attr-defined]
    return client
