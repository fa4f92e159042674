"""The one door through which every registered model is loaded: verify everything, then deserialize.

Gates, the infra probe, serving (registry alias or container package), monitoring, rollout,
profiling and `reproduce` all load models here, and no other module deserializes a model.
Before a single byte is deserialized:

1. **Signature** (when a signing key is configured: `AUTOPILOT_SIGNING_KEY`, or the Airflow
   connection `autopilot_signing_key` in tasks): the version's manifest must carry a valid
   HMAC-SHA-256 made with that key at registration. The manifest is only a tag on the same MLflow
   version, so without a key anyone who can write to MLflow can register a version with a
   matching manifest; with a key, write access to MLflow alone cannot put code on a serving host.
2. **Manifest**: the files are copied into a private folder and the copy is checked against the
   SHA-256 manifest (missing, changed, unexpected files), so what loads is what was checked.
3. **Format**: the sklearn flavor saved with skops; anything else (pickle, cloudpickle, a custom
   pyfunc loader) is refused unless the model's config sets `registry.allow_pickle`.
4. **Types**: skops is given the trusted types from `SKOPS_TRUSTED_TYPES`, a list this project owns
   and reviews, never the list stored in the model's own MLmodel (which a crafted model controls).

MLflow's own loaders are never called: MLflow trusts the MLmodel file's type list and unpickles by
default, so `harden_process` switches `MLFLOW_ALLOW_PICKLE_DESERIALIZATION` off in every process
that loads a model (a stray `mlflow.sklearn.load_model` then refuses), and the pyfunc wrapper that
enforces the signature is built here around the model loaded here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import MANIFEST_TAG, ManifestError, verify_manifest
from autopilot.adapters.registry.common import skops_io

if TYPE_CHECKING:
    from autopilot.adapters.registry import ModelVersion, Registry
    from autopilot.config import ModelConfig
    from autopilot.settings import Settings

__all__ = [
    "PACKAGE_MANIFEST",
    "PACKAGE_SIGNATURE",
    "SIGNATURE_TAG",
    "SKOPS_TRUSTED_TYPES",
    "LoadPolicy",
    "ModelRefused",
    "VerifiedFiles",
    "harden_process",
    "load_pyfunc",
    "load_sklearn",
    "load_version",
    "manifest_tags",
    "open_package",
    "open_version",
    "sign_manifest",
    "sign_version",
    "verify_folder",
]

SIGNATURE_TAG = "autopilot.manifest_signature"
SIGNATURE_SCHEME = "hmac-sha256:v1:"
# A container package carries its manifest (and its signature) as files beside the model.
PACKAGE_MANIFEST = "autopilot-manifest.json"
PACKAGE_SIGNATURE = "autopilot-manifest.sig"
MIN_KEY_LENGTH = 32
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"

# The non-default types a skops file of ours may contain, reviewed one by one. skops builds objects
# only from types it trusts (its defaults: plain containers and scikit-learn estimators); these
# are the others that the five model families need (tests/unit/test_model_loading.py fits every
# family, encoding and task and fails when a new scikit-learn release needs a type not listed
# here, so a new type is reviewed before any model needs it).
SKOPS_TRUSTED_TYPES: frozenset[str] = frozenset({
    "numpy.dtype",  # the dtype of a fitted array: data, no behaviour
    "sklearn.tree._tree.Tree",  # fitted trees of random forests and extra trees
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # fitted HGB trees
    # TargetEncoder keeps the cross-fitting splitter it was fitted with.
    "sklearn.model_selection._split.KFold",
    "sklearn.model_selection._split.StratifiedKFold",
    # HGB with native categoricals stores partial(check_array); skops builds a partial without
    # calling it, and only around a function that is itself trusted (this one).
    "functools.partial",
    "sklearn.utils.validation.check_array",
    # LightGBM's sklearn estimators, and the Booster they hold. The Booster's state is plain values
    # plus its model in LightGBM's own text format, which `Booster.__setstate__` parses in C
    # (LGBM_BoosterLoadModelFromString): a model file, not code. Its params are an OrderedDict.
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "lightgbm.basic.Booster",
    "collections.OrderedDict",
})


class ModelRefused(ManifestError):
    """A model failed verification (signature, manifest, format or types); nothing was deserialized."""


@dataclass(frozen=True)
class LoadPolicy:
    """What a load accepts: pickle formats (only when the config allows them) and the signing key."""

    allow_pickle: bool = False
    signing_key: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cfg: ModelConfig, settings: Settings) -> LoadPolicy:
        """The policy for a model config under the given settings."""
        return cls(allow_pickle=cfg.registry.allow_pickle, signing_key=settings.signing_key)


@dataclass(frozen=True)
class VerifiedFiles:
    """A verified model folder: every check passed, nothing deserialized yet."""

    folder: Path
    name: str
    model_file: Path
    serialization_format: str
    predict_fn: str
    manifest: dict[str, str]
    signed: bool
    allow_pickle: bool


# ---------------------------------------------------------------------------- signing


def sign_manifest(name: str, manifest: Mapping[str, str], key: str) -> str:
    """The HMAC-SHA-256 of a registered model's name and manifest, as stored in `SIGNATURE_TAG`."""
    _check_key(key)
    payload = json.dumps({"model": name, "manifest": dict(manifest)}, sort_keys=True, separators=(",", ":"))
    digest = hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return SIGNATURE_SCHEME + digest


def manifest_tags(name: str, manifest: Mapping[str, str], key: str | None) -> dict[str, str]:
    """The version tags that let a version be loaded: its manifest, and its signature when keyed."""
    tags = {MANIFEST_TAG: json.dumps(dict(manifest), sort_keys=True)}
    if key:
        tags[SIGNATURE_TAG] = sign_manifest(name, manifest, key)
    return tags


def _check_key(key: str) -> None:
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"the model signing key must have at least {MIN_KEY_LENGTH} characters; "
                         "make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'")


def _check_signature(name: str, manifest: Mapping[str, str], signature: str | None, policy: LoadPolicy) -> bool:
    """Whether the manifest is signed; raises when a key is configured and the signature is missing or wrong."""
    if not policy.signing_key:
        return False
    if not signature:
        raise ModelRefused(f"{name}: the manifest is not signed and a signing key is configured: refusing to load "
                           "a model that was not registered by autopilot with this key")
    expected = sign_manifest(name, manifest, policy.signing_key)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise ModelRefused(f"{name}: the manifest signature does not match the configured signing key: "
                           "the manifest or the signature was changed after registration")
    return True


def sign_version(version: ModelVersion, key: str, registry: Registry) -> bool:
    """Sign a version registered before signing was turned on; False when it already holds a valid signature.

    The files are checked against the version's manifest first (in a private copy), so only a
    version whose stored files still match what was registered gets signed. This vouches for
    the files as they are: sign only versions you trust (`autopilot sign` lists each one).
    `registry` is the version's store.

    Raises:
        ModelRefused: no manifest, files that do not match it, or a signature made with another key.
    """
    label = f"version {version.version} of {version.name}"
    existing = (version.tags or {}).get(SIGNATURE_TAG)
    if existing:
        _check_signature(version.name, _parse_manifest((version.tags or {}).get(MANIFEST_TAG) or "", label),
                         existing, LoadPolicy(signing_key=key))  # raises on a signature made with another key
        return False
    with open_version(version, LoadPolicy(allow_pickle=True), registry) as files:  # checks files only; nothing loaded
        signature = sign_manifest(version.name, files.manifest, key)
    registry.set_version_tag(version.name, version.version, SIGNATURE_TAG, signature)
    return True


# ---------------------------------------------------------------------------- verifying


@contextlib.contextmanager
def open_version(version: ModelVersion, policy: LoadPolicy, registry: Registry) -> Iterator[VerifiedFiles]:
    """A registered version's files (from its store, `registry`) in a private folder, verified (deleted afterwards).

    Raises:
        ModelRefused: naming the first check that failed; nothing was deserialized.
    """
    label = f"version {version.version} of {version.name}"
    tags = version.tags or {}
    raw = tags.get(MANIFEST_TAG)
    if not raw:
        raise ModelRefused(f"{label} has no SHA-256 manifest tag: refusing to load it")
    manifest = _parse_manifest(raw, label)
    signed = _check_signature(version.name, manifest, tags.get(SIGNATURE_TAG), policy)
    if not version.source:
        raise ModelRefused(f"{label} has no source: nothing to load")
    # Downloaded (copied, for a local store) into a folder only this user can read, removed
    # afterwards: what loads is what is checked here, whatever happens in the store meanwhile.
    with tempfile.TemporaryDirectory(prefix="autopilot-model-") as tmp:  # created with mode 0700
        folder = registry.download(version.source, Path(tmp))
        yield verify_folder(folder, manifest, policy, name=label, signed=signed)


@contextlib.contextmanager
def open_package(folder: Path, policy: LoadPolicy, name: str) -> Iterator[VerifiedFiles]:
    """A container package (model files + `PACKAGE_MANIFEST`, `PACKAGE_SIGNATURE`), verified in a private copy.

    Raises:
        ModelRefused: no manifest, a bad or missing signature (when keyed), or a failed check.
    """
    folder = Path(folder)
    manifest_path = folder / PACKAGE_MANIFEST
    if not manifest_path.is_file():
        raise ModelRefused(f"{folder} has no {PACKAGE_MANIFEST}: refusing to load an unverified model")
    manifest = _parse_manifest(manifest_path.read_text(encoding="utf-8"), str(folder))
    signature_path = folder / PACKAGE_SIGNATURE
    signature = signature_path.read_text(encoding="utf-8").strip() if signature_path.is_file() else None
    signed = _check_signature(name, manifest, signature, policy)
    with _private_copy(folder, exclude=(PACKAGE_MANIFEST, PACKAGE_SIGNATURE)) as copy:
        yield verify_folder(copy, manifest, policy, name=str(folder), signed=signed)


def verify_folder(folder: Path, manifest: Mapping[str, str], policy: LoadPolicy, *, name: str,
                  signed: bool = False) -> VerifiedFiles:
    """Check a model folder against its manifest, its format and its types (no signature check here).

    For a folder this process (or its parent) already copied privately after checking the
    signature: the infra probe's child process, say.

    Raises:
        ModelRefused: naming what failed.
    """
    try:
        verify_manifest(folder, dict(manifest))
    except ManifestError as exc:
        raise ModelRefused(f"{name}: {exc}") from None
    spec = _mlmodel(folder, name)
    flavors = spec.get("flavors") or {}
    sklearn_flavor = flavors.get("sklearn")
    if not isinstance(sklearn_flavor, dict):
        raise ModelRefused(f"{name}: not a scikit-learn model (flavors {sorted(flavors)}): refusing to load it")
    fmt = str(sklearn_flavor.get("serialization_format") or "unknown")
    pyfunc_flavor = flavors.get("python_function") or {}
    loader = pyfunc_flavor.get("loader_module")
    if loader not in (None, "mlflow.sklearn"):
        raise ModelRefused(f"{name}: unexpected pyfunc loader {loader!r}: refusing a model that would run its own code")
    if fmt != "skops" and not policy.allow_pickle:
        raise ModelRefused(f"{name}: refusing a pickle model (serialization_format {fmt}); "
                           "registry.allow_pickle is false")
    if fmt not in ("skops", "pickle", "cloudpickle"):
        raise ModelRefused(f"{name}: unknown serialization format {fmt!r}")
    model_file = _model_file(folder, sklearn_flavor, name)
    if fmt == "skops":
        _check_skops_types(model_file, sklearn_flavor, name)
    return VerifiedFiles(folder=folder, name=name, model_file=model_file, serialization_format=fmt,
                         predict_fn=str(pyfunc_flavor.get("predict_fn") or "predict"), manifest=dict(manifest),
                         signed=signed, allow_pickle=policy.allow_pickle)


def _parse_manifest(raw: str, label: str) -> dict[str, str]:
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ModelRefused(f"{label}: the SHA-256 manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or not manifest or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()):
        raise ModelRefused(f"{label}: the SHA-256 manifest must map file names to digests")
    return manifest


def _mlmodel(folder: Path, name: str) -> dict[str, Any]:
    import yaml

    path = folder / "MLmodel"
    if not path.is_file():
        raise ModelRefused(f"{name}: no MLmodel file")
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict):
        raise ModelRefused(f"{name}: the MLmodel file is not a mapping")
    return spec


def _model_file(folder: Path, flavor: Mapping[str, Any], name: str) -> Path:
    relative = str(flavor.get("pickled_model") or "")
    path = (folder / relative).resolve()
    if not relative or not path.is_file() or not path.is_relative_to(folder.resolve()):
        raise ModelRefused(f"{name}: the sklearn flavor names no model file inside the model folder ({relative!r})")
    return path


def _check_skops_types(model_file: Path, flavor: Mapping[str, Any], name: str) -> None:
    """Refuse a skops file, or an MLmodel trust list, naming types outside the project's own list."""
    sio = skops_io()
    claimed = [t for t in flavor.get("skops_trusted_types") or [] if t not in SKOPS_TRUSTED_TYPES]
    if claimed:
        raise ModelRefused(f"{name}: the MLmodel file trusts types outside autopilot's reviewed list: {claimed}")
    try:
        needed = sio.get_untrusted_types(file=model_file)
    except Exception as exc:  # not a readable skops archive: refuse, naming why
        raise ModelRefused(f"{name}: the skops file cannot be read: {type(exc).__name__}: {exc}") from None
    untrusted = [t for t in needed if t not in SKOPS_TRUSTED_TYPES]
    if untrusted:
        raise ModelRefused(f"{name}: the skops file needs types outside autopilot's reviewed list: {untrusted}")


@contextlib.contextmanager
def _private_copy(source: Path, exclude: tuple[str, ...] = ()) -> Iterator[Path]:
    """Copy a model folder into a folder only this user can read, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="autopilot-model-") as tmp:  # created with mode 0700
        target = Path(tmp) / "model"
        shutil.copytree(source, target, symlinks=False,
                        ignore=(lambda _dir, names: [n for n in names if n in exclude]) if exclude else None)
        yield target


# ---------------------------------------------------------------------------- loading


def harden_process() -> None:
    """Switch MLflow's own pickle deserialization off in this process (autopilot loads models itself)."""
    os.environ[PICKLE_ENV] = "false"


def load_sklearn(files: VerifiedFiles) -> Any:
    """Deserialize a verified model: skops with the reviewed types, pickle only when the policy allows it."""
    harden_process()
    if files.serialization_format == "skops":
        return skops_io().load(files.model_file, trusted=sorted(SKOPS_TRUSTED_TYPES))
    if not files.allow_pickle:  # verify_folder refused it already; never reached
        raise ModelRefused(f"{files.name}: refusing a pickle model")
    import cloudpickle

    with files.model_file.open("rb") as handle:  # verified and allowed by the model's own config
        return cloudpickle.load(handle)


def load_pyfunc(files: VerifiedFiles) -> Any:
    """A verified model as an MLflow pyfunc model (its signature enforced on `predict`), built here."""
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

    meta = Model.load(str(files.folder / "MLmodel"))
    return PyFuncModel(model_meta=meta, model_impl=_SklearnPyfunc(load_sklearn(files)), predict_fn=files.predict_fn)


def load_version(version: ModelVersion, policy: LoadPolicy, registry: Registry) -> Any:
    """A registered version's sklearn model from its store (`registry`), verified then deserialized.

    See the module docstring.
    """
    with open_version(version, policy, registry) as files:
        return load_sklearn(files)


class _SklearnPyfunc:
    """The pyfunc implementation around a scikit-learn model (what MLflow's sklearn flavor builds)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Predictions (labels or values)."""
        return self.model.predict(data)

    def predict_proba(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Class probabilities (what a classifier's pyfunc serves: `pyfunc_predict_fn`)."""
        return self.model.predict_proba(data)
