"""Booking and capture validation, and UUIDv7 record ids."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from appliance.store import Booking, Capture, ValidationError
from appliance.store.records import (
    check_captures,
    check_record_id,
    is_record_id,
    new_record_id,
    record_id_time,
)
from tests.store.conftest import T0, jpeg_blob, make_booking, make_captures


def booking(**changes: object) -> Booking:
    fields = {"agency_ori": "VA0290000", "booking_number": "2026-000123", "operator_id": "ofc-17",
              "captured_at": T0, "station_id": "fairfax-desk-1"}
    fields.update(changes)
    return Booking(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("number, char", [("2026\n000123", "U+000A"), ("2026-000123\r", "U+000D"),
                                          ("20\x0026", "U+0000"), ("2026\t1", "U+0009"), ("A\x1b[2J", "U+001B")])
def test_booking_number_with_control_character_is_refused_with_its_position(number: str, char: str) -> None:
    with pytest.raises(ValidationError) as info:
        booking(booking_number=number)
    message = str(info.value)
    assert "booking number" in message and "control character" in message and char in message
    assert "position" in message


@pytest.mark.parametrize("number", ["2026-000123", "B/26 0001.a_x", "1", "X" * 32])
def test_good_booking_numbers(number: str) -> None:
    assert booking(booking_number=number).booking_number == number


@pytest.mark.parametrize("number, words", [("", "empty"), ("X" * 33, "at most 32"), ("26#1", "'#'"),
                                           (" 26-1", "leading or trailing"), ("26\u00e91", "only letters")])
def test_bad_booking_numbers(number: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        booking(booking_number=number)


@pytest.mark.parametrize("ori", ["va0290000", "VA029000", "VA02900000", "9A0290000", "VA-290000"])
def test_ori_is_nine_upper_case_characters_with_a_state_code(ori: str) -> None:
    with pytest.raises(ValidationError, match="ORI"):
        booking(agency_ori=ori)


def test_capture_time_must_be_aware_and_is_normalised_to_utc() -> None:
    with pytest.raises(ValidationError, match="no time zone"):
        booking(captured_at=datetime(2026, 11, 26, 8, 30))
    eastern = timezone(timedelta(hours=-5))
    b = booking(captured_at=datetime(2026, 11, 26, 3, 30, tzinfo=eastern))
    assert b.captured_at == T0 and b.captured_at.tzinfo == timezone.utc


def test_station_id_must_be_a_topic_slug() -> None:
    with pytest.raises(ValidationError, match="slug"):
        booking(station_id="Fairfax Desk/1")


def test_capture_checks() -> None:
    jpeg = jpeg_blob(1000)
    good = Capture.from_jpeg("frontal", jpeg, 480, 600, "ofc-17")
    assert good.sha256 == hashlib.sha256(jpeg).hexdigest()
    with pytest.raises(ValidationError, match="pose"):
        Capture.from_jpeg("back", jpeg, 480, 600, "ofc-17")
    with pytest.raises(ValidationError, match="not a JPEG"):
        Capture.from_jpeg("frontal", b"PNG" + jpeg, 480, 600, "ofc-17")
    with pytest.raises(ValidationError, match="does not match"):
        Capture("frontal", jpeg, 480, 600, "0" * 64, "ofc-17")
    with pytest.raises(ValidationError, match="width"):
        Capture.from_jpeg("frontal", jpeg, 0, 600, "ofc-17")
    with pytest.raises(ValidationError, match="model"):
        Capture.from_jpeg("frontal", jpeg, 480, 600, "ofc-17", template=[0.1, 0.2])
    with pytest.raises(ValidationError, match="NaN"):
        Capture.from_jpeg("frontal", jpeg, 480, 600, "ofc-17", template=[float("nan")], template_model="m")
    with pytest.raises(ValidationError, match="description"):
        Capture.from_jpeg("smt", jpeg, 480, 600, "ofc-17")
    with pytest.raises(ValidationError, match="JSON"):
        Capture.from_jpeg("frontal", jpeg, 480, 600, "ofc-17", quality={"yaw": float("inf")})
    with pytest.raises(ValidationError, match="override reason"):
        Capture.from_jpeg("frontal", jpeg, 480, 600, "ofc-17", override_reason="eyes\x07closed")
    smt = Capture.from_jpeg("smt", jpeg, 480, 600, "ofc-17", smt_description="tattoo, left forearm")
    assert smt.smt_description == "tattoo, left forearm"


def test_a_record_needs_one_frontal_and_each_profile_at_most_once() -> None:
    frontal, left, right = make_captures(size=500)
    smt = Capture.from_jpeg("smt", jpeg_blob(500), 100, 100, "ofc-17", smt_description="scar, chin")
    assert len(check_captures([frontal, left, right, smt, smt])) == 5
    with pytest.raises(ValidationError, match="exactly one frontal"):
        check_captures([left, right])
    with pytest.raises(ValidationError, match="at most one left_profile"):
        check_captures([frontal, left, left])
    assert make_booking().booking_number == "2026-000123"


def test_record_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_record_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    now = datetime.now(timezone.utc)
    assert abs(record_id_time(ids[-1]) - now) < timedelta(seconds=5)


def test_record_id_check() -> None:
    assert is_record_id(new_record_id())
    assert not is_record_id(str(uuid.uuid4()))
    assert not is_record_id(new_record_id().upper())
    assert not is_record_id("2026-000123")
    with pytest.raises(ValidationError, match="not a UUID"):
        check_record_id("nope")
