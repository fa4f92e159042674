"""A `review` decision becomes an approval in Airflow's "Required actions", answered through the live HITL API.

One live Airflow (api-server, scheduler, DAG processor, triggerer, MLflow; its metadata on
PostgreSQL, as in production: three runs at once on the SQLite default are the load under which r06
saw the scheduler die of "database is locked") serves three tiny models
whose configs hold a first version for review (`first_run: require_review`). Their three training
runs go at once; each stops at its `review` task in the `awaiting_input` state, and a reviewer
(`alice`, a second user of the simple auth manager) answers through
`PATCH .../taskInstances/review/-1/hitlDetails` as the UI does:

* approve: `champion` moves, and the alias history's actor is `airflow-user:alice`, her comment its reason;
* reject: nothing is promoted, the version loses `challenger`, the reason is in its tags and the run note;
  every run's note (through the live api-server) names its outcome and each gate's line;
* no answer within the config's (tiny) `gates.review.timeout_hours`: the scheduler times it out,
  the task fails saying so, nothing is promoted, the version's tags record it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.adapters.registry import connect
from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.versions.promotion import current, history
from tests.airflow_support import TIMEOUT, Airflow, live_airflow, postgres_databases
from tests.helpers import PROJECT, TINY_TUNING, adult_config_dict, note_lines

pytestmark = pytest.mark.slow

MODELS = {"approve": "review_yes", "reject": "review_no", "timeout": "review_late"}
TIMEOUT_HOURS = 0.004  # 14.4 s; the scheduler sweeps timed-out approvals every 15 s


def write_model(folder: Path, name: str, timeout_hours: float) -> None:
    """A small Adult sample and a tiny-budget config whose first version waits for review."""
    import pandas as pd

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    pd.read_csv(PROJECT / "data/adult/adult_train.csv.gz").sample(1500, random_state=0).to_csv(
        data / f"{name}_train.csv", index=False)
    pd.read_csv(PROJECT / "data/adult/adult_test.csv.gz").sample(800, random_state=0).to_csv(
        data / f"{name}_test.csv", index=False)
    files = {"source": f"data/{name}_train.csv", "test_source": f"data/{name}_test.csv"}
    raw = adult_config_dict(name=name, data=files,
                            validation={"min_rows": 100, "max_rows": 1_000_000}, tuning=TINY_TUNING,
                            split={"seed": 42, "cv_folds": 2}, registry={"name": name})
    gates = raw["gates"]
    gates["quality"] = {**gates.get("quality", {}), "min_metrics": {"roc_auc": 0.7}, "on_inconclusive": "pass",
                        "first_run": "require_review"}
    gates["fairness"] = {**gates.get("fairness", {}), "on_inconclusive": "pass"}
    gates["review"] = {"timeout_hours": timeout_hours}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    root = tmp_path_factory.mktemp("review")
    for case, name in MODELS.items():
        write_model(root / "config", name, TIMEOUT_HOURS if case == "timeout" else 72.0)
    users = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:admin",
             # No endpoint listens here: the rollout is skipped, whatever serves on the default port.
             "AUTOPILOT_SERVING_URL": "http://127.0.0.1:9"}
    dags = {f"autopilot_training__{name}" for name in MODELS.values()}
    with postgres_databases() as database:
        overrides = {**users, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database()}
        with live_airflow(root, expect=dags, overrides=overrides) as served:
            for dag_id in dags:
                api(served, "PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
                api(served, "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": "r1", "logical_date": None})
            yield served


def api(airflow: Airflow, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """One REST call (asked again while the SQLite-backed api-server answers 5xx under load)."""
    token = token or airflow.token()
    for _ in range(5):
        response = httpx.request(method, f"{airflow.url}{path}", headers={"Authorization": f"Bearer {token}"},
                                 timeout=TIMEOUT, **kwargs)
        if response.status_code < 500:
            break
        time.sleep(2)
    assert response.is_success, (response.status_code, response.text)
    return response.json()


def alice_token(airflow: Airflow) -> str:
    passwords = json.loads((airflow.embedded.airflow_home / "simple_auth_manager_passwords.json.generated").read_text())
    response = httpx.post(f"{airflow.url}/auth/token", json={"username": "alice", "password": passwords["alice"]},
                          timeout=TIMEOUT)
    response.raise_for_status()
    return str(response.json()["access_token"])


def wait_task(airflow: Airflow, model: str, task: str, states: set[str], timeout: float = 900) -> str:
    """Until the run's task is in one of `states`; fail early when the run ended otherwise.

    The bound is for a hang, not a speed check: three training runs share one scheduler and a
    2-core machine that also runs another test file (measured 7.5 min to `review` in a slow hour).
    """
    dag_id = f"autopilot_training__{model}"
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        airflow.assert_alive()
        try:
            state = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/r1/taskInstances/{task}")["state"]
            run = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/r1")["state"]
        except httpx.HTTPError:
            time.sleep(3)
            continue
        if state in states:
            return str(state)
        if run in ("success", "failed"):
            raise AssertionError(f"{dag_id} ended {run} with {task} {state}: {task_states(airflow, dag_id)}")
        time.sleep(3)
    raise AssertionError(f"{task} of {dag_id} still {state} after {timeout} s")


def task_states(airflow: Airflow, dag_id: str) -> dict[str, str]:
    tasks = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/r1/taskInstances")["task_instances"]
    return {t["task_id"]: t["state"] for t in tasks}


def wait_run(airflow: Airflow, model: str, timeout: float = 420) -> dict[str, Any]:
    """Until the run ends; a dead service fails at once, and a run still going says where it stands."""
    dag_id = f"autopilot_training__{model}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.assert_alive()
        try:
            run = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/r1")
        except httpx.HTTPError:
            run = {}
        if run.get("state") in ("success", "failed"):
            return {"state": run["state"], "note": run.get("note"), "tasks": task_states(airflow, dag_id)}
        time.sleep(3)
    raise AssertionError(f"{dag_id} did not finish in {timeout} s: {task_states(airflow, dag_id)}")


def hitl_path(model: str) -> str:
    return f"/api/v2/dags/autopilot_training__{model}/dagRuns/r1/taskInstances/review/-1/hitlDetails"


def answer(airflow: Airflow, model: str, option: str, comment: str) -> dict[str, Any]:
    """What the reviewer sees, then her answer through the HITL API, as alice."""
    assert wait_task(airflow, model, "review", {"awaiting_input"}) == "awaiting_input"
    token = alice_token(airflow)
    shown = api(airflow, "GET", hitl_path(model), token=token)
    api(airflow, "PATCH", hitl_path(model), token=token,
        json={"chosen_options": [option], "params_input": {"comment": comment}})
    return dict(shown)


# It bears the fixture (services up, three runs to `review`): the waits below fail first, saying why.
@pytest.mark.timeout(1200)
def test_approve_promotes_with_the_reviewer_in_the_alias_history(airflow: Airflow) -> None:
    model = MODELS["approve"]
    shown = answer(airflow, model, "Approve", "checked the holdout by hand")
    assert shown["options"] == ["Approve", "Reject"]
    assert shown["subject"] == f"Promote {model} v1 to champion?"
    assert f"`{model}`" in shown["body"] and "version** 1" in shown["body"] and "none (first run)" in shown["body"]
    assert "review" in shown["body"].lower() and "- " in shown["body"]  # the gates' reasons, listed
    run = wait_run(airflow, model)
    assert run["state"] == "success", run
    assert run["tasks"]["review"] == "success" and run["tasks"]["promote"] == "success"
    assert run["tasks"]["plan_deployment"] == "success", run  # downstream proceeds as after a promotion
    settings = airflow.settings
    assert current(model, CHAMPION, connect(settings)) == 1
    moves = history(settings, model)
    assert [(m.from_version, m.to_version, m.actor) for m in moves] == [(None, 1, "airflow-user:alice")]
    assert moves[0].reason == "approved on review: checked the holdout by hand"
    tags = connect(settings).resolve_version(model, 1).tags
    assert (tags["autopilot.decision"], tags["autopilot.review"], tags["autopilot.reviewed_by"]) == (
        "review", "approved", "airflow-user:alice")
    # The run's note, written through the live api-server, says how the run ended, then each gate.
    lines = note_lines(run["note"] or "")
    assert lines[:2] == ["v1 approved by alice and promoted (first champion)",
                         "review comment: checked the holdout by hand"], run["note"]
    assert lines[2].startswith("quality: passed - roc_auc 0.") and "(first run)" in lines[2], run["note"]
    assert [line.split(":")[0] for line in lines[2:6]] == ["quality", "explainability", "fairness", "infra"]


def test_reject_promotes_nothing_and_records_the_reason(airflow: Airflow) -> None:
    model = MODELS["reject"]
    answer(airflow, model, "Reject", "fairness by race not convincing")
    run = wait_run(airflow, model)
    assert run["state"] == "success", run  # a rejection is an answer, not an error
    assert run["tasks"]["review"] == "success"
    assert run["tasks"]["promote"] == "success" and run["tasks"]["plan_deployment"] == "skipped", run
    registry = connect(airflow.settings)
    assert current(model, CHAMPION, registry) is None
    assert current(model, CHALLENGER, registry) is None  # a rejected version holds no alias
    assert history(airflow.settings, model) == []
    tags = registry.resolve_version(model, 1).tags
    assert tags["autopilot.review"] == "rejected" and tags["autopilot.reviewed_by"] == "airflow-user:alice"
    assert tags["autopilot.review_reason"] == "fairness by race not convincing"
    assert run["note"] and run["note"].startswith("v1 rejected by alice in review\n\n"
                                                  "- review comment: fairness by race not convincing\n"), run


def test_no_answer_in_time_promotes_nothing_and_says_so(airflow: Airflow) -> None:
    model = MODELS["timeout"]
    assert wait_task(airflow, model, "review", {"awaiting_input", "failed"}) in ("awaiting_input", "failed")
    run = wait_run(airflow, model, timeout=180)
    assert run["state"] == "failed", run
    assert run["tasks"]["review"] == "failed" and run["tasks"]["promote"] == "upstream_failed", run
    registry = connect(airflow.settings)
    assert current(model, CHAMPION, registry) is None
    assert current(model, CHALLENGER, registry) == 1  # still promotable by hand
    tags = registry.resolve_version(model, 1).tags
    assert tags["autopilot.review"] == "timed_out"
    assert "no reviewer answered within 0.004 h" in tags["autopilot.review_reason"]
    assert run["note"] and run["note"].startswith("v1 held for review, then timed out: no reviewer answered"), run
    detail = api(airflow, "GET", hitl_path(model))
    assert not detail["response_received"] and not detail["chosen_options"]  # nobody answered
