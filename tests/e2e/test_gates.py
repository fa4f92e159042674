"""The promotion gates end to end, in-process: rejection keeps the champion, first-run policies,
and the human commands (promote, rollback, status, compare, retire)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.cli import main, run_pipeline
from autopilot.config import load_config
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.data import snapshot_data, validate_data
from autopilot.pipeline.training import train_and_register, tune_model
from autopilot.reports import GateFailure
from autopilot.versions.promotion import history

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


def register(cfg: Any, settings: Any, run_id: str) -> tuple[dict[str, Any], dict[str, Any], RunContext]:
    ctx = RunContext(run_id=run_id, dag_id="test", actor="test")
    snapped = snapshot_data(cfg, settings, ctx, validate_data(cfg, settings, ctx))
    registered = train_and_register(cfg, settings, ctx, snapped, tune_model(cfg, settings, ctx, snapped))
    return registered, snapped, ctx


def champion(reg: registry.Registry, name: str) -> int:
    return int(reg.resolve_version(name, "champion").version)


def test_a_corrupted_challenger_is_rejected_and_the_champion_stays(
        reg: registry.Registry, small_adult: Callable[..., Path], settings: Any) -> None:
    cfg = load_config(small_adult())
    first = run_pipeline(cfg, settings, "first")
    assert first["decision"] == "promote" and champion(reg, cfg.name) == 1
    registered, snapped, ctx = register(cfg, settings, "second")
    version = reg.resolve_version(cfg.name, registered["version"])
    model_file = next(reg.download(version.source).glob("*.skops"))
    payload = bytearray(model_file.read_bytes())
    payload[len(payload) // 2] ^= 0xFF  # one byte flipped after registration
    model_file.write_bytes(bytes(payload))
    infra = gate_stages.infra_gate(cfg, settings, ctx, registered, snapped)
    assert not infra["passed"] and any("changed file model.skops" in r for r in infra["reasons"])
    quality = gate_stages.quality_gate(cfg, settings, ctx, registered, snapped)
    assert not quality["passed"]  # it cannot even be loaded: fails closed
    gate_stages.explainability_and_fairness_gates(cfg, settings, ctx, registered, snapped)
    with pytest.raises(GateFailure, match="infra"):
        gate_stages.decide_version(cfg, settings, ctx, registered, snapped, quality)
    assert champion(reg, cfg.name) == 1
    aliases = reg.client.get_registered_model(cfg.name).aliases
    assert {k: int(v) for k, v in aliases.items()} == {"champion": 1, "challenger": 1}  # v2 (rejected): none
    tags = reg.resolve_version(cfg.name, 2).tags
    assert tags["autopilot.decision"] == "reject" and tags["autopilot.gate.infra"] == "failed"
    record = reg.client.download_artifacts(str(version.run_id), "decision/decision.json")
    assert '"decision": "reject"' in Path(record).read_text()


def test_first_run_review_then_human_promote_rollback_and_status(
        reg: registry.Registry, small_adult: Callable[..., Path], settings: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = small_adult(gates={"quality": {"first_run": "require_review"}})
    cfg = load_config(path)
    monkeypatch.setenv("AUTOPILOT_HOME", str(settings.home))
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(path.parent))
    first = run_pipeline(cfg, settings, "first")
    assert first["decision"] == "review" and not first["promoted"]
    # In process there is nobody to ask: the output says how to approve (Airflow's approval or the CLI).
    assert f"autopilot promote {cfg.name} --version 1 --reason" in first["review"] and "Airflow UI" in first["review"]
    with pytest.raises(LookupError):
        reg.resolve_version(cfg.name, "champion")
    with pytest.raises(SystemExit):  # --reason is mandatory
        main(["promote", cfg.name, "--version", "1"])
    capsys.readouterr()
    assert main(["promote", cfg.name, "--version", "1", "--reason", "reviewed the fairness report"]) == 0
    assert champion(reg, cfg.name) == 1
    second = run_pipeline(cfg, settings, "second")  # a champion exists: the gates compare against it
    assert second["decision"] == "promote" and champion(reg, cfg.name) == 2, second
    assert main(["rollback", cfg.name, "--reason", "latency regression"]) == 0
    assert champion(reg, cfg.name) == 1
    moves = [(m.action, m.from_version, m.to_version) for m in history(settings, cfg.name)]
    assert moves == [("force_promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    capsys.readouterr()
    assert main(["status", cfg.name]) == 0
    out = capsys.readouterr().out
    assert "champion 1" in out and "rollback" in out and "last decision: version 2 -> promote" in out
    assert main(["compare", cfg.name, "1", "2"]) == 0
    assert "version 1 vs version 2" in capsys.readouterr().out
    # The champion (1) and the rollback target (2: it was champion before the rollback) never retire.
    assert main(["retire", cfg.name, "--version", "1"]) == 2
    assert "cannot retire" in capsys.readouterr().err


def test_first_run_promote_policy_and_retention(
        reg: registry.Registry, small_adult: Callable[..., Path], settings: Any) -> None:
    from autopilot.versions.retention import apply_retention

    cfg = load_config(small_adult(retention={"keep_last": 1, "delete_artifacts": True}))
    assert run_pipeline(cfg, settings, "first")["promoted"]
    registered, _, _ = register(cfg, settings, "second")
    registered, _, _ = register(cfg, settings, "third")
    assert registered["version"] == 3
    retired = apply_retention(settings, cfg, actor="test")
    assert retired == [2]  # 3 is kept (the last 1), 1 is the champion
    retired_version = reg.resolve_version(cfg.name, 2)
    assert retired_version.tags["autopilot.retired"] == "true"
    with pytest.raises(Exception):  # noqa: B017 - the model files are gone, whatever MLflow raises
        load_version(retired_version, LoadPolicy(), reg)
    run = reg.client.get_run(str(retired_version.run_id))  # the run and its record stay for audit
    assert run.data.metrics["test_roc_auc"] > 0.5
    assert apply_retention(settings, cfg, actor="test") == []  # idempotent
    assert int(reg.resolve_version(cfg.name, "champion").version) == 1
