"""The one door for models: signature, manifest, format and reviewed types, checked before deserializing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry import model_loading
from autopilot.adapters.registry.model_loading import (
    PACKAGE_MANIFEST,
    PACKAGE_SIGNATURE,
    SIGNATURE_TAG,
    SKOPS_TRUSTED_TYPES,
    LoadPolicy,
    ModelRefused,
    load_pyfunc,
    load_sklearn,
    load_version,
    manifest_tags,
    open_package,
    open_version,
    sign_manifest,
)
from autopilot.config import ModelConfig, ModelFamily, Task
from autopilot.settings import Settings
from tests.helpers import PROJECT, adult_config_dict
from tests.payloads import register_malicious
from tests.serving_support import LIGHTGBM, LINEAR, adult_cfg, feature_rows, register_version

pytestmark = pytest.mark.usefixtures("mlflow_clean")
KEY = "k" * 40


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path_factory.mktemp("door") / "home")})


@pytest.fixture(scope="module")
def reg(store: Settings) -> registry.Registry:
    return registry.connect(store)


@pytest.fixture(scope="module")
def genuine(store: Settings, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Any:
    return register_version(store, adult_cfg(), adult_frames, params=LINEAR, rows=1000, alias=None)


@pytest.fixture
def restore_pickle_flag() -> Iterator[None]:
    before = os.environ.get(model_loading.PICKLE_ENV)
    yield
    if before is None:
        os.environ.pop(model_loading.PICKLE_ENV, None)
    else:
        os.environ[model_loading.PICKLE_ENV] = before


def _sign(reg: registry.Registry, version: Any, key: str) -> Any:
    """Add the signature registration would have made (as a version tag)."""
    manifest = json.loads(version.tags[registry.MANIFEST_TAG])
    reg.client.set_model_version_tag(version.name, version.version, SIGNATURE_TAG,
                                     sign_manifest(version.name, manifest, key))
    return reg.client.get_model_version(version.name, version.version)


def test_every_family_encoding_and_task_needs_only_reviewed_types(adult_frames: tuple[pd.DataFrame, Any]) -> None:
    """A scikit-learn upgrade that needs a new type fails here, before any model is trained with it."""
    import skops.io as sio

    from autopilot.data.sources import canonicalize
    from autopilot.modeling.search_space import build_pipeline
    from autopilot.modeling.splits import encode_target, feature_frame

    base = ModelConfig.model_validate(adult_config_dict())
    frame = canonicalize(adult_frames[0].sample(600, random_state=0), base)
    X = feature_frame(frame, base)
    estimators = {
        "linear": {"linear.C": 1.0, "linear.alpha": 1.0},
        "hist_gradient_boosting": {"hgb.learning_rate": 0.1, "hgb.max_iter": 10, "hgb.max_leaf_nodes": 15,
                                   "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.1},
        "random_forest": {"rf.n_estimators": 3, "rf.max_depth": 3, "rf.min_samples_leaf": 2, "rf.max_features": 0.3},
        "extra_trees": {"et.n_estimators": 3, "et.max_depth": 3, "et.min_samples_leaf": 2, "et.max_features": 0.3},
        "lightgbm": {"lgbm.learning_rate": 0.1, "lgbm.n_estimators": 10, "lgbm.num_leaves": 15,
                     "lgbm.min_child_samples": 20, "lgbm.colsample_bytree": 0.7, "lgbm.reg_lambda": 0.1,
                     "lgbm.min_data_per_group": 10, "lgbm.cat_smooth": 2.0},
    }
    encodings = {"linear": ("linear", ["onehot", "target"]), "random_forest": ("rf", ["ordinal", "target"]),
                 "extra_trees": ("et", ["ordinal", "target"]), "hist_gradient_boosting": ("hgb", ["native", "target"]),
                 "lightgbm": ("lgbm", ["native", "target"])}
    assert set(encodings) == {family.value for family in ModelFamily}  # a new family is reviewed here first
    needed: set[str] = set()
    for task in (Task.BINARY_CLASSIFICATION, Task.REGRESSION):
        cfg = base.model_copy(update={"task": task})
        y = encode_target(frame, base) if task is Task.BINARY_CLASSIFICATION else X["hours_per_week"].to_numpy()
        for family, (prefix, options) in encodings.items():
            for encoding in options:
                params = {"family": family, "prep.num_impute": "median", "prep.scaling": "minmax",
                          "prep.cat_impute": "constant", "prep.min_frequency": 0.01,
                          f"{prefix}.cat_encoding": encoding, **estimators[family]}
                pipeline = build_pipeline(params, cfg, seed=0).fit(X, y)
                needed.update(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    assert needed <= SKOPS_TRUSTED_TYPES, f"review these types before trusting them: {needed - SKOPS_TRUSTED_TYPES}"
    assert "sklearn.tree._tree.Tree" in needed  # the enumeration reached the tree families
    assert {"lightgbm.basic.Booster", "lightgbm.sklearn.LGBMRegressor"} <= needed  # and LightGBM's


def test_a_genuine_version_loads_and_predicts_like_the_registered_model(reg: registry.Registry, genuine: Any,
                                                                         adult_frames: tuple[Any, Any]) -> None:
    cfg = adult_cfg()
    frame = pd.DataFrame(feature_rows(adult_frames, cfg, n=20))
    with open_version(genuine, LoadPolicy(), reg) as files:
        assert files.serialization_format == "skops" and not files.signed
        assert files.folder != reg.download(genuine.source)  # a private copy, not the store itself
        model = load_sklearn(files)
        pyfunc = load_pyfunc(files)
        served = np.asarray(pyfunc.predict(frame))
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException):  # the signature is enforced on the pyfunc model we built
            pyfunc.predict(frame.drop(columns=["age"]))
    assert not files.folder.exists()  # removed afterwards
    assert np.array_equal(served, model.predict_proba(frame))


def test_a_lightgbm_version_loads_through_the_door_and_pins_its_library(
        reg: registry.Registry, store: Settings, adult_frames: tuple[Any, Any]) -> None:
    """A LightGBM pipeline is stored as skops (no pickle), loads with the reviewed types only, predicts
    exactly what the registered model did, and its logged environment installs LightGBM."""
    from importlib import metadata

    cfg = adult_cfg()
    version = register_version(store, cfg, adult_frames, params=LIGHTGBM, rows=1500, alias=None)
    frame = pd.DataFrame(feature_rows(adult_frames, cfg, n=50))
    with open_version(version, LoadPolicy(), reg) as files:
        assert files.serialization_format == "skops"
        requirements = (files.folder / "requirements.txt").read_text().split()
        mlmodel = (files.folder / "MLmodel").read_text()
        model = load_sklearn(files)
        served = np.asarray(load_pyfunc(files).predict(frame))
    assert f"lightgbm=={metadata.version('lightgbm')}" in requirements
    assert "lightgbm.basic.Booster" in mlmodel  # the types skops was told to trust, all from the reviewed list
    assert type(model[-1]).__name__ == "LGBMClassifier"
    assert np.array_equal(served, model.predict_proba(frame))
    assert served.shape == (50, 2) and np.all((served >= 0) & (served <= 1))


def test_signed_manifests(reg: registry.Registry, genuine: Any, store: Settings) -> None:
    with pytest.raises(ModelRefused, match="not signed"):
        load_version(genuine, LoadPolicy(signing_key=KEY), reg)
    signed = _sign(reg, genuine, KEY)
    assert load_version(signed, LoadPolicy(signing_key=KEY), reg) is not None
    with pytest.raises(ModelRefused, match="does not match"):
        load_version(signed, LoadPolicy(signing_key="w" * 40), reg)
    # An attacker rewrites the manifest tag (to match swapped files): the signature no longer holds.
    manifest = json.loads(signed.tags[registry.MANIFEST_TAG])
    manifest["extra.txt"] = "0" * 64
    reg.client.set_model_version_tag(signed.name, signed.version, registry.MANIFEST_TAG, json.dumps(manifest))
    tampered = reg.client.get_model_version(signed.name, signed.version)
    with pytest.raises(ModelRefused, match="does not match"):
        load_version(tampered, LoadPolicy(signing_key=KEY), reg)
    reg.client.set_model_version_tag(signed.name, signed.version, registry.MANIFEST_TAG,
                                     signed.tags[registry.MANIFEST_TAG])
    with pytest.raises(ValueError, match="at least 32 characters"):
        sign_manifest("m", manifest, "short")
    assert SIGNATURE_TAG not in manifest_tags("m", manifest, None)
    assert manifest_tags("m", manifest, KEY)[SIGNATURE_TAG].startswith("hmac-sha256:v1:")


def test_a_changed_file_is_refused_before_loading(
        reg: registry.Registry, store: Settings, adult_frames: tuple[Any, Any]) -> None:
    version = register_version(store, adult_cfg(), adult_frames, params=LINEAR, rows=600, alias=None)
    stored = reg.download(version.source) / "model.skops"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match="changed file model.skops"):
        load_version(version, LoadPolicy(), reg)


@pytest.mark.parametrize("kind", ["pickle", "skops"])
def test_payloads_registered_through_mlflow_are_refused(
        reg: registry.Registry, kind: str, genuine: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = register_malicious(reg, genuine.name, genuine, kind, marker, tmp_path, alias=None)
    reason = "refusing a pickle model" if kind == "pickle" else "trusts types outside autopilot's reviewed list"
    with pytest.raises(ModelRefused, match=reason):
        load_version(evil, LoadPolicy(), reg)
    assert not marker.exists()


def test_a_skops_file_needing_an_unreviewed_type_is_refused_even_when_its_mlmodel_is_honest(reg: registry.Registry,
        genuine: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = register_malicious(reg, genuine.name, genuine, "skops", marker, tmp_path, alias=None)
    folder = tmp_path / "honest"
    shutil.copytree(reg.download(evil.source), folder)
    mlmodel = folder / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("- tests.payloads.SkopsBomb\n", ""))
    with pytest.raises(ModelRefused, match=r"needs types outside .*tests\.payloads\.SkopsBomb"):
        model_loading.verify_folder(folder, registry.sha256_manifest(folder), LoadPolicy(), name="x")
    assert not marker.exists()


def test_pickle_loads_only_when_the_config_allows_it(
        reg: registry.Registry, store: Settings, adult_frames: tuple[Any, Any], tmp_path: Path,
        restore_pickle_flag: None) -> None:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from autopilot.adapters.registry.runs import fluent_uris

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    with fluent_uris(reg), mlflow.start_run(experiment_id=reg.ensure_experiment("pickled",
                                                                               store.mlflow_artifact_root)) as run:
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                        pip_requirements=registry.requirements())
    manifest = registry.sha256_manifest(reg.download(info.model_uri))
    version = reg.create_version("pickled", info.model_uri, run.info.run_id,
                                 manifest_tags("pickled", manifest, None))
    with pytest.raises(ModelRefused, match="refusing a pickle model"):
        load_version(version, LoadPolicy(), reg)
    loaded = load_version(version, LoadPolicy(allow_pickle=True), reg)
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_mlflows_own_loader_is_switched_off_after_any_load(
        reg: registry.Registry, genuine: Any, restore_pickle_flag: None) -> None:
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    os.environ[model_loading.PICKLE_ENV] = "true"
    load_version(genuine, LoadPolicy(), reg)
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.sklearn.load_model(str(reg.download(genuine.source)))


def test_packages_carry_their_signature(reg: registry.Registry, genuine: Any, tmp_path: Path) -> None:
    from autopilot.deploy.aws import package_model

    signed = _sign(reg, genuine, KEY)
    with open_version(signed, LoadPolicy(signing_key=KEY), reg) as files:
        archive, _ = package_model(files.folder, tmp_path / "model.tar.gz", signature=signed.tags[SIGNATURE_TAG])
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(archive, unpacked)
    assert (unpacked / PACKAGE_MANIFEST).is_file() and (unpacked / PACKAGE_SIGNATURE).is_file()
    with open_package(unpacked, LoadPolicy(signing_key=KEY), signed.name) as files:
        assert files.signed and load_sklearn(files) is not None
    (unpacked / PACKAGE_SIGNATURE).unlink()
    with pytest.raises(ModelRefused, match="not signed"), open_package(unpacked, LoadPolicy(signing_key=KEY),
                                                                         signed.name):
        pass
    with open_package(unpacked, LoadPolicy(), signed.name) as files:  # no key configured: unsigned is accepted
        assert not files.signed


def test_payloads_are_live(reg: registry.Registry, genuine: Any, tmp_path: Path, store: Settings) -> None:
    """The control: MLflow's own loader, allowed to, runs each payload (so the refusals above mean something)."""
    for kind in ("pickle", "skops"):
        marker = tmp_path / f"marker-{kind}"
        evil = register_malicious(reg, genuine.name, genuine, kind, marker, tmp_path / kind, alias=None)
        folder = reg.download(evil.source)
        code = ("import mlflow.sklearn\ntry:\n"
                f"    mlflow.sklearn.load_model({str(folder)!r})\nexcept Exception:\n    pass\n")
        env = {**os.environ, model_loading.PICKLE_ENV: "true", "PYTHONPATH": str(PROJECT)}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, capture_output=True)
        assert marker.exists(), f"the {kind} payload did not run under MLflow's own loader"


def test_versions_registered_before_signing_can_be_signed_after_a_file_check(reg: registry.Registry,
        store: Settings, adult_frames: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Turning signing on must not strand the champion: `autopilot sign` checks the files, then signs."""
    from autopilot.adapters.registry.model_loading import sign_version
    from autopilot.cli import main

    cfg = adult_cfg()
    old = register_version(store, cfg, adult_frames, params=LINEAR, rows=600, alias=None)
    with pytest.raises(ModelRefused, match="not signed"):
        load_version(old, LoadPolicy(signing_key=KEY), reg)
    assert sign_version(old, KEY, reg) is True
    signed = reg.client.get_model_version(old.name, old.version)
    assert load_version(signed, LoadPolicy(signing_key=KEY), reg) is not None
    assert sign_version(signed, KEY, reg) is False  # already signed with this key
    with pytest.raises(ModelRefused, match="does not match"):
        sign_version(signed, "w" * 40, reg)  # never re-signed under another key
    tampered = register_version(store, cfg, adult_frames, params=LINEAR, rows=500, alias=None)
    stored = reg.download(tampered.source) / "model.skops"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match="changed file model.skops"):
        sign_version(tampered, KEY, reg)  # files that no longer match their manifest are never signed
    assert SIGNATURE_TAG not in reg.client.get_model_version(tampered.name, tampered.version).tags
    # The command, as an operator runs it.
    monkeypatch.setenv("AUTOPILOT_HOME", str(store.home))
    monkeypatch.setenv("AUTOPILOT_SIGNING_KEY", KEY)
    fresh = register_version(store, cfg, adult_frames, params=LINEAR, rows=400, alias=None)
    assert main(["sign", "adult_income", "--version", str(fresh.version)]) == 0
    assert f"version {fresh.version}: signed" in capsys.readouterr().out
