"""The whole embedded stack with real runs, and one logged-in headless Chromium, for the UI story test.

`start_stack` writes a small, fast model config (1,500 training rows, three Optuna trials), starts
the embedded set-up (api-server, scheduler with the LocalExecutor, DAG processor, triggerer,
MLflow server) on free loopback ports and waits until Airflow reports every component healthy.
`Api` is a small REST client with the admin's JWT that asks again while SQLite is busy.

`Browser` is one headless Chromium driven over the DevTools protocol (the protocol helpers come
from tests/e2e/test_models_page.py), logged in once through Airflow's real login form; each test
navigates it like a user would, waits for what it expects to render, and keeps a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from autopilot.orchestration.embedded import Embedded, _alive, _stop_group
from autopilot.settings import Settings
from tests.e2e.test_models_page import (
    CHROMIUM_FLAGS,
    LOGIN_FORM,
    WINDOW,
    _DevTools,
    _devtools_endpoint,
)
from tests.e2e.test_trigger import free_port
from tests.helpers import PROJECT, TINY_TUNING, adult_config_dict

MODEL = "ui_story"
TRAINING = f"autopilot_training__{MODEL}"
MONITORING = f"autopilot_monitoring__{MODEL}"
# A SQLite-backed api-server answers 500 "database is locked" (or stalls) while the scheduler writes.
BUSY_STATUS = (500, 502, 503, 504)


def write_small_config(folder: Path, frames: tuple[Any, Any], name: str = MODEL) -> Path:
    """A small Adult sample and a config with a tiny tuning budget in `folder` (as conftest's `small_adult`)."""
    train, test = frames
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    train.sample(1500, random_state=0).to_csv(data / f"{name}_train.csv", index=False)
    test.sample(800, random_state=0).to_csv(data / f"{name}_test.csv", index=False)
    raw = adult_config_dict(
        name=name, description="A small Adult sample for the UI story test.",
        data={"source": f"data/{name}_train.csv", "test_source": f"data/{name}_test.csv"},
        validation={"min_rows": 100, "max_rows": 1_000_000}, tuning=TINY_TUNING,
        split={"seed": 42, "cv_folds": 2}, registry={"name": name})
    # 800 holdout rows judge neither a quality margin nor equalized odds: inconclusive passes, so the
    # first run is promoted (conftest's `small_adult` explains the numbers).
    raw["gates"]["quality"] = {**raw["gates"].get("quality", {}), "min_metrics": {"roc_auc": 0.7},
                               "on_inconclusive": "pass"}
    raw["gates"]["fairness"] = {**raw["gates"].get("fairness", {}), "on_inconclusive": "pass"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Stack:
    """The running embedded set-up: where its servers answer and how to log in."""

    embedded: Embedded
    url: str
    mlflow_url: str
    password: str
    artifacts: Path
    profiles: Path  # Chromium's user-data folders


@contextmanager
def started_stack(root: Path, frames: tuple[Any, Any], artifacts: Path) -> Iterator[Stack]:
    """Start the embedded stack for one small model under `root`; stop all of it on the way out."""
    config_dir = root / "config"
    write_small_config(config_dir, frames)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home"), "AUTOPILOT_CONFIG_DIR": str(config_dir)})
    embedded = Embedded(settings=settings, project=PROJECT, airflow_port=free_port(), mlflow_port=free_port())
    saved = {key: os.environ.get(key) for key in ("PATH", "AUTOPILOT_SERVING_URL")}
    # The services run `airflow` and `mlflow` from PATH: this interpreter's. Nothing serves the model
    # here: the serving URL is a free port nobody listens on, so the rollout finds no endpoint and skips.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    os.environ["AUTOPILOT_SERVING_URL"] = f"http://127.0.0.1:{free_port()}"
    try:
        embedded.start()
        if not embedded.wait_healthy(timeout=240):
            raise AssertionError("the stack did not become healthy:\n" + _tail(embedded, "api-server.log"))
        password = embedded.admin_password()
        assert password, "no admin password was generated"
        yield Stack(embedded, embedded.airflow_url, embedded.mlflow_url, password, artifacts, root / "chromium")
    finally:
        groups = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
        embedded.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    left = [pid for pid in groups if _alive(pid)]
    assert not left, f"services outlived the stack: {left}"


def _tail(embedded: Embedded, log: str, chars: int = 3000) -> str:
    path = embedded.run_dir / log
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({log} missing)"


class Api:
    """Airflow's REST API as the admin (a JWT from `/auth/token`), asking again while the DB is busy."""

    def __init__(self, stack: Stack) -> None:
        self.base = stack.url
        reply = httpx.post(f"{self.base}/auth/token", json={"username": "admin", "password": stack.password},
                           timeout=30)
        reply.raise_for_status()
        self.token = str(reply.json()["access_token"])
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"},
                                   timeout=30)

    def request(self, method: str, path: str, attempts: int = 6, **kwargs: Any) -> httpx.Response:
        """One call; a busy answer or a timeout is asked again (up to `attempts` times), anything else returned."""
        for attempt in range(attempts):
            try:
                reply = self.client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                if attempt == attempts - 1:
                    raise
                continue
            if reply.status_code not in BUSY_STATUS or attempt == attempts - 1:
                return reply
            time.sleep(2)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call that must succeed; its JSON body."""
        reply = self.request(method, path, **kwargs)
        assert reply.is_success, f"{method} {path}: {reply.status_code} {reply.text[:1000]}"
        return dict(reply.json())

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the DAG processor has parsed `dag_id` (the API knows it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", f"/api/v2/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise AssertionError(f"{dag_id} never appeared in the API")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, done: tuple[str, ...] = ("success", "failed")
                     ) -> dict[str, Any]:
        """Poll a DAG run until its state is in `done`; return it (with the task states on a timeout)."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in done:
                return run
            time.sleep(3)
        states = self.task_states(dag_id, run_id)
        raise AssertionError(f"{dag_id} {run_id} still {run.get('state')} after {timeout} s: {states}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Each task instance's state (a mapped task's instances as `task[i]`)."""
        tis = self.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 100})["task_instances"]
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"] for ti in tis}

    def log_events(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[dict[str, Any]]:
        """A task instance's whole log through the REST API: its events (`event` is the line's text)."""
        reply = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                             params={"full_content": "true"})
        assert reply.is_success, f"log of {task_id}: {reply.status_code} {reply.text[:500]}"
        return list(reply.json()["content"])


def log_traffic(settings: Settings, config: Path, frame: Any, start: datetime, rows: int) -> None:
    """`rows` of `frame` served by the champion, as the endpoint logs them, inside [start, start + 1 h).

    The champion scores them here (loaded from the registry as serving loads it), so the window's
    prediction drift compares real scores.
    """
    from autopilot.adapters import registry
    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.config import load_config
    from autopilot.data.sources import canonicalize
    from autopilot.serving.inference_log import InferenceLog, InferenceRecord
    from autopilot.serving.schema import ServingSchema

    cfg = load_config(config)
    sample = canonicalize(frame.sample(rows, random_state=1), cfg)
    reg = registry.connect(settings)
    champion = reg.resolve_version(cfg.registered_model_name, "champion")
    model = load_version(champion, LoadPolicy.of(cfg, settings), reg)
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
               for r in sample[list(cfg.features)].to_dict("records")]
    scores = model.predict_proba(ServingSchema.from_config(cfg).frame(records))[:, 1]
    step = timedelta(minutes=58) / rows
    log = InferenceLog(settings.inference_db)
    try:
        log.append([InferenceRecord(request_id=f"ui-story-{i}", row=0, model=cfg.name, version=int(champion.version),
                                    at=start + timedelta(minutes=1) + i * step, features=record,
                                    prediction=float(score), latency_ms=12.0)
                    for i, (record, score) in enumerate(zip(records, scores, strict=True))])
    finally:
        log.close()


SPINNING = "!!document.querySelector('.chakra-spinner')"  # Airflow's UI shows Chakra's spinner while loading
SETTLE_SECONDS = 15.0  # at most this long for a screenshot to wait for the spinners to go (cosmetic only)


class Browser:
    """One headless Chromium, one browser context, one page, logged in to Airflow; driven over DevTools.

    Async under the hood (the websocket), synchronous to the tests: every call runs on the browser's
    own event loop until it completes.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.loop = asyncio.new_event_loop()
        profile = stack.profiles / f"p{time.monotonic_ns()}"
        self.process = subprocess.Popen(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.socket: Any = None
        self.session = ""
        self.devtools: _DevTools | None = None

    def run(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run one coroutine on the browser's loop."""
        return self.loop.run_until_complete(work())

    def open(self) -> None:
        """Connect to Chromium, open a page in a fresh context (no cookies)."""
        self.run(self._open)

    async def _open(self) -> None:
        import websockets

        self.socket = await websockets.connect(_devtools_endpoint(self.process), max_size=64 * 2**20)
        self.devtools = _DevTools(self.socket)
        context = (await self.devtools.call("Target.createBrowserContext"))["browserContextId"]
        target = (await self.devtools.call("Target.createTarget", url="about:blank",
                                           browserContextId=context))["targetId"]
        self.session = (await self.devtools.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        await self.devtools.call("Emulation.setDeviceMetricsOverride", self.session, width=WINDOW[0],
                                 height=WINDOW[1], deviceScaleFactor=1, mobile=False)

    @property
    def dt(self) -> _DevTools:
        assert self.devtools is not None, "the browser is not open"
        return self.devtools

    def log_in(self) -> str:
        """Open Airflow's home page anonymously, log in through its form; return the login page's path."""

        async def scenario() -> str:
            await self.dt.call("Page.navigate", self.session, url=f"{self.stack.url}/")
            await self.dt.wait_for(self.session, LOGIN_FORM)
            path = str(await self.dt.evaluate(self.session, "location.pathname"))
            for field, value in (("username", "admin"), ("password", self.stack.password)):
                await self.dt.evaluate(self.session, f"document.querySelector('input[name={field}]').focus()")
                await self.dt.call("Input.insertText", self.session, text=value)  # typed, as a user does
            await self.dt.wait_for(self.session, "!document.querySelector('button[type=submit]').disabled")
            await self.dt.evaluate(self.session, "document.querySelector('button[type=submit]').click()")
            await self.dt.wait_for(self.session, "!location.pathname.startsWith('/auth/')")
            return path

        return str(self.run(scenario))

    def visit(self, path: str, until: str, timeout: float = 90) -> Any:
        """Navigate to `path` of the Airflow server; wait until the JS expression `until` is truthy; return it."""

        async def scenario() -> Any:
            await self.dt.call("Page.navigate", self.session, url=f"{self.stack.url}{path}")
            return await self.dt.wait_for(self.session, until, timeout=timeout)

        return self.run(scenario)

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression on the current page."""
        return self.run(lambda: self.dt.evaluate(self.session, expression))

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll a JS expression on the current page until it is truthy."""
        return self.run(lambda: self.dt.wait_for(self.session, expression, timeout=timeout))

    def screenshot(self, name: str) -> Path:
        """Save the page as `<artifacts>/<name>` (PNG)."""

        async def scenario() -> str:
            deadline = time.monotonic() + SETTLE_SECONDS  # a pane still loading (the graph) draws a spinner
            while time.monotonic() < deadline and await self.dt.evaluate(self.session, SPINNING):
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)  # the last layout after the awaited text rendered
            return str((await self.dt.call("Page.captureScreenshot", self.session, format="png"))["data"])

        path = self.stack.artifacts / name
        path.write_bytes(base64.b64decode(self.run(scenario)))
        return path

    def cookies(self) -> dict[str, str]:
        """The page's cookies for the Airflow server (the session's `_token` among them)."""
        found = self.run(lambda: self.dt.call("Network.getCookies", self.session, urls=[self.stack.url]))
        return {c["name"]: c["value"] for c in found["cookies"]}

    def close(self) -> None:
        """Close the websocket and stop Chromium's whole process group."""
        try:
            if self.socket is not None:
                self.run(self.socket.close)
        finally:
            _stop_group(self.process.pid, grace=5)
            self.loop.close()


def _chromium() -> str:
    from tests.e2e.test_models_page import chromium_or_skip

    return chromium_or_skip()
