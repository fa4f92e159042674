"""Schedules, Assets and the trigger form under a real scheduler (api-server, scheduler, DAG processor).

One live Airflow serves the project's training DAG for a model with `training.schedule: data`
and the two example DAGs of `docs/examples/` (an ingestion DAG updating the model's data Asset, a
DAG scheduled on its champion Asset). In order, on one small model:

1. the trigger form: a REST trigger with an invalid param is refused (400) and creates no run; a
   valid one runs with its strategy and trial budget (the tuning study holds that many trials);
   its promotion emits the champion event and the team's DAG runs on it;
2. two ingestion runs with two batches start exactly two training runs, each on the batch its
   event names (the first is trained and registered; the second, with ages out of range, is
   refused by validation); the first batch delivered again starts a third run that ends after
   `snapshot` (its data was trained on already) and registers no version;
3. only promotions emitted champion events (one per promotion, none for the other runs).

Three full training runs would take minutes each on a loaded 2-core machine; this module makes
two (the first model, the first batch), on the tests' tiny budget and small bootstraps.
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

from autopilot.adapters import registry
from autopilot.trigger import trigger
from tests.airflow_support import Airflow, live_airflow
from tests.helpers import PROJECT, TINY_TUNING, adult_config_dict

pytestmark = pytest.mark.slow

MODEL = "assets"
TRAINING = f"autopilot_training__{MODEL}"
INGEST = f"ingest_then_train__{MODEL}"
ON_CHAMPION = f"on_champion_changed__{MODEL}"


def write_model(root: Path) -> Path:
    """A small model trained on `data/`, with `training.schedule: data`; two batches waiting in `landing/`."""
    import pandas as pd

    config, landing = root / "config", root / "landing"
    (config / "data").mkdir(parents=True)
    landing.mkdir()
    train = pd.read_csv(PROJECT / "data/adult/adult_train.csv.gz")
    test = pd.read_csv(PROJECT / "data/adult/adult_test.csv.gz")
    train.sample(1000, random_state=0).to_csv(config / "data/train.csv", index=False)
    test.sample(600, random_state=0).to_csv(config / "data/test.csv", index=False)
    train.sample(1000, random_state=1).to_csv(landing / "batch1.csv", index=False)
    # The second batch is refused by validation (ages out of range): its run ends at `validate`, in
    # seconds, where a third full training run would cost minutes on a loaded 2-core machine.
    train.sample(1000, random_state=2).assign(age=150).to_csv(landing / "batch2.csv", index=False)
    raw = adult_config_dict(
        name=MODEL, data={"source": "data/train.csv", "test_source": "data/test.csv"},
        training={"schedule": "data"}, validation={"min_rows": 100, "max_rows": 1_000_000},
        tuning=TINY_TUNING, split={"seed": 42, "cv_folds": 2}, registry={"name": MODEL})
    raw["gates"]["quality"] = {**raw["gates"]["quality"], "min_metrics": {"roc_auc": 0.7}, "on_inconclusive": "pass",
                               "bootstrap_samples": 200}
    raw["gates"]["fairness"] = {**raw["gates"]["fairness"], "on_inconclusive": "pass", "bootstrap_samples": 100}
    (config / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return landing


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Airflow, Path]]:
    root = tmp_path_factory.mktemp("assets")
    landing = write_model(root)
    examples = {name: (PROJECT / "docs/examples" / name).read_text()
                for name in ("ingest_then_train.py", "on_champion_changed.py")}
    overrides = {"AUTOPILOT_EXAMPLE_MODEL": MODEL, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                 # nothing serves here: the rollout is skipped
                 "AUTOPILOT_SERVING_URL": "http://127.0.0.1:9"}
    with live_airflow(root, dag_files=examples, expect={TRAINING, INGEST, ON_CHAMPION},
                      overrides=overrides) as airflow:
        yield airflow, landing


def wait_for(airflow: Airflow, what: str, check: Any, timeout: float, every: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        airflow.assert_alive()  # a dead scheduler fails now, with its log, not at the timeout
        try:
            found = check()
        except httpx.HTTPError:  # the SQLite-backed API can stall while the scheduler writes
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finished(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, Any] | None:
    run = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    return run if run["state"] in ("success", "failed") else None


def task_states(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, str]:
    found = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    return {f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: str(t["state"])
            for t in found}


def asset_runs(airflow: Airflow) -> list[dict[str, Any]]:
    return sorted((r for r in airflow.runs(TRAINING) if r["run_type"] == "asset_triggered"),
                  key=lambda r: r["run_after"])


def test_invalid_params_are_refused_and_a_valid_trigger_runs_with_its_strategy_and_budget(
        served: tuple[Airflow, Path]) -> None:
    airflow, _ = served
    headers = {"Authorization": f"Bearer {airflow.token()}"}
    url = f"{airflow.url}/api/v2/dags/{TRAINING}/dagRuns"
    for conf in ({"n_trials": 0}, {"strategy": "everything"}, {"n_trials": "many"}):
        answer = httpx.post(url, json={"logical_date": None, "conf": conf}, headers=headers, timeout=30)
        assert answer.status_code in (400, 422), (conf, answer.status_code, answer.text)
    assert airflow.runs(TRAINING) == []  # refused before a run existed

    result = trigger(airflow.url, "admin", airflow.password, TRAINING, run_id="by_hand",
                     conf={"strategy": "full", "n_trials": 2, "reason": "a first model"}, wait=True, timeout=420,
                     poll=3)
    states = task_states(airflow, TRAINING, "by_hand")
    assert result.state == "success", f"{states} {result.note}"
    # The tuning workers carry their label (`map_index_template`).
    labels = airflow.get(f"/api/v2/dags/{TRAINING}/dagRuns/by_hand/taskInstances", limit=100)["task_instances"]
    assert [t["rendered_map_index"] for t in labels if t["task_id"] == "tune_worker"] == ["worker 1 of 1"]
    reg = registry.connect(airflow.settings)
    version = reg.resolve_version(MODEL, "champion")
    assert int(version.version) == 1 and version.tags["autopilot.dag_run_id"] == "by_hand"
    tune = reg.get_run(version.tags["autopilot.tune_run_id"])
    assert tune.data.metrics["n_trials"] == 2  # the form's budget, not tuning.n_trials (3)
    assert version.tags["autopilot.study_name"].endswith("-n2")

    # The promotion emitted the champion event, and the team's DAG ran on it.
    run = wait_for(airflow, f"{ON_CHAMPION} to run", lambda: [
        r for r in airflow.runs(ON_CHAMPION) if r["state"] in ("success", "failed")], timeout=120)
    assert [r["state"] for r in run] == ["success"]
    events = airflow.get(f"/api/v2/dags/{ON_CHAMPION}/dagRuns/{run[0]['dag_run_id']}/upstreamAssetEvents")
    extras = [e["extra"] for e in events["asset_events"]]
    assert extras == [{"model": MODEL, "version": 1, "from_version": None, "run_id": "by_hand"}]
    recorded = airflow.settings.home / "champion_events" / f"{MODEL}-v1.json"
    assert json.loads(recorded.read_text())["run_id"] == "by_hand"


def test_each_data_event_starts_one_training_run_on_its_batch(served: tuple[Airflow, Path]) -> None:
    airflow, landing = served
    reg = registry.connect(airflow.settings)
    before = len(reg.versions(MODEL))
    sources = []
    for k, batch in enumerate(("batch1", "batch2", "batch1"), start=1):
        ingest = trigger(airflow.url, "admin", airflow.password, INGEST, run_id=f"ingest_{k}",
                         conf={"landed": str(landing / f"{batch}.csv")}, wait=True, timeout=180, poll=2)
        assert ingest.state == "success", task_states(airflow, INGEST, f"ingest_{k}")
        sources.append(landed_path(airflow, landing / f"{batch}.csv"))
        # The next batch waits until this one's training run exists: one run per event (events that
        # arrive while a run is queued are consumed together by it; see docs/operations.md).
        wait_for(airflow, f"training run {k}", lambda k=k: len(asset_runs(airflow)) >= k, timeout=300)
    runs = wait_for(airflow, "the three training runs to end", lambda: (
        found if len(found := asset_runs(airflow)) == 3 and all(r["state"] in ("success", "failed") for r in found)
        else None), timeout=480, every=5)
    assert sources[0] == sources[2] != sources[1]  # the same content lands on the same path
    for run, source in zip(runs, sources, strict=True):
        events = airflow.get(f"/api/v2/dags/{TRAINING}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
        assert [e["extra"]["source"] for e in events["asset_events"]] == [source], events
    first, second, again = runs
    states = task_states(airflow, TRAINING, first["dag_run_id"])
    # Trained and registered; the gates may then reject it against the champion (the run fails at
    # `decide`: a decision, recorded, and no champion event).
    assert {states[t] for t in ("validate", "snapshot", "tune", "train_and_register")} == {"success"}, states
    assert first["state"] == "success" or states["decide"] == "failed", states
    version = reg.find_version(MODEL, f"{MODEL}/{first['dag_run_id']}/train")
    assert version is not None, first
    assert data_run(reg, first)["autopilot.source.train"] == sources[0]  # the batch its event named
    # The second batch's run validated that batch, and refused it.
    states = task_states(airflow, TRAINING, second["dag_run_id"])
    assert (second["state"], states["validate"], states["snapshot"]) == ("failed", "failed", "upstream_failed")
    tags = data_run(reg, second)
    assert (tags["autopilot.source.train"], tags["autopilot.validation.train.passed"]) == (sources[1], "False")
    # The repeated batch: validated and snapshotted (the same content-addressed snapshot), then the
    # rest of the run is skipped; no version is registered for it.
    states = task_states(airflow, TRAINING, again["dag_run_id"])
    assert again["state"] == "success", states
    assert (states["validate"], states["snapshot"], states["train_and_register"]) == ("success", "skipped", "skipped")
    assert reg.find_version(MODEL, f"{MODEL}/{again['dag_run_id']}/train") is None
    assert len(reg.versions(MODEL)) == before + 1
    # Each run's note says how it ended: the first its decision, the repeated batch's that nothing was new.
    assert again["note"] == f"no new version: this data was already trained on (v{version.version})", again
    assert any(word in first["note"].splitlines()[0] for word in ("promoted", "rejected", "held for review")), first


def data_run(reg: Any, run: dict[str, Any]) -> dict[str, str]:
    """The tags of a training DAG run's data stage run in MLflow."""
    experiment = reg.client.get_experiment_by_name(f"autopilot/{MODEL}")
    [found] = reg.client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`autopilot.dag_run_id` = '{run['dag_run_id']}' and tags.`autopilot.stage` = 'data'"))
    return dict(found.data.tags)


def landed_path(airflow: Airflow, landed: Path) -> str:
    """Where the example ingestion DAG lands a file: content-addressed under the config's folder."""
    import hashlib

    digest = hashlib.sha256(landed.read_bytes()).hexdigest()
    return str(airflow.settings.config_dir / "data" / "batches" / MODEL / f"{digest[:16]}.csv")


def test_each_promotion_and_only_a_promotion_emits_a_champion_event(served: tuple[Airflow, Path]) -> None:
    airflow, _ = served
    from autopilot.versions.promotion import history

    promotions = [m for m in history(airflow.settings, MODEL) if m.action == "promote"]
    # Runs that promoted nothing emitted nothing: the repeated batch's run at least (skipped after `snapshot`).
    assert len(airflow.runs(TRAINING)) > len(promotions) >= 1

    def announced() -> list[int] | None:
        versions = []
        for run in airflow.runs(ON_CHAMPION):
            if run["state"] != "success":
                return None
            events = airflow.get(f"/api/v2/dags/{ON_CHAMPION}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
            versions += [int(e["extra"]["version"]) for e in events["asset_events"]]
        return sorted(versions) if len(versions) >= len(promotions) else None

    assert wait_for(airflow, f"{ON_CHAMPION} to catch up", announced, timeout=120) == sorted(
        m.to_version for m in promotions)
