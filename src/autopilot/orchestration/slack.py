"""Slack delivery: post a built message to an Incoming Webhook, and drain the alert outbox.

`Sender` posts one message to the webhook of an Airflow connection (type `slackwebhook`, the URL
in `password`) through the Slack provider's `SlackWebhookHook`: 5xx, 429 (never before its
Retry-After) and network errors are retried with exponential backoff within a total budget;
Slack refusing the message itself (400) is final. `drain_outbox` sends every message of the alert
outbox (`autopilot.alerts.ledger`) that is due, whatever its DAG, model or outcome, and logs each
one that expired undelivered as dropped.

Neither raises: a Slack or database outage is a `Delivery` that says so, or a logged warning.
The webhook URL is never logged: the slack_sdk client gets a silent logger, and every error we
keep or log is scrubbed of the URL, its token and the environment's secrets.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autopilot.alerts import ledger as outbox
from autopilot.alerts.ledger import Delivery, Key
from autopilot.alerts.messages import clip
from autopilot.faults import checkpoint
from autopilot.redaction import env_secrets, scrub, scrub_payload

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["Sender", "describe", "drain_outbox", "report"]

# The notifier's logger: every line about an alert's fate goes to one place.
log = logging.getLogger("autopilot.orchestration.notifier")

# slack_sdk logs the full webhook URL at DEBUG (and in some errors): it gets a logger that is
# outside the logging tree, disabled, and above every level, so no configuration can enable it.
_SDK_LOG = logging.Logger("autopilot.orchestration.slack.slack_sdk", logging.CRITICAL + 1)
_SDK_LOG.disabled = True
_SDK_LOG.propagate = False


@dataclass(frozen=True)
class Sender:
    """Posts one message to a webhook connection with retries within a budget; never raises."""

    attempt_seconds: float
    total_seconds: float
    backoff_seconds: float
    max_attempts: int

    def send(self, payload: dict[str, Any], conn_id: str) -> Delivery:
        """Post `payload` to the webhook of `conn_id`: 5xx, 429 and network errors are retried, others not.

        A 429's Retry-After is honoured: the next attempt waits at least that long, and when that
        is past the budget the delivery ends with `retry_after` set, for the outbox to wait too.
        """
        secrets: list[str] = []
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, retry_handlers=[], logger=_SDK_LOG,
                                    timeout=max(1, round(self.attempt_seconds)))
            client = hook.client  # reads the connection and builds the URL (password, or host + password)
            path = urlsplit(client.url).path
            secrets = [client.url, path, path.rsplit("/", 1)[-1]]  # the URL, and its token on its own
        except AirflowNotFoundException:  # what `autopilot doctor` calls "alerts are off"
            return Delivery(False, 0, f"connection {conn_id!r} is not defined: Slack alerts are off",
                            unconfigured=True)
        except Exception as exc:  # e.g. a secrets backend that does not answer: kept for later
            return Delivery(False, 0, f"connection {conn_id!r} not usable: {describe(exc, secrets)}")
        return self._post(client, scrub_payload(payload, secrets), secrets)

    def _post(self, client: Any, payload: dict[str, Any], secrets: Sequence[str]) -> Delivery:
        """The attempts: each within what is left of the budget, backing off (and honouring Retry-After)."""
        deadline = time.monotonic() + self.total_seconds
        attempt, error, retry_after = 0, "no attempt made", None
        while attempt < self.max_attempts:
            attempt += 1
            client.timeout = max(0.1, min(self.attempt_seconds, deadline - time.monotonic()))
            retry_after = None
            try:
                response = client.send_dict(payload)
            except Exception as exc:
                error = describe(exc, secrets)
                if not _transient(exc):
                    return Delivery(False, attempt, error)
            else:
                status = int(response.status_code)
                if status == 200:
                    return Delivery(True, attempt)
                error = f"HTTP {status}: {clip(scrub(str(response.body), secrets), 100)}"
                if status != 429 and status < 500:  # 400 invalid_payload, 403, 404 no_service: retrying now won't help
                    return Delivery(False, attempt, error, permanent=status == 400)
                retry_after = _retry_after(response.headers)
            delay = max(self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.8, 1.2), retry_after or 0.0)
            if attempt >= self.max_attempts or time.monotonic() + delay + 0.1 >= deadline:
                break
            time.sleep(delay)
        return Delivery(False, attempt, error, retry_after=retry_after)


def _transient(exc: BaseException) -> bool:
    """Network trouble worth another attempt: timeouts, refused or reset connections, truncated answers."""
    import http.client

    return isinstance(exc, OSError | http.client.HTTPException)  # URLError and TimeoutError are OSErrors


def _retry_after(headers: Any) -> float | None:
    """Slack's Retry-After (seconds), when the answer has a usable one."""
    try:
        value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
        seconds = float(value[0] if isinstance(value, list) else value) if value else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def describe(exc: BaseException, secrets: Sequence[str]) -> str:
    """An exception as `Type: message`, scrubbed of the webhook URL and anything secret-looking."""
    return clip(scrub(f"{type(exc).__name__}: {exc}", [*secrets, *env_secrets(os.environ)]), 300)


def report(key: Key, result: Delivery, deliveries: int, redelivery: bool = False) -> None:
    """Log how a delivery went, with the message's key (never the URL: `error` is scrubbed)."""
    how = f"delivery {deliveries}" if redelivery else f"{result.attempts} attempt(s)"
    if result.sent:
        log.info("Slack alert %s sent (%s)", key, how)
    elif result.unconfigured:
        log.warning("Slack alert %s not sent: %s", key, result.error)
    elif result.permanent:
        log.warning("Slack alert %s dropped: Slack refused the message (%s)", key, result.error)
    else:
        log.warning("Slack alert %s not delivered (%s): %s; kept in the alert outbox for a later attempt",
                    key, how, result.error)


# ---------------------------------------------------------------------------- the outbox drain


def drain_outbox(settings: Settings | None = None, *, budget_seconds: float = 60.0, limit: int = 50,
                 lease_seconds: float = 300.0, attempt_seconds: float = 10.0, backoff_seconds: float = 1.0,
                 retry_seconds: float = 60.0, max_retry_seconds: float = 3600.0,
                 skip_conns: Iterable[str] = (), now: datetime | None = None) -> dict[str, int]:
    """Deliver the alert outbox's due messages, each exactly once, and drop the expired ones; never raises.

    Every message whose next attempt time has come (or whose sender died: its lease ran out) is
    claimed by compare-and-set, sent to its own connection (a few attempts within the budget),
    and recorded; after a failure, the other messages of that connection wait for the next drain.
    A message past its expiry is marked `expired` and logged as dropped, with its key.

    Args:
        settings: where the state database is (default: from the environment).
        budget_seconds: time for this drain; limit: messages sent at most.
        lease_seconds: how long a claim holds before another drainer may take the message.
        attempt_seconds, backoff_seconds: one HTTP attempt's timeout; the first in-call retry's delay.
        retry_seconds, max_retry_seconds: the next delivery of a message that fails again.
        skip_conns: connections not to try (they just failed).
        now: the time that decides what is due and what expired (default: the clock); a later
            time sends what is waiting for its retry delay now (an operator's "send it now").

    Returns:
        how many messages were `sent`, `failed` (kept for later), `rejected` (by Slack), `skipped`
        (their connection is not defined: alerts off) and `expired`.
    """
    summary = {"sent": 0, "failed": 0, "rejected": 0, "skipped": 0, "expired": 0}
    deadline = time.monotonic() + budget_seconds
    skip = set(skip_conns)
    token = uuid.uuid4().hex
    try:
        settings = settings or _settings()
        for dropped in outbox.expire_due(settings, now):
            log.warning("Slack alert %s dropped: not delivered before it expired (%d deliveries tried; last error: %s)",
                        dropped.key, dropped.attempts, dropped.error or "none")
            summary["expired"] += 1
        for _ in range(limit):
            remaining = deadline - time.monotonic()
            if remaining <= 0.5:
                break
            message = outbox.claim_due(settings, token, lease_seconds, skip_conns=skip, now=now)
            if message is None:
                break
            checkpoint("alerts.drain.claimed")  # a drainer killed here leaves the message to the next one
            sender = Sender(attempt_seconds=min(attempt_seconds, remaining), total_seconds=min(remaining, 30.0),
                            backoff_seconds=backoff_seconds, max_attempts=3)
            result = sender.send(message.payload, message.conn_id)
            status = outbox.record(settings, message.id, token, result, retry_seconds=retry_seconds,
                                   max_retry_seconds=max_retry_seconds, now=now)
            report(message.key, result, message.attempts, redelivery=True)
            if status in ("sent", "rejected", "skipped"):
                summary[status] += 1
            else:  # pending again (or, past its lease, another drainer's now)
                summary["failed"] += 1
                skip.add(message.conn_id)  # Slack or this connection is in trouble: the rest wait
    except Exception as exc:  # the state database is down: the messages stay where they are
        log.warning("Slack alert outbox: drain stopped (%s)", describe(exc, ()))
    return summary


def _settings() -> Settings:
    from autopilot.orchestration.connections import airflow_settings

    return airflow_settings()  # the state database of the connection `autopilot_state_db` when it exists
