"""The training DAG under `dag.test()`: the real task code through Airflow, on a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from tests.helpers import PROJECT, note_lines

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """`dag.test()` needs a migrated metadata database."""
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, env=os.environ, capture_output=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "autopilot_promotion", "1", "one promotion at a time"], check=True,
                   env=os.environ, capture_output=True, timeout=120)


@pytest.fixture
def env(settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("AUTOPILOT_HOME", str(settings.home))
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(tmp_path))
    # No endpoint listens here: the rollout must be skipped, whatever runs on the default port.
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", "http://127.0.0.1:9")
    for name in ("MLFLOW_TRACKING_URI", "AUTOPILOT_ARTIFACT_ROOT", "AUTOPILOT_OPTUNA_STORAGE",
                 "AUTOPILOT_MLFLOW_ARTIFACT_ROOT", "AUTOPILOT_STATE_DB"):
        monkeypatch.delenv(name, raising=False)
    yield settings


def run_dag(model: str, conf: dict[str, Any] | None = None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    return bag.dags[f"autopilot_training__{model}"].test(run_conf=conf)


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


@pytest.fixture
def notes_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A stand-in api-server behind `autopilot_airflow_api`: it records each note the tasks write."""
    import json

    from autopilot.adapters import airflow_api
    from tests.dags.test_notes import FakeApi

    monkeypatch.setattr(airflow_api, "RETRY_DELAYS", (0.0, 0.0))
    fake = FakeApi([200])
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": fake.server.server_address[1], "login": "admin",
         "password": "pw"}))
    yield fake
    fake.server.shutdown()


def test_training_dag_end_to_end(airflow_db: None, env: Any, small_adult: Callable[..., Path],
                                 notes_api: Any) -> None:
    small_adult(name="dagtest")
    dag_run = run_dag("dagtest")
    assert str(dag_run.state) == "success", states(dag_run)
    result = states(dag_run)
    # Nothing serves at AUTOPILOT_SERVING_URL: there is no live endpoint to roll out to.
    assert result.pop("rollout") == "skipped"
    assert result.pop("review") == "skipped"  # the decision was `promote`: no approval asked
    assert set(result.values()) == {"success"}, result
    reg = registry.connect(env)
    version = reg.resolve_version("dagtest", "challenger")
    assert int(version.version) == 1
    assert version.tags["autopilot.dag_run_id"] == dag_run.run_id
    # First run with `first_run: promote`: every gate passed, the decision promoted it.
    assert version.tags["autopilot.decision"] == "promote"
    assert {version.tags[f"autopilot.gate.{g}"] for g in ("quality", "explainability", "fairness", "infra")} == {
        "passed"}
    assert int(reg.resolve_version("dagtest", "champion").version) == 1
    from autopilot.versions.promotion import history

    moves = history(env, "dagtest")
    assert [(m.from_version, m.to_version, m.action) for m in moves] == [(None, 1, "promote")]
    assert moves[0].actor == "airflow:autopilot_training__dagtest"
    # The deployment plan is stored with the version: profile, selection, validated configs.
    champion = reg.resolve_version("dagtest", "champion")
    plan = reg.load_dict(str(champion.run_id), "deploy/plan.json")
    assert plan["version"] == 1 and plan["replicas"] >= 2 and plan["instance"] == champion.tags[
        "autopilot.deploy.instance"]
    stored = {a.path for a in reg.client.list_artifacts(champion.run_id, "deploy/configs")}
    assert {"deploy/configs/Dockerfile", "deploy/configs/k8s", "deploy/configs/sagemaker"} <= stored
    profile = reg.load_dict(str(champion.run_id), "deploy/profile.json")
    assert profile["latency_ms"]["p95"] > 0 and set(profile["throughput_rps"]) == {"1", "2"}
    # The run's note: decide wrote it, promote and rollout rewrote it; the last says how the run ended.
    notes = [patch["note"] for patch in notes_api.patches]
    assert [note_lines(note)[0] for note in notes] == [
        "v1 passed every gate: to be promoted (first champion)", "v1 promoted (first champion): every gate passed",
        "v1 promoted (first champion): every gate passed"], notes
    lines = note_lines(notes[-1])
    assert [line.split(":")[0] for line in lines[1:5]] == ["quality", "explainability", "fairness", "infra"]
    # 800 holdout rows: the first-run comparison with the linear baseline may be inconclusive (let through)
    assert lines[1].startswith(("quality: passed - roc_auc 0.", "quality: inconclusive - let through")), lines
    assert lines[-1].startswith("rollout: skipped ("), lines  # nothing serves at AUTOPILOT_SERVING_URL


def test_bad_data_fails_the_dag_before_training(airflow_db: None, env: Any,
                                                small_adult: Callable[..., Path]) -> None:
    small_adult(name="dagbad", mutate_train=lambda f: f.drop(columns=["sex"]))
    dag_run = run_dag("dagbad")
    result = states(dag_run)
    assert str(dag_run.state) == "failed"
    assert result["validate"] == "failed"
    downstream = ("snapshot", "plan_tuning", "tune_worker", "tune", "train_and_register",
                  "quality", "explainability_and_fairness", "infra",
                  "decide", "promote", "plan_deployment", "deploy", "rollout")
    assert {result[name] for name in downstream} == {"upstream_failed"}
    reg = registry.connect(env)
    with pytest.raises(LookupError):
        reg.resolve_version("dagbad", "latest")


def test_a_review_under_dag_test_stays_pending_instead_of_waiting(airflow_db: None, env: Any,
                                                                  small_adult: Callable[..., Path]) -> None:
    """`airflow dags test` (the demo) has nobody to answer an approval: the review skips, nothing is promoted."""
    from autopilot.versions.promotion import current

    small_adult(name="dagheld", gates={"quality": {"first_run": "require_review"}})
    dag_run = run_dag("dagheld")
    result = states(dag_run)
    assert str(dag_run.state) == "success", result
    assert (result["decide"], result["review"], result["promote"], result["plan_deployment"]) == (
        "success", "skipped", "success", "skipped"), result
    reg = registry.connect(env)
    assert current("dagheld", "champion", reg) is None and current("dagheld", "challenger", reg) == 1
    assert reg.resolve_version("dagheld", 1).tags["autopilot.decision"] == "review"
