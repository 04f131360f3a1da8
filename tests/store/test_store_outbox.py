"""The outbox state machine, retry backoff, queue views, purges."""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta

import pytest

from appliance.store import (
    AmbiguousBookingError,
    OutboxStateError,
    RecordPurgedError,
    Store,
    UnknownStationRecordError,
    ValidationError,
    new_record_id,
)
from appliance.store.outbox import backoff_delay
from tests.store.conftest import T0, consistency_problems, make_booking, make_captures


@pytest.fixture
def clocked(store: Store) -> Store:
    store.clock = lambda: T0
    return store


def test_new_record_is_pending_and_due_at_once(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking(), make_captures())
    [entry] = clocked.due(10, now=T0)
    assert (entry.record_id, entry.state, entry.attempts, entry.next_attempt_at) == (rid, "pending", 0, T0)
    assert entry.booking_number == "2026-000123" and entry.agency_ori == "VA0290000"


def test_pending_to_delivered_only_via_mark_delivered(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking(), make_captures())
    for i in range(3):
        clocked.mark_failed(rid, f"no ack within 30 s (try {i + 1})", now=T0)
    assert clocked.load_record(rid).outbox.state == "pending"
    done = clocked.mark_delivered(rid, "duplicate", now=T0 + timedelta(minutes=5))
    assert (done.state, done.ack_status, done.delivered_at) == ("delivered", "duplicate", T0 + timedelta(minutes=5))
    again = clocked.mark_delivered(rid, "stored", now=T0 + timedelta(hours=1))
    assert again == done, "a redelivered ack changes nothing"
    late = clocked.mark_failed(rid, "publish timed out", now=T0 + timedelta(hours=2))
    assert late.state == "delivered" and late.attempts == 3, "a late failure never undoes a delivery"
    with pytest.raises(OutboxStateError, match="contradicts"):
        clocked.mark_rejected(rid, "bad signature")
    assert clocked.due(10, now=T0 + timedelta(days=1)) == []


def test_rejected_keeps_its_reason_and_is_final(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking(), make_captures())
    entry = clocked.mark_rejected(rid, "template model unknown to the gallery")
    assert (entry.state, entry.reject_reason, entry.ack_status) == (
        "rejected", "template model unknown to the gallery", "rejected")
    assert clocked.mark_rejected(rid, "second reason").reject_reason == "template model unknown to the gallery"
    with pytest.raises(OutboxStateError):
        clocked.mark_delivered(rid)
    assert clocked.mark_failed(rid, "timeout").state == "rejected"
    assert clocked.due(10, now=T0 + timedelta(days=1)) == []
    assert clocked.load_record(rid).outbox.reject_reason == "template model unknown to the gallery"


def test_the_database_itself_refuses_to_move_a_final_state(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking(), make_captures())
    clocked.mark_delivered(rid)
    with pytest.raises(sqlite3.IntegrityError, match="cannot change state"):
        clocked.conn.execute("UPDATE outbox SET state = 'pending', delivered_at = NULL WHERE record_id = ?", (rid,))


def test_bad_outbox_calls(clocked: Store) -> None:
    with pytest.raises(UnknownStationRecordError):
        clocked.mark_delivered(new_record_id())
    with pytest.raises(ValidationError):
        clocked.mark_delivered("not-an-id")
    rid = clocked.save_booking(make_booking(), make_captures())
    with pytest.raises(ValidationError, match="ack status"):
        clocked.mark_delivered(rid, "rejected")
    with pytest.raises(ValidationError):
        clocked.mark_rejected(rid, "  ")
    with pytest.raises(ValidationError, match="state"):
        clocked.queue("lost")


def test_retries_count_attempts_and_back_off_with_a_cap(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking(), make_captures())
    now = T0
    delays = []
    for attempt in range(1, 13):
        entry = clocked.mark_failed(rid, "broker unreachable", now=now, base_seconds=5, cap_seconds=600)
        assert entry.attempts == attempt and entry.last_error == "broker unreachable"
        delay = (entry.next_attempt_at - now).total_seconds()
        ceiling = min(600, 5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        assert clocked.due(10, now=now) == [], "not due before its next attempt time"
        assert [e.record_id for e in clocked.due(10, now=entry.next_attempt_at)] == [rid]
        delays.append(delay)
        now = entry.next_attempt_at
    assert max(delays) <= 600 and delays[-1] >= 300
    explicit = clocked.mark_failed(rid, "told to wait", T0 + timedelta(hours=3), now=now)
    assert explicit.next_attempt_at == T0 + timedelta(hours=3) and explicit.attempts == 13


def test_backoff_helper_jitters_within_bounds() -> None:
    rng = random.Random(7)
    draws = [backoff_delay(4, base_seconds=10, cap_seconds=1000, rng=rng) for _ in range(200)]
    assert all(40 <= d <= 80 for d in draws) and len({round(d, 3) for d in draws}) > 150
    assert backoff_delay(10_000, base_seconds=10, cap_seconds=1000, rng=rng) <= 1000
    assert 5 <= backoff_delay(0, base_seconds=10, cap_seconds=1000, rng=rng) <= 10
    with pytest.raises(ValueError):
        backoff_delay(1, base_seconds=10, cap_seconds=5)


def test_queue_views(clocked: Store) -> None:
    ids = [clocked.save_booking(make_booking(f"B-{i}"), make_captures(size=2000)) for i in range(4)]
    clocked.mark_delivered(ids[0])
    clocked.mark_rejected(ids[1], "malformed")
    assert clocked.queue_counts() == {"pending": 2, "delivered": 1, "rejected": 1}
    assert [e.record_id for e in clocked.queue()] == ids
    assert [e.record_id for e in clocked.queue("pending")] == ids[2:]
    assert clocked.oldest_pending_age(now=T0 + timedelta(hours=2)) == timedelta(hours=2)
    assert clocked.due(1, now=T0)[0].record_id == ids[2]
    clocked.mark_delivered(ids[2])
    clocked.mark_delivered(ids[3])
    assert clocked.oldest_pending_age() is None


def test_purge_booking_is_complete_idempotent_and_audited(clocked: Store) -> None:
    keep = clocked.save_booking(make_booking("KEEP-1"), make_captures())
    gone = [clocked.save_booking(make_booking("SEAL-7"), make_captures()) for _ in range(2)]
    clocked.mark_delivered(gone[0])
    result = clocked.purge_booking("SEAL-7", actor="county:records-unit", reason="court order 26-113")
    assert sorted(result.record_ids) == sorted(gone)
    assert result.states == {gone[0]: "delivered", gone[1]: "pending"}
    for rid in gone:
        with pytest.raises(UnknownStationRecordError):
            clocked.load_record(rid)
    count = clocked.conn.execute
    assert count("SELECT COUNT(*) FROM captures WHERE record_id != ?", (keep,)).fetchone()[0] == 0
    assert count("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    again = clocked.purge_booking("SEAL-7", actor="county:records-unit")
    assert again.record_ids == []
    by_id = clocked.purge_booking(gone[0], actor="county:records-unit")
    assert by_id.record_ids == []
    purges = [dict(r) for r in _audit(clocked, "purge")]
    assert [p["record_ids"] for p in purges] == [result.record_ids, [], []]
    assert purges[0]["reason"] == "court order 26-113" and purges[0]["booking_number"] == "SEAL-7"
    assert clocked.verify_audit() is None
    assert clocked.load_record(keep).outbox.state == "pending"
    assert consistency_problems(clocked) == [] and clocked.integrity_check() == ["ok"]


def test_purge_refuses_to_guess_between_agencies(clocked: Store) -> None:
    a = clocked.save_booking(make_booking("26-1", ori="VA0290000"), make_captures())
    b = clocked.save_booking(make_booking("26-1", ori="VA0290100"), make_captures())
    with pytest.raises(AmbiguousBookingError, match="VA0290000, VA0290100"):
        clocked.purge_booking("26-1", actor="ofc-1")
    assert clocked.purge_booking("26-1", actor="ofc-1", agency_ori="VA0290100").record_ids == [b]
    assert clocked.load_record(a).booking.agency_ori == "VA0290000"
    with pytest.raises(ValidationError, match="control character"):
        clocked.purge_booking("26-1\n", actor="ofc-1")


def test_purged_rows_are_overwritten_on_disk(clocked: Store) -> None:
    rid = clocked.save_booking(make_booking("WIPE-1"), make_captures())
    rows = clocked.conn.execute("SELECT sha256, image FROM captures WHERE record_id = ?", (rid,)).fetchall()
    clocked.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert all(blob[100:164] in clocked.db_path.read_bytes() for _, blob in rows)
    clocked.purge_booking(rid, actor="ofc-1")
    clocked.close()
    raw = clocked.db_path.read_bytes()
    wal = clocked.db_path.with_name(clocked.db_path.name + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    for sha, blob in rows:
        assert sha.encode() not in raw and blob[100:164] not in raw, "secure_delete zeroed the old pages"


def test_purge_delivered_images_never_touches_undelivered(clocked: Store) -> None:
    ids = [clocked.save_booking(make_booking(f"P-{i}"), make_captures()) for i in range(4)]
    clocked.mark_delivered(ids[0], now=T0)
    clocked.mark_delivered(ids[1], now=T0 + timedelta(days=25))
    clocked.mark_rejected(ids[2], "bad", now=T0)
    # ids[3] stays pending
    assert clocked.purge_delivered_images(30, now=T0 + timedelta(days=31)) == 1
    with pytest.raises(RecordPurgedError, match="purged"):
        clocked.load_record(ids[0])
    for rid in ids[1:]:
        assert len(clocked.load_record(rid).captures) == 3
    assert clocked.queue_counts() == {"pending": 1, "delivered": 2, "rejected": 1}
    assert clocked.purge_delivered_images(30, now=T0 + timedelta(days=31)) == 0, "idempotent"
    assert clocked.purge_delivered_images(0, now=T0 + timedelta(days=3650)) == 1
    for rid in ids[2:]:
        assert len(clocked.load_record(rid).captures) == 3, "rejected and pending keep their images forever"
    assert [len(p["record_ids"]) for p in _audit(clocked, "purge_images")] == [1, 1]
    assert clocked.conn.execute("SELECT COUNT(*) FROM captures WHERE image IS NULL AND purged_at IS NULL"
                                ).fetchone()[0] == 0


def _audit(store: Store, action: str) -> list[dict]:
    return [e.details_dict for e in _entries(store) if e.action == action]


def _entries(store: Store) -> list:
    from appliance.store.audit import entries

    return entries(store.conn)
