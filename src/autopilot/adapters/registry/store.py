"""One MLflow store (tracking and model registry), reached through its own client: no global state.

`connect(settings)` gives the `Registry` of the store the settings name. It holds an
`MlflowClient` built with that store's tracking and registry URIs, so every call goes where the
caller's settings say, whatever another caller in the same process was pointed at. Registry
stages are deprecated: versions are addressed by number or by alias (`challenger`, `champion`).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from autopilot.adapters.registry import runs
from autopilot.adapters.registry.common import IDEMPOTENCY_TAG, is_not_found, quote

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from autopilot.settings import Settings

__all__ = ["MLFLOW_HTTP_DEFAULTS", "Registry", "connect", "list_one_experiment", "without_credentials"]

# MLflow's client retries a failed HTTP request 7 times with a backoff factor of 2 (about four
# minutes) and waits 120 s for each answer. Inside a task a short, bounded wait and then a failed
# task is better: Airflow retries the task later, and a stuck worker holds no lock for minutes.
# Defaults only: a variable already set in the environment wins.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # retried at once, then after 2 and 4 s (+ up to 1 s jitter)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # seconds per request
}


class Registry:
    """One MLflow tracking and registry store; every method goes through this store's own client."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        # The raw client, for this package (and tests); callers use the methods.
        self.client: MlflowClient = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri!r})"  # the URI carries no credentials (`without_credentials`)

    # ------------------------------------------------------------------------ experiments and runs

    def ensure_experiment(self, name: str, artifact_root: str) -> str:
        """Get or create an experiment whose artifacts live under `artifact_root`; return its id."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = artifact_root.rstrip("/") + "/" + name.replace("/", "_")
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:  # another task created it in between: use theirs
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def find_run(self, experiment_id: str, key: str) -> Run | None:
        """The newest run carrying an idempotency key, or None."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{IDEMPOTENCY_TAG}` = '{quote(key)}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        return found[0] if found else None

    def get_run(self, run_id: str) -> Run:
        """A run (its info, metrics, params, tags and inputs)."""
        return self.client.get_run(run_id)

    def start_run(self, experiment_id: str, *, run_id: str | None = None, run_name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> AbstractContextManager[runs.RunHandle]:
        """Start a run (or resume `run_id`) and yield its handle; it ends FINISHED, or FAILED on an error."""
        return runs.started_run(self, experiment_id, run_id=run_id, run_name=run_name, tags=tags)

    def run(self, run_id: str) -> runs.RunHandle:
        """A handle that logs to an existing run without starting or ending it."""
        return runs.RunHandle(self, run_id)

    # ------------------------------------------------------------------------ artifacts

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """The artifact paths directly under `path` of a run (an unreachable store raises)."""
        return [str(info.path) for info in self.client.list_artifacts(run_id, path)]

    def download_artifacts(self, run_id: str, path: str, dst: Path | None = None) -> Path:
        """Download a run's artifact (file or folder) to a local path, under `dst` when given."""
        import mlflow

        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(dst) if dst is not None else None,
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri,
        ))

    def download(self, uri: str, dst: Path | None = None) -> Path:
        """Download artifacts (a model's folder) to a local path, under `dst` when given; nothing is deserialized.

        Loading goes through `autopilot.adapters.registry.model_loading`, which verifies before it deserializes. Without
        `dst` MLflow picks a temporary folder it never removes (and for a local store returns the
        stored folder itself): loads pass their own private folder.
        """
        import mlflow
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

        if ModelsArtifactRepository.is_models_uri(uri):
            return self._download_model(uri, dst)
        return Path(mlflow.artifacts.download_artifacts(
            uri, dst_path=str(dst) if dst is not None else None,
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri,
        ))

    def _download_model(self, uri: str, dst: Path | None) -> Path:
        """A `models:/` URI's files. MLflow looks such a URI up in the *global* registry, so it is looked up here.

        A logged model (`models:/m-<id>`, what versions point at) is found through this store's
        client and its files downloaded as MLflow would; a registered name, version or alias goes
        through MLflow's own download (it adds a metadata file) under `runs.fluent_uris`.
        """
        import mlflow
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        base, path = ModelsArtifactRepository.split_models_uri(uri)
        found = get_model_name_and_version(self.client, base)
        if len(found) != 1:
            with runs.fluent_uris(self):
                return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst) if dst is not None else None))
        if dst is not None:
            dst.mkdir(parents=True, exist_ok=True)
        location = self.client.get_logged_model(found[0]).artifact_location
        repository = get_artifact_repository(location, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return Path(repository.download_artifacts(path, dst_path=str(dst) if dst is not None else None))

    def load_dict(self, run_id: str, path: str) -> Any:
        """A run's JSON artifact, parsed (as `mlflow.artifacts.load_dict` reads it, from this store).

        Raises:
            MlflowException: the file is not UTF-8 or not JSON (and whatever the download raises).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        uri = f"runs:/{run_id}/{path}"
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download(uri, Path(tmp))
            try:
                return json.loads(local.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise MlflowException(f"Artifact {uri!r} is not valid UTF-8.", BAD_REQUEST) from exc
            except json.JSONDecodeError as exc:
                raise MlflowException("Unable to form a JSON object from file content", BAD_REQUEST) from exc

    def delete_logged_model_files(self, model_id: str) -> None:
        """Delete a logged model's files (its run, metrics and records stay)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        location = self.client.get_logged_model(model_id).artifact_location
        get_artifact_repository(location, tracking_uri=self.tracking_uri,
                                registry_uri=self.registry_uri).delete_artifacts()

    # ------------------------------------------------------------------------ versions and aliases

    def find_version(self, name: str, key: str) -> ModelVersion | None:
        """The model version registered under an idempotency key (the first, if there are several), or None."""
        found = self.find_versions(name, key)
        return found[0] if found else None

    def find_versions(self, name: str, key: str) -> list[ModelVersion]:
        """Every model version registered under an idempotency key, lowest number first."""
        try:
            found = self.client.search_model_versions(
                f"name = '{quote(name)}' and tags.`{IDEMPOTENCY_TAG}` = '{quote(key)}'"
            )
        except Exception as exc:
            if is_not_found(exc):  # the registered model does not exist yet
                return []
            raise
        return sorted(found, key=lambda v: int(v.version))

    def create_version(self, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """Register a version, creating the registered model on first use."""
        try:
            self.client.get_registered_model(name)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            try:
                self.client.create_registered_model(name, description=f"Managed by autopilot ({name}).")
            except Exception as exc:  # created concurrently by another task
                if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                    raise
        # Through an MLflow *server* a `models:/m-<id>` source must come with its model id, or the
        # server refuses it (INVALID_PARAMETER_VALUE); a database tracking URI does not check.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        # A database registry looks the logged model up through the *global* tracking URI (MLflow 3.17).
        with runs.fluent_uris(self):
            return self.client.create_model_version(name, model_uri, run_id, tags=tags, model_id=model_id)

    def get_version(self, name: str, version: int | str) -> ModelVersion:
        """A version by number (MLflow's not-found error when it does not exist)."""
        return self.client.get_model_version(name, str(version))

    def versions(self, name: str, *, newest_first: bool = False, limit: int | None = None) -> list[ModelVersion]:
        """The versions of a registered model (MLflow's order unless `newest_first`; at most `limit`)."""
        options: dict[str, Any] = {}
        if newest_first:
            options["order_by"] = ["version_number DESC"]
        if limit is not None:
            options["max_results"] = limit
        return list(self.client.search_model_versions(f"name = '{quote(name)}'", **options))

    def resolve_version(self, name: str, spec: str | int) -> ModelVersion:
        """A version by number or alias (`champion`, `challenger`, `latest`)."""
        text = str(spec)
        if text.isdigit():
            return self.client.get_model_version(name, text)
        if text == "latest":
            found = self.versions(name, newest_first=True, limit=1)
            if not found:
                raise LookupError(f"model {name!r} has no versions")
            return found[0]
        try:
            return self.client.get_model_version_by_alias(name, text)
        except Exception as exc:
            if not is_not_found(exc, alias=True):
                raise  # an outage is an error that retries, never "no such alias"
            known = self._known_aliases(name)
            hint = f"; its aliases: {known}" if known else ""
            raise LookupError(f"model {name!r} has no version with alias {text!r}{hint}") from exc

    def _known_aliases(self, name: str) -> str:
        try:
            found = self.aliases(name)
        except Exception as exc:
            if is_not_found(exc):  # the model itself does not exist
                return ""
            raise
        return ", ".join(f"{alias} -> {version}" for alias, version in sorted(found.items()))

    def aliases(self, name: str) -> dict[str, int]:
        """A registered model's aliases and the version number each points at (MLflow's not-found error without it)."""
        found = self.client.get_registered_model(name).aliases or {}
        return {alias: int(version) for alias, version in found.items()}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point an alias at a version."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias (MLflow removes it by name, wherever it points: read it first, under a lock)."""
        self.client.delete_registered_model_alias(name, alias)

    def set_version_tag(self, name: str, version: int | str, key: str, value: str) -> None:
        """Set one tag on a version."""
        self.client.set_model_version_tag(name, str(version), key, value)

    def delete_version(self, name: str, version: int | str) -> None:
        """Delete a version from the registry (its run and files stay)."""
        self.client.delete_model_version(name, str(version))

    # ------------------------------------------------------------------------ models

    def log_sklearn_model(self, run_id: str, model: object, input_example: Any, signature: Any, allow_pickle: bool,
                          predict_fn: str = "predict") -> Any:
        """Log a fitted sklearn model to a run of this store, as skops when every type is trusted.

        `predict_fn` is what the pyfunc flavor (serving) calls: `predict_proba` for classifiers,
        so a served model answers with probabilities, as the in-process pipeline does. MLflow offers
        this only through its fluent API: see `runs.log_sklearn_to_run`.

        Raises:
            ValueError: when the model needs an untrusted type and pickle is not allowed.
        """
        return runs.log_sklearn_to_run(self, run_id, model, input_example, signature, allow_pickle, predict_fn)


def list_one_experiment(tracking_uri: str, timeout: float) -> None:
    """List one experiment of the store at `tracking_uri` with one short attempt (`autopilot doctor`).

    MLflow retries a dead server for minutes by default; a probe wants one attempt. The retry
    settings are MLflow's environment variables, so they are set for this call and put back.

    Raises:
        Exception: whatever MLflow raised: the store could not be listed.
    """
    from mlflow import MlflowClient

    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout * 2))}
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def without_credentials(uri: str) -> str:
    """The tracking URI without `user:password@`; the credentials go where MLflow reads them per request.

    MLflow formats its URI into what it prints ("View run ... at: <uri>/#/...", in every task
    log) and into its error messages, so a password in the URI would be in both. It sends basic
    auth from `MLFLOW_TRACKING_USERNAME`/`PASSWORD` instead; variables already set win, as they
    did over the URI's credentials before.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
    if parts.password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def connect(settings: Settings) -> Registry:
    """The `Registry` of the store the settings name (one per store and process, reused).

    Sets the bounded HTTP retry defaults (`MLFLOW_HTTP_DEFAULTS`) where the environment sets
    none, creates the local folders of the embedded setup, and keeps credentials out of the URI.
    """
    for variable, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    settings.ensure_local_dirs()
    uri = without_credentials(settings.mlflow_tracking_uri)
    return _registry_for(uri, uri)


@functools.lru_cache(maxsize=32)
def _registry_for(tracking_uri: str, registry_uri: str) -> Registry:
    return Registry(tracking_uri, registry_uri)

