"""Shadow deployment end to end on real Adult versions: serve, shadow, label, second opinion, promote.

v1 (a deliberately weak model: 300 rows, shallow) is the champion; v2 (HGB on 3,000 rows) passed
its gates and is `challenger`. The real app follows both aliases through the verified door,
answers from v1 only and shadows every request with v2; `/feedback` posts the true labels; the
`shadow` stage (as `autopilot run` calls it) compares them on those live rows with the quality
gate's bootstrap, records the second opinion in v2's decision record, and `promote` moves
`champion` to v2.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from autopilot.adapters import registry
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.shadow import shadow_phase
from autopilot.reports import GateReport
from autopilot.serving.app import create_app
from autopilot.serving.inference_log import InferenceLog
from autopilot.serving.model import RegistrySource
from autopilot.settings import Settings
from autopilot.versions.promotion import current
from tests.serving_support import HGB, adult_cfg, feature_rows, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEAK = {**HGB, "hgb.max_iter": 3, "hgb.max_leaf_nodes": 2}


def test_a_better_challenger_in_shadow_gets_a_second_opinion_and_is_promoted(tmp_path: Path,
                                                                             adult_frames: Any) -> None:
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    settings.ensure_local_dirs()
    base = adult_cfg()
    rollout = base.deployment.rollout.model_copy(update={"shadow": base.deployment.rollout.shadow.model_copy(
        update={"enabled": True, "min_rows": 300, "min_labeled_rows": 300})})
    cfg = base.model_copy(update={"deployment": base.deployment.model_copy(update={"rollout": rollout})})
    name = cfg.registered_model_name
    reg = registry.connect(settings)
    v1 = int(register_version(settings, cfg, adult_frames, params=WEAK, rows=300, alias="champion").version)
    v2 = int(register_version(settings, cfg, adult_frames, rows=3000, alias=None).version)
    run_id = str(reg.resolve_version(name, v2).run_id)
    for gate in ("quality", "explainability", "fairness", "infra"):
        gate_stages._store_report(reg, run_id, GateReport(name=gate, passed=True))
    ctx = RunContext(run_id="shadow-e2e", dag_id="cli", actor="cli")
    decided = gate_stages.decide_version(cfg, settings, ctx, {"name": name, "version": v2},
                                         {"snapshots": {"train": {"digest": "0" * 64}}}, {"champion_version": v1})
    assert decided["decision"] == "promote" and current(name, "challenger", reg) == v2

    rows = feature_rows(adult_frames, cfg, n=600)
    labels = adult_frames[1].head(600)[cfg.target.column].astype(str).str.rstrip(".").tolist()
    with InferenceLog(settings.inference_db) as log:
        app = create_app(cfg, RegistrySource(cfg, name, registry=reg), token=TOKEN, inference_log=log, follow=False,
                         shadow_source=RegistrySource(cfg, name, "challenger", registry=reg))
        with TestClient(app) as client:
            state = client.app.state.autopilot  # type: ignore[attr-defined]
            assert state.shadow.active and state.shadow.challenger.version == v2
            for start in range(0, 600, 50):
                answer = client.post("/predict", json={"records": rows[start:start + 50]},
                                     headers={**AUTH, "X-Request-ID": f"r{start}"})
                assert answer.status_code == 200 and answer.json()["model_version"] == v1
                assert client.post("/feedback", json={"request_id": f"r{start}", "labels": labels[start:start + 50]},
                                   headers=AUTH).status_code == 200
            assert state.shadow.drain(30)
        served = log.window(cfg.name, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        assert len(served) == 600 and set(served.version) == {v1}
        assert log.shadow_counts(cfg.name, v2) == (600, 600)

    verdict = shadow_phase(cfg, settings, ctx, {"name": name, "version": v2}, decided)
    assert verdict.outcome == "compared" and verdict.opinion == "better" and not verdict.hold, verdict
    record = json.loads(reg.download_artifacts(run_id, "decision/decision.json").read_text())
    opinion = record["second_opinions"]["shadow"]
    assert opinion["labeled_rows"] == 600 and opinion["comparison"]["ci"][0] > 0
    assert opinion["comparison"]["metrics"]["roc_auc"] < opinion["challenger_metrics"]["roc_auc"]
    assert np.isfinite(opinion["comparison"]["difference"]) and record["final_decision"] == "promote"
    promoted = gate_stages.promote_version(cfg, settings, ctx, {"name": name, "version": v2, "run_id": run_id},
                                           decided, None, verdict)
    assert promoted["promoted"] and current(name, "champion", reg) == v2
