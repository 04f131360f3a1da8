"""The county's copy of a station's audit chain, without a broker: the signed batch format, and how the gallery
judges what arrives against what it holds (gap, fork, rewrite, truncation; repeats and late statuses are fine;
only the gallery's receive times and sequence numbers decide, never the station's clock)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.audit import TRUNCATION_GRACE, AuditChains, verify_station
from sync.county.gallery.audit_intake import check_status_head, handle_audit
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.protocol import audit_wire, wire
from tests.sync import factory

KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
T0 = dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc)
TOPIC = "booking/v1/king/st-01/audit"


def _at(seq: int) -> str:
    return (T0 + dt.timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain(n: int, *, start: int = 1, prev: str = audit_wire.GENESIS_HASH) -> list[audit_wire.AuditWireEntry]:
    out = []
    for seq in range(start, start + n):
        details = f'{{"i":{seq}}}'
        digest = audit_wire.entry_hash(seq, _at(seq), "ofc-1", "logon", details, prev)
        out.append(audit_wire.AuditWireEntry(seq, _at(seq), "ofc-1", "logon", details, prev, digest))
        prev = digest
    return out


def batch(entries: list[audit_wire.AuditWireEntry], head: audit_wire.AuditWireEntry | None = None) -> bytes:
    last = head or entries[-1]
    return audit_wire.encode_batch(audit_wire.AuditBatch("king", "st-01", tuple(entries), last.seq, last.hash), KEY)


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", "king", RAW)
    config = ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k")
    r = GalleryReceiver(config, store, clock=lambda: T0 + dt.timedelta(days=1))
    yield r
    store.close()


def kinds(receiver: GalleryReceiver) -> set[tuple[str, int]]:
    return {(a.kind, a.seq) for a in AuditChains(receiver.store).alarms("st-01")}


def test_batches_in_order_are_held_and_a_repeat_changes_nothing(receiver: GalleryReceiver) -> None:
    entries = chain(10)
    ack, topic = handle_audit(receiver, TOPIC, batch(entries[:6]))
    assert ack == audit_wire.AuditAck(6, "stored") and topic == "booking/v1/king/st-01/audit-acks"
    assert handle_audit(receiver, TOPIC, batch(entries[:6]))[0] == audit_wire.AuditAck(6, "stored")  # lost ack
    assert handle_audit(receiver, TOPIC, batch(entries[4:]))[0] == audit_wire.AuditAck(10, "stored")  # overlap
    assert [e.seq for e in AuditChains(receiver.store).entries("st-01")] == list(range(1, 11))
    report = verify_station(receiver.store, "st-01")
    assert report.ok and report.entries == 10 and report.last_hash == entries[-1].hash
    audit_wire.decode_audit_ack(audit_wire.encode_audit_ack(ack))  # the ack is valid on the wire


def test_a_batch_is_held_in_one_transaction_up_to_an_entry_that_does_not_link(receiver: GalleryReceiver) -> None:
    """One commit per batch (it runs on the receiver's network thread, records wait behind it), and the
    entries before a broken link are still held."""
    statements: list[str] = []
    receiver.store._conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    entries = chain(40)
    assert handle_audit(receiver, TOPIC, batch(entries[:30]))[0] == audit_wire.AuditAck(30, "stored")
    inserts = [i for i, s in enumerate(statements) if s.lstrip().upper().startswith("INSERT INTO AUDIT_CHAIN")]
    commits = [i for i, s in enumerate(statements) if s.strip().upper() == "COMMIT"]
    assert len(inserts) == 30
    assert not [c for c in commits if inserts[0] < c < inserts[-1]]  # no commit between the first and last
    edited = replace(entries[33], details='{"i":0}')  # its hash no longer matches its content
    assert handle_audit(receiver, TOPIC, batch([*entries[30:33], edited], head=entries[33]))[0].status == "conflict"
    assert [e.seq for e in AuditChains(receiver.store).entries("st-01")] == list(range(1, 34))
    assert ("rewrite", 34) in kinds(receiver)


def test_a_gap_a_fork_and_an_edited_entry_each_raise_and_are_not_held(receiver: GalleryReceiver) -> None:
    entries = chain(12)
    handle_audit(receiver, TOPIC, batch(entries[:5]))
    ack, _ = handle_audit(receiver, TOPIC, batch(entries[7:9]))  # 6 and 7 never came
    assert ack is not None and (ack.status, ack.reason, ack.through_seq) == ("conflict", "gap", 9)
    other = chain(3, start=6, prev="f" * 64)  # entry 6 chained onto something the county never saw
    assert handle_audit(receiver, TOPIC, batch(other))[0].reason == "fork"  # type: ignore[union-attr]
    edited = entries[5]
    edited = audit_wire.AuditWireEntry(edited.seq, edited.at, edited.actor, edited.action, '{"i":0}',
                                       edited.prev_hash, edited.hash)
    assert handle_audit(receiver, TOPIC, batch([edited]))[0].reason == "rewrite"  # type: ignore[union-attr]
    assert kinds(receiver) == {("gap", 8), ("fork", 6), ("rewrite", 6)}
    assert [e.seq for e in AuditChains(receiver.store).entries("st-01")] == [1, 2, 3, 4, 5]
    assert not verify_station(receiver.store, "st-01").ok


def status(seq: int, digest: str, *, at: dt.datetime, key: Any = KEY) -> dict[str, Any]:
    """A status body as the station sends it: its own ``at`` (its clock) and the signed chain head."""
    return {"at": at.isoformat(), "audit_head": audit_wire.sign_head("king", "st-01", seq, digest, key)}


G0 = T0 + dt.timedelta(days=1)  # the gallery's clock when it received entries 1..20
GRACE = TRUNCATION_GRACE


def hold(receiver: GalleryReceiver, entries: list[audit_wire.AuditWireEntry], now: dt.datetime) -> None:
    ack = AuditChains(receiver.store).receive(
        audit_wire.AuditBatch("king", "st-01", tuple(entries), entries[-1].seq, entries[-1].hash), now=now)
    assert ack.status == "stored"


@pytest.mark.parametrize("station_clock", [dt.timedelta(days=-400), dt.timedelta(0), dt.timedelta(days=400)])
def test_truncation_is_judged_by_seq_and_gallery_receive_times_whatever_the_station_clock(
        receiver: GalleryReceiver, station_clock: dt.timedelta) -> None:
    """The station's clock (set back or forward, or right) never decides: the status's ``at`` and the entries'
    ``at`` are the station's word. A short head handled soon after the newer entries arrived is a status sent
    before them; the same short head well after the gallery got them is a truncated log."""
    entries = chain(20)
    hold(receiver, entries, G0)
    late = entries[14]
    at = G0 + station_clock
    chains = AuditChains(receiver.store)
    # A status the station sent when entry 15 was its newest, handled a minute after 16..20 arrived: not news.
    assert check_status_head(receiver.store, "st-01", "king", status(late.seq, late.hash, at=at),
                             now=G0 + dt.timedelta(minutes=1)) == ""
    assert chains.alarms("st-01") == []
    # The same head reported after the grace: entries 16..20 were removed from the station.
    for minutes in (0, 1):
        now = G0 + GRACE + dt.timedelta(minutes=minutes)
        assert check_status_head(receiver.store, "st-01", "king", status(late.seq, late.hash, at=at + GRACE),
                                 now=now) == "truncation"
    [alarm] = chains.alarms("st-01")
    assert (alarm.kind, alarm.seq, alarm.count) == ("truncation", 20, 2)  # one alarm, counted, not two rows
    # The full head is no truncation, however old the station's clock says the status is.
    head = entries[-1]
    assert check_status_head(receiver.store, "st-01", "king", status(head.seq, head.hash, at=T0 - GRACE),
                             now=G0 + 2 * GRACE) == ""


def test_a_head_going_back_below_an_earlier_status_is_truncation_even_before_the_county_holds_the_entries(
        receiver: GalleryReceiver) -> None:
    entries = chain(20)
    hold(receiver, entries[:12], G0)  # delivery lags: the county holds 1..12
    top = entries[-1]
    assert check_status_head(receiver.store, "st-01", "king", status(20, top.hash, at=G0), now=G0) == ""
    # The station's clock set back a year, a head of 15 two minutes later: within the grace (another gallery
    # worker may handle an older status late), so nothing yet.
    back = G0 - dt.timedelta(days=365)
    assert check_status_head(receiver.store, "st-01", "king", status(15, entries[14].hash, at=back),
                             now=G0 + dt.timedelta(minutes=2)) == ""
    assert check_status_head(receiver.store, "st-01", "king", status(15, entries[14].hash, at=back),
                             now=G0 + GRACE) == "truncation"
    [alarm] = AuditChains(receiver.store).alarms("st-01")
    assert (alarm.kind, alarm.seq) == ("truncation", 20) and "up to 20" in alarm.detail


def test_a_batch_head_counts_as_shown_and_a_changed_or_forged_head_is_judged_apart(receiver: GalleryReceiver) -> None:
    entries = chain(20)
    # A batch of 1..10 signed while the station's head was already 20.
    ack = AuditChains(receiver.store).receive(
        audit_wire.AuditBatch("king", "st-01", tuple(entries[:10]), 20, entries[-1].hash), now=G0)
    assert ack.status == "stored"
    assert check_status_head(receiver.store, "st-01", "king", status(10, entries[9].hash, at=G0),
                             now=G0 + GRACE) == "truncation"
    # A head whose hash differs from the held entry of that seq: rewritten up to there.
    assert check_status_head(receiver.store, "st-01", "king", status(10, "e" * 64, at=G0),
                             now=G0 + dt.timedelta(seconds=1)) == "rewrite"
    # A head signed by anyone else is ignored (it cannot prove anything).
    forged = status(3, "d" * 64, at=G0, key=factory.key(5))
    assert check_status_head(receiver.store, "st-01", "king", forged, now=G0 + 3 * GRACE) == ""
    assert {(a.kind, a.seq) for a in AuditChains(receiver.store).alarms("st-01")} == {("truncation", 20),
                                                                                      ("rewrite", 10)}


def test_batches_that_do_not_verify_are_refused_and_logged(receiver: GalleryReceiver) -> None:
    entries = chain(3)
    other_key = audit_wire.encode_batch(audit_wire.AuditBatch("king", "st-01", tuple(entries), 3, entries[-1].hash),
                                        factory.key(2))
    ack, _ = handle_audit(receiver, TOPIC, other_key)
    assert ack == audit_wire.AuditAck(0, "rejected", "bad_signature")
    ack, _ = handle_audit(receiver, "booking/v1/king/st-09/audit", batch(entries))
    assert ack is not None and ack.reason == "unknown_station"
    assert handle_audit(receiver, "booking/v1/pierce/st-01/audit", batch(entries)) == (None, None)
    assert {r.reason for r in receiver.store.list_rejections()} == {"bad_signature", "unknown_station", "bad_topic"}
    assert AuditChains(receiver.store).entries("st-01") == []


@pytest.mark.parametrize("change", ["non_consecutive", "head_behind", "bad_hash_text", "extra_key"])
def test_the_batch_format_is_strict(change: str) -> None:
    import cbor2

    entries = [e.as_list() for e in chain(3)]
    content: dict[str, Any] = {"schema": 1, "county": "king", "station": "st-01", "entries": entries,
                               "head": [3, entries[-1][6]]}
    if change == "non_consecutive":
        content["entries"] = [entries[0], entries[2]]
    elif change == "head_behind":
        content["head"] = [1, entries[0][6]]
    elif change == "bad_hash_text":
        content["entries"][0][6] = "XYZ"
    else:
        content["more"] = 1
    payload = wire.sign1(cbor2.dumps(content, canonical=True), content_type=audit_wire.AUDIT_CONTENT_TYPE,
                         kid="st-01", key=KEY)
    with pytest.raises(wire.WireError):
        audit_wire.verify_batch(payload, lambda kid: KEY.public_key())


def test_the_station_store_uses_the_shared_hash_rule_and_its_delivery_mark_only_moves_forward(tmp_path: Path) -> None:
    from appliance.store import Store
    from appliance.store import audit as audit_log

    with Store.open_data_dir(tmp_path, floor_bytes=0) as store:
        entry = store.append_audit("ofc-1", "logon", {"desk": 1})
        assert entry.hash == audit_wire.entry_hash(entry.seq, entry.at, entry.actor, entry.action, entry.details,
                                                   entry.prev_hash)
        assert audit_log.head(store.conn) == (entry.seq, entry.hash)
        assert audit_log.delivered_seq(store.conn) == 0
        audit_log.set_delivered_seq(store.conn, 5)
        audit_log.set_delivered_seq(store.conn, 3)  # a late ack for an older batch
        assert audit_log.delivered_seq(store.conn) == 5


def test_the_chain_tables_work_in_both_dialects(gallery_store: Any) -> None:
    """The county's chain tables, alarms and resumes on SQLite and on PostgreSQL."""
    store = gallery_store
    chains = AuditChains(store)
    entries = chain(6)
    head = entries[-1]
    ok = chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(entries[:3]), 3, entries[2].hash), now=T0)
    assert ok.status == "stored"
    for _ in range(2):  # the same gap twice: one alarm, counted twice
        ack = chains.receive(audit_wire.AuditBatch("king", "st-01", (entries[4],), 5, entries[4].hash), now=T0)
        assert (ack.status, ack.reason) == ("conflict", "gap")
    assert chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(entries[3:]), 6, head.hash)).status == \
        "stored"
    assert chains.held_head("st-01") == (6, head.hash)
    [alarm] = chains.alarms()
    assert (alarm.kind, alarm.seq, alarm.count) == ("gap", 5, 2)
    report = verify_station(store, "st-01")
    assert report.entries == 6 and report.broken_at is None and not report.ok  # the alarm stays
    assert chains.check_head("st-01", 5, entries[4].hash, from_status=True, now=T0 + TRUNCATION_GRACE) == ""
    assert chains.check_head("st-01", 5, entries[4].hash, from_status=True,
                             now=dt.datetime.now(dt.timezone.utc) + TRUNCATION_GRACE) == "truncation"
    assert [a.ack_reason for a in chains.acknowledge("st-01", "it-1", "seen", resume=True)] == ["seen", "seen"]
    assert verify_station(store, "st-01").ok and chains.pending_resume("st-01") == 6
    more = chain(3, start=8, prev="c" * 64)  # 8..10 on another history: held from 8 on, the break allowed
    assert chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(more), 10, more[-1].hash)).status == \
        "stored"
    report = verify_station(store, "st-01")
    assert report.ok and report.entries == 9 and [r["resumed_seq"] for r in report.resumes] == [8]
