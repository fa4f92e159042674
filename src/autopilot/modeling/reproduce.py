"""Reproduce a registered version from what was recorded: snapshot, parameters, seeds, config.

The retrained pipeline is compared with the recorded test metrics, the recorded test scores,
and the registered model's own predictions (loaded after SHA-256 verification). Every model
family autopilot searches is deterministic given its seeds, so all three must match exactly
in the same environment; the report also says whether the environment differs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import Registry, connect

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["ReproductionReport", "reproduce"]


@dataclass
class ReproductionReport:
    """What matched when a version was retrained from its record."""

    model: str
    version: int
    metrics_recorded: dict[str, float]
    metrics_reproduced: dict[str, float]
    metrics_match: bool
    predictions_match_recorded: bool
    predictions_match_registered: bool
    max_abs_prediction_diff: float
    same_packages: bool
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        """Whether metrics and predictions all matched exactly."""
        return self.metrics_match and self.predictions_match_recorded and self.predictions_match_registered

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {**asdict(self), "reproduced": self.reproduced}


def _recorded(registry: Registry, run_id: str, artifact: str) -> Path:
    return registry.download_artifacts(run_id, artifact)


def reproduce(settings: Settings, model_name: str, version_spec: str | int) -> ReproductionReport:
    """Retrain a version from its recorded snapshot, parameters and seeds and compare.

    Raises:
        LookupError: the version does not exist.
        SnapshotIntegrityError: a recorded snapshot is missing its bytes or is corrupt.
    """
    import numpy as np

    from autopilot.adapters.registry.model_loading import load_version
    from autopilot.adapters.storage import open_store
    from autopilot.config import ModelConfig
    from autopilot.data.snapshot import load_snapshot
    from autopilot.modeling.fingerprint import installed_packages
    from autopilot.modeling.splits import make_splits
    from autopilot.modeling.training import evaluate, fit_pipeline, predict_scores

    registry = connect(settings)
    version = registry.resolve_version(model_name, version_spec)
    tags, run_id = version.tags or {}, str(version.run_id)
    cfg = ModelConfig.model_validate(json.loads(_recorded(registry, run_id, "config.json").read_text()))
    params = json.loads(_recorded(registry, run_id, "model_params.json").read_text())
    environment = json.loads(_recorded(registry, run_id, "environment.json").read_text())
    store = open_store(settings.artifact_root, access=settings.object_store)
    train = load_snapshot(store, tags["autopilot.snapshot.train"].removeprefix("sha256:"))
    test = load_snapshot(store, tags["autopilot.snapshot.test"].removeprefix("sha256:")) \
        if "autopilot.snapshot.test" in tags else None
    splits = make_splits(train, test, cfg)
    pipeline = fit_pipeline(params, cfg, splits.X_train, splits.y_train, int(environment["seeds"]["estimator"]))
    reproduced = evaluate(pipeline, splits.X_test, splits.y_test, cfg.task)
    recorded_metrics = {k.removeprefix("test_"): v for k, v in
                        registry.get_run(run_id).data.metrics.items() if k.startswith("test_")}
    scores = predict_scores(pipeline, splits.X_test, cfg.task)
    recorded_scores = np.load(_recorded(registry, run_id, "evaluation/test_scores.npy"))
    registered_scores = predict_scores(load_version(version, _load_policy(settings, cfg.name), registry),
                                       splits.X_test, cfg.task)
    same_packages = environment["packages"] == installed_packages()
    return ReproductionReport(
        model=model_name,
        version=int(version.version),
        metrics_recorded=recorded_metrics,
        metrics_reproduced=reproduced,
        metrics_match=all(_same(recorded_metrics.get(k), v) for k, v in reproduced.items()),
        predictions_match_recorded=bool(np.array_equal(scores, recorded_scores)),
        predictions_match_registered=bool(np.array_equal(scores, registered_scores)),
        max_abs_prediction_diff=float(np.max(np.abs(scores - recorded_scores))) if len(scores) else 0.0,
        same_packages=same_packages,
        notes=[] if same_packages else ["installed packages differ from the training environment"],
    )


def _same(recorded: float | None, value: float) -> bool:
    if recorded is None:
        return False
    if math.isnan(recorded) and math.isnan(value):
        return True
    # MLflow stores metrics as doubles: an exact reproduction compares equal.
    return recorded == value


def _load_policy(settings: Settings, model: str) -> Any:
    """What loading the registered version may accept: the model's own config file decides.

    Never the config recorded in MLflow: anyone who can write to MLflow could set
    `registry.allow_pickle` there. Without a config file for the model, pickle is refused.
    """
    from autopilot.adapters.registry.model_loading import LoadPolicy
    from autopilot.config import ConfigError, load_config

    path = settings.config_dir / f"{model}.yaml"
    try:
        allow = load_config(path).registry.allow_pickle if path.is_file() else False
    except ConfigError:
        allow = False
    return LoadPolicy(allow_pickle=allow, signing_key=settings.signing_key)
