"""The second half of `make demo`: serve the champion, watch traffic, drift, retrain, redeploy.

Runs after the training DAG promoted a champion: starts `autopilot serve`, sends real Adult test
rows without drift and checks that the monitor stays quiet, sends drifted rows and checks that it
asks for a retrain, runs the training DAG with the monitor's conf (the same gates, promotion and
rollout to the live endpoint), and prints what happened at each step with the report paths.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from autopilot.aliases import CHAMPION

__all__ = ["run_loop"]


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:  # taken (a server the user started?): take any free port
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


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


def _monitor(cfg: Any, settings: Any, start: datetime, label: str, say: Callable[[str], None]) -> dict[str, Any]:
    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.monitoring import monitor_window

    end = datetime.now(UTC) + timedelta(seconds=1)
    result = monitor_window(cfg, settings, RunContext(run_id=f"demo-{label}", actor="demo"), start, end)
    strategy = f" ({result['strategy']})" if result.get("strategy") else ""
    say(f"monitor [{label}]: {result['rows']} rows -> {result['action']}{strategy}")
    for reason in result["reasons"][:6]:
        say(f"    {reason}")
    say(f"    report {result['report_uri']}")
    if result.get("html_uri"):
        say(f"    Evidently {result['html_uri']}")
    return result


def run_loop(cfg: Any, settings: Any, embedded: Any, say: Callable[[str], None] = print) -> int:
    """Serve, monitor quiet and drifted traffic, retrain through the training DAG, redeploy; 0 on success."""
    from autopilot.adapters.registry import connect
    from autopilot.monitoring.simulate import run_simulation

    serving = cfg.deployment.serving
    token = os.environ.get(serving.token_env) or secrets.token_urlsafe(32)
    port = _free_port(serving.port)
    url = f"http://127.0.0.1:{port}"
    # The DAG's rollout task (a subprocess of `airflow dags test`) finds the endpoint through these.
    os.environ[serving.token_env] = token
    os.environ["AUTOPILOT_SERVING_URL"] = url
    proc = _start_server(cfg, embedded, embedded.env(), port)
    try:
        _wait_ready(url, proc)
        version = httpx.get(url + "/health").json()["model_version"]
        say(f"serving       v{version} at {url} (`autopilot serve`, following the champion alias)")

        start = datetime.now(UTC)
        calm = run_simulation(cfg, url, token, "none", rows=2000, batch=20, seed=11)
        say(f"traffic       {calm.rows} Adult test rows without drift, {calm.failed} failed requests, "
            f"{calm.labelled_rows} labels posted")
        quiet = _monitor(cfg, settings, start, "no drift", say)

        start = datetime.now(UTC)
        drifted = run_simulation(cfg, url, token, "covariate", rows=2000, batch=20, seed=12, strength=1.5)
        shown = ", ".join(f"{k} {v}" for k, v in drifted.shift.items())
        say(f"traffic       {drifted.rows} rows shifted ({shown}), {drifted.failed} failed")
        alarm = _monitor(cfg, settings, start, "drifted", say)
        if alarm["action"] != "retrain":
            say(f"the drifted window did not ask for a retrain ({alarm['action']}): stopping the loop here")
            return 0 if quiet["action"] == "none" else 1

        dag_id = f"autopilot_training__{cfg.name}"
        say(f"retraining    {dag_id} with conf strategy={alarm['conf']['strategy']} (gates, promote, deploy, "
            "rollout to the live endpoint)")
        from autopilot.cli.progress import RunConsole

        console = RunConsole(say, cfg, settings)
        code = embedded.test_dag(dag_id, conf=alarm["conf"], on_event=console.event, on_tick=console.tick)
        console.finish()
        champion = connect(settings).resolve_version(cfg.registered_model_name, CHAMPION)
        serving_now = httpx.get(url + "/health").json()["model_version"]
        say(f"redeployed    champion v{champion.version} ({champion.tags.get('autopilot.decision', '?')}); "
            f"the endpoint serves v{serving_now}; DAG log {embedded.run_dir / (dag_id + '.log')}")
        return code
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
