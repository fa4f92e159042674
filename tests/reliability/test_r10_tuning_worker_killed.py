"""Case 10: a tuning worker killed with kill -9 in the middle of a trial.

Fault: two `tune_worker` tasks (`stages.run_tuning_worker`, as the mapped DAG task calls it)
run in two child processes on one Optuna study in RDB storage (SQLite, and PostgreSQL as in
production), `tuning.parallel_workers: 2`. Worker 0 runs with the crash point
`tuning.fold_reported` armed: it stops in its first trial, after reporting the first fold,
while its heartbeat thread goes on beating. Once worker 1 has completed two trials, the test
kills worker 0 with SIGKILL (its heartbeats stop), and holds worker 1 with SIGSTOP for longer
than the grace period, as a long trial would, so that its next trial surely starts after the
dead worker's heartbeat went stale. Worker 1 then goes on; worker 0's task is retried (a
fresh, unarmed child), as Airflow retries a failed mapped task; then the `tune` stage reads
the study (`stages.finish_tuning`).

Invariant: the killed trial is FAILED by the surviving worker once three heartbeats
(`tuning.heartbeat_seconds`, 1 s here) are missed, and is run again, once, with the same
params (Optuna's stale-trial retry); the study resumes and stops at its budget (at most one
over, with two workers); every trial finished before the kill is unchanged (state, params,
value); no trial is left RUNNING or WAITING; `tune` reports the best completed trial, which is
at least as good as the best before the kill.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from autopilot.config import load_config
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.training import finish_tuning, plan_tuning
from autopilot.settings import Settings
from tests.helpers import TINY_TUNING
from tests.reliability.inject import armed_env, kill9, run_child, wait_for_marker
from tests.serving_support import snapshots

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

BUDGET = 8
POINT = "tuning.fold_reported"
WORKER = """
import json
from autopilot.config import load_config
from autopilot.settings import Settings
from autopilot.pipeline.training import run_tuning_worker

spec = json.loads(open({spec!r}).read())
done = run_tuning_worker(load_config(spec["config"]), Settings.from_env(), spec["assignment"], spec["snapped"])
print("WORKER DONE", json.dumps(done), flush=True)
"""


def start_worker(folder: Path, k: int, env: dict[str, str]) -> tuple[Any, Path]:
    """One `tune_worker` task in a child process: (the process, its log)."""
    log = folder / f"worker{k}-{time.monotonic_ns()}.log"
    return run_child(WORKER.format(spec=str(folder / f"worker{k}.json")), env, log), log


def finished_ok(worker: tuple[Any, Path], timeout: float = 300.0) -> dict[str, Any]:
    """Wait for a worker child to succeed; its `run_tuning_worker` result."""
    proc, log = worker
    proc.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    line = [row for row in text.splitlines() if row.startswith("WORKER DONE")][-1]
    return dict(json.loads(line.removeprefix("WORKER DONE ")))


def trials(storage: Any, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_trial_loses_nothing(postgres_db: str, tmp_path: Path,
                                                 fault_dir: Path, small_adult: Callable[..., Path],
                                                 adult_frames: Any) -> None:
    environ = {"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(tmp_path)}
    settings = Settings.from_env(environ)
    tuning = {**TINY_TUNING, "n_trials": BUDGET, "timeout_seconds": 600, "n_startup_trials": 4,
              "parallel_workers": 2, "heartbeat_seconds": 1}
    path = small_adult(name="tune_kill", tuning=tuning)
    # 2,000 train and test rows stored as `snapshot` stores them (validation is not this case's subject).
    snapped = snapshots(settings, load_config(path), adult_frames)
    # The same crash on each backend: SQLite (the embedded default) and PostgreSQL (production).
    for storage_url in (settings.optuna_storage, postgres_db):
        folder = fault_dir / storage_url.split(":")[0].split("+")[0]
        folder.mkdir()
        crash_and_resume(replace(settings, optuna_storage=storage_url),
                         {**environ, "AUTOPILOT_OPTUNA_STORAGE": storage_url}, path, snapped, folder)


def crash_and_resume(settings: Settings, environ: dict[str, str], path: Path, snapped: dict[str, Any],
                     folder: Path) -> None:
    cfg = load_config(path)
    ctx = RunContext(run_id=f"r10-{folder.name}", dag_id="test", actor="test")
    assignments = plan_tuning(cfg, settings, ctx, snapped)
    assert [a["worker"] for a in assignments] == [0, 1]
    name = assignments[0]["study_name"]
    for a in assignments:
        (folder / f"worker{a['worker']}.json").write_text(json.dumps(
            {"config": str(path), "assignment": a, "snapped": snapped}))
    storage = optuna.storages.RDBStorage(settings.optuna_storage)

    victim, victim_log = start_worker(folder, 0, armed_env(folder, POINT, **environ))
    survivor = start_worker(folder, 1, armed_env(folder, **environ))
    try:
        pid = wait_for_marker(folder, POINT, victim, timeout=240, log=victim_log)
        wait_until(lambda: sum(t.state == TrialState.COMPLETE for t in trials(storage, name)) >= 2,
                   "worker 1's first two trials")
        kill9(pid)
        victim.wait(timeout=30)
        at_kill = {t.number: t for t in trials(storage, name)}
        # Hold the survivor longer than the grace period (as a long trial would), so that its next
        # trial certainly starts after the dead worker's heartbeat went stale.
        os.kill(survivor[0].pid, signal.SIGSTOP)
        time.sleep(3 * cfg.tuning.heartbeat_seconds + 1)
        os.kill(survivor[0].pid, signal.SIGCONT)
        survivor_result = finished_ok(survivor)
    finally:
        if survivor[0].poll() is None:
            kill9(survivor[0].pid)
    running_at_kill = {n for n, t in at_kill.items() if t.state == TrialState.RUNNING}
    before = {n: (t.state, t.params, t.value) for n, t in at_kill.items()
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    # Airflow retries the killed worker's task: it finds the budget spent (or spends the rest).
    retried = finished_ok(start_worker(folder, 0, armed_env(folder, **environ)))
    tuned = finish_tuning(cfg, settings, ctx, assignments, [retried, survivor_result])

    final = {t.number: t for t in trials(storage, name)}
    # The killed trial: failed by the surviving worker's heartbeat check (not by the final
    # clean-up, which would leave a `fail_reason`), and run again once, with the same params.
    killed = [t for t in final.values() if t.state == TrialState.FAIL and "error" not in t.user_attrs]
    assert len(killed) == 1, [(t.number, t.state, t.user_attrs) for t in final.values()]
    victim_trial = killed[0]
    assert victim_trial.number in running_at_kill
    assert "fail_reason" not in victim_trial.user_attrs, victim_trial.user_attrs
    reruns = [t for t in final.values() if t.system_attrs.get("failed_trial") == victim_trial.number]
    assert len(reruns) == 1 and reruns[0].params == victim_trial.params, reruns
    assert reruns[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    # Nothing finished before the kill changed; nothing is left running or waiting.
    for number, (state, params, value) in before.items():
        assert (final[number].state, final[number].params, final[number].value) == (state, params, value), number
    assert not [t.number for t in final.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finished = [t for t in final.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert BUDGET <= len(finished) <= BUDGET + 1, len(finished)
    assert tuned["n_trials"] == len(finished)
    # The winner is the best completed trial, and the crash lost no better one.
    complete = [t for t in final.values() if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: float(t.value or 0.0))
    assert tuned["best_value"] == pytest.approx(best.value) and tuned["best_params"] == best.user_attrs["params"]
    done_before = [v for s, _, v in before.values() if s == TrialState.COMPLETE]
    assert tuned["best_value"] >= max(done_before)
    assert survivor_result["n_new"] >= 1 and retried["n_new"] >= 0
