"""Performance per monitoring window: realized metrics, CBPE estimates and attribution drift.

One real Adult HGB (5,000 train rows, the serving tests' parameters) is fitted per module; its
calibrator is fitted on 6,000 other train rows it never saw, and windows are drawn from the
Adult test split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import LoadedConfig, Task, load_config
from autopilot.data.sources import canonicalize
from autopilot.explain import shap_attributions
from autopilot.modeling.splits import encode_target, feature_frame
from autopilot.modeling.training import fit_pipeline, metrics_from_scores, predict_scores
from autopilot.monitoring.performance import (
    Calibrator,
    Estimate,
    attribution_drift,
    estimate_performance,
    fit_calibrator,
    realized_performance,
    simulate_metrics,
)
from tests.helpers import ADULT_CONFIG
from tests.serving_support import HGB

WINDOW = 2000
CLASSIFICATION_KEYS = {"roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"}


@dataclass
class Champion:
    cfg: LoadedConfig
    model: Any
    calibrator: Calibrator
    holdout: pd.DataFrame        # canonical train rows the model never saw (the calibration rows)
    test: pd.DataFrame           # canonical Adult test rows: the pool windows are drawn from
    reference_shares: dict[str, float]

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return predict_scores(self.model, feature_frame(frame, self.cfg), self.cfg.task)


@pytest.fixture(scope="module")
def champion(adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Champion:
    cfg = load_config(ADULT_CONFIG)
    train = canonicalize(adult_frames[0], cfg)
    fit_rows = train.sample(5000, random_state=0)
    holdout = train.drop(fit_rows.index).sample(6000, random_state=1)
    model = fit_pipeline(HGB, cfg, feature_frame(fit_rows, cfg), encode_target(fit_rows, cfg), seed=0)
    scores = predict_scores(model, feature_frame(holdout, cfg), cfg.task)
    calibrator = fit_calibrator(scores, encode_target(holdout, cfg).to_numpy())
    # The explainability gate's champion shares: SHAP on held-out rows.
    reference = shap_attributions(model, feature_frame(holdout.head(500), cfg), cfg).shares()
    return Champion(cfg, model, calibrator, holdout, canonicalize(adult_frames[1], cfg), reference)


def realized_and_estimated(champion: Champion, window: pd.DataFrame,
                           labels: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, Estimate]]:
    scores = champion.scores(window)
    labels = window[champion.cfg.target.column].to_numpy() if labels is None else labels
    return (realized_performance(labels, scores, champion.cfg),
            estimate_performance(scores, champion.calibrator, champion.cfg, seed=0))


# ---------------------------------------------------------------------------- calibrator


def test_calibrator_round_trips_through_json_and_is_monotonic(champion: Champion) -> None:
    calibrator = champion.calibrator
    restored = Calibrator.from_dict(json.loads(json.dumps(calibrator.as_dict())))
    grid = np.linspace(-0.5, 1.5, 2001)  # beyond [0, 1]: clipped to the end values
    assert restored == calibrator and restored != Calibrator(x=np.array([0.0]), y=np.array([0.5]))
    np.testing.assert_array_equal(restored(grid), calibrator(grid))
    calibrated = calibrator(grid)
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated.min() >= 0.0 and calibrated.max() <= 1.0
    assert calibrated[0] == calibrator.y[0] and calibrated[-1] == calibrator.y[-1]
    # Isotonic regression preserves the mean: on its own rows the calibrated probabilities
    # average to the positive rate.
    holdout_scores = champion.scores(champion.holdout)
    positive_rate = encode_target(champion.holdout, champion.cfg).mean()
    assert calibrator(holdout_scores).mean() == pytest.approx(positive_rate, abs=1e-9)


def test_calibrator_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="0/1"):
        fit_calibrator(np.array([0.2, 0.8]), np.array(["<=50K", ">50K"]))
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.2, 0.8]), np.array([1, 1]))
    with pytest.raises(ValueError, match="no rows"):
        fit_calibrator(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator.from_dict({"x": [0.0, 1.0], "y": [0.9, 0.1]})
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibrator.from_dict({"method": "platt", "x": [0.0], "y": [0.5]})


# ---------------------------------------------------------------------------- the estimator itself


def test_simulated_metrics_match_sklearn_on_each_draw() -> None:
    """The vectorized per-draw metrics (rank-sum AUC, log loss, Brier, counts) equal sklearn's."""
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(400), 2)  # rounded: ties, which AUC must average
    p = np.clip(scores + rng.normal(0, 0.1, 400), 0, 1)
    predicted = scores >= 0.5
    draws = simulate_metrics(scores, p, predicted, 5, np.random.default_rng(7))
    labels = np.random.default_rng(7).random((5, 400)) < p  # the same draws
    for i in range(5):
        expected = metrics_from_scores(pd.Series(labels[i].astype(int)), scores, Task.BINARY_CLASSIFICATION, 0.5)
        for name in CLASSIFICATION_KEYS:
            assert draws[name][i] == pytest.approx(expected[name], abs=1e-9), name


def test_closed_forms_agree_with_monte_carlo_when_perfectly_calibrated(champion: Champion) -> None:
    identity = Calibrator(x=np.array([0.0, 1.0]), y=np.array([0.0, 1.0]))
    scores = np.random.default_rng(0).random(3000)
    estimates = estimate_performance(scores, identity, champion.cfg, n_simulations=400, seed=1)
    draws = simulate_metrics(scores, scores, scores >= champion.cfg.gates.fairness.threshold, 400,
                             np.random.default_rng(1))
    assert set(estimates) == CLASSIFICATION_KEYS
    for name, estimate in estimates.items():
        assert estimate.low <= estimate.value <= estimate.high, name
        # The closed form is the exact expectation (or, for recall/F1, within O(1/n) of it).
        assert estimate.value == pytest.approx(np.mean(draws[name]), abs=4 * estimate.std / 20 + 1e-3), name
    assert estimates["roc_auc"].method == "cbpe_mc" and estimates["accuracy"].method == "cbpe"
    # Uniform scores calibrated to themselves: accuracy E = mean(max(s, 1 - s)) = 0.75.
    assert estimates["accuracy"].value == pytest.approx(0.75, abs=0.01)


def test_estimate_is_seeded_and_validates_its_inputs(champion: Champion) -> None:
    scores = champion.scores(champion.test.head(300))
    first = estimate_performance(scores, champion.calibrator, champion.cfg, seed=5)
    assert estimate_performance(scores, champion.calibrator, champion.cfg, seed=5) == first
    assert estimate_performance(scores, champion.calibrator, champion.cfg, seed=6)["roc_auc"] != first["roc_auc"]
    assert json.loads(json.dumps(first["accuracy"].as_dict()))["metric"] == "accuracy"
    with pytest.raises(ValueError, match="no scores"):
        estimate_performance(np.array([]), champion.calibrator, champion.cfg)
    with pytest.raises(ValueError, match="n_simulations"):
        estimate_performance(scores, champion.calibrator, champion.cfg, n_simulations=1)
    with pytest.raises(ValueError, match="confidence"):
        estimate_performance(scores, champion.calibrator, champion.cfg, confidence=1.0)
    with pytest.raises(ValueError, match="finite"):
        estimate_performance(np.array([0.2, math.nan]), champion.calibrator, champion.cfg)
    regression = champion.cfg.model_copy(update={"task": Task.REGRESSION})
    with pytest.raises(NotImplementedError, match="binary classification only"):
        estimate_performance(scores, champion.calibrator, regression)


# ---------------------------------------------------------------------------- on Adult windows


def test_no_shift_estimate_matches_realized(champion: Champion) -> None:
    window = champion.test.sample(WINDOW, random_state=0)
    realized, estimated = realized_and_estimated(champion, window)
    assert realized["rows"] == WINDOW
    assert champion.cfg.metric in estimated
    for name in ("roc_auc", "accuracy"):
        estimate, actual = estimated[name], realized[name]
        assert estimate.low <= actual <= estimate.high or abs(estimate.value - actual) <= 0.02, (name, estimate, actual)
        assert 0 < estimate.std < 0.02


def test_covariate_shift_estimate_tracks_realized(champion: Champion) -> None:
    test = champion.test
    base = test.sample(WINDOW, random_state=0)
    z_age = (test["age"] - test["age"].mean()) / test["age"].std()
    z_edu = (test["education_num"] - test["education_num"].mean()) / test["education_num"].std()
    shifted = test.sample(WINDOW, weights=np.exp(0.8 * z_age + 0.8 * z_edu), random_state=0)
    assert shifted["age"].mean() > base["age"].mean() + 8  # ~48 vs ~39 years
    realized_base, estimated_base = realized_and_estimated(champion, base)
    realized, estimated = realized_and_estimated(champion, shifted)
    # The shift matters: far more positives, and accuracy really drops ...
    assert realized_base["accuracy"] - realized["accuracy"] > 0.03
    # ... and the label-free estimate follows it, because P(y | x) is unchanged.
    for name in ("roc_auc", "accuracy"):
        assert abs(estimated[name].value - realized[name]) <= 0.03, (name, estimated[name], realized[name])
    assert estimated_base["accuracy"].value - estimated["accuracy"].value > 0.03


def test_concept_shift_is_invisible_to_the_estimate(champion: Champion) -> None:
    """Label-free estimation cannot see concept drift: the features (hence scores) are unchanged,
    only the labels moved. This is why realized metrics from /feedback labels are still needed."""
    window = champion.test.sample(WINDOW, random_state=0)
    target = champion.cfg.target.column
    flipped = window[target].to_numpy().copy()
    women = (window["sex"] == "Female").to_numpy()
    flipped[women] = np.where(flipped[women] == ">50K", "<=50K", ">50K")
    realized_before, estimated_before = realized_and_estimated(champion, window)
    realized_after, estimated_after = realized_and_estimated(champion, window, flipped)
    assert realized_before["accuracy"] - realized_after["accuracy"] > 0.2  # ~0.86 -> ~0.57
    assert realized_before["roc_auc"] - realized_after["roc_auc"] > 0.2
    assert estimated_after == estimated_before  # blind to the change
    assert estimated_after["accuracy"].value - realized_after["accuracy"] > 0.2
    assert realized_after["accuracy"] < estimated_after["accuracy"].low


# ---------------------------------------------------------------------------- realized


def test_realized_performance_accepts_served_or_encoded_labels(champion: Champion) -> None:
    cfg = champion.cfg
    window = champion.test.head(500)
    scores = champion.scores(window)
    served = window[cfg.target.column].to_numpy()
    encoded = encode_target(window, cfg)
    expected = metrics_from_scores(encoded, scores, cfg.task, cfg.gates.fairness.threshold)
    from_strings = realized_performance(served, scores, cfg)
    assert from_strings == {**expected, "rows": 500.0}
    assert realized_performance(encoded.to_numpy(), scores, cfg) == from_strings
    assert realized_performance(encoded.to_numpy().astype(bool), scores, cfg) == from_strings
    assert realized_performance(encoded.astype(str).to_numpy(), scores, cfg) == from_strings
    assert realized_performance(np.asarray(served.tolist(), dtype=object), scores, cfg) == from_strings
    one_class = realized_performance(np.array([">50K"] * 3), np.array([0.9, 0.2, 0.6]), cfg)
    assert math.isnan(one_class["roc_auc"]) and one_class["accuracy"] == pytest.approx(2 / 3)


def test_realized_performance_rejects_what_it_cannot_measure(champion: Champion) -> None:
    cfg = champion.cfg
    with pytest.raises(ValueError, match="no labeled rows"):
        realized_performance(np.array([]), np.array([]), cfg)
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        realized_performance(np.array([">50K", "<=50K"]), np.array([0.1, 0.2, 0.3]), cfg)
    with pytest.raises(ValueError, match="missing"):
        realized_performance(np.array([">50K", None]), np.array([0.1, 0.2]), cfg)
    with pytest.raises(ValueError, match="neither target.classes"):
        realized_performance(np.array([">50K", "maybe"]), np.array([0.1, 0.2]), cfg)
    regression = cfg.model_copy(update={"task": Task.REGRESSION})
    result = realized_performance(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]), regression)
    assert result["mae"] == pytest.approx(1 / 3) and result["rows"] == 3.0


# ---------------------------------------------------------------------------- attributions


def test_attribution_drift_same_distribution_is_stable(champion: Champion) -> None:
    window = champion.test.sample(WINDOW, random_state=0)
    drift = attribution_drift(champion.model, window, champion.cfg, champion.reference_shares)
    assert drift["rows"] == 500 and drift["method"] == "tree" and drift["k"] == champion.cfg.gates.explainability.top_k
    assert drift["ndcg_at_k"] >= 0.9 and not drift["drifted"]
    assert sum(drift["shares"].values()) == pytest.approx(1.0)
    assert [t["feature"] for t in drift["top_features"][:2]] == [t["feature"] for t in
                                                                 drift["reference_top_features"][:2]]


def test_attribution_drift_frozen_features(champion: Champion) -> None:
    """Path-dependent TreeSHAP attributes against the *training* distribution, so a frozen
    feature loses its share only when frozen near its neutral value; frozen at an informative
    value it keeps it (relationship all "Husband": 0.20 -> 0.20)."""
    cfg, model, reference = champion.cfg, champion.model, champion.reference_shares
    window = feature_frame(champion.test.sample(WINDOW, random_state=0), cfg)
    same = attribution_drift(model, window, cfg, reference)

    husband = attribution_drift(model, window.assign(relationship="Husband"), cfg, reference)
    assert husband["shares"]["relationship"] == pytest.approx(reference["relationship"], rel=0.25)

    # Age (the reference's top feature) frozen at 30: its share collapses, the ranking moves.
    age = attribution_drift(model, window.assign(age=30), cfg, reference)
    assert age["shares"]["age"] < reference["age"] / 2
    assert age["top_features"][0]["feature"] != "age" == age["reference_top_features"][0]["feature"]
    assert age["ndcg_at_k"] < same["ndcg_at_k"] - 0.05
    assert age["share_change"]["age"] < -0.1

    # An upstream bug filling defaults into several columns: drifted past the gate's bound.
    defaults = attribution_drift(model, window.assign(age=30, capital_gain=0, capital_loss=0), cfg, reference)
    assert defaults["ndcg_at_k"] < cfg.gates.explainability.min_ndcg and defaults["drifted"]


def test_attribution_drift_rejects_bad_inputs(champion: Champion) -> None:
    cfg, model = champion.cfg, champion.model
    window = champion.test.head(10)
    with pytest.raises(ValueError, match="no rows"):
        attribution_drift(model, window.head(0), cfg, champion.reference_shares)
    with pytest.raises(ValueError, match="no importance"):
        attribution_drift(model, window, cfg, {name: 0.0 for name in cfg.features})
    with pytest.raises(ValueError, match="max_rows"):
        attribution_drift(model, window, cfg, champion.reference_shares, max_rows=0)
