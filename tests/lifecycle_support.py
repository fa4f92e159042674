"""Seed a model's whole lifecycle in a real MLflow registry and state DB, without training.

The Models page reads what the pipeline writes; training even a tiny model costs a minute on
two cores, so this writes the same records through the project's own functions instead: a
stage run with test metrics per version, `registry.create_version` and
aliases, gate reports stored by `gate_stages._store_report` and decided by
`gate_stages.decide_version`, alias moves by `promotion.promote` / `rollback`, and monitoring
windows by `monitoring.state.record_window`. The gate reports have the shape each gate writes
(quality's bootstrap comparison with the champion or the first-run baselines, fairness's
per-attribute intervals, ...), with the config's thresholds.

The reports the page links to are made for real, on a sample of the bundled Adult data: each
version's training data is validated by Great Expectations through the model's Checkpoint in the
file context under the home (`validation.validate_batch`, run name `<model>.train.<dag run id>`),
which builds the model's Data Docs site; the last `REPORTED_WINDOWS` windows get Evidently's
drift report (`drift.evidently_report`), stored where the monitoring task stores it, its URI in
the window's row.

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
REPORTED_WINDOWS = 2  # the newest windows get a real Evidently report
SAMPLE_ROWS = 1500  # rows of Adult validated per version and compared per window


@dataclass
class Seeded:
    """What `seed_model` wrote, for assertions."""

    name: str
    config: Path
    champion: int
    challenger: int
    window_count: int
    reported_windows: list[str]  # window ids (their end, `%Y%m%dT%H%M%S`) with an Evidently report


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


def gate_reports(cfg: Any, number: int, baseline: int | None, fairness_passes: bool) -> list[GateReport]:
    """The four gate reports of a version, shaped as each gate writes them, with the config's thresholds."""
    from autopilot.gates.quality import _thresholds as quality_thresholds

    metrics = {**METRICS[number], "log_loss": 0.31}
    if baseline is None:
        prior = {"metric": "roc_auc", "rule": "superiority", "bound": 0.0,
                 "difference": METRICS[number]["roc_auc"] - 0.5,
                 "ci": [0.39, 0.41], "status": "pass", "holdout_rows": 16281, "metrics": {"roc_auc": 0.5}}
        linear = {"metric": "roc_auc", "rule": "non-inferiority", "bound": -0.005, "difference": 0.0031,
                  "ci": [-0.0012, 0.0074], "status": "pass", "holdout_rows": 16281, "metrics": {"roc_auc": 0.8981}}
        quality_details: dict[str, Any] = {"baseline": {"champion_version": None, "note": "first run: no champion"},
                                           "first_run_baselines": {"prior": prior, "linear": linear}}
    else:
        difference = METRICS[number]["roc_auc"] - METRICS[baseline]["roc_auc"]
        quality_details = {"baseline": {
            "metric": "roc_auc", "rule": "non-inferiority", "bound": -0.005, "difference": difference,
            "ci": [difference - 0.0021, difference + 0.0023], "status": "pass", "holdout_rows": 16281,
            "champion_version": baseline, "metrics": {**METRICS[baseline], "log_loss": 0.33}, "decision": "better"}}
    sex_odds = {"value": 0.06, "ci": [0.04, 0.09], "gated": True, "status": "pass", "threshold": 0.25, "side": "max",
                "confidence": 0.95}
    if not fairness_passes:
        sex_odds = {**sex_odds, "value": 0.27, "ci": [0.26, 0.29], "status": "fail"}
    race_odds = {"value": 0.11, "ci": [0.07, 0.22], "gated": True, "status": "pass", "threshold": 0.25,
                 "side": "max", "confidence": 0.95}
    attributes = {
        "sex": {"demographic_parity_ratio": {"value": 0.36, "ci": [0.33, 0.39], "gated": False,
                                             "status": "report only"},
                "equalized_odds_difference": sex_odds, "counterfactual": {"flip_rate": 0.02, "status": "pass"}},
        "race": {"equalized_odds_difference": race_odds, "counterfactual": {"flip_rate": 0.06, "status": "pass"}},
    }
    fairness_metrics = {"sex.demographic_parity_ratio": 0.36, "sex.equalized_odds_difference": sex_odds["value"],
                        "race.equalized_odds_difference": 0.11, "sensitive_attribution_share": 0.05}
    fairness_fields = {"metrics": fairness_metrics, "thresholds": cfg.gates.fairness.model_dump(mode="json"),
                       "details": {"holdout_rows": 16281, "attributes": attributes}}
    fairness = GateReport(name="fairness", passed=True, **fairness_fields) if fairness_passes else \
        GateReport.failed("fairness", [FAIRNESS_REASON], **fairness_fields)
    bounds = cfg.gates.explainability
    infra = cfg.gates.infra
    return [
        GateReport(name="quality", passed=True, metrics=metrics, thresholds=quality_thresholds(cfg),
                   details=quality_details),
        GateReport(name="explainability", passed=True,
                   metrics={"method": "tree", "rows": 2000, "seconds": 0.7, "max_share": 0.21,
                            "max_share_feature": "relationship", "ndcg_at_k": None if baseline is None else 0.97},
                   thresholds={"max_feature_share": bounds.max_feature_share, "min_ndcg": bounds.min_ndcg,
                               "top_k": bounds.top_k}),
        fairness,
        GateReport(name="infra", passed=True,
                   metrics={"rows": 200, "load_seconds": 0.41, "p95_latency_ms": 8.2, "peak_memory_mb": 212.0,
                            "predictions_equal": True, "max_abs_diff": 0.0},
                   thresholds={"max_load_seconds": infra.max_load_seconds,
                               "max_p95_latency_ms": infra.max_p95_latency_ms,
                               "max_peak_memory_mb": infra.max_peak_memory_mb}),
    ]


def decide(cfg: Any, settings: Any, number: int, baseline: int | None, fairness_passes: bool) -> str:
    """Store the four gate reports on the version's run and let `decide_version` write the record."""
    from autopilot.adapters import registry
    from autopilot.pipeline import gates as gate_stages
    from autopilot.pipeline.context import RunContext
    from autopilot.reports import GateFailure

    reg = registry.connect(settings)
    run_id = str(reg.resolve_version(cfg.registered_model_name, number).run_id)
    for report in gate_reports(cfg, number, baseline, fairness_passes):
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


def adult_sample(cfg: Any, seed: int) -> Any:
    """`SAMPLE_ROWS` canonical rows of the bundled Adult training data."""
    from autopilot.pipeline.data import load_batch

    return load_batch(cfg, cfg.data.source).sample(SAMPLE_ROWS, random_state=seed).reset_index(drop=True)


def validate_training_data(cfg: Any, settings: Any, number: int) -> None:
    """Great Expectations validates the version's training sample as the data task does (its Data Docs page)."""
    from autopilot.data.data_docs import run_name
    from autopilot.data.validation import validate_batch

    report = validate_batch(adult_sample(cfg, number), cfg, home=settings.home,
                            run_name=run_name(cfg.name, "train", f"seed-{number}"))
    assert report.details["data_docs"], report.reasons


def evidently_window(cfg: Any, settings: Any, end: datetime, seed: int) -> str:
    """Evidently's drift report of a window (Adult with older ages) against a reference, stored as monitoring does.

    Returns the report's URI in the artifact store (what the window's row records as `html_uri`).
    """
    import tempfile

    from autopilot.adapters.storage import open_store
    from autopilot.monitoring.drift import evidently_report
    from autopilot.ui.files import WINDOW_FORMAT, report_key

    reference = adult_sample(cfg, 100 + seed)[list(cfg.features)]
    window = adult_sample(cfg, 200 + seed)[list(cfg.features)]
    window["age"] = window["age"] + 9  # an older population: drift a reader can see
    store = open_store(settings.artifact_root, access=settings.object_store)
    key = report_key(cfg.name, f"{end:{WINDOW_FORMAT}}")
    with tempfile.TemporaryDirectory() as tmp:
        found = evidently_report(reference, window, cfg, Path(tmp), seed=seed)
        store.put(key, Path(found["html"]).read_bytes())
    return store.uri(key)


def seed_windows(cfg: Any, settings: Any, version: int, end: datetime) -> list[str]:
    """Hourly monitoring windows ending at `end`, with `WINDOW_SHARES` and `WINDOW_ACTIONS`.

    Returns the ids of the windows given an Evidently report (the newest `REPORTED_WINDOWS`).
    """
    from autopilot.monitoring.state import record_window
    from autopilot.ui.files import WINDOW_FORMAT

    count = len(WINDOW_SHARES)
    reported: list[str] = []
    for index, (share, action) in enumerate(zip(WINDOW_SHARES, WINDOW_ACTIONS, strict=True)):
        stop = end - timedelta(hours=count - 1 - index)
        series = {"rows": 2400.0} if share is None else {"drift_weighted_share": share, "rows": 2400.0}
        rows = 180 if share is None else 2400
        report: dict[str, Any] = {"series": series, "decision": {"action": action, "reasons": []}, "rows": rows,
                                  "html_uri": None}
        if index >= count - REPORTED_WINDOWS:
            report["html_uri"] = evidently_window(cfg, settings, stop, seed=index)
            reported.append(f"{stop:{WINDOW_FORMAT}}")
        record_window(settings, cfg.name, stop - timedelta(hours=1), stop, version, action, report)
    return reported


def seed_model(settings: Any, name: str, description: str = "Income above 50K (seeded lifecycle).") -> Seeded:
    """The full story (see the module docstring) for one model under `settings.config_dir`."""
    from autopilot.config import load_config
    from autopilot.versions.promotion import promote, rollback

    cfg = load_config(write_config(Path(settings.config_dir), name, description))
    moves = [(None, 1), (1, 2)]
    for number in (1, 2):
        assert register_version(cfg, settings, number) == number
        validate_training_data(cfg, settings, number)
        assert decide(cfg, settings, number, baseline=number - 1 or None, fairness_passes=True) == "promote"
    for before, number in moves:
        promote(settings, cfg.registered_model_name, number, actor=f"airflow:autopilot_training__{name}",
                reason="passed every promotion gate", expected_champion=before)
    rollback(settings, cfg.registered_model_name, actor=f"airflow:autopilot_monitoring__{name}",
             reason="the retrained champion performs worse than its predecessor by 7.1%")
    assert register_version(cfg, settings, 3) == 3
    validate_training_data(cfg, settings, 3)
    assert decide(cfg, settings, 3, baseline=1, fairness_passes=False) == "reject"
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    reported = seed_windows(cfg, settings, 1, end)
    return Seeded(name=name, config=Path(cfg.path), champion=1, challenger=2, window_count=len(WINDOW_SHARES),
                  reported_windows=reported)
