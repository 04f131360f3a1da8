"""The outbox: which records still have to reach the county gallery, and when to try next.

The outbox table is the only truth about delivery (broker sessions and client-library queues are not
storage). Every saved record gets a ``pending`` row in the same transaction as the record itself. The
sync agent asks for `due` rows, publishes them, and reports back:

* `mark_delivered` when the gallery's ack (``stored`` or ``duplicate``) arrives. This is the only way
  to ``delivered``; a broker PUBACK is not an ack.
* `mark_rejected` when the gallery refuses the record; the reason is kept for a person to read.
* `mark_failed` when an attempt did not get an answer; the attempt counter goes up and the next
  attempt is pushed back with capped exponential backoff and jitter (`next_attempt_time`).

``delivered`` and ``rejected`` are final (a trigger in the schema enforces it too). Repeated reports
are harmless: a second ack for a delivered record changes nothing (QoS 1 redelivers acks), and a late
failure report for a record that was meanwhile acked is ignored rather than undoing the delivery. Two
gallery verdicts that contradict each other raise `OutboxStateError`, because a person must look.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance.store.clock import from_text, to_text, utc_now
from appliance.store.errors import OutboxStateError, UnknownStationRecordError, ValidationError
from appliance.store.records import check_record_id, check_utc
from appliance.store.transactions import write_transaction

STATES = ("pending", "delivered", "rejected")
ACK_STATUSES = ("stored", "duplicate")
MAX_TEXT = 2000  # error and reason texts are for people; a whole traceback does not belong in the queue

DEFAULT_BASE_SECONDS = 5.0
DEFAULT_CAP_SECONDS = 900.0

_rng = random.SystemRandom()


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row, with the booking number and ORI for people reading the queue."""

    record_id: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    ack_status: str | None
    reject_reason: str | None
    rejected_at: datetime | None
    booking_number: str
    agency_ori: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 UTC text)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = to_text(value)
        return out


def backoff_delay(attempts: int, *, base_seconds: float = DEFAULT_BASE_SECONDS,
                  cap_seconds: float = DEFAULT_CAP_SECONDS, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: capped exponential, "equal jitter".

    The ceiling doubles per attempt from ``base_seconds`` up to ``cap_seconds``; the delay is drawn
    uniformly from the upper half of it. The random half spreads a fleet of stations that all lost the
    broker at once (no thundering herd when it comes back); the fixed half keeps a station from
    retrying in a tight loop. The cap keeps a record from waiting hours after a long outage ends.
    """
    if cap_seconds < base_seconds or base_seconds <= 0:
        raise ValueError("backoff needs 0 < base_seconds <= cap_seconds")
    exponent = min(max(attempts, 1) - 1, 60)
    ceiling = min(cap_seconds, base_seconds * 2.0 ** exponent)
    return ceiling / 2 + (rng or _rng).uniform(0, ceiling / 2)


def next_attempt_time(attempts: int, now: datetime, **backoff: Any) -> datetime:
    """When to try again after the ``attempts``-th failure (see `backoff_delay`)."""
    return now + timedelta(seconds=backoff_delay(attempts, **backoff))


_SELECT = (
    "SELECT o.record_id, o.state, o.attempts, o.next_attempt_at, o.last_error, o.created_at, o.delivered_at, "
    "o.ack_status, o.reject_reason, o.rejected_at, b.booking_number, b.agency_ori "
    "FROM outbox o JOIN bookings b ON b.record_id = o.record_id"
)


def _entry(row: tuple) -> OutboxEntry:
    (record_id, state, attempts, next_at, last_error, created, delivered, ack, reason, rejected,
     number, ori) = row
    return OutboxEntry(record_id, state, attempts, from_text(next_at), last_error, from_text(created),
                       from_text(delivered) if delivered else None, ack, reason,
                       from_text(rejected) if rejected else None, number, ori)


def _text(label: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{label} must be a non-empty text")
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT - 1] + "…"


def enqueue(conn: sqlite3.Connection, record_id: str, *, now: datetime) -> None:
    """Add the ``pending`` row for a record being saved (inside the caller's save transaction)."""
    at = to_text(now)
    conn.execute("INSERT INTO outbox (record_id, state, attempts, next_attempt_at, created_at) "
                 "VALUES (?, 'pending', 0, ?, ?)", (record_id, at, at))


def get(conn: sqlite3.Connection, record_id: str) -> OutboxEntry:
    """The outbox row of ``record_id``; `UnknownStationRecordError` if there is none (never saved, or purged)."""
    row = conn.execute(_SELECT + " WHERE o.record_id = ?", (check_record_id(record_id),)).fetchone()
    if row is None:
        raise UnknownStationRecordError(f"no record {record_id} in the outbox (never saved here, or purged)")
    return _entry(row)


def due(conn: sqlite3.Connection, limit: int = 50, *, now: datetime | None = None) -> list[OutboxEntry]:
    """Pending rows whose next attempt time has come, soonest first (at most ``limit``)."""
    at = to_text(now or utc_now())
    rows = conn.execute(_SELECT + " WHERE o.state = 'pending' AND o.next_attempt_at <= ? "
                        "ORDER BY o.next_attempt_at, o.record_id LIMIT ?", (at, int(limit)))
    return [_entry(row) for row in rows]


def mark_delivered(conn: sqlite3.Connection, record_id: str, status: str = "stored", *,
                   now: datetime | None = None) -> OutboxEntry:
    """Record the gallery's ack (``stored`` or ``duplicate``): the record is delivered.

    Idempotent for a record already delivered (the first delivery time and status are kept). Raises
    `OutboxStateError` for a record the gallery had rejected.
    """
    if status not in ACK_STATUSES:
        raise ValidationError(f"ack status {status!r} is not one of {', '.join(ACK_STATUSES)} "
                              f"(use mark_rejected for a rejection)")
    at = to_text(now or utc_now())
    with write_transaction(conn):
        entry = get(conn, record_id)
        if entry.state == "rejected":
            raise OutboxStateError(
                f"record {record_id} was rejected by the gallery ({entry.reject_reason}); an ack saying "
                f"{status!r} contradicts that, so it was not applied. Check the gallery's copy")
        if entry.state == "pending":
            conn.execute("UPDATE outbox SET state = 'delivered', delivered_at = ?, ack_status = ? "
                         "WHERE record_id = ?", (at, status, record_id))
            entry = get(conn, record_id)
    return entry


def mark_rejected(conn: sqlite3.Connection, record_id: str, reason: str, *,
                  now: datetime | None = None) -> OutboxEntry:
    """Record the gallery's rejection and its reason; the record is no longer retried.

    Idempotent for a record already rejected (the first reason is kept). Raises `OutboxStateError` for
    a record the gallery had already acked as stored.
    """
    reason = _text("rejection reason", reason)
    at = to_text(now or utc_now())
    with write_transaction(conn):
        entry = get(conn, record_id)
        if entry.state == "delivered":
            raise OutboxStateError(
                f"record {record_id} was already acked as {entry.ack_status!r}; a rejection "
                f"({reason}) contradicts that, so it was not applied. Check the gallery's copy")
        if entry.state == "pending":
            conn.execute("UPDATE outbox SET state = 'rejected', reject_reason = ?, rejected_at = ?, "
                         "ack_status = 'rejected' WHERE record_id = ?", (reason, at, record_id))
            entry = get(conn, record_id)
    return entry


def mark_failed(conn: sqlite3.Connection, record_id: str, error: str,
                next_attempt_at: datetime | None = None, *, now: datetime | None = None,
                base_seconds: float = DEFAULT_BASE_SECONDS,
                cap_seconds: float = DEFAULT_CAP_SECONDS) -> OutboxEntry:
    """Record a failed attempt: attempts + 1, the error kept, the next attempt pushed back.

    ``next_attempt_at`` defaults to `next_attempt_time` for the new attempt count. For a record that
    is no longer pending (the ack won the race against this failure report) nothing changes and the
    current row is returned.
    """
    error = _text("error", error)
    moment = now or utc_now()
    with write_transaction(conn):
        entry = get(conn, record_id)
        if entry.state != "pending":
            return entry
        attempts = entry.attempts + 1
        when = (check_utc("next attempt time", next_attempt_at) if next_attempt_at is not None else
                next_attempt_time(attempts, moment, base_seconds=base_seconds, cap_seconds=cap_seconds))
        conn.execute("UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE record_id = ?",
                     (attempts, error, to_text(when), record_id))
        return get(conn, record_id)


def queue(conn: sqlite3.Connection, state: str | None = None) -> list[OutboxEntry]:
    """All outbox rows (or those in ``state``), oldest record first."""
    if state is None:
        rows = conn.execute(_SELECT + " ORDER BY o.created_at, o.record_id")
    elif state in STATES:
        rows = conn.execute(_SELECT + " WHERE o.state = ? ORDER BY o.created_at, o.record_id", (state,))
    else:
        raise ValidationError(f"outbox state {state!r} is not one of {', '.join(STATES)}")
    return [_entry(row) for row in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per state, every state present (zero if empty): the queue depth the county monitors."""
    out = dict.fromkeys(STATES, 0)
    for state, count in conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
        out[state] = count
    return out


def oldest_pending_age(conn: sqlite3.Connection, *, now: datetime | None = None) -> timedelta | None:
    """How long the oldest undelivered record has been waiting, or None if nothing is pending."""
    row = conn.execute("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'").fetchone()
    if row[0] is None:
        return None
    return (now or utc_now()) - from_text(row[0])
