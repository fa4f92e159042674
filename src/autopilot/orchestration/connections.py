"""A task's database URLs and object-store credentials from Airflow connections.

Like Slack (`alerts.slack_conn_id`) and AWS deployment (`deployment.aws.aws_conn_id`), the state
that autopilot's tasks reach can be configured as Airflow connections, so that no password sits
in a worker's environment: Airflow's secrets backends (a vault, the metadata DB, `AIRFLOW_CONN_*`)
hold them, and Airflow masks a connection's password in every task log.

| setting | connection id (default) | id overridden by | connection |
|---|---|---|---|
| `state_db` | `autopilot_state_db` | `AUTOPILOT_STATE_DB_CONN_ID` | `postgres` (or any SQLAlchemy dialect) |
| `optuna_storage` | `autopilot_optuna_db` | `AUTOPILOT_OPTUNA_DB_CONN_ID` | same |
| `inference_db` | `autopilot_inference_db` | `AUTOPILOT_INFERENCE_DB_CONN_ID` | same |
| `mlflow_tracking_uri` (a database) | `autopilot_mlflow_db` | `AUTOPILOT_MLFLOW_DB_CONN_ID` | same |
| object store (`s3://`) | `autopilot_object_store` | `AUTOPILOT_OBJECT_STORE_CONN_ID` | `aws` (extra `endpoint_url`) |

A database connection becomes a SQLAlchemy URL: `postgres` → `postgresql+psycopg2`, `mysql` →
`mysql+pymysql`, `sqlite` → the file in `host`; the extra `sqlalchemy_scheme` names another driver.
login, password, host, port and schema (the database name) fill the rest. A connection that
exists wins over the environment variable; one that does not leaves the environment's value.
Setting an id variable to the empty string turns that connection off. The object store's
credentials reach the artifact store's S3 client (`Settings.object_store`), never the process
environment. Which source each setting came from is in `Settings.sources` (the doctor shows it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["airflow_settings", "connection_settings", "database_url"]

log = logging.getLogger(__name__)

SCHEMES = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql",
           "sqlite": "sqlite"}


def database_url(conn_type: str, host: str | None, login: str | None = None, password: str | None = None,
                 port: int | None = None, schema: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """The SQLAlchemy URL of a database connection's fields (pure).

    Raises:
        ValueError: a connection type with no known SQLAlchemy dialect and no `sqlalchemy_scheme` extra.
    """
    from sqlalchemy.engine import URL

    scheme = str((extra or {}).get("sqlalchemy_scheme") or SCHEMES.get((conn_type or "").lower(), ""))
    if not scheme:
        raise ValueError(f"connection type {conn_type!r} is not a database autopilot knows; set the extra "
                         "'sqlalchemy_scheme' (e.g. 'postgresql+psycopg2')")
    if scheme.startswith("sqlite"):
        return f"{scheme}:///{host or schema or ''}"
    url = URL.create(scheme, username=login or None, password=password or None, host=host or None,
                     port=port or None, database=schema or None)
    return url.render_as_string(hide_password=False)


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _object_store(conn_id: str) -> Any:
    """The S3 access of an `aws` connection (through the Amazon provider: keys, role assumption, profiles)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from autopilot.settings import ObjectStoreAccess

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    credentials = hook.get_credentials()
    return ObjectStoreAccess(access_key_id=credentials.access_key, secret_access_key=credentials.secret_key,
                             session_token=credentials.token, endpoint_url=hook.conn_config.endpoint_url,
                             region=hook.conn_region_name)


def connection_settings(settings: Settings, env: Mapping[str, str] | None = None) -> Settings:
    """`settings` with each database URL and the object store taken from its Airflow connection, where one exists.

    Only connection ids and which settings they fill are logged, never a URL or a key.
    """
    from autopilot.settings import CONNECTIONS, connection_id

    env = os.environ if env is None else env
    changes: dict[str, Any] = {}
    sources = dict(settings.sources)
    for name in [setting for setting in CONNECTIONS if setting != "object_store"]:
        conn_id = connection_id(name, env)
        conn = _connection(conn_id) if conn_id else None
        if conn is None:
            continue
        changes[name] = database_url(conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema,
                                     conn.extra_dejson)
        sources[name] = f"airflow connection {conn_id}"
    store_id = connection_id("object_store", env)
    if store_id and _connection(store_id) is not None:
        changes["object_store"] = _object_store(store_id)
        sources["object_store"] = f"airflow connection {store_id}"
    if not changes:
        return settings
    log.info("settings from Airflow connections: %s", ", ".join(f"{k} <- {sources[k]}" for k in sorted(changes)))
    return dataclasses.replace(settings, sources=sources, **changes)


def airflow_settings() -> Settings:
    """The environment's settings with the connections applied, for callbacks that must never raise.

    The notifier and the Slack outbox run in Airflow callbacks (a worker, the DAG processor): they
    must find the same state database as the tasks. A connection that cannot be read there (a
    secrets backend down) leaves the environment's settings, with a warning naming the error type.
    """
    from autopilot.settings import Settings

    settings = Settings.from_env()
    try:
        return connection_settings(settings)
    except Exception as exc:  # a callback never fails over its settings
        log.warning("settings from Airflow connections unavailable (%s); using the environment's",
                    type(exc).__name__)
        return settings
