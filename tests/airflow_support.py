"""A live Airflow (api-server, scheduler, DAG processor, triggerer) and MLflow on loopback, for tests.

`live_airflow` starts the embedded services (`autopilot up`'s own `Embedded`) on free ports with
the project's training and monitoring DAG files plus any extra DAG files a test brings, waits
until the API answers and the DAG processor has parsed the wanted DAGs, and stops every process
it started afterwards (checking that none outlives the stop). One instance per test module:
starting it costs 30-60 s on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.orchestration.embedded import Embedded, _alive
from autopilot.settings import Settings
from tests.helpers import PROJECT, TINY_TUNING, adult_config_dict
from tests.integration.conftest import postgres_databases

__all__ = ["SMOKE", "SMOKE_DAG", "Airflow", "free_port", "live_airflow", "postgres_databases", "write_broken_config"]

SMOKE = "ci_smoke"
# A one-task DAG that sleeps `conf["sleep"]` seconds: a run that ends fast (a training run takes minutes).
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
# 30 s: the SQLite-backed api-server can stall while the scheduler writes on a loaded machine.
TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now (other agents run servers on this machine too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Airflow:
    """A running embedded Airflow: its API's URL, the admin password, and the `Embedded` behind it."""

    url: str
    password: str
    embedded: Embedded
    settings: Settings
    _token: str = ""

    def token(self) -> str:
        """A fresh JWT for the admin user."""
        response = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                              timeout=TIMEOUT)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET an API path as the admin (one token, reused); raise on an error status."""
        self._token = self._token or self.token()
        response = httpx.get(f"{self.url}{path}", params=params,
                             headers={"Authorization": f"Bearer {self._token}"}, timeout=TIMEOUT)
        response.raise_for_status()
        return dict(response.json())

    def assert_alive(self) -> None:
        """Every service still runs; else fail at once with the tail of the dead one's log."""
        for pid_file in self.embedded.run_dir.glob("*.pid"):
            if not _alive(int(pid_file.read_text())):
                log = (self.embedded.run_dir / f"{pid_file.stem}.log").read_text()[-3000:]
                raise AssertionError(f"the {pid_file.stem} died; its log ends:\n{log}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every DAG run of `dag_id`, as the API lists them."""
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"])


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


@contextmanager
def live_airflow(root: Path, dag_files: Mapping[str, str] | None = None, expect: Iterable[str] = (),
                 overrides: Mapping[str, str] | None = None, config_dir: Path | None = None,
                 project_dags: Iterable[str] = ("autopilot_training.py",),
                 settings_env: Mapping[str, str] | None = None, parse_timeout: float = 150.0) -> Iterator[Airflow]:
    """Run the embedded services under `root` until the block ends.

    Args:
        dag_files: extra DAG files (name -> source) beside the project's own.
        expect: DAG ids that must be parsed (visible in the API) before the block starts.
        overrides: environment variables for every service (`Embedded.overrides`).
        config_dir: the model configs (`AUTOPILOT_CONFIG_DIR`); default `root/config`.
        project_dags: which of the project's `dags/` files to serve.
        settings_env: more `Settings` variables (e.g. `AUTOPILOT_STATE_DB`); the services get them too.
    """
    config = config_dir or root / "config"
    config.mkdir(parents=True, exist_ok=True)
    # Embedded serves `<project>/dags`: a project folder of our own adds the test's DAGs to the real ones.
    project = root / "project"
    (project / "dags").mkdir(parents=True)
    (project / "plugins").mkdir()
    for name in project_dags:
        (project / "dags" / name).write_text((PROJECT / "dags" / name).read_text())
    for name, source in (dag_files or {}).items():
        (project / "dags" / name).write_text(source)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home"), "AUTOPILOT_CONFIG_DIR": str(config),
                                  **(settings_env or {})})
    embedded = Embedded(settings=settings, project=project, airflow_port=free_port(), mlflow_port=free_port(),
                        overrides=dict(overrides or {}))
    with pytest.MonkeyPatch.context() as mp:
        # The services run `airflow` from PATH: make it this interpreter's.
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        started = embedded.start()
        try:
            assert embedded.wait_healthy(timeout=180), (embedded.run_dir / "api-server.log").read_text()[-2000:]
            password = embedded.admin_password()
            assert password
            served = Airflow(f"http://127.0.0.1:{embedded.airflow_port}", password, embedded, settings)
            _wait_for_dags(served, set(expect), parse_timeout)
            yield served
        finally:
            pids = [int(p.read_text()) for p in embedded.run_dir.glob("*.pid")]
            _stop_together(pids)
            embedded.stop()  # removes the pid files (and stops anything still alive, one by one)
    assert started, "nothing was started: a service of another run was reused"
    assert not any(_alive(pid) for pid in pids), "a service outlived Embedded.stop()"
    assert not list(embedded.run_dir.glob("*.pid"))


def _stop_together(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM every service's group at once, SIGKILL what is left after `grace` s, wait until gone.

    `Embedded.stop` (tested in test_embedded_services) stops the services one by one with 15 s of
    grace each: with runs in flight that took 35 s; a test's throwaway Airflow needs no grace.
    """
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:  # the whole group, even when its leader is gone: a worker may linger in it
        _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20  # a killed process may take a moment to be reaped
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:  # already gone
        pass


def _wait_for_dags(served: Airflow, wanted: set[str], timeout: float) -> None:
    """Until the DAG processor has parsed every wanted DAG (a few seconds to a minute)."""
    deadline = time.monotonic() + timeout
    dag_ids: set[str] = set()
    while time.monotonic() < deadline:
        try:
            dag_ids = {d["dag_id"] for d in served.get("/api/v2/dags", limit=100)["dags"]}
        except httpx.HTTPError:  # a stalled answer is asked again
            dag_ids = set()
        if wanted <= dag_ids:
            return
        time.sleep(2)
    raise AssertionError(f"DAGs {sorted(wanted - dag_ids)} never appeared in the API (seen {sorted(dag_ids)})")
