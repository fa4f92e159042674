"""Runtime settings: where the services live. Read from the environment, never at import time.

The embedded default keeps everything under one home folder (`.autopilot/` in the project):
MLflow on SQLite, artifacts and snapshots on local disk, the Optuna study on SQLite. In
production each points at a real service (MLflow server or Postgres, S3, Postgres).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CONNECTIONS", "ObjectStoreAccess", "Settings", "connection_id", "quiet_credential_loggers"]

# The environment variable behind each setting (`Settings.sources` names it when it was set).
ENV_VARIABLES = {"mlflow_tracking_uri": "MLFLOW_TRACKING_URI", "mlflow_artifact_root": "AUTOPILOT_MLFLOW_ARTIFACT_ROOT",
                 "artifact_root": "AUTOPILOT_ARTIFACT_ROOT", "optuna_storage": "AUTOPILOT_OPTUNA_STORAGE",
                 "state_db": "AUTOPILOT_STATE_DB", "inference_db": "AUTOPILOT_INFERENCE_DB"}

# In Airflow tasks, the connection that fills each setting when it exists (`autopilot.orchestration.connections`):
# setting -> (default connection id, the environment variable that names another id; empty: none).
CONNECTIONS: dict[str, tuple[str, str]] = {
    "state_db": ("autopilot_state_db", "AUTOPILOT_STATE_DB_CONN_ID"),
    "optuna_storage": ("autopilot_optuna_db", "AUTOPILOT_OPTUNA_DB_CONN_ID"),
    "inference_db": ("autopilot_inference_db", "AUTOPILOT_INFERENCE_DB_CONN_ID"),
    "mlflow_tracking_uri": ("autopilot_mlflow_db", "AUTOPILOT_MLFLOW_DB_CONN_ID"),
    "object_store": ("autopilot_object_store", "AUTOPILOT_OBJECT_STORE_CONN_ID"),
}


def connection_id(setting: str, env: Mapping[str, str]) -> str | None:
    """The Airflow connection id that fills `setting` in tasks (None: turned off by an empty variable)."""
    default, variable = CONNECTIONS[setting]
    return env.get(variable, default).strip() or None


@dataclass(frozen=True)
class ObjectStoreAccess:
    """Credentials and endpoint for `s3://` artifact stores, handed to their S3 client (never to the environment).

    Airflow tasks fill it from the connection `autopilot_object_store` (`autopilot.orchestration.connections`);
    None in `Settings`: boto3's standard chain (environment, profile, instance role).
    """

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Settings:
    """Where autopilot keeps state.

    Attributes:
        home: the folder for embedded state (`AUTOPILOT_HOME`).
        mlflow_tracking_uri: MLflow tracking and registry URI (`MLFLOW_TRACKING_URI`).
        mlflow_artifact_root: where new MLflow experiments store artifacts
            (`AUTOPILOT_MLFLOW_ARTIFACT_ROOT`); a local folder or s3:// URI.
        artifact_root: the artifact store for snapshots and reports (`AUTOPILOT_ARTIFACT_ROOT`).
        optuna_storage: the Optuna RDB storage URL (`AUTOPILOT_OPTUNA_STORAGE`).
        state_db: SQLAlchemy URL of autopilot's own state, e.g. the alias history
            (`AUTOPILOT_STATE_DB`); SQLite under home by default, PostgreSQL in production.
        config_dir: the folder of model config files (`AUTOPILOT_CONFIG_DIR`).
        inference_db: SQLAlchemy URL of the serving inference log (`AUTOPILOT_INFERENCE_DB`);
            SQLite under home by default, PostgreSQL in production.
        signing_key: the key that signs model manifests at registration and is required on every
            load (`AUTOPILOT_SIGNING_KEY`, or a file named by `AUTOPILOT_SIGNING_KEY_FILE`; in Airflow
            tasks also the connection `autopilot_signing_key`); None: manifests are not signed.
        object_store: credentials for `s3://` stores (Airflow tasks: the connection
            `autopilot_object_store`); None: boto3's standard credential chain.
        sources: where each setting came from (`env MLFLOW_TRACKING_URI`, `default`, or
            `airflow connection <id>`), for `autopilot doctor`.
    """

    home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    artifact_root: str
    optuna_storage: str
    state_db: str
    config_dir: Path
    inference_db: str = ""
    signing_key: str | None = field(default=None, repr=False)
    object_store: ObjectStoreAccess | None = field(default=None, compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, defaulting to the embedded setup."""
        env = os.environ if environ is None else environ
        home = Path(env.get("AUTOPILOT_HOME", ".autopilot")).expanduser().resolve()
        config_dir = Path(env.get("AUTOPILOT_CONFIG_DIR", "config/models")).expanduser().resolve()
        return cls(
            home=home,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
            mlflow_artifact_root=env.get("AUTOPILOT_MLFLOW_ARTIFACT_ROOT") or str(home / "mlartifacts"),
            artifact_root=env.get("AUTOPILOT_ARTIFACT_ROOT") or str(home / "artifacts"),
            optuna_storage=env.get("AUTOPILOT_OPTUNA_STORAGE") or f"sqlite:///{home / 'optuna.db'}",
            state_db=env.get("AUTOPILOT_STATE_DB") or f"sqlite:///{home / 'autopilot.db'}",
            config_dir=config_dir,
            inference_db=env.get("AUTOPILOT_INFERENCE_DB") or f"sqlite:///{home / 'inference.db'}",
            signing_key=_signing_key(env),
            sources={name: f"env {variable}" if env.get(variable) else "default"
                     for name, variable in ENV_VARIABLES.items()},
        )

    def ensure_local_dirs(self) -> None:
        """Create the local folders the embedded setup writes to (called by tasks, not on import)."""
        self.home.mkdir(parents=True, exist_ok=True)
        for root in (self.artifact_root, self.mlflow_artifact_root):
            if "://" not in root:
                Path(root).mkdir(parents=True, exist_ok=True)


def _signing_key(env: Mapping[str, str]) -> str | None:
    """The model signing key from the environment or the file it names (a Docker secret, say)."""
    key = env.get("AUTOPILOT_SIGNING_KEY")
    if key:
        return key.strip()
    path = env.get("AUTOPILOT_SIGNING_KEY_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip() or None
    return None


# botocore loggers that print credentials at DEBUG: the signer and the prepared request carry the
# `x-amz-security-token` header, the response parser prints STS answers (AssumeRole,
# AssumeRoleWithWebIdentity) with their SecretAccessKey and SessionToken.
CREDENTIAL_LOGGERS = ("botocore.auth", "botocore.endpoint", "botocore.parsers")


def quiet_credential_loggers() -> None:
    """Keep the loggers that would print AWS credentials at INFO or above, whatever the root level.

    Called where AWS clients are built and at the start of every task and CLI command, so a worker
    running with DEBUG logging never writes a session token into its log.
    """
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET or DEBUG
            logger.setLevel(logging.INFO)
