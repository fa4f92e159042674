"""The second half of `make demo`: serve the champion, watch traffic, drift, retrain, redeploy.

Runs after the training DAG promoted a champion, on the scheduler the demo started: starts
`autopilot serve`, sends real Adult test rows without drift, then runs the monitoring DAG over
exactly that traffic window (a REST-triggered run whose data interval is the window) and reads
its decision from the `monitor` task's XCom; sends drifted rows and runs a second window, whose
`trigger_retraining` task starts the training DAG itself (run id derived from the window); the
demo follows that triggered training run (the same gates, promotion and rollout to the live
endpoint) and prints what happened at each step with the report paths.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from autopilot.aliases import CHAMPION
from autopilot.task_ids import TaskId

__all__ = ["run_loop", "window_run_id"]


def _start_server(cfg: Any, embedded: Any, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = open(embedded.run_dir / "serve.log", "wb")  # the child keeps it open; closed when it exits
    return subprocess.Popen([sys.executable, "-m", "autopilot.cli", "serve", cfg.path, "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the serving endpoint exited; see serve.log in the demo's run folder")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the serving endpoint at {url} was not ready after {timeout:.0f} s")


def window_run_id(label: str, end: datetime) -> str:
    """The demo's monitoring run id for the window ending at `end` (`demo_window__quiet__20261207T021500`)."""
    return f"demo_window__{label}__{end:%Y%m%dT%H%M%S}"


def _monitor(cfg: Any, runs: Any, start: datetime, label: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    """Run the monitoring DAG over [start, now] and return its `monitor` result (None when the run failed)."""
    from autopilot.cli.progress import RunConsole

    dag_id = f"autopilot_monitoring__{cfg.name}"
    end = datetime.now(UTC) + timedelta(seconds=1)  # the last request's log line is inside the window
    run_id = window_run_id(label, end)
    say(f"monitoring    {dag_id} run {run_id}, data interval {start:%H:%M:%S}-{end:%H:%M:%S} UTC")
    console = RunConsole(lambda line: say(line[2:]))  # the loop's prefix instead of the indent
    runs.trigger(dag_id, run_id, data_interval=(start, end))
    run = runs.follow(dag_id, run_id, on_event=console.event, timeout=600.0)
    if run.get("state") != "success":
        failed = console.failed[-1][0] if console.failed else "no task reported a failure"
        say(f"monitor [{label}]: the run {run['state']} ({failed}); its task logs are in the Airflow UI")
        return None
    result: dict[str, Any] = runs.api.xcom(dag_id, run_id, TaskId.MONITOR.value)
    strategy = f" ({result['strategy']})" if result.get("strategy") else ""
    say(f"monitor [{label}]: {result['rows']} rows -> {result['action']}{strategy}")
    for reason in result["reasons"][:6]:
        say(f"    {reason}")
    say(f"    report {result['report_uri']}")
    if result.get("html_uri"):
        say(f"    Evidently {result['html_uri']}")
    return result


def run_loop(cfg: Any, settings: Any, embedded: Any, runs: Any, serving: tuple[str, str],
             say: Callable[[str], None] = print) -> int:
    """Serve, monitor quiet and drifted traffic, follow the retrain it triggers, redeploy; 0 on success.

    `serving` is the endpoint's (url, token) the services were started with (the rollout task uses them).
    """
    from autopilot.monitoring.simulate import run_simulation

    url, token = serving
    port = int(url.rsplit(":", 1)[1])
    proc = _start_server(cfg, embedded, embedded.env(), port)
    try:
        _wait_ready(url, proc)
        version = httpx.get(url + "/health").json()["model_version"]
        say(f"serving       v{version} at {url} (`autopilot serve`, following the champion alias)")

        start = datetime.now(UTC)
        calm = run_simulation(cfg, url, token, "none", rows=2000, batch=20, seed=11)
        say(f"traffic       {calm.rows} Adult test rows without drift, {calm.failed} failed requests, "
            f"{calm.labelled_rows} labels posted")
        quiet = _monitor(cfg, runs, start, "quiet", say)

        start = datetime.now(UTC)
        drifted = run_simulation(cfg, url, token, "covariate", rows=2000, batch=20, seed=12, strength=1.5)
        shown = ", ".join(f"{k} {v}" for k, v in drifted.shift.items())
        say(f"traffic       {drifted.rows} rows shifted ({shown}), {drifted.failed} failed")
        alarm = _monitor(cfg, runs, start, "drifted", say)
        if quiet is None or alarm is None:
            return 1
        if alarm["action"] != "retrain":
            say(f"the drifted window did not ask for a retrain ({alarm['action']}): stopping the loop here")
            return 0 if quiet["action"] == "none" else 1
        return _follow_retrain(cfg, settings, runs, alarm, url, say)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _follow_retrain(cfg: Any, settings: Any, runs: Any, alarm: dict[str, Any], url: str,
                    say: Callable[[str], None]) -> int:
    """Follow the training run the drifted window's monitoring run triggered; report the redeployment."""
    from autopilot.adapters.registry import connect
    from autopilot.cli.progress import RunConsole

    dag_id, run_id = f"autopilot_training__{cfg.name}", str(alarm["trigger_run_id"])
    say(f"retraining    {dag_id} run {run_id}, triggered by the monitoring run with strategy="
        f"{alarm['conf']['strategy']} (gates, promote, deploy, rollout to the live endpoint)")
    console = RunConsole(say, cfg, settings)
    run = runs.follow(dag_id, run_id, on_event=console.event, on_tick=console.tick, human_task=TaskId.REVIEW.value)
    console.finish()
    if run.get("awaiting_input"):
        say(f"the retrained version is held for review: run {run_id} waits in Airflow's Required actions (make up, "
            "then approve or reject it there); the endpoint keeps the champion")
        return 1
    champion = connect(settings).resolve_version(cfg.registered_model_name, CHAMPION)
    serving_now = httpx.get(url + "/health").json()["model_version"]
    say(f"redeployed    champion v{champion.version} ({champion.tags.get('autopilot.decision', '?')}); "
        f"the endpoint serves v{serving_now}; the retrain {run['state']}")
    return 0 if run.get("state") == "success" else 1
