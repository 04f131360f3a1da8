"""Acknowledging a station's audit alarms (``booking-gallery audit clear``): the alarms stay listed as
acknowledged, the county audit log says who and why, a repeat of the same incident stays acknowledged and
anything new raises a new, open alarm."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sync.county.cli import main
from sync.county.gallery.audit import TRUNCATION_GRACE, AuditChains, verify_station
from sync.county.gallery.audit_intake import handle_audit
from sync.county.gallery.fleet import fleet_report, render_table
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.protocol import audit_wire
from tests.sync.county.test_audit_chain import RAW, T0, TOPIC, batch, chain


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def send(db: Path, payload: bytes) -> str:
    """One audit batch through the receiver's intake, on a store opened for it alone (like the CLI's)."""
    store = SQLiteStore(db)
    try:
        config = ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k")
        ack, _ = handle_audit(GalleryReceiver(config, store, clock=lambda: T0), TOPIC, payload)
        assert ack is not None
        return ack.reason or ack.status
    finally:
        store.close()


def verify(db: Path) -> tuple[int, dict[str, Any]]:
    r = run("audit", "verify", "--station", "st-01", "--json", "--db", str(db))
    return r.exit_code, json.loads(r.output)


def fleet_audit(db: Path) -> tuple[dict[str, Any], list[str], str]:
    store = SQLiteStore(db)
    try:
        [row] = fleet_report(store, now=T0)
        return row.as_dict()["audit"], row.unhealthy, "\n".join(render_table([row], T0))
    finally:
        store.close()


def test_clear_acknowledges_keeps_the_history_and_a_new_break_raises_again(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    store.close()
    entries = chain(14)
    assert send(db, batch(entries[:5])) == "stored"
    assert send(db, batch(entries[7:9])) == "gap"  # 6 and 7 never came
    code, report = verify(db)
    assert code == 1 and [a["acknowledged"] for a in report["alarms"]] == [False]
    audit, unhealthy, _ = fleet_audit(db)
    assert audit["alarms"] == ["audit gap at entry 8"] and any("audit gap" in u for u in unhealthy)

    r = run("audit", "clear", "--station", "st-01", "--reason", "desk restored from backup, ticket 4411",
            "--actor", "it-jane", "--json", "--db", str(db))
    assert r.exit_code == 0, r.output
    [acked] = json.loads(r.output)["acknowledged"]
    assert (acked["kind"], acked["seq"], acked["acked_by"]) == ("gap", 8, "it-jane")

    code, report = verify(db)
    [alarm] = report["alarms"]
    assert code == 0 and report["ok"] and alarm["acknowledged"]
    assert (alarm["kind"], alarm["acked_by"], alarm["ack_reason"]) == ("gap", "it-jane",
                                                                      "desk restored from backup, ticket 4411")
    text = run("audit", "verify", "--station", "st-01", "--db", str(db)).output
    assert "acknowledged gap at entry 8" in text and "by it-jane" in text and "ALARM" not in text
    audit, unhealthy, table = fleet_audit(db)
    assert audit["alarms"] == [] and not any("audit" in u for u in unhealthy)
    assert audit["acknowledged"] == ["audit gap at entry 8, acknowledged by it-jane: desk restored from backup, "
                                     "ticket 4411"]
    assert "st-01: ACKNOWLEDGED: audit gap at entry 8" in table

    r = run("audit", "list", "--action", "audit_alarm_ack", "--json", "--db", str(db))
    [entry] = json.loads(r.output)["entries"]
    assert (entry["actor"], entry["subject"]) == ("it-jane", "st-01")
    assert entry["details"]["reason"] == "desk restored from backup, ticket 4411"
    assert [(a["kind"], a["seq"]) for a in entry["details"]["alarms"]] == [("gap", 8)]

    # The same incident again (the same batch resent): counted, still acknowledged.
    assert send(db, batch(entries[7:9])) == "gap"
    code, report = verify(db)
    assert code == 0 and [(a["count"], a["acknowledged"]) for a in report["alarms"]] == [(2, True)]
    # Nothing open: clear says so and writes nothing.
    r = run("audit", "clear", "--station", "st-01", "--reason", "again", "--db", str(db))
    assert r.exit_code == 1 and "no open audit alarm" in r.output
    assert len(json.loads(run("audit", "list", "--action", "audit_alarm_ack", "--json", "--db",
                              str(db)).output)["entries"]) == 1

    # A new break after the acknowledgement: a new, open alarm, beside the acknowledged one.
    assert send(db, batch(entries[11:13])) == "gap"
    code, report = verify(db)
    assert code == 1 and [(a["seq"], a["acknowledged"]) for a in report["alarms"]] == [(8, True), (12, False)]
    audit, unhealthy, _ = fleet_audit(db)
    assert audit["alarms"] == ["audit gap at entry 12"] and any("audit gap at entry 12" in u for u in unhealthy)


def test_clear_needs_a_reason_and_a_station_id(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    SQLiteStore(db).close()
    r = run("audit", "clear", "--station", "st-01", "--reason", "   ", "--db", str(db))
    assert r.exit_code == 2 and "--reason" in r.output
    r = run("audit", "clear", "--station", "../x", "--reason", "why", "--db", str(db))
    assert r.exit_code == 2 and "not a station id" in r.output


def test_acknowledge_marks_only_what_was_open(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    try:
        chains = AuditChains(store)
        chains.raise_alarm("st-01", "fork", 6, "first", T0)
        chains.raise_alarm("st-02", "gap", 3, "other station", T0)
        [first] = chains.acknowledge("st-01", "it-1", "looked", now=T0)
        chains.raise_alarm("st-01", "rewrite", 9, "later", T0)
        [second] = chains.acknowledge("st-01", "it-2", "looked again", now=T0)
        assert (first.kind, second.kind, second.acked_by) == ("fork", "rewrite", "it-2")
        by_key = {(a.station, a.kind): a for a in chains.alarms()}
        assert by_key[("st-01", "fork")].acked_by == "it-1"  # the first acknowledgement is kept
        assert not by_key[("st-02", "gap")].acknowledged
        assert [e.action for e in store.list_audit()] == ["audit_alarm_ack", "audit_alarm_ack"]
    finally:
        store.close()


def tagged_chain(n: int, *, start: int, prev: str, tag: str) -> list[audit_wire.AuditWireEntry]:
    """Entries ``start``.. chained onto ``prev``, with content no other chain here has (a station's new history)."""
    out = []
    for seq in range(start, start + n):
        at = (T0 + dt.timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        details = json.dumps({"i": seq, "tag": tag})
        digest = audit_wire.entry_hash(seq, at, "ofc-1", "logon", details, prev)
        out.append(audit_wire.AuditWireEntry(seq, at, "ofc-1", "logon", details, prev, digest))
        prev = digest
    return out


def test_resume_after_a_fork_holds_the_station_again_and_keeps_the_break(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    store.close()
    forked = tagged_chain(20, start=6, prev="f" * 64, tag="restored")  # entries 6..25 on a history the county never saw
    assert send(db, batch(chain(5))) == "stored"
    assert send(db, batch(forked[0:5])) == "fork"  # 6..10
    # The station moved on (a conflict cannot be fixed by resending): without a resume, every later batch is
    # another break.
    assert send(db, batch(forked[5:7])) == "gap"  # 11..12
    r = run("audit", "clear", "--station", "st-01", "--reason", "restored from backup, ticket 4412", "--resume",
            "--actor", "it-jane", "--json", "--db", str(db))
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["resume"] == {"after_seq": 5}
    assert [(a["kind"], a["seq"]) for a in out["acknowledged"]] == [("fork", 6), ("gap", 11)]
    assert send(db, batch(forked[7:12])) == "stored"  # 13..17: held again from 13 on
    assert send(db, batch(forked[12:14])) == "stored"  # 18..19 link to 17 as usual
    code, report = verify(db)
    assert code == 0 and report["ok"] and report["broken_at"] is None
    assert [(x["after_seq"], x["resumed_seq"], x["actor"]) for x in report["resumes"]] == [(5, 13, "it-jane")]
    store = SQLiteStore(db)
    try:
        assert [e.seq for e in AuditChains(store).entries("st-01")] == [1, 2, 3, 4, 5, *range(13, 20)]
    finally:
        store.close()
    text = run("audit", "verify", "--station", "st-01", "--db", str(db)).output
    assert "Resume after entry 5 (resumed at entry 13), by it-jane" in text
    [entry] = json.loads(run("audit", "list", "--action", "audit_alarm_ack", "--json", "--db",
                             str(db)).output)["entries"]
    assert entry["details"]["resume_after"] == 5
    # The resume is spent: the next break is an alarm again.
    assert send(db, batch(forked[16:18])) == "gap"  # 22..23, 20..21 never came
    code, report = verify(db)
    assert code == 1 and [(a["kind"], a["seq"]) for a in report["alarms"] if not a["acknowledged"]] == [("gap", 22)]


def test_a_resume_after_truncation_skips_the_diverged_entries_and_heads(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    try:
        chains = AuditChains(store)
        g0 = T0 + dt.timedelta(days=1)
        entries = chain(20)
        assert chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(entries), 20, entries[-1].hash),
                              now=g0).status == "stored"
        assert chains.check_head("st-01", 15, entries[14].hash, from_status=True, now=g0 + TRUNCATION_GRACE) == \
            "truncation"
        assert [a.kind for a in chains.acknowledge("st-01", "it-1", "disk restored", resume=True)] == ["truncation"]
        assert chains.pending_resume("st-01") == 20
        # The station goes on from its entry 15: 16'..20' differ from the county's 16..20.
        new = tagged_chain(8, start=16, prev=entries[14].hash, tag="after")
        later = g0 + 2 * TRUNCATION_GRACE
        ack = chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(new[:3]), 18, new[2].hash), now=later)
        assert ack.status == "stored"  # 16'..18' are the acknowledged diverged history: neither held nor alarms
        assert chains.check_head("st-01", 18, new[2].hash, from_status=True, now=later) == "truncation"
        ack = chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(new[3:7]), 22, new[6].hash), now=later)
        assert ack.status == "stored" and chains.pending_resume("st-01") is None  # 21' resumed the copy
        assert chains.held_head("st-01") == (22, new[6].hash)
        assert [(a.kind, a.count, a.acknowledged) for a in chains.alarms("st-01")] == [("truncation", 2, True)]
        report = verify_station(store, "st-01")
        assert report.ok and report.broken_at is None and report.resumes[0]["resumed_seq"] == 21
        # Spent: a head at or below what is held that differs is a rewrite alarm again.
        assert chains.check_head("st-01", 20, new[4].hash, from_status=True, now=later) == "rewrite"
    finally:
        store.close()


def test_a_resume_ends_at_the_next_entry_even_when_it_links(tmp_path: Path) -> None:
    """A resume granted for an alarm that did not break the chain must not swallow a later, real gap."""
    store = SQLiteStore(tmp_path / "g.db")
    try:
        chains = AuditChains(store)
        entries = chain(8)
        chains.receive(audit_wire.AuditBatch("king", "st-01", tuple(entries[:3]), 3, entries[2].hash), now=T0)
        assert chains.check_head("st-01", 3, "e" * 64, now=T0) == "rewrite"
        chains.acknowledge("st-01", "it-1", "a test head", resume=True, now=T0)
        assert chains.receive(audit_wire.AuditBatch("king", "st-01", (entries[3],), 4, entries[3].hash),
                              now=T0).status == "stored"
        assert chains.pending_resume("st-01") is None and chains.resumes("st-01")[0]["resumed_seq"] == 4
        ack = chains.receive(audit_wire.AuditBatch("king", "st-01", (entries[6],), 7, entries[6].hash), now=T0)
        assert (ack.status, ack.reason) == ("conflict", "gap")
        assert not verify_station(store, "st-01").ok
    finally:
        store.close()
