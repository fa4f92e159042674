"""Case 11: gates fail closed on NaN/inf attributions, a missing sensitive column, an exception.

A real champion (v1, an Adult HistGradientBoosting) is registered and made `champion` first.
Each fault is a real registered challenger or a real holdout snapshot; the gate stages then
run as the DAG's tasks call them (`quality`, `explainability_and_fairness`, `infra`, `decide`):
- inf attributions: one leaf of the challenger's first tree holds +inf. The few rows reaching
  it score 1.0 (finite: quality and infra see nothing wrong), but TreeSHAP propagates the inf
  into the attributions;
- a missing sensitive column: the holdout snapshot lacks `race`; and, separately, its `race`
  has no value at all (before this case the fairness gate called that one group, "not gated",
  and passed: `gates/fairness.py` now fails it);
- an exception inside the gates: the challenger's category encoder refuses categories it did
  not see in training (`handle_unknown="error"`, fitted without the `race` value "Other"), so
  predicting raises for some rows, and for the counterfactual rows of the fairness test.

Invariant: the gate concerned reports failed with a reason naming the problem, `decide`
records `reject` (GateFailure: the DAG stops before `promote`), the rejected version holds no
alias (the `challenger` it was given at registration by an older release is taken off it), the
champion alias stays on v1 and the alias history has no new row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autopilot.adapters import registry
from autopilot.config import LoadedConfig
from autopilot.data.snapshot import write_snapshot
from autopilot.data.sources import canonicalize
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.reports import GateFailure, GateReport
from autopilot.settings import Settings
from autopilot.versions.promotion import history
from tests.serving_support import adult_cfg, register_version, snapshots

# numpy warns on the inf and NaN the faults put through the gates: expected here, not a finding.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


class World:
    """One registry with a real champion, and the current holdout snapshots."""

    def __init__(self, settings: Settings, cfg: LoadedConfig, frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        self.settings, self.cfg, self.frames = settings, cfg, frames
        self.reg = registry.connect(settings)
        self.champion = register_version(settings, cfg, frames, alias="champion")
        self.snapped = snapshots(settings, cfg, frames)

    def challenger(self, mutate: Callable[[Any], None] | None = None,
                   frames: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> dict[str, Any]:
        """A challenger registered as `train_and_register` leaves it (alias `challenger`)."""
        version = register_version(self.settings, self.cfg, frames or self.frames, alias="challenger",
                                   mutate=mutate)
        return {"name": version.name, "version": int(version.version), "run_id": version.run_id}

    def holdout_without(self, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> dict[str, Any]:
        """The snapshots with the test split edited and stored again (content-addressed, like `snapshot`)."""
        from autopilot.adapters.storage import open_store

        frame = edit(canonicalize(self.frames[1].head(2000), self.cfg))
        ref = write_snapshot(frame, open_store(self.settings.artifact_root), "r11 edited holdout")
        return {"snapshots": {**self.snapped["snapshots"], "test": {"digest": ref.digest, "uri": ref.uri}}}

    def run_gates(self, registered: dict[str, Any], snapped: dict[str, Any] | None = None) -> dict[str, Any]:
        """The gate tasks, then `decide`, as the DAG runs them; the decision record."""
        snapped = snapped or self.snapped
        ctx = RunContext(run_id=f"r11-v{registered['version']}", dag_id="test", actor="test")
        quality = gate_stages.quality_gate(self.cfg, self.settings, ctx, registered, snapped)
        gate_stages.explainability_and_fairness_gates(self.cfg, self.settings, ctx, registered, snapped)
        gate_stages.infra_gate(self.cfg, self.settings, ctx, registered, snapped)
        with pytest.raises(GateFailure, match="decision gate FAILED"):
            gate_stages.decide_version(self.cfg, self.settings, ctx, registered, snapped, quality)
        record: dict[str, Any] = self.reg.load_dict(registered["run_id"], "decision/decision.json")
        assert record["decision"] == "reject"
        return record

    def assert_rejected_and_champion_kept(self, registered: dict[str, Any]) -> None:
        version = self.reg.resolve_version(self.cfg.registered_model_name, registered["version"])
        assert version.tags["autopilot.decision"] == "reject"
        champion = self.reg.resolve_version(self.cfg.registered_model_name, "champion")
        assert int(champion.version) == int(self.champion.version) == 1
        assert history(self.settings, self.cfg.registered_model_name) == []
        aliases = self.reg.client.get_registered_model(self.cfg.registered_model_name).aliases or {}
        assert int(registered["version"]) not in {int(v) for v in aliases.values()}  # a rejected version: no alias


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, adult_frames: tuple[pd.DataFrame, pd.DataFrame]) -> Iterator[World]:
    home = tmp_path_factory.mktemp("r11")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "AUTOPILOT_CONFIG_DIR": str(home)})
    yield World(settings, adult_cfg(), adult_frames)


def infinite_leaf(pipeline: Any) -> None:
    """Set the least-visited leaf of the first tree to +inf (a corrupted or overflowed fit)."""
    nodes = pipeline.named_steps["model"]._predictors[0][0].nodes
    leaves = np.flatnonzero(nodes["is_leaf"] & (nodes["count"] > 0))
    nodes["value"][leaves[np.argmin(nodes["count"][leaves])]] = math.inf


def gates(record: dict[str, Any]) -> dict[str, GateReport]:
    return {g["name"]: GateReport.model_validate(g) for g in record["gates"]}


def test_inf_attributions_fail_explainability_and_fairness(world: World) -> None:
    registered = world.challenger(mutate=infinite_leaf)
    reports = gates(world.run_gates(registered))
    assert not reports["explainability"].passed
    assert any("NaN or infinite" in r for r in reports["explainability"].reasons), reports["explainability"].reasons
    assert not reports["fairness"].passed
    assert any("NaN attributions" in r for r in reports["fairness"].reasons), reports["fairness"].reasons
    world.assert_rejected_and_champion_kept(registered)


@pytest.mark.parametrize("fault", ["column absent", "column empty"])
def test_a_missing_sensitive_column_fails_closed(fault: str, world: World) -> None:
    registered = world.challenger()
    if fault == "column absent":
        # Every gate stage reads the holdout and fails on it; the fairness gate cannot even report.
        record = world.run_gates(registered, world.holdout_without(lambda f: f.drop(columns=["race"])))
        assert "fairness: the gate did not report (fails closed)" in record["reasons"], record["reasons"]
        stage_errors = [r for r in record["reasons"] if "feature columns missing from the frame: ['race']" in r]
        assert {r.split(":")[0] for r in stage_errors} == {"quality", "explainability", "infra"}, record["reasons"]
    else:
        record = world.run_gates(registered, world.holdout_without(lambda f: f.assign(race=np.nan)))
        fairness = gates(record)["fairness"]
        assert not fairness.passed
        assert "race: the sensitive column has no values in the holdout (all 2000 missing)" in fairness.reasons
    world.assert_rejected_and_champion_kept(registered)


def refuse_unseen_categories(pipeline: Any) -> None:
    """Make the fitted category encoder raise on a category it did not see (instead of treating it as missing)."""
    for _, transformer, _ in pipeline.named_steps["preprocess"].transformers_:
        steps = getattr(transformer, "named_steps", {})
        if "encode" in steps:
            steps["encode"].handle_unknown = "error"


def test_a_model_raising_for_some_rows_fails_the_gates_closed(world: World) -> None:
    train, test = world.frames
    without_other = (train[train["race"] != "Other"].reset_index(drop=True), test)
    registered = world.challenger(mutate=refuse_unseen_categories, frames=without_other)
    from autopilot.adapters.storage import open_store
    from autopilot.data.snapshot import load_snapshot

    holdout = load_snapshot(open_store(world.settings.artifact_root), world.snapped["snapshots"]["test"]["digest"])
    assert "Other" in set(holdout["race"])  # some holdout rows make it raise
    reports = gates(world.run_gates(registered))
    for gate in ("quality", "explainability", "fairness"):
        assert not reports[gate].passed, gate
        assert any("unknown categories" in r for r in reports[gate].reasons), (gate, reports[gate].reasons)
    world.assert_rejected_and_champion_kept(registered)
