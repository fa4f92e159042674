"""The one MLflow adapter: a store's runs, model versions and aliases, through an explicit `Registry`.

MLflow's APIs move between majors; every call autopilot makes to MLflow lives in this package
(`model_loading` included: the door every model loads through), so one place absorbs each change.
No other module imports mlflow (`tests/unit/test_mlflow_imports.py`).

- `connect(settings) -> Registry` (`store.py`): one store, through a client built with its URIs.
  Versions and aliases (`resolve_version`, `set_alias`, `create_version`, ...), runs
  (`start_run`, `find_run`, `get_run`), artifacts (`download`, `load_dict`, `list_artifacts`).
- `RunHandle` (`runs.py`): logs to one run by id; `model_signature` and `pandas_dataset` build
  what a logged model and a run input need; `fluent_uris` is the one place MLflow's global URIs
  are touched (for the model log, which MLflow offers only fluently).
- `common.py`: tag names, `ModelRef`, `is_not_found`/`is_mlflow_error`, SHA-256 manifests.

MLflow's types callers name in hints (`ModelVersion`, `Run`, `MlflowException`) are importable
from here, so callers never import mlflow; they resolve lazily, keeping this import cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry.common import (
    IDEMPOTENCY_TAG,
    MANIFEST_TAG,
    ManifestError,
    ModelRef,
    is_mlflow_error,
    is_not_found,
    requirements,
    sha256_manifest,
    skops_types,
    verify_manifest,
)
from autopilot.adapters.registry.runs import RunHandle, model_signature, pandas_dataset
from autopilot.adapters.registry.store import MLFLOW_HTTP_DEFAULTS, Registry, connect, list_one_experiment

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException

__all__ = [
    "IDEMPOTENCY_TAG",
    "MANIFEST_TAG",
    "MLFLOW_HTTP_DEFAULTS",
    "ManifestError",
    "MlflowException",
    "ModelRef",
    "ModelVersion",
    "Registry",
    "Run",
    "RunHandle",
    "connect",
    "list_one_experiment",
    "is_mlflow_error",
    "is_not_found",
    "model_signature",
    "pandas_dataset",
    "requirements",
    "sha256_manifest",
    "skops_types",
    "verify_manifest",
]

# MLflow's types, imported on first use (importing mlflow costs a second or more).
_LAZY_TYPES = {
    "ModelVersion": ("mlflow.entities.model_registry", "ModelVersion"),
    "Run": ("mlflow.entities", "Run"),
    "MlflowException": ("mlflow.exceptions", "MlflowException"),
}


def __getattr__(name: str) -> Any:
    """MLflow's `ModelVersion`, `Run` and `MlflowException`, resolved when first asked for."""
    if name not in _LAZY_TYPES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY_TYPES[name]
    return getattr(importlib.import_module(module), attribute)
