"""Slack alerts on DAG outcomes: an Airflow notifier that sends one message per DAG-run outcome.

`outcome_notifier(kind)` returns an `OutcomeNotifier` to attach as a DAG's `on_success_callback`
and `on_failure_callback` (and, so alerts also work under `dag.test()`, as the tasks'
`on_failure_callback`; see `task_failure_notifier`). When called it:

1. reads the run from the callback context: the DAG run, the task instance Airflow hands over
   (for a failed run: the task that failed last), the exception (task-level callbacks) or the
   run's note (where the gates write their reasons);
2. claims (dag_id, run_id, outcome) in the alert outbox (`autopilot.alerts.ledger`, table
   `alert_outbox` of the state database), storing the generic message at once, and stops when
   the outcome was seen before (sent, in flight, or queued for a retry);
3. builds the message with the pure `autopilot.alerts.outcomes` from the XComs of the DAG's
   tasks (training: the verdict and every gate; monitoring: the action, and drift and
   performance from the window's JSON report); any surprise falls back to the generic message;
   every known secret of the environment is scrubbed from it; it replaces the stored one;
4. posts it (`autopilot.orchestration.slack.Sender`) to the Slack Incoming Webhook of an Airflow
   connection (type `slackwebhook`, the URL in `password`; default id `autopilot_slack`), retrying
   5xx, 429 (never before its Retry-After) and network errors with exponential backoff within a
   total budget (30 s);
5. records the result: `sent`, or `pending` with the time of its next attempt (doubling from
   `retry_seconds`, never before Slack's Retry-After), or `rejected` (Slack refused the message
   itself: logged as dropped);
6. drains the outbox: sends every message that is due, whatever its DAG, model or outcome
   (`autopilot.orchestration.slack.drain_outbox`; the monitoring DAG's `drain_alerts` task does
   the same every run), and logs each message that expired undelivered
   (`alerts.outbox_expiry_minutes`) as dropped, with its key.

It never raises: a Slack or database outage is a logged warning, and the DAG run's outcome
stays what it was. The webhook URL is never logged (the slack_sdk client gets a silent logger,
and every message we log is scrubbed of it).

Delivery semantics (see `autopilot.alerts.ledger`): claim BEFORE sending, each claim a lease, every
change of hands a compare-and-set on the row. So one message per outcome while senders are
alive, even with the task-level and DAG-level callbacks, a task retry, a rerun and two drainers
at once; a sender killed after its claim leaves the message to the first drain after the lease.
A duplicate remains possible when Slack accepted a post but the answer timed out (webhooks have
no idempotency key) or a sender died after posting and before recording it. When the state
database itself is unreachable the message is sent anyway, without the outbox: a lost alert is
worse than a duplicate.

Where it runs. Under the real scheduler, DAG-level callbacks run in the DAG processor, which
answers XCom and connection requests: full messages. Under `dag.test()` they run in the test's
own process, outside any task: they do fire (Airflow's BaseNotifier renders template fields with
`dag.get_template_env()`, missing on the SerializedDAG `dag.test()` passes, which is the known
"DAG-level notifier fails under dag.test()" trap; this notifier has no template fields and skips
the rendering), but XComs cannot be read there, so they send the generic message. Task-level
notifiers run inside the task and read XComs in both cases: `task_failure_notifier` on every
task, and `outcome_notifier(kind, outcome="success")` on the final task(s), give the full
messages under `dag.test()` too; the outbox keeps it to one message per outcome.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseNotifier

from autopilot.alerts import ledger as outbox
from autopilot.alerts.ledger import Delivery, Key
from autopilot.alerts.messages import airflow_base_url, mlflow_ui_url
from autopilot.alerts.outcomes import Run, generic_message, monitoring_message, training_message
from autopilot.faults import checkpoint
from autopilot.orchestration.slack import Sender, describe, drain_outbox, report
from autopilot.redaction import env_secrets, scrub_payload
from autopilot.task_ids import TaskId

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk.definitions.context import Context

    from autopilot.settings import Settings

__all__ = ["DEFAULT_CONN_ID", "DEFAULT_EXPIRY_MINUTES", "KINDS", "OutcomeNotifier", "outcome_notifier",
           "task_failure_notifier"]

DEFAULT_CONN_ID = "autopilot_slack"
DEFAULT_EXPIRY_MINUTES = 24 * 60  # the config's `alerts.outbox_expiry_minutes` default
KINDS = ("training", "monitoring", "generic")
MAX_REPORT_BYTES = 5_000_000  # a window report is a few KB; never read a surprise into memory

log = logging.getLogger(__name__)


@dataclass
class _Callback:
    """What the notifier reads from a callback context: the run, and the task instance that reads XComs."""

    run: Run
    ti: Any | None
    reason: str | None
    xcom_unavailable: bool = False


class OutcomeNotifier(BaseNotifier):
    """Post one Slack message per DAG-run outcome through the alert outbox; never raise (see the module docstring).

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
        expiry_seconds: how long an undelivered message is kept (None: the config's
            `alerts.outbox_expiry_minutes`, else one day).
        retry_seconds, max_retry_seconds: the outbox's wait before the next delivery of a failed
            message: `retry_seconds`, doubling per delivery, at most `max_retry_seconds`.
        drain_seconds, drain_limit: after its own message, the time and number of due outbox
            messages this call may send.
    """

    template_fields = ()  # nothing is rendered (see `render_template_fields`)

    def __init__(self, kind: str = "generic", *, outcome: str | None = None, slack_conn_id: str | None = None,
                 config_path: str | Path | None = None, settings: Settings | None = None,
                 skip_healthy: bool = False, total_seconds: float = 30.0, attempt_seconds: float = 10.0,
                 backoff_seconds: float = 1.0, max_attempts: int = 6, lease_seconds: float = 300.0,
                 expiry_seconds: float | None = None, retry_seconds: float = 60.0,
                 max_retry_seconds: float = 3600.0, drain_seconds: float = 15.0, drain_limit: int = 20) -> None:
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
        self.expiry_seconds = expiry_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.drain_seconds = drain_seconds
        self.drain_limit = drain_limit

    # -- Airflow entry points ------------------------------------------------------------

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Nothing to render; skipping also avoids `dag.get_template_env()`, missing on SerializedDAG."""
        return None

    def __call__(self, *args: Any) -> None:
        """Called by Airflow with the callback context; never raises."""
        try:
            super().__call__(*args)
        except Exception as exc:  # the DAG's outcome must not depend on its alert
            log.warning("Slack alert not sent: %s", describe(exc, ()))

    def notify(self, context: Context) -> None:
        """Build, deduplicate and send the message for the run in `context`, then drain the outbox; never raises."""
        try:
            self._notify(cast("Mapping[str, Any]", context))
        except Exception as exc:
            log.warning("Slack alert not sent: %s", describe(exc, ()))

    def send(self, payload: dict[str, Any]) -> Delivery:
        """Post `payload` to this notifier's webhook with retries within the budget; never raises."""
        return self._sender().send(payload, self._conn_id(_alerts_config(self.config_path)))

    # -- the steps ----------------------------------------------------------------------

    def _notify(self, context: Mapping[str, Any]) -> None:
        call = _callback_of(context)
        if call is None:
            log.warning("Slack alert not sent: the callback context names no DAG run")
            return
        run = call.run
        outcome = self.outcome or _infer_outcome(context, call)
        settings = self.settings or _settings()
        section = _alerts_config(self.config_path)
        conn_id = self._conn_id(section)
        key = Key(run.dag_id, run.run_id, outcome)
        token = uuid.uuid4().hex
        secrets = env_secrets(os.environ)
        # Claim first: a duplicate call (task retry, rerun, the other callback level) stops here,
        # before reading XComs or the report. The generic message is stored with the claim, so a
        # sender that dies before storing the full one still leaves a message to deliver.
        fallback = scrub_payload(generic_message(run, outcome, _airflow_base_url()), secrets)
        try:
            claim: outbox.Claim | None = outbox.claim_new(
                settings, key, kind=self.kind, conn_id=conn_id, payload=fallback, task_id=run.task_id, token=token,
                lease_seconds=self.lease_seconds, expiry_seconds=self._expiry_seconds(section))
        except Exception as exc:  # the state database is down: send without the outbox
            log.warning("Slack alert: alert outbox unavailable (%s); sending %s without deduplication",
                        describe(exc, ()), key)
            claim = None
        failed: set[str] = set()
        if claim is not None and not claim.ours:
            log.info("Slack alert %s already %s: not sent again", key, claim.status)
        elif not self._deliver(settings, call, key, conn_id, token, claim, section, secrets):
            failed.add(conn_id)
        if claim is not None:  # deliver whatever else is due, now that we are here
            drain_outbox(settings, budget_seconds=self.drain_seconds, limit=self.drain_limit,
                         lease_seconds=self.lease_seconds, attempt_seconds=self.attempt_seconds,
                         backoff_seconds=self.backoff_seconds, retry_seconds=self.retry_seconds,
                         max_retry_seconds=self.max_retry_seconds, skip_conns=failed)

    def _deliver(self, settings: Settings, call: _Callback, key: Key, conn_id: str, token: str,
                 claim: outbox.Claim | None, section: Mapping[str, Any], secrets: Sequence[str]) -> bool:
        """Build, store and send our claimed message, and record how it went; False when Slack did not take it."""
        payload = self._build(call, key.outcome, section)
        if payload is None:  # nothing worth a message (a healthy window with `skip_healthy`)
            if claim is not None and claim.id is not None:
                outbox.record(settings, claim.id, token, None, retry_seconds=self.retry_seconds,
                              max_retry_seconds=self.max_retry_seconds)
            return True
        payload = scrub_payload(payload, secrets)
        if claim is not None and claim.id is not None:
            try:
                held = outbox.store_payload(settings, claim.id, token, payload)
            except Exception as exc:  # the state DB went away: send without recording, as when it is down
                log.warning("Slack alert %s: message not stored (%s); sending it anyway", key, describe(exc, ()))
                claim = None
            else:
                if not held:  # our lease ran out and another sender took the message: it sends, we do not
                    log.info("Slack alert %s: taken over by another sender; not sent from here", key)
                    return False
        checkpoint("alerts.send.claimed")  # a sender killed here leaves the message to the next drain
        result = self._sender().send(payload, conn_id)
        report(key, result, result.attempts)
        if claim is not None and claim.id is not None:
            try:
                outbox.record(settings, claim.id, token, result, retry_seconds=self.retry_seconds,
                              max_retry_seconds=self.max_retry_seconds)
            except Exception as exc:  # the claim stays `sending`: the first drain after its lease retries it
                log.warning("Slack alert %s: delivery not recorded (%s)", key, describe(exc, ()))
        return result.sent

    def _build(self, call: _Callback, outcome: str, section: Mapping[str, Any]) -> dict[str, Any] | None:
        """The message for this run and outcome (None: nothing to send); falls back to `dag_outcome`."""
        env = os.environ
        base = _airflow_base_url()
        try:
            if self.kind == "training":
                return training_message(call.run, outcome, base, mlflow_ui_url(env), functools.partial(_xcom, call))
            if self.kind == "monitoring":
                skip_healthy = self.skip_healthy or section.get("skip_healthy") is True
                return _monitoring_message(call, outcome, base, skip_healthy)
        except Exception as exc:  # a surprising XCom must not cost the alert: send the generic one
            log.warning("Slack alert: building the %s message failed (%s); sending the generic one",
                        self.kind, describe(exc, ()))
        return generic_message(call.run, outcome, base)

    def _sender(self) -> Sender:
        return Sender(attempt_seconds=self.attempt_seconds, total_seconds=self.total_seconds,
                      backoff_seconds=self.backoff_seconds, max_attempts=self.max_attempts)

    def _conn_id(self, section: Mapping[str, Any]) -> str:
        if self.slack_conn_id:
            return self.slack_conn_id
        return str(section.get("slack_conn_id") or DEFAULT_CONN_ID)

    def _expiry_seconds(self, section: Mapping[str, Any]) -> float:
        if self.expiry_seconds is not None:
            return float(self.expiry_seconds)
        minutes = section.get("outbox_expiry_minutes")
        if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
            return float(minutes) * 60
        return DEFAULT_EXPIRY_MINUTES * 60.0


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


def _callback_of(context: Mapping[str, Any]) -> _Callback | None:
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
    run = Run(dag_id=str(dag_id), run_id=str(run_id), task_id=getattr(ti, "task_id", None),
              try_number=try_number if isinstance(try_number, int) else None, error=error,
              note=getattr(dag_run, "note", None))
    return _Callback(run=run, ti=ti, reason=context.get("reason"))


def _infer_outcome(context: Mapping[str, Any], call: _Callback) -> str:
    if call.reason:  # DAG-level callbacks: "success", "task_failure", "all_tasks_deadlocked", ...
        return "success" if call.reason == "success" else "failed"
    if context.get("exception") is not None:
        return "failed"
    state = str(getattr(call.ti, "state", "") or "").lower()
    return "failed" if state.endswith(("failed", "upstream_failed")) else "success"


def _xcom(call: _Callback, task_id: str) -> dict[str, Any] | None:
    """A task's return value in this run (None: absent, not a dict, or unreadable)."""
    if call.ti is None or call.xcom_unavailable:
        return None
    try:
        value = call.ti.xcom_pull(task_ids=task_id)
    except Exception as exc:
        # E.g. a DAG-level callback under `dag.test()`: it runs outside any task, with no channel to
        # the API server (ImportError on SUPERVISOR_COMMS). Say so once; the message gets simpler.
        log.info("Slack alert: XComs not readable here (%s); sending a simpler message", type(exc).__name__)
        call.xcom_unavailable = True
        return None
    return dict(value) if isinstance(value, Mapping) else None


def _airflow_base_url() -> str | None:
    """The Airflow UI's base URL: `AIRFLOW__API__BASE_URL`, else Airflow's `[api] base_url`; None when unset."""
    found = airflow_base_url(os.environ)
    if found:
        return found
    try:
        from airflow.sdk.configuration import conf

        value = conf.get("api", "base_url", fallback=None)
    except Exception:
        return None
    text = str(value or "").strip()
    return text or None


# ---------------------------------------------------------------------------- reading


def _monitoring_message(call: _Callback, outcome: str, base: str | None,
                        skip_healthy: bool) -> dict[str, Any] | None:
    """The window's message from the `monitor` task's result and its JSON report (None: healthy, skipped)."""
    result = _xcom(call, TaskId.MONITOR) if outcome == "success" else None
    if not result:
        return generic_message(call.run, outcome, base)
    if skip_healthy and result.get("action") == "none":
        return None
    return monitoring_message(call.run, base, result, _read_report(result.get("report_uri")))


def _read_report(uri: Any) -> dict[str, Any]:
    """The monitoring window's JSON report (drift and performance), best effort: {} when unreadable."""
    import json

    if not uri or not isinstance(uri, str):
        return {}
    try:
        if uri.startswith("s3://"):
            from autopilot.adapters.storage import open_store

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

    Only `slack_conn_id`, `skip_healthy` and `outbox_expiry_minutes` are used; validating the
    config is the tasks' job.
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
    from autopilot.orchestration.connections import airflow_settings

    return airflow_settings()  # the state database of the connection `autopilot_state_db` when it exists
