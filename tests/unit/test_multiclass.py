"""Multiclass: the draft's task inference, the metrics, the quality gate's paired bootstrap, the served
answer and the inference-log record (synthetic data, fixed seeds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig, Task, load_config
from autopilot.config.draft import draft, draft_yaml, infer_task
from autopilot.gates.bootstrap import bootstrap_metric
from autopilot.gates.quality import evaluate_quality
from autopilot.modeling.multiclass import multiclass_metrics, prediction_record, read_prediction
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import make_splits
from autopilot.modeling.training import class_order, evaluate, predict_scores
from autopilot.modeling.tuning import score_pipeline

CLASSES = ["a", "b", "c"]
LINEAR = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard", "linear.C": 1.0}
HGB = {"family": "hist_gradient_boosting", "hgb.learning_rate": 0.1, "hgb.max_iter": 100, "hgb.max_leaf_nodes": 15,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.0}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def synthetic(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Three classes separated by x1 and x2 (plus noise); labels as text, as canonical frames hold them."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    logits = np.column_stack([2 * x1, 2 * x2, -x1 - x2]) + rng.gumbel(size=(n, 3))
    return pd.DataFrame({"x1": x1, "x2": x2, "noise": rng.normal(size=n),
                         "y": np.asarray(CLASSES, dtype=object)[logits.argmax(axis=1)]})


def mc_cfg(metric: str = "log_loss", **gates: Any) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "mc", "task": "multiclass_classification", "data": {"source": "d.csv"},
        "target": {"column": "y", "classes": CLASSES}, "metric": metric,
        "features": {name: {"type": "numeric"} for name in ("x1", "x2", "noise")},
        "split": {"seed": 1, "test_size": 0.3, "stratify": True, "cv_folds": 2},
        "gates": {"quality": {"bootstrap_samples": 300, "on_inconclusive": "fail", **gates}},
        "tuning": {"n_trials": 2, "timeout_seconds": 30, "families": ["linear", "hist_gradient_boosting"]},
    })


# ---------------------------------------------------------------------------- init-config


def _labels(count: int, n: int = 600, numeric: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % count  # every label present, at least a dozen rows each
    target = labels + 1 if numeric else np.asarray([f"k{v}" for v in labels], dtype=object)
    return pd.DataFrame({"x": rng.normal(size=n), "y": target})


@pytest.mark.parametrize(("count", "numeric", "task"), [
    (2, False, Task.BINARY_CLASSIFICATION), (3, False, Task.MULTICLASS_CLASSIFICATION),
    (50, False, Task.MULTICLASS_CLASSIFICATION), (5, True, Task.MULTICLASS_CLASSIFICATION),
    (11, True, Task.REGRESSION)])
def test_draft_infers_the_task_from_the_label_count(count: int, numeric: bool, task: Task) -> None:
    assert infer_task(_labels(count, numeric=numeric)["y"], "y") is task


def test_a_draft_with_51_labels_names_the_column_and_the_count() -> None:
    with pytest.raises(ValueError, match=r"target 'y' has 51 distinct labels; multiclass_classification takes 3 to 50"):
        draft(_labels(51, n=612), "y", "d.csv")
    with pytest.raises(ValueError, match="--task regression needs a numeric target"):
        draft(_labels(4), "y", "d.csv", task="regression")


def test_multiclass_draft_loads_with_every_class_and_log_loss(tmp_path: Path) -> None:
    frame = _labels(4, numeric=True).assign(religion=np.tile(["x", "y"], 300))
    drafted = draft(frame, "y", "d.csv", name="m", sensitive=["religion"])
    assert drafted.config["target"] == {"column": "y", "classes": [1, 2, 3, 4]}
    assert drafted.config["metric"] == "log_loss" and drafted.config["split"]["stratify"] is True
    text = draft_yaml(drafted)
    assert "--task regression to predict it as a number" in text
    assert "class 1 (the most frequent) for" in text  # label rates one-vs-rest, not "positive"
    (tmp_path / "m.yaml").write_text(text)
    cfg = load_config(tmp_path / "m.yaml")
    assert cfg.task is Task.MULTICLASS_CLASSIFICATION and cfg.target.positive_class is None
    with pytest.raises(ValueError, match="--positive-class applies to binary classification"):
        draft(frame, "y", "d.csv", positive_class="1")


def test_init_config_cli_drafts_a_multiclass_config_and_takes_task(tmp_path: Path) -> None:
    from autopilot.cli import main

    data = tmp_path / "grades.csv"
    _labels(4, numeric=True).to_csv(data, index=False)
    assert main(["init-config", "--data", str(data), "--target", "y", "--out", str(tmp_path / "grades.yaml")]) == 0
    assert load_config(tmp_path / "grades.yaml").task is Task.MULTICLASS_CLASSIFICATION
    out = tmp_path / "grades_r.yaml"
    assert main(["init-config", "--data", str(data), "--target", "y", "--task", "regression", "--out", str(out)]) == 0
    assert load_config(out).task is Task.REGRESSION


# ---------------------------------------------------------------------------- data and metrics


def test_split_is_stratified_and_a_tiny_class_is_a_clear_error() -> None:
    frame = synthetic()
    splits = make_splits(frame, None, mc_cfg())
    assert set(splits.y_train) == set(splits.y_test) == set(CLASSES) and splits.y_train.dtype == object
    share = splits.y_test.value_counts(normalize=True)
    assert (share - frame["y"].value_counts(normalize=True)).abs().max() < 0.01
    frame.loc[0, "y"] = "rare"
    with pytest.raises(ValueError, match=r"too few: 'rare' \(1 rows\)"):
        make_splits(frame, None, mc_cfg())


def test_metrics_match_sklearn_in_class_order() -> None:
    cfg = mc_cfg()
    splits = make_splits(synthetic(), None, cfg)
    model = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train, splits.y_train)
    proba = predict_scores(model, splits.X_test, cfg.task)
    assert proba.shape == (len(splits.X_test), 3) and class_order(model) == CLASSES
    got = evaluate(model, splits.X_test, splits.y_test, cfg.task)
    y = splits.y_test
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=CLASSES))
    assert got["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", labels=CLASSES))
    predicted = np.asarray(CLASSES, dtype=object)[proba.argmax(axis=1)]
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, predicted, average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert got["roc_auc_ovr"] > 0.8
    # The same columns in another order give the same metrics when the order is passed along.
    assert multiclass_metrics(y, proba[:, ::-1], CLASSES[::-1]) == pytest.approx(got)
    assert score_pipeline("f1_macro", model, splits.X_test, y, cfg.task) == pytest.approx(got["f1_macro"])


@pytest.mark.parametrize("metric", ["log_loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"])
def test_bootstrap_with_unit_weights_is_the_metric(metric: str) -> None:
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([1, 1, 1], size=200)
    y = rng.integers(0, 3, size=200)
    expected = multiclass_metrics(y, proba, [0, 1, 2])[metric]
    from autopilot.gates import bootstrap

    scorer = bootstrap._scorer(metric, y.astype(float), proba)  # the count-matrix scorer, all rows once
    assert scorer(np.ones((1, 200)))[0] == pytest.approx(expected)
    replicates = bootstrap_metric(metric, y.astype(float), [proba], 50, seed=0)
    assert replicates.shape == (1, 50) and np.isfinite(replicates).all()


@pytest.mark.parametrize("metric", ["roc_auc_ovr", "log_loss"])
def test_tuning_optimizes_a_multiclass_metric_in_its_direction(tmp_path: Path, metric: str) -> None:
    from autopilot.modeling.tuning import tune

    cfg = mc_cfg(metric)
    splits = make_splits(synthetic(600), None, cfg)
    result = tune(splits.X_train, splits.y_train, cfg, f"sqlite:///{tmp_path / 'o.db'}", "mc", n_trials=2)
    assert result.direction == ("minimize" if metric == "log_loss" else "maximize")
    assert result.n_complete >= 1 and np.isfinite(result.best_value)
    assert (0.7 < result.best_value <= 1.0) if metric == "roc_auc_ovr" else (0 < result.best_value < 1.0)


# ---------------------------------------------------------------------------- the quality gate


def test_quality_gate_compares_multiclass_models_by_paired_bootstrap() -> None:
    cfg = mc_cfg()
    splits = make_splits(synthetic(2000), None, cfg)
    # The classes are a multinomial logit of x1, x2: the linear model is the right one here (HGB is surely
    # worse than the linear baseline on this data, which the gate finds too).
    good = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train, splits.y_train)
    weak = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train[["noise"]].assign(x1=0.0, x2=0.0), splits.y_train)
    first = evaluate_quality(good, None, splits.X_test, splits.y_test, cfg, seed=1,
                             X_train=splits.X_train, y_train=splits.y_train)
    assert first.passed, first.reasons
    baselines = first.details["first_run_baselines"]
    assert baselines["prior"]["status"] == "pass" and baselines["prior"]["ci"][0] > 0
    assert baselines["linear"]["model"].startswith("LogisticRegression(C=1.0, multinomial)")
    # A challenger that learned nothing against a good champion: surely worse, with the interval.
    worse = evaluate_quality(weak, good, splits.X_test, splits.y_test, cfg, champion_version=1, seed=1)
    assert not worse.passed and worse.details["baseline"]["decision"] == "worse"
    assert worse.details["baseline"]["ci"][1] < -cfg.gates.quality.non_inferiority_margin
    assert "log_loss" in worse.reasons[0] and set(worse.metrics) >= {"roc_auc_ovr", "f1_macro"}


def test_quality_gate_fails_closed_on_a_label_the_challenger_never_learned() -> None:
    cfg = mc_cfg()
    splits = make_splits(synthetic(), None, cfg)
    model = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train, splits.y_train)
    y = splits.y_test.copy()
    y.iloc[0] = "zzz"
    report = evaluate_quality(model, None, splits.X_test, y, cfg, X_train=splits.X_train, y_train=splits.y_train)
    assert not report.passed and "labels the challenger never learned: ['zzz']" in report.reasons[0]


def test_quality_gate_aligns_a_champion_that_lacks_a_class() -> None:
    cfg = mc_cfg()
    splits = make_splits(synthetic(), None, cfg)
    challenger = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train, splits.y_train)
    known = splits.y_train != "c"
    champion = build_pipeline(LINEAR, cfg, 0).fit(splits.X_train[known], splits.y_train[known])
    assert class_order(champion) == ["a", "b"]
    report = evaluate_quality(challenger, champion, splits.X_test, splits.y_test, cfg, champion_version=1, seed=1)
    # The champion gives class c probability 0: clipped, its log loss is huge and the challenger is better.
    assert report.passed and report.details["baseline"]["decision"] == "better", report.reasons
    assert report.details["baseline"]["metrics"]["log_loss"] > 3 * report.metrics["log_loss"]


# ---------------------------------------------------------------------------- serving and the log


def test_served_answer_is_probabilities_by_label_and_the_argmax() -> None:
    from autopilot.serving import app
    from autopilot.serving.model import LoadedModel
    from autopilot.serving.schema import ServingSchema

    cfg = mc_cfg()
    splits = make_splits(synthetic(), None, cfg)
    pipeline = build_pipeline(HGB, cfg, 0).fit(splits.X_train, splits.y_train)
    model = LoadedModel(name="mc", version=1, pipeline=pipeline, cfg=cfg, schema=ServingSchema.from_config(cfg))
    rows = splits.X_test.head(7).to_dict("records")
    scores = model.predict_rows(rows)
    assert scores.shape == (7, 3) and model.describe()["classes"] == CLASSES
    answered, logged = app._answered(model, scores, model.labels(scores))
    for answer, record in zip(answered, logged, strict=True):
        assert list(answer) == CLASSES and sum(answer.values()) == pytest.approx(1.0)
        assert record["label"] == max(answer, key=answer.get)
        back = read_prediction(json.dumps(record))
        assert back.label == record["label"] and back.probabilities == list(answer.values())


def test_compiled_fast_path_serves_the_same_multiclass_probabilities() -> None:
    from autopilot.serving.compiled import compile_pipeline
    from autopilot.serving.model import LoadedModel
    from autopilot.serving.schema import ServingSchema

    cfg = mc_cfg()
    splits = make_splits(synthetic(), None, cfg)
    pipeline = build_pipeline(HGB, cfg, 0).fit(splits.X_train, splits.y_train)
    schema = ServingSchema.from_config(cfg)
    model = LoadedModel(name="mc", version=1, pipeline=pipeline, cfg=cfg, schema=schema)
    rows = splits.X_test.head(20).to_dict("records")
    slow = model.predict_rows(rows)
    model.compiled = compile_pipeline(pipeline, schema, splits.X_test.head(5))
    assert np.array_equal(model.predict_rows(rows), slow) and slow.shape == (20, 3)


def test_prediction_record_round_trip_and_refusals() -> None:
    record = prediction_record(np.str_("b"), np.array([0.2, 0.5, 0.3]))
    assert json.loads(json.dumps(record)) == {"label": "b", "probabilities": [0.2, 0.5, 0.3]}
    assert read_prediction(json.dumps(record)) == record
    for bad in ("0.7", '{"label": "b"}', "{not json", {"probabilities": [1.0]}):
        with pytest.raises(ValueError):
            read_prediction(bad)
    with pytest.raises(ValueError, match="finite"):
        prediction_record("a", [float("nan"), 1.0])



def test_validation_expects_the_class_set() -> None:
    """The expectation itself (running GX costs seconds; tests/unit/test_validation.py runs the same suite)."""
    from autopilot.data.validation import build_expectations

    found = [e for e in build_expectations(mc_cfg()) if type(e).__name__ == "ExpectColumnValuesToBeInSet"
             and e.column == "y"]
    assert len(found) == 1 and sorted(found[0].value_set) == CLASSES
