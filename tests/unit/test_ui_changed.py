"""The Models page's "Changed predictions" section: a window report's section, kept compact in the state
database (monitoring/changed.py), read back by the page (ui/lifecycle.py) and rendered (ui/changed.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autopilot.monitoring.changed import PAGE_FEATURES, compact_changed
from autopilot.monitoring.state import record_window
from autopilot.settings import Settings
from autopilot.ui.lifecycle import gather, mlflow_links
from autopilot.ui.page import render_page
from tests.lifecycle_support import write_config

FEATURES = ["age", "hours_per_week", "education", "capital_gain", "workclass"]


def _section() -> dict:
    """What explain.changed.changed_predictions returns, for two rows (full: every feature)."""
    rows = []
    for rank, change in ((1, 0.42), (2, -0.31)):
        rows.append({
            "rank": rank, "window_index": rank * 10, "reference_index": rank, "score_window": 0.2 + change,
            "score_reference": 0.2, "change": change, "distance": 0.9, "driver": "age",
            "differing": [{"feature": "age", "reference": 30.0, "window": 52.0, "standardized_difference": 1.6},
                          {"feature": "education", "reference": "HS-grad", "window": "<b>Masters</b>",
                           "standardized_difference": 1.0},
                          {"feature": "hours_per_week", "reference": 40.0, "window": None,
                           "standardized_difference": None},
                          {"feature": "capital_gain", "reference": 0.0, "window": 10.0,
                           "standardized_difference": 0.1}],
            "shap": dict.fromkeys(FEATURES, 0.01), "shap_reference": dict.fromkeys(FEATURES, 0.0),
            "shap_change": {"age": 1.2, "hours_per_week": -0.2, "education": 0.3, "capital_gain": 0.01,
                            "workclass": 0.0},
            "lime": {"age": 0.25, "hours_per_week": 0.02, "education": 0.05, "capital_gain": 0.0, "workclass": 0.01},
            "lime_fit_r2": 0.3})
    return {"definition": "...", "top_n": 2, "sampled_rows": 500, "reference_rows": 5000, "output": "log_odds",
            "shap_method": "tree", "lime_output": "probability", "seconds": 1.2,
            "drivers": [{"feature": "age", "rows": 2}], "rows": rows,
            "shift": {"pairs": 300, "mean_shap_change": {"age": 0.2, "education": 0.1}, "top_features": ["age",
                                                                                                     "education"]}}


def test_compact_keeps_the_top_features_for_the_page() -> None:
    compact = compact_changed(_section())
    assert compact is not None and compact["drivers"] == [{"feature": "age", "rows": 2}]
    assert compact["shift"] == {"pairs": 300, "top_features": ["age", "education"], "skipped": None}
    row = compact["rows"][0]
    assert row["change"] == 0.42 and row["driver"] == "age" and len(row["differing"]) == PAGE_FEATURES
    assert list(row["shap_change"]) == ["age", "education", "hours_per_week"]  # by |value|
    assert list(row["lime"]) == ["age", "education", "hours_per_week"]
    assert compact_changed(None) is None and compact_changed({"error": "x"}) == {"error": "x"}


def test_the_models_page_shows_each_windows_changed_predictions(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_registry(settings: Settings) -> None:  # the MLflow sections are tested elsewhere (a new MLflow DB: ~15 s)
        raise ConnectionError("no registry in this test")

    monkeypatch.setattr("autopilot.ui.lifecycle._registry", no_registry)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"),
                                  "AUTOPILOT_CONFIG_DIR": str(tmp_path / "c")})
    write_config(settings.config_dir, "changed_model")
    end = datetime(2026, 12, 7, 5, tzinfo=UTC)
    record_window(settings, "changed_model", end - timedelta(hours=2), end - timedelta(hours=1), 1, "none",
                  {"series": {"drift_weighted_share": 0.01}, "rows": 600,
                   "changed_predictions": {"error": "ValueError: boom"}})
    record_window(settings, "changed_model", end - timedelta(hours=1), end, 1, "alert",
                  {"series": {"drift_weighted_share": 0.4}, "rows": 600,
                   "changed_predictions": compact_changed(_section())})
    view = next(v for v in gather(settings, mlflow_links(settings, {})) if v.name == "changed_model")
    assert view.windows[-1].changed is not None and view.windows[-1].changed["drivers"][0]["feature"] == "age"
    page = render_page([view], "2026-12-07T05:00:00+00:00", None)
    assert "<h3>Changed predictions</h3>" in page
    section = page.split("<h3>Changed predictions</h3>", 1)[1]
    assert section.count('class="changed-row"') == 2 and section.count('class="changed-window"') == 2
    assert '<span class="shift">age, education</span>' in section and "over 300 pairs" in section
    assert "age (2 rows)" in section and "+0.420" in section and "-0.310" in section
    assert "age: 30 → 52" in section and "hours_per_week: 40 → missing" in section
    assert "&lt;b&gt;Masters&lt;/b&gt;" in section and "<b>Masters</b>" not in section  # values are escaped
    assert "Could not list changed predictions: ValueError: boom" in section
    # Newest window first.
    assert section.index("age (2 rows)") < section.index("ValueError: boom")
