"""The alert outbox's rows on SQLite: claims, compare-and-set, retry schedule, Retry-After, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from autopilot.alerts import ledger as outbox
from autopilot.alerts.ledger import Delivery, Key

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
KEY = Key("etl", "r1", "failed")


def new(settings: Any, key: Key = KEY, token: str = "a", lease: float = 60, expiry: float = 3600,
        now: datetime = T0) -> outbox.Claim:
    return outbox.claim_new(settings, key, kind="generic", conn_id="slack", payload={"text": str(key)},
                            task_id="t", token=token, lease_seconds=lease, expiry_seconds=expiry, now=now)


def test_one_claim_per_key(settings: Any) -> None:
    first = new(settings)
    assert first.ours and first.id is not None
    assert new(settings, token="b") == outbox.Claim(False, "in flight", first.id)  # within the lease
    # the first sender died: after its lease, the next caller takes it over
    taken = new(settings, token="c", now=T0 + timedelta(seconds=61))
    assert taken.ours
    assert not outbox.store_payload(settings, first.id, "a", {"text": "late"})  # the dead sender's claim is void
    assert outbox.record(settings, first.id, "a", Delivery(True, 1), retry_seconds=1, max_retry_seconds=1) is None
    assert outbox.record(settings, first.id, "c", Delivery(True, 1), retry_seconds=1, max_retry_seconds=1) == "sent"
    assert new(settings, token="d", now=T0 + timedelta(days=1)) == outbox.Claim(False, "sent", first.id)


def test_retry_schedule_and_retry_after(settings: Any) -> None:
    assert [outbox.retry_delay(n, 60, 3600) for n in (1, 2, 3, 7, 8, 5000)] == [60, 120, 240, 3600, 3600, 3600]
    claim = new(settings)
    assert claim.id is not None
    outbox.record(settings, claim.id, "a", Delivery(False, 3, "HTTP 503"), retry_seconds=60, max_retry_seconds=3600,
                  now=T0)
    assert outbox.claim_due(settings, "x", 60, now=T0 + timedelta(seconds=59)) is None
    message = outbox.claim_due(settings, "x", 60, now=T0 + timedelta(seconds=60))
    assert message is not None and (message.key, message.attempts, message.payload) == (KEY, 2, {"text": str(KEY)})
    assert outbox.claim_due(settings, "y", 60, now=T0 + timedelta(seconds=60)) is None  # held by "x"
    # Slack said 429, Retry-After 900: longer than the retry delay (120 s), so it wins
    outbox.record(settings, message.id, "x", Delivery(False, 1, "HTTP 429", retry_after=900), retry_seconds=60,
                  max_retry_seconds=3600, now=T0)
    assert outbox.claim_due(settings, "y", 60, now=T0 + timedelta(seconds=899)) is None
    assert outbox.claim_due(settings, "y", 60, skip_conns={"slack"}, now=T0 + timedelta(seconds=900)) is None
    assert outbox.claim_due(settings, "y", 60, now=T0 + timedelta(seconds=900)) is not None


def test_rejected_and_skipped_are_final(settings: Any) -> None:
    for index, result in enumerate([Delivery(False, 1, "HTTP 400: invalid_payload", permanent=True), None,
                                    Delivery(False, 0, "no such connection", unconfigured=True)]):
        claim = new(settings, key=Key("etl", f"r{index}", "success"))
        assert claim.id is not None
        outbox.record(settings, claim.id, "a", result, retry_seconds=0, max_retry_seconds=0)
    assert outbox.counts(settings) == {"rejected": 1, "skipped": 2}
    assert outbox.claim_due(settings, "x", 60, now=T0 + timedelta(days=2)) is None
    assert outbox.expire_due(settings, now=T0 + timedelta(days=2)) == []


def test_expiry_spares_live_claims(settings: Any) -> None:
    held = new(settings, key=Key("etl", "held", "success"), lease=7200, expiry=60)
    kept = new(settings, key=Key("etl", "kept", "success"), expiry=60)
    assert held.id is not None and kept.id is not None
    outbox.record(settings, kept.id, "a", Delivery(False, 1, "HTTP 500"), retry_seconds=1, max_retry_seconds=1, now=T0)
    dropped = outbox.expire_due(settings, now=T0 + timedelta(seconds=61))
    assert [(d.key.run_id, d.attempts, d.error) for d in dropped] == [("kept", 1, "HTTP 500")]
    assert outbox.expire_due(settings, now=T0 + timedelta(seconds=62)) == []  # reported once
    assert outbox.claim_due(settings, "x", 60, now=T0 + timedelta(seconds=61)) is None  # expired: never sent
    # the live sender's claim past expiry: left to it until its lease ends, then dropped
    assert [d.key.run_id for d in outbox.expire_due(settings, now=T0 + timedelta(seconds=7201))] == ["held"]
    assert outbox.counts(settings) == {"expired": 2}


def test_a_garbled_retry_after_does_not_park_a_message(settings: Any) -> None:
    claim = new(settings, expiry=7 * 86400)
    assert claim.id is not None
    outbox.record(settings, claim.id, "a", Delivery(False, 1, "HTTP 429", retry_after=1e12), retry_seconds=60,
                  max_retry_seconds=3600, now=T0)
    assert outbox.claim_due(settings, "x", 60, now=T0 + timedelta(days=1)) is not None
