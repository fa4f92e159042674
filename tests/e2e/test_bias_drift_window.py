"""Bias drift through the monitoring stage: a real champion, its stored fairness gate report, two labeled windows.

The champion (an Adult HistGradientBoosting, `tests/reliability/monitoring_support.make_champion`)
went through the real explainability and fairness gates, which stored `gates/fairness.json` on its
run. Traffic is other people of the Adult test file than the gate's holdout, logged as the
endpoint logs it, then labeled through the inference log's feedback. A quiet window compares
every group and flags nothing; a window whose women's labels shifted as in `autopilot simulate`'s
concept scenario alerts with the bias reason, and both windows' summaries reach the state
database and the Models page's chart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from autopilot.data.sources import canonicalize
from autopilot.monitoring import state
from autopilot.monitoring.simulate import shift_frame
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.monitoring import monitor_window
from autopilot.ui.bias import bias_section
from autopilot.ui.lifecycle import WindowView
from tests.reliability.monitoring_support import make_champion
from tests.serving_support import adult_cfg

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

ROWS = 1500
START = datetime(2026, 3, 2, tzinfo=UTC)


def _label(champion: Any, prefix: str, labels: pd.Series) -> None:
    from autopilot.serving.inference_log import InferenceLog

    log = InferenceLog(champion.settings.inference_db)
    try:
        for i, label in enumerate(labels):
            log.add_feedback(f"{prefix}-{i}", [label])
    finally:
        log.close()


def test_a_window_whose_womens_labels_shifted_alerts_with_the_bias_reason(
        tmp_path: Any, adult_frames: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")  # no live endpoint: no error-rate series
    base = adult_cfg()
    cfg = base.model_copy(update={"monitoring": base.monitoring.model_copy(update={
        "drift": base.monitoring.drift.model_copy(update={"evidently_report": False})})})
    train, test = adult_frames
    test = test.sample(frac=1.0, random_state=0).reset_index(drop=True)
    holdout, live = test.iloc[:4000], canonicalize(test.iloc[4000:], cfg).dropna(subset=[cfg.target.column])
    with threadpool_limits(limits=1):  # OpenMP threads on a busy 2-core machine slow the fit and the gates
        champion = make_champion(tmp_path, cfg, (train.sample(3000, random_state=0), holdout))
    rng = np.random.default_rng(16)
    results = []
    for k, scenario in enumerate(("none", "concept")):
        rows = live.sample(ROWS, random_state=k).reset_index(drop=True)
        # Not shift_frame's `none`: its bootstrap resample of a sample doubles the variance of every rate.
        X, labels = rows[list(cfg.features)], rows[cfg.target.column]
        if scenario == "concept":
            X, labels, _ = shift_frame(rows, cfg, "concept", 0.3, seed=k, subgroup=("sex", "Female"))
        start = START + timedelta(hours=k)
        champion.serve(cfg.name, X, start, start + timedelta(hours=1), rng, f"w{k}")
        _label(champion, f"w{k}", labels)
        results.append(monitor_window(cfg, champion.settings, RunContext(run_id=f"w{k}", actor="test"), start,
                                      start + timedelta(hours=1)))
    quiet, shifted = results
    assert not any(r.startswith("bias drift") for r in quiet["reasons"]), quiet["reasons"]
    assert any(r.startswith("bias drift: TPR of sex=Female") for r in shifted["reasons"]), shifted["reasons"]
    assert shifted["action"] in ("alert", "retrain")
    stored = state.last_windows(champion.settings, cfg.name)
    summaries = [w["report"]["bias"] for w in stored]
    assert summaries[0]["status"] == "ok" and not summaries[0]["flagged"]
    assert "sex=Female.true_positive_rate" in summaries[1]["flagged"]
    assert summaries[0]["window"]["sex=Female.selection_rate"] > 0
    views = [WindowView(start=w["window_start"].isoformat(), end=w["window_end"].isoformat(), version=w["version"],
                        action=w["action"], rows=ROWS, drift_share=None, bias=w["report"]["bias"]) for w in stored]
    page = bias_section(views)
    assert "1 of 2 windows flagged" in page and 'class="bias-point flagged"' in page
