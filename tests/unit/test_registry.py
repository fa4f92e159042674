from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from autopilot.adapters import registry
from autopilot.adapters.registry import ManifestError, sha256_manifest, skops_types, verify_manifest
from autopilot.settings import Settings


def test_manifest_detects_changed_missing_and_extra_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.skops").write_bytes(b"weights")
    (tmp_path / "sub" / "MLmodel").write_text("flavors: {}")
    manifest = sha256_manifest(tmp_path)
    assert set(manifest) == {"model.skops", "sub/MLmodel"} and all(len(v) == 64 for v in manifest.values())
    verify_manifest(tmp_path, manifest)
    (tmp_path / "model.skops").write_bytes(b"evil weights")
    (tmp_path / "extra.pkl").write_bytes(b"x")
    (tmp_path / "sub" / "MLmodel").unlink()
    with pytest.raises(ManifestError) as err:
        verify_manifest(tmp_path, manifest)
    message = str(err.value)
    assert "changed file model.skops" in message and "missing file sub/MLmodel" in message
    assert "unexpected file extra.pkl" in message


class Custom(ClassifierMixin, BaseEstimator):
    """A class outside the skops allowlist."""

    def fit(self, X: Any, y: Any) -> Custom:
        self.classes_ = np.unique(y)
        return self


def test_skops_allowlist() -> None:
    X, y = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]}), [0, 0, 1, 1]
    assert skops_types(LogisticRegression().fit(X, y)) is not None
    assert skops_types(Custom().fit(X, y)) is None


def test_untrusted_model_is_refused_without_allow_pickle(settings: Settings) -> None:
    reg = registry.connect(settings)  # refused before any run is touched: the run id is never read
    with pytest.raises(ValueError, match="refusing to store it as a pickle"):
        reg.log_sklearn_model("no-run", Custom().fit([[0.0], [1.0]], [0, 1]), None, None, allow_pickle=False)




def _store(root: Path) -> Settings:
    return Settings.from_env({"AUTOPILOT_HOME": str(root / "home")})


def test_connect_keeps_credentials_out_of_the_uri_and_reuses_one_registry_per_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "x")  # recorded, so the value connect sets is undone after the test
        monkeypatch.delenv(name)
    remote = replace(_store(tmp_path), mlflow_tracking_uri="https://me:p%40ss@mlflow.example:5000")
    found = registry.connect(remote)
    assert found.tracking_uri == found.registry_uri == "https://mlflow.example:5000"
    assert "p@ss" not in repr(found)
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("me", "p@ss")
    assert registry.connect(remote) is found
    local = _store(tmp_path / "other")
    assert registry.connect(local) is not found and Path(local.mlflow_artifact_root).is_dir()


def _fitted() -> Any:
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": ["x", "y", "x", "y"]})
    return LogisticRegression().fit(X[["a"]], [0, 0, 1, 1]), X[["a"]]


def test_two_stores_in_one_process_each_get_their_own_runs_models_and_aliases(tmp_path: Path,
                                                                                  mlflow_clean: None) -> None:
    import mlflow

    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version

    before = mlflow.get_tracking_uri()
    a, b = registry.connect(_store(tmp_path / "a")), registry.connect(_store(tmp_path / "b"))
    model, X = _fitted()
    experiment = a.ensure_experiment("explicit", str(tmp_path / "a" / "home" / "mlartifacts"))
    with a.start_run(experiment, run_name="train", tags={registry.IDEMPOTENCY_TAG: "k1"}) as run:
        run.log_params({"C": 1.0})
        run.log_metrics({"test_auc": 0.5})
        run.set_tags({"autopilot.stage": "train"})
        run.log_dict({"x": 1}, "records/x.json")
        run.log_input(registry.pandas_dataset(X, source="s3://bucket/x", name="x", digest="d" * 32), "training")
        signature = registry.model_signature({"a": "double"}, X, model.predict_proba(X))
        info = run.log_sklearn_model(model, X.head(2), signature, allow_pickle=False, predict_fn="predict_proba")
    assert mlflow.get_tracking_uri() == before and mlflow.active_run() is None  # no global state left behind
    found = a.get_run(run.run_id)
    assert found.info.status == "FINISHED" and found.data.params == {"C": "1.0"}
    assert found.data.metrics["test_auc"] == 0.5 and found.data.tags["mlflow.runName"] == "train"
    assert run.dataset_digests() == {"d" * 32} and a.load_dict(run.run_id, "records/x.json") == {"x": 1}
    assert "records/x.json" in a.list_artifacts(run.run_id, "records")
    assert a.find_run(experiment, "k1").info.run_id == run.run_id  # type: ignore[union-attr]
    manifest = registry.sha256_manifest(a.download(info.model_uri, tmp_path / "copy"))
    version = a.create_version("m", info.model_uri, run.run_id, {registry.MANIFEST_TAG: json.dumps(manifest)})
    a.set_alias("m", "champion", int(version.version))
    assert int(a.resolve_version("m", "champion").version) == 1 and a.aliases("m") == {"champion": 1}
    assert a.client.get_logged_model(info.model_id).experiment_id == experiment  # in the run's experiment
    loaded = load_version(version, LoadPolicy(), a)
    assert (loaded.predict_proba(X) == model.predict_proba(X)).all()
    with pytest.raises(Exception) as missing:
        b.resolve_version("m", 1)
    assert registry.is_not_found(missing.value) and registry.is_mlflow_error(missing.value)
    assert b.versions("m") == [] or registry.is_not_found(missing.value)


def test_a_run_that_raises_ends_failed_and_resumes_running_with_new_tags(tmp_path: Path) -> None:
    a = registry.connect(_store(tmp_path))
    experiment = a.ensure_experiment("resume", str(tmp_path / "home" / "mlartifacts"))
    with pytest.raises(ValueError, match="boom"), a.start_run(experiment, run_name="first") as run:
        raise ValueError("boom")
    assert a.get_run(run.run_id).info.status == "FAILED"
    with a.start_run(experiment, run_id=run.run_id, tags={"again": "yes"}) as again:
        assert a.get_run(again.run_id).info.status == "RUNNING"
    resumed = a.get_run(run.run_id)
    assert again.run_id == run.run_id and resumed.info.status == "FINISHED" and resumed.data.tags["again"] == "yes"
    a.run(run.run_id).set_tag("later", "1")  # a handle without starting: the status stays
    assert a.get_run(run.run_id).info.status == "FINISHED" and a.get_run(run.run_id).data.tags["later"] == "1"


def test_a_recorded_dataset_has_mlflows_own_schema_inferred_from_distinct_values() -> None:
    """The seeded schema equals MLflow's cell-by-cell inference: types and `required` (missing values) alike."""
    from mlflow.types.utils import _infer_schema

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "age": rng.integers(17, 90, 500).astype(float), "n": rng.integers(0, 5, 500),
        "city": rng.choice(["a", "b", "c"], 500), "flag": rng.random(500) > 0.5,
        "when": pd.Timestamp("2026-01-01"), "label": rng.choice(["<=50K", ">50K"], 500),
    })
    frame.loc[3, "age"] = np.nan
    frame.loc[7, "city"] = None
    dataset = registry.pandas_dataset(frame, source="s3://bucket/x", name="x", targets="label", digest="d" * 32)
    assert dataset.schema == _infer_schema(frame)
    required = {spec.name: spec.required for spec in dataset.schema.inputs}
    assert required == {"age": False, "n": True, "city": False, "flag": True, "when": True, "label": True}
    assert json.loads(dataset._to_mlflow_entity().schema)["mlflow_colspec"][2] == {
        "type": "string", "name": "city", "required": False}


def test_requirements_pin_lightgbm_only_for_a_model_that_holds_it() -> None:
    """A LightGBM model's environment needs lightgbm to load; the others are not made to install it."""
    from importlib import metadata

    from lightgbm import LGBMClassifier
    from sklearn.pipeline import Pipeline

    pin = f"lightgbm=={metadata.version('lightgbm')}"
    assert pin in registry.requirements(Pipeline([("model", LGBMClassifier())]))
    assert pin in registry.requirements(LGBMClassifier())
    for other in (Pipeline([("model", LogisticRegression())]), None):
        pins = registry.requirements(other)
        assert not any(p.startswith("lightgbm") for p in pins) and any(p.startswith("scikit-learn") for p in pins)
