"""TRANSITIONAL: the module-level registry API, for pipeline/, cli/ and doctor/ only.

Those three folders still call `registry.configure(settings)` and then module-level functions
(and MLflow's fluent API, which `configure` points at the store). Everything else takes a
`Registry` (`registry.connect(settings)`). Each function here delegates to the transitional
default Registry (`store.transitional_default`); the step that converts those folders deletes
this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import runs
from autopilot.adapters.registry.store import connect, transitional_default

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from autopilot.settings import Settings

__all__ = [
    "client",
    "configure",
    "create_version",
    "delete_alias",
    "download",
    "ensure_experiment",
    "find_run",
    "find_version",
    "find_versions",
    "log_sklearn_model",
    "resolve_version",
    "set_alias",
]


def configure(settings: Settings) -> None:
    """TRANSITIONAL (pipeline/, cli/, doctor/): point MLflow's global URIs and the module-level functions at a store.

    What `connect` does (HTTP retry defaults, local folders, credentials out of the URI), then
    MLflow's global tracking and registry URI set to that store, for the fluent API those
    folders still use.
    """
    import mlflow

    store = connect(settings)
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.registry_uri)


def client() -> MlflowClient:
    """TRANSITIONAL (pipeline/, cli/, doctor/): an MLflow client for the configured store."""
    return transitional_default().client


def ensure_experiment(name: str, artifact_root: str) -> str:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.ensure_experiment` of the configured store."""
    return transitional_default().ensure_experiment(name, artifact_root)


def find_run(experiment_id: str, key: str) -> Run | None:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.find_run` of the configured store."""
    return transitional_default().find_run(experiment_id, key)


def find_version(name: str, key: str) -> ModelVersion | None:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.find_version` of the configured store."""
    return transitional_default().find_version(name, key)


def find_versions(name: str, key: str) -> list[ModelVersion]:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.find_versions` of the configured store."""
    return transitional_default().find_versions(name, key)


def create_version(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.create_version` of the configured store."""
    return transitional_default().create_version(name, model_uri, run_id, tags)


def set_alias(name: str, alias: str, version: int) -> None:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.set_alias` of the configured store."""
    transitional_default().set_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.delete_alias` of the configured store."""
    transitional_default().delete_alias(name, alias)


def resolve_version(name: str, spec: str | int) -> ModelVersion:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.resolve_version` of the configured store."""
    return transitional_default().resolve_version(name, spec)


def download(uri: str, dst: Path | None = None) -> Path:
    """TRANSITIONAL (pipeline/, cli/, doctor/): `Registry.download` from the configured store."""
    return transitional_default().download(uri, dst)


def log_sklearn_model(model: object, input_example: Any, signature: Any, allow_pickle: bool,
                      predict_fn: str = "predict") -> Any:
    """TRANSITIONAL (pipeline/, cli/, doctor/): log a fitted sklearn model to MLflow's *active* run.

    The fluent run `configure` pointed at; `Registry.log_sklearn_model` logs to a run by id.

    Raises:
        ValueError: when the model needs an untrusted type and pickle is not allowed.
    """
    return runs.log_sklearn(model, input_example, signature, allow_pickle, predict_fn)
