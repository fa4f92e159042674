"""TRANSITIONAL: what is left of the module-level registry API, for two rollback helpers only.

`pipeline.deploy._roll_back` calls `configure(settings)` and `pipeline.deploy._revert_aws` then
`resolve_version(...)` (and reads the previous version's SageMaker record through `configured()`).
Those functions are being moved to their own module elsewhere and keep their bodies until then;
the move converts them to `connect(settings)` and deletes this module. Everything else takes a
`Registry`. Unlike the API it replaces, `configure` touches no MLflow global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopilot.adapters.registry.store import Registry, connect

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from autopilot.settings import Settings

__all__ = ["configure", "configured", "resolve_version"]

_configured: Registry | None = None


def configure(settings: Settings) -> None:
    """TRANSITIONAL (`pipeline.deploy._roll_back`): remember the settings' store for `resolve_version`."""
    global _configured
    _configured = connect(settings)


def configured() -> Registry:
    """TRANSITIONAL (`pipeline.deploy._revert_aws`): the store `configure` last remembered.

    Raises:
        RuntimeError: `configure` was never called in this process.
    """
    if _configured is None:
        raise RuntimeError("registry.configure(settings) was not called: pass a registry.connect(settings) instead")
    return _configured


def resolve_version(name: str, spec: str | int) -> ModelVersion:
    """TRANSITIONAL (`pipeline.deploy._revert_aws`): `Registry.resolve_version` of the configured store."""
    return configured().resolve_version(name, spec)
