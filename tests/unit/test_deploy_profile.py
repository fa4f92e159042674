from __future__ import annotations

import json
from collections.abc import Iterator

import mlflow.sklearn
import pandas as pd
import pytest
import skops.io
from threadpoolctl import threadpool_limits

from autopilot.adapters.registry import sha256_manifest
from autopilot.adapters.registry.model_loading import LoadPolicy, VerifiedFiles, verify_folder
from autopilot.config import ModelConfig
from autopilot.data.sources import canonicalize
from autopilot.deploy.profile import Profile, artifact_size, profile_model
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import make_splits
from tests.helpers import adult_config_dict

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "constant", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 50, "hgb.max_leaf_nodes": 31,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}
BATCHES = (1, 8, 64, 256, 1024)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP outside the measured sections (profile_model sets its own limits)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def saved_model(adult_frames: tuple[pd.DataFrame, pd.DataFrame],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[VerifiedFiles, pd.DataFrame]:
    """A small Adult HGB model saved as an MLflow skops model, and feature rows to predict on."""
    cfg = ModelConfig.model_validate(adult_config_dict())
    train = canonicalize(adult_frames[0].sample(3000, random_state=0).reset_index(drop=True), cfg)
    splits = make_splits(train, canonicalize(adult_frames[1].head(500), cfg), cfg)
    X = splits.X_test
    with threadpool_limits(limits=1):  # module fixtures run before the autouse one
        model = build_pipeline(HGB, cfg, seed=0).fit(splits.X_train, splits.y_train)
    path = tmp_path_factory.mktemp("profile") / "model"
    mlflow.sklearn.save_model(model, str(path), serialization_format="skops",
                              skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                              pyfunc_predict_fn="predict_proba")
    return verify_folder(path, sha256_manifest(path), LoadPolicy(), name="profile test"), X.head(500)


@pytest.fixture(scope="module")
def measured(saved_model: tuple[VerifiedFiles, pd.DataFrame]) -> Profile:
    path, X = saved_model
    return profile_model(path, X, batch_sizes=BATCHES, cores=(1, 2), single_row_calls=60, repeats=2)


def test_profile_of_a_real_model_has_sane_numbers(saved_model: tuple[VerifiedFiles, pd.DataFrame],
                                                  measured: Profile) -> None:
    p = measured
    print(json.dumps(p.as_dict(), indent=1))
    assert p.artifact_bytes == artifact_size(saved_model[0].folder) and 10_000 < p.artifact_bytes < 50_000_000
    assert 0 < p.load_seconds < 30
    assert 50 < p.peak_rss_mb < 16_000  # the whole process: interpreter, libraries, model
    lat = p.latency_ms
    assert set(lat) == {"p50", "p95", "p99"}
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 2_000
    assert p.cores_measured == [1, 2]
    assert set(p.throughput_rps) == {"1", "2"}
    for per in p.throughput_rps.values():
        assert set(per) == {str(b) for b in BATCHES}
        assert all(r > 0 for r in per.values())
        assert per["1024"] > per["1"]  # batching amortises the per-call overhead
    assert p.throughput(1, 1) == p.throughput_rps["1"]["1"]


def test_profile_round_trips_through_json(measured: Profile) -> None:
    data = json.loads(json.dumps(measured.as_dict()))
    assert Profile.from_dict(data) == measured


def test_profile_rejects_empty_input(saved_model: tuple[VerifiedFiles, pd.DataFrame]) -> None:
    path, X = saved_model
    with pytest.raises(ValueError, match="empty"):
        profile_model(path, X.iloc[:0])
    with pytest.raises(ValueError, match="positive"):
        profile_model(path, X, cores=())


