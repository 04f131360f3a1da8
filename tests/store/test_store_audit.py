"""The hash-chained audit log: tamper detection, append-only rules, retention behind a checkpoint."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.store import AuditChainError, Store, ValidationError
from appliance.store import audit as audit_log
from tests.store.conftest import T0


def fill(store: Store, count: int = 10) -> None:
    for i in range(count):
        audit_log.append(store.conn, f"ofc-{i % 3}", "logon", {"terminal": "desk-1", "n": i},
                         now=T0 + timedelta(minutes=i))


def tamper(store: Store, *statements: tuple[str, tuple]) -> None:
    """What someone with write access to the file could do: drop the guards, then edit."""
    conn = sqlite3.connect(store.db_path)
    for trigger in ("audit_no_update", "audit_delete_below_checkpoint"):
        conn.execute(f"DROP TRIGGER {trigger}")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_chain_links_every_entry(store: Store) -> None:
    fill(store)
    entries = audit_log.entries(store.conn)
    assert [e.seq for e in entries] == list(range(1, 11))
    assert entries[0].prev_hash == audit_log.GENESIS_HASH
    for prev, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == prev.hash
    assert entries[3].details_dict == {"n": 3, "terminal": "desk-1"}
    assert entries[3].hash == audit_log.entry_hash(4, entries[3].at, "ofc-0", "logon", entries[3].details,
                                                   entries[2].hash)
    assert store.verify_audit() is None


@pytest.mark.parametrize("column, value", [("actor", "ofc-99"), ("action", "logoff"),
                                           ("at", "2026-01-01T00:00:00.000000Z"),
                                           ("details", '{"n":4,"terminal":"desk-2"}')])
def test_edited_entry_is_found(store: Store, column: str, value: str) -> None:
    fill(store)
    tamper(store, (f"UPDATE audit SET {column} = ? WHERE seq = 5", (value,)))
    assert store.verify_audit() == 5


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(store: Store) -> None:
    fill(store)
    e = audit_log.entries(store.conn)[4]
    forged = audit_log.entry_hash(5, e.at, "ofc-99", e.action, e.details, e.prev_hash)
    tamper(store, ("UPDATE audit SET actor = 'ofc-99', hash = ? WHERE seq = 5", (forged,)))
    assert store.verify_audit() == 6


def test_deleted_entry_is_found(store: Store) -> None:
    fill(store)
    tamper(store, ("DELETE FROM audit WHERE seq = 4", ()))
    assert store.verify_audit() == 4
    report = store.audit_report()
    assert not report.ok and report.entries == 9


def test_deleted_first_entry_is_found(store: Store) -> None:
    fill(store)
    tamper(store, ("DELETE FROM audit WHERE seq = 1", ()))
    assert store.verify_audit() == 1


def test_reordered_entries_are_found(store: Store) -> None:
    fill(store)
    tamper(store, ("UPDATE audit SET seq = -1 WHERE seq = 3", ()), ("UPDATE audit SET seq = 3 WHERE seq = 4", ()),
           ("UPDATE audit SET seq = 4 WHERE seq = -1", ()))
    assert store.verify_audit() == 3


def test_entries_cannot_be_changed_or_deleted_through_sql(store: Store) -> None:
    fill(store, 3)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE audit SET actor = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM audit WHERE seq = 1")
    assert store.verify_audit() is None


def test_bad_entries_are_refused(store: Store) -> None:
    with pytest.raises(ValidationError, match="action"):
        audit_log.append(store.conn, "ofc-1", "Log On!")
    with pytest.raises(ValidationError, match="actor"):
        audit_log.append(store.conn, "ofc\n1", "logon")
    with pytest.raises(ValidationError, match="JSON"):
        audit_log.append(store.conn, "ofc-1", "logon", {"when": object()})


def test_retention_keeps_a_year_and_the_chain_verifiable(store: Store) -> None:
    for day in range(0, 500, 50):  # 10 entries, 50 days apart
        audit_log.append(store.conn, "system", "config_change", {"day": day}, now=T0 + timedelta(days=day))
    with pytest.raises(ValueError, match="at least 365"):
        store.audit_retention(364)
    now = T0 + timedelta(days=500)
    removed = store.audit_retention(365, now=now)
    assert removed == 3  # days 0, 50, 100 are older than 365 days
    entries = audit_log.entries(store.conn)
    assert [e.details_dict.get("day") for e in entries] == [150, 200, 250, 300, 350, 400, 450, None]
    assert entries[-1].action == "audit_retention" and entries[-1].details_dict["through_seq"] == 3
    cp = audit_log.checkpoint(store.conn)
    assert cp is not None and (cp.seq, cp.removed_total) == (3, 3)
    assert store.verify_audit() is None
    assert store.audit_retention(365, now=now) == 0
    fill(store, 2)
    assert store.verify_audit() is None
    tamper(store, ("DELETE FROM audit WHERE seq = 4", ()))
    assert store.verify_audit() == 4, "the first entry after the checkpoint is still checked against it"


def test_retention_never_removes_young_entries_after_a_clock_step_back(store: Store) -> None:
    audit_log.append(store.conn, "system", "logon", {}, now=T0)
    audit_log.append(store.conn, "system", "logon", {}, now=T0 + timedelta(days=400))
    audit_log.append(store.conn, "system", "logon", {}, now=T0 + timedelta(days=1))  # clock went back
    assert store.audit_retention(365, now=T0 + timedelta(days=500)) == 1
    assert [e.seq for e in audit_log.entries(store.conn)][:2] == [2, 3]


def test_retention_refuses_to_erase_a_broken_part(store: Store) -> None:
    for day in range(3):
        audit_log.append(store.conn, "system", "logon", {"d": day}, now=T0 + timedelta(days=day))
    tamper(store, ("UPDATE audit SET actor = 'intruder' WHERE seq = 2", ()))
    with pytest.raises(AuditChainError, match="seq 2"):
        store.audit_retention(365, now=T0 + timedelta(days=1000))
    assert len(audit_log.entries(store.conn)) == 3


def test_concurrent_writers_keep_one_chain(data_dir: Path) -> None:
    def writer(name: str) -> None:
        with Store.open_data_dir(data_dir, floor_bytes=0) as own:
            for i in range(40):
                own.append_audit(name, "logon", {"i": i})

    Store.open_data_dir(data_dir).close()
    threads = [threading.Thread(target=writer, args=(f"ofc-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store.open_data_dir(data_dir) as store:
        report = store.audit_report()
        assert report.ok and report.entries == 160 and report.last_seq == 160
