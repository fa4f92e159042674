"""Shared by the monitoring reliability cases (r24, r25): a real champion with its monitoring reference.

The champion is a real registered Adult model (`tests/serving_support.register_version`), trained
on the Adult train file, whose version carries the snapshot tags `train_and_register` writes and
whose run holds the explainability gate's report (the SHAP shares monitoring weighs drift by).
Its reference is built and stored by the monitoring stage itself (`monitoring_stages.load_reference`).
Served traffic is drawn from the Adult test file: the same population, other people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot import gate_stages, registry
from autopilot.config import LoadedConfig
from autopilot.data.snapshot import write_snapshot
from autopilot.data.sources import canonicalize
from autopilot.monitoring_stages import Reference, load_reference
from autopilot.settings import Settings
from autopilot.stages import RunContext
from autopilot.storage import open_store
from tests.serving_support import register_version

__all__ = ["Champion", "make_champion"]


@dataclass
class Champion:
    """A registered champion, its model, its stored monitoring reference, and the traffic population."""

    settings: Settings
    cfg: LoadedConfig
    version: Any
    model: Any
    reference: Reference
    population: pd.DataFrame  # canonical feature rows served traffic is drawn from

    def scores(self, rows: pd.DataFrame) -> np.ndarray:
        """The champion's scores for `rows`, as the endpoint logs them."""
        with threadpool_limits(limits=1):
            return np.asarray(self.model.predict_proba(rows[list(self.cfg.features)])[:, 1], dtype=float)

    def draw(self, rng: np.random.Generator, rows: int) -> pd.DataFrame:
        """`rows` served rows: people of the population, drawn with replacement."""
        return self.population.iloc[rng.choice(len(self.population), size=rows, replace=True)].reset_index(drop=True)


def make_champion(home: Path, cfg: LoadedConfig, frames: tuple[pd.DataFrame, pd.DataFrame]) -> Champion:
    """Register, gate (explainability) and profile a champion in a fresh autopilot home."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "AUTOPILOT_CONFIG_DIR": str(home)})
    train, test = frames
    version = register_version(settings, cfg, (train, test), rows=len(train))
    store = open_store(settings.artifact_root)
    snapped = {}
    for split, frame in (("train", train), ("test", test)):
        ref = write_snapshot(canonicalize(frame, cfg), store, f"monitoring test {split}")
        snapped[split] = {"digest": ref.digest, "uri": ref.uri}
        registry.client().set_model_version_tag(cfg.registered_model_name, version.version,
                                                f"autopilot.snapshot.{split}", f"sha256:{ref.digest}")
    registered = {"name": version.name, "version": int(version.version), "run_id": version.run_id}
    ctx = RunContext(run_id="monitoring-champion", dag_id="test", actor="test")
    gates = gate_stages.explainability_and_fairness_gates(cfg, settings, ctx, registered, {"snapshots": snapped})
    assert gates["explainability"]["passed"], gates
    version = registry.resolve_version(cfg.registered_model_name, "champion")
    reference = load_reference(cfg, settings, version)
    model = registry.load_verified_model(version)
    population = canonicalize(test, cfg, require_target=False)[list(cfg.features)]
    return Champion(settings, cfg, version, model, reference, population)
