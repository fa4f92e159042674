"""Seed a model's whole lifecycle in a real MLflow registry and state DB, without training.

The Models page reads what the pipeline writes; training even a tiny model costs a minute on
two cores, so this writes the same records through the project's own functions instead: a
stage run with test metrics per version, `registry.create_version` and
aliases, gate reports stored by `gate_stages._store_report` and decided by
`gate_stages.decide_version`, alias moves by `promotion.promote` / `rollback`, and monitoring
windows by `monitoring.state.record_window`.

The seeded story of `seed_model`: v1 promoted, v2 promoted, v2 rolled back to v1 after a drifting
retrain, v3 rejected by the fairness gate (so `challenger` stays on v2, the newest version that
passed); 12 hourly windows with rising drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from autopilot.reports import GateReport
from tests.helpers import adult_config_dict

# Drift share per window (None: too few rows to decide) and the action the monitor took.
WINDOW_SHARES: list[float | None] = [0.02, 0.03, 0.01, None, 0.04, 0.05, 0.08, 0.11, 0.12, 0.09, 0.17, 0.21]
WINDOW_ACTIONS = ["none", "none", "none", "none", "none", "none", "none", "alert", "alert", "none", "retrain",
                  "none"]
METRICS = {1: {"roc_auc": 0.9012, "accuracy": 0.8511}, 2: {"roc_auc": 0.9075, "accuracy": 0.8542},
           3: {"roc_auc": 0.9101, "accuracy": 0.8560}}
FAMILIES = {1: "linear", 2: "hist_gradient_boosting", 3: "hist_gradient_boosting"}
FAIRNESS_REASON = "equalized odds difference by sex 0.27 exceeds 0.2 (upper CI bound) <b>bold?</b>"


@dataclass
class Seeded:
    """What `seed_model` wrote, for assertions."""

    name: str
    config: Path
    champion: int
    challenger: int
    window_count: int


def write_config(folder: Path, name: str, description: str = "") -> Path:
    """A valid model config (the demo's, renamed) in `folder`; its data files need not exist."""
    raw = adult_config_dict(name=name, description=description, registry={"name": name})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def register_version(cfg: Any, settings: Any, number: int) -> int:
    """A stage run with the version's test metrics, registered without alias (as `train_and_register` does).

    The page never loads a model, so the version's source is a stub `model/MLmodel` artifact:
    logging a real sklearn model would cost the seed seconds of imports for nothing it reads.
    """
    from autopilot.adapters import registry
    from autopilot.pipeline.context import RunContext, stage_run

    reg = registry.connect(settings)
    ctx = RunContext(run_id=f"seed-{number}", dag_id=f"autopilot_training__{cfg.name}", actor="seed")
    with stage_run(reg, cfg, settings, ctx, "train") as run:
        run.log_metrics({f"test_{k}": v for k, v in METRICS[number].items()})
        reg.client.log_text(run.run_id, "flavors: {}\n", "model/MLmodel")
    tags = {"autopilot.model": cfg.name, "autopilot.family": FAMILIES[number], "autopilot.dag_run_id": ctx.run_id,
            f"autopilot.test_{cfg.metric}": f"{METRICS[number][cfg.metric]:.6f}"}
    version = reg.create_version(cfg.registered_model_name, f"runs:/{run.run_id}/model", run.run_id, tags)
    return int(version.version)


def decide(cfg: Any, settings: Any, number: int, baseline: int | None, fairness_passes: bool) -> str:
    """Store the four gate reports on the version's run and let `decide_version` write the record."""
    from autopilot.adapters import registry
    from autopilot.pipeline import gates as gate_stages
    from autopilot.pipeline.context import RunContext
    from autopilot.reports import GateFailure

    reg = registry.connect(settings)
    run_id = str(reg.resolve_version(cfg.registered_model_name, number).run_id)
    fairness = GateReport(name="fairness", passed=True, metrics={"eod_upper": 0.11, "dp_ratio": 0.36}) \
        if fairness_passes else GateReport.failed("fairness", [FAIRNESS_REASON], metrics={"eod_upper": 0.27})
    reports = [
        GateReport(name="quality", passed=True, metrics={"challenger_roc_auc": METRICS[number]["roc_auc"],
                                                         "delta": 0.004}),
        GateReport(name="explainability", passed=True, metrics={"ndcg_at_k": 0.97}),
        fairness,
        GateReport(name="infra", passed=True, metrics={"load_seconds": 0.41, "p99_ms": 8.2}),
    ]
    for report in reports:
        gate_stages._store_report(reg, run_id, report)
    ctx = RunContext(run_id=f"seed-{number}", dag_id=f"autopilot_training__{cfg.name}",
                     actor=f"airflow:autopilot_training__{cfg.name}")
    registered = {"name": cfg.registered_model_name, "version": number}
    snapped = {"snapshots": {"train": {"digest": "0" * 64}}}
    try:
        return str(gate_stages.decide_version(cfg, settings, ctx, registered, snapped,
                                              {"champion_version": baseline})["decision"])
    except GateFailure:
        return "reject"


def seed_windows(cfg: Any, settings: Any, version: int, end: datetime) -> int:
    """Hourly monitoring windows ending at `end`, with `WINDOW_SHARES` and `WINDOW_ACTIONS`."""
    from autopilot.monitoring.state import record_window

    count = len(WINDOW_SHARES)
    for index, (share, action) in enumerate(zip(WINDOW_SHARES, WINDOW_ACTIONS, strict=True)):
        stop = end - timedelta(hours=count - 1 - index)
        series = {"rows": 2400.0} if share is None else {"drift_weighted_share": share, "rows": 2400.0}
        rows = 180 if share is None else 2400
        record_window(settings, cfg.name, stop - timedelta(hours=1), stop, version, action,
                      {"series": series, "decision": {"action": action, "reasons": []}, "rows": rows})
    return count


def seed_model(settings: Any, name: str, description: str = "Income above 50K (seeded lifecycle).") -> Seeded:
    """The full story (see the module docstring) for one model under `settings.config_dir`."""
    from autopilot.config import load_config
    from autopilot.versions.promotion import promote, rollback

    cfg = load_config(write_config(Path(settings.config_dir), name, description))
    moves = [(None, 1), (1, 2)]
    for number in (1, 2):
        assert register_version(cfg, settings, number) == number
        assert decide(cfg, settings, number, baseline=number - 1 or None, fairness_passes=True) == "promote"
    for before, number in moves:
        promote(settings, cfg.registered_model_name, number, actor=f"airflow:autopilot_training__{name}",
                reason="passed every promotion gate", expected_champion=before)
    rollback(settings, cfg.registered_model_name, actor=f"airflow:autopilot_monitoring__{name}",
             reason="the retrained champion performs worse than its predecessor by 7.1%")
    assert register_version(cfg, settings, 3) == 3
    assert decide(cfg, settings, 3, baseline=1, fairness_passes=False) == "reject"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    count = seed_windows(cfg, settings, 1, end)
    return Seeded(name=name, config=Path(cfg.path), champion=1, challenger=2, window_count=count)
