"""Splits, metrics and the Optuna study: seeded, resumable, prunable (small data, fast)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import FixedTrial, FrozenTrial, TrialState
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import log_loss, roc_auc_score, root_mean_squared_error
from threadpoolctl import threadpool_limits

from autopilot.config import ModelConfig
from autopilot.modeling import tuning
from autopilot.modeling.search_space import build_pipeline
from autopilot.modeling.splits import encode_target, make_splits
from autopilot.modeling.tuning import TuningError, make_objective, plot_history, score, tune

# Two fast families keep each study at a few seconds; the other families are covered by
# test_search_space.
FAST = ["linear", "hist_gradient_boosting"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: on a few hundred rows HGB's thread start-up dominates (measured
    20x slower with 2 threads on a busy 2-core machine), and tests must not depend on the load."""
    with threadpool_limits(limits=1):
        yield


def _config(task: str = "binary_classification", **overrides: Any) -> ModelConfig:
    numeric = [f"f{i}" for i in range(5)]
    body: dict[str, Any] = {
        "name": "unit_model",
        "task": task,
        "data": {"source": "unused.csv"},
        "features": {**{name: {"type": "numeric"} for name in numeric}, "colour": {"type": "categorical"}},
        "metric": "roc_auc" if task == "binary_classification" else "rmse",
        "tuning": {"n_trials": 6, "n_startup_trials": 3, "families": FAST, "seed": 11},
    }
    body["target"] = {"column": "label", "positive_class": "yes"} if task == "binary_classification" else {
        "column": "label"
    }
    body.update(overrides)
    return ModelConfig.model_validate(body)


def _frame(task: str = "binary_classification", seed: int = 0) -> pd.DataFrame:
    """A canonical frame: float64 numerics, object categorical with NaN, target column `label`."""
    data = load_breast_cancer(as_frame=True) if task == "binary_classification" else load_diabetes(as_frame=True)
    frame = data.data.iloc[:, :5].set_axis([f"f{i}" for i in range(5)], axis=1).astype("float64")
    rng = np.random.default_rng(seed)
    colour = pd.Series(rng.choice(["red", "green", "blue"], size=len(frame)), dtype=object)
    colour[rng.random(len(frame)) < 0.1] = np.nan
    frame["colour"] = colour
    if task == "binary_classification":
        frame["label"] = pd.Series(np.where(data.target == 1, "yes", "no"), dtype=object)
    else:
        frame["label"] = data.target.astype("float64")
    return frame


@pytest.fixture(scope="module")
def cls_data() -> tuple[ModelConfig, pd.DataFrame, pd.Series]:
    cfg = _config()
    splits = make_splits(_frame(), None, cfg)
    return cfg, splits.X_train, splits.y_train


def _storage(tmp_path: Path, name: str = "optuna.db") -> str:
    return f"sqlite:///{tmp_path / name}"


# ---------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    cfg = _config()
    frame = _frame()
    frame["f0"] = np.arange(len(frame), dtype="float64")  # a row id to check disjointness
    first, second = make_splits(frame, None, cfg), make_splits(frame, None, cfg)
    pd.testing.assert_frame_equal(first.X_train, second.X_train)
    pd.testing.assert_series_equal(first.y_test, second.y_test)
    train_ids, test_ids = set(first.X_train["f0"]), set(first.X_test["f0"])
    assert not train_ids & test_ids
    assert len(train_ids | test_ids) == len(frame)
    assert len(first.X_test) == pytest.approx(0.2 * len(frame), abs=1)
    assert abs(first.y_train.mean() - first.y_test.mean()) < 0.01
    assert list(first.X_train.columns) == list(cfg.features)
    other_seed = cfg.model_copy(update={"split": cfg.split.model_copy(update={"seed": 1})})
    assert set(make_splits(frame, None, other_seed).X_test["f0"]) != test_ids


def test_split_uses_the_test_source_when_given() -> None:
    cfg = _config()
    frame = _frame()
    train, test = frame.iloc[:400], frame.iloc[400:][list(reversed(frame.columns))]  # any column order
    splits = make_splits(train, test, cfg)
    assert len(splits.X_train) == 400
    assert len(splits.X_test) == len(frame) - 400
    pd.testing.assert_frame_equal(splits.X_test, frame.iloc[400:][list(cfg.features)].reset_index(drop=True))


def test_encode_target() -> None:
    cfg = _config()
    encoded = encode_target(pd.Series(["yes", "no", "yes"], dtype=object), cfg)
    assert encoded.dtype == "int64"
    assert encoded.tolist() == [1, 0, 1]
    as_int = _config(target={"column": "label", "positive_class": 1})
    assert encode_target(pd.DataFrame({"label": ["1", "0", "1"]}), as_int).tolist() == [1, 0, 1]
    regression = encode_target(pd.DataFrame({"label": [1.5, 2.0]}), _config("regression"))
    assert regression.dtype == "float64"
    with pytest.raises(ValueError, match="missing"):
        encode_target(pd.Series(["yes", np.nan], dtype=object), cfg)


# ---------------------------------------------------------------------------- metrics


def test_score_matches_sklearn() -> None:
    y = np.array([0, 1, 1, 0, 1])
    proba = np.array([0.2, 0.7, 0.6, 0.4, 0.9])
    assert score("roc_auc", y, proba) == pytest.approx(roc_auc_score(y, proba))
    assert score("roc_auc", y, np.column_stack([1 - proba, proba])) == pytest.approx(roc_auc_score(y, proba))
    assert score("log_loss", y, proba) == pytest.approx(log_loss(y, proba))
    assert score("accuracy", y, (proba > 0.5).astype(int)) == 1.0
    assert score("rmse", [1.0, 2.0], [1.0, 4.0]) == pytest.approx(root_mean_squared_error([1.0, 2.0], [1.0, 4.0]))
    with pytest.raises(ValueError, match="unknown metric"):
        score("auc", y, proba)


# ---------------------------------------------------------------------------- the study


def test_seeded_study_is_reproducible(tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = cls_data
    first = tune(X, y, cfg, _storage(tmp_path, "a.db"), "repro")
    second = tune(X, y, cfg, _storage(tmp_path, "b.db"), "repro")
    assert first.best_params == second.best_params
    assert first.best_value == second.best_value
    assert first.trials["value"].tolist() == second.trials["value"].tolist()
    assert first.n_new == first.n_trials == 6
    assert first.direction == "maximize"


def test_best_params_rebuild_the_best_pipeline(
    tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]
) -> None:
    cfg, X, y = cls_data
    result = tune(X, y, cfg, _storage(tmp_path), "rebuild", n_trials=4)
    assert {"family", "prep.cat_impute"} <= set(result.best_params)
    # Re-scoring the logged params on the same folds gives exactly the logged value.
    assert make_objective(X, y, cfg)(FixedTrial(result.best_params)) == result.best_value
    assert build_pipeline(result.best_params, cfg, result.seed).fit(X, y).predict_proba(X).shape == (len(X), 2)


def test_rerun_resumes_the_study(tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = cls_data
    storage = _storage(tmp_path)
    partial = tune(X, y, cfg, storage, "resume", n_trials=3)
    assert (partial.n_new, partial.n_trials) == (3, 3)
    rest = tune(X, y, cfg, storage, "resume")  # config budget: 6
    assert (rest.n_new, rest.n_trials) == (3, 6)
    again = tune(X, y, cfg, storage, "resume")
    assert again.n_new == 0
    assert again.n_trials == 6
    assert again.best_params == rest.best_params


def test_trials_left_running_by_a_crash_are_failed_and_not_counted(
    tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]
) -> None:
    cfg, X, y = cls_data
    storage = _storage(tmp_path)
    tune(X, y, cfg, storage, "crash", n_trials=2)
    crashed = optuna.load_study(study_name="crash", storage=storage)
    crashed.ask()  # a trial that was running when its process died
    result = tune(X, y, cfg, storage, "crash", n_trials=4)
    states = optuna.load_study(study_name="crash", storage=storage).trials
    assert [t.state for t in states].count(TrialState.RUNNING) == 0
    stale = states[2]
    assert stale.state == TrialState.FAIL
    assert "died" in stale.user_attrs["fail_reason"]
    assert (result.n_new, result.n_trials) == (2, 4)


def test_the_stage_result_fails_a_trial_its_dead_worker_left_running(
    tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]
) -> None:
    # The workers are all done when the result is read: a RUNNING trial is a dead worker's.
    cfg, X, y = cls_data
    storage = _storage(tmp_path)
    tune(X, y, cfg, storage, "leftover", n_trials=2)
    optuna.load_study(study_name="leftover", storage=storage).ask()
    result = tuning.study_result(cfg, storage, "leftover", n_new=0)
    states = [t.state for t in optuna.load_study(study_name="leftover", storage=storage).trials]
    assert states.count(TrialState.RUNNING) == 0 and states[-1] == TrialState.FAIL
    assert result.n_trials == 2


class _PruneFromStep(optuna.pruners.BasePruner):
    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.step


def _study_with(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(0))


def test_objective_reports_running_mean_per_fold_and_prunes(
    cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series],
) -> None:
    cfg, X, y = cls_data
    study = _study_with(_PruneFromStep(1))
    study.optimize(make_objective(X, y, cfg), n_trials=2)
    assert all(t.state == TrialState.PRUNED for t in study.trials)
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # step = folds done


def test_objective_never_prunes_after_the_last_fold(cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = cls_data
    study = _study_with(_PruneFromStep(cfg.split.cv_folds))
    study.optimize(make_objective(X, y, cfg), n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        values = list(trial.intermediate_values.values())
        assert list(trial.intermediate_values) == [1, 2, 3]
        assert trial.value == pytest.approx(values[-1])  # the last running mean is the CV mean


def test_median_pruner_prunes_in_a_real_study(
    tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]
) -> None:
    cfg, X, y = cls_data
    result = tune(X, y, cfg, _storage(tmp_path), "prune", n_trials=15)
    assert result.n_pruned > 0
    assert result.n_complete + result.n_pruned == 15
    pruned = result.trials[result.trials["state"] == "PRUNED"]
    assert pruned["user_attrs_fold_seconds"].map(len).max() < cfg.split.cv_folds


def test_lower_is_better_metric_minimizes(tmp_path: Path) -> None:
    cfg = _config(metric="log_loss")
    splits = make_splits(_frame(), None, cfg)
    result = tune(splits.X_train, splits.y_train, cfg, _storage(tmp_path), "logloss", n_trials=3)
    assert result.direction == "minimize"
    complete = result.trials[result.trials["state"] == "COMPLETE"]
    assert result.best_value == complete["value"].min()
    with pytest.raises(TuningError, match="direction"):
        tune(splits.X_train, splits.y_train, _config(), _storage(tmp_path), "logloss", n_trials=3)


def test_regression_and_random_sampler(tmp_path: Path) -> None:
    cfg = _config("regression")
    splits = make_splits(_frame("regression"), None, cfg)
    result = tune(splits.X_train, splits.y_train, cfg, _storage(tmp_path), "reg", n_trials=3, sampler="random")
    assert result.direction == "minimize"
    assert 30 < result.best_value < 90  # rmse on diabetes (target std ~77)


def test_max_train_rows_subsamples_stratified(cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = cls_data
    small = cfg.model_copy(update={"tuning": cfg.tuning.model_copy(update={"max_train_rows": 150})})
    X_sub, y_sub = tuning._subsample(X, y, small)
    assert len(X_sub) == len(y_sub) == 150
    assert abs(y_sub.mean() - y.mean()) < 0.01
    pd.testing.assert_frame_equal(X_sub, tuning._subsample(X, y, small)[0])
    assert make_objective(X, y, small)(FixedTrial({"family": "linear", "prep.num_impute": "mean",
                                                   "prep.scaling": "standard", "prep.cat_impute": "constant",
                                                   "linear.cat_encoding": "target", "linear.C": 1.0})) > 0.9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_no_completed_trial_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _config()
    frame = _frame()
    frame["label"] = "no"  # one class: every fit or ROC AUC fails with a ValueError
    splits = make_splits(frame, frame, cfg)
    storage = _storage(tmp_path)
    with pytest.raises(TuningError, match="no trial completed.*3 failed.*last error: ValueError"):
        tune(splits.X_train, splits.y_train, cfg, storage, "broken", n_trials=3)
    states = {t.state for t in optuna.load_study(study_name="broken", storage=storage).trials}
    assert states == {TrialState.FAIL}  # recorded, not crashed


def test_plot_history_writes_png(tmp_path: Path, cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    cfg, X, y = cls_data
    storage = _storage(tmp_path)
    result = tune(X, y, cfg, storage, "plot", n_trials=3)
    for source, name in ((result, "result.png"), (optuna.load_study(study_name="plot", storage=storage), "study.png")):
        path = plot_history(source, tmp_path / "plots" / name)
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000


def test_threads_must_be_positive(cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series], tmp_path: Path) -> None:
    cfg, X, y = cls_data
    with pytest.raises(ValueError, match="threads"):
        tune(X, y, cfg, _storage(tmp_path), "threads", threads=0)


def test_a_retune_starts_from_the_previous_best_trials(tmp_path: Path,
                                                       cls_data: tuple[ModelConfig, pd.DataFrame, pd.Series]) -> None:
    import optuna

    cfg, X, y = cls_data
    storage = _storage(tmp_path)
    first = tune(X, y, cfg, storage, "before", n_trials=4)
    old = optuna.load_study(study_name="before", storage=storage)
    best = sorted((t for t in old.trials if t.value is not None), key=lambda t: -float(t.value))[:2]
    warm = [dict(t.params) for t in best]
    again = tune(X, y, cfg, storage, "after", n_trials=3, warm_start=warm)
    new = optuna.load_study(study_name="after", storage=storage)
    assert [dict(t.params) for t in new.trials[:2]] == warm  # the enqueued trials ran first
    assert again.n_trials == 3 and first.n_trials == 4
    # Resuming the re-tune does not enqueue them a second time.
    tune(X, y, cfg, storage, "after", n_trials=4, warm_start=warm)
    assert len(optuna.load_study(study_name="after", storage=storage).trials) == 4
