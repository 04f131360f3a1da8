"""A flood of refused payloads from one station costs one row per reason and a bounded number of log lines,
and a legitimate record in the middle of it is still stored."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.ratelog import RateLimitedLog
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import GalleryStore, SQLiteStore
from sync.protocol import wire
from tests.sync import factory

KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
TOPIC = "booking/v1/king/st-01/records"


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    db = SQLiteStore(tmp_path / "g.db")
    db.register_device("st-01", "king", RAW)
    config = ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k")
    r = GalleryReceiver(config, db, clock=lambda: dt.datetime.now(dt.timezone.utc))
    yield r
    db.close()


def test_a_flood_from_one_station_is_one_counted_row_and_few_log_lines(receiver: GalleryReceiver,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sync.county.gallery.receiver")
    junk = [os.urandom(64) for _ in range(1500)]
    good = factory.record()
    for i, payload in enumerate(junk):
        out = receiver.handle(TOPIC, payload)
        assert out.ack is not None and out.ack.status == "rejected"
        if i == 700:
            assert receiver.handle(TOPIC, wire.encode_record(good, KEY)).ack == wire.Ack(good.record_id, "stored")
    receiver.handle("booking/v1/king/st-01/records", wire.encode_record(factory.record(), factory.key(9)))
    rows = receiver.store.list_rejections()
    assert [(r.station, r.reason, r.count) for r in rows] == [("st-01", "bad_signature", 1),
                                                             ("st-01", "not_cbor", 1500)]
    flood = rows[1]
    assert flood.first_payload_size == 64 and flood.payload_size == 64
    import hashlib

    assert flood.first_payload_sha256 == hashlib.sha256(junk[0]).digest()
    assert flood.payload_sha256 == hashlib.sha256(junk[-1]).digest()
    assert flood.first_received_at is not None and flood.first_received_at <= flood.received_at
    assert receiver.store.get_record(good.record_id) is not None
    lines = [r for r in caplog.records if "rejected payload" in r.getMessage()]
    assert len(lines) == 2  # the first of each reason; the rest of the minute is counted, not written


def test_the_rate_limited_log_says_how_many_it_held_back() -> None:
    now = [0.0]
    limiter = RateLimitedLog(60.0, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert [limiter.allow("a") for _ in range(5)] == [None] * 5
    assert limiter.allow("b") == 0  # another key is not held back by the first
    now[0] = 61.0
    assert limiter.allow("a") == 5
    assert limiter.allow("a") is None


def test_the_store_collapses_by_station_and_reason_in_both_dialects(gallery_store: GalleryStore) -> None:
    store = gallery_store
    t0 = dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc)
    for i in range(5):
        count = store.log_rejection(topic=TOPIC, station="st-01", record_id=None, reason="not_cbor", detail=f"d{i}",
                                    payload_sha256=bytes([i]) * 32, payload_size=10 + i,
                                    received_at=t0 + dt.timedelta(seconds=i))
    assert count == 5
    store.log_rejection(topic="weird", station=None, record_id=None, reason="bad_topic", detail="x",
                        payload_sha256=b"\x09" * 32, payload_size=1, received_at=t0 + dt.timedelta(seconds=9))
    [odd, flood] = store.list_rejections()
    assert (odd.station, odd.reason, odd.count) == (None, "bad_topic", 1)
    assert (flood.count, flood.first_detail, flood.detail, flood.first_payload_size, flood.payload_size) == (
        5, "d0", "d4", 10, 14)
    assert flood.first_received_at == t0 and flood.received_at == t0 + dt.timedelta(seconds=4)
    assert len(store.list_rejections(limit=1)) == 1
