"""The Airflow UI tells the story of real runs: logs, a note on every outcome, grouped graphs, working links.

One set-up for the module (tests/ui_support.py): the whole embedded stack (api-server, scheduler
with the LocalExecutor, DAG processor, triggerer, MLflow server) on free loopback ports, with one
small model (1,500 rows, three trials). Through the REST API, as an operator would, the test
unpauses both DAGs and triggers a training run, waits for it to succeed (~2 min here); then it
logs an hour of the champion's traffic in the inference log and triggers a monitoring run for
that hour (`data_interval_start`/`_end` with a `logical_date`: Airflow 3.3 ignores the interval
without one), so the window has a decision and an Evidently report. Nothing serves the model
(`AUTOPILOT_SERVING_URL` is a free port), so the rollout skips.

Each test checks through the REST API first, then in headless Chromium logged in once through
Airflow's real login form (the DevTools-protocol helpers of tests/e2e/test_models_page.py):

1. a task's log page shows a line the task logged (`train_and_register`'s returned version);
2. the training run's note names the decision (first line: promoted, rejected or held for review);
3. the run's graph shows the task groups data, tuning, gates and deployment;
4. every link on the Models page answers 200 (MLflow links on this module's MLflow server, and
   the entity they name exists there; the plugin's own files are refused without the login);
5. the monitoring run's note names its window and action (`Window <start>-<end> UTC: <action>`).

Screenshots go to `${AUTOPILOT_TEST_ARTIFACTS:-<project>/test-artifacts}`: ui-task-log.png,
ui-run-note.png, ui-graph.png, ui-models.png, ui-monitoring-note.png. Without Chromium the
browser half of each test skips (the REST half still runs), unless AUTOPILOT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urldefrag, urlsplit

import httpx
import pytest

from tests.e2e.test_models_page import WINDOW, artifacts_dir, check_png, chromium_or_skip
from tests.ui_support import MODEL, MONITORING, TRAINING, Api, Browser, Stack, log_traffic, started_stack

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

TRAINING_RUN = "story-1"
WINDOW_RUN = "window-1"
WINDOW_START = datetime(2026, 12, 1, 0, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(hours=1)
GROUPS = ("data", "tuning", "gates", "deployment")
OUTCOME_WORDS = {"promote": "promoted", "reject": "rejected", "review": "held for review"}
NOTE_WAIT = 60  # seconds: a note may be written by a callback after the run's state is final


@dataclass
class Story:
    """The stack and what its two runs did, as the REST API reports it."""

    stack: Stack
    api: Api
    training: dict[str, Any]
    decision: dict[str, Any]  # `decide`'s return value
    registered: dict[str, Any]  # `train_and_register`'s return value
    monitoring: dict[str, Any]
    monitored: dict[str, Any]  # `monitor`'s return value
    seconds: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, adult_frames: tuple[Any, Any]) -> Iterator[Story]:
    """A training run and a monitoring run through the real scheduler; everything stopped afterwards."""
    root = tmp_path_factory.mktemp("ui-story")
    started = time.monotonic()
    with started_stack(root, adult_frames, artifacts_dir()) as stack:
        seconds = {"healthy": time.monotonic() - started}
        api = Api(stack)
        for dag_id in (TRAINING, MONITORING):
            api.wait_for_dag(dag_id)
            api.json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        training = _train(api)
        seconds["training"] = time.monotonic() - started - seconds["healthy"]
        registered = _xcom(api, TRAINING, TRAINING_RUN, "train_and_register")
        log_traffic(stack.embedded.settings, root / "config" / f"{MODEL}.yaml", adult_frames[1], WINDOW_START,
                    rows=400)
        monitoring = _monitor(api)
        seconds["monitoring"] = time.monotonic() - started - seconds["healthy"] - seconds["training"]
        print(f"\nset-up: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}")
        yield Story(stack, api, training, _xcom(api, TRAINING, TRAINING_RUN, "decide"), registered, monitoring,
                    _xcom(api, MONITORING, WINDOW_RUN, "monitor"), seconds)


def _train(api: Api) -> dict[str, Any]:
    """Trigger the training run as a user would (REST, no conf) and wait for its outcome."""
    api.json("POST", f"/api/v2/dags/{TRAINING}/dagRuns", json={"logical_date": None, "dag_run_id": TRAINING_RUN})
    run = api.wait_for_run(TRAINING, TRAINING_RUN, timeout=480)
    states = api.task_states(TRAINING, TRAINING_RUN)
    assert run["state"] == "success", states
    # A run of the real scheduler, as a user's trigger makes it (not `airflow dags test`'s, whose logs the UI lacks).
    assert (run["run_type"], run["triggered_by"]) == ("manual", "rest_api"), run
    assert states["promote"] == "success" and states["rollout"] == "skipped", states  # no endpoint: skipped
    return run


def _monitor(api: Api) -> dict[str, Any]:
    """A monitoring run for the logged hour: an explicit data interval needs a logical date in Airflow 3.3."""
    body = {"dag_run_id": WINDOW_RUN, "logical_date": WINDOW_START.isoformat(),
            "data_interval_start": WINDOW_START.isoformat(), "data_interval_end": WINDOW_END.isoformat()}
    api.json("POST", f"/api/v2/dags/{MONITORING}/dagRuns", json=body)
    run = api.wait_for_run(MONITORING, WINDOW_RUN, timeout=240)
    assert run["state"] == "success", api.task_states(MONITORING, WINDOW_RUN)
    assert (run["data_interval_start"], run["data_interval_end"]) == ("2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z")
    return run


def _xcom(api: Api, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    return dict(api.json("GET", path, params={"deserialize": "true"})["value"])


@pytest.fixture(scope="module")
def browser(story: Story) -> Iterator[Browser]:
    """One headless Chromium, logged in through Airflow's login form (typed into, submitted)."""
    chromium_or_skip()
    pytest.importorskip("websockets", reason="the DevTools-protocol browser tests need the websockets package")
    opened = Browser(story.stack)
    try:
        opened.open()
        assert opened.log_in().rstrip("/") == "/auth/login"  # anonymous: sent to the login form first
        yield opened
    finally:
        opened.close()


def _shot(browser: Browser, name: str) -> None:
    path = browser.screenshot(name)
    check_png(path, WINDOW)


def wait_for_note(api: Api, dag_id: str, run_id: str, timeout: float = NOTE_WAIT) -> str:
    """The run's note once it is set (REST), or fail naming what the run has."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run.get("note"):
            return str(run["note"])
        time.sleep(2)
    raise AssertionError(f"{dag_id} {run_id} has no note after {timeout} s (state {run.get('state')})")


# ---------------------------------------------------------------------------------------------- 1. logs


def test_a_task_log_shows_what_the_task_logged(story: Story, request: pytest.FixtureRequest) -> None:
    events = story.api.log_events(TRAINING, TRAINING_RUN, "train_and_register")
    returned = [e["event"] for e in events if str(e.get("event", "")).startswith("Done. Returned value was:")]
    summary = f"{len(events)} events, the last: {[e.get('event') for e in events[-5:]]}"
    assert returned, f"the REST log of train_and_register holds no line of the task's: {summary}"
    line = returned[-1]
    # The line names the version the registry holds: this run's, not any text.
    version = _mlflow(story, "model-versions/get", name=MODEL, version=story.registered["version"])["model_version"]
    assert version["run_id"] in line and f"'version': {story.registered['version']}" in line, line

    browser = request.getfixturevalue("browser")
    page = f"/dags/{TRAINING}/runs/{TRAINING_RUN}/tasks/train_and_register"
    try:
        browser.visit(page, f"document.body.innerText.includes({_js(line)})")
    except AssertionError as exc:
        raise AssertionError(f"the UI's log page {page} did not show the line {line[:120]!r} that the REST log "
                             f"holds ({summary})") from exc
    _shot(browser, "ui-task-log.png")


# ---------------------------------------------------------------------------------------------- 2. note


def test_the_training_run_note_names_the_decision(story: Story, request: pytest.FixtureRequest) -> None:
    note = wait_for_note(story.api, TRAINING, TRAINING_RUN)
    first = note.splitlines()[0]
    assert any(word in first for word in OUTCOME_WORDS.values()), note
    decided = str(story.decision["decision"])
    assert OUTCOME_WORDS[decided] in first, (decided, note)  # the word of this run's decision, not another's
    assert decided == "promote", story.decision  # the small model's first run: nothing to beat, promoted

    browser = request.getfixturevalue("browser")
    browser.visit(f"/dags/{TRAINING}/runs/{TRAINING_RUN}", f"document.body.innerText.includes({_js(first)})")
    _open_note(browser, first, "ui-run-note.png")


NOTE_DIALOG = "Array.from(document.querySelectorAll('[role=dialog]')).find(d => d.innerText.includes('Dag Run Note'))"


def _open_note(browser: Browser, first: str, shot: str) -> None:
    """The run's header shows the note's first line; its note button opens the whole note: open, shoot, close."""
    browser.evaluate("document.querySelector('button[aria-label=\"Edit note\"]').click()")
    shown = browser.wait_for(f"(() => {{ const d = {NOTE_DIALOG}; return d ? d.innerText : ''; }})()")
    assert first in shown, shown  # rendered as Markdown: the first line's words, whatever follows
    _shot(browser, shot)
    browser.evaluate(f"{NOTE_DIALOG}.querySelector('button[aria-label=Close]').click()")  # nothing edited
    browser.wait_for(f"!{NOTE_DIALOG}")


# ---------------------------------------------------------------------------------------------- 3. graph


GRAPH_BUTTON = "document.querySelector('button[aria-label^=\"Show Graph\"]')"  # "Show Graph (Press g)"
GRAPH_NODES = ("Array.from(document.querySelectorAll('.react-flow__node'))"
               ".map(n => [n.getAttribute('data-id'), n.innerText.trim()])")


def test_the_run_graph_shows_the_task_groups(story: Story, request: pytest.FixtureRequest) -> None:
    browser = request.getfixturevalue("browser")
    browser.visit(f"/dags/{TRAINING}/runs/{TRAINING_RUN}", f"!!{GRAPH_BUTTON}")
    browser.evaluate(f"{GRAPH_BUTTON}.click()")  # as a user switches the view
    # React Flow draws one node per task, and one per task group (its id the group's, its label on it).
    nodes = browser.wait_for(f"(() => {{ const n = {GRAPH_NODES}; return n.length ? n : null; }})()")
    _shot(browser, "ui-graph.png")
    shown = {node_id: text for node_id, text in nodes}
    missing = [g for g in GROUPS if g not in shown or g not in shown[g].lower()]
    assert not missing, f"task groups not drawn: {missing}; the graph's nodes: {shown}"


# ---------------------------------------------------------------------------------------------- 4. links


def test_every_link_on_the_models_page_answers(story: Story, request: pytest.FixtureRequest) -> None:
    browser = request.getfixturevalue("browser")
    links = browser.visit("/autopilot/", "document.body.innerText.includes('champion v') && Array.from("
                                         "document.querySelectorAll('a[href]')).map(a => [a.href, a.innerText])")
    _shot(browser, "ui-models.png")
    token = browser.cookies().get("_token")
    assert token, "logged in, yet no _token cookie"
    hrefs = sorted({str(href) for href, _ in links})
    airflow, mlflow = story.stack.url, story.stack.mlflow_url
    elsewhere = [h for h in hrefs if not h.startswith((f"{airflow}/", f"{mlflow}/")) and h not in (airflow, mlflow)]
    assert not elsewhere, f"links to neither this Airflow nor this module's MLflow server: {elsewhere}"
    failed = {h: status for h in hrefs if (status := _status(h, token, airflow)) != 200}
    assert not failed, f"links that did not answer 200 (logged in): {failed}"
    for href in hrefs:  # what a 200 of a single-page app's route does not prove: that what it names exists
        _check_target(story, href)
    kinds = _kinds(story, [(str(h), str(t)) for h, t in links])
    assert all(kinds.values()), f"the page lacks links of kind {[k for k, v in kinds.items() if not v]}: {links}"


def _status(href: str, token: str, airflow: str) -> int:
    """The status of a logged-in GET (the session's cookie on Airflow's origin; MLflow has no login)."""
    url, _ = urldefrag(href)
    cookies = {"_token": token} if url.startswith(airflow) else {}
    return httpx.get(url, cookies=cookies, timeout=60, follow_redirects=False).status_code


def _check_target(story: Story, href: str) -> None:
    """MLflow routes name a model, version or run that exists; plugin files are refused without the login."""
    url, fragment = urldefrag(href)
    if url.rstrip("/") == story.stack.mlflow_url:
        if found := re.fullmatch(r"/models/([^/]+)/versions/(\d+)", fragment):
            _mlflow(story, "model-versions/get", name=found.group(1), version=found.group(2))
        elif found := re.fullmatch(r"/models/([^/]+)", fragment):
            _mlflow(story, "registered-models/get", name=found.group(1))
        elif found := re.fullmatch(r"/experiments/(\d+)/runs/(\w+)", fragment):
            run = _mlflow(story, "runs/get", run_id=found.group(2))["run"]
            assert run["info"]["experiment_id"] == found.group(1), (href, run["info"])
        return
    path = urlsplit(url).path
    if found := re.fullmatch(r"/dags/([^/]+)/runs/([^/]+)/?", path):  # an Airflow UI route: the run exists
        story.api.json("GET", f"/api/v2/dags/{found.group(1)}/dagRuns/{found.group(2)}")
    elif path.startswith("/autopilot/") and path != "/autopilot/":  # the plugin's files: behind the login
        anonymous = httpx.get(url, timeout=60, follow_redirects=False)
        assert anonymous.status_code in (401, 303), (href, anonymous.status_code)


def _kinds(story: Story, links: list[tuple[str, str]]) -> dict[str, bool]:
    """Which of the links the Models page must have are there (by route, or by the link's words)."""
    version = story.registered["version"]
    mlflow = story.stack.mlflow_url
    return {
        "Airflow run": any(urlsplit(h).path.rstrip("/") == f"/dags/{TRAINING}/runs/{TRAINING_RUN}" for h, _ in links),
        "MLflow version": any(h == f"{mlflow}/#/models/{MODEL}/versions/{version}" for h, _ in links),
        "MLflow run": any(h.startswith(f"{mlflow}/#/experiments/") and h.endswith(f"/runs/{story.registered['run_id']}")
                          for h, _ in links),
        "Data Docs": any("data docs" in t.lower() or "/datadocs/" in h for h, t in links),
        "Evidently report": any("evidently" in t.lower() or "/reports/" in h for h, t in links),
    }


# ---------------------------------------------------------------------------------------------- 5. monitoring


def test_the_monitoring_run_note_names_its_action(story: Story, request: pytest.FixtureRequest) -> None:
    action = str(story.monitored["action"])
    assert story.monitored["rows"] == 400 and action in ("none", "alert", "retrain", "rollback"), story.monitored
    note = wait_for_note(story.api, MONITORING, WINDOW_RUN)
    first = note.splitlines()[0]
    found = re.match(r"Window (.+)-(.+) UTC: (\w+)", first)
    assert found, note
    assert found.group(1).startswith("2026-12-01") and "00:00" in found.group(1), first  # the run's interval
    assert found.group(3) == action, (first, story.monitored)

    browser = request.getfixturevalue("browser")
    browser.visit(f"/dags/{MONITORING}/runs/{WINDOW_RUN}", f"document.body.innerText.includes({_js(first)})")
    _open_note(browser, first, "ui-monitoring-note.png")


# ---------------------------------------------------------------------------------------------- helpers


def _mlflow(story: Story, endpoint: str, **params: Any) -> dict[str, Any]:
    """A GET on this module's MLflow server's REST API that must succeed."""
    reply = httpx.get(f"{story.stack.mlflow_url}/api/2.0/mlflow/{endpoint}", params=params, timeout=60)
    assert reply.status_code == 200, (endpoint, params, reply.status_code, reply.text[:500])
    return dict(reply.json())


def _js(text: str) -> str:
    """A Python string as a JavaScript string literal (JSON is one)."""
    import json

    return json.dumps(text)

