"""`challenger` goes only to a version that passed the gates; a rejected version holds no alias.

Versions are registered and decided through the project's own functions (`tests/lifecycle_support`:
a stage run, `registry.create_version`, the gate reports stored, `gate_stages.decide_version`),
without training, so the whole file takes seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry, state_db
from autopilot.config import load_config
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.reports import GateFailure, GateReport
from autopilot.settings import Settings
from autopilot.versions.promotion import current, history
from tests.lifecycle_support import register_version, write_config

pytestmark = pytest.mark.usefixtures("mlflow_clean")


@pytest.fixture
def model(tmp_path: Path) -> tuple[Any, Settings]:
    """A fresh model config and settings with an MLflow store and state DB of the test's own."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})
    cfg = load_config(write_config(tmp_path, "alias_model"))
    yield cfg, settings
    state_db.reset_engines()


def decide(cfg: Any, settings: Settings, number: int, verdict: str) -> str:
    """Store four gate reports that lead to `verdict` and run the DAG's `decide` on the version."""
    reg = registry.connect(settings)
    run_id = str(reg.resolve_version(cfg.registered_model_name, number).run_id)
    fairness = {
        "promote": GateReport(name="fairness", passed=True),
        "review": GateReport(name="fairness", passed=False, reasons=["interval straddles the band"],
                             details={"requires_review": True}),
        "reject": GateReport.failed("fairness", ["demographic parity ratio 0.41 is below 0.8"]),
    }[verdict]
    for report in (GateReport(name="quality", passed=True), GateReport(name="explainability", passed=True),
                   fairness, GateReport(name="infra", passed=True)):
        gate_stages._store_report(reg, run_id, report)
    ctx = RunContext(run_id=f"alias-{number}", dag_id=f"autopilot_training__{cfg.name}", actor="test")
    registered = {"name": cfg.registered_model_name, "version": number}
    snapped = {"snapshots": {"train": {"digest": "0" * 64}}}
    try:
        return str(gate_stages.decide_version(cfg, settings, ctx, registered, snapped,
                                              {"champion_version": None})["decision"])
    except GateFailure:
        return "reject"


def aliases(reg: registry.Registry, name: str) -> dict[str, int]:
    return {alias: int(v) for alias, v in (reg.client.get_registered_model(name).aliases or {}).items()}


def test_registration_sets_no_alias_and_only_a_passing_version_becomes_challenger(
        model: tuple[Any, Settings]) -> None:
    cfg, settings = model
    reg = registry.connect(settings)
    name = cfg.registered_model_name
    assert register_version(cfg, settings, 1) == 1
    assert aliases(reg, name) == {}  # registered, not judged: no alias yet
    assert decide(cfg, settings, 1, "promote") == "promote"
    assert aliases(reg, name) == {"challenger": 1}
    assert decide(cfg, settings, 1, "promote") == "promote"  # a retry of decide moves nothing
    assert aliases(reg, name) == {"challenger": 1}
    assert register_version(cfg, settings, 2) == 2
    assert decide(cfg, settings, 2, "reject") == "reject"
    assert aliases(reg, name) == {"challenger": 1}  # the rejected v2 holds no alias; v1 keeps it
    assert decide(cfg, settings, 2, "reject") == "reject"  # retried: still nothing on v2
    assert aliases(reg, name) == {"challenger": 1}
    assert register_version(cfg, settings, 3) == 3
    assert decide(cfg, settings, 3, "review") == "review"  # a human decides: it is the challenger
    assert aliases(reg, name) == {"challenger": 3}
    assert decide(cfg, settings, 1, "promote") == "promote"  # an older run decided late: no step back
    assert aliases(reg, name) == {"challenger": 3}
    assert history(settings, name, alias="challenger") == []  # the history holds champion moves
    assert current(name, "champion", reg) is None  # decide never touches the champion


def test_a_rejected_version_left_holding_challenger_loses_it(model: tuple[Any, Settings]) -> None:
    """A version registered by a release that set `challenger` at registration, then rejected."""
    cfg, settings = model
    reg = registry.connect(settings)
    name = cfg.registered_model_name
    for number in (1, 2):
        register_version(cfg, settings, number)
    reg.set_alias(name, "challenger", 1)
    assert decide(cfg, settings, 1, "reject") == "reject"
    assert aliases(reg, name) == {}  # removed, not left on the rejected v1
    reg.set_alias(name, "challenger", 1)  # as if set again from outside: v1 is known rejected
    assert decide(cfg, settings, 2, "reject") == "reject"
    assert aliases(reg, name) == {}  # v2's decide also takes it off the rejected v1
    reg.set_alias(name, "challenger", 2)
    register_version(cfg, settings, 3)
    assert decide(cfg, settings, 3, "promote") == "promote"
    assert aliases(reg, name) == {"challenger": 3}


def test_a_passing_version_replaces_a_newer_rejected_holder(model: tuple[Any, Settings]) -> None:
    cfg, settings = model
    reg = registry.connect(settings)
    name = cfg.registered_model_name
    for number in (1, 2):
        register_version(cfg, settings, number)
    reg.set_alias(name, "challenger", 2)  # the legacy order: alias at registration, then rejected
    assert decide(cfg, settings, 2, "reject") == "reject" and aliases(reg, name) == {}
    reg.set_alias(name, "challenger", 2)
    assert decide(cfg, settings, 1, "promote") == "promote"
    assert aliases(reg, name) == {"challenger": 1}  # older, but passed: better than a rejected holder
