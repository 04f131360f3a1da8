"""Gallery storage, the same tests against SQLite and a private PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.store import (
    DeviceExistsError,
    GalleryStore,
    GalleryStoreError,
    PostgresStore,
    RecordConflictError,
    SQLiteStore,
    UnknownDeviceError,
    open_store,
)
from sync.protocol import wire
from tests.sync import factory

KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def store(gallery_store: GalleryStore) -> GalleryStore:
    return gallery_store


def _verified(rec: wire.WireRecord) -> tuple[wire.VerifiedRecord, bytes]:
    payload = wire.encode_record(rec, KEY)
    return wire.verify_record(payload, lambda kid: KEY.public_key()), payload


def test_devices_register_list_revoke(store: GalleryStore) -> None:
    t = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    d = store.register_device("st-01", "king", RAW, now=t)
    assert (d.station, d.county, d.status, d.registered_at) == ("st-01", "king", "active", t)
    store.register_device(
        "st-02",
        "king",
        factory.key(2).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )
    assert [x.station for x in store.list_devices()] == ["st-01", "st-02"]
    got = store.get_device("st-01")
    assert (
        got is not None
        and got.public_key == RAW
        and got.verify_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == RAW
    )
    with pytest.raises(DeviceExistsError):
        store.register_device("st-01", "king", RAW)
    revoked = store.revoke_device("st-01", now=t + dt.timedelta(days=1))
    assert revoked.status == "revoked" and revoked.revoked_at == t + dt.timedelta(days=1)
    assert store.revoke_device("st-01").status == "revoked"  # idempotent
    with pytest.raises(UnknownDeviceError):
        store.revoke_device("st-99")
    assert store.get_device("st-99") is None
    with pytest.raises(ValueError):
        store.register_device("ST 01", "king", RAW)
    with pytest.raises(ValueError):
        store.register_device("st-03", "king", b"short")


def test_insert_is_idempotent_on_record_id(store: GalleryStore) -> None:
    store.register_device("st-01", "king", RAW)
    rec = factory.record()
    verified, payload = _verified(rec)
    received = dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc)
    assert store.insert_record(verified, payload, received_at=received) == "stored"
    assert store.insert_record(verified, payload) == "duplicate"
    assert store.count_records() == 1
    row = store.get_record(rec.record_id)
    assert row is not None
    assert (row.station, row.ori, row.booking_number, row.operator, row.capture_count) == (
        "st-01",
        "WA0170000",
        "2026-000123",
        "ofc-1187",
        3,
    )
    assert row.captured_at == factory.T0 and row.received_at == received
    assert row.content_sha256 == verified.content_sha256
    assert store.get_payload(rec.record_id) == payload
    templates = store.templates(rec.record_id)
    assert [(t.capture_index, t.pose, t.model, t.dim) for t in templates] == [(0, "frontal", "dlib-resnet-v1@1", 128)]
    assert templates[0].vector == factory.template().values
    assert [r.record_id for r in store.list_records()] == [rec.record_id]
    assert store.list_records(station="st-02") == []


def test_same_id_with_other_content_is_a_conflict_and_changes_nothing(store: GalleryStore) -> None:
    store.register_device("st-01", "king", RAW)
    rec = factory.record()
    verified, payload = _verified(rec)
    store.insert_record(verified, payload)
    other = factory.record(record_id=rec.record_id, created_at=factory.T0 + dt.timedelta(hours=1))
    v2, p2 = _verified(other)
    with pytest.raises(RecordConflictError):
        store.insert_record(v2, p2)
    assert store.get_payload(rec.record_id) == payload
    assert store.count_records() == 1


def test_record_from_an_unregistered_station_is_refused_by_the_schema(store: GalleryStore) -> None:
    verified, payload = _verified(factory.record("st-01"))
    with pytest.raises(Exception):  # noqa: B017 - sqlite3.IntegrityError or psycopg.IntegrityError
        store.insert_record(verified, payload)
    assert store.count_records() == 0


def test_rejections_are_logged_without_the_payload(store: GalleryStore) -> None:
    store.log_rejection(
        topic="booking/v1/king/st-01/records",
        station="st-01",
        record_id=None,
        reason="bad_signature",
        detail="nope",
        payload_sha256=b"\x01" * 32,
        payload_size=10,
    )
    store.log_rejection(
        topic="x",
        station=None,
        record_id=wire.uuid7(),
        reason="replay",
        detail="d",
        payload_sha256=b"\x02" * 32,
        payload_size=20,
    )
    rows = store.list_rejections()
    assert [r.reason for r in rows] == ["replay", "bad_signature"]
    assert rows[1].payload_size == 10 and rows[1].payload_sha256 == b"\x01" * 32


def test_concurrent_inserts_of_one_record_store_it_once(store: GalleryStore) -> None:
    store.register_device("st-01", "king", RAW)
    verified, payload = _verified(factory.record())
    results: list[Any] = []

    def worker() -> None:
        results.append(store.insert_record(verified, payload))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate"] * 7 + ["stored"]
    assert store.count_records() == 1


def test_a_reader_is_another_connection_that_sees_each_commit(store: GalleryStore) -> None:
    """The receiver's checkers look devices up on their own connection: not behind the lock a group commit
    holds, and a revocation is seen by the next record."""
    reader = store.reader()
    try:
        assert reader is not store and reader._lock is not store._lock
        assert reader.get_device("st-01") is None
        store.register_device("st-01", "king", RAW)
        added = reader.get_device("st-01")
        assert added is not None and added.active
        store.revoke_device("st-01")
        revoked = reader.get_device("st-01")
        assert revoked is not None and not revoked.active
    finally:
        reader.close()
    memory = SQLiteStore(":memory:")
    assert memory.reader() is memory  # one connection is all a memory database has
    memory.close()


def test_sqlite_settings_and_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "gallery.db"
    s = SQLiteStore(path)
    s.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    s = SQLiteStore(path)
    assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert s._conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    assert s._conn.execute("PRAGMA page_size").fetchone()[0] == 16384  # a 1 MB record is 64 pages, not 256
    s.close()


def test_committed_record_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gallery.db"
    s = SQLiteStore(path)
    s.register_device("st-01", "king", RAW)
    rec = factory.record()
    s.insert_record(*_verified(rec))
    s.close()
    s = open_store(f"sqlite://{path}")
    assert s.get_record(rec.record_id) is not None
    s.close()


def test_open_store_urls(tmp_path: Path, pg_uri: str) -> None:
    s = open_store(tmp_path / "a.db")
    assert isinstance(s, SQLiteStore)
    s.close()
    with pytest.raises(GalleryStoreError):
        open_store("mysql://localhost/x")
    schema = f"gallery_test_{uuid.uuid4().hex[:12]}"
    pg = open_store(f"{pg_uri}{'&' if '?' in pg_uri else '?'}schema={schema}")
    assert isinstance(pg, PostgresStore) and pg.schema == schema
    pg.drop_schema()
    pg.close()
    with pytest.raises(GalleryStoreError):
        PostgresStore(pg_uri, schema="bad; drop")


def test_enrolment_registry_adapter(tmp_path: Path) -> None:
    """The enrolment server can write keys straight into the gallery's device table."""
    registry_mod = pytest.importorskip("sync.county.enroll.registry")
    from sync.county.gallery.devices import StoreDeviceRegistry, public_key_pem

    store = SQLiteStore(tmp_path / "g.db")
    registry = StoreDeviceRegistry(store)
    assert isinstance(registry, registry_mod.DeviceRegistry)
    pem = public_key_pem(RAW).decode()
    registry.register_device("king", "st-01", pem)
    registry.register_device("king", "st-01", pem)  # a retried enrolment is a no-op
    assert [d.station for d in store.list_devices()] == ["st-01"]
    other = public_key_pem(
        factory.key(2).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    with pytest.raises(registry_mod.RegistryConflict):
        registry.register_device("king", "st-01", other)
    with pytest.raises(registry_mod.RegistryConflict):
        registry.register_device("pierce", "st-01", pem)
    store.revoke_device("st-01")
    with pytest.raises(registry_mod.RegistryConflict):
        registry.register_device("king", "st-01", pem)
    with pytest.raises(registry_mod.RegistryError):
        registry.register_device("king", "st-02", "not a key")
    store.close()
