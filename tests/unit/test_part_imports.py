"""`autopilot serve` and `autopilot trigger` start with only their own part installed.

Each case runs the console script's `main` in a subprocess whose import system refuses every
installed distribution a fresh `pip install autopilot[<part>]` would not bring (computed from the
installed metadata: the part's requirements and theirs, tests/parts_support.py). A module-level
import of Airflow, Great Expectations, Evidently, Optuna, Celery (or, for CI, of MLflow,
SQLAlchemy, pandas...) anywhere on the command's path fails the case. The real fresh virtual
environments are `make test-install` (tests/install/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import ADULT_CONFIG, PROJECT
from tests.parts_support import PARTS, blocked_modules, reachable

# Installed first on sys.meta_path: a blocked top-level name (or anything under it) raises
# ModuleNotFoundError, as in an environment where its distribution is not installed.
BLOCKER = """
import json, os, sys
BLOCKED = frozenset(json.loads(os.environ["AUTOPILOT_BLOCKED_MODULES"]))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not in this part)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""

# What each case must also show is absent, beside what the part must be able to run.
ABSENT = {
    "serving": ["airflow", "great_expectations", "evidently", "optuna", "celery"],
    "ci": ["airflow", "mlflow", "sqlalchemy", "pandas", "great_expectations"],
}


def _run(part: str, body: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    blocked = blocked_modules(PARTS[part][1])
    assert set(ABSENT[part]) <= blocked  # the emulated part really lacks them
    modules = sorted(reachable(PARTS[part][0]))
    script = BLOCKER + f"""
import importlib
for name in {ABSENT[part]!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{{name}} imported although blocked")
for name in {modules!r}:
    importlib.import_module(name)  # every module the part reaches, lazy imports included
print("imported", len({modules!r}), "modules", flush=True)
""" + body
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AUTOPILOT"))}
    environ.update(PYTHONPATH=f"{PROJECT / 'src'}{os.pathsep}{PROJECT}", AUTOPILOT_HOME=str(tmp_path / "home"),
                   AUTOPILOT_BLOCKED_MODULES=json.dumps(sorted(blocked)), **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ,
                          cwd=tmp_path, timeout=240)


def test_serve_starts_with_only_the_serving_part(tmp_path: Path) -> None:
    """The serving modules import, and `autopilot serve` gets as far as its own setup check."""
    body = f"""
from autopilot.cli import main
try:
    main(["serve", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
code = main(["serve", "--config", {str(ADULT_CONFIG)!r}])
print("serve exit", code, flush=True)
"""
    result = _run("serving", body, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported" in result.stdout and "serve exit 2" in result.stdout, result.stdout
    # It stopped at the token check (a ServingSetupError), after loading and validating the config.
    assert "AUTOPILOT_SERVING_TOKEN" in result.stderr, result.stderr[-3000:]


class _Refuse(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "Invalid credentials"}')

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_trigger_runs_with_only_the_ci_part(tmp_path: Path, refusing_api: str) -> None:
    """`autopilot trigger` reaches the API over HTTP (a refused login is reported, exit 2)."""
    body = """
from autopilot.cli import main
code = main(["trigger", "autopilot_training__adult_income"])
print("trigger exit", code, flush=True)
"""
    result = _run("ci", body, tmp_path, AIRFLOW_API_URL=refusing_api, AIRFLOW_USERNAME="ci",
                  AIRFLOW_PASSWORD="not-the-password")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trigger exit 2" in result.stdout, result.stdout
    assert "autopilot trigger:" in result.stderr and "not-the-password" not in result.stderr, result.stderr


def test_the_blocker_fails_a_part_that_imports_too_much(tmp_path: Path) -> None:
    """The check is real: importing the orchestration layer with only the serving part fails."""
    result = _run("serving", "import autopilot.orchestration.factory\n", tmp_path)
    assert result.returncode != 0
    assert "blocked: not in this part" in result.stderr
