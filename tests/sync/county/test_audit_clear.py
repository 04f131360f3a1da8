"""Acknowledging a station's audit alarms (``booking-gallery audit clear``): the alarms stay listed as
acknowledged, the county audit log says who and why, a repeat of the same incident stays acknowledged and
anything new raises a new, open alarm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sync.county.cli import main
from sync.county.gallery.audit import AuditChains
from sync.county.gallery.audit_intake import handle_audit
from sync.county.gallery.fleet import fleet_report, render_table
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
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
