"""Retiring old versions: aliases removed, marked retired, files optionally deleted.

The decision record and the training run stay (they live on the run, not with the model
files), so a retired version can still be audited. The champion and the rollback target are
never retired: a retired rollback target would turn `autopilot rollback` into an error at the
worst moment.

Retiring runs under the model's promotion lock (`promotion.model_lock`, the lock every alias move
takes, after it settles interrupted moves): the protected versions are read and the versions
retired while no move can install a version or roll back to one. A move that comes after finds
a retired version refused, and a rollback skips it. Crash point: `retention.retiring` (under the
lock, before each version is retired).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import Registry, connect
from autopilot.faults import checkpoint

if TYPE_CHECKING:
    from autopilot.adapters.registry import ModelVersion
    from autopilot.config import ModelConfig
    from autopilot.settings import Settings

__all__ = ["apply_retention", "protected_versions", "retire"]


def protected_versions(settings: Settings, model: str) -> set[int]:
    """Versions that must never retire: the champion and the rollback target."""
    from autopilot.aliases import CHAMPION
    from autopilot.versions.promotion import current, rollback_target

    protected = {current(model, CHAMPION, connect(settings)), rollback_target(settings, model)}
    return {version for version in protected if version is not None}


def retire(settings: Settings, model: str, version: int, actor: str, reason: str,
           delete_artifacts: bool = False) -> dict[str, Any]:
    """Retire one version (under the model's promotion lock).

    Raises:
        ValueError: the version is protected, or no reason was given.
    """
    from autopilot.versions.promotion import model_lock

    if not reason.strip():
        raise ValueError("a reason is required to retire a version")
    registry = connect(settings)
    with model_lock(settings, model):
        result, found = _retire(registry, model, version, actor, reason, protected_versions(settings, model))
    # Files go after the lock is released: a retired version can no longer become a target, and a
    # slow store must not hold up a rollback waiting for the lock.
    result["artifacts_deleted"] = _delete_files(registry, found) if delete_artifacts else False
    return result


def _retire(registry: Registry, model: str, version: int, actor: str, reason: str,
            protected: set[int]) -> tuple[dict[str, Any], ModelVersion]:
    """Retire a version (aliases off, retired tags on) and return what was done and the version.

    The caller holds the model's promotion lock and read `protected` under it; it deletes the
    files, if asked, after releasing the lock.
    """
    from autopilot.versions.promotion import RETIRED_TAG

    if version in protected:
        raise ValueError(f"version {version} of {model} is the champion or the rollback target; it cannot retire")
    found = registry.get_version(model, version)
    aliases = [alias for alias, number in registry.aliases(model).items() if int(number) == version]
    for alias in aliases:
        # Read again just before: a registration (outside this lock) may have moved `challenger` to
        # a new version since, and MLflow deletes an alias by name, wherever it points.
        now = registry.aliases(model).get(alias)
        if now is not None and int(now) == version:
            registry.delete_alias(model, alias)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {RETIRED_TAG: "true", "autopilot.retired_at": stamp, "autopilot.retired_by": actor,
                       "autopilot.retired_reason": reason[:1000]}.items():
        registry.set_version_tag(model, version, key, value)
    return {"model": model, "version": version, "aliases_removed": aliases, "retired_at": stamp}, found


def _delete_files(registry: Registry, version: ModelVersion) -> bool:
    """Delete the model files (the run, its metrics and the decision record stay)."""
    model_id = getattr(version, "model_id", None)
    source = str(version.source or "")
    if not model_id and source.startswith("models:/m-"):  # a logged model registered by its URI
        model_id = source.removeprefix("models:/").split("/")[0]
    if not model_id:
        return False
    registry.delete_logged_model_files(model_id)
    return True


def apply_retention(settings: Settings, cfg: ModelConfig, actor: str) -> list[int]:
    """Retire every version beyond the newest `retention.keep_last`, except protected ones.

    The whole pass holds the model's promotion lock, so no move runs between reading the
    protected versions (champion, rollback target) and retiring the others; model files, when
    `retention.delete_artifacts` asks, are deleted after the lock is released.
    """
    from autopilot.versions.promotion import RETIRED_TAG, model_lock

    registry = connect(settings)
    name = cfg.registered_model_name
    retired: list[int] = []
    to_delete: list[ModelVersion] = []
    with model_lock(settings, name):
        versions = sorted(registry.versions(name), key=lambda v: int(v.version), reverse=True)
        protected = protected_versions(settings, name)
        for old in versions[cfg.retention.keep_last:]:
            number = int(old.version)
            if number in protected or (old.tags or {}).get(RETIRED_TAG) == "true":
                continue
            checkpoint("retention.retiring")
            _, found = _retire(registry, name, number, actor,
                               f"retention policy: keep the last {cfg.retention.keep_last}", protected)
            retired.append(number)
            to_delete.append(found)
    if cfg.retention.delete_artifacts:  # after the lock: a slow store must not hold up a rollback
        for found in to_delete:
            _delete_files(registry, found)
    return retired
