"""What the registry adapter's parts share: tag names, the model reference, error checks, model files.

Nothing here talks to a store: these are plain values and checks on local files.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "IDEMPOTENCY_TAG",
    "MANIFEST_TAG",
    "ManifestError",
    "ModelRef",
    "is_mlflow_error",
    "is_not_found",
    "quote",
    "requirements",
    "sha256_manifest",
    "skops_io",
    "skops_types",
    "verify_manifest",
]

IDEMPOTENCY_TAG = "autopilot.idempotency_key"
MANIFEST_TAG = "autopilot.sha256_manifest"


class ManifestError(RuntimeError):
    """A model's files failed verification before loading (see `autopilot.adapters.registry.model_loading`)."""


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


def is_not_found(exc: BaseException, alias: bool = False) -> bool:
    """Whether an MLflow error says the model, version (or, with `alias`, the alias) does not exist.

    Everything else (a refused connection, a 5xx, a timeout, a database error) is an outage that
    must fail the task so that it retries, never be read as "no champion" or "no such alias".
    MLflow reports a missing alias as INVALID_PARAMETER_VALUE, so `alias=True` accepts that code too.
    """
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (alias and code == "INVALID_PARAMETER_VALUE")


def is_mlflow_error(exc: BaseException) -> bool:
    """Whether an error was raised by MLflow itself (an `MlflowException`: a refused input, a store's answer)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException)


def quote(value: str) -> str:
    """A value quoted for an MLflow search filter (inside single quotes)."""
    return value.replace("'", "''")


def requirements(model: object | None = None) -> list[str]:
    """Pinned requirements for a logged model (inferring them costs seconds per model); LightGBM
    is pinned only for a model that holds a LightGBM estimator (a pipeline's steps are looked at)."""
    pins = []
    names = ["scikit-learn", "numpy", "pandas", "scipy", "skops", "cloudpickle"]
    if model is not None and _holds_lightgbm(model):
        names.append("lightgbm")
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def _holds_lightgbm(model: object) -> bool:
    steps = [step for _, step in getattr(model, "steps", [])] or [model]
    return any(type(step).__module__.startswith("lightgbm") for step in steps)


def skops_io() -> Any:
    """`skops.io`, imported (the first time) without the flood of Airflow deprecation warnings it causes.

    skops.io, at import, names the module of every scipy.special ufunc by looking the name up in
    every loaded module. In an Airflow task process five of those modules are Airflow's
    deprecated-import shims, which warn on each lookup: 1,160 warnings, each a line in the task
    log through the task supervisor, about 18 s of a training task on a busy 2-core machine, in
    every task that saves or loads a model. Only those warnings are silenced, only during that import.
    """
    module = sys.modules.get("skops.io")
    if module is not None:
        return module
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The `airflow\.", category=FutureWarning)
        import skops.io
    return skops.io


def skops_types(model: object) -> list[str] | None:
    """The non-default types a skops file of the model needs, or None if any is outside the reviewed list.

    The list is `model_loading.SKOPS_TRUSTED_TYPES`, the same one every load trusts: a model that
    needs another type could be saved but never loaded.
    """
    from autopilot.adapters.registry.model_loading import SKOPS_TRUSTED_TYPES

    sio = skops_io()
    needed: list[str] = sio.get_untrusted_types(data=sio.dumps(model))
    return needed if all(t in SKOPS_TRUSTED_TYPES for t in needed) else None


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
