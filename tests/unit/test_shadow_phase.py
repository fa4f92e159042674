"""The shadow stage: waiting, the second opinion on a labeled shadow log (better, worse, too few labels), holds.

Versions are registered and decided through the project's own functions without training
(`tests/lifecycle_support`); the shadow log is a real inference log under the test's home, with
synthetic scores and labels (fixed seeds), so the whole file takes seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autopilot.adapters import registry, state_db
from autopilot.config import load_config
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.shadow import SHADOW_STARTED_TAG, look, shadow_phase
from autopilot.reports import GateReport
from autopilot.serving.inference_log import InferenceLog, InferenceRecord
from autopilot.settings import Settings
from autopilot.versions.promotion import current
from tests.lifecycle_support import register_version, write_config

pytestmark = pytest.mark.usefixtures("mlflow_clean")
CTX = RunContext(run_id="shadow-run", dag_id="autopilot_training__shadow_model", actor="airflow:test")
NOW = datetime.now(UTC).replace(microsecond=0)  # the phase starts "now": `shadow_phase` reads the clock


def with_shadow(cfg: Any, **shadow: Any) -> Any:
    rollout = cfg.deployment.rollout
    rollout = rollout.model_copy(update={"shadow": rollout.shadow.model_copy(update={"enabled": True, **shadow})})
    return cfg.model_copy(update={"deployment": cfg.deployment.model_copy(update={"rollout": rollout})})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One MLflow store and inference log for the file (a fresh store's migrations cost seconds)."""
    home = tmp_path_factory.mktemp("shadow")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "AUTOPILOT_CONFIG_DIR": str(home)})
    settings.ensure_local_dirs()
    yield settings
    state_db.reset_engines()


@pytest.fixture
def model(store: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """v1 champion, v2 decided `promote` against it (so `challenger`): a model of the test's own."""
    settings = store
    name = "shadow_" + "".join(c for c in request.node.name if c.isalnum())[-40:].lower()
    cfg = load_config(write_config(tmp_path, name))
    reg = registry.connect(settings)
    assert register_version(cfg, settings, 1) == 1
    reg.set_alias(cfg.registered_model_name, "champion", 1)
    assert register_version(cfg, settings, 2) == 2
    run_id = str(reg.resolve_version(cfg.registered_model_name, 2).run_id)
    for name in ("quality", "explainability", "fairness", "infra"):
        gate_stages._store_report(reg, run_id, GateReport(name=name, passed=True))
    decided = gate_stages.decide_version(cfg, settings, CTX, {"name": cfg.registered_model_name, "version": 2},
                                         {"snapshots": {"train": {"digest": "0" * 64}}}, {"champion_version": 1})
    assert decided["decision"] == "promote" and current(cfg.registered_model_name, "challenger", reg) == 2
    return cfg, settings, reg, decided


def serve_and_shadow(cfg: Any, settings: Settings, n: int, labeled: int, challenger_better: bool,
                     seed: int = 3) -> None:
    """`n` served rows (v1) shadowed by v2, the first `labeled` with feedback; one model informative, one noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, n), 0.01, 0.99)
    poor = np.clip(0.5 + (y - 0.5) * 0.1 + rng.normal(0, 0.2, n), 0.01, 0.99)
    champion, challenger = (poor, good) if challenger_better else (good, poor)
    at = NOW - timedelta(minutes=30)
    with InferenceLog(settings.inference_db) as log:
        log.append([InferenceRecord(f"{cfg.name}-{i}", 0, cfg.name, 1, at, {"age": 30 + i % 40},
                                    float(champion[i]), 5.0) for i in range(n)])
        log.append_shadow([InferenceRecord(f"{cfg.name}-{i}", 0, cfg.name, 2, at, {}, float(challenger[i]), 7.0)
                           for i in range(n)])
        for i in range(labeled):
            log.add_feedback(f"{cfg.name}-{i}", [">50K" if y[i] else "<=50K"])


def record(reg: registry.Registry, cfg: Any) -> dict[str, Any]:
    run_id = str(reg.resolve_version(cfg.registered_model_name, 2).run_id)
    return dict(json.loads(reg.download_artifacts(run_id, "decision/decision.json").read_text()))


def test_too_little_traffic_waits_and_the_start_is_recorded_once(model: Any) -> None:
    cfg, settings, reg, decided = model
    cfg = with_shadow(cfg, min_rows=100, min_labeled_rows=50, max_hours=24)
    serve_and_shadow(cfg, settings, n=40, labeled=10, challenger_better=True)
    verdict = look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW)
    assert verdict.outcome == "waiting" and not verdict.hold and "40 of 100 shadow rows, 10 of 50 labeled" in \
        verdict.reasons[0]
    started = reg.resolve_version(cfg.registered_model_name, 2).tags[SHADOW_STARTED_TAG]
    again = look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW + timedelta(hours=2))
    assert again.outcome == "waiting" and "for 2.0 h" in again.reasons[0]
    assert reg.resolve_version(cfg.registered_model_name, 2).tags[SHADOW_STARTED_TAG] == started
    # `autopilot run` (no scheduler to look again): still waiting after its bounded wait -> pending, held
    pending = shadow_phase(cfg, settings, RunContext(run_id="cli", dag_id="cli", actor="cli"),
                           {"name": cfg.registered_model_name}, decided)
    assert pending.outcome == "pending" and pending.hold and "autopilot promote" in pending.reasons[-1]
    promoted = gate_stages.promote_version(cfg, settings, CTX, {"name": cfg.registered_model_name, "version": 2},
                                           decided, None, pending)
    assert not promoted["promoted"] and current(cfg.registered_model_name, "champion", reg) == 1


def test_a_better_challenger_gets_a_second_opinion_in_the_record_and_is_promoted(model: Any) -> None:
    cfg, settings, reg, decided = model
    cfg = with_shadow(cfg, min_rows=100, min_labeled_rows=200, on_worse="reject")
    serve_and_shadow(cfg, settings, n=400, labeled=300, challenger_better=True)
    verdict = look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW)
    assert verdict.outcome == "compared" and verdict.opinion == "better" and not verdict.hold
    opinion = record(reg, cfg)["second_opinions"]["shadow"]
    assert opinion["labeled_rows"] == 300 and opinion["action"] == "promote"
    assert opinion["comparison"]["ci"][0] > 0 and opinion["comparison"]["holdout_rows"] == 300
    assert record(reg, cfg)["final_decision"] == "promote" and record(reg, cfg)["decision"] == "promote"
    assert reg.resolve_version(cfg.registered_model_name, 2).tags["autopilot.second_opinion.shadow"] == "better"
    # a retry returns the recorded verdict without comparing again
    assert look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW) == verdict


@pytest.mark.parametrize(("on_worse", "hold"), [("note", False), ("reject", True)])
def test_a_worse_challenger_is_noted_or_rejected_as_configured(model: Any, on_worse: str, hold: bool) -> None:
    cfg, settings, reg, decided = model
    cfg = with_shadow(cfg, min_rows=100, min_labeled_rows=200, on_worse=on_worse)
    serve_and_shadow(cfg, settings, n=400, labeled=300, challenger_better=False)
    verdict = look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW)
    assert verdict.outcome == "compared" and verdict.opinion == "worse" and verdict.hold is hold
    assert record(reg, cfg)["final_decision"] == ("reject" if hold else "promote")
    assert any("worse than the champion on 300 labeled live rows" in r for r in verdict.reasons)
    promoted = gate_stages.promote_version(cfg, settings, CTX, {"name": cfg.registered_model_name, "version": 2},
                                           decided, None, verdict)
    assert promoted["promoted"] is not hold
    # a rejected version loses `challenger`; a noted one was promoted (champion moved to it)
    assert current(cfg.registered_model_name, "champion", reg) == (1 if hold else 2)
    if hold:
        assert current(cfg.registered_model_name, "challenger", reg) is None


def test_too_few_labels_by_max_hours_is_recorded_without_an_opinion(model: Any) -> None:
    cfg, settings, reg, decided = model
    cfg = with_shadow(cfg, min_rows=100, min_labeled_rows=200, max_hours=24, on_too_few_labels="promote")
    serve_and_shadow(cfg, settings, n=300, labeled=50, challenger_better=True)
    assert look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW).outcome == "waiting"
    verdict = look(cfg, settings, {"name": cfg.registered_model_name}, decided, now=NOW + timedelta(hours=25))
    assert verdict.outcome == "too_few_labels" and verdict.opinion is None and not verdict.hold
    opinion = record(reg, cfg)["second_opinions"]["shadow"]
    assert opinion["status"] == "too_few_labels" and "comparison" not in opinion
    assert "50 labeled rows of the 200 needed" in opinion["reasons"][0]


def test_nothing_to_shadow_passes_through(model: Any) -> None:
    cfg, settings, reg, decided = model
    assert look(cfg, settings, {}, decided).outcome == "off"  # shadow off: as before
    shadowing = with_shadow(cfg)
    assert look(shadowing, settings, {}, {**decided, "champion_version": None}).outcome == "no_champion"
    assert look(shadowing, settings, {}, {**decided, "decision": "review"}).outcome == "not_promotable"


def test_the_dag_task_reschedules_while_waiting_and_a_test_run_ends_pending(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowRescheduleException

    from autopilot.orchestration.shadow import after_look

    cfg = with_shadow(load_config(write_config(tmp_path, "shadow_dag")),
                      poll_minutes=20)
    waiting = {"outcome": "waiting", "version": 4, "hold": False, "reasons": ["12 of 500 shadow rows"]}
    before = datetime.now(UTC)
    with pytest.raises(AirflowRescheduleException) as raised:  # up_for_reschedule: no worker slot held
        after_look(cfg, waiting, SimpleNamespace(triggering_user_name="alice"))
    assert timedelta(minutes=19) < raised.value.reschedule_date - before < timedelta(minutes=21)
    ended = after_look(cfg, waiting, SimpleNamespace(triggering_user_name="dag_test"))
    assert ended["outcome"] == "pending" and ended["hold"] and ended["reasons"][0] == "12 of 500 shadow rows"
    settled = {"outcome": "compared", "version": 4, "hold": False}
    assert after_look(cfg, settled, SimpleNamespace(triggering_user_name="alice")) is settled
