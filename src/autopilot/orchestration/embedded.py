"""The embedded default: Airflow on SQLite with the LocalExecutor, MLflow on SQLite, local files.

Everything lives under one home folder (`.autopilot/` in the project). Airflow is driven
through its own CLI in subprocesses with an explicit environment, so the user's shell and any
other Airflow installation are left alone.

Every server it starts listens on loopback only, unless `AUTOPILOT_BIND_ADDRESS` names another
address (e.g. `0.0.0.0` to reach the UIs from another machine, knowing MLflow has no login):
the api-server (`--host`, and `[api] host`) and the MLflow server bind to it; the log servers
the scheduler and triggerer would start on every interface (Airflow's `serve_logs` has no host
setting) are not started, since every component here writes to the one local log folder the
api-server reads; the scheduler's optional health-check server binds to the same address.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.settings import Settings

if TYPE_CHECKING:
    from autopilot.adapters.airflow_api import AirflowApi

__all__ = ["ALL_ADMINS_OVERRIDE", "PROGRESS_FILE_ENV", "AllAdminsRefused", "Embedded", "EventFile",
           "all_admins_source"]

# Where the progress listener (`orchestration/progress_listener.py`) writes task events: set only by
# `autopilot demo`, in the environment it starts the services with (`Embedded.overrides`).
PROGRESS_FILE_ENV = "AUTOPILOT_PROGRESS_FILE"
BIND_ADDRESS_ENV = "AUTOPILOT_BIND_ADDRESS"
DEFAULT_BIND_ADDRESS = "127.0.0.1"

# `airflow ...` with the task layer's imports done first (PATH puts this venv's python first).
PRELOADED_AIRFLOW = ["python", "-m", "autopilot.orchestration.preloaded"]

# --skip-serve-logs: Airflow's log server binds every interface with no setting to change it; here
# all components share one log folder on one host, which the api-server reads directly.
SERVICES = {
    "api-server": ["airflow", "api-server", "--host", "{bind}", "--port", "{airflow_port}"],
    # The scheduler forks the LocalExecutor's workers, which fork each task: started through
    # `preloaded`, every task inherits the libraries it imports (`orchestration/preloaded.py`).
    "scheduler": [*PRELOADED_AIRFLOW, "scheduler", "--skip-serve-logs"],
    "dag-processor": ["airflow", "dag-processor"],
    "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
    # One uvicorn worker (MLflow starts 4 by default): a local UI for one user, and the demo's tasks
    # write to the MLflow store directly; four workers cost ~1 GB and CPU at every start on 2 cores.
    "mlflow": ["mlflow", "server", "--backend-store-uri", "{mlflow_uri}", "--default-artifact-root",
               "{mlflow_artifacts}", "--host", "{bind}", "--port", "{mlflow_port}", "--workers", "1"],
}


def bind_address_from_env(environ: Mapping[str, str] | None = None) -> str:
    """`AUTOPILOT_BIND_ADDRESS` (default 127.0.0.1): the one interface every embedded server listens on."""
    raw = (os.environ if environ is None else environ).get(BIND_ADDRESS_ENV, "").strip()
    if not raw:
        return DEFAULT_BIND_ADDRESS
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ValueError(f"{BIND_ADDRESS_ENV}={raw!r} is not an IP address; use 127.0.0.1 (the default), "
                         "0.0.0.0 for every interface, or one of this machine's addresses") from None


@dataclass(frozen=True)
class Embedded:
    """The embedded Airflow + MLflow set-up under `settings.home`.

    `overrides` replace any variable of `env()` last: the scale-out set-up is the same process
    layout with Airflow's database on PostgreSQL and the CeleryExecutor (`AIRFLOW__CORE__EXECUTOR`,
    `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`, `AIRFLOW__CELERY__*`), plus `celery_workers` worker
    processes, each with its own Celery hostname and `AUTOPILOT_CELERY_WORKER` name.
    """

    settings: Settings
    project: Path
    airflow_port: int = 8080
    mlflow_port: int = 5001
    overrides: Mapping[str, str] = field(default_factory=dict)
    celery_workers: int = 0
    worker_concurrency: int = 1
    bind_address: str = field(default_factory=bind_address_from_env)

    @property
    def local_host(self) -> str:
        """The address this machine's own clients use to reach the servers (loopback unless bound elsewhere)."""
        address = ipaddress.ip_address(self.bind_address)
        if address.is_unspecified or address.is_loopback:
            return "[::1]" if address == ipaddress.ip_address("::1") else "127.0.0.1"
        return f"[{address}]" if address.version == 6 else str(address)

    @property
    def airflow_url(self) -> str:
        """The api-server's URL (UI and REST API)."""
        return f"http://{self.local_host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow server's URL."""
        return f"http://{self.local_host}:{self.mlflow_port}"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME for the embedded set-up."""
        return self.settings.home / "airflow"

    @property
    def run_dir(self) -> Path:
        """Where service pid files and logs go."""
        return self.settings.home / "run"

    def env(self) -> dict[str, str]:
        """The environment every Airflow and MLflow process of the embedded set-up gets."""
        home = self.airflow_home
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        env.update({
            # Airflow runs `airflow` from PATH for task processes: put this venv first.
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.project / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__HOST": self.bind_address,
            # Loopback unless AUTOPILOT_BIND_ADDRESS says otherwise; the health server is off by default.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": self.bind_address,
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AUTOPILOT_HOME": str(self.settings.home),
            "AUTOPILOT_CONFIG_DIR": str(self.settings.config_dir),
            "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri,
            "AUTOPILOT_MLFLOW_ARTIFACT_ROOT": self.settings.mlflow_artifact_root,
            "AUTOPILOT_ARTIFACT_ROOT": self.settings.artifact_root,
            "AUTOPILOT_OPTUNA_STORAGE": self.settings.optuna_storage,
            "AUTOPILOT_STATE_DB": self.settings.state_db,
            # The Models page in the Airflow UI links each version and run to the embedded MLflow UI.
            "AUTOPILOT_MLFLOW_UI_URL": self.mlflow_url,
            # Lets a failed gate write its reasons on the DAG run's note through the REST API.
            "AIRFLOW_CONN_AUTOPILOT_AIRFLOW_API": json.dumps({
                "conn_type": "http", "host": self.local_host.strip("[]"), "port": self.airflow_port, "login": "admin",
                "password": self._admin_secret()}),
            "GX_ANALYTICS_ENABLED": "False",
            # MLflow 3's server starts five huey job consumers (~250 MB each) for GenAI jobs that
            # autopilot never submits; off, the MLflow server is one process.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": env.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
            "PYTHONWARNINGS": env.get("PYTHONWARNINGS", "ignore::DeprecationWarning"),
        })
        env.update(self.overrides)
        return env

    def _services(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        """Each service's command and extra environment: the Airflow components, MLflow, Celery workers."""
        values = {"airflow_port": self.airflow_port, "mlflow_port": self.mlflow_port, "bind": self.bind_address,
                  "mlflow_uri": self.settings.mlflow_tracking_uri,
                  "mlflow_artifacts": self.settings.mlflow_artifact_root}
        services: dict[str, tuple[list[str], dict[str, str]]] = {
            name: ([part.format(**values) for part in template], {}) for name, template in SERVICES.items()}
        for k in range(1, self.celery_workers + 1):
            # --skip-serve-logs: workers on one host would fight over the log server's port; they
            # write to the shared log folder the api-server reads.
            services[f"celery-worker-{k}"] = (
                [*PRELOADED_AIRFLOW, "celery", "worker", "--celery-hostname", f"worker{k}@%h",
                 "--concurrency", str(self.worker_concurrency), "--skip-serve-logs"],
                {"AUTOPILOT_CELERY_WORKER": f"worker{k}"})
        return services

    def _admin_secret(self) -> str:
        """The admin password, kept in the simple auth manager's own password file.

        Writing the file before Airflow starts makes the password known to our processes
        (the REST connection above); Airflow keeps a password it finds there.
        """
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"admin": secrets.token_urlsafe(16)}))
            path.chmod(0o600)
        return str(json.loads(path.read_text())["admin"])

    def _secret(self, name: str) -> str:
        """A per-installation secret kept in the home folder (never in code or logs)."""
        path = self.settings.home / f".{name}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # 64 random bytes: the JWT secret signs HS512, whose key PyJWT wants at least that long.
            path.write_text(secrets.token_urlsafe(64))
            path.chmod(0o600)
        return path.read_text().strip()

    def migrate(self) -> None:
        """Create or upgrade the Airflow metadata database (idempotent)."""
        self.settings.ensure_local_dirs()
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self._run(["airflow", "db", "migrate"], log="db-migrate.log")
        # One promotion at a time: the training DAG's promote task runs in this pool.
        self._run(["airflow", "pools", "set", "autopilot_promotion", "1", "autopilot: one promotion at a time"],
                  log="pools.log")

    def _run(self, command: list[str], log: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / log, "w") as out:
            done = subprocess.run(command, env=self.env(), stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            tail = (self.run_dir / log).read_text()[-3000:]
            raise RuntimeError(f"`{' '.join(command)}` failed ({done.returncode}); log {self.run_dir / log}:\n{tail}")

    def start(self) -> list[str]:
        """Start the Airflow services and the MLflow UI, each in its own process group.

        Raises:
            AllAdminsRefused: `simple_auth_manager_all_admins` is on without the dev override.
        """
        self.check_all_admins()
        self.migrate()
        started = []
        for name, (command, extra) in self._services().items():
            pid_file = self.run_dir / f"{name}.pid"
            if pid_file.exists() and _alive(int(pid_file.read_text())):
                continue
            with open(self.run_dir / f"{name}.log", "a") as log:
                process = subprocess.Popen(command, env={**self.env(), **extra}, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # its own group: `down` stops all of it
            pid_file.write_text(str(process.pid))
            started.append(name)
        return started

    def check_all_admins(self) -> str | None:
        """Refuse to start an Airflow where everyone is admin; with the dev override, return a warning.

        Returns:
            None when all-admins is off; the warning to show when it is on and
            `AUTOPILOT_ALLOW_ALL_ADMINS=1` says this is a throwaway development set-up.

        Raises:
            AllAdminsRefused: all-admins is on and the override is not set.
        """
        env = {**os.environ, **self.overrides}  # what `env()` passes on, without creating its secrets first
        source = all_admins_source(env, self.airflow_home)
        if source is None:
            return None
        risk = (f"simple_auth_manager_all_admins is on ({source}): Airflow would make every request, "
                "even one without a token, an admin's (anyone who reaches the API can trigger, pause or delete)")
        if env.get(ALL_ADMINS_OVERRIDE, "").strip().lower() in _TRUE:
            return f"WARNING: {risk}; allowed for development only by {ALL_ADMINS_OVERRIDE}"
        raise AllAdminsRefused(f"refusing to start: {risk}. Fix: set AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="
                               "False (and remove it from airflow.cfg), or, on a throwaway development machine "
                               f"only, set {ALL_ADMINS_OVERRIDE}=1")

    def wait_healthy(self, timeout: float = 120.0) -> bool:
        """Wait until Airflow reports every component healthy and MLflow answers."""
        import urllib.request

        urls = [f"{self.airflow_url}/api/v2/monitor/health", f"{self.mlflow_url}/health"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                bodies = [urllib.request.urlopen(url, timeout=5).read() for url in urls]
                health = json.loads(bodies[0])
                if all(part.get("status") == "healthy" for part in health.values()):
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(2)
        return False

    def admin_password(self) -> str | None:
        """The admin password the simple auth manager generated for this installation."""
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        try:
            return str(json.loads(path.read_text())["admin"])
        except (OSError, ValueError, KeyError):
            return None

    def running(self) -> list[str]:
        """The services of this home that run now (their pid file names a live process)."""
        return [pid_file.stem for pid_file in sorted(self.run_dir.glob("*.pid"))
                if (pid := _pid(pid_file)) is not None and _alive(pid)]

    def api(self) -> AirflowApi:
        """A REST client of this api-server, logged in as admin (the password never leaves the client)."""
        from autopilot.adapters.airflow_api import AirflowApi

        return AirflowApi(self.airflow_url, "admin", self._admin_secret())

    def wait_for_dags(self, api: AirflowApi, dag_ids: list[str], timeout: float = 120.0) -> list[str]:
        """Wait until the DAG processor has parsed every DAG of `dag_ids`; return those still missing."""
        from autopilot.adapters.airflow_api import TransientError

        missing = list(dag_ids)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            try:
                missing = [dag_id for dag_id in missing if api.dag(dag_id) is None]
            except TransientError:  # a busy SQLite api-server: ask again
                pass
            if missing:
                time.sleep(2)
        return missing

    def stop(self) -> list[str]:
        """Stop every service started by `start` (the whole process group of each), all at once.

        Each group gets its grace period side by side rather than one after another: the five
        services stopped one by one took ~20 s at the end of every demo.
        """
        from concurrent.futures import ThreadPoolExecutor

        live = {}
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            pid = _pid(pid_file)
            if pid is not None and _alive(pid):
                live[pid_file.stem] = pid
            pid_file.unlink()
        if live:
            with ThreadPoolExecutor(max_workers=len(live)) as pool:
                list(pool.map(_stop_group, live.values()))
        return list(live)


ALL_ADMINS_OVERRIDE = "AUTOPILOT_ALLOW_ALL_ADMINS"  # =1: a development set-up that may run with all-admins
_ALL_ADMINS_ENV = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"
_TRUE = ("t", "true", "1")  # what Airflow's `conf.getboolean` reads as true


class AllAdminsRefused(RuntimeError):
    """Airflow would start with `simple_auth_manager_all_admins` on, outside an explicit dev set-up."""


def all_admins_source(env: Mapping[str, str], airflow_home: Path) -> str | None:
    """Where `[core] simple_auth_manager_all_admins` is switched on, or None when it is off.

    Read as Airflow reads it, without importing Airflow (this runs before any service starts):
    the environment variable wins over the config file (`AIRFLOW_CONFIG`, else
    `<AIRFLOW_HOME>/airflow.cfg`).
    """
    if _ALL_ADMINS_ENV in env:
        return _ALL_ADMINS_ENV if _truthy(env[_ALL_ADMINS_ENV]) else None
    path = Path(env.get("AIRFLOW_CONFIG") or airflow_home / "airflow.cfg")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path)
    except configparser.Error as exc:  # Airflow could not read it either: say so rather than guess
        raise AllAdminsRefused(f"cannot read {path} to check simple_auth_manager_all_admins: {exc}") from exc
    value = parser.get("core", "simple_auth_manager_all_admins", fallback="False")
    return f"{path} [core] simple_auth_manager_all_admins = {value.strip()}" if _truthy(value) else None


def _truthy(value: str) -> bool:
    return value.split("#")[0].strip().lower() in _TRUE


class EventFile:
    """The listener's JSON lines, read as they are appended (a line not yet complete waits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # the events from now on only
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The events appended since the last read."""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:  # not ours: skip it rather than stop following
                continue
        return events


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text())
    except (OSError, ValueError):  # removed in between, or half written
        return None


def _alive(pid: int) -> bool:
    try:  # reap it if it is our own exited child, or it lingers as a zombie that "exists"
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop_group(pid: int, grace: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            return
        deadline = time.monotonic() + 5  # SIGKILL is not instant: return once the leader is gone
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
