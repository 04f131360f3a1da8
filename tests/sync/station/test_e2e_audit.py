"""The county holds each station's audit log: real station store, real sync agent, real Mosquitto with mutual
TLS and the generated ACL, the real gallery receiver. The station's own chain check passes after each
tampering below (that is the weakness); the county's copy must raise its alarm for every one of them, and
stay quiet for a normal run."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from appliance.store import Store
from appliance.store import audit as audit_log
from appliance.store.db import data_paths
from sync.county.cli import main as gallery_cli
from sync.county.gallery.audit import TRUNCATION_GRACE, AuditChains
from tests.sync import factory
from tests.sync.broker import PKI, MosquittoBroker, mosquitto_binary, start_gallery, stop_gallery
from tests.sync.conftest import COUNTY


@pytest.fixture
def broker(tmp_path: Path, pki: PKI) -> Iterator[MosquittoBroker]:
    if mosquitto_binary() is None:
        pytest.fail("Mosquitto is needed for the sync agent tests: apt-get install -y mosquitto")
    b = MosquittoBroker(tmp_path / "broker", pki, COUNTY)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def station(tmp_path: Path, pki: PKI, broker: MosquittoBroker) -> factory.Station:
    return factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, **factory.FAST)


@pytest.fixture
def gallery(broker: MosquittoBroker, tmp_path: Path, station: factory.Station) -> Iterator[Any]:
    receiver = start_gallery(broker, tmp_path / "gallery.db", {station.name: station.signing_key})
    yield receiver
    stop_gallery(receiver)


def _append(station: factory.Station, n: int, tag: str = "a") -> None:
    store: Store = station.open_store()  # type: ignore[assignment]
    try:
        for i in range(n):
            store.append_audit(f"ofc-{i % 3}", "logon", {"run": tag, "i": i})
    finally:
        store.close()


def _station_head(station: factory.Station) -> tuple[int, str]:
    store: Store = station.open_store()  # type: ignore[assignment]
    try:
        assert store.verify_audit() is None, "the station's own check must pass (that is the weakness)"
        return audit_log.head(store.conn)
    finally:
        store.close()


def _deliver(station: factory.Station, gallery: Any, through: int) -> None:
    """Run the agent until the county holds entries up to ``through`` and has seen a status since."""
    chains = AuditChains(gallery.store)
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: (chains.held_head(station.name) or (0, ""))[0] >= through,
                         message=f"the county holding audit entry {through}")
        factory.wait_for(lambda: agent.agent.stats["audit_acks_stored"] + agent.agent.stats["audit_acks_conflict"] > 0,
                         message="an audit ack")
    finally:
        agent.close()


def _reconnect(station: factory.Station, gallery: Any, until: Any) -> None:
    """Start the agent (it says its status, with the signed head, on connecting) until ``until()`` holds."""
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(until, message="the county's audit alarm")
    finally:
        agent.close()


def _tamper(station: factory.Station, sql: list[tuple[str, tuple]]) -> None:
    """What someone with write access to the station's database can do: drop the append-only triggers."""
    db, _ = data_paths(station.data_dir)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_delete_below_checkpoint")
        for statement, params in sql:
            conn.execute(statement, params)
    finally:
        conn.close()


def _rewrite_from(station: factory.Station, seq: int) -> None:
    """Change entry ``seq`` and recompute every later hash, so the chain verifies again."""
    db, _ = data_paths(station.data_dir)
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT seq, at, actor, action, details, prev_hash FROM audit WHERE seq >= ? ORDER BY seq",
                        (seq,)).fetchall()
    prev = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()[0]
    conn.close()
    updates = []
    for s, at, actor, action, details, _ in rows:
        if s == seq:
            details = '{"note":"nothing happened here"}'
        digest = audit_log.entry_hash(s, at, actor, action, details, prev)
        updates.append(("UPDATE audit SET details = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                        (details, prev, digest, s)))
        prev = digest
    _tamper(station, updates)


def _alarms(gallery: Any, station: factory.Station) -> set[tuple[str, int]]:
    return {(a.kind, a.seq) for a in AuditChains(gallery.store).alarms(station.name)}


def _verify_cli(tmp_path: Path, station: factory.Station) -> tuple[int, str]:
    result = CliRunner().invoke(gallery_cli, ["audit", "verify", "--station", station.name, "--db",
                                              str(tmp_path / "gallery.db"), "--json"])
    return result.exit_code, result.output


def test_a_normal_run_is_held_in_full_and_stays_clean(tmp_path: Path, station: factory.Station, gallery: Any) -> None:
    _append(station, 240)  # more than one batch
    _deliver(station, gallery, 240)
    _append(station, 3, "b")
    _deliver(station, gallery, 243)
    chains = AuditChains(gallery.store)
    held = chains.entries(station.name)
    assert [e.seq for e in held] == list(range(1, 244))
    assert chains.held_head(station.name) == _station_head(station)
    assert _alarms(gallery, station) == set()
    status = gallery.store.get_station_status(station.name)
    assert status is not None and status.body["audit_head"]["seq"] >= 240
    code, out = _verify_cli(tmp_path, station)
    assert code == 0, out
    assert '"ok": true' in out and '"last_seq": 243' in out
    # the station's delivery mark is where the county's copy ends, and its own check says so
    from appliance.cli import main as station_cli

    result = CliRunner().invoke(station_cli, ["audit", "verify", "--json", "--data-dir", str(station.data_dir)])
    doc = json.loads(result.output)
    assert result.exit_code == 0 and doc["ok"] and doc["last_seq"] == doc["county_holds_through_seq"] == 243


def test_a_rewrite_with_recomputed_hashes_raises_the_county_alarm(tmp_path: Path, station: factory.Station,
                                                                   gallery: Any) -> None:
    _append(station, 40)
    _deliver(station, gallery, 40)
    _rewrite_from(station, 30)
    assert _station_head(station)[0] == 40  # still 40 entries, still "audit log OK" on the station
    _reconnect(station, gallery, lambda: ("rewrite", 40) in _alarms(gallery, station))
    _append(station, 2, "after")  # and what the station writes next does not link to the county's copy
    _reconnect(station, gallery, lambda: ("fork", 41) in _alarms(gallery, station))
    assert [e.seq for e in AuditChains(gallery.store).entries(station.name)] == list(range(1, 41))
    code, out = _verify_cli(tmp_path, station)
    assert code == 1 and '"kind": "rewrite"' in out and '"ok": false' in out
    fleet = CliRunner().invoke(gallery_cli, ["fleet", "--json", "--db", str(tmp_path / "gallery.db")])
    [row] = [r for r in json.loads(fleet.output)["stations"] if r["station"] == station.name]
    assert fleet.exit_code == 1 and row["flagged"] and row["audit"]["held_seq"] == 40
    assert "audit rewrite at entry 40" in row["audit"]["alarms"]


def test_dropping_the_newest_entries_raises_the_county_alarm(tmp_path: Path, station: factory.Station,
                                                             gallery: Any) -> None:
    _append(station, 40)
    _deliver(station, gallery, 40)
    _tamper(station, [("DELETE FROM audit WHERE seq > ?", (35,))])
    assert _station_head(station)[0] == 35
    # A short head right after the county got 36..40 may be a status sent before them: not yet judged.
    _reconnect(station, gallery, lambda: gallery.store.get_station_status(station.name) is not None and
               gallery.store.get_station_status(station.name).body["audit_head"]["seq"] == 35)
    assert _alarms(gallery, station) == set()
    # The gallery's clock past the grace (the station has been reporting 35 all along): truncation.
    gallery.clock = lambda: datetime.now(timezone.utc) + TRUNCATION_GRACE
    _reconnect(station, gallery, lambda: ("truncation", 40) in _alarms(gallery, station))
    code, out = _verify_cli(tmp_path, station)
    assert code == 1 and '"kind": "truncation"' in out


def test_a_restored_old_database_that_goes_on_differently_is_a_fork(tmp_path: Path, station: factory.Station,
                                                                     gallery: Any) -> None:
    _append(station, 30)
    _deliver(station, gallery, 30)
    db, _ = data_paths(station.data_dir)
    backup = tmp_path / "backup.db"
    source, copy = sqlite3.connect(db), sqlite3.connect(backup)
    source.backup(copy)
    source.close(), copy.close()
    _append(station, 10)
    _deliver(station, gallery, 40)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, db)
    _append(station, 3, "restored")  # entries 31-33 again, with other content
    _reconnect(station, gallery, lambda: ("fork", 31) in _alarms(gallery, station))
    code, out = _verify_cli(tmp_path, station)
    assert code == 1 and '"kind": "fork"' in out


def test_a_killed_agent_loses_no_audit_entry_and_sends_none_twice(tmp_path: Path, station: factory.Station,
                                                                   gallery: Any) -> None:
    import signal

    _append(station, 3 * 200)
    chains = AuditChains(gallery.store)
    log = tmp_path / "agent.log"
    proc = factory.spawn_agent(station, log)
    try:
        factory.wait_for(lambda: (chains.held_head(station.name) or (0, ""))[0] >= 200, timeout=60,
                         message="the first batch held")
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: a batch may be in flight, its ack unread
        proc.wait(30)
    _append(station, 5, "after-kill")
    proc = factory.spawn_agent(station, log)
    try:
        factory.wait_for(lambda: (chains.held_head(station.name) or (0, ""))[0] >= 605, timeout=60,
                         message="every entry held after the restart")
        factory.wait_for(lambda: _delivered(station) == 605, timeout=30, message="the station's mark at 605")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert [e.seq for e in chains.entries(station.name)] == list(range(1, 606))
    assert chains.held_head(station.name) == _station_head(station)
    assert _alarms(gallery, station) == set()


def _delivered(station: factory.Station) -> int:
    store: Store = station.open_store()  # type: ignore[assignment]
    try:
        return audit_log.delivered_seq(store.conn)
    finally:
        store.close()
