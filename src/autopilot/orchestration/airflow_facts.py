"""Airflow's side of `autopilot doctor`: its effective configuration, metadata DB and connections.

Everything is read in this process through Airflow's own code, so the answer is the one every
Airflow component started with the same environment gets: `airflow.configuration.conf` for
the effective configuration (airflow.cfg, `AIRFLOW__*` variables, `_cmd`/`_secret` options,
provider defaults), `airflow.settings.initialize()` to build its database engines,
`airflow.utils.db.check_migrations` for the schema, and the secrets backends of
`airflow.configuration.ensure_secrets_loaded()` (a configured backend, then `AIRFLOW_CONN_*`
variables, then the metadata DB: the order `Connection.get_connection_from_secrets` asks them in)
for connections. Run the doctor with the environment of the Airflow components to check.

Airflow is imported with its start-up side effects deferred (`_AIRFLOW__AS_LIBRARY`), and then
`settings.initialize()` is called explicitly: when the engines cannot be built (a missing
driver, a bad URL), the configuration is still readable and the failure becomes a finding
instead of an ImportError. Nothing here returns a secret: a connection's password is reduced
to whether it has one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from autopilot.doctor.checks import AirflowFacts, ConnectionFacts
from autopilot.doctor.probes import Probe, error_line, probe_sql

__all__ = ["gather_airflow_facts", "lookup_connection"]

_SOURCES = {"EnvironmentVariablesBackend": "an AIRFLOW_CONN_* variable", "MetastoreBackend": "the metadata DB"}


def _import_conf() -> Any:
    """`airflow.configuration.conf`, importing Airflow without running `settings.initialize()`."""
    if "airflow.configuration" in sys.modules:
        from airflow.configuration import conf

        return conf
    before = os.environ.get("_AIRFLOW__AS_LIBRARY")
    os.environ["_AIRFLOW__AS_LIBRARY"] = "1"  # read only by airflow/__init__.py, at import
    try:
        from airflow.configuration import conf
    finally:
        if before is None:
            os.environ.pop("_AIRFLOW__AS_LIBRARY", None)
        else:
            os.environ["_AIRFLOW__AS_LIBRARY"] = before
    return conf


def _initialize() -> str | None:
    """Run Airflow's start-up (logging, ORM, secrets masker) unless it ran; the error if it fails."""
    from airflow import settings

    if settings.engine is not None:  # already initialized in this process
        return None
    try:
        settings.initialize()
    except Exception as exc:
        return error_line(exc)
    return None


def _auth_manager_installed(path: str) -> bool:
    module = path.rsplit(".", 1)[0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _config_facts(conf: Any) -> dict[str, Any]:
    """The configuration values the checks judge."""
    from airflow.configuration import AIRFLOW_HOME

    passwords = conf.get("core", "simple_auth_manager_passwords_file", fallback=None) or \
        os.path.join(AIRFLOW_HOME, "simple_auth_manager_passwords.json.generated")
    auth_manager = conf.get("core", "auth_manager")
    return {
        "executor": conf.get("core", "executor"),
        "sql_alchemy_conn": conf.get("database", "sql_alchemy_conn"),
        "auth_manager": auth_manager,
        "auth_manager_installed": _auth_manager_installed(auth_manager),
        "all_admins": conf.getboolean("core", "simple_auth_manager_all_admins"),
        "users": tuple(conf.getlist("core", "simple_auth_manager_users")),
        "passwords_file": passwords,
        "broker_url": conf.get("celery", "broker_url", fallback=None),
        # Unset, the Celery provider uses db+<sql_alchemy_conn>: report it as not set, not as that.
        "result_backend": conf.get("celery", "result_backend") if conf.has_option("celery", "result_backend")
        else None,
    }


def _migration_error() -> str | None:
    """None when the metadata DB's schema is at this Airflow's heads (`airflow db check-migrations`)."""
    from airflow.utils.db import check_migrations

    try:
        check_migrations(timeout=1)
    except Exception as exc:
        return error_line(exc)
    return None


def lookup_connection(conn_id: str, use_metastore: bool = True) -> ConnectionFacts:
    """Ask Airflow's secrets backends for a connection, in Airflow's order; first answer wins.

    The same walk as `Connection.get_connection_from_secrets`, which hides why a backend did
    not answer; here each failure is kept. `use_metastore=False` skips the metadata DB (when
    it is known to be unusable, asking it would only hang or fail).
    """
    from airflow.configuration import ensure_secrets_loaded
    from airflow.secrets.metastore import MetastoreBackend

    errors: list[str] = []
    for backend in ensure_secrets_loaded():
        source = _SOURCES.get(type(backend).__name__, f"secrets backend {type(backend).__name__}")
        if isinstance(backend, MetastoreBackend) and not use_metastore:
            errors.append("the metadata DB was not asked (it is not usable)")
            continue
        try:
            conn = backend.get_connection(conn_id=conn_id)
            if conn is None:
                continue
            return ConnectionFacts(conn_id, True, conn.conn_type, source, bool(conn.host), bool(conn.login),
                                   bool(conn.password), tuple(errors))
        except PermissionError as exc:  # AirflowSecretsBackendAccessDenied: Airflow asks no further backend
            errors.append(f"{source}: {error_line(exc)}")
            break
        except Exception as exc:  # Airflow goes on to the next backend; so do we, keeping the reason
            errors.append(f"{source}: {error_line(exc)}")
    return ConnectionFacts(conn_id, False, errors=tuple(errors))


def gather_airflow_facts(conn_ids: Sequence[str]) -> AirflowFacts:
    """Read Airflow's configuration, probe its metadata DB, and look up `conn_ids`."""
    try:
        values = _config_facts(_import_conf())
    except Exception as exc:
        return AirflowFacts(config_error=error_line(exc))
    init_error = _initialize()
    probe: Probe | None = None
    migration_error = None
    if init_error is None:
        probe = probe_sql(values["sql_alchemy_conn"])
        if probe.ok:
            migration_error = _migration_error()
    usable = init_error is None and probe is not None and probe.ok and migration_error is None
    connections = {c: lookup_connection(c, use_metastore=usable) for c in conn_ids}
    return AirflowFacts(init_error=init_error, metadata_db=probe, migration_error=migration_error,
                        connections=connections, **values)
