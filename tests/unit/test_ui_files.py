"""The reports the Models page serves (`autopilot.ui.files` behind `autopilot.ui.app`): confined, bounded, sandboxed.

A Data Docs site and an artifact store are laid out in a temporary home, with a secret file
beside them that no request may reach. Traversal payloads go through the real app (Airflow's
auth manager checks a real token first) as raw request paths, and through `confined` directly.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autopilot.data.data_docs import site_dir
from autopilot.settings import Settings
from autopilot.ui import files
from autopilot.ui.app import create_app
from autopilot.ui.files import DATA_DOCS_HEADERS, SERVED_HEADERS, NotServed, confined, report_key
from tests.airflow_tokens import Tokens, airflow_tokens

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

MODEL = "adult_income"
SECRET = "TOP-SECRET-CONTENT"
END = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
WINDOW = "20261207T010000"
TRAVERSALS = [
    "../../../../etc/passwd", "..%2F..%2F..%2Fsecret.txt", "%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "validations/../../../../secret.txt", "%2Fetc%2Fpasswd", "static/..%5C..%5Csecret.txt",
    "index.html%00.png", ".hidden.html", "static/.%2e/.%2e/.%2e/secret.txt", "escape.html", "escape_dir/page.html",
]


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return airflow_tokens()


@pytest.fixture
def home(tmp_path: Path) -> tuple[Settings, Path]:
    """A home with a Data Docs site, two links out of it, a hidden file, and a secret next to the site."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})
    site = site_dir(settings.home, MODEL)
    (site / "static" / "styles").mkdir(parents=True)
    (site / "validations" / "s").mkdir(parents=True)
    (site / "index.html").write_text("<html><script>docs()</script>index</html>")
    (site / "static" / "styles" / "site.css").write_text("body { margin: 0 }")
    (site / "validations" / "s" / "page.html").write_text("<html>validation page</html>")
    (site / "notes.txt").write_text("not a site file type")
    (site / ".hidden.html").write_text(SECRET)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (site / "escape.html").symlink_to(secret)  # a file link out of the site
    (site / "escape_dir").symlink_to(tmp_path)  # a folder link out of the site
    (tmp_path / "page.html").write_text(SECRET)
    return settings, tmp_path


def client(settings: Settings, token: str | None) -> Any:
    from fastapi.testclient import TestClient

    from autopilot.orchestration.airflow_auth import AirflowAuthenticator

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(lambda: settings, authenticator=AirflowAuthenticator(), cache_seconds=0),
                      headers=headers, follow_redirects=False)


def raw_get(app_client: Any, path: str) -> Any:
    """GET with the path sent as written (no client-side dot-segment removal)."""
    import httpx

    url = httpx.URL("http://testserver/", raw_path=path.encode())
    return app_client.get(url)


def test_site_files_are_served_with_their_type_and_the_sandbox(home: tuple[Settings, Path], tokens: Tokens) -> None:
    settings, _ = home
    app = client(settings, tokens.valid())
    index = app.get(f"/datadocs/{MODEL}/index.html")
    assert index.status_code == 200 and "index" in index.text
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in DATA_DOCS_HEADERS.items():
        assert index.headers[name] == value
    assert index.headers["x-content-type-options"] == "nosniff" and index.headers["referrer-policy"] == "no-referrer"
    csp = index.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-scripts") and "allow-same-origin" not in csp  # opaque origin
    assert "connect-src 'none'" in csp and "frame-ancestors 'self'" in csp and "https://cdn.jsdelivr.net" in csp
    assert app.get(f"/datadocs/{MODEL}/").text == index.text  # a folder means its index
    css = app.get(f"/datadocs/{MODEL}/static/styles/site.css")
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    assert app.get(f"/datadocs/{MODEL}/validations/s/page.html").text == "<html>validation page</html>"


@pytest.mark.parametrize("payload", TRAVERSALS)
def test_traversal_payloads_never_leave_the_site(home: tuple[Settings, Path], tokens: Tokens, payload: str) -> None:
    settings, _ = home
    reply = raw_get(client(settings, tokens.valid()), f"/datadocs/{MODEL}/{payload}")
    assert reply.status_code == 404, (payload, reply.status_code)
    assert SECRET not in reply.text and "root:" not in reply.text


@pytest.mark.parametrize("model", ["..", "..%2F..", "a%2Fb", ".hidden", "%2Fetc"])
def test_model_names_cannot_point_elsewhere(home: tuple[Settings, Path], tokens: Tokens, model: str) -> None:
    settings, _ = home
    app = client(settings, tokens.valid())
    for path in (f"/datadocs/{model}/index.html", f"/reports/{model}/{WINDOW}"):
        reply = raw_get(app, path)
        assert reply.status_code == 404 and SECRET not in reply.text, (path, reply.status_code)


def test_confined_refuses_what_the_router_might_pass_through(home: tuple[Settings, Path]) -> None:
    settings, tmp = home
    site = site_dir(settings.home, MODEL)
    assert confined(site, "static/styles/site.css") == (site / "static/styles/site.css").resolve()
    assert confined(site, "") == (site / "index.html").resolve()
    for payload in ("../secret.txt", "/etc/passwd", str(tmp / "secret.txt"), "a/../../secret.txt", "static//x.css",
                    "static\\..\\..\\secret.txt", "index.html\x00.png", "./index.html", "escape.html",
                    "escape_dir/page.html", "escape_dir/secret.txt", ".hidden.html", "static/styles", "missing.html",
                    "x" * 5000):
        with pytest.raises(NotServed) as refused:
            confined(site, payload)
        assert refused.value.status == 404, payload


def test_unknown_types_missing_sites_and_oversized_files_are_refused(home: tuple[Settings, Path], tokens: Tokens,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = home
    app = client(settings, tokens.valid())
    assert app.get(f"/datadocs/{MODEL}/notes.txt").status_code == 404  # not a type a site serves
    assert app.get("/datadocs/other_model/index.html").status_code == 404  # no site
    monkeypatch.setattr(files, "MAX_BYTES", 10)
    assert app.get(f"/datadocs/{MODEL}/index.html").status_code == 413


def seed_window(settings: Settings, model: str, end: datetime, html_uri: str | None) -> None:
    from autopilot.monitoring.state import record_window

    record_window(settings, model, end - timedelta(hours=1), end, 1, "none",
                  {"series": {"drift_weighted_share": 0.02}, "rows": 2400, "html_uri": html_uri})


def test_a_window_report_is_found_by_model_and_window_only(home: tuple[Settings, Path], tokens: Tokens) -> None:
    from autopilot.adapters.storage import open_store

    settings, tmp = home
    store = open_store(settings.artifact_root)
    body = b"<html><script>evidently()</script>report</html>"
    store.put(report_key(MODEL, WINDOW), body)
    seed_window(settings, MODEL, END, store.uri(report_key(MODEL, WINDOW)))
    app = client(settings, tokens.valid())
    reply = app.get(f"/reports/{MODEL}/{WINDOW}")
    assert reply.status_code == 200 and reply.content == body
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["content-security-policy"] == SERVED_HEADERS["Content-Security-Policy"]
    assert "https:" not in reply.headers["content-security-policy"]  # Evidently's page loads nothing from elsewhere
    for window in ("20261207T020000", "2026-12-07", "20261307T010000", "../../secret", "20261207T010000.html"):
        assert raw_get(app, f"/reports/{MODEL}/{window}").status_code == 404, window
    # A window whose row names another file (tampered, or an old layout) serves nothing.
    seed_window(settings, "tampered", END, str(tmp / "secret.txt"))
    assert app.get(f"/reports/tampered/{WINDOW}").status_code == 404
    # A window without a report, and a report key turned into a link out of the store.
    seed_window(settings, "no_report", END, None)
    assert app.get(f"/reports/no_report/{WINDOW}").status_code == 404
    linked = Path(store.uri(report_key("linked", WINDOW)))
    linked.parent.mkdir(parents=True)
    os.symlink(tmp / "secret.txt", linked)
    seed_window(settings, "linked", END, str(linked))
    reply = app.get(f"/reports/linked/{WINDOW}")
    assert reply.status_code == 404 and SECRET not in reply.text


def test_anonymous_and_forged_requests_get_401_on_the_file_routes(home: tuple[Settings, Path],
                                                                  tokens: Tokens) -> None:
    settings, _ = home
    for token in (None, tokens.forged(), tokens.expired()):
        app = client(settings, token)
        for path in (f"/datadocs/{MODEL}/index.html", f"/reports/{MODEL}/{WINDOW}", f"/datadocs/{MODEL}/../x"):
            reply = app.get(path)
            assert reply.status_code == 401 and "docs()" not in reply.text, (path, token)
            assert reply.headers["www-authenticate"].startswith("Bearer")
    # A browser opening a report without a login goes to Airflow's login, which comes back to it.
    browser = client(settings, None).get(f"/datadocs/{MODEL}/index.html", headers={"Accept": "text/html"})
    assert browser.status_code == 303 and "next=" in browser.headers["location"]


def test_a_report_in_an_s3_artifact_store_is_read_through_the_store_adapter(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from moto import mock_aws

    from autopilot.adapters.storage import open_store
    from autopilot.ui.files import window_report_file

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    local = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)})
    settings = replace(local, artifact_root="s3://reports-bucket/autopilot")
    with mock_aws():
        store = open_store(settings.artifact_root)
        store.client.create_bucket(Bucket="reports-bucket")  # type: ignore[attr-defined]
        store.put(report_key(MODEL, WINDOW), b"<html>s3 report</html>")
        seed_window(settings, MODEL, END, f"s3://reports-bucket/autopilot/{report_key(MODEL, WINDOW)}")
        found = window_report_file(settings, MODEL, WINDOW)
        assert found.data == b"<html>s3 report</html>" and found.headers == SERVED_HEADERS
        seed_window(settings, "gone", END, f"s3://reports-bucket/autopilot/{report_key('gone', WINDOW)}")
        with pytest.raises(NotServed) as missing:  # the row names it, S3 does not have it
            window_report_file(settings, "gone", WINDOW)
        assert missing.value.status == 404
