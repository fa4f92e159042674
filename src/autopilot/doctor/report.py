"""`autopilot doctor`'s run and report: probe, judge, redact, render; exit 1 when any check fails.

`run_checks` gathers the facts (Airflow's through the `airflow_facts` function it is given, the
rest through `Probes`), runs every judgment of `autopilot.doctor.checks`, and replaces every
secret it knows (serving tokens, URL passwords, the AWS secret key, the signing key, the
environment's and its connections' secrets) in every detail and fix (`autopilot.redaction.redact`),
e.g. inside a driver's error message. `Report` renders the result as a table or JSON; its exit
code is 1 when any check fails (warnings do not fail), else 0. `run_cli` is the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from autopilot.doctor.checks import (
    SIGNING_CONN,
    AirflowFacts,
    Check,
    check_auth_manager,
    check_celery,
    check_connection,
    check_database,
    check_executor,
    check_metadata_db,
    check_mlflow,
    check_signing,
    check_store,
    check_token,
    executor_names,
    load_configs,
    needed_connections,
    resolve_mode,
)
from autopilot.doctor.probes import Probes, error_line
from autopilot.redaction import env_secrets, redact, url_secrets
from autopilot.settings import CONNECTIONS, connection_id

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = ["Report", "run_checks", "run_cli", "stdout_to_stderr"]


@dataclass(frozen=True)
class Report:
    """Every check of one doctor run."""

    mode: str
    checks: tuple[Check, ...]

    @property
    def exit_code(self) -> int:
        """1 when any check failed, else 0 (warnings do not fail)."""
        return 1 if any(c.status == "fail" for c in self.checks) else 0

    def counts(self) -> dict[str, int]:
        """How many checks ended in each status."""
        return {s: sum(c.status == s for c in self.checks) for s in ("ok", "warn", "fail")}

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: mode, exit code, counts, and the checks in order."""
        return {"mode": self.mode, "exit_code": self.exit_code, "summary": self.counts(),
                "checks": [asdict(c) for c in self.checks]}

    def render_json(self) -> str:
        """The report as JSON."""
        return json.dumps(self.as_dict(), indent=2)

    def render_text(self) -> str:
        """The report as a table: one line per check, its fix under each problem."""
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"autopilot doctor (mode: {self.mode})", "", f"{'STATUS':6s}  {'CHECK':{width}s}  DETAIL"]
        for check in self.checks:
            status = check.status.upper() if check.status == "fail" else check.status
            lines.append(f"{status:6s}  {check.name:{width}s}  {check.detail}")
            if check.fix and check.status != "ok":
                lines.append(f"{'':6s}  {'':{width}s}  fix: {check.fix}")
        counts = self.counts()
        lines += ["", f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the run


def run_checks(settings: Settings, airflow_facts: Callable[[Sequence[str]], AirflowFacts], *,
               mode: str | None = None, environ: Mapping[str, str] | None = None,
               probes: Probes | None = None) -> Report:
    """Run every check and return the report (never raises for what it finds).

    Args:
        settings: where autopilot's state lives (from the environment).
        airflow_facts: gathers Airflow's facts for the given connection ids
            (`autopilot.orchestration.airflow_facts.gather_airflow_facts`; a fake in tests).
        mode: `embedded` or `production`; None: embedded when Airflow's DB is SQLite.
        environ: the environment the serving tokens are read from (default: this process's).
        probes: the I/O (default: the real probes).
    """
    env = os.environ if environ is None else environ
    probes = probes or Probes()
    configs, config_check = load_configs(settings.config_dir)
    needs = needed_connections(configs)
    stores = [conn_id for setting in CONNECTIONS if (conn_id := connection_id(setting, env))]
    try:
        facts = airflow_facts([*(n.conn_id for n in needs), SIGNING_CONN, *stores])
    except Exception as exc:  # the doctor reports; it does not crash on the thing it examines
        facts = AirflowFacts(config_error=error_line(exc))
    chosen = resolve_mode(mode, facts)
    checks = _airflow_checks(facts, chosen, probes) + [config_check]
    checks += [check_connection(n, facts.connections.get(n.conn_id)) for n in needs]
    checks += _with_sources(_store_checks(settings, chosen, probes), settings, facts, env)
    checks += _token_checks(configs, env)
    checks.append(check_signing(settings.signing_key, facts.connections.get(SIGNING_CONN), chosen))
    secrets = _known_secrets(settings, facts, configs, env)
    return Report(chosen, tuple(_redacted(c, secrets) for c in checks))


def _airflow_checks(facts: AirflowFacts, mode: str, probes: Probes) -> list[Check]:
    if facts.config_error:
        return [Check("airflow_config", "fail", f"Airflow's configuration cannot be read: {facts.config_error}",
                      "run `airflow config list` for the whole error; fix airflow.cfg or the AIRFLOW__* variables")]
    celery = "CeleryExecutor" in executor_names(facts.executor)
    broker = probes.broker(facts.broker_url) if celery and facts.broker_url else None
    backend = probes.broker(facts.result_backend) if celery and facts.result_backend else None
    return [check_executor(facts, mode), *check_celery(facts, broker, backend), check_metadata_db(facts, mode),
            check_auth_manager(facts, mode)]


def _store_checks(settings: Settings, mode: str, probes: Probes) -> list[Check]:
    checks = [check_mlflow(settings.mlflow_tracking_uri, probes.mlflow(settings.mlflow_tracking_uri), mode),
              check_store("artifact_store", "AUTOPILOT_ARTIFACT_ROOT", settings.artifact_root,
                          probes.store(settings.artifact_root), mode),
              check_store("mlflow_artifact_root", "AUTOPILOT_MLFLOW_ARTIFACT_ROOT", settings.mlflow_artifact_root,
                          probes.store(settings.mlflow_artifact_root), mode)]
    for name, env, url in (("optuna_storage", "AUTOPILOT_OPTUNA_STORAGE", settings.optuna_storage),
                           ("state_db", "AUTOPILOT_STATE_DB", settings.state_db),
                           ("inference_db", "AUTOPILOT_INFERENCE_DB", settings.inference_db)):
        checks.append(check_database(name, env, url, probes.sql(url), mode))
    return checks


# doctor check -> the setting it examines
CHECKED_SETTING = {"mlflow_tracking": "mlflow_tracking_uri", "artifact_store": "artifact_root",
                   "mlflow_artifact_root": "mlflow_artifact_root", "optuna_storage": "optuna_storage",
                   "state_db": "state_db", "inference_db": "inference_db"}


def _with_sources(checks: list[Check], settings: Settings, facts: AirflowFacts, env: Mapping[str, str]) -> list[Check]:
    """Each store check says where its setting came from, and when Airflow tasks take it from a connection."""
    noted = []
    for check in checks:
        setting = CHECKED_SETTING.get(check.name)
        if setting is None:
            noted.append(check)
            continue
        note = f"from {settings.sources.get(setting, 'the caller')}"
        conn_setting = "object_store" if setting == "artifact_root" else setting
        conn_id = connection_id(conn_setting, env) if conn_setting in CONNECTIONS else None
        found = facts.connections.get(conn_id) if conn_id else None
        if found is not None and found.found:
            what = "credentials" if conn_setting == "object_store" else "value"
            note += f"; Airflow tasks take its {what} from the connection {conn_id} (not probed here)"
        noted.append(replace(check, detail=f"{check.detail} ({note})"))
    return noted


def _token_checks(configs: Sequence[LoadedConfig], environ: Mapping[str, str]) -> list[Check]:
    by_env: dict[str, list[str]] = {}
    for cfg in configs:
        by_env.setdefault(cfg.deployment.serving.token_env, []).append(cfg.name)
    return [check_token(env, models, environ) for env, models in by_env.items()]


def _known_secrets(settings: Settings, facts: AirflowFacts, configs: Sequence[LoadedConfig],
                   environ: Mapping[str, str]) -> list[str]:
    """Values that must never appear in the output, wherever an error message might carry them."""
    secrets = [environ.get(cfg.deployment.serving.token_env, "") for cfg in configs]
    secrets.append(environ.get("AWS_SECRET_ACCESS_KEY", ""))
    secrets.append(settings.signing_key or "")
    secrets += env_secrets(environ)
    for url in (settings.mlflow_tracking_uri, settings.optuna_storage, settings.state_db, settings.inference_db,
                facts.sql_alchemy_conn, facts.broker_url, facts.result_backend):
        secrets += url_secrets(url)
    return [s for s in secrets if s]


def _redacted(check: Check, secrets: Sequence[str]) -> Check:
    return replace(check, detail=redact(check.detail, secrets), fix=redact(check.fix, secrets))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (file descriptor 1) to stderr meanwhile.

    Airflow and MLflow log to stdout from wherever they are imported; the report must be the only
    thing on stdout (`--json` is read by programs). Redirecting the descriptor catches every
    writer, including loggers that kept a reference to the original stream.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):  # and the Python stream, should it not be fd 1
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_cli(settings: Settings, airflow_facts: Callable[[Sequence[str]], AirflowFacts], *,
            mode: str | None = None, as_json: bool = False) -> int:
    """Run the doctor, print the report (text table or JSON) on stdout, return the exit code."""
    with stdout_to_stderr():
        report = run_checks(settings, airflow_facts, mode=mode)
    print(report.render_json() if as_json else report.render_text(), flush=True)
    return report.exit_code
