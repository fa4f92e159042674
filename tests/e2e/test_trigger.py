"""`autopilot trigger`: start DAG runs through a real Airflow API server, as CI does, and report them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from autopilot.trigger import TriggerError, credentials_from_env, run_cli, run_id_for, trigger
from tests.conftest import PROJECT, TINY_TUNING, adult_config_dict

pytestmark = pytest.mark.slow

BROKEN = "autopilot_training__broken"
SMOKE = "ci_smoke"
# A one-task DAG: the success path needs a run that ends fast, not a training run (minutes on 2 cores).
SMOKE_DAG = '''
from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="ci_smoke", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def ci_smoke():
    @task
    def nap(dag_run=None):
        time.sleep(float(dag_run.conf.get("sleep", 0)))

    nap()


ci_smoke()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Airflow:
    url: str
    password: str
    embedded: Embedded

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        # 30 s: the SQLite-backed api-server can stall while the scheduler writes on a loaded machine.
        token = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                           timeout=30).json()
        response = httpx.get(f"{self.url}{path}", params=params,
                             headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=30)
        response.raise_for_status()
        return dict(response.json())


def write_broken_config(folder: Path) -> None:
    """A model whose training data lacks `sex`: its run fails fast at `validate`."""
    import pandas as pd

    train = pd.read_csv(PROJECT / "data/adult/adult_train.csv.gz").sample(800, random_state=0)
    test = pd.read_csv(PROJECT / "data/adult/adult_test.csv.gz").sample(400, random_state=0)
    (folder / "data").mkdir(parents=True)
    train.drop(columns=["sex"]).to_csv(folder / "data/broken_train.csv", index=False)
    test.to_csv(folder / "data/broken_test.csv", index=False)
    raw = adult_config_dict(name="broken", data={"source": "data/broken_train.csv",
                                                  "test_source": "data/broken_test.csv"},
                            validation={"min_rows": 100, "max_rows": 1_000_000}, tuning=TINY_TUNING,
                            split={"seed": 42, "cv_folds": 2}, registry={"name": "broken"})
    (folder / "broken.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """The embedded services on loopback, serving the project's training DAG and a one-task smoke DAG."""
    root = tmp_path_factory.mktemp("trigger")
    write_broken_config(root / "config")
    # Embedded serves `<project>/dags`: a project folder of our own adds the smoke DAG to the real one.
    project = root / "project"
    (project / "dags").mkdir(parents=True)
    (project / "plugins").mkdir()
    (project / "dags" / "autopilot_training.py").write_text((PROJECT / "dags/autopilot_training.py").read_text())
    (project / "dags" / "ci_smoke.py").write_text(SMOKE_DAG)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home"), "AUTOPILOT_CONFIG_DIR": str(root / "config")})
    embedded = Embedded(settings=settings, project=project, airflow_port=free_port(), mlflow_port=free_port())
    with pytest.MonkeyPatch.context() as mp:
        # The services run `airflow` from PATH: make it this interpreter's.
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        started = embedded.start()
        try:
            assert embedded.wait_healthy(timeout=180), (embedded.run_dir / "api-server.log").read_text()[-2000:]
            password = embedded.admin_password()
            assert password
            served = Airflow(f"http://127.0.0.1:{embedded.airflow_port}", password, embedded)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:  # the DAG processor parses both files first
                dag_ids = {d["dag_id"] for d in served.get("/api/v2/dags")["dags"]}
                if {BROKEN, SMOKE} <= dag_ids:
                    break
                time.sleep(3)
            assert {BROKEN, SMOKE} <= dag_ids, dag_ids
            yield served
        finally:
            pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
            stopped = embedded.stop()
    assert sorted(stopped) == sorted(started)
    assert not any(_alive(pid) for pid in pids), "a service outlived Embedded.stop()"


def test_success_with_wait_exits_0(airflow: Airflow, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIRFLOW_API_URL", airflow.url)
    monkeypatch.setenv("AIRFLOW_USERNAME", "admin")
    monkeypatch.setenv("AIRFLOW_PASSWORD", airflow.password)
    assert run_cli(SMOKE, conf='{"sleep": 1}', run_id="smoke-ok", wait=True, timeout=180) == 0
    out = capsys.readouterr()
    assert "smoke-ok started; state success" in out.out, out
    assert airflow.password not in out.out + out.err  # the secret never reaches CI logs
    run = airflow.get(f"/api/v2/dags/{SMOKE}/dagRuns/smoke-ok")
    assert run["state"] == "success" and run["conf"] == {"sleep": 1}
    # The same run id again (a re-run CI job): reported with its outcome, not started a second time.
    again = trigger(airflow.url, "admin", airflow.password, SMOKE, run_id="smoke-ok", wait=True)
    assert (again.created, again.state, again.failed_tasks) == (False, "success", [])
    assert again.url.endswith(f"/dags/{SMOKE}/runs/smoke-ok")


def test_duplicate_run_id_is_reported_not_started_twice(airflow: Airflow) -> None:
    first = trigger(airflow.url, "admin", airflow.password, SMOKE, conf={"sleep": 20}, run_id="ci__dup")
    second = trigger(airflow.url, "admin", airflow.password, SMOKE, conf={"sleep": 20}, run_id="ci__dup")
    assert first.created and not second.created
    assert second.run_id == "ci__dup" and second.state in ("queued", "running", "success")
    runs = airflow.get(f"/api/v2/dags/{SMOKE}/dagRuns", limit=100)["dag_runs"]
    assert [r["dag_run_id"] for r in runs].count("ci__dup") == 1


def test_wait_timeout_raises(airflow: Airflow) -> None:
    with pytest.raises(TriggerError, match=r"still '(queued|running)' after 2 s"):
        trigger(airflow.url, "admin", airflow.password, SMOKE, conf={"sleep": 30}, run_id="slow-1", wait=True,
                timeout=2, poll=0.5)


def test_failed_run_names_the_failed_task_and_exits_1(airflow: Airflow, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    result = trigger(airflow.url, "admin", airflow.password, BROKEN, run_id="ci__broken", wait=True, timeout=240,
                     poll=2)
    assert result.created and result.state == "failed", result
    # Only `validate` failed; the tasks after it are upstream_failed and must not be named.
    assert result.failed_tasks == ["validate"], result
    assert result.note and "missing column 'sex'" in result.note
    monkeypatch.setenv("AIRFLOW_PASSWORD", airflow.password)
    code = run_cli(BROKEN, run_id="ci__broken", wait=True, url=airflow.url, username="admin")
    out = capsys.readouterr().out
    assert code == 1, out
    assert "already existed" in out and "failed tasks: validate" in out


def test_wrong_password_is_a_clear_error(airflow: Airflow, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TriggerError) as caught:
        trigger(airflow.url, "admin", "not-the-password", SMOKE, run_id="never")
    assert str(caught.value) == f"Airflow refused the credentials for user 'admin' at {airflow.url} (401)"
    monkeypatch.setenv("AIRFLOW_PASSWORD", "not-the-password")
    assert run_cli(SMOKE, run_id="never", url=airflow.url, username="admin") == 2
    err = capsys.readouterr().err
    assert "refused the credentials" in err and "not-the-password" not in err


def test_unknown_dag_is_a_clear_error(airflow: Airflow) -> None:
    with pytest.raises(TriggerError, match=r"\(404\).*'no_such_dag'"):
        trigger(airflow.url, "admin", airflow.password, "no_such_dag", run_id="x")
    with pytest.raises(TriggerError, match=r"\(404\).*'no_such_dag'"):  # without the unpause call first
        trigger(airflow.url, "admin", airflow.password, "no_such_dag", run_id="x", unpause=False)


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TriggerError, match=f"cannot reach Airflow at {url}"):
        trigger(url, "admin", "pw", SMOKE, run_id="x")


def test_missing_credentials_and_bad_conf(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TriggerError, match="set AIRFLOW_USERNAME, AIRFLOW_PASSWORD"):
        credentials_from_env(env={"AIRFLOW_API_URL": "http://x"})
    assert credentials_from_env(env={"AIRFLOW_API_URL": "http://x/", "AIRFLOW_USERNAME": "u",
                                     "AIRFLOW_PASSWORD": "p"}) == ("http://x", "u", "p")
    assert run_cli(SMOKE, conf="{not json", url="http://x", username="u") == 2
    assert run_cli(SMOKE, conf="[1]", url="http://x", username="u") == 2
    assert "JSON" in capsys.readouterr().err


def test_run_id_derives_from_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert run_id_for(sha) == "ci__0123456789ab"
    assert run_id_for(sha, prefix="nightly") == "nightly__0123456789ab"
    monkeypatch.setenv("GITHUB_SHA", sha)
    monkeypatch.setenv("CI_COMMIT_SHA", "f" * 40)
    assert run_id_for() == "ci__0123456789ab"  # GitHub's variable first
    monkeypatch.delenv("GITHUB_SHA")
    assert run_id_for() == "ci__ffffffffffff"
    monkeypatch.delenv("CI_COMMIT_SHA")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    if head.returncode == 0:
        monkeypatch.chdir(PROJECT)
        assert run_id_for() == f"ci__{head.stdout.strip()[:12]}"


def test_workflow_triggers_training_on_data_or_config_change() -> None:
    workflow = yaml.safe_load((PROJECT / ".github/workflows/train-on-change.yml").read_text())
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert on["push"]["branches"] == ["main"]
    assert set(on["push"]["paths"]) == {"data/**", "config/models/**"}
    job = workflow["jobs"]["trigger-training"]
    assert {job["env"][k] for k in ("AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD")} == {
        "${{ secrets.AIRFLOW_API_URL }}", "${{ secrets.AIRFLOW_USERNAME }}", "${{ secrets.AIRFLOW_PASSWORD }}"}
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert "pip install ." in script
    assert 'autopilot trigger "autopilot_training__${model}" --wait' in script
    assert "--run-id" not in script  # the run id derives from GITHUB_SHA: a re-run finds its run
    json.dumps(workflow)  # plain data: no YAML tags or anchors a runner might read differently
