"""Slack alerts on DAG outcomes: an Airflow notifier that sends one message per DAG-run outcome.

`outcome_notifier(kind)` returns an `OutcomeNotifier` to attach as a DAG's `on_success_callback`
and `on_failure_callback` (and, so alerts also work under `dag.test()`, as the tasks'
`on_failure_callback`; see `task_failure_notifier`). When called it:

1. reads the run from the callback context: the DAG run, the task instance Airflow hands over
   (for a failed run: the task that failed last), the exception (task-level callbacks) or the
   run's note (where the gates write their reasons);
2. claims (dag_id, run_id, outcome) in the `alert_deliveries` table of the state database,
   and stops when it was already sent or another sender holds a fresh claim;
3. builds the message with the pure builders of `autopilot.alerts` from the XComs of the DAG's
   tasks (training: the verdict and every gate; monitoring: the action, and drift and
   performance from the window's JSON report); any surprise falls back to the generic message;
4. posts it to the Slack Incoming Webhook of an Airflow connection (type `slackwebhook`, the
   URL in `password`; default id `autopilot_slack`), retrying 5xx, 429 and network errors
   with exponential backoff within a total budget (30 s by default);
5. records the result. It never raises: a Slack or database outage is a logged warning, and
   the DAG run's outcome stays what it was. The webhook URL is never logged (the slack_sdk
   client gets a silent logger, and every message we log is scrubbed of it).

Delivery semantics: claim BEFORE sending. A sender that crashes between the claim and the
post would lose the alert, so a claim is a lease: a `sending` row older than `lease_seconds`
(5 min, well above the send budget) may be taken over, as may a `failed` one (Slack was down:
a later callback for the same outcome, e.g. the DAG-level one after the task-level one, tries
again). So: at most once while senders are alive, which is what the duplicate paths need (a
task retry, a rerun, the task-level and DAG-level callbacks of the same failure); at least once
after a crash. A duplicate remains possible when Slack accepted a post but the answer timed out
(webhooks have no idempotency key) or a sender crashed after posting. When the state database
itself is unreachable the message is sent anyway: a lost alert is worse than a duplicate.

Where it runs. Under the real scheduler, DAG-level callbacks run in the DAG processor, which
answers XCom and connection requests: full messages. Under `dag.test()` they run in the test's
own process, outside any task: they do fire (Airflow's BaseNotifier renders template fields with
`dag.get_template_env()`, missing on the SerializedDAG `dag.test()` passes, which is the known
"DAG-level notifier fails under dag.test()" trap; this notifier has no template fields and skips
the rendering), but XComs cannot be read there, so they send the generic message. Task-level
notifiers run inside the task and read XComs in both cases: `task_failure_notifier` on every
task, and `outcome_notifier(kind, outcome="success")` on the final task(s), give the full
messages under `dag.test()` too; the ledger keeps it to one message per outcome.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

from autopilot import alerts

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context
    from sqlalchemy import Table
    from sqlalchemy.engine import Engine

    from autopilot.settings import Settings

__all__ = ["DEFAULT_CONN_ID", "KINDS", "Delivery", "OutcomeNotifier", "outcome_notifier", "task_failure_notifier"]

DEFAULT_CONN_ID = "autopilot_slack"
KINDS = ("training", "monitoring", "generic")
TRAINING_GATES = ("quality", "explainability_and_fairness", "infra")
MAX_REPORT_BYTES = 5_000_000  # a window report is a few KB; never read a surprise into memory

log = logging.getLogger(__name__)

# slack_sdk logs the full webhook URL at DEBUG (and in some errors): it gets a logger that is
# outside the logging tree, disabled, and above every level, so no configuration can enable it.
_SDK_LOG = logging.Logger("autopilot.alerts.slack_sdk", logging.CRITICAL + 1)
_SDK_LOG.disabled = True
_SDK_LOG.propagate = False


@dataclass
class _Run:
    """What the notifier reads from a callback context."""

    dag_id: str
    run_id: str
    ti: Any | None
    task_id: str | None
    try_number: int | None
    error: str | None
    note: str | None
    reason: str | None
    xcom_unavailable: bool = False


@dataclass(frozen=True)
class Delivery:
    """How sending one message ended: delivered or not, after how many attempts, and why not (no URL)."""

    sent: bool
    attempts: int
    error: str | None = None


class OutcomeNotifier(BaseNotifier):
    """Post one Slack message per DAG-run outcome; never raise (see the module docstring).

    Args:
        kind: `training`, `monitoring` or `generic` (which message to build).
        outcome: `success` or `failed`; None infers it from the context (a DAG callback's
            `reason`, else a task callback's exception or task state). Pass it explicitly
            for task-level callbacks.
        slack_conn_id: the Airflow connection of the webhook; None reads `alerts.slack_conn_id`
            from `config_path` when the callback runs, else `autopilot_slack`.
        config_path: the model's config file (only its `alerts` section is read, as YAML, when
            the callback runs: nothing is read at DAG parse time).
        settings: where the state database is (default: `Settings.from_env()` when called).
        skip_healthy: send nothing for a monitoring window whose action is `none` (also set by
            the config's `alerts.skip_healthy: true`).
        total_seconds: the time budget for all attempts of one message.
        attempt_seconds: the timeout of one HTTP attempt.
        backoff_seconds: the first retry's delay; it doubles (with ±20% jitter) each retry.
        max_attempts: attempts per message at most.
        lease_seconds: after this long a `sending` claim counts as abandoned (its sender died).
    """

    template_fields = ()  # nothing is rendered (see `render_template_fields`)

    def __init__(self, kind: str = "generic", *, outcome: str | None = None, slack_conn_id: str | None = None,
                 config_path: str | Path | None = None, settings: Settings | None = None,
                 skip_healthy: bool = False, total_seconds: float = 30.0, attempt_seconds: float = 10.0,
                 backoff_seconds: float = 1.0, max_attempts: int = 6, lease_seconds: float = 300.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
        if outcome not in (None, "success", "failed"):
            raise ValueError(f"outcome {outcome!r}: use 'success', 'failed' or None (inferred)")
        super().__init__()
        self.kind = kind
        self.outcome = outcome
        self.slack_conn_id = slack_conn_id
        self.config_path = str(config_path) if config_path is not None else None
        self.settings = settings
        self.skip_healthy = skip_healthy
        self.total_seconds = total_seconds
        self.attempt_seconds = attempt_seconds
        self.backoff_seconds = backoff_seconds
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds

    # -- Airflow entry points ------------------------------------------------------------

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Nothing to render; skipping also avoids `dag.get_template_env()`, missing on SerializedDAG."""
        return None

    def __call__(self, *args: Any) -> None:
        """Called by Airflow with the callback context; never raises."""
        try:
            super().__call__(*args)
        except Exception as exc:  # the DAG's outcome must not depend on its alert
            log.warning("Slack alert not sent: %s", _describe(exc, ()))

    def notify(self, context: Context) -> None:
        """Build, deduplicate and send the message for the run in `context`; never raises."""
        try:
            self._notify(cast("Mapping[str, Any]", context))
        except Exception as exc:
            log.warning("Slack alert not sent: %s", _describe(exc, ()))

    # -- the steps ----------------------------------------------------------------------

    def _notify(self, context: Mapping[str, Any]) -> None:
        run = _run_of(context)
        if run is None:
            log.warning("Slack alert not sent: the callback context names no DAG run")
            return
        outcome = self.outcome or _infer_outcome(context, run)
        settings = self.settings or _settings()
        token = uuid.uuid4().hex
        # Claim first: a duplicate call (task retry, rerun, the other callback level) stops here,
        # before reading XComs or the report.
        claimed = _claim(settings, run, outcome, self.kind, token, self.lease_seconds)
        if claimed is False:
            log.info("Slack alert for %s %s (%s) already sent or being sent: skipped",
                     run.dag_id, run.run_id, outcome)
            return
        payload = self._build(run, outcome)
        if payload is None:  # nothing worth a message (a healthy window with `skip_healthy`)
            if claimed:
                _finish(settings, run, outcome, token, Delivery(False, 0), status="skipped")
            return
        result = self.send(payload)
        if claimed:
            _finish(settings, run, outcome, token, result)
        if result.sent:
            log.info("Slack alert sent for %s %s (%s) after %d attempt(s)", run.dag_id, run.run_id, outcome,
                     result.attempts)
        else:
            log.warning("Slack alert for %s %s (%s) not delivered after %d attempt(s): %s", run.dag_id,
                        run.run_id, outcome, result.attempts, result.error)

    def _build(self, run: _Run, outcome: str) -> dict[str, Any] | None:
        """The message for this run and outcome (None: nothing to send); falls back to `dag_outcome`."""
        env = os.environ
        base = _airflow_base_url()
        try:
            if self.kind == "training":
                return _training_message(run, outcome, base, alerts.mlflow_ui_url(env))
            if self.kind == "monitoring":
                skip_healthy = self.skip_healthy or _alerts_config(self.config_path).get("skip_healthy") is True
                return _monitoring_message(run, outcome, base, skip_healthy)
        except Exception as exc:  # a surprising XCom must not cost the alert: send the generic one
            log.warning("Slack alert: building the %s message failed (%s); sending the generic one",
                        self.kind, _describe(exc, ()))
        return _generic_message(run, outcome, base)

    def send(self, payload: dict[str, Any]) -> Delivery:
        """Post `payload` to the webhook with retries within the budget; never raises."""
        secrets: list[str] = []
        try:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            hook = SlackWebhookHook(slack_webhook_conn_id=self._conn_id(), retry_handlers=[], logger=_SDK_LOG,
                                    timeout=max(1, round(self.attempt_seconds)))
            client = hook.client  # reads the connection and builds the URL (password, or host + password)
            path = urlsplit(client.url).path
            secrets = [client.url, path, path.rsplit("/", 1)[-1]]  # the URL, and its token on its own
        except Exception as exc:
            return Delivery(False, 0, f"connection not usable: {_describe(exc, secrets)}")
        deadline = time.monotonic() + self.total_seconds
        attempt, error = 0, "no attempt made"
        while attempt < self.max_attempts:
            attempt += 1
            remaining = deadline - time.monotonic()
            client.timeout = max(0.1, min(self.attempt_seconds, remaining))  # type: ignore[assignment]
            retry_after: float | None = None
            try:
                response = client.send_dict(payload)
            except Exception as exc:
                error = _describe(exc, secrets)
                if not _transient(exc):
                    return Delivery(False, attempt, error)
            else:
                status = int(response.status_code)
                if status == 200:
                    return Delivery(True, attempt)
                error = f"HTTP {status}: {alerts.clip(alerts.scrub(str(response.body), secrets), 100)}"
                if status != 429 and status < 500:  # 400 invalid_payload, 403, 404 no_service: retrying won't help
                    return Delivery(False, attempt, error)
                retry_after = _retry_after(response.headers)
            delay = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
            delay = max(delay, retry_after or 0.0)
            if attempt >= self.max_attempts or time.monotonic() + delay + 0.1 >= deadline:
                break
            time.sleep(delay)
        return Delivery(False, attempt, error)

    def _conn_id(self) -> str:
        if self.slack_conn_id:
            return self.slack_conn_id
        return str(_alerts_config(self.config_path).get("slack_conn_id") or DEFAULT_CONN_ID)


def outcome_notifier(kind: str, *, outcome: str | None = None, slack_conn_id: str | None = None,
                     config_path: str | Path | None = None, **options: Any) -> OutcomeNotifier:
    """A notifier for a DAG's `on_success_callback` / `on_failure_callback`.

    Args:
        kind: `training`, `monitoring` or `generic`.
        outcome: `success` or `failed` (None: inferred from the callback context).
        slack_conn_id: the webhook's Airflow connection; None: the config's `alerts.slack_conn_id`,
            else `autopilot_slack`.
        config_path: the model's config file.
        options: see `OutcomeNotifier` (`skip_healthy`, `total_seconds`, ...).
    """
    return OutcomeNotifier(kind, outcome=outcome, slack_conn_id=slack_conn_id, config_path=config_path, **options)


def task_failure_notifier(kind: str, *, slack_conn_id: str | None = None, config_path: str | Path | None = None,
                          **options: Any) -> OutcomeNotifier:
    """A notifier for the tasks' `on_failure_callback` (e.g. in `default_args`).

    It fires in the task's own process as soon as a task fails for good (not on a retry), so it
    works under `dag.test()` too; it shares the (dag_id, run_id, "failed") key with the DAG-level
    failure callback, so a run that fails still gets one message, whichever fires first.
    """
    return OutcomeNotifier(kind, outcome="failed", slack_conn_id=slack_conn_id, config_path=config_path, **options)


# ---------------------------------------------------------------------------- the context


def _run_of(context: Mapping[str, Any]) -> _Run | None:
    dag_run = context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or getattr(
        ti, "dag_id", None)
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id") or getattr(ti, "run_id", None)
    if not dag_id or not run_id:
        return None
    exception = context.get("exception")
    error = None
    if exception is not None:
        error = f"{type(exception).__name__}: {exception}" if isinstance(exception, BaseException) else str(exception)
    try_number = getattr(ti, "try_number", None)
    return _Run(dag_id=str(dag_id), run_id=str(run_id), ti=ti, task_id=getattr(ti, "task_id", None),
                try_number=try_number if isinstance(try_number, int) else None, error=error,
                note=getattr(dag_run, "note", None), reason=context.get("reason"))


def _infer_outcome(context: Mapping[str, Any], run: _Run) -> str:
    if run.reason:  # DAG-level callbacks: "success", "task_failure", "all_tasks_deadlocked", ...
        return "success" if run.reason == "success" else "failed"
    if context.get("exception") is not None:
        return "failed"
    state = str(getattr(run.ti, "state", "") or "").lower()
    return "failed" if state.endswith(("failed", "upstream_failed")) else "success"


def _xcom(run: _Run, task_id: str) -> dict[str, Any] | None:
    """A task's return value in this run (None: absent, not a dict, or unreadable)."""
    if run.ti is None or run.xcom_unavailable:
        return None
    try:
        value = run.ti.xcom_pull(task_ids=task_id)
    except Exception as exc:
        # E.g. a DAG-level callback under `dag.test()`: it runs outside any task, with no channel to
        # the API server (ImportError on SUPERVISOR_COMMS). Say so once; the message gets simpler.
        log.info("Slack alert: XComs not readable here (%s); sending a simpler message", type(exc).__name__)
        run.xcom_unavailable = True
        return None
    return dict(value) if isinstance(value, Mapping) else None


def _model(dag_id: str) -> str:
    return dag_id.split("__", 1)[1] if "__" in dag_id else dag_id


def _airflow_base_url() -> str | None:
    found = alerts.airflow_base_url(os.environ)
    if found:
        return found
    try:
        from airflow.sdk.configuration import conf

        value = conf.get("api", "base_url", fallback=None)
    except Exception:
        return None
    text = str(value or "").strip()
    return text or None


def _failure_text(run: _Run) -> str | None:
    """The error summary: the exception (task callbacks), else the run's note (gate reasons)."""
    if run.error:
        return run.error
    if run.note:
        return f"{run.note}"
    return None


# ---------------------------------------------------------------------------- messages


def _training_message(run: _Run, outcome: str, base: str | None, mlflow_ui: str | None) -> dict[str, Any]:
    model = _model(run.dag_id)
    registered = _xcom(run, "train_and_register") or {}
    name, version = registered.get("name") or model, registered.get("version")
    links = {"airflow_url": alerts.airflow_run_url(base, run.dag_id, run.run_id),
             "mlflow_run_url": alerts.mlflow_run_url(mlflow_ui, registered.get("run_id"))}
    gates = alerts.gates_from_results(*(_xcom(run, task) for task in TRAINING_GATES))
    error = _failure_text(run)
    rejected = outcome == "failed" and run.task_id == "decide" and (
        "decision gate FAILED" in (error or "") or any(not g["passed"] for g in gates))
    if outcome == "success" or rejected:
        decided = _xcom(run, "decide") or {}
        promoted = _xcom(run, "promote") or {}
        decision = "reject" if rejected else str(decided.get("decision") or promoted.get("decision") or "promote")
        reasons = list(decided.get("reasons") or [])
        if rejected:
            reasons = _reject_reasons(error, gates)
        return alerts.training_outcome(
            model=model, dag_id=run.dag_id, run_id=run.run_id, decision=decision,
            version=decided.get("version", version), champion_version=decided.get("champion_version"),
            promoted=bool(promoted.get("promoted")) if promoted else (False if rejected else None),
            gates=gates, reasons=reasons, metrics=registered.get("metrics"),
            deployment=_deployment_lines(run), mlflow_version_url=alerts.mlflow_version_url(
                mlflow_ui, name, decided.get("version", version)), **links)
    return alerts.training_failure(
        model=model, dag_id=run.dag_id, run_id=run.run_id, task_id=run.task_id, error=error,
        try_number=run.try_number, version=version,
        log_url=alerts.airflow_task_url(base, run.dag_id, run.run_id, run.task_id) if run.task_id else None,
        **links)


def _reject_reasons(error: str | None, gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """The decision's reasons: from its failure message when there, else the failing gates'."""
    marker = "decision gate FAILED:"
    if error and marker in error:
        return [r.strip() for r in error.split(marker, 1)[1].split("; ") if r.strip()]
    return [f"{g['name']}: {r}" for g in gates if not g["passed"] for r in g["reasons"]] or \
        ["rejected by the decision (see the decision record)"]


def _deployment_lines(run: _Run) -> list[str]:
    lines = []
    deployed = _xcom(run, "deploy")
    if deployed and not deployed.get("skipped"):
        where = deployed.get("endpoint") or deployed.get("target")
        lines.append(f"Deployed v{deployed.get('version')} to {deployed.get('target')}"
                     + (f" ({where})" if where and where != deployed.get("target") else "")
                     + (f": {deployed['action']}" if deployed.get("action") else ""))
    rolled = _xcom(run, "rollout")
    if rolled and not rolled.get("skipped"):
        lines.append("Rollout " + ("passed smoke test and bake" if rolled.get("passed") else "did not pass"))
    elif deployed:
        lines.append("Rollout skipped (no live endpoint)")
    return lines


def _monitoring_message(run: _Run, outcome: str, base: str | None, skip_healthy: bool) -> dict[str, Any] | None:
    result = _xcom(run, "monitor") if outcome == "success" else None
    if not result:
        return _generic_message(run, outcome, base)
    if skip_healthy and result.get("action") == "none":
        return None
    report = _read_report(result.get("report_uri"))
    model = _model(run.dag_id)
    retrain = result.get("trigger_run_id")
    return alerts.monitoring_outcome(
        model=model, dag_id=run.dag_id, run_id=run.run_id, action=str(result.get("action")),
        strategy=result.get("strategy"), reasons=list(result.get("reasons") or []), rows=result.get("rows"),
        version=result.get("version"), window_start=result.get("window_start"),
        window_end=result.get("window_end"), blocked_by=result.get("blocked_by"),
        drift=report.get("drift"), performance=report.get("performance"),
        report_uri=result.get("report_uri"), html_uri=result.get("html_uri"),
        airflow_url=alerts.airflow_run_url(base, run.dag_id, run.run_id),
        retrain_url=alerts.airflow_run_url(base, f"autopilot_training__{model}", str(retrain)) if retrain else None)


def _generic_message(run: _Run, outcome: str, base: str | None) -> dict[str, Any]:
    failed = outcome == "failed"
    return alerts.dag_outcome(
        dag_id=run.dag_id, run_id=run.run_id, outcome=outcome, failed_task=run.task_id if failed else None,
        error=_failure_text(run) if failed else None, try_number=run.try_number if failed else None,
        log_url=alerts.airflow_task_url(base, run.dag_id, run.run_id, run.task_id)
        if failed and run.task_id else None,
        airflow_url=alerts.airflow_run_url(base, run.dag_id, run.run_id))


def _read_report(uri: Any) -> dict[str, Any]:
    """The monitoring window's JSON report (drift and performance), best effort: {} when unreadable."""
    import json

    if not uri or not isinstance(uri, str):
        return {}
    try:
        if uri.startswith("s3://"):
            from autopilot.storage import open_store

            root, key = uri.rsplit("/", 1)
            data = open_store(root).get(key)
        else:
            path = Path(uri)
            if not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
                return {}
            data = path.read_bytes()
        if len(data) > MAX_REPORT_BYTES:
            return {}
        found = json.loads(data)
    except Exception as exc:  # the message still has the action and reasons from the XCom
        log.info("Slack alert: window report not readable: %s", type(exc).__name__)
        return {}
    return found if isinstance(found, dict) else {}


def _alerts_config(config_path: str | None) -> dict[str, Any]:
    """The `alerts` section of a model config, read as plain YAML ({} when absent or unreadable).

    Only `slack_conn_id` and `skip_healthy` are used; validating the config is the tasks' job.
    """
    if not config_path:
        return {}
    try:
        import yaml

        raw = yaml.safe_load(Path(config_path).read_text()) or {}
    except Exception:
        return {}
    section = raw.get("alerts") if isinstance(raw, dict) else None
    return dict(section) if isinstance(section, dict) else {}


def _settings() -> Settings:
    from autopilot.settings import Settings

    return Settings.from_env()


# ---------------------------------------------------------------------------- sending


def _transient(exc: BaseException) -> bool:
    """Network trouble worth another attempt: timeouts, refused or reset connections, truncated answers."""
    import http.client

    return isinstance(exc, OSError | http.client.HTTPException)  # URLError and TimeoutError are OSErrors


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
        return float(value[0] if isinstance(value, list) else value) if value else None
    except (TypeError, ValueError):
        return None


def _describe(exc: BaseException, secrets: Sequence[str]) -> str:
    """An exception as `Type: message`, scrubbed of the webhook URL and anything secret-looking."""
    return alerts.clip(alerts.scrub(f"{type(exc).__name__}: {exc}", secrets), 300)


# ---------------------------------------------------------------------------- the ledger


_TABLE: list[Table] = []  # built on first use: this module is imported when DAG files are parsed


def _table() -> Table:
    if not _TABLE:
        from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, UniqueConstraint

        _TABLE.append(Table(
            "alert_deliveries", MetaData(),
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("dag_id", String(250), nullable=False),
            Column("run_id", String(250), nullable=False),
            Column("outcome", String(32), nullable=False),
            Column("kind", String(32), nullable=False),
            Column("status", String(16), nullable=False),  # sending | sent | failed | skipped
            Column("claim", String(64), nullable=False),  # the current sender's token
            Column("attempts", Integer, nullable=False),  # deliveries tried (one per claim)
            Column("task_id", String(250), nullable=True),
            Column("claimed_at", DateTime(timezone=True), nullable=False),
            Column("sent_at", DateTime(timezone=True), nullable=True),
            Column("error", String(512), nullable=True),
            UniqueConstraint("dag_id", "run_id", "outcome", name="uq_alert_deliveries_run_outcome"),
        ))
    return _TABLE[0]


def _engine(settings: Settings) -> Engine:
    from autopilot.promotion import state_engine

    return state_engine(settings, _table())


def _claim(settings: Settings, run: _Run, outcome: str, kind: str, token: str, lease: float) -> bool | None:
    """Claim the delivery: True (ours to send), False (sent, or another sender holds it), None (ledger down)."""
    from sqlalchemy import insert, select, update
    from sqlalchemy.exc import IntegrityError

    table = _table()
    now = datetime.now(UTC)
    key = (table.c.dag_id == run.dag_id) & (table.c.run_id == run.run_id) & (table.c.outcome == outcome)
    try:
        engine = _engine(settings)
        try:
            with engine.begin() as conn:
                conn.execute(insert(table).values(dag_id=run.dag_id, run_id=run.run_id, outcome=outcome, kind=kind,
                                                  status="sending", claim=token, attempts=1, task_id=run.task_id,
                                                  claimed_at=now))
            return True
        except IntegrityError:
            pass  # claimed before: sent, in flight, failed or abandoned
        with engine.begin() as conn:
            row = conn.execute(select(table.c.id, table.c.status, table.c.claim, table.c.claimed_at)
                               .where(key)).first()
            if row is None:  # deleted by hand in between: treat as free next time
                return False
            claimed_at = row.claimed_at if row.claimed_at.tzinfo else row.claimed_at.replace(tzinfo=UTC)
            if row.status in ("sent", "skipped") or (
                    row.status == "sending" and now - claimed_at < timedelta(seconds=lease)):
                return False
            # A failed delivery, or a sender that died mid-send: take it over (compare-and-set on the claim).
            taken = conn.execute(update(table).where((table.c.id == row.id) & (table.c.claim == row.claim))
                                 .values(status="sending", claim=token, claimed_at=now, task_id=run.task_id,
                                         attempts=table.c.attempts + 1))
            return bool(taken.rowcount == 1)
    except Exception as exc:  # the state database is down: send without deduplication
        log.warning("Slack alert: delivery ledger unavailable (%s); sending without deduplication",
                    _describe(exc, ()))
        return None


def _finish(settings: Settings, run: _Run, outcome: str, token: str, result: Delivery,
            status: str | None = None) -> None:
    """Record how the claimed delivery ended: `sent`, `failed` (a later call may retry) or `skipped`."""
    from sqlalchemy import update

    table = _table()
    try:
        with _engine(settings).begin() as conn:
            conn.execute(update(table).where((table.c.dag_id == run.dag_id) & (table.c.run_id == run.run_id)
                                             & (table.c.outcome == outcome) & (table.c.claim == token))
                         .values(status=status or ("sent" if result.sent else "failed"),
                                 sent_at=datetime.now(UTC) if result.sent else None,
                                 error=alerts.clip(result.error, 500) if result.error else None))
    except Exception as exc:  # the claim stays `sending`; the lease lets a later callback retry
        log.warning("Slack alert: delivery not recorded (%s)", _describe(exc, ()))
