"""Case 4: CI triggers the same run id twice.

Fault: a CI job re-run for the same commit (or two jobs racing) sends `autopilot trigger` with a
run id that already exists. It is injected for real: the `autopilot trigger` command runs as CI
runs it (a child process with `AIRFLOW_API_URL`/`AIRFLOW_USERNAME`/`AIRFLOW_PASSWORD`) against a
live api-server + scheduler, and Airflow itself answers the second POST with 409.

Expected: the second call with the same conf succeeds (exit 0), reporting the existing run
(with `--wait` it follows that run to its outcome); with a different conf it fails (exit 2) with
a message naming the run id and saying its conf differs, and it does not wait.
Invariant: exactly one DAG run with that id, still carrying the first request's conf (asked of
the REST API after every call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.airflow_support import SMOKE, SMOKE_DAG, Airflow, live_airflow, write_broken_config
from tests.helpers import PROJECT

pytestmark = pytest.mark.slow

TRAINING = "autopilot_training__broken"  # fails fast at `validate`: its runs cost seconds, not minutes


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    root = tmp_path_factory.mktemp("r04")
    write_broken_config(root / "config")
    with live_airflow(root, dag_files={"ci_smoke.py": SMOKE_DAG}, expect={TRAINING, SMOKE}) as served:
        yield served


def autopilot_trigger(airflow: Airflow, *args: str) -> subprocess.CompletedProcess[str]:
    """`autopilot trigger ...` as a CI job runs it: a process of its own, credentials from the environment."""
    env = {**os.environ, "AIRFLOW_API_URL": airflow.url, "AIRFLOW_USERNAME": "admin",
           "AIRFLOW_PASSWORD": airflow.password,
           "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("AIRFLOW_API_TOKEN", None)
    return subprocess.run([sys.executable, "-c", "import sys; from autopilot.cli import main; sys.exit(main())",
                           "trigger", *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def runs_with_id(airflow: Airflow, dag_id: str, run_id: str) -> list[dict[str, object]]:
    return [r for r in airflow.runs(dag_id) if r["dag_run_id"] == run_id]


def test_same_run_id_same_conf_succeeds_and_different_conf_fails(airflow: Airflow) -> None:
    conf = {"commit": "0123456789ab", "reason": "data/** changed"}
    first = autopilot_trigger(airflow, TRAINING, "--run-id", "ci__0123456789ab", "--conf", json.dumps(conf))
    assert first.returncode == 0, first.stderr
    assert "ci__0123456789ab started" in first.stdout

    # The re-run CI job: the same id and conf (keys in another order: the same JSON object).
    again = autopilot_trigger(airflow, TRAINING, "--run-id", "ci__0123456789ab",
                              "--conf", json.dumps(dict(reversed(list(conf.items())))))
    assert again.returncode == 0, again.stderr
    assert "ci__0123456789ab already existed (same run id, same conf): not started again" in again.stdout

    other = autopilot_trigger(airflow, TRAINING, "--run-id", "ci__0123456789ab", "--wait", "--timeout", "600",
                              "--conf", json.dumps({**conf, "reason": "someone else's request"}))
    assert other.returncode == 2, other.stdout + other.stderr
    assert ("run 'ci__0123456789ab' of DAG 'autopilot_training__broken' already exists and its conf differs "
            "from the requested one (keys that differ: reason)") in other.stderr
    assert "someone else" not in other.stderr  # values are not echoed, only keys
    assert airflow.password not in first.stdout + again.stdout + other.stdout + other.stderr

    no_conf = autopilot_trigger(airflow, TRAINING, "--run-id", "ci__0123456789ab")
    assert no_conf.returncode == 2 and "keys that differ: commit, reason" in no_conf.stderr

    found = runs_with_id(airflow, TRAINING, "ci__0123456789ab")
    assert len(found) == 1, found
    assert found[0]["conf"] == conf


def test_same_conf_with_wait_follows_the_existing_run(airflow: Airflow) -> None:
    first = autopilot_trigger(airflow, SMOKE, "--run-id", "ci__follow", "--conf", '{"sleep": 6}')
    assert first.returncode == 0 and "ci__follow started; state queued" in first.stdout, first
    followed = autopilot_trigger(airflow, SMOKE, "--run-id", "ci__follow", "--conf", '{"sleep": 6}', "--wait",
                                 "--timeout", "240")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "ci__follow already existed (same run id, same conf): not started again; state success" in followed.stdout
    found = runs_with_id(airflow, SMOKE, "ci__follow")
    assert len(found) == 1 and found[0]["state"] == "success", found


def test_no_conf_twice_is_the_same_request(airflow: Airflow) -> None:
    # No --conf means `{}`: a CI workflow that passes none (train-on-change.yml) re-runs cleanly.
    codes = [autopilot_trigger(airflow, SMOKE, "--run-id", "ci__noconf").returncode for _ in range(2)]
    assert codes == [0, 0]
    assert len(runs_with_id(airflow, SMOKE, "ci__noconf")) == 1


def test_two_ci_jobs_racing_on_one_run_id_leave_one_run(airflow: Airflow) -> None:
    """Both POSTs in flight at once: Airflow answers one 201 and one 409; both jobs report the one run."""
    results: list[subprocess.CompletedProcess[str]] = []
    barrier = threading.Barrier(4)

    def job(conf: str) -> None:
        barrier.wait()
        results.append(autopilot_trigger(airflow, SMOKE, "--run-id", "ci__race", "--conf", conf))

    threads = [threading.Thread(target=job, args=('{"sleep": 0}',)) for _ in range(3)]
    threads.append(threading.Thread(target=job, args=('{"sleep": 1}',)))  # a job asking for something else
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    found = runs_with_id(airflow, SMOKE, "ci__race")
    assert len(found) == 1, found
    winner = json.dumps(found[0]["conf"], sort_keys=True)
    started = [r for r in results if "ci__race started;" in r.stdout]
    assert len(started) == 1, [r.stdout for r in results]
    for r in results:
        asked = r.args[-1]
        same = json.dumps(json.loads(asked), sort_keys=True) == winner
        # The same conf as the run that won: exit 0; another conf: exit 2, naming the run id.
        assert r.returncode == (0 if same else 2), (asked, winner, r.stdout, r.stderr)
        if not same:
            assert "run 'ci__race' of DAG 'ci_smoke' already exists and its conf differs" in r.stderr
