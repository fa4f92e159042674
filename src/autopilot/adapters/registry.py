"""The one MLflow adapter: tracking set-up, idempotent runs, model logging, versions and aliases.

MLflow's APIs move between majors; every call autopilot makes to MLflow lives here, so one
file absorbs each change. Registry stages are deprecated: versions are addressed by number
or by alias (`challenger`, `champion`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from autopilot.settings import Settings

__all__ = [
    "IDEMPOTENCY_TAG",
    "ManifestError",
    "ModelRef",
    "client",
    "configure",
    "delete_alias",
    "download",
    "ensure_experiment",
    "find_run",
    "find_version",
    "find_versions",
    "is_not_found",
    "log_sklearn_model",
    "resolve_version",
    "set_alias",
    "sha256_manifest",
    "verify_manifest",
]

IDEMPOTENCY_TAG = "autopilot.idempotency_key"
MANIFEST_TAG = "autopilot.sha256_manifest"


class ManifestError(RuntimeError):
    """A model's files failed verification before loading (see `autopilot.adapters.model_loading`)."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version (small: it travels through XCom)."""

    name: str
    version: int
    run_id: str
    model_uri: str
    source: str

    def as_ref(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {"name": self.name, "version": self.version, "run_id": self.run_id,
                "model_uri": self.model_uri, "source": self.source}


# MLflow's client retries a failed HTTP request 7 times with a backoff factor of 2 (about four
# minutes) and waits 120 s for each answer. Inside a task a short, bounded wait and then a failed
# task is better: Airflow retries the task later, and a stuck worker holds no lock for minutes.
# Defaults only: a variable already set in the environment wins.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # retried at once, then after 2 and 4 s (+ up to 1 s jitter)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # seconds per request
}


def configure(settings: Settings) -> None:
    """Point MLflow at the configured tracking and registry store (called inside tasks)."""
    import os

    import mlflow

    for variable, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    settings.ensure_local_dirs()
    uri = _without_credentials(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def _without_credentials(uri: str) -> str:
    """The tracking URI without `user:password@`; the credentials go where MLflow reads them per request.

    MLflow formats its URI into what it prints ("View run ... at: <uri>/#/...", in every task
    log) and into its error messages, so a password in the URI would be in both. It sends basic
    auth from `MLFLOW_TRACKING_USERNAME`/`PASSWORD` instead; variables already set win, as they
    did over the URI's credentials before.
    """
    import os
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def client() -> MlflowClient:
    """An MLflow client for the configured store."""
    from mlflow import MlflowClient

    return MlflowClient()


def ensure_experiment(name: str, artifact_root: str) -> str:
    """Get or create an experiment whose artifacts live under `artifact_root`; return its id."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = artifact_root.rstrip("/") + "/" + name.replace("/", "_")
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except Exception:  # another task created it in between: use theirs
        again = mlflow_client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def find_run(experiment_id: str, key: str) -> Run | None:
    """The newest run carrying an idempotency key, or None."""
    runs = client().search_runs(
        [experiment_id], filter_string=f"tags.`{IDEMPOTENCY_TAG}` = '{_quote(key)}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def find_version(name: str, key: str) -> ModelVersion | None:
    """The model version registered under an idempotency key (the first, if there are several), or None."""
    versions = find_versions(name, key)
    return versions[0] if versions else None


def find_versions(name: str, key: str) -> list[ModelVersion]:
    """Every model version registered under an idempotency key, lowest number first."""
    try:
        versions = client().search_model_versions(
            f"name = '{_quote(name)}' and tags.`{IDEMPOTENCY_TAG}` = '{_quote(key)}'"
        )
    except Exception as exc:
        if is_not_found(exc):  # the registered model does not exist yet
            return []
        raise
    return sorted(versions, key=lambda v: int(v.version))


def _quote(value: str) -> str:
    return value.replace("'", "''")


def requirements() -> list[str]:
    """Pinned requirements for a logged model (inferring them costs seconds per model)."""
    pins = []
    for name in ("scikit-learn", "numpy", "pandas", "scipy", "skops", "cloudpickle"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def skops_types(model: object) -> list[str] | None:
    """The non-default types a skops file of the model needs, or None if any is outside the reviewed list.

    The list is `model_loading.SKOPS_TRUSTED_TYPES`, the same one every load trusts: a model that
    needs another type could be saved but never loaded.
    """
    import skops.io as sio

    from autopilot.adapters.model_loading import SKOPS_TRUSTED_TYPES

    needed: list[str] = sio.get_untrusted_types(data=sio.dumps(model))
    return needed if all(t in SKOPS_TRUSTED_TYPES for t in needed) else None


def log_sklearn_model(model: object, input_example: Any, signature: Any, allow_pickle: bool,
                      predict_fn: str = "predict") -> Any:
    """Log a fitted sklearn model to the active run, as skops when every type is trusted.

    `predict_fn` is what the pyfunc flavor (serving) calls: `predict_proba` for classifiers,
    so a served model answers with probabilities, as the in-process pipeline does.

    Raises:
        ValueError: when the model needs an untrusted type and pickle is not allowed.
    """
    import mlflow.sklearn

    trusted = skops_types(model)
    if trusted is None and not allow_pickle:
        raise ValueError(
            "the model contains types outside autopilot's reviewed skops list and registry.allow_pickle is false; "
            "refusing to store it as a pickle"
        )
    fmt = "skops" if trusted is not None else "cloudpickle"
    return mlflow.sklearn.log_model(
        model, name="model", serialization_format=fmt, skops_trusted_types=trusted,
        signature=signature, input_example=input_example, pip_requirements=requirements(),
        pyfunc_predict_fn=predict_fn,
    )


def sha256_manifest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under a folder, by relative path."""
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        manifest[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return manifest


def verify_manifest(folder: Path, manifest: dict[str, str], ignore: tuple[str, ...] = ()) -> None:
    """Check model files against their manifest before anything loads them.

    `ignore` names files not covered by the manifest (the manifest file itself, inside a package).

    Raises:
        ManifestError: naming each missing, changed or unexpected file.
    """
    actual = {k: v for k, v in sha256_manifest(folder).items() if k not in ignore}
    problems = [f"missing file {name}" for name in manifest if name not in actual]
    problems += [f"changed file {name}" for name in manifest if name in actual and actual[name] != manifest[name]]
    problems += [f"unexpected file {name}" for name in actual if name not in manifest]
    if problems:
        raise ManifestError(f"model files fail SHA-256 verification: {'; '.join(problems)}")


def create_version(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """Register a version, creating the registered model on first use."""
    mlflow_client = client()
    try:
        mlflow_client.get_registered_model(name)
    except Exception as exc:
        if not is_not_found(exc):
            raise
        try:
            mlflow_client.create_registered_model(name, description=f"Managed by autopilot ({name}).")
        except Exception as exc:  # created concurrently by another task
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
    # Through an MLflow *server* a `models:/m-<id>` source must come with its model id, or the
    # server refuses it (INVALID_PARAMETER_VALUE); a database tracking URI does not check.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    return mlflow_client.create_model_version(name, model_uri, run_id, tags=tags, model_id=model_id)


def set_alias(name: str, alias: str, version: int) -> None:
    """Point an alias at a version."""
    client().set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    """Remove an alias (MLflow removes it by name, wherever it points: read it first, under a lock)."""
    client().delete_registered_model_alias(name, alias)


def resolve_version(name: str, spec: str | int) -> ModelVersion:
    """A version by number or alias (`champion`, `challenger`, `latest`)."""
    mlflow_client = client()
    text = str(spec)
    if text.isdigit():
        return mlflow_client.get_model_version(name, text)
    if text == "latest":
        versions = mlflow_client.search_model_versions(f"name = '{_quote(name)}'", order_by=["version_number DESC"],
                                                       max_results=1)
        if not versions:
            raise LookupError(f"model {name!r} has no versions")
        return versions[0]
    try:
        return mlflow_client.get_model_version_by_alias(name, text)
    except Exception as exc:
        if not is_not_found(exc, alias=True):
            raise  # an outage is an error that retries, never "no such alias"
        known = _known_aliases(name)
        hint = f"; its aliases: {known}" if known else ""
        raise LookupError(f"model {name!r} has no version with alias {text!r}{hint}") from exc


def _known_aliases(name: str) -> str:
    try:
        aliases = client().get_registered_model(name).aliases or {}
    except Exception as exc:
        if is_not_found(exc):  # the model itself does not exist
            return ""
        raise
    return ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items()))


def is_not_found(exc: BaseException, alias: bool = False) -> bool:
    """Whether an MLflow error says the model, version (or, with `alias`, the alias) does not exist.

    Everything else (a refused connection, a 5xx, a timeout, a database error) is an outage that
    must fail the task so that it retries, never be read as "no champion" or "no such alias".
    MLflow reports a missing alias as INVALID_PARAMETER_VALUE, so `alias=True` accepts that code too.
    """
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (alias and code == "INVALID_PARAMETER_VALUE")


def download(uri: str, dst: Path | None = None) -> Path:
    """Download artifacts (a model's folder) to a local path, under `dst` when given; nothing is deserialized.

    Loading goes through `autopilot.adapters.model_loading`, which verifies before it deserializes. Without
    `dst` MLflow picks a temporary folder it never removes (and for a local store returns the
    stored folder itself): loads pass their own private folder.
    """
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst) if dst is not None else None))
