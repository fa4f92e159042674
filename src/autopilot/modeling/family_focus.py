"""Budget split across model families: stop spending trials on families that cannot win.

Once a family has `tuning.family_retire_trials` complete trials and its best CV value trails the
leader's by more than `tuning.family_retire_margin` (a share of the leader's value, so the same
margin reads alike for ROC AUC and for RMSE), it is retired: a later trial whose sampler picks it
runs one of the active families instead, chosen by a generator seeded from the trial number. The
leader is never retired, and a family without enough complete trials stays active, so every
family keeps its chance to be measured (the warm start measures each one first).

`FamilyFocusSampler` wraps the study's sampler (TPE or random) and changes nothing but the
`family` value: TPE with `group=True` samples each family's parameters from that family's own
history, so a redirected trial gets parameters TPE proposed for the family it actually runs.
The decision depends only on the study's complete trials, so a single worker stays reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["FAMILY_PARAM", "FamilyFocusSampler", "retired_families"]

FAMILY_PARAM = "family"


def retired_families(trials: Sequence[FrozenTrial], direction: StudyDirection, min_trials: int,
                     margin: float) -> set[str]:
    """Families whose best complete value trails the leader's by more than `margin` x |leader|.

    A family with fewer than `min_trials` complete trials, or `min_trials` 0, is never retired.
    """
    if min_trials <= 0:
        return set()
    best: dict[str, float] = {}
    count: dict[str, int] = {}
    maximize = direction == StudyDirection.MAXIMIZE
    for trial in trials:
        family = trial.params.get(FAMILY_PARAM)
        if trial.state != TrialState.COMPLETE or trial.value is None or family is None:
            continue
        value = float(trial.value)
        count[family] = count.get(family, 0) + 1
        if family not in best or (value > best[family] if maximize else value < best[family]):
            best[family] = value
    if not best:
        return set()
    leader = max(best.values()) if maximize else min(best.values())
    gap = margin * abs(leader)
    return {family for family, value in best.items() if count[family] >= min_trials
            and (leader - value if maximize else value - leader) > gap}


class FamilyFocusSampler(optuna.samplers.BaseSampler):
    """Delegates to `base`; a `family` value the study has retired becomes an active family."""

    def __init__(self, base: optuna.samplers.BaseSampler, *, min_trials: int, margin: float, seed: int) -> None:
        self.base = base
        self.min_trials = min_trials
        self.margin = margin
        self.seed = seed

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The base sampler's relative search space."""
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The base sampler's joint sample, with a retired family replaced."""
        params = dict(self.base.sample_relative(study, trial, search_space))
        if FAMILY_PARAM in params:
            params[FAMILY_PARAM] = self._focus(study, trial, params[FAMILY_PARAM], search_space.get(FAMILY_PARAM))
        return params

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """The base sampler's value, with a retired family replaced."""
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name == FAMILY_PARAM:
            return self._focus(study, trial, value, param_distribution)
        return value

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Delegated."""
        self.base.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        """Delegated."""
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Delegated."""
        self.base.reseed_rng()

    def _focus(self, study: Study, trial: FrozenTrial, family: Any, distribution: BaseDistribution | None) -> Any:
        choices = list(getattr(distribution, "choices", []))
        if not choices:
            return family
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        retired = retired_families(complete, study.direction, self.min_trials, self.margin)
        if family not in retired:
            return family
        active = [c for c in choices if c not in retired]
        if not active:  # cannot happen (the leader stays active), but never leave a trial without a family
            return family
        rng = np.random.default_rng(self.seed + trial.number)
        return active[int(rng.integers(len(active)))]
