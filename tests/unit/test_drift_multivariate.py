"""Multivariate drift (PCA data reconstruction): calibration, what the per-column checks miss, storage, decision."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import LoadedConfig, ModelConfig, load_config
from autopilot.data.sources import canonicalize
from autopilot.monitoring.decision import decide
from autopilot.monitoring.drift import (
    MultivariateReference,
    ReferenceProfile,
    build_reference,
    check_drift,
    check_multivariate,
)
from autopilot.pipeline.run_notes import monitoring_note
from tests.helpers import ADULT_CONFIG, PROJECT


def _gaussian_cfg(**multivariate: Any) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "gaussian", "task": "binary_classification", "data": {"source": "unused.csv"},
        "target": {"column": "y", "positive_class": "1"}, "metric": "roc_auc",
        "features": {"a": {"type": "numeric"}, "b": {"type": "numeric"}, "c": {"type": "numeric"},
                     "d": {"type": "numeric"}, "color": {"type": "categorical"}},
        "monitoring": {"drift": {"multivariate": multivariate}}})


def _gaussian(rows: int, rng: np.random.Generator, rho: float = 0.8, shift: float = 0.0) -> pd.DataFrame:
    """a and b standard normal with correlation `rho`; c, d and color independent; `shift` moves a's mean."""
    a = rng.standard_normal(rows)
    b = rho * a + np.sqrt(1 - rho**2) * rng.standard_normal(rows)
    color = rng.choice(np.array(["red", "green", "blue"], dtype=object), size=rows, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({"a": a + shift, "b": b, "c": rng.standard_normal(rows), "d": 2.0 + rng.standard_normal(rows),
                         "color": color})


@pytest.fixture(scope="module")
def gaussian_profile() -> ReferenceProfile:
    return build_reference(_gaussian(20_000, np.random.default_rng(0)), None, _gaussian_cfg(), None)


@pytest.fixture(scope="module")
def adult_cfg() -> LoadedConfig:
    return load_config(ADULT_CONFIG)


@pytest.fixture(scope="module")
def adult(adult_cfg: LoadedConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference: the training file, held-out: the test file), canonical."""
    def read(name: str) -> pd.DataFrame:
        return canonicalize(pd.read_csv(PROJECT / "data/adult" / name), adult_cfg, require_target=False)
    return read("adult_train.csv.gz"), read("adult_test.csv.gz")


@pytest.fixture(scope="module")
def adult_profile(adult: tuple[pd.DataFrame, pd.DataFrame], adult_cfg: LoadedConfig) -> ReferenceProfile:
    return build_reference(adult[0], None, adult_cfg, None)


def _rows(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.choice(len(frame), size=rows, replace=True)].reset_index(drop=True)


# ---------------------------------------------------------------------------- calibration


def test_undrifted_windows_rarely_alarm(gaussian_profile: ReferenceProfile, adult: tuple[pd.DataFrame, pd.DataFrame],
                                        adult_profile: ReferenceProfile, adult_cfg: LoadedConfig) -> None:
    """At most 2 alarms in 50 undrifted windows: fresh Gaussian draws, and Adult's held-out test rows.

    Also none in 10 Adult windows of 20,000 rows: the test file sits 1.3% above the training
    file's error (other people), which the sampling bound alone would flag at that size; the
    effect-size floor `min_error_change` does not.
    """
    cfg = _gaussian_cfg()
    gaussian = [check_multivariate(gaussian_profile.multivariate, _gaussian(1000, np.random.default_rng(100 + s)),
                                   cfg) for s in range(50)]
    held_out = adult[1]
    adult_results = [check_multivariate(adult_profile.multivariate, _rows(held_out, 2000, np.random.default_rng(s)),
                                        adult_cfg) for s in range(50)]
    large = [check_multivariate(adult_profile.multivariate, _rows(held_out, 20_000, np.random.default_rng(s)),
                                adult_cfg) for s in range(10)]
    assert not any(r.drifted for r in large), [r.reason for r in large if r.drifted]
    for results in (gaussian, adult_results):
        assert all(r.checked and r.sufficient for r in results)
        alarms = [r.reason for r in results if r.drifted]
        assert len(alarms) <= 2, alarms


def test_a_correlation_flip_is_found_where_the_per_column_checks_see_nothing(
        gaussian_profile: ReferenceProfile) -> None:
    """rho 0.8 -> -0.8 between a and b: every marginal as before; multivariate drift, per-column nothing."""
    cfg = _gaussian_cfg()
    for seed in range(10):
        window = _gaussian(1000, np.random.default_rng(200 + seed), rho=-0.8)
        per_column = check_drift(gaussian_profile, window, None, cfg)
        assert per_column.sufficient and per_column.drifted_columns == [] and per_column.severity == "none", (
            seed, per_column.reasons)
        found = check_multivariate(gaussian_profile.multivariate, window, cfg)
        assert found.drifted and found.error is not None and found.upper is not None and found.error > found.upper, (
            seed, found.reason)
        assert found.reason.startswith("multivariate drift: reconstruction error")
        assert "PCA, 3 components" in found.reason


def test_a_broken_relation_in_adult_is_found_where_the_per_column_checks_see_nothing(
        adult: tuple[pd.DataFrame, pd.DataFrame], adult_profile: ReferenceProfile, adult_cfg: LoadedConfig) -> None:
    """relationship shuffled within held-out windows: its marginal as before, its tie to marital status and sex gone."""
    for seed in range(10):
        rng = np.random.default_rng(300 + seed)
        window = _rows(adult[1], 2000, rng)
        window["relationship"] = rng.permutation(window["relationship"].to_numpy())
        per_column = check_drift(adult_profile, window, None, adult_cfg)
        assert per_column.drifted_columns == [] and per_column.severity == "none", (seed, per_column.reasons)
        assert check_multivariate(adult_profile.multivariate, window, adult_cfg).drifted, seed


def test_a_mean_shift_is_found(gaussian_profile: ReferenceProfile, adult: tuple[pd.DataFrame, pd.DataFrame],
                               adult_profile: ReferenceProfile, adult_cfg: LoadedConfig) -> None:
    """One Gaussian column moved 1 sd; Adult's age and hours_per_week moved 1 sd."""
    cfg = _gaussian_cfg()
    assert all(check_multivariate(gaussian_profile.multivariate,
                                  _gaussian(1000, np.random.default_rng(400 + s), shift=1.0), cfg).drifted
               for s in range(20))
    reference = adult[0]
    hits = 0
    for seed in range(20):
        window = _rows(adult[1], 2000, np.random.default_rng(500 + seed))
        for name in ("age", "hours_per_week"):
            window[name] = window[name] + float(np.std(reference[name]))
        hits += check_multivariate(adult_profile.multivariate, window, adult_cfg).drifted
    assert hits >= 19


def test_inputs_stuck_at_a_value_fall_below_the_lower_bound(gaussian_profile: ReferenceProfile) -> None:
    window = _gaussian(1000, np.random.default_rng(7))
    window["c"] = 0.0
    window["d"] = 2.0
    found = check_multivariate(gaussian_profile.multivariate, window, _gaussian_cfg())
    assert found.drifted and found.error is not None and found.lower is not None and found.error < found.lower
    assert "below the reference's lower bound" in found.reason


# ---------------------------------------------------------------------------- fail closed, config


def test_too_few_rows_decide_nothing(gaussian_profile: ReferenceProfile) -> None:
    window = _gaussian(99, np.random.default_rng(1), rho=-0.8)
    found = check_multivariate(gaussian_profile.multivariate, window, _gaussian_cfg())
    assert not found.sufficient and not found.checked and not found.drifted and found.error is None
    assert found.reason.startswith("insufficient data: 99 rows")
    with pytest.raises(ValueError, match="missing feature column"):
        check_multivariate(gaussian_profile.multivariate, window.drop(columns="b"), _gaussian_cfg())


def test_disabled_or_unfitted_is_reported_not_decided() -> None:
    cfg = _gaussian_cfg(enabled=False)
    profile = build_reference(_gaussian(1000, np.random.default_rng(0)), None, cfg, None)
    assert profile.multivariate is None
    found = check_multivariate(None, _gaussian(500, np.random.default_rng(1)), cfg)
    assert not found.checked and not found.drifted and "disabled" in found.reason
    small = build_reference(_gaussian(150, np.random.default_rng(0)), None, _gaussian_cfg(), None)
    assert small.multivariate is None  # 150 rows cannot give 100 to fit and 100 to measure
    found = check_multivariate(None, _gaussian(500, np.random.default_rng(1)), _gaussian_cfg())
    assert not found.checked and "no fitted check" in found.reason


def test_a_single_feature_has_nothing_to_reconstruct() -> None:
    raw = _gaussian_cfg().model_dump(mode="json")
    raw["features"] = {"a": {"type": "numeric"}}
    cfg = ModelConfig.model_validate(raw)
    profile = build_reference(_gaussian(1000, np.random.default_rng(0)), None, cfg, None)
    assert profile.multivariate is not None and profile.multivariate.error_mean == pytest.approx(0.0, abs=1e-6)
    found = check_multivariate(profile.multivariate, _gaussian(500, np.random.default_rng(1), shift=3.0), cfg)
    assert not found.checked and not found.drifted and "no error to compare" in found.reason


def test_explained_variance_sets_the_components(gaussian_profile: ReferenceProfile) -> None:
    frame = _gaussian(4000, np.random.default_rng(0))
    more = build_reference(frame, None, _gaussian_cfg(explained_variance=0.95), None).multivariate
    assert gaussian_profile.multivariate is not None and more is not None
    # Eigenvalues about 1.8, 1, 1, 1 and 0.2 (of 5): 0.65 needs three components, 0.95 four.
    assert gaussian_profile.multivariate.components.shape == (3, 5) and more.components.shape == (4, 5)
    assert gaussian_profile.multivariate.explained >= 0.65 and more.explained >= 0.95
    with pytest.raises(ValueError, match="explained_variance"):
        _gaussian_cfg(explained_variance=1.5)


# ---------------------------------------------------------------------------- storage


def test_the_reference_round_trips_without_pickle(tmp_path: Path, adult: tuple[pd.DataFrame, pd.DataFrame],
                                                   adult_profile: ReferenceProfile, adult_cfg: LoadedConfig) -> None:
    path = tmp_path / "reference.npz"
    adult_profile.save(path)
    with np.load(path, allow_pickle=False) as data:  # refuses object arrays: nothing pickled
        assert all(data[name].dtype.kind != "O" for name in data.files)
        assert {"mv_center", "mv_scale", "mv_mean", "mv_components"} <= set(data.files)
        assert "multivariate" in json.loads(str(data["meta"]))
    loaded = ReferenceProfile.load(path).multivariate
    original = adult_profile.multivariate
    assert isinstance(loaded, MultivariateReference) and original is not None
    for name in ("center", "scale", "mean", "components"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    assert (loaded.features, loaded.fill, loaded.frequencies) == (original.features, original.fill,
                                                                  original.frequencies)
    window = _rows(adult[1], 2000, np.random.default_rng(0))
    assert check_multivariate(loaded, window, adult_cfg) == check_multivariate(original, window, adult_cfg)
    # A profile stored before the check existed (or with it disabled) still loads, without it.
    ReferenceProfile(**{**adult_profile.__dict__, "multivariate": None}).save(tmp_path / "old.npz")
    assert ReferenceProfile.load(tmp_path / "old.npz").multivariate is None


def test_a_damaged_stored_reference_is_refused(gaussian_profile: ReferenceProfile) -> None:
    assert gaussian_profile.multivariate is not None
    meta, arrays = gaussian_profile.multivariate.to_stored()
    with pytest.raises(ValueError, match="do not fit"):
        MultivariateReference.from_stored(meta, {**arrays, "center": arrays["center"][:2]})
    with pytest.raises(ValueError, match="incomplete"):
        MultivariateReference.from_stored({k: v for k, v in meta.items() if k != "fill"}, arrays)


# ---------------------------------------------------------------------------- the decision


def _decide(cfg: ModelConfig, multivariate: dict[str, Any]) -> Any:
    drift = {"sufficient": True, "severity": "none", "reasons": ["severity: none"], "multivariate": multivariate}
    now = datetime(2026, 12, 7, 2, tzinfo=UTC)
    return decide(cfg, drift=drift, performance={"realized": None, "estimated": None}, alarms=[],
                  reference_metric=None, previous_champion_metric=None, recent_retrain=False, triggers=[], now=now)


def test_a_detection_alerts_or_retrains_per_config(gaussian_profile: ReferenceProfile) -> None:
    window = _gaussian(1000, np.random.default_rng(9), rho=-0.8)
    found = check_multivariate(gaussian_profile.multivariate, window, _gaussian_cfg()).as_dict()
    assert found["method"] == "pca_reconstruction" and found["drifted"]
    json.dumps(found)  # JSON-ready, as the window report needs
    alert = _decide(_gaussian_cfg(), found)
    assert alert.action == "alert" and alert.reasons == [found["reason"]]
    retrain = _decide(_gaussian_cfg(action="retrain"), found)
    assert (retrain.action, retrain.strategy) == ("retrain", "refit") and found["reason"] in retrain.reasons
    quiet = check_multivariate(gaussian_profile.multivariate, _gaussian(1000, np.random.default_rng(9)),
                               _gaussian_cfg()).as_dict()
    assert _decide(_gaussian_cfg(action="retrain"), quiet).action == "none"
    note = monitoring_note({"action": alert.action, "reasons": alert.reasons, "rows": 1000,
                            "window_start": "2026-12-07T01:00:00+00:00", "window_end": "2026-12-07T02:00:00+00:00"})
    assert "multivariate drift: reconstruction error" in note
