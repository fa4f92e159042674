"""The Models page in a real Airflow api-server, rendered by headless Chromium (Debian's package).

The module starts only what the page needs: the embedded set-up's metadata DB and one
api-server on a free loopback port with the project's plugins folder (the page reads MLflow's
SQLite store and the state DB directly, so no scheduler, DAG processor or MLflow server). A
model's lifecycle is seeded without training (tests/lifecycle_support.py) while Airflow migrates.

Screenshots are kept in `${AUTOPILOT_TEST_ARTIFACTS:-<project>/test-artifacts}`:
`models-page.png` (the plugin's page) and `models-airflow-ui.png` (Airflow's UI embedding it at
`/plugin/models`). The UI needs a login under the embedded set-up (simple auth manager, not
all-admins): that screenshot drives Chromium over the DevTools protocol and sets the session
cookie `_token` to a JWT from `/auth/token`, as the UI's own login would.

Chromium is installed by `scripts/ensure_chromium.sh`; without it the two browser tests skip
(the REST check still runs), unless AUTOPILOT_REQUIRE_SERVICES=1 (CI), where they fail.
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

import httpx
import pytest

from autopilot.orchestration.embedded import Embedded, _alive, _stop_group
from autopilot.settings import Settings
from tests.conftest import PROJECT
from tests.e2e.test_trigger import free_port
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
    seeded: Seeded
    artifacts: Path
    profiles: Path

    def token(self) -> str:
        reply = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password}, timeout=30)
        reply.raise_for_status()
        return str(reply.json()["access_token"])


def chromium_or_skip() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    reason = "Debian's chromium is not installed: run scripts/ensure_chromium.sh"
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
        try:
            seeded = server.pop("result")
            write_config(settings.config_dir, "not_trained_yet", "Registered nowhere yet.")
            url = f"http://127.0.0.1:{embedded.airflow_port}"
            _wait_up(url, server["process"], embedded.run_dir / "api-server.log")
            password = embedded.admin_password()
            assert password
            yield Served(url, password, seeded, artifacts_dir(), root / "chromium")
        finally:
            _stop_group(server["process"].pid)
    assert not _alive(server["process"].pid), "the api-server outlived the test"


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


def _wait_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the api-server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/api/v2/version", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"the api-server did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def chromium(served: Served, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium once, in a fresh profile (parallel runs never share a profile lock)."""
    profile = served.profiles / f"p{time.monotonic_ns()}"
    command = [chromium_or_skip(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def check_png(path: Path, size: tuple[int, int]) -> None:
    """A real screenshot: PNG of the window's size, not blank (many colours, not one flat tone)."""
    import numpy as np
    from matplotlib import image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert struct.unpack(">II", data[16:24]) == size  # IHDR width, height
    assert len(data) > 30_000, f"suspiciously small screenshot: {len(data)} bytes"
    pixels = image.imread(str(path))[..., :3]
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 64 and float(pixels.std()) > 0.05, (len(colours), float(pixels.std()))


def test_plugin_is_listed_by_the_rest_api(served: Served) -> None:
    reply = httpx.get(f"{served.url}/api/v2/plugins", headers={"Authorization": f"Bearer {served.token()}"},
                      timeout=30)
    reply.raise_for_status()
    plugins = {p["name"]: p for p in reply.json()["plugins"]}
    assert "autopilot_models" in plugins, plugins
    plugin = plugins["autopilot_models"]
    assert plugin["fastapi_apps"] == [{"app": "autopilot.ui.app.LazyApp", "url_prefix": "/autopilot",
                                       "name": "autopilot models"}]
    (view,) = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == ("Models", "/autopilot/", "nav",
                                                                                    "models")
    errors = httpx.get(f"{served.url}/api/v2/plugins/importErrors",
                       headers={"Authorization": f"Bearer {served.token()}"}, timeout=30).json()
    assert errors["total_entries"] == 0, errors
    # Served without Airflow's auth, read-only: the JSON answers with no token, a write is refused.
    models = httpx.get(f"{served.url}/autopilot/api/models", timeout=60).json()["models"]
    assert [m["name"] for m in models] == [MODEL, "not_trained_yet"]
    assert httpx.post(f"{served.url}/autopilot/", timeout=30).status_code == 405


def test_models_page_renders_in_chromium(served: Served) -> None:
    chromium_or_skip()
    page = f"{served.url}/autopilot/"
    dom = chromium(served, "--dump-dom", page).stdout
    card = re.search(rf'<section class="model" id="model-{MODEL}".*?</section>', dom, re.S)
    assert card is not None, dom[:2000]
    assert f"<h2>{MODEL}</h2>" in card.group(0)
    assert f"champion v{served.seeded.champion}" in card.group(0)
    assert f"challenger v{served.seeded.challenger}" in card.group(0)
    assert card.group(0).count('class="window-mark') == served.seeded.window_count
    assert "No versions registered yet" in dom  # the second model, never trained
    shot = served.artifacts / "models-page.png"
    shot.unlink(missing_ok=True)
    chromium(served, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page)
    check_png(shot, WINDOW)


def test_airflow_ui_embeds_the_page_at_plugin_models(served: Served) -> None:
    chromium_or_skip()
    pytest.importorskip("websockets", reason="the DevTools-protocol screenshot needs the websockets package")
    shot = served.artifacts / "models-airflow-ui.png"
    shot.unlink(missing_ok=True)
    text, location = asyncio.run(_ui_screenshot(served, shot))
    assert f"champion v{served.seeded.champion}" in text, text[:1000]
    assert location.endswith("/plugin/models/autopilot/")  # the iframe's path, mirrored by the UI
    check_png(shot, WINDOW)


async def _ui_screenshot(served: Served, shot: Path) -> tuple[str, str]:
    """Log in with a JWT cookie, open /plugin/models, wait for the iframe's page, screenshot it."""
    import websockets

    profile = served.profiles / "devtools"
    process = subprocess.Popen(
        [chromium_or_skip(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        endpoint = _devtools_endpoint(process)
        async with websockets.connect(endpoint, max_size=64 * 2**20) as socket:
            devtools = _DevTools(socket)
            return await _load_and_capture(devtools, served, shot)
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


class _DevTools:
    """The few DevTools-protocol calls the screenshot needs, over one browser-level websocket."""

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
                assert "error" not in reply, reply["error"]
                return dict(reply["result"])


IFRAME_TEXT = ("(() => { const f = document.querySelector('iframe'); "
               "return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; })()")


async def _load_and_capture(devtools: _DevTools, served: Served, shot: Path) -> tuple[str, str]:
    target = (await devtools.call("Target.createTarget", url="about:blank"))["targetId"]
    session = (await devtools.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
    # The simple auth manager's login ends by setting this cookie; the UI sends it with every call.
    await devtools.call("Network.enable", session)
    await devtools.call("Network.setCookie", session, name="_token", value=served.token(), url=f"{served.url}/",
                        path="/", httpOnly=True)
    await devtools.call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0], height=WINDOW[1],
                        deviceScaleFactor=1, mobile=False)
    await devtools.call("Page.navigate", session, url=f"{served.url}/plugin/models")
    text, deadline = "", time.monotonic() + 60
    while f"champion v{served.seeded.champion}" not in text and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        text = (await devtools.call("Runtime.evaluate", session, expression=IFRAME_TEXT,
                                    returnByValue=True))["result"].get("value", "")
    await asyncio.sleep(0.5)  # the iframe's layout after its text is there
    location = (await devtools.call("Runtime.evaluate", session, expression="location.pathname",
                                    returnByValue=True))["result"]["value"]
    data = (await devtools.call("Page.captureScreenshot", session, format="png"))["data"]
    shot.write_bytes(base64.b64decode(data))
    return str(text), str(location)
