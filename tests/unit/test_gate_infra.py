"""The infra gate on real registered versions: passes, tampered files, pickles, bad predictions, limits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.config import ModelConfig
from autopilot.gates import infra
from autopilot.gates.infra import evaluate_infra
from autopilot.settings import Settings
from tests.helpers import adult_config_dict

pytestmark = pytest.mark.usefixtures("mlflow_clean")


TINY_FEATURES = {"age": {"type": "numeric"}, "sex": {"type": "categorical", "categories": ["Female", "Male"]}}


def tiny_config(**infra_limits: Any) -> ModelConfig:
    """The demo config cut to the tiny model's features (the probe loads it as serving does, against its config)."""
    return ModelConfig.model_validate(adult_config_dict(gates={"infra": {"sample_rows": 40, **infra_limits}},
                                                        features=TINY_FEATURES, sensitive_attributes=["sex"]))


def tiny_frame(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.uniform(18, 80, rows).round(), "sex": rng.choice(["Female", "Male"], rows)})


def log_version(settings: Settings, fmt: str = "skops") -> tuple[Any, Any]:
    """Log and register a small classifier the way stages do (signature typed, predict_proba served)."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from autopilot.adapters.registry.runs import fluent_uris

    X = tiny_frame()
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["sex"]), remainder="passthrough"),
                          LogisticRegression()).fit(X, (X["age"] > 45).astype(int))
    signature = ModelSignature(inputs=Schema([ColSpec("double", "age"), ColSpec("string", "sex")]),
                               outputs=infer_signature(X, model.predict_proba(X)).outputs)
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("infra-test", settings.mlflow_artifact_root)
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(model, name="model", serialization_format=fmt, signature=signature,
                                        pyfunc_predict_fn="predict_proba", pip_requirements=registry.requirements())
    manifest = registry.sha256_manifest(reg.download(info.model_uri))
    version = reg.create_version("tiny", info.model_uri, run.info.run_id,
                                 {registry.MANIFEST_TAG: json.dumps(manifest, sort_keys=True)})
    return version, model


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One MLflow home for the module (creating its database costs seconds)."""
    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path_factory.mktemp("infra") / "home")})


@pytest.fixture(scope="module")
def skops_version(store: Settings) -> tuple[Any, Any]:
    return log_version(store)


@pytest.fixture(scope="module")
def pickle_version(store: Settings) -> tuple[Any, Any]:
    return log_version(store, fmt="cloudpickle")


@pytest.fixture(scope="module")
def reg(store: Settings) -> registry.Registry:
    return registry.connect(store)


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the gate ever starts loading the model."""

    def refuse(*args: Any) -> dict[str, Any]:
        raise AssertionError("the gate tried to load the model")

    monkeypatch.setattr(infra, "_run_probe", refuse)


def test_a_registered_version_passes(
        reg: registry.Registry, skops_version: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    version, model = skops_version
    X = tiny_frame(50)
    report = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert report.passed, report.reasons
    m = report.metrics
    assert m["rows"] == 40 and m["predictions_equal"] and m["max_abs_diff"] == 0.0
    assert 0 < m["load_seconds"] < 60 and 0 < m["p50_latency_ms"] <= m["p95_latency_ms"] <= m["max_latency_ms"]
    assert 50 < m["baseline_memory_mb"] <= m["peak_memory_mb"] < 4096
    assert report.details["memory_method"].startswith("VmHWM") and report.details["serialization_format"] == "skops"
    # Answered as `autopilot serve` answers: its load (fast path or the pipeline, said which) and its scores.
    assert report.details["fast_path"].startswith(("compiled", "not compiled")), report.details["fast_path"]
    assert m["pyfunc_predictions_equal"] and m["pyfunc_max_abs_diff"] == 0.0
    assert m["startup_seconds"] > 0 and m["import_seconds"] > 0
    checks = report.details["signature_checks"]
    assert set(checks) == {"missing column 'age'", "text in numeric column 'age'"}
    assert all(check["rejected"] for check in checks.values()), checks
    json.dumps(report.model_dump(mode="json"))  # JSON-safe for XCom and MLflow

    # The same probe result, judged against other expectations (one spawned probe is enough).
    probe = infra._run_probe
    results: list[dict[str, Any]] = []

    def reuse(*args: Any) -> dict[str, Any]:  # the probe once; this process's own (pyfunc) checks every time
        *probe_args, meanwhile = args
        if not results:
            results.append(probe(*probe_args))
        return {**results[0], **meanwhile()}

    monkeypatch.setattr(infra, "_run_probe", reuse)
    # Judged against the scores the pipeline computes (positive class only): the endpoint answers those,
    # and pyfunc's (rows, 2) probabilities are compared on their positive-class column.
    scores = evaluate_infra(version, X, model.predict_proba(X)[:, 1], tiny_config(), LoadPolicy(), reg)
    assert scores.passed and scores.details["compared"] == "served (40,) vs expected (40,)"
    assert "positive-class column" in scores.details["pyfunc_compared"]

    # Predictions that differ from the in-process ones, and limits the model misses, fail.
    wrong = model.predict_proba(X)
    wrong[3, 1] += 1e-12
    strict = evaluate_infra(version, X, wrong, tiny_config(max_p95_latency_ms=1e-6, max_peak_memory_mb=1.0),
                            LoadPolicy(), reg)
    assert not strict.passed
    text = " | ".join(strict.reasons)
    assert "differ from the in-process ones" in text and "p95 latency" in text and "peak memory" in text
    assert strict.metrics["max_abs_diff"] == pytest.approx(1e-12, rel=0.01)


def test_a_version_serving_cannot_load_against_its_config_fails(
        reg: registry.Registry, skops_version: tuple[Any, Any]) -> None:
    """The probe loads as `autopilot serve` does: a signature that disagrees with the config's features fails."""
    version, model = skops_version
    X = tiny_frame(10)
    report = evaluate_infra(version, X, model.predict_proba(X), ModelConfig.model_validate(adult_config_dict()),
                            LoadPolicy(), reg)
    assert not report.passed
    assert "loading or querying the model failed" in report.reasons[0], report.reasons
    assert "does not match the config's features" in report.reasons[0], report.reasons


def test_the_probe_measures_only_after_the_gates_own_work(
        reg: registry.Registry, skops_version: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The pyfunc checks run while the probe imports; the probe loads and measures only once they are done,
    and a failing pyfunc check fails the gate closed."""
    import time

    version, model = skops_version
    X = tiny_frame(10)
    checks = infra._pyfunc_checks

    def slow(*args: Any) -> dict[str, Any]:
        time.sleep(8.0)  # longer than the probe's start-up and imports
        return checks(*args)

    monkeypatch.setattr(infra, "_pyfunc_checks", slow)
    report = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert report.passed, report.reasons
    assert report.details["probe_waited_seconds"] > 0.5, report.details

    def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("pyfunc exploded")

    monkeypatch.setattr(infra, "_pyfunc_checks", broken)
    failed = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert not failed.passed
    assert failed.reasons == ["loading or querying the model failed: the MLflow pyfunc check failed: "
                              "RuntimeError: pyfunc exploded"], failed.reasons


def test_served_scores_are_compared_with_the_positive_class_column() -> None:
    """A binary endpoint answers the positive-class probability; predict_proba's last column is its reference."""
    proba = np.array([[0.9, 0.1], [0.3, 0.7]])
    assert infra._compare(proba[:, 1].copy(), proba)[:2] == (True, 0.0)
    changed = proba.copy()
    changed[1, 1] = 0.75
    equal, diff, compared = infra._compare(proba[:, 1].copy(), changed)
    assert not equal and diff == pytest.approx(0.05) and "positive-class column" in compared
    assert infra._compare(np.array([0.1, 0.7, 0.2]), proba)[0] is False  # rows differ: shapes differ


def test_a_changed_model_file_fails_before_loading(reg: registry.Registry, store: Settings, no_load: None) -> None:
    version, model = log_version(store)  # its own version: this one gets damaged
    model_file = reg.download(version.source) / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    X = tiny_frame(10)
    report = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert not report.passed
    assert "changed file model.skops" in report.reasons[0], report.reasons


def test_a_pickle_model_is_refused_without_allow_pickle(
        reg: registry.Registry, pickle_version: tuple[Any, Any], no_load: None) -> None:
    version, model = pickle_version
    X = tiny_frame(10)
    report = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert not report.passed and "refusing a pickle model" in report.reasons[0], report.reasons
    assert "serialization_format cloudpickle" in report.reasons[0]


def test_a_pickle_model_loads_when_allowed(reg: registry.Registry, pickle_version: tuple[Any, Any]) -> None:
    version, model = pickle_version
    X = tiny_frame(10)
    cfg = ModelConfig.model_validate(adult_config_dict(registry={"allow_pickle": True}, features=TINY_FEATURES,
                                                       sensitive_attributes=["sex"]))
    report = evaluate_infra(version, X, model.predict_proba(X), cfg, LoadPolicy(allow_pickle=True), reg)
    assert report.passed, report.reasons


def test_fails_closed(reg: registry.Registry, skops_version: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    version, model = skops_version
    X = tiny_frame(10)
    misaligned = evaluate_infra(version, X, model.predict_proba(X.head(5)), tiny_config(), LoadPolicy(), reg)
    assert not misaligned.passed and "one expected prediction each" in misaligned.reasons[0]
    monkeypatch.setattr(infra, "_run_probe", lambda *args: {"error": "the probe process died (exit code -9)"})
    died = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert not died.passed and "exit code -9" in died.reasons[0]

    def explode(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(infra.model_loading, "open_version", explode)
    broken = evaluate_infra(version, X, model.predict_proba(X), tiny_config(), LoadPolicy(), reg)
    assert not broken.passed and "could not run: OSError: disk gone" in broken.reasons[0]


@pytest.mark.slow
def test_a_pipeline_version_passes(small_adult: Callable[..., Path], settings: Any) -> None:
    from autopilot.cli import run_pipeline
    from autopilot.config import load_config
    from autopilot.pipeline.data import load_batch

    cfg = load_config(small_adult())
    ref = run_pipeline(cfg, settings, "infra", stop_after="register")
    reg = registry.connect(settings)
    version = reg.resolve_version(ref["name"], ref["version"])
    X = load_batch(cfg, cfg.resolve(cfg.data.test_source or "")).drop(columns=[cfg.target.column]).head(100)
    expected = load_version(version, LoadPolicy(), reg).predict_proba(X)
    report = evaluate_infra(version, X, expected, cfg, LoadPolicy(), reg)
    assert report.passed, report.reasons
    assert report.metrics["rows"] == 100 and report.metrics["max_abs_diff"] == 0.0



def test_probe_runs_from_a_daemonic_process_as_under_celery(tmp_path: Path) -> None:
    """Celery's prefork pool processes are daemonic; a task forked from one must still probe."""
    import multiprocessing

    from autopilot.adapters.registry.model_loading import VerifiedFiles
    from autopilot.gates.infra import _run_probe

    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    config["daemon"] = True
    try:  # an empty folder: the probe starts, fails to load, and says so (no AssertionError)
        files = VerifiedFiles(folder=tmp_path, name="empty", model_file=tmp_path / "model.skops",
                              serialization_format="skops", predict_fn="predict", manifest={}, signed=False,
                              allow_pickle=False)
        result = _run_probe(files, pd.DataFrame({"x": [1.0]}), 120, tiny_config(), 1, lambda: {})
    finally:
        config.pop("daemon", None)
    assert set(result) == {"error"}, result
    assert "daemonic" not in result["error"] and "died without an answer" not in result["error"], result
