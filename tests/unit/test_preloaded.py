"""The preloading launcher of Airflow's scheduler and Celery workers (`orchestration/preloaded.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autopilot.orchestration.embedded import Embedded
from autopilot.orchestration.preloaded import PRELOADED, preload
from autopilot.settings import Settings

PROJECT = Path(__file__).resolve().parents[2]


def test_the_scheduler_and_the_celery_workers_start_through_the_preloader(tmp_path: Path) -> None:
    """Both parents of forked tasks import first; the servers that fork no task start as plain `airflow`."""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    services = Embedded(settings=settings, project=PROJECT, celery_workers=1)._services()
    launcher = ["python", "-m", "autopilot.orchestration.preloaded"]
    assert services["scheduler"][0][:4] == [*launcher, "scheduler"]
    assert services["celery-worker-1"][0][:5] == [*launcher, "celery", "worker"]
    for name in ("api-server", "dag-processor", "triggerer"):
        assert services[name][0][0] == "airflow", name


def test_preload_imports_what_it_can_and_skips_what_is_missing() -> None:
    """A missing library never stops the scheduler: the task that needs it reports it."""
    seconds = preload(("json", "autopilot_no_such_module"))
    assert set(seconds) == {"json", "skops.io"}
    assert "skops.io" in sys.modules
    assert "autopilot.pipeline.gates" in PRELOADED and "mlflow" in PRELOADED


def test_the_launcher_runs_airflows_cli_with_and_without_preloading() -> None:
    """`python -m autopilot.orchestration.preloaded <cmd>` is `airflow <cmd>`; AUTOPILOT_PRELOAD=0: no imports."""
    probe = ("import runpy, sys\nsys.argv = ['x', 'version']\ntry:\n"
             "    runpy.run_module('autopilot.orchestration.preloaded', run_name='__main__')\n"
             "finally:\n    print('sklearn' in sys.modules, 'skops.io' in sys.modules)\n")
    for value, loaded in (("1", "True True"), ("0", "False False")):
        env = {**os.environ, "AUTOPILOT_PRELOAD": value, "PYTHONWARNINGS": "ignore"}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300,
                             check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = out.stdout.strip().splitlines()
        assert lines[0].count(".") == 2, out.stdout  # Airflow's version, e.g. 3.3.2
        assert lines[-1] == loaded, out.stdout


def test_a_task_forked_from_a_preloaded_process_fits_and_predicts() -> None:
    """Fork safety: after `preload()`, a forked child (as Airflow forks a task) runs BLAS and OpenMP work."""
    script = """
import os, sys, threading
from autopilot.orchestration.preloaded import preload
preload()
assert threading.active_count() == 1, threading.enumerate()  # no Python thread to lose in the fork
pid = os.fork()
if pid == 0:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    X = np.random.default_rng(0).normal(size=(2000, 5))
    y = (X @ np.ones(5) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    os._exit(0 if model.score(X, y) > 0.9 and float((X.T @ X).trace()) > 0 else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
