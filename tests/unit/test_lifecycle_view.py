"""The Models page (`autopilot.ui`): gathered from a real MLflow registry and state DB, rendered, served.

One module-scoped seed (tests/lifecycle_support.py) writes a model's whole lifecycle through the
project's own functions; the tests read it back through the page, the JSON route and the
Airflow plugin file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autopilot.settings import Settings
from autopilot.ui.app import SECURITY_HEADERS, LazyApp, create_app
from autopilot.ui.lifecycle import NO_VERSIONS, ModelView, WindowView, gather, mlflow_links
from autopilot.ui.page import drift_chart, render_page
from tests.airflow_tokens import Tokens, airflow_tokens
from tests.helpers import PROJECT
from tests.lifecycle_support import FAIRNESS_REASON, METRICS, WINDOW_SHARES, Seeded, seed_model, write_config

pytestmark = [pytest.mark.usefixtures("mlflow_clean"),
              pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]

MODEL = "adult_lifecycle"
MALICIOUS = '<script>alert("owned")</script><img src=x onerror=alert(1)>'
MLFLOW_UI = "http://127.0.0.1:5001"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Seeded]:
    """One seeded model, one never-trained model, one unreadable config (seeding costs ~15 s)."""
    root = tmp_path_factory.mktemp("lifecycle")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home"), "AUTOPILOT_CONFIG_DIR": str(root / "config")})
    story = seed_model(settings, MODEL, description=MALICIOUS)
    write_config(settings.config_dir, "fresh_model", "Not trained yet.")
    (settings.config_dir / "zz_broken.yaml").write_text("name: [unclosed\n")
    return settings, story


def views_by_name(settings: Settings) -> dict[str, ModelView]:
    links = mlflow_links(settings, {"AUTOPILOT_MLFLOW_UI_URL": MLFLOW_UI})
    return {view.name: view for view in gather(settings, links)}


def page_html(settings: Settings) -> str:
    return render_page(list(views_by_name(settings).values()), "2026-11-27T14:00:00+00:00", MLFLOW_UI)


def test_gather_reads_every_section_from_the_stores(seeded: tuple[Settings, Seeded]) -> None:
    settings, story = seeded
    view = views_by_name(settings)[MODEL]
    assert view.notes == {}
    assert view.champion is not None and view.challenger is not None
    assert (view.champion.version, view.challenger.version) == (story.champion, story.challenger)
    assert view.champion.metrics == {"roc_auc": METRICS[1]["roc_auc"], "accuracy": METRICS[1]["accuracy"]}
    assert list(view.challenger.metrics)[0] == "roc_auc"  # the config's metric first
    assert view.champion.url == f"{MLFLOW_UI}/#/models/{MODEL}/versions/1"
    assert view.champion.run_url and f"/runs/{view.champion.run_id}" in view.champion.run_url
    decision = view.decision
    assert decision is not None and decision.source == "record"
    assert (decision.version, decision.decision, decision.baseline_version) == (3, "reject", 1)
    assert {g.name: g.passed for g in decision.gates} == {"quality": True, "explainability": True,
                                                          "fairness": False, "infra": True}
    assert [m["action"] for m in view.history] == ["rollback", "promote", "promote"]  # newest first
    assert [(m["from_version"], m["to_version"]) for m in view.history] == [(2, 1), (1, 2), (None, 1)]
    assert [w.drift_share for w in view.windows] == WINDOW_SHARES
    assert view.thresholds == {"alert": 0.1, "retrain": 0.15, "severe": 0.6}


def test_versions_carry_what_they_were_compared_with_and_where_they_came_from(
        seeded: tuple[Settings, Seeded]) -> None:
    settings, story = seeded
    view = views_by_name(settings)[MODEL]
    assert view.champion is not None and view.challenger is not None
    # v1 was a first run; v2 was compared with v1; v3 (rejected) with v1 after the rollback.
    assert (view.champion.compared_with, view.challenger.compared_with) == (None, 1)
    assert [(v.version, v.compared_with, v.decision) for v in view.versions] == [
        (3, 1, "reject"), (2, 1, "promote"), (1, None, "promote")]
    assert [v.aliases for v in view.versions] == [[], ["challenger"], ["champion"]]
    assert len({v.version for v in view.versions}) == len(view.versions)
    # The Airflow run that registered each version, under the api-server (no AIRFLOW__API__BASE_URL here).
    assert view.champion.airflow_url == f"/dags/autopilot_training__{MODEL}/runs/seed-1"
    assert view.versions[0].airflow_url == f"/dags/autopilot_training__{MODEL}/runs/seed-3"
    # The Data Docs page of the validation of that run's training data, in the model's real GX site.
    (page,) = view.champion.data_docs.values()
    assert page.startswith(f"datadocs/{MODEL}/validations/{MODEL}_suite/{MODEL}.train.seed-1/")
    assert page.endswith(".html")
    assert (settings.home / "gx/uncommitted/data_docs" / f"{MODEL}_site" / page.split("/", 2)[2]).is_file()
    assert view.data_docs_url == f"datadocs/{MODEL}/index.html"
    # The newest windows link their Evidently report; the others stored none.
    assert [w.report_url for w in view.windows if w.report_url] == [
        f"reports/{MODEL}/{window}" for window in story.reported_windows]
    assert sum(1 for w in view.windows if w.report_url is None) == story.window_count - len(story.reported_windows)


def test_airflow_links_follow_the_base_url() -> None:
    from autopilot.ui.lifecycle import airflow_links

    assert airflow_links({}).dag_run("d", "r") == "/dags/d/runs/r"
    links = airflow_links({"AIRFLOW__API__BASE_URL": "https://user:pw@airflow.example/prefix/"})
    assert links.dag_run("autopilot_training__m", "manual__2026-01-01T00:00:00+00:00") == (
        "https://airflow.example/prefix/dags/autopilot_training__m/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00")
    assert airflow_links({"AIRFLOW__API__BASE_URL": "javascript:alert(1)"}).dag_run("d", "r") == "/dags/d/runs/r"
    assert links.dag_run(None, "r") is None


def test_page_shows_model_versions_metrics_gates_history_and_chart(seeded: tuple[Settings, Seeded]) -> None:
    settings, story = seeded
    html = page_html(settings)
    card = section(html, MODEL)
    assert f"<h2>{MODEL}</h2>" in card
    assert "champion v1" in card and "challenger v2" in card  # v3 was rejected: it holds no alias
    assert "0.9012" in card and "0.9075" in card  # roc_auc of champion and challenger
    assert re.search(r'data-gate="fairness" data-result="fail"', card)
    for gate in ("quality", "explainability", "infra"):
        assert f'data-gate="{gate}" data-result="pass"' in card
    assert "equalized odds difference by sex 0.27" in card
    assert card.count('<tr class="move">') == 3
    # Side by side: one column per version, with what each was compared with and its links.
    versions = re.search(r'<table class="versions">.*?</table>', card, re.S)
    assert versions is not None
    assert re.findall(r'<th data-version="(\d+)">', versions.group(0)) == ["1", "2"]
    assert "first run (no champion)" in versions.group(0) and "compared with v1" in versions.group(0)
    for text in ("Airflow run", "MLflow run", "MLflow version", "Data Docs (train)"):
        assert versions.group(0).count(f"{text} ↗") == 2, text
    recent = re.search(r'<table class="recent">.*?</table>', card, re.S)
    assert recent is not None and re.findall(r'data-version="(\d+)"', recent.group(0)) == ["3", "2", "1"]
    # Each gate's gated metrics, not incidental numbers (rows, seconds).
    quality = re.search(r'data-gate="quality".*?</table>', card, re.S)
    assert quality is not None
    assert "Δ +0.0089" in quality.group(0) and "0.9012" in quality.group(0) and "champion v1" in quality.group(0)
    assert "difference ≥ -0.005" in quality.group(0) and "≥ 0.85" in quality.group(0)
    fairness = re.search(r'data-gate="fairness".*?</table>', card, re.S)
    assert fairness is not None
    assert re.search(r'data-status="gated" data-outcome="failed"><td>sex: equalized_odds_difference</td>',
                     fairness.group(0))
    assert 'data-status="report-only" data-outcome=""><td>sex: demographic_parity_ratio' in fairness.group(0)
    assert "0.2600 … 0.2900" in fairness.group(0) and "≤ 0.25" in fairness.group(0)
    explain = re.search(r'data-gate="explainability".*?</table>', card, re.S)
    assert explain is not None and "seconds" not in explain.group(0) and "rows" not in explain.group(0)
    assert card.count("Evidently report ↗") == len(story.reported_windows)
    assert f'href="datadocs/{MODEL}/index.html"' in card
    assert "v2 → v1" in card and "rollback" in card
    svg = re.search(r'<svg class="drift-chart".*?</svg>', card, re.S)
    assert svg is not None
    assert svg.group(0).count('class="window-mark') == story.window_count == len(WINDOW_SHARES)
    assert svg.group(0).count('class="window-mark insufficient"') == WINDOW_SHARES.count(None)
    assert svg.group(0).count('class="threshold"') == 2
    assert f'href="{MLFLOW_UI}/#/models/{MODEL}/versions/1"' in card


def test_free_text_is_escaped(seeded: tuple[Settings, Seeded]) -> None:
    html = page_html(seeded[0])
    assert "<script" not in html and "<img" not in html  # the page has no markup of its own of either
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in html
    assert "onerror=alert(1)&gt;" in html
    assert "<b>bold?</b>" not in html and "&lt;b&gt;bold?&lt;/b&gt;" in html  # a gate reason
    assert FAIRNESS_REASON.split(" <b>")[0] in html


def test_missing_versions_windows_and_history_are_messages(seeded: tuple[Settings, Seeded]) -> None:
    settings, _ = seeded
    fresh = views_by_name(settings)["fresh_model"]
    assert fresh.champion is None and fresh.decision is None and fresh.windows == [] and fresh.history == []
    assert fresh.notes["versions"].startswith(NO_VERSIONS)
    assert fresh.url is None and fresh.data_docs_url is None  # no page for it in MLflow or GX yet: no link
    assert "autopilot_training__fresh_model" in fresh.notes["versions"]
    assert fresh.notes["monitoring"].startswith("No monitoring windows recorded yet")
    assert fresh.notes["history"].startswith("No alias moves recorded yet")
    card = section(page_html(settings), "fresh_model")
    for part in ("versions", "monitoring", "history", "decision"):
        assert f'data-section="{part}"' in card
    assert "drift-chart" not in card and "No monitoring windows recorded yet" in card


def test_broken_config_and_unreachable_state_db_do_not_hide_other_models(seeded: tuple[Settings, Seeded]) -> None:
    settings, _ = seeded
    broken = views_by_name(settings)["zz_broken"]
    assert broken.notes["config"].startswith("The config cannot be read: ConfigError: zz_broken.yaml: not valid YAML")
    assert str(settings.config_dir) not in broken.notes["config"]  # no server paths on the page
    # Nothing listens on port 1: the state DB is unreachable; its password must not reach the page.
    offline = replace(settings, state_db="postgresql+psycopg2://autopilot:s3cret-pw@127.0.0.1:1/state")
    view = views_by_name(offline)[MODEL]
    assert view.notes["history"].startswith("Alias history unavailable: OperationalError")
    assert view.notes["monitoring"].startswith("Monitoring unavailable: OperationalError")
    assert view.champion is not None and view.champion.version == 1  # the registry part still shows
    assert view.decision is not None and view.decision.decision == "reject"
    html = page_html(offline)
    assert "s3cret-pw" not in html
    assert 'class="note error" data-section="history"' in html
    assert section(html, "zz_broken") and section(html, "fresh_model")


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return airflow_tokens()


def guarded_app(settings: Settings) -> Any:
    """The page app behind Airflow's real auth manager (tests/unit/test_models_page_auth.py tests the guard)."""
    from autopilot.orchestration.airflow_auth import AirflowAuthenticator

    return create_app(lambda: settings, authenticator=AirflowAuthenticator())


def test_routes_serve_html_and_json_and_nothing_writes(seeded: tuple[Settings, Seeded], tokens: Tokens) -> None:
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    settings, story = seeded
    app = guarded_app(settings)
    client = TestClient(app, headers={"Authorization": f"Bearer {tokens.valid()}"})
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no scripts
    assert f"<h2>{MODEL}</h2>" in page.text
    data = client.get("/api/models").json()
    json.dumps(data, allow_nan=False)  # strict JSON
    models = {m["name"]: m for m in data["models"]}
    assert set(models) == {MODEL, "fresh_model", "zz_broken"}
    assert models[MODEL]["champion"]["version"] == story.champion
    fairness = models[MODEL]["decision"]["gates"][2]
    assert (fairness["name"], fairness["passed"], fairness["reasons"]) == ("fairness", False, [FAIRNESS_REASON])
    assert {"metric": "sex: equalized_odds_difference", "value": 0.27, "status": "gated", "outcome": "failed",
            "champion": None, "difference": None, "interval": [0.26, 0.29], "confidence": 0.95,
            "threshold": "≤ 0.25", "compared_with": None} in fairness["checks"]
    assert len(models[MODEL]["windows"]) == story.window_count
    assert client.get("/icon.svg").headers["content-type"].startswith("image/svg+xml")
    # Read-only: no write route at all, even for a logged-in user.
    methods = {m for route in app.routes if isinstance(route, APIRoute) for m in route.methods}
    assert methods <= {"GET", "HEAD"}, methods
    assert client.post("/", json={}).status_code == 405
    assert client.get("/openapi.json").status_code == 404


def test_the_seeded_reports_are_served_behind_the_login(seeded: tuple[Settings, Seeded], tokens: Tokens) -> None:
    from fastapi.testclient import TestClient

    from autopilot.ui.files import SERVED_HEADERS

    settings, story = seeded
    client = TestClient(guarded_app(settings), headers={"Authorization": f"Bearer {tokens.valid()}"})
    view = views_by_name(settings)[MODEL]
    assert view.champion is not None
    reports = [w.report_url for w in view.windows if w.report_url]
    urls = [view.data_docs_url, *view.champion.data_docs.values(), *reports]
    assert len(urls) == 2 + len(story.reported_windows)
    for url in urls:
        reply = client.get(f"/{url}")
        assert reply.status_code == 200, url
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert reply.headers["content-security-policy"].startswith("sandbox allow-scripts")
        assert len(reply.content) > 2000, url  # real pages, not stubs
    report = client.get(f"/{urls[-1]}")
    assert report.headers["content-security-policy"] == SERVED_HEADERS["Content-Security-Policy"]
    assert "Drift" in report.text and "<script" in report.text  # Evidently's own page, scripts and all
    page = client.get(f"/{urls[1]}").text
    assert f"{MODEL}.train.seed-1" in page and "Expectation Validation Result" in page  # GX's page of that run
    anonymous = TestClient(guarded_app(settings))
    assert all(anonymous.get(f"/{url}").status_code == 401 for url in urls)


def test_one_version_holding_both_aliases_is_one_column() -> None:
    from autopilot.ui.lifecycle import VersionView

    both = VersionView(version=2, aliases=["challenger", "champion"], run_id="r" * 32, status="READY",
                       created_at="2026-12-07T01:00:00+00:00", family="linear", metrics={"roc_auc": 0.9},
                       decision="promote", compared_with=1)
    model = ModelView(name="m", config_file="m.yaml", metric="roc_auc", champion=both, challenger=both,
                      versions=[both])
    html = render_page([model], "2026-12-07T01:00:00", None)
    table = re.search(r'<table class="versions">.*?</table>', html, re.S)
    assert table is not None and re.findall(r'<th data-version="(\d+)">', table.group(0)) == ["2"]
    assert "champion</span>" in table.group(0) and "challenger</span>" in table.group(0)
    assert "compared with v1" in table.group(0)


def test_lazy_app_builds_the_app_on_first_request(seeded: tuple[Settings, Seeded], tokens: Tokens) -> None:
    from fastapi.testclient import TestClient

    settings, _ = seeded
    built: list[int] = []

    def factory() -> Any:
        built.append(1)
        return guarded_app(settings)

    lazy = LazyApp(factory)
    assert built == []
    client = TestClient(lazy, headers={"Authorization": f"Bearer {tokens.valid()}"})
    assert client.get("/api/models").status_code == 200
    assert client.get("/").status_code == 200
    assert built == [1]


def test_mlflow_links_come_from_the_env_or_an_http_tracking_uri(settings: Settings) -> None:
    assert mlflow_links(settings, {}).base is None  # SQLite tracking: no UI to link to
    assert mlflow_links(settings, {"AUTOPILOT_MLFLOW_UI_URL": "https://mlflow.example/ui/"}).base == \
        "https://mlflow.example/ui"
    remote = replace(settings, mlflow_tracking_uri="http://user:pw@10.0.0.5:5000")
    links = mlflow_links(remote, {})
    assert links.base == "http://10.0.0.5:5000"  # credentials dropped
    assert links.version("a b/c", 3) == "http://10.0.0.5:5000/#/models/a%20b%2Fc/versions/3"
    assert links.run("7", "abc") == "http://10.0.0.5:5000/#/experiments/7/runs/abc"
    assert links.run(None, "abc") is None
    assert mlflow_links(settings, {"AUTOPILOT_MLFLOW_UI_URL": "javascript:alert(1)"}).base is None


def test_drift_chart_has_one_mark_per_window_and_levels() -> None:
    windows = [WindowView(start=f"2026-01-01T0{i}:00:00+00:00", end=f"2026-01-01T0{i + 1}:00:00+00:00", version=1,
                          action=action, rows=2000, drift_share=share)
               for i, (share, action) in enumerate([(0.01, "none"), (None, "none"), (0.12, "alert"),
                                                    (0.4, "retrain")])]
    svg = drift_chart(windows, {"alert": 0.1, "retrain": 0.15})
    marks = re.findall(r'class="window-mark (\w+)"', svg)
    assert marks == ["ok", "insufficient", "alert", "retrain"]
    assert svg.count('class="action-mark"') == 2  # alert and retrain, not none
    assert "too few rows to decide" in svg and "drift share 0.400" in svg


def test_decision_falls_back_to_version_tags_when_the_record_is_unreadable() -> None:
    from types import SimpleNamespace

    from autopilot.ui.lifecycle import _decision_from_tags

    version = SimpleNamespace(version="4", tags={
        "autopilot.decision": "reject", "autopilot.decided_at": "2026-11-27T10:00:00+00:00",
        "autopilot.decided_by": "airflow:x", "autopilot.gate.quality": "passed", "autopilot.gate.infra": "failed",
        "autopilot.decision_reasons": "infra: load failed; fairness: the gate did not report (fails closed)"})
    view = _decision_from_tags(version, None)
    assert (view.version, view.decision, view.source, view.actor) == (4, "reject", "tags", "airflow:x")
    assert [(g.name, g.passed, g.reasons) for g in view.gates] == [("infra", False, ["infra: load failed"]),
                                                                   ("quality", True, [])]
    html = render_page([ModelView(name="m", config_file="m.yaml", decision=view)], "2026-11-27T10:00:00", None)
    assert "from version tags (record unreadable)" in html
    assert "fairness: the gate did not report" in html  # a reason no gate row shows stays listed


def test_plugin_file_loads_cheaply_under_airflow(tmp_path: Path) -> None:
    """The plugin as Airflow 3.3 loads it: valid, wired to the app, and FastAPI not imported yet."""
    script = (
        "import json, sys\n"
        "from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory\n"
        f"plugins, errors = _load_plugins_from_plugin_directory(plugins_folder={str(PROJECT / 'plugins')!r})\n"
        "plugin = next(p for p in plugins if p.name == 'autopilot_models')\n"
        "progress = next(p for p in plugins if p.name == 'autopilot_progress')\n"
        "print(json.dumps({'names': sorted(p.name for p in plugins), 'errors': errors,\n"
        "  'listeners': [m.__name__ for m in progress.listeners],\n"
        "  'fastapi_loaded': 'fastapi' in sys.modules, 'mlflow_loaded': 'mlflow' in sys.modules,\n"
        "  'apps': [{k: (type(v).__name__ if k == 'app' else v) for k, v in a.items()} for a in plugin.fastapi_apps],\n"
        "  'factory': [f'{a[\"app\"]._factory.__module__}.{a[\"app\"]._factory.__name__}'\n"
        "              for a in plugin.fastapi_apps],\n"
        "  'views': plugin.external_views}))\n"
    )
    # PYTHONPATH passed on: the child imports the same autopilot sources as this process.
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["names"] == ["autopilot_models", "autopilot_progress"] and found["errors"] == {}
    assert found["listeners"] == ["autopilot.orchestration.progress_listener"]
    assert not found["fastapi_loaded"] and not found["mlflow_loaded"]
    assert found["apps"] == [{"app": "LazyApp", "url_prefix": "/autopilot", "name": "autopilot models"}]
    assert found["factory"] == ["autopilot.orchestration.airflow_auth.models_app"]  # the app behind Airflow's login
    assert found["views"] == [{"name": "Models", "href": "/autopilot/", "destination": "nav", "url_route": "models",
                               "icon": "/autopilot/icon.svg"}]


def section(html: str, name: str) -> str:
    """The card of one model."""
    found = re.search(rf'<section class="model" id="model-{re.escape(name)}".*?</section>', html, re.S)
    assert found is not None, f"no card for {name}"
    return found.group(0)
