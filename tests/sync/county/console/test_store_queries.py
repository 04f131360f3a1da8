"""The store queries the console reads (``find_records``, ``rejections_of``, ``audit_of``) on SQLite and on a
private PostgreSQL (the pgserver wheel the search tests use)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.county.gallery.store import GalleryStore, PostgresStore, SQLiteStore
from sync.protocol import wire
from tests.sync import factory
from tests.sync.county.search.conftest import KEY, RAW


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryStore]:
    if request.param == "sqlite":
        s: GalleryStore = SQLiteStore(tmp_path / "g.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_uri"), schema=f"console_{uuid.uuid4().hex[:10]}")
    try:
        yield s
    finally:
        if isinstance(s, PostgresStore):
            s.drop_schema()
        s.close()


def _add(store: GalleryStore, booking: str, operator: str, station: str, minutes: int) -> str:
    rec = factory.record(station=station, booking=wire.WireBooking(
        ori="WA0170000", booking_number=booking, operator=operator,
        captured_at=factory.T0 + dt.timedelta(minutes=minutes)))
    rec = dataclasses.replace(rec, captures=(factory.capture("frontal"),))
    payload = wire.encode_record(rec, KEY)
    store.insert_record(wire.verify_record(payload, lambda kid: KEY.public_key()), payload)
    return rec.record_id


def test_filters_history_and_audit_of_a_record(store: GalleryStore) -> None:
    for station in ("st-01", "st-02"):
        store.register_device(station, "king", RAW)
    a = _add(store, "B-1", "ofc-1", "st-01", 0)
    b = _add(store, "B-2", "ofc-2", "st-01", 60)
    c = _add(store, "B-3", "ofc-1", "st-02", 120)
    ids = lambda **kw: [r.record_id for r in store.find_records(**kw)]  # noqa: E731
    assert ids() == [c, b, a]  # newest capture first
    assert ids(booking_number="B-2") == [b]
    assert ids(operator="ofc-1") == [c, a]
    assert ids(station="st-01", operator="ofc-1") == [a]
    assert ids(since=factory.T0 + dt.timedelta(minutes=30), until=factory.T0 + dt.timedelta(minutes=120)) == [b]
    assert ids(ori="WA9990000") == []
    assert ids(limit=1, offset=1) == [b]
    store.log_rejection(topic="t", station="st-01", record_id=a, reason="replay", detail="other content",
                        payload_sha256=b"\x01" * 32, payload_size=9)
    assert [(r.reason, r.detail) for r in store.rejections_of(a)] == [("replay", "other content")]
    assert store.rejections_of(b) == []
    store.audit("u1", "console_record_view", a, {})
    store.audit("u1", "export", b, {})
    assert [(e.action, e.subject) for e in store.audit_of(a)] == [("console_record_view", a)]
