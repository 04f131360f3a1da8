"""Shared helpers for the store tests: realistic bookings, JPEG-like blobs, a fresh store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from appliance.store import Booking, Capture, Store

T0 = datetime(2026, 11, 26, 8, 30, tzinfo=timezone.utc)


def jpeg_blob(size: int) -> bytes:
    """Random bytes behind a JPEG start-of-image marker: incompressible, like real JPEG data."""
    return b"\xff\xd8\xff\xe0" + os.urandom(max(size - 4, 0))


def make_booking(number: str = "2026-000123", ori: str = "VA0290000", operator: str = "ofc-17") -> Booking:
    return Booking(agency_ori=ori, booking_number=number, operator_id=operator, captured_at=T0,
                   station_id="fairfax-desk-1")


def make_captures(size: int = 20_000, operator: str = "ofc-17") -> list[Capture]:
    """Frontal (with a template) and both profiles."""
    return [
        Capture.from_jpeg("frontal", jpeg_blob(size), 480, 600, operator, quality={"yaw": {"raw": 1.2, "score": 96}},
                          template=[i / 128 for i in range(128)], template_model="dlib_resnet_v1_float32"),
        Capture.from_jpeg("left_profile", jpeg_blob(size), 480, 600, operator),
        Capture.from_jpeg("right_profile", jpeg_blob(size), 480, 600, operator),
    ]


def consistency_problems(store: Store) -> list[str]:
    """Half-written records, in either direction: a booking missing its captures, outbox row or audit
    entry, or a capture/outbox row without its booking."""
    q = store.conn.execute
    problems = []
    for (rid,) in q("SELECT record_id FROM bookings WHERE record_id NOT IN (SELECT record_id FROM outbox)"):
        problems.append(f"booking {rid} has no outbox row")
    for (rid,) in q("SELECT record_id FROM bookings WHERE record_id NOT IN (SELECT record_id FROM captures)"):
        problems.append(f"booking {rid} has no captures")
    for (rid,) in q("SELECT record_id FROM outbox WHERE record_id NOT IN (SELECT record_id FROM bookings)"):
        problems.append(f"outbox row {rid} has no booking")
    for (rid,) in q("SELECT DISTINCT record_id FROM captures WHERE record_id NOT IN (SELECT record_id FROM bookings)"):
        problems.append(f"captures of {rid} have no booking")
    logged = {row[0] for row in q("SELECT json_extract(details, '$.record_id') FROM audit WHERE action = 'capture'")}
    for (rid,) in q("SELECT record_id FROM bookings"):
        if rid not in logged:
            problems.append(f"booking {rid} has no capture audit entry")
    return problems


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    with Store.open_data_dir(data_dir, floor_bytes=0) as opened:
        yield opened
