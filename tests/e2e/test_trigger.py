"""`autopilot trigger`: start DAG runs through a real Airflow API server, as CI does, and report them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from autopilot.trigger import TriggerError, credentials_from_env, run_cli, run_id_for, trigger
from tests.airflow_support import SMOKE, SMOKE_DAG, Airflow, free_port, live_airflow, write_broken_config
from tests.helpers import PROJECT

pytestmark = pytest.mark.slow

BROKEN = "autopilot_training__broken"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """The embedded services on loopback, serving the project's training DAG and a one-task smoke DAG."""
    root = tmp_path_factory.mktemp("trigger")
    write_broken_config(root / "config")
    with live_airflow(root, dag_files={"ci_smoke.py": SMOKE_DAG}, expect={BROKEN, SMOKE}) as served:
        yield served


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
    again = trigger(airflow.url, "admin", airflow.password, SMOKE, conf={"sleep": 1}, run_id="smoke-ok", wait=True)
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
