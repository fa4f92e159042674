"""Bias drift (`monitoring.bias`): calibration on Adult, the decision it leads to, its record and its chart.

A fast native-categorical HistGradientBoosting is trained once on part of Adult's training split;
the fairness gate (`evaluate_fairness`, the real one) writes the promotion-time record on half of
the test split, and monitoring windows of 2,000 labeled rows are drawn from the other half (the
"live" pool), so the window and the record never share rows.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.config import LoadedConfig, ModelConfig, load_config
from autopilot.data.sources import canonicalize
from autopilot.monitoring.bias import GroupCounts, check_bias_drift, grouping_from, newcombe
from autopilot.monitoring.decision import decide
from autopilot.monitoring.simulate import shift_frame
from autopilot.ui.bias import bias_section
from autopilot.ui.lifecycle import ModelView, WindowView
from autopilot.ui.page import render_page
from tests.helpers import ADULT_CONFIG, PROJECT, adult_config_dict

WINDOW_ROWS = 2000
CONCEPT_STRENGTH = 0.1  # a tenth of the women's labels flipped (shift_frame's concept scenario)


@pytest.fixture(scope="module")
def cfg() -> LoadedConfig:
    return load_config(ADULT_CONFIG)


@pytest.fixture(scope="module")
def world(cfg: LoadedConfig) -> dict[str, Any]:
    """The model, the promotion-time fairness record, and the live pool with its scores."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder
    from threadpoolctl import threadpool_limits

    from autopilot.gates.fairness import evaluate_fairness
    from autopilot.modeling.splits import encode_target

    def read(name: str) -> pd.DataFrame:
        frame = canonicalize(pd.read_csv(PROJECT / "data/adult" / name), cfg)
        return frame.dropna(subset=[cfg.target.column]).reset_index(drop=True)

    features, categorical = list(cfg.features), cfg.categorical_features
    train = read("adult_train.csv.gz").sample(12_000, random_state=0)
    encoder = ColumnTransformer([("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                                      encoded_missing_value=-1), categorical)],
                                remainder="passthrough")
    model = make_pipeline(encoder, HistGradientBoostingClassifier(
        categorical_features=list(range(len(categorical))), max_iter=60, random_state=0))
    test = read("adult_test.csv.gz").sample(frac=1.0, random_state=0).reset_index(drop=True)
    holdout, pool = test.iloc[:8000].reset_index(drop=True), test.iloc[8000:].reset_index(drop=True)
    with threadpool_limits(limits=1):  # on a busy 2-core machine OpenMP threads made the fit ~10x slower
        model.fit(train[features], encode_target(train, cfg))
        record = evaluate_fairness(model, holdout[features], encode_target(holdout, cfg), cfg).model_dump(mode="json")
        scores = model.predict_proba(pool[features])[:, 1]
    return {"record": record, "pool": pool, "scores": scores}


def _window(world: dict[str, Any], cfg: ModelConfig, seed: int, labeled: bool = True) -> Any:
    pool = world["pool"]
    rows = np.random.default_rng(seed).choice(len(pool), WINDOW_ROWS, replace=False)
    labels = pool.loc[rows, cfg.target.column].to_numpy() if labeled else None
    return check_bias_drift(world["record"], pool.loc[rows, list(cfg.features)].reset_index(drop=True),
                            world["scores"][rows], labels, cfg)


def test_the_gate_records_the_label_counts_monitoring_compares_with(world: dict[str, Any]) -> None:
    sex = world["record"]["details"]["attributes"]["sex"]
    female = sex["by_group"]["Female"]
    assert female["positives"] + female["negatives"] == female["count"] > 2000
    assert sex["grouping"]["kind"] == "categorical"


def test_at_most_two_false_alarms_in_50_windows_without_change(world: dict[str, Any], cfg: LoadedConfig) -> None:
    results = [_window(world, cfg, seed=1000 + w, labeled=w % 2 == 0) for w in range(50)]
    alarms = [r.reasons for r in results if r.flagged]
    assert len(alarms) <= 2, alarms
    labeled = results[0]
    assert labeled.status == "ok" and labeled.labeled_rows == WINDOW_ROWS
    metrics = {c.metric for c in labeled.comparisons}
    assert metrics == {"selection_rate", "true_positive_rate", "false_positive_rate",
                       "demographic_parity_difference", "equalized_odds_difference"}
    assert {c.metric for c in results[1].comparisons} == {"selection_rate", "demographic_parity_difference"}
    # Bonferroni over every comparison of the window, not the nominal 95% per comparison.
    assert labeled.per_test_confidence == pytest.approx(1 - 0.05 / len(labeled.comparisons))
    female = next(c for c in labeled.comparisons if c.key == "sex=Female.selection_rate")
    assert female.ci is not None and female.ci[0] < 0 < female.ci[1]
    assert any("too few rows" in n for n in labeled.notes)  # race groups of a few dozen rows are not compared


def test_a_groups_shifted_labels_are_found_within_two_windows_in_95_percent_of_seeds(
        world: dict[str, Any], cfg: LoadedConfig) -> None:
    pool, features = world["pool"], list(cfg.features)
    found = 0
    reasons: list[str] = []
    for seed in range(40):
        for w in range(2):
            rows = np.random.default_rng([seed, w]).choice(len(pool), WINDOW_ROWS, replace=False)
            X, y, _ = shift_frame(pool.loc[rows].reset_index(drop=True), cfg, "concept", CONCEPT_STRENGTH,
                                  seed=seed * 10 + w, subgroup=("sex", "Female"))
            # The scenario changes labels only: the rows (and so the champion's scores) are the pool's, in order.
            assert X.equals(pool.loc[rows, features].reset_index(drop=True))
            result = check_bias_drift(world["record"], X, world["scores"][rows], y.to_numpy(), cfg)
            if result.flagged:
                found += 1
                reasons = result.reasons
                break
    assert found >= 38, found
    # The reason names the attribute, the group and the metric, with both values and the interval.
    assert any(r.startswith("bias drift: TPR of sex=Female ") and "at promotion (diff -" in r and "CI [" in r
               for r in reasons), reasons
    # The labels changed, not the predictions: the label-free selection rates stay quiet.
    assert not any("selection rate" in r for r in reasons), reasons


def test_too_few_rows_decide_nothing_and_a_missing_record_is_said(world: dict[str, Any], cfg: LoadedConfig) -> None:
    pool, scores = world["pool"], world["scores"]
    thin = check_bias_drift(world["record"], pool.iloc[:100][list(cfg.features)], scores[:100], None, cfg)
    assert thin.status == "insufficient" and not thin.flagged and not thin.comparisons
    assert "fewer than the 500" in thin.notes[0]
    none = check_bias_drift(None, pool.iloc[:600][list(cfg.features)], scores[:600], None, cfg)
    assert none.status == "unavailable" and not none.flagged
    off_raw = adult_config_dict(monitoring={"bias": {"enabled": False}})
    off = check_bias_drift(world["record"], pool.iloc[:600][list(cfg.features)], scores[:600], None,
                           ModelConfig.model_validate(off_raw))
    assert off.status == "off"


def test_a_flagged_window_alerts_or_retrains_with_its_reasons(world: dict[str, Any]) -> None:
    flagged = {"flagged": True, "reasons": ["bias drift: TPR of sex=Female 0.33 vs 0.61 at promotion"]}
    args: dict[str, Any] = {"drift": {"sufficient": True, "severity": "none", "reasons": []},
                            "performance": {"realized": None, "estimated": None}, "alarms": [],
                            "reference_metric": 0.9, "previous_champion_metric": None, "recent_retrain": False,
                            "triggers": [], "now": datetime(2026, 12, 1, tzinfo=UTC)}
    alert_cfg = ModelConfig.model_validate(adult_config_dict())
    alert = decide(alert_cfg, bias=flagged, **args)
    assert alert.action == "alert" and alert.reasons == flagged["reasons"]
    assert decide(alert_cfg, bias={"flagged": False, "reasons": []}, **args).action == "none"
    retrain_cfg = ModelConfig.model_validate(adult_config_dict(monitoring={"bias": {"action": "retrain"}}))
    retrain = decide(retrain_cfg, bias=flagged, **args)
    assert (retrain.action, retrain.strategy) == ("retrain", "refit")
    assert retrain.reasons == flagged["reasons"]


def test_the_summary_feeds_the_models_page_chart(world: dict[str, Any], cfg: LoadedConfig) -> None:
    result = _window(world, cfg, seed=7)
    summary = result.as_dict()["summary"]
    assert summary["window"]["sex=Female.true_positive_rate"] == pytest.approx(
        next(c.window for c in result.comparisons if c.key == "sex=Female.true_positive_rate"))

    class Window:
        def __init__(self, end: str, bias: dict[str, Any] | None) -> None:
            self.start, self.end, self.bias = end, end, bias

    flagged = {**summary, "flagged": ["sex=Female.true_positive_rate"]}
    html = bias_section([Window("2026-12-01T10:00:00+00:00", summary), Window("2026-12-01T11:00:00+00:00", None),
                         Window("2026-12-01T12:00:00+00:00", flagged)])
    assert html.count('class="bias-chart"') == 5  # one per metric
    assert 'data-metric="true_positive_rate"' in html and html.count('class="bias-point flagged"') == 1
    assert "1 of 3 windows flagged" in html and "sex=Female" in html
    assert "<script" not in html
    assert "No window compared" in bias_section([Window("2026-12-01T10:00:00+00:00", None)])
    # On the Models page, under the drift chart of the model's card.
    views = [WindowView(start=w.end, end=w.end, version=1, action="alert", rows=2000, drift_share=0.01, bias=w.bias)
             for w in (Window("2026-12-01T10:00:00+00:00", summary), Window("2026-12-01T11:00:00+00:00", flagged))]
    page = render_page([ModelView(name="adult_income", config_file="adult_income.yaml", windows=views)],
                       "2026-12-01T12:00:00+00:00", None)
    assert page.index('class="drift-chart"') < page.index('class="bias-chart"')
    assert "1 of 2 windows flagged" in page


def test_newcombe_interval_and_the_records_groupings() -> None:
    low, high = newcombe(30, 100, 30, 100, 0.95)
    assert low < 0 < high and math.isclose(-low, high)
    low, high = newcombe(60, 100, 30, 100, 0.95)
    assert 0.15 < low < 0.3 < high < 0.45  # Newcombe (1998), example: 0.30, about [0.16, 0.42]
    assert GroupCounts(rows=100, selected=20, positives=40, tp=15, fp=5).rate("false_positive_rate") == (5, 60)
    binned = grouping_from("age", {"kind": "quantile_bins", "edges": [30.0, 45.0], "labels": ["<30", "30–45", ">=45"]})
    assert list(binned.assign(pd.DataFrame({"age": [20, 30, 50]}))) == ["<30", "30–45", ">=45"]
    both = grouping_from("sex & race", {"kind": "intersection", "attributes": ["sex", "race"],
                                        "parts": {"sex": {"kind": "categorical"}, "race": {"kind": "categorical"}}})
    assert list(both.assign(pd.DataFrame({"sex": ["Male"], "race": ["Black"]}))) == ["sex=Male & race=Black"]


def test_an_older_record_without_label_counts_derives_them_from_the_rates(world: dict[str, Any],
                                                                          cfg: LoadedConfig) -> None:
    """Reports written before the gate stored `positives`/`negatives`: selection = p TPR + (1 - p) FPR gives p."""
    import copy

    older = copy.deepcopy(world["record"])
    for attr in older["details"]["attributes"].values():
        for entry in attr["by_group"].values():
            entry.pop("positives"), entry.pop("negatives")
    pool, rows = world["pool"], np.arange(WINDOW_ROWS)
    args = (pool.loc[rows, list(cfg.features)], world["scores"][rows], pool.loc[rows, cfg.target.column].to_numpy())
    new, old = check_bias_drift(world["record"], *args, cfg), check_bias_drift(older, *args, cfg)
    assert [c.key for c in old.comparisons] == [c.key for c in new.comparisons]
    for a, b in zip(old.comparisons, new.comparisons, strict=True):
        assert a.promoted == pytest.approx(b.promoted, abs=0.002) and a.promoted_rows == pytest.approx(
            b.promoted_rows, abs=2)


def test_the_stage_entry_point_skips_unchecked_models_and_turns_errors_into_an_alert(world: dict[str, Any],
                                                                                      cfg: LoadedConfig) -> None:
    from autopilot.monitoring.bias import window_bias

    pool, rows = world["pool"], np.arange(800)
    frame = pd.DataFrame({"version": [3] * 700 + [2] * 100, "prediction": world["scores"][rows],
                          "label": pool.loc[rows, cfg.target.column].to_numpy()})
    features = pool.loc[rows, list(cfg.features)].reset_index(drop=True)
    ok = window_bias(lambda: world["record"], features, frame, 3, cfg)
    assert ok["status"] == "ok" and ok["rows"] == 700 and ok["labeled_rows"] == 700  # the champion's rows only

    def broken() -> dict[str, Any]:
        raise KeyError("details")

    error = window_bias(broken, features, frame, 3, cfg)
    assert error["status"] == "error" and error["reasons"][0].startswith("bias drift could not be checked: KeyError")
    args: dict[str, Any] = {"drift": {"sufficient": True, "severity": "none", "reasons": []},
                            "performance": {"realized": None, "estimated": None}, "alarms": [],
                            "reference_metric": 0.9, "previous_champion_metric": None, "recent_retrain": False,
                            "triggers": [], "now": datetime(2026, 12, 1, tzinfo=UTC)}
    retrain_cfg = ModelConfig.model_validate(adult_config_dict(monitoring={"bias": {"action": "retrain"}}))
    assert decide(retrain_cfg, bias=error, **args).action == "alert"  # an error is said, never retrained on
    called: list[int] = []
    off_cfg = ModelConfig.model_validate(adult_config_dict(monitoring={"bias": {"enabled": False}}))
    off = window_bias(lambda: called.append(1) or None, features, frame, 3, off_cfg)
    assert off["status"] == "off" and not called  # nothing read for a model that is not checked
