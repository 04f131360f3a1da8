"""What one booking record is made of, checked before anything touches the disk.

A record is one `Booking` (who was booked, where, by whom, when) and its `Capture` objects (one image per
pose, with its quality report and template). Both are frozen dataclasses that validate themselves on
construction, so a bad value is refused at the desk with a message the officer or the integrator can act
on, instead of being stored and later rejected by the county gallery (or worse, silently truncated by a
downstream ANSI/NIST writer that only takes printable ASCII).

The record id is a UUIDv7 (RFC 9562) made on the device when the booking is saved: it is the idempotency
key from the station to the gallery, and its time-ordered layout keeps the SQLite primary-key index
append-mostly.

Every limit and pattern comes from `sync.protocol.record` (the record's rules, written once for the
store, the wire and the gallery); this module words the officer's messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from appliance.store.errors import ValidationError
from sync.protocol import record as rules
from sync.protocol.record import MAX_IMAGE_SIDE, MAX_TEMPLATE_DIM, POSES, SINGLE_POSES

ORI_PATTERN = rules.AGENCY_ORI.pattern
BOOKING_NUMBER_PATTERN = rules.BOOKING_NUMBER.pattern
STATION_ID_PATTERN = rules.STATION.pattern
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")

MAX_JPEG_BYTES = 20 * 1024 * 1024
JPEG_MAGIC = b"\xff\xd8\xff"


# --- record ids ---------------------------------------------------------------------------------

new_record_id = rules.new_uuid7
"""A new UUIDv7 record id, monotonic within this process (see `sync.protocol.record.new_uuid7`)."""


def check_record_id(record_id: str) -> str:
    """Return ``record_id`` if it is a canonical UUIDv7 string, else raise `ValidationError`.

    Ids come back from the wire (gallery acks) and from county purge commands, so they are checked
    before being used as keys: a malformed id must be an error, not a silent "no such record".
    """
    try:
        return rules.check_uuid7(record_id, "record id")
    except rules.RecordRuleError as exc:
        if exc.problem == "type":
            raise ValidationError(f"record id must be a string, got {type(record_id).__name__}") from None
        if exc.problem == "not_uuid":
            raise ValidationError(f"record id {record_id!r} is not a UUID") from None
        raise ValidationError(f"record id {record_id!r} is not a canonical lower-case UUIDv7") from None


def is_record_id(text: str) -> bool:
    """True if ``text`` looks like a record id (used to tell a record id from a booking number)."""
    try:
        check_record_id(text)
    except ValidationError:
        return False
    return True


def record_id_time(record_id: str) -> datetime:
    """The creation time (UTC, millisecond precision) carried in a UUIDv7 record id."""
    return rules.uuid7_time(check_record_id(record_id))


# --- field checks ---------------------------------------------------------------------------------


def _check_text(label: str, value: object, max_len: int, *, allow_empty: bool = False) -> str:
    """Common checks for any text field: a str, no control or other non-printable characters, bounded.

    Control characters are singled out by code point and position because they are the usual way a
    barcode scanner or a copy-paste corrupts a field (a trailing CR/LF or TAB), and the officer needs to
    know exactly what to retype.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be text, got {type(value).__name__}")
    for position, char in enumerate(value, start=1):
        if not char.isprintable():
            kind = "a control character" if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F else (
                "a non-printable character")
            raise ValidationError(
                f"{label} {value!r} contains {kind} (U+{ord(char):04X}) at position {position}; "
                f"retype it without that character")
    if not value and not allow_empty:
        raise ValidationError(f"{label} is empty")
    if value != value.strip():
        raise ValidationError(f"{label} {value!r} has leading or trailing spaces")
    if len(value) > max_len:
        raise ValidationError(f"{label} is {len(value)} characters long; at most {max_len} are allowed")
    return value


def check_ori(value: object) -> str:
    """Agency ORI: 9 characters per NCIC, two-letter state code then 7 letters or digits, upper case."""
    text = _check_text("agency ORI", value, rules.AGENCY_ORI.max_len)
    if not ORI_PATTERN.fullmatch(text):
        raise ValidationError(
            f"agency ORI {text!r} is not a valid NCIC ORI: it must be exactly 9 upper-case letters or "
            f"digits, starting with the two-letter state code (e.g. 'VA0290000')")
    return text


def check_booking_number(value: object) -> str:
    """Booking number: 1-32 of A-Z a-z 0-9 space - _ / . (what jail management systems issue)."""
    text = _check_text("booking number", value, rules.BOOKING_NUMBER.max_len)
    if not BOOKING_NUMBER_PATTERN.fullmatch(text):
        bad = sorted({c for c in text if not BOOKING_NUMBER_PATTERN.fullmatch(c)})
        raise ValidationError(
            f"booking number {text!r} contains {''.join(bad)!r}; only letters, digits, space and - _ / . "
            f"are allowed")
    return text


def check_station_id(value: object) -> str:
    """Station id: a slug (lower-case letters, digits, inner hyphens), as it appears in MQTT topics."""
    text = _check_text("station id", value, rules.STATION.max_len)
    if not STATION_ID_PATTERN.fullmatch(text):
        raise ValidationError(
            f"station id {text!r} must be a slug: lower-case letters, digits and inner hyphens, "
            f"at most {rules.STATION.max_len} characters (it is part of the MQTT topic)")
    return text


def check_utc(label: str, value: object) -> datetime:
    """A timezone-aware datetime, returned in UTC; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{label} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{label} {value.isoformat()} has no time zone; give it in UTC")
    return value.astimezone(timezone.utc)


# --- the record -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Booking:
    """The booking a set of captures belongs to.

    ``captured_at`` is normalised to UTC on construction; every field is validated (see the ``check_*``
    functions) and a `ValidationError` says which one is wrong and why.
    """

    agency_ori: str
    booking_number: str
    operator_id: str
    captured_at: datetime
    station_id: str

    def __post_init__(self) -> None:
        check_ori(self.agency_ori)
        check_booking_number(self.booking_number)
        _check_text("operator id", self.operator_id, rules.OPERATOR_ID.max_len)
        check_station_id(self.station_id)
        object.__setattr__(self, "captured_at", check_utc("capture time", self.captured_at))


@dataclass(frozen=True)
class Capture:
    """One image of a booking: a pose, its JPEG, the quality report and (optionally) a face template.

    ``sha256`` is the hex digest of ``jpeg`` and is checked here, so a caller that hashed the wrong
    buffer finds out at once; the store checks it again after decryption on every read. Use
    `Capture.from_jpeg` to have it computed.

    ``template`` is the embedding as a list of floats with ``template_model`` naming the model and
    version that produced it (the gallery never compares templates of different models), or ``None``
    for poses that have no template (profiles, SMT). ``override_reason`` is set when the officer kept
    an image that failed the quality profile; it is audited.
    """

    pose: str
    jpeg: bytes
    width: int
    height: int
    sha256: str
    operator_id: str
    quality: Mapping[str, Any] = field(default_factory=dict)
    template: Sequence[float] | None = None
    template_model: str | None = None
    override_reason: str | None = None
    smt_description: str | None = None

    def __post_init__(self) -> None:
        if self.pose not in POSES:
            raise ValidationError(f"pose {self.pose!r} is not one of {', '.join(POSES)}")
        if not isinstance(self.jpeg, (bytes, bytearray, memoryview)):
            raise ValidationError(f"{self.pose} image must be bytes, got {type(self.jpeg).__name__}")
        object.__setattr__(self, "jpeg", bytes(self.jpeg))
        if not self.jpeg.startswith(JPEG_MAGIC):
            raise ValidationError(f"{self.pose} image is not a JPEG (it does not start with FF D8 FF)")
        if len(self.jpeg) > MAX_JPEG_BYTES:
            raise ValidationError(f"{self.pose} image is {len(self.jpeg)} bytes; at most {MAX_JPEG_BYTES}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_IMAGE_SIDE:
                raise ValidationError(f"{self.pose} image {name} {value!r} must be 1..{MAX_IMAGE_SIDE} pixels")
        if not isinstance(self.sha256, str) or not SHA256_PATTERN.fullmatch(self.sha256):
            raise ValidationError(f"{self.pose} sha256 must be 64 lower-case hex digits")
        if hashlib.sha256(self.jpeg).hexdigest() != self.sha256:
            raise ValidationError(f"{self.pose} sha256 does not match the image bytes")
        _check_text("capture operator id", self.operator_id, rules.OPERATOR_ID.max_len)
        self._check_quality()
        self._check_template()
        if self.override_reason is not None:
            _check_text(f"{self.pose} override reason", self.override_reason, rules.OVERRIDE_REASON.max_len)
        if self.pose == "smt":
            if self.smt_description is None:
                raise ValidationError("an SMT capture needs a description (e.g. 'tattoo, left forearm')")
            _check_text("SMT description", self.smt_description, rules.SMT_DESCRIPTION.max_len)
        elif self.smt_description is not None:
            raise ValidationError(f"only SMT captures take a description, not {self.pose}")

    def _check_quality(self) -> None:
        if not isinstance(self.quality, Mapping):
            raise ValidationError(f"{self.pose} quality report must be a mapping")
        try:
            json.dumps(self.quality, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{self.pose} quality report is not plain JSON data: {exc}") from None
        object.__setattr__(self, "quality", dict(self.quality))

    def _check_template(self) -> None:
        if self.template is None:
            if self.template_model is not None:
                raise ValidationError(f"{self.pose} has a template model id but no template")
            return
        values = list(self.template)
        if not 0 < len(values) <= MAX_TEMPLATE_DIM:
            raise ValidationError(f"{self.pose} template has {len(values)} values; 1..{MAX_TEMPLATE_DIM} needed")
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ValidationError(f"{self.pose} template must be a list of numbers") from None
        if not all(math.isfinite(v) for v in floats):
            raise ValidationError(f"{self.pose} template contains NaN or infinity")
        if self.template_model is None:
            raise ValidationError(f"{self.pose} template needs the id of the model that made it")
        _check_text("template model id", self.template_model, rules.TEMPLATE_MODEL.max_len)
        object.__setattr__(self, "template", floats)

    @classmethod
    def from_jpeg(cls, pose: str, jpeg: bytes, width: int, height: int, operator_id: str,
                  **extra: Any) -> Capture:
        """Build a capture, computing the sha256 of ``jpeg`` (the usual way to make one)."""
        return cls(pose=pose, jpeg=jpeg, width=width, height=height,
                   sha256=hashlib.sha256(jpeg).hexdigest(), operator_id=operator_id, **extra)


def check_captures(captures: Sequence[Capture]) -> list[Capture]:
    """Check the set of captures of one record: exactly one frontal, profiles at most once each.

    The frontal view is required because it is the one the template and the county's search use; a
    record without it would be accepted here and rejected at the gallery days later.
    """
    items = list(captures)
    if not all(isinstance(c, Capture) for c in items):
        raise ValidationError("captures must be Capture objects")
    poses = [c.pose for c in items]
    if poses.count("frontal") != 1:
        raise ValidationError(f"a booking needs exactly one frontal capture, got {poses.count('frontal')}")
    for pose in SINGLE_POSES:
        if poses.count(pose) > 1:
            raise ValidationError(f"a booking takes at most one {pose} capture, got {poses.count(pose)}")
    return items
