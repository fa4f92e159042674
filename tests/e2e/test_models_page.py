"""The Models page in a real Airflow api-server, behind Airflow's login, rendered by headless Chromium.

The module starts only what the page needs: the embedded set-up's metadata DB, one api-server
on a free loopback port with the project's plugins folder (the page reads MLflow's SQLite store
and the state DB directly, so no scheduler or DAG processor), and the embedded MLflow server, so
that the page's MLflow links can be followed. A model's lifecycle is seeded without training
(tests/lifecycle_support.py), with real Great Expectations Data Docs and Evidently reports,
while Airflow migrates.

Airflow serves plugin apps without its auth, so the page checks the Airflow token itself: an
anonymous or forged request gets 401 (a browser is sent to Airflow's login page), a logged-in
one the page. The browser tests log in through Airflow's real login page (the simple auth
manager's form, typed into over the DevTools protocol), each in its own browser context, and
land back on the page.

Every link on the page is followed as the logged-in browser's user (its Airflow session
cookie): the Airflow run, the MLflow run and version (and the entity each names, through MLflow's
REST API), the Data Docs pages and the Evidently reports the plugin serves; the plugin's report
routes refuse anonymous requests.

Screenshots are kept in `${AUTOPILOT_TEST_ARTIFACTS:-<project>/test-artifacts}`:
`models-page.png` (the plugin's page after login, full height), `models-airflow-ui.png`
(Airflow's UI embedding it at `/plugin/models`), `models-evidently-report.png` (a window's
Evidently report as the plugin serves it, sandboxed) and `models-data-docs.png` (the Data Docs
page of the champion's validation; GX loads its styles from CDNs, unreachable here).

Chromium is installed by `scripts/ensure_debian_tools.sh`; without it the two browser tests skip
(the REST checks still run), unless AUTOPILOT_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from autopilot.orchestration.embedded import Embedded, _alive, _stop_group
from autopilot.settings import Settings
from tests.e2e.test_trigger import free_port
from tests.helpers import PROJECT
from tests.lifecycle_support import Seeded, seed_model, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

MODEL = "adult_income"
# Why each flag: --headless (no display here); --no-sandbox (we run as root, and Chromium refuses
# root without it); --disable-gpu (no GPU); --disable-dev-shm-usage (Debian's launcher adds it
# only when /dev/shm looks small, and its own check errors out on this machine); --hide-scrollbars
# and --no-first-run for clean screenshots. Each run gets its own --user-data-dir (see `chromium`).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--no-first-run", "--no-default-browser-check"]
WINDOW = (1280, 900)


@dataclass
class Served:
    url: str
    password: str
    jwt_secret: str  # the installation's signing secret, to mint tokens the api-server would accept
    seeded: Seeded
    artifacts: Path
    profiles: Path
    mlflow_url: str

    def token(self) -> str:
        reply = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password}, timeout=30)
        reply.raise_for_status()
        return str(reply.json()["access_token"])


def chromium_or_skip() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "Debian's chromium is not installed: run scripts/ensure_debian_tools.sh"
    if os.environ.get("AUTOPILOT_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("AUTOPILOT_TEST_ARTIFACTS") or PROJECT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A seeded model and an api-server with the project's plugins folder on a free loopback port."""
    root = tmp_path_factory.mktemp("models-page")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home"), "AUTOPILOT_CONFIG_DIR": str(root / "config")})
    embedded = Embedded(settings=settings, project=PROJECT, airflow_port=free_port(), mlflow_port=free_port())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        # No MLflow server runs here; the links are still built (and checked) against where it would be.
        mp.setenv("AUTOPILOT_MLFLOW_UI_URL", f"http://127.0.0.1:{embedded.mlflow_port}")
        server = _start_api_server_while(embedded, lambda: seed_model(settings, MODEL))
        mlflow = _start_mlflow(embedded)  # after the seed: the seed made MLflow's tables
        try:
            seeded = server.pop("result")
            write_config(settings.config_dir, "not_trained_yet", "Registered nowhere yet.")
            url = f"http://127.0.0.1:{embedded.airflow_port}"
            _wait_up(url, server["process"], embedded.run_dir / "api-server.log")
            mlflow_url = f"http://127.0.0.1:{embedded.mlflow_port}"
            _wait_up(mlflow_url, mlflow, embedded.run_dir / "mlflow.log", probe="/health")
            password = embedded.admin_password()
            assert password
            yield Served(url, password, embedded._secret("jwt_secret"), seeded, artifacts_dir(), root / "chromium",
                         mlflow_url)
        finally:
            _stop_group(server["process"].pid)
            _stop_group(mlflow.pid)
    assert not _alive(server["process"].pid), "the api-server outlived the test"
    assert not _alive(mlflow.pid), "the MLflow server outlived the test"


def _start_mlflow(embedded: Embedded) -> subprocess.Popen[bytes]:
    """The embedded MLflow server (its UI is what the page's MLflow links open), in its own process group."""
    command, extra = embedded._services()["mlflow"]
    with open(embedded.run_dir / "mlflow.log", "w") as log:
        return subprocess.Popen(command, env={**embedded.env(), **extra}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _start_api_server_while(embedded: Embedded, work: Any) -> dict[str, Any]:
    """Migrate Airflow's DB and start the api-server in a thread while `work` runs here (2 cores: both at once)."""
    started: dict[str, Any] = {}

    def boot() -> None:
        try:
            embedded._run(["airflow", "db", "migrate"], log="db-migrate.log")
            # Loopback only, the core app only (no execution API: nothing runs tasks), one worker.
            command = ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(embedded.airflow_port),
                       "--apps", "core", "--workers", "1"]
            with open(embedded.run_dir / "api-server.log", "w") as log:  # the child keeps its own handle
                started["process"] = subprocess.Popen(command, env=embedded.env(), stdout=log,
                                                      stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException as exc:  # re-raised in the test's thread
            started["error"] = exc

    thread = threading.Thread(target=boot, daemon=True)
    thread.start()
    try:
        started["result"] = work()
    finally:
        thread.join(timeout=300)
    if "error" in started:
        raise started["error"]
    return started


def _wait_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120,
             probe: str = "/api/v2/version") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url} exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}{probe}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def check_png(path: Path, size: tuple[int, int] | None) -> None:
    """A real screenshot: PNG of the window's size (None: any), not blank (many colours, not one flat tone)."""
    import numpy as np
    from matplotlib import image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    if size is not None:
        assert struct.unpack(">II", data[16:24]) == size  # IHDR width, height
    assert len(data) > 30_000, f"suspiciously small screenshot: {len(data)} bytes"
    pixels = image.imread(str(path))[..., :3]
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 64 and float(pixels.std()) > 0.05, (len(colours), float(pixels.std()))


def test_plugin_is_listed_by_the_rest_api(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token()}"}
    reply = httpx.get(f"{served.url}/api/v2/plugins", headers=auth, timeout=30)
    reply.raise_for_status()
    plugins = {p["name"]: p for p in reply.json()["plugins"]}
    assert "autopilot_models" in plugins, plugins
    plugin = plugins["autopilot_models"]
    assert plugin["fastapi_apps"] == [{"app": "autopilot.ui.app.LazyApp", "url_prefix": "/autopilot",
                                       "name": "autopilot models"}]
    (view,) = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == ("Models", "/autopilot/", "nav",
                                                                                    "models")
    errors = httpx.get(f"{served.url}/api/v2/plugins/importErrors", headers=auth, timeout=30).json()
    assert errors["total_entries"] == 0, errors
    # With Airflow's token the JSON answers; the app stays read-only.
    models = httpx.get(f"{served.url}/autopilot/api/models", headers=auth, timeout=60).json()["models"]
    assert [m["name"] for m in models] == [MODEL, "not_trained_yet"]
    assert httpx.post(f"{served.url}/autopilot/", headers=auth, timeout=30).status_code == 405


def mint(secret: str, valid_for: float, audience: str = "apache-airflow") -> str:
    """A token from Airflow's own generator, as the api-server signs them at login."""
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    return str(JWTGenerator(secret_key=secret, audience=audience, valid_for=valid_for).generate(
        {"sub": "admin", "role": "admin"}))


def test_anonymous_forged_and_expired_requests_are_refused_by_the_real_api_server(served: Served) -> None:
    forged = mint("not-the-installation-secret-" + "x" * 40, 600)
    expired = mint(served.jwt_secret, -60)
    elsewhere = mint(served.jwt_secret, 600, audience="another-service")
    control = mint(served.jwt_secret, 600)  # the same recipe, right key and audience, in time: accepted
    reply = httpx.get(f"{served.url}/autopilot/api/models", headers={"Authorization": f"Bearer {control}"}, timeout=60)
    assert reply.status_code == 200 and MODEL in reply.text
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4="},
                    *({"Authorization": f"Bearer {token}"} for token in (forged, expired, elsewhere))):
        for method, path in (("GET", "/autopilot/api/models"), ("GET", "/autopilot/icon.svg"), ("POST", "/autopilot/")):
            reply = httpx.request(method, f"{served.url}{path}", headers=headers, timeout=30)
            assert reply.status_code == 401, (method, path, headers, reply.status_code)
            assert MODEL not in reply.text and reply.headers["www-authenticate"].startswith("Bearer")
    cookie_forged = httpx.get(f"{served.url}/autopilot/api/models", cookies={"_token": forged}, timeout=30)
    assert cookie_forged.status_code == 401 and MODEL not in cookie_forged.text
    # A browser navigating to the page anonymously is sent to Airflow's login, which comes back here.
    navigation = httpx.get(f"{served.url}/autopilot/", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"},
                           timeout=30)
    assert navigation.status_code == 303 and MODEL not in navigation.text
    assert navigation.headers["location"] == "/auth/login?next=%2Fautopilot%2F"


def test_models_page_after_logging_in_through_airflow(served: Served) -> None:
    chromium_or_skip()
    pytest.importorskip("websockets", reason="the DevTools-protocol browser tests need the websockets package")
    shot = served.artifacts / "models-page.png"
    shot.unlink(missing_ok=True)
    result = asyncio.run(_in_browser(served, lambda dt, s: _page_after_login(dt, s, served, shot)))
    login_path, login_text, dom = result
    assert login_path == "/auth/login" and f"champion v{served.seeded.champion}" not in login_text
    card = re.search(rf'<section class="model" id="model-{MODEL}".*?</section>', dom, re.S)
    assert card is not None, dom[:2000]
    assert f"<h2>{MODEL}</h2>" in card.group(0)
    assert f"champion v{served.seeded.champion}" in card.group(0)
    assert f"challenger v{served.seeded.challenger}" in card.group(0)
    assert card.group(0).count('class="window-mark') == served.seeded.window_count
    assert "No versions registered yet" in dom  # the second model, never trained
    assert card.group(0).count('class="check"') >= 10  # each gate's gated metrics
    check_png(shot, None)
    assert struct.unpack(">II", shot.read_bytes()[16:24])[1] > WINDOW[1]  # the full page, taller than a screen


def test_airflow_ui_embeds_the_page_at_plugin_models(served: Served) -> None:
    chromium_or_skip()
    pytest.importorskip("websockets", reason="the DevTools-protocol browser tests need the websockets package")
    shot = served.artifacts / "models-airflow-ui.png"
    shot.unlink(missing_ok=True)
    text, location = asyncio.run(_in_browser(served, lambda dt, s: _ui_after_login(dt, s, served, shot)))
    assert f"champion v{served.seeded.champion}" in text, text[:1000]
    assert location.endswith("/plugin/models/autopilot/")  # the iframe's path, mirrored by the UI
    check_png(shot, WINDOW)


def test_every_link_on_the_page_answers_200_for_the_logged_in_user(served: Served) -> None:
    chromium_or_skip()
    pytest.importorskip("websockets", reason="the DevTools-protocol browser tests need the websockets package")
    shot = served.artifacts / "models-evidently-report.png"
    shot.unlink(missing_ok=True)
    links, cookie, report_text = asyncio.run(_in_browser(served, lambda dt, s: _links_after_login(dt, s, served,
                                                                                                 shot)))
    kinds = {kind: [link for link in links if kind in link] for kind in (
        "/dags/", "/autopilot/datadocs/", "/autopilot/reports/", "/#/experiments/", "/versions/")}
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    assert len(kinds["/autopilot/reports/"]) == len(served.seeded.reported_windows)
    failures = {link: status for link in sorted(set(links)) if (status := _follow(link, served, cookie)) != 200}
    assert not failures, failures
    for link in kinds["/autopilot/datadocs/"] + kinds["/autopilot/reports/"]:
        anonymous = httpx.get(link, timeout=30)
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer"), link
        assert httpx.get(link, headers={"Accept": "text/html"}, timeout=30).status_code == 303  # to the login
    assert "Drift" in report_text  # Evidently's scripts ran inside the sandbox and drew the report
    check_png(shot, WINDOW)


def _follow(link: str, served: Served, cookie: str) -> int:
    """The status a link answers: on the api-server with the browser's session cookie, on MLflow with the
    entity its UI route names looked up through MLflow's REST API (the UI itself answers any route)."""
    if link.startswith(served.url):
        return httpx.get(link, cookies={"_token": cookie}, timeout=60, follow_redirects=False).status_code
    assert link.startswith(served.mlflow_url), link
    page = httpx.get(link, timeout=60)
    if page.status_code != 200:
        return page.status_code
    route = unquote(urlsplit(link).fragment).strip("/").split("/")
    api = f"{served.mlflow_url}/api/2.0/mlflow"
    if route[:1] == ["experiments"] and len(route) == 4:
        return httpx.get(f"{api}/runs/get", params={"run_id": route[3]}, timeout=30).status_code
    if route[:1] == ["models"] and len(route) == 4:
        return httpx.get(f"{api}/model-versions/get", params={"name": route[1], "version": route[3]},
                         timeout=30).status_code
    if route[:1] == ["models"] and len(route) == 2:
        return httpx.get(f"{api}/registered-models/get", params={"name": route[1]}, timeout=30).status_code
    return page.status_code  # the MLflow UI's home


async def _links_after_login(devtools: _DevTools, session: str, served: Served, shot: Path) -> tuple[list[str], str,
                                                                                                      str]:
    """Log in through the page, collect every link's absolute href and the session cookie, then open a report."""
    await devtools.call("Page.navigate", session, url=f"{served.url}/autopilot/")
    await _log_in(devtools, session, served, expected_next="/autopilot/")
    await devtools.wait_for(session, "location.pathname === '/autopilot/' && "
                                     "!!document.querySelector('table.versions')")
    links = await devtools.evaluate(session, "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    cookies = (await devtools.call("Network.getCookies", session, urls=[served.url]))["cookies"]
    cookie = next(c["value"] for c in cookies if c["name"] == "_token")
    docs = next(link for link in links if "/autopilot/datadocs/" in link and "/validations/" in link)
    await devtools.call("Page.navigate", session, url=docs)
    await devtools.wait_for(session, "document.body && document.body.innerText.includes('Validation')", timeout=60)
    await asyncio.sleep(1.0)
    data = (await devtools.call("Page.captureScreenshot", session, format="png"))["data"]
    (shot.parent / "models-data-docs.png").write_bytes(base64.b64decode(data))
    report = next(link for link in links if "/autopilot/reports/" in link)
    await devtools.call("Page.navigate", session, url=report)
    text = await devtools.wait_for(session, "document.body && document.body.innerText.includes('Drift') "
                                            "&& document.body.innerText", timeout=90)
    await asyncio.sleep(1.0)  # the charts' layout after their text is there
    data = (await devtools.call("Page.captureScreenshot", session, format="png"))["data"]
    shot.write_bytes(base64.b64decode(data))
    return [str(link) for link in links], str(cookie), str(text)


async def _in_browser(served: Served, scenario: Any) -> Any:
    """Run `scenario(devtools, session)` in a fresh browser context (no cookies) of a headless Chromium."""
    import websockets

    profile = served.profiles / f"p{time.monotonic_ns()}"
    process = subprocess.Popen(
        [chromium_or_skip(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        endpoint = _devtools_endpoint(process)
        async with websockets.connect(endpoint, max_size=64 * 2**20) as socket:
            devtools = _DevTools(socket)
            context = (await devtools.call("Target.createBrowserContext"))["browserContextId"]
            target = (await devtools.call("Target.createTarget", url="about:blank",
                                          browserContextId=context))["targetId"]
            session = (await devtools.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            await devtools.call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
                                deviceScaleFactor=1, mobile=False)
            return await scenario(devtools, session)
    finally:
        _stop_group(process.pid, grace=5)


def _devtools_endpoint(process: subprocess.Popen[str], timeout: float = 30) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    for line in process.stderr:  # Chromium prints the endpoint once it listens
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return found.group(1)
        assert time.monotonic() < deadline, "Chromium did not open its DevTools endpoint"
    raise AssertionError("Chromium exited before opening its DevTools endpoint")


class DevToolsError(AssertionError):
    """A DevTools call answered with an error."""

    # What Chromium answers when the page navigates while a call runs in it.
    NAVIGATING = ("navigated or closed", "Cannot find context", "context was destroyed")

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error)
        self.navigating = any(marker in str(error.get("message", "")) for marker in self.NAVIGATING)


class _DevTools:
    """The few DevTools-protocol calls the browser tests need, over one browser-level websocket."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.last_id = 0

    async def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.socket.send(json.dumps(message))
        while True:  # events arrive in between; only our reply counts
            reply = json.loads(await asyncio.wait_for(self.socket.recv(), timeout=60))
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise DevToolsError(reply["error"])
                return dict(reply["result"])

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, session: str, expression: str, timeout: float = 60) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(session, expression)
            except DevToolsError as exc:
                if not exc.navigating:
                    raise
                value = None  # the page navigated under the poll (a login's redirect): look again
            if value:
                return value
            await asyncio.sleep(0.3)
        state = await self.evaluate(session, "location.href + ' | ' + (document.body ? document.body.innerText : '')")
        raise AssertionError(f"timed out waiting for {expression!r}; page: {str(state)[:1500]}")


LOGIN_FORM = "!!(document.querySelector('input[name=username]') && document.querySelector('input[name=password]'))"


async def _log_in(devtools: _DevTools, session: str, served: Served, expected_next: str) -> tuple[str, str]:
    """On Airflow's login page (where the anonymous navigation landed): type the admin's credentials, submit.

    Returns the login page's path and text, as seen before logging in.
    """
    await devtools.wait_for(session, LOGIN_FORM)
    path = await devtools.evaluate(session, "location.pathname")
    next_url = await devtools.evaluate(session, "new URLSearchParams(location.search).get('next')")
    assert str(next_url).endswith(expected_next), next_url
    text = await devtools.evaluate(session, "document.body.innerText")
    for field, value in (("username", "admin"), ("password", served.password)):
        await devtools.evaluate(session, f"document.querySelector('input[name={field}]').focus()")
        await devtools.call("Input.insertText", session, text=value)  # real key input, as a user types
    await devtools.wait_for(session, "!document.querySelector('button[type=submit]').disabled")
    await devtools.evaluate(session, "document.querySelector('button[type=submit]').click()")
    return str(path).rstrip("/"), str(text)


async def _page_after_login(devtools: _DevTools, session: str, served: Served, shot: Path) -> tuple[str, str, str]:
    """Open /autopilot/ with no cookie, log in on Airflow's page, come back; return (login path, login text, DOM)."""
    await devtools.call("Page.navigate", session, url=f"{served.url}/autopilot/")
    login_path, login_text = await _log_in(devtools, session, served, expected_next="/autopilot/")
    await devtools.wait_for(session, f"location.pathname === '/autopilot/' && document.body && "
                                     f"document.body.innerText.includes('champion v{served.seeded.champion}')")
    dom = await devtools.evaluate(session, "document.documentElement.outerHTML")
    # The whole page, not only the first screen: the gates and the windows' reports are further down.
    height = await devtools.evaluate(session, "document.documentElement.scrollHeight")
    clip = {"x": 0, "y": 0, "width": WINDOW[0], "height": int(height), "scale": 1}
    data = (await devtools.call("Page.captureScreenshot", session, format="png", clip=clip,
                                captureBeyondViewport=True))["data"]
    shot.write_bytes(base64.b64decode(data))
    return login_path, login_text, str(dom)


IFRAME_TEXT = ("(() => { const f = document.querySelector('iframe'); "
               "return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; })()")


async def _ui_after_login(devtools: _DevTools, session: str, served: Served, shot: Path) -> tuple[str, str]:
    """Open /plugin/models with no cookie, log in, wait for the iframe's page, screenshot it."""
    await devtools.call("Page.navigate", session, url=f"{served.url}/plugin/models")
    await _log_in(devtools, session, served, expected_next="/plugin/models")
    text = await devtools.wait_for(session, f"(() => {{ const t = {IFRAME_TEXT}; "
                                            f"return t.includes('champion v{served.seeded.champion}') ? t : ''; }})()")
    await asyncio.sleep(0.5)  # the iframe's layout after its text is there
    location = await devtools.evaluate(session, "location.pathname")
    data = (await devtools.call("Page.captureScreenshot", session, format="png"))["data"]
    shot.write_bytes(base64.b64decode(data))
    return str(text), str(location)
