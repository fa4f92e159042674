"""Shared by the monitoring reliability cases (r24, r25): a real champion with its monitoring reference.

The champion is a real registered Adult model (`tests/serving_support.register_version`), trained
on the Adult train file, whose version carries the snapshot tags `train_and_register` writes and
whose run holds the explainability gate's report (the SHAP shares monitoring weighs drift by).
Its reference is built and stored by the monitoring stage itself (`monitoring_stages.load_reference`).
Served traffic is drawn from the Adult test file: the same population, other people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.adapters.storage import open_store
from autopilot.config import LoadedConfig
from autopilot.data.snapshot import write_snapshot
from autopilot.data.sources import canonicalize
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.monitoring import Reference, load_reference
from autopilot.settings import Settings
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

    def draw(self, rng: np.random.Generator, rows: int, weights: np.ndarray | None = None) -> pd.DataFrame:
        """`rows` served rows: people of the population, drawn with replacement (optionally weighted)."""
        p = None if weights is None else weights / weights.sum()
        return self.population.iloc[rng.choice(len(self.population), size=rows, replace=True, p=p)].reset_index(
            drop=True)

    def serve(self, model: str, rows: pd.DataFrame, start: datetime, end: datetime, rng: np.random.Generator,
              prefix: str) -> None:
        """Log `rows` as the endpoint does, answered by the champion at times spread over [start, end)."""
        from autopilot.serving.inference_log import InferenceLog, InferenceRecord

        scores = self.scores(rows)
        latencies = rng.lognormal(np.log(12.0), 0.25, len(rows))  # ms: a noisy, steady service
        step = (end - start - timedelta(seconds=2)) / len(rows)
        records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                   for row in rows[list(self.cfg.features)].to_dict("records")]
        version = int(self.version.version)
        log = InferenceLog(self.settings.inference_db)
        try:
            log.append([InferenceRecord(request_id=f"{prefix}-{i}", row=0, model=model, version=version,
                                        at=start + timedelta(seconds=1) + i * step, features=features,
                                        prediction=float(score), latency_ms=float(latency))
                        for i, (features, score, latency) in enumerate(zip(records, scores, latencies, strict=True))])
        finally:
            log.close()


def make_champion(home: Path, cfg: LoadedConfig, frames: tuple[pd.DataFrame, pd.DataFrame]) -> Champion:
    """Register, gate (explainability) and profile a champion in a fresh autopilot home."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "AUTOPILOT_CONFIG_DIR": str(home)})
    train, test = frames
    version = register_version(settings, cfg, (train, test), rows=len(train))
    reg = registry.connect(settings)
    store = open_store(settings.artifact_root)
    snapped = {}
    for split, frame in (("train", train), ("test", test)):
        ref = write_snapshot(canonicalize(frame, cfg), store, f"monitoring test {split}")
        snapped[split] = {"digest": ref.digest, "uri": ref.uri}
        reg.client.set_model_version_tag(cfg.registered_model_name, version.version,
                                         f"autopilot.snapshot.{split}", f"sha256:{ref.digest}")
    registered = {"name": version.name, "version": int(version.version), "run_id": version.run_id}
    ctx = RunContext(run_id="monitoring-champion", dag_id="test", actor="test")
    gates = gate_stages.explainability_and_fairness_gates(cfg, settings, ctx, registered, {"snapshots": snapped})
    assert gates["explainability"]["passed"], gates
    version = reg.resolve_version(cfg.registered_model_name, "champion")
    reference = load_reference(reg, cfg, settings, version)
    model = load_version(version, LoadPolicy(), reg)
    population = canonicalize(test, cfg, require_target=False)[list(cfg.features)]
    return Champion(settings, cfg, version, model, reference, population)
