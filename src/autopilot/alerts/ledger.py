"""The alert outbox: every outcome message in the state database until delivered, rejected or expired.

One row per DAG-run outcome, keyed `dag_id/run_id/outcome` (table `alert_outbox`, defined in
`autopilot.adapters.state_db.tables`), holding the message itself (its Block Kit payload, scrubbed
when built), the Airflow connection it goes to, how many deliveries were tried, when the next may
be, and when it expires. No Airflow, no HTTP: the sender is the caller's
(`autopilot.orchestration.notifier`).

The life of a row (`status`):

    sending ──► sent                     delivered (Slack answered 200)
       │  ├───► skipped                  nothing worth a message (a healthy window, `skip_healthy`),
       │  │                              or no such connection (alerts are off)
       │  ├───► rejected                 Slack refused the message itself (400): logged as dropped
       │  └───► pending ──(due)──► sending ...   not delivered: retried from `next_attempt_at`
       └── lease over (the sender died) ──► sending (taken over by the next drainer)
    pending or abandoned, past `expires_at` ──► expired (logged as dropped, with its key)

Exactly once. A row changes hands only by compare-and-set on its `claim` token
(`UPDATE ... WHERE id = :id AND claim = :seen AND status = :seen_status`): of two drainers that
saw the same due row, one updates it and the other updates nothing. On PostgreSQL the second
UPDATE waits for the first's row lock and re-checks its WHERE clause on the committed row (READ
COMMITTED); on SQLite every transaction of the state database begins IMMEDIATE, so they run one
after the other. A claim is a lease (`lease_until`): a sender that dies after claiming leaves the
row to the first drainer after the lease, so the message is sent once. A sender that dies after
Slack accepted the post but before recording it is the one duplicate left (webhooks have no
idempotency key), as is a post Slack accepted while its answer timed out.

Clocks: times are the writer's UTC clock; hosts that share a state database should run NTP
(a skew shortens or lengthens a lease by the skew).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

    from autopilot.settings import Settings

__all__ = ["Claim", "Delivery", "Dropped", "Key", "Message", "claim_due", "claim_new", "counts", "expire_due",
           "record", "store_payload"]

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
MAX_RETRY_AFTER = 86_400.0  # a Retry-After past a day is taken as a day (a garbled header must not park a message)


@dataclass(frozen=True)
class Key:
    """Which message: one per DAG-run outcome (`success` or `failed`)."""

    dag_id: str
    run_id: str
    outcome: str

    def __str__(self) -> str:
        return f"{self.dag_id}/{self.run_id}/{self.outcome}"


@dataclass(frozen=True)
class Delivery:
    """How sending one message ended (the error never holds the webhook URL).

    Attributes:
        sent: Slack answered 200.
        attempts: HTTP attempts made.
        error: why not, when not sent.
        retry_after: seconds Slack asked us to wait (429's Retry-After): no attempt before then.
        permanent: Slack refused the message itself (400): sending it again cannot help.
        unconfigured: the webhook's connection is not defined anywhere: alerts are off, nothing is kept.
    """

    sent: bool
    attempts: int
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False
    unconfigured: bool = False


@dataclass(frozen=True)
class Claim:
    """The answer to claiming a new message: `ours` to build and send, else its current status."""

    ours: bool
    status: str
    id: int | None = None


@dataclass(frozen=True)
class Dropped:
    """A message that expired undelivered: its key, the deliveries tried, and the last error."""

    key: Key
    attempts: int
    error: str | None


@dataclass(frozen=True)
class Message:
    """A row claimed for delivery by a drainer."""

    id: int
    key: Key
    kind: str
    conn_id: str
    payload: dict[str, Any]
    claim: str
    attempts: int


# ---------------------------------------------------------------------------- the table


def _table() -> Table:
    """The `alert_outbox` table; imported on first use: this module is imported when DAG files are parsed."""
    from autopilot.adapters.state_db.tables import ALERT_OUTBOX

    return ALERT_OUTBOX


def _engine(settings: Settings) -> Engine:
    """The state database's engine (its schema, the outbox included, is current once opened)."""
    from autopilot.adapters import state_db

    return state_db.engine(settings)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored as UTC)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- a new message


def claim_new(settings: Settings, key: Key, *, kind: str, conn_id: str, payload: dict[str, Any],
              task_id: str | None, token: str, lease_seconds: float, expiry_seconds: float,
              now: datetime | None = None) -> Claim:
    """Claim the message for `key` before building it: `ours` when this caller should send it.

    The row is stored with `payload` at once (a message that can be sent without the caller, e.g.
    the generic one), so a sender that dies before it stores the full message loses nothing.
    A key seen before is not ours, unless its sender died (a `sending` row past its lease): then
    this caller takes it over. A `pending` key (its delivery failed) is left to the drain, which
    honours its next attempt time. Raises when the state database is unusable.
    """
    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError

    rows = _table()
    at = _now(now)
    values = {"dag_id": key.dag_id, "run_id": key.run_id, "outcome": key.outcome, "kind": kind, "conn_id": conn_id,
              "status": "sending", "claim": token, "lease_until": at + timedelta(seconds=lease_seconds),
              "attempts": 1, "payload": json.dumps(payload), "task_id": task_id, "created_at": at,
              "expires_at": at + timedelta(seconds=expiry_seconds)}
    db = _engine(settings)
    try:
        with db.begin() as conn:
            inserted = conn.execute(insert(rows).values(**values)).inserted_primary_key
        return Claim(True, "sending", int(inserted[0]) if inserted else None)
    except IntegrityError:
        pass  # seen before: sent, in flight, queued, or abandoned by a dead sender
    match = (rows.c.dag_id == key.dag_id) & (rows.c.run_id == key.run_id) & (rows.c.outcome == key.outcome)
    with db.begin() as conn:
        row = conn.execute(select(rows.c.id, rows.c.status, rows.c.claim, rows.c.lease_until).where(match)).first()
        if row is None:  # deleted by hand in between
            return Claim(False, "deleted")
        lease = _aware(row.lease_until)
        abandoned = row.status == "sending" and lease is not None and lease <= at
        if not abandoned:
            return Claim(False, "in flight" if row.status == "sending" else str(row.status), int(row.id))
        taken = _take(conn, int(row.id), str(row.claim), "sending", token, at, lease_seconds, task_id=task_id)
        return Claim(taken, "sending" if taken else "in flight", int(row.id))


def store_payload(settings: Settings, message_id: int, token: str, payload: dict[str, Any]) -> bool:
    """Replace the stored message by the full one, if the claim is still ours."""
    from sqlalchemy import update

    rows = _table()
    with _engine(settings).begin() as conn:
        done = conn.execute(update(rows).where((rows.c.id == message_id) & (rows.c.claim == token))
                            .values(payload=json.dumps(payload)))
    return bool(done.rowcount == 1)


def _take(conn: Connection, message_id: int, seen_claim: str, seen_status: str, token: str, at: datetime,
          lease_seconds: float, task_id: str | None = None) -> bool:
    """Compare-and-set: the row becomes ours (`sending`, a new lease) only if nobody changed it since we read it."""
    from sqlalchemy import update

    rows = _table()
    values: dict[str, Any] = {"status": "sending", "claim": token, "lease_until": at + timedelta(seconds=lease_seconds),
                              "attempts": rows.c.attempts + 1}
    if task_id is not None:
        values["task_id"] = task_id
    done = conn.execute(update(rows).where((rows.c.id == message_id) & (rows.c.claim == seen_claim)
                                           & (rows.c.status == seen_status)).values(**values))
    return bool(done.rowcount == 1)


# ---------------------------------------------------------------------------- results


def retry_delay(attempts: int, retry_seconds: float, max_retry_seconds: float) -> float:
    """The wait before the next delivery: doubling from `retry_seconds` per attempt, at most `max_retry_seconds`."""
    return float(min(max_retry_seconds, retry_seconds * 2 ** min(max(attempts - 1, 0), 40)))  # 2**n: no overflow


def record(settings: Settings, message_id: int, token: str, result: Delivery | None, *, retry_seconds: float,
           max_retry_seconds: float, now: datetime | None = None) -> str | None:
    """Record how a claimed delivery ended; the row's new status (None: the claim was no longer ours).

    `result` None means nothing was worth sending, and an undefined connection means alerts are
    off: both `skipped`. A failed delivery becomes `pending` with its next attempt after the retry
    delay and never before Slack's Retry-After; a message Slack refused (400) becomes `rejected`.
    """
    from sqlalchemy import select, update

    rows = _table()
    at = _now(now)
    values: dict[str, Any]
    if result is None:
        values = {"status": "skipped"}
    elif result.unconfigured:
        values = {"status": "skipped", "error": (result.error or "")[:MAX_ERROR_CHARS]}
    elif result.sent:
        values = {"status": "sent", "sent_at": at, "error": None, "next_attempt_at": None}
    elif result.permanent:
        values = {"status": "rejected", "error": (result.error or "")[:MAX_ERROR_CHARS]}
    else:
        values = {"status": "pending", "error": (result.error or "not delivered")[:MAX_ERROR_CHARS]}
    with _engine(settings).begin() as conn:
        if values["status"] == "pending":
            attempts = conn.execute(select(rows.c.attempts).where(rows.c.id == message_id)).scalar() or 1
            asked = min(result.retry_after or 0.0, MAX_RETRY_AFTER) if result is not None else 0.0
            wait = max(retry_delay(int(attempts), retry_seconds, max_retry_seconds), asked)
            values["next_attempt_at"] = at + timedelta(seconds=wait)
        done = conn.execute(update(rows).where((rows.c.id == message_id) & (rows.c.claim == token)).values(**values))
    return str(values["status"]) if done.rowcount == 1 else None


# ---------------------------------------------------------------------------- the drain


def claim_due(settings: Settings, token: str, lease_seconds: float, *, skip_conns: Iterable[str] = (),
              now: datetime | None = None, scan: int = 20) -> Message | None:
    """Claim the oldest message due for delivery (pending and due, or abandoned by a dead sender).

    Rows for the connections in `skip_conns` (one that just failed in this drain) are left alone.
    None when nothing is due (or every due row was taken by another drainer meanwhile).
    """
    from sqlalchemy import and_, or_, select

    rows = _table()
    at = _now(now)
    skip = sorted(set(skip_conns))
    due = or_(and_(rows.c.status == "pending", rows.c.next_attempt_at <= at),
              and_(rows.c.status == "sending", rows.c.lease_until <= at))
    query = select(rows.c.id, rows.c.claim, rows.c.status).where(due & (rows.c.expires_at > at))
    if skip:
        query = query.where(rows.c.conn_id.not_in(skip))
    with _engine(settings).begin() as conn:
        for row in conn.execute(query.order_by(rows.c.created_at, rows.c.id).limit(scan)).all():
            if _take(conn, int(row.id), str(row.claim), str(row.status), token, at, lease_seconds):
                got = conn.execute(select(rows).where(rows.c.id == row.id)).mappings().one()
                return Message(id=int(got["id"]), key=Key(got["dag_id"], got["run_id"], got["outcome"]),
                               kind=str(got["kind"]), conn_id=str(got["conn_id"]),
                               payload=json.loads(got["payload"]), claim=token, attempts=int(got["attempts"]))
    return None


def expire_due(settings: Settings, now: datetime | None = None) -> list[Dropped]:
    """Mark undelivered messages past their expiry `expired`; the ones this call expired (for the log).

    A row still held by a live sender (within its lease) is left to it. Compare-and-set, so of
    two drainers exactly one reports each expired message.
    """
    from sqlalchemy import and_, or_, select, update

    rows = _table()
    at = _now(now)
    undelivered = or_(rows.c.status == "pending", and_(rows.c.status == "sending", rows.c.lease_until <= at))
    expired: list[Dropped] = []
    with _engine(settings).begin() as conn:
        found = conn.execute(select(rows.c.id, rows.c.claim, rows.c.status, rows.c.dag_id, rows.c.run_id,
                                    rows.c.outcome, rows.c.attempts, rows.c.error)
                             .where(undelivered & (rows.c.expires_at <= at))).all()
        for row in found:
            done = conn.execute(update(rows).where((rows.c.id == row.id) & (rows.c.claim == row.claim)
                                                   & (rows.c.status == row.status))
                                .values(status="expired", claim=uuid.uuid4().hex))
            if done.rowcount == 1:
                expired.append(Dropped(Key(str(row.dag_id), str(row.run_id), str(row.outcome)), int(row.attempts),
                                       row.error))
    return expired


def counts(settings: Settings) -> dict[str, int]:
    """How many messages the outbox holds, by status."""
    from sqlalchemy import func, select

    rows = _table()
    with _engine(settings).connect() as conn:
        return {str(status): int(n) for status, n in
                conn.execute(select(rows.c.status, func.count()).group_by(rows.c.status)).all()}
