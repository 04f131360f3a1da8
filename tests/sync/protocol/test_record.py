"""The record's rules live once (sync.protocol.record): for every field of the table, the station store, the
wire decoder and (where the field is a column) the gallery store accept a value at the limit and refuse
one over it, and refuse a value that breaks the field's pattern."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from appliance.store import Booking, Capture, ValidationError
from appliance.store import records as store_records
from sync.county.gallery.store import RecordFieldError, SQLiteStore
from sync.protocol import record as rules
from sync.protocol import wire
from tests.sync import factory

KEY = factory.key(3)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

# Fields the gallery keeps as columns of its records/templates tables (the others live in the payload only).
GALLERY_COLUMNS = {"record_id", "station", "county", "agency_ori", "booking_number", "operator_id", "template_model"}
# Fields the station store holds (the county is the agent's setting, not part of a stored booking).
STORE_FIELDS = {f.name for f in rules.FIELDS} - {"county"}


def _value(rule: rules.FieldRule, length: int) -> str:
    """A value of ``length`` characters that matches ``rule`` (when it fits the rule at all)."""
    if rule is rules.RECORD_ID:
        uid = rules.new_uuid7()
        return uid if length == len(uid) else uid + "0" * (length - len(uid))
    if rule is rules.AGENCY_ORI:
        return "WA" + "0" * (length - 2)
    return {"station": "s", "county": "c"}.get(rule.name, "b") * length


BAD_PATTERN = {
    "record_id": "0190a0c4-1d2e-4f00-8000-000000000000",  # a UUIDv4-shaped id, 36 characters
    "station": "St-01",
    "county": "King",
    "agency_ori": "0A0170000",  # 9 alphanumerics, but no 2-letter state code
    "booking_number": "2026#000123",
}


# --- one side each: True if it accepts the value --------------------------------------------------


def _store_accepts(rule: rules.FieldRule, value: str) -> bool:
    booking = {"agency_ori": "WA0170000", "booking_number": "2026-000123", "operator_id": "ofc-1187",
               "captured_at": factory.T0, "station_id": "st-01"}
    capture: dict[str, object] = {"template": None, "template_model": None, "override_reason": None}
    pose = "frontal"
    try:
        if rule is rules.RECORD_ID:
            store_records.check_record_id(value)
            return True
        if rule.name in ("agency_ori", "booking_number", "operator_id"):
            booking[rule.name] = value
        elif rule is rules.STATION:
            booking["station_id"] = value
        elif rule is rules.TEMPLATE_MODEL:
            capture.update(template=[0.1, 0.2], template_model=value)
        elif rule is rules.OVERRIDE_REASON:
            capture["override_reason"] = value
        elif rule is rules.SMT_DESCRIPTION:
            pose, capture["smt_description"] = "smt", value
        Booking(**booking)  # type: ignore[arg-type]
        Capture.from_jpeg(pose, factory.jpeg(), 48, 60, "ofc-1187", **capture)
    except ValidationError:
        return False
    return True


def _wire_record(rule: rules.FieldRule, value: str) -> wire.WireRecord:
    rec = factory.record()
    if rule is rules.RECORD_ID:
        return dataclasses.replace(rec, record_id=value)
    if rule is rules.STATION:
        return dataclasses.replace(rec, station=value)
    if rule is rules.COUNTY:
        return dataclasses.replace(rec, county=value)
    booking_field = {"agency_ori": "ori", "booking_number": "booking_number", "operator_id": "operator"}
    if rule.name in booking_field:
        return dataclasses.replace(rec, booking=dataclasses.replace(rec.booking, **{booking_field[rule.name]: value}))
    frontal, profile, smt = rec.captures
    if rule is rules.TEMPLATE_MODEL:
        frontal = dataclasses.replace(frontal, template=dataclasses.replace(frontal.template, model=value))
    elif rule is rules.OVERRIDE_REASON:
        frontal = dataclasses.replace(frontal, override_reason=value)
    elif rule is rules.SMT_DESCRIPTION:
        smt = dataclasses.replace(smt, description=value)
    return dataclasses.replace(rec, captures=(frontal, profile, smt))


def _wire_accepts(rule: rules.FieldRule, value: str) -> bool:
    """Sign the record's CBOR as is (no encoder-side check), then ask the decoder."""
    rec = _wire_record(rule, value)
    content = cbor2.dumps(wire.record_as_map(rec), canonical=True, datetime_as_timestamp=True)
    payload = wire.sign1(content, content_type=wire.RECORD_CONTENT_TYPE, kid=rec.station, key=KEY)
    try:
        wire.decode_record(payload, lambda kid: KEY.public_key())
    except wire.WireError:
        return False
    return True


def _gallery_accepts(rule: rules.FieldRule, value: str, tmp_path: Path) -> bool:
    rec = _wire_record(rule, value)
    name = f"gallery-{rule.name}-{hashlib.sha256(value.encode()).hexdigest()[:8]}.db"
    store = SQLiteStore(tmp_path / name)
    try:
        if rules.STATION.pattern.fullmatch(rec.station) and rules.COUNTY.pattern.fullmatch(rec.county):
            store.register_device(rec.station, rec.county, RAW)
        verified = wire.VerifiedRecord(record=rec, kid=rec.station, content_sha256=b"\0" * 32)
        try:
            return store.insert_record(verified, b"payload") == "stored"
        except RecordFieldError:
            return False
    finally:
        store.close()


def _sides(rule: rules.FieldRule, tmp_path: Path) -> dict[str, Callable[[str], bool]]:
    sides: dict[str, Callable[[str], bool]] = {"wire": lambda v: _wire_accepts(rule, v)}
    if rule.name in STORE_FIELDS:
        sides["store"] = lambda v: _store_accepts(rule, v)
    if rule.name in GALLERY_COLUMNS:
        sides["gallery"] = lambda v: _gallery_accepts(rule, v, tmp_path)
    return sides


# --- the proof ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", rules.FIELDS, ids=lambda r: r.name)
def test_every_side_accepts_the_limit_and_refuses_one_over(rule: rules.FieldRule, tmp_path: Path) -> None:
    at_limit, over = _value(rule, rule.max_len), _value(rule, rule.max_len + 1)
    assert len(at_limit) == rule.max_len and len(over) == rule.max_len + 1
    sides = _sides(rule, tmp_path)
    assert {name: accepts(at_limit) for name, accepts in sides.items()} == dict.fromkeys(sides, True)
    assert {name: accepts(over) for name, accepts in sides.items()} == dict.fromkeys(sides, False)


@pytest.mark.parametrize("rule", [r for r in rules.FIELDS if r.name in BAD_PATTERN], ids=lambda r: r.name)
def test_every_side_refuses_a_value_that_breaks_the_pattern(rule: rules.FieldRule, tmp_path: Path) -> None:
    bad = BAD_PATTERN[rule.name]
    assert len(bad) <= rule.max_len
    sides = _sides(rule, tmp_path)
    assert {name: accepts(bad) for name, accepts in sides.items()} == dict.fromkeys(sides, False)


def test_the_table_names_every_field_once_with_a_reason() -> None:
    names = [r.name for r in rules.FIELDS]
    assert len(names) == len(set(names))
    assert all(r.max_len > 0 and r.description for r in rules.FIELDS)
    assert set(names) >= STORE_FIELDS | GALLERY_COLUMNS


def test_one_uuid7_maker_and_checker() -> None:
    assert wire.uuid7 is rules.new_uuid7 and store_records.new_record_id is rules.new_uuid7
    ids = [rules.new_uuid7() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(rules.check_uuid7(i) == i for i in ids[:10])
    fixed = rules.new_uuid7(unix_ms=1_700_000_000_000)
    assert rules.uuid7_time(fixed) == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
    assert store_records.record_id_time(fixed) == rules.uuid7_time(fixed)


def test_limits_the_capture_screen_and_nist_export_take_from_the_table() -> None:
    from appliance.capture.session.snapshots import MAX_SMT_DESCRIPTION
    from appliance.config import CaptureConfig
    from sync.county.gallery.nist.codes import ORI_RE, TDS_MAX

    assert MAX_SMT_DESCRIPTION == rules.SMT_DESCRIPTION.max_len <= TDS_MAX
    assert ORI_RE is rules.AGENCY_ORI.pattern
    CaptureConfig(override_reason_max=rules.OVERRIDE_REASON.max_len)
    with pytest.raises(ValueError, match="override_reason_max"):
        CaptureConfig(override_reason_max=rules.OVERRIDE_REASON.max_len + 1)
