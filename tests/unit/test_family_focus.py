"""Budget split across families (`family_focus`) and the per-family warm start (`default_params`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from autopilot.config import ModelConfig
from autopilot.modeling.family_focus import FamilyFocusSampler, retired_families
from autopilot.modeling.search_space import build_pipeline, default_params
from autopilot.modeling.tuning import open_study

FAMILIES = ["linear", "random_forest", "extra_trees", "hist_gradient_boosting"]
FAMILY = CategoricalDistribution(FAMILIES)


def _trial(family: str, value: float | None, state: TrialState = TrialState.COMPLETE) -> Any:
    return create_trial(params={"family": family}, distributions={"family": FAMILY}, value=value, state=state)


def _config(task: str = "binary_classification", categorical: bool = True, **tuning: Any) -> ModelConfig:
    features: dict[str, Any] = {"a": {"type": "numeric"}, "b": {"type": "numeric"}}
    if categorical:
        features["c"] = {"type": "categorical"}
    target = {"column": "y", "positive_class": "1"} if task == "binary_classification" else {"column": "y"}
    return ModelConfig.model_validate({
        "name": "focus", "task": task, "data": {"source": "unused.csv"}, "features": features, "target": target,
        "metric": "roc_auc" if task == "binary_classification" else "rmse",
        "tuning": {"families": FAMILIES, **tuning}})


def test_a_family_trailing_the_leader_by_more_than_the_margin_is_retired() -> None:
    trials = [_trial("hist_gradient_boosting", 0.93), _trial("hist_gradient_boosting", 0.92),
              _trial("linear", 0.90), _trial("linear", 0.89),  # 3.2% behind: retired
              _trial("random_forest", 0.925), _trial("random_forest", 0.91),  # 0.5% behind: active
              _trial("extra_trees", 0.80)]  # far behind, but only one complete trial: active
    assert retired_families(trials, StudyDirection.MAXIMIZE, 2, 0.01) == {"linear"}
    assert retired_families(trials, StudyDirection.MAXIMIZE, 0, 0.01) == set()  # 0 turns it off


def test_pruned_and_failed_trials_neither_count_nor_set_the_best() -> None:
    trials = [_trial("hist_gradient_boosting", 0.93), _trial("hist_gradient_boosting", 0.93),
              _trial("linear", 0.80), _trial("linear", 0.99, TrialState.PRUNED),
              _trial("linear", None, TrialState.FAIL)]
    assert retired_families(trials, StudyDirection.MAXIMIZE, 2, 0.01) == set()  # linear has one complete trial


def test_for_a_lower_is_better_metric_the_margin_is_relative_to_the_lowest_error() -> None:
    trials = [_trial("hist_gradient_boosting", 50.0), _trial("hist_gradient_boosting", 52.0),
              _trial("linear", 50.4), _trial("linear", 60.0),
              _trial("random_forest", 51.0), _trial("random_forest", 55.0)]
    assert retired_families(trials, StudyDirection.MINIMIZE, 2, 0.01) == {"random_forest"}  # 2% > 1%; linear 0.8%


def test_the_sampler_sends_a_retired_familys_trials_to_active_families() -> None:
    study = optuna.create_study(direction="maximize")
    for family, value in [("hist_gradient_boosting", 0.93), ("hist_gradient_boosting", 0.92), ("linear", 0.80),
                          ("linear", 0.81), ("random_forest", 0.80), ("random_forest", 0.79)]:
        study.add_trial(_trial(family, value))
    sampler = FamilyFocusSampler(optuna.samplers.RandomSampler(seed=0), min_trials=2, margin=0.01, seed=3)
    study.sampler = sampler
    chosen = []
    for _ in range(40):
        trial = study.ask()
        family = trial.suggest_categorical("family", FAMILIES)
        trial.suggest_float("x", 0, 1) if family == "extra_trees" else None
        chosen.append(family)
        study.tell(trial, state=TrialState.PRUNED)  # keep the complete trials (and so the retired set) fixed
    assert set(chosen) == {"hist_gradient_boosting", "extra_trees"}
    # Other parameters pass through unchanged.
    assert sampler.sample_independent(study, study.trials[-1], "x", FloatDistribution(0, 1)) is not None


@pytest.mark.parametrize("task", ["binary_classification", "regression"])
@pytest.mark.parametrize("categorical", [True, False])
def test_default_params_build_one_pipeline_per_family(task: str, categorical: bool) -> None:
    cfg = _config(task, categorical)
    defaults = default_params(cfg)
    assert [p["family"] for p in defaults] == ["hist_gradient_boosting", "linear", "random_forest", "extra_trees",
                                               "hist_gradient_boosting"]  # the second HGB point is a shallow one
    assert defaults[-1]["hgb.max_leaf_nodes"] < defaults[0]["hgb.max_leaf_nodes"]
    for params in defaults:
        build_pipeline(params, cfg, seed=0)  # every value a family needs is there


def test_a_new_study_runs_the_callers_warm_start_then_the_defaults(tmp_path: Path) -> None:
    cfg = _config(families=["linear", "hist_gradient_boosting"], warm_start_defaults=True)  # opt-in
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    mine = {**default_params(cfg)[0], "hgb.learning_rate": 0.05}
    study = open_study(cfg, storage, "warm", warm_start=[mine])
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert waiting == [mine, *default_params(cfg)]
    off = open_study(_config(warm_start_defaults=False), storage, "cold")
    assert off.get_trials(states=(TrialState.WAITING,)) == []
