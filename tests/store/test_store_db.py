"""The Store: atomic saves, verified reads, wrong keys and damaged bytes, settings of the SQLite file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from appliance.store import (
    Capture,
    DecryptError,
    DuplicateRecordError,
    QueueFullError,
    RecordIntegrityError,
    Store,
    StoreKeyFileError,
    UnknownStationRecordError,
    ValidationError,
    WrongKeyError,
    data_paths,
    new_record_id,
)
from appliance.store.crypto import create_key_file
from tests.store.conftest import consistency_problems, jpeg_blob, make_booking, make_captures


def test_database_settings(store: Store) -> None:
    q = store.conn.execute
    assert q("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert q("PRAGMA secure_delete").fetchone()[0] == 1
    assert q("PRAGMA foreign_keys").fetchone()[0] == 1
    assert q("PRAGMA page_size").fetchone()[0] == 16384  # a new file: a 1 MB photo in 64 pages, not 256
    tables = {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"bookings", "captures", "outbox", "audit", "audit_checkpoint", "alarms", "meta"} <= tables


def test_save_and_load_round_trip(store: Store) -> None:
    captures = make_captures()
    captures.append(Capture.from_jpeg("smt", jpeg_blob(5000), 300, 200, "ofc-17", smt_description="tattoo, neck",
                                      override_reason="lighting cannot be fixed at the desk"))
    rid = store.save_booking(make_booking(), captures)
    record = store.load_record(rid)
    assert record.record_id == rid and record.booking == make_booking()
    assert record.captures == captures
    assert record.captures[0].template == [i / 128 for i in range(128)]
    assert record.outbox.state == "pending" and record.outbox.attempts == 0
    actions = [r[0] for r in store.conn.execute("SELECT action FROM audit ORDER BY seq")]
    assert actions == ["capture", "override"]
    assert store.verify_audit() is None


def test_images_and_templates_are_not_stored_in_clear(store: Store) -> None:
    captures = make_captures()
    store.save_booking(make_booking(), captures)
    files = [store.db_path, Path(f"{store.db_path}-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert len(raw) > 3 * 20_000
    for cap in captures:
        assert cap.jpeg[4:68] not in raw


def test_a_failure_in_the_middle_of_a_save_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = store.save_booking(make_booking("KEPT-1"), make_captures())
    import appliance.store.db as db_module

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("power went out between the captures and the outbox row")

    monkeypatch.setattr(db_module.outbox, "enqueue", boom)
    with pytest.raises(RuntimeError):
        store.save_booking(make_booking("LOST-1"), make_captures())
    monkeypatch.undo()
    assert store.records_for_booking("LOST-1") == []
    assert store.conn.execute("SELECT COUNT(*) FROM captures").fetchone()[0] == 3
    assert consistency_problems(store) == []
    assert store.load_record(kept).outbox.state == "pending"


def test_duplicate_record_id_is_refused(store: Store) -> None:
    rid = new_record_id()
    assert store.save_booking(make_booking(), make_captures(), record_id=rid) == rid
    with pytest.raises(DuplicateRecordError, match=rid):
        store.save_booking(make_booking(), make_captures(), record_id=rid)
    assert store.queue_counts()["pending"] == 1


def test_bad_input_never_reaches_the_database(store: Store) -> None:
    with pytest.raises(ValidationError, match="exactly one frontal"):
        store.save_booking(make_booking(), make_captures()[1:])
    with pytest.raises(ValidationError, match="Booking"):
        store.save_booking({"booking_number": "1"}, make_captures())  # type: ignore[arg-type]
    assert store.conn.execute("SELECT COUNT(*) FROM bookings").fetchone()[0] == 0


def test_unknown_record(store: Store) -> None:
    with pytest.raises(UnknownStationRecordError, match="never saved"):
        store.load_record(new_record_id())


def _flip_image_byte(db_path: Path, record_id: str, offset: int) -> None:
    conn = sqlite3.connect(db_path)
    blob = bytearray(conn.execute("SELECT image FROM captures WHERE record_id = ? AND seq = 0",
                                  (record_id,)).fetchone()[0])
    blob[offset] ^= 0x01
    conn.execute("UPDATE captures SET image = ? WHERE record_id = ? AND seq = 0", (bytes(blob), record_id))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("offset", [0, 5, 13, 5000, -1])
def test_flipped_ciphertext_byte_is_a_clear_error_and_other_records_survive(store: Store, offset: int) -> None:
    good = store.save_booking(make_booking("GOOD-1"), make_captures())
    bad = store.save_booking(make_booking("BAD-1"), make_captures())
    _flip_image_byte(store.db_path, bad, offset)
    with pytest.raises(DecryptError) as info:
        store.load_record(bad)
    assert bad in str(info.value) and ("changed or damaged" in str(info.value) or "format" in str(info.value))
    record = store.load_record(good)
    assert record.outbox.state == "pending" and len(record.captures) == 3


@pytest.mark.parametrize("column, value", [("booking_number", "OTHER-1"), ("agency_ori", "MD0030000")])
def test_edited_booking_metadata_makes_the_images_refuse_to_open(store: Store, column: str, value: str) -> None:
    rid = store.save_booking(make_booking(), make_captures())
    store.conn.execute(f"UPDATE bookings SET {column} = ? WHERE record_id = ?", (value, rid))
    with pytest.raises(DecryptError):
        store.load_record(rid)


def test_edited_sha256_is_detected(store: Store) -> None:
    rid = store.save_booking(make_booking(), make_captures())
    store.conn.execute("UPDATE captures SET sha256 = ? WHERE record_id = ? AND seq = 1", ("0" * 64, rid))
    with pytest.raises((DecryptError, RecordIntegrityError)):
        store.load_record(rid)


def test_wrong_key_file_is_refused_at_open(data_dir: Path) -> None:
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        rid = store.save_booking(make_booking(), make_captures())
    _, key_path = data_paths(data_dir)
    right_key = key_path.read_bytes()
    key_path.unlink()
    create_key_file(key_path)
    with pytest.raises(WrongKeyError) as info:
        Store.open_data_dir(data_dir)
    assert "not the key of database" in str(info.value)
    assert isinstance(info.value, DecryptError)
    # Nothing was changed by the failed open: with the right key back, the record is intact and pending.
    key_path.write_bytes(right_key)
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        record = store.load_record(rid)
        assert record.outbox.state == "pending" and len(record.captures) == 3


def test_wrong_key_below_the_store_gives_decrypt_error_not_garbage(store: Store) -> None:
    from appliance.store.crypto import BlobCipher

    rid = store.save_booking(make_booking(), make_captures())
    right = store.cipher
    store.cipher = BlobCipher(os.urandom(32))
    with pytest.raises(DecryptError, match="not the key this data was encrypted with"):
        store.load_record(rid)
    store.cipher = right
    assert store.load_record(rid).outbox.state == "pending"


def test_booking_number_with_control_character_never_reaches_the_store(store: Store) -> None:
    captures = make_captures()
    rid = store.save_booking(make_booking("2026-000123"), captures)
    with pytest.raises(ValidationError, match=r"control character \(U\+000D\) at position 12"):
        store.save_booking(make_booking("2026-000124\r"), make_captures())
    assert store.queue_counts() == {"pending": 1, "delivered": 0, "rejected": 0}
    record = store.load_record(rid)
    assert record.captures == captures and record.outbox.state == "pending"
    assert consistency_problems(store) == []


def test_missing_key_for_an_existing_database_is_not_silently_replaced(data_dir: Path) -> None:
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        store.save_booking(make_booking(), make_captures())
    _, key_path = data_paths(data_dir)
    key_path.unlink()
    with pytest.raises(StoreKeyFileError, match="Restore the key file"):
        Store.open_data_dir(data_dir)
    assert not key_path.exists(), "no new key was made"


def test_group_readable_key_is_refused_at_open(data_dir: Path) -> None:
    Store.open_data_dir(data_dir).close()
    _, key_path = data_paths(data_dir)
    os.chmod(key_path, 0o640)
    with pytest.raises(StoreKeyFileError, match="chmod 600"):
        Store.open_data_dir(data_dir)


def test_queue_limit_refuses_new_bookings_and_raises_an_alarm(data_dir: Path) -> None:
    with Store.open_data_dir(data_dir, floor_bytes=0, max_pending=2) as store:
        first = store.save_booking(make_booking("Q-1"), make_captures())
        store.save_booking(make_booking("Q-2"), make_captures())
        with pytest.raises(QueueFullError, match="NOT saved"):
            store.save_booking(make_booking("Q-3"), make_captures())
        assert [a.name for a in store.active_alarms()] == ["queue_full"]
        store.mark_delivered(first)
        store.save_booking(make_booking("Q-3"), make_captures())
        assert store.active_alarms() == []
        assert store.queue_counts() == {"pending": 2, "delivered": 1, "rejected": 0}


def test_two_connections_see_each_others_commits(data_dir: Path) -> None:
    with Store.open_data_dir(data_dir, floor_bytes=0) as ui, Store.open_data_dir(data_dir, floor_bytes=0) as sync:
        rid = ui.save_booking(make_booking(), make_captures())
        assert [e.record_id for e in sync.due()] == [rid]
        sync.mark_delivered(rid)
        assert ui.load_record(rid).outbox.state == "delivered"


def test_database_files_are_private(data_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        with Store.open_data_dir(data_dir, floor_bytes=0) as store:
            store.save_booking(make_booking(), make_captures())
            db_path = store.db_path
            for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
                assert path.stat().st_mode & 0o777 == 0o600, path
    finally:
        os.umask(old)
