"""`autopilot[ci]` alone, in a fresh venv, triggers a run on a live api-server (`make test-install`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.airflow_support import SMOKE, SMOKE_DAG, live_airflow
from tests.install.venvs import clean_env, import_fails, install_part

pytestmark = pytest.mark.install


@pytest.mark.timeout(900)
def test_the_ci_part_alone_triggers_a_run(tmp_path: Path) -> None:
    """`autopilot trigger --wait` from the [ci] venv creates the run and reports its success."""
    venv = install_part("ci", tmp_path / "part")
    for absent in ("mlflow", "airflow", "sqlalchemy", "pandas"):
        assert import_fails(venv, absent), f"{absent} is importable in the [ci] venv"
    with live_airflow(tmp_path / "airflow", dag_files={"ci_smoke.py": SMOKE_DAG}, expect={SMOKE},
                      project_dags=()) as airflow:
        done = subprocess.run(
            [str(venv / "bin" / "autopilot"), "trigger", SMOKE, "--conf", '{"sleep": 0}', "--run-id", "ci-part",
             "--wait", "--timeout", "240"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env=clean_env(AIRFLOW_API_URL=airflow.url, AIRFLOW_USERNAME="admin", AIRFLOW_PASSWORD=airflow.password))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "ci-part started; state success" in done.stdout, done.stdout
        assert airflow.password not in done.stdout + done.stderr
        run = airflow.get(f"/api/v2/dags/{SMOKE}/dagRuns/ci-part")
        assert run["state"] == "success" and run["conf"] == {"sleep": 0}
