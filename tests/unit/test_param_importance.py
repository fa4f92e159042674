"""Optuna's parameter importance within the winning family, on a real RDB study, and its plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autopilot.modeling.tuning import param_importance, plot_param_importance

FAMILY = CategoricalDistribution(["linear", "random_forest"])
C = FloatDistribution(1e-3, 1e2, log=True)
SCALING = CategoricalDistribution(["standard", "minmax"])
DEPTH = FloatDistribution(1.0, 30.0)


def study_with(storage: str, linear_trials: int, forest_trials: int) -> str:
    """Linear trials whose value follows `linear.C` alone; forest trials with their own parameter."""
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    rng = np.random.default_rng(0)
    for k in range(linear_trials):
        c = float(10 ** rng.uniform(-3, 2))
        study.add_trial(optuna.trial.create_trial(
            params={"family": "linear", "linear.C": c, "prep.scaling": ["standard", "minmax"][k % 2]},
            distributions={"family": FAMILY, "linear.C": C, "prep.scaling": SCALING},
            value=0.7 + 0.05 * np.log10(c)))
    for _ in range(forest_trials):
        study.add_trial(optuna.trial.create_trial(
            params={"family": "random_forest", "rf.max_depth": float(rng.uniform(1, 30))},
            distributions={"family": FAMILY, "rf.max_depth": DEPTH}, value=float(rng.uniform(0.6, 0.8))))
    return "s"


def test_importance_is_computed_within_the_family(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = study_with(storage, linear_trials=12, forest_trials=7)
    found = param_importance(storage, name, "linear", min_trials=5)
    assert found["complete_trials"] == 12 and found["reason"] is None
    assert found["parameters"] == ["linear.C", "prep.scaling"]  # shared by the family's trials, family left out
    assert found["importances"]["linear.C"] > 0.8 > found["importances"]["prep.scaling"]
    image = matplotlib.image.imread(plot_param_importance(found, tmp_path / "importance.png"))
    assert image.shape[0] > 150 and image.shape[1] > 400


def test_too_small_a_study_says_why_and_still_plots(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = study_with(storage, linear_trials=2, forest_trials=9)
    found = param_importance(storage, name, "linear", min_trials=5)
    assert found["importances"] == {}
    assert found["reason"].startswith("2 complete trial(s) of family linear; parameter importance needs at least 5")
    assert plot_param_importance(found, tmp_path / "importance.png").stat().st_size > 1000
    # A family with no complete trial at all is no crash either.
    assert param_importance(storage, name, "extra_trees", min_trials=5)["complete_trials"] == 0
