"""The Models page's multivariate drift section: each window's reconstruction error against its bounds, kept in
the state database by the monitoring stage, read back by the page (ui/lifecycle.py), drawn by ui/multivariate.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autopilot.monitoring.state import record_window
from autopilot.settings import Settings
from autopilot.ui.lifecycle import gather, mlflow_links
from autopilot.ui.multivariate import multivariate_points, multivariate_section
from autopilot.ui.page import render_page
from tests.lifecycle_support import write_config

HEADING = "<h3>Multivariate drift · reconstruction error against its bounds</h3>"


@dataclass
class Window:
    end: str
    multivariate: dict[str, Any] | None
    start: str = "2026-12-01T09:00:00+00:00"


def _result(error: float | None, drifted: bool = False, checked: bool = True,
            reason: str = "no multivariate drift: within bounds") -> dict[str, Any]:
    """A window's `MultivariateResult.as_dict()`."""
    return {"method": "pca_reconstruction", "checked": checked, "sufficient": True, "drifted": drifted,
            "error": error, "lower": 1.9 if checked else None, "upper": 2.1 if checked else None,
            "reference_error": 2.0 if checked else None, "change": None if error is None else error / 2.0 - 1.0,
            "components": 7 if checked else 0, "rows": 1500, "reason": reason}


def test_points_keep_the_window_order_and_leave_undecided_windows_out() -> None:
    windows = [Window("2026-12-01T10:00:00+00:00", _result(2.02)),
               Window("2026-12-01T11:00:00+00:00", None),  # recorded before the check was stored
               Window("2026-12-01T12:00:00+00:00", _result(None, checked=False, reason="insufficient data: 12 rows")),
               Window("2026-12-01T13:00:00+00:00", _result(2.31, drifted=True))]
    assert multivariate_points(windows) == [(2.02, 1.9, 2.1, False), None, None, (2.31, 1.9, 2.1, True)]


def test_the_chart_draws_each_checked_window_against_its_bounds() -> None:
    windows = [Window("2026-12-01T10:00:00+00:00", _result(2.02)),
               Window("2026-12-01T11:00:00+00:00", _result(None, checked=False, reason="insufficient data: 12 rows")),
               Window("2026-12-01T12:00:00+00:00", _result(2.31, drifted=True,
                                                           reason="multivariate drift: error <b>2.31</b> above"))]
    html = multivariate_section(windows)
    assert html.startswith(HEADING) and "1 of 2 checked windows drifted" in html
    assert html.count('class="mv-bound"') == 2 and html.count('class="mv-reference"') == 1
    assert html.count('class="mv-point"') == 1 and html.count('class="mv-point flagged"') == 1
    assert "error 2.3100, bounds 1.9000-2.1000 drifted" in html and "2026-12-01 12:00 UTC" in html
    # The latest reason is said, escaped; no scripts.
    assert "The latest: multivariate drift: error &lt;b&gt;2.31&lt;/b&gt; above." in html and "<b>" not in html
    assert "<script" not in html
    # The drifted window's dot sits above its band's top (SVG y grows downwards).
    band_top = [float(v) for v in re.findall(r'class="mv-bound" x="[\d.]+" y="([\d.]+)"', html)]
    dot = re.search(r'class="mv-point flagged" cx="[\d.]+" cy="([\d.]+)"', html)
    assert dot is not None and float(dot.group(1)) < band_top[1]


def test_no_checked_window_is_said_with_the_latest_reason() -> None:
    html = multivariate_section([Window("2026-12-01T10:00:00+00:00", None),
                                 Window("2026-12-01T11:00:00+00:00", _result(
                                     None, checked=False, reason="multivariate drift not checked: disabled"))])
    assert html.startswith(HEADING) and "No window was checked for multivariate drift yet" in html
    assert "The latest: multivariate drift not checked: disabled." in html and "<svg" not in html


def test_the_models_page_shows_the_windows_multivariate_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_registry(settings: Settings) -> None:  # the MLflow sections are tested elsewhere (a new MLflow DB: ~15 s)
        raise ConnectionError("no registry in this test")

    monkeypatch.setattr("autopilot.ui.lifecycle._registry", no_registry)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"),
                                  "AUTOPILOT_CONFIG_DIR": str(tmp_path / "c")})
    write_config(settings.config_dir, "mv_model")
    end = datetime(2026, 12, 7, 5, tzinfo=UTC)
    for k, (action, result) in enumerate((("none", _result(2.01)), ("alert", _result(2.4, drifted=True)))):
        record_window(settings, "mv_model", end - timedelta(hours=2 - k), end - timedelta(hours=1 - k), 1, action,
                      {"series": {"drift_weighted_share": 0.01}, "rows": 1500, "multivariate": result})
    view = next(v for v in gather(settings, mlflow_links(settings, {})) if v.name == "mv_model")
    assert [w.multivariate["error"] for w in view.windows if w.multivariate] == [2.01, 2.4]
    page = render_page([view], "2026-12-07T05:00:00+00:00", None)
    section = page.split(HEADING, 1)[1]
    assert "1 of 2 checked windows drifted" in section and section.count('class="mv-point flagged"') == 1
