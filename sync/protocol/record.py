"""The booking record's rules, written once: every field's limit and pattern, the poses, and the record id.

The station store (``appliance.store.records``), the wire codec (:mod:`sync.protocol.wire`), the gallery
store and the ANSI/NIST exporter all take their limits from here, so a value one side accepts is never
refused (or silently cut) by the next. Each side keeps its own exception type and wording: the check
functions below raise :class:`RecordRuleError`, which the callers translate.

The table (one :class:`FieldRule` per field; ``max_len`` in characters):

==================  =======  ====================================  ==============================================
field               max_len  pattern                               why this one
==================  =======  ====================================  ==============================================
record_id           36       canonical lower-case UUIDv7           RFC 9562 text form; made on the device
station             63       topic slug (``topics.SLUG_RE``)       it is an MQTT topic level and the TLS CN; the
                                                                   topic slug is the truth (the store said 64)
county              63       topic slug                            same as station
agency_ori          9        ``[A-Z]{2}[A-Z0-9]{7}``               NCIC ORI: 2-letter state code, 7 alphanumerics;
                                                                   the stricter pattern on both sides
booking_number      32       ``[A-Za-z0-9\\-_/. ]{1,32}``           the store already refused more than 32 (and
                                                                   other characters), so no station ever sent
                                                                   more; the wire (64, any text) now says the same
operator_id         64       printable text                        store and wire already agreed; also a
                                                                   capture's ``operator`` (on the wire only
                                                                   after a hand-over, see ``WireCapture``)
template_model      128      printable text                        store and wire already agreed
override_reason     500      printable text                        the store's limit, which stored records hold;
                                                                   the wire said 512, the officer UI allows 200
                                                                   by default (a policy under this limit). The
                                                                   NIST 10.038 comment is cut at 126 (a format
                                                                   limit of the export, not of the record)
smt_description     200      printable text                        the store's and the capture screen's limit;
                                                                   the wire said 1024; fits NIST 10.042's 256
==================  =======  ====================================  ==============================================

Numbers that are not text fields: :data:`MAX_IMAGE_SIDE` pixels per side, :data:`MAX_TEMPLATE_DIM` values
per template, and :data:`POSES` / :data:`SINGLE_POSES`.

The record id is a UUIDv7 (RFC 9562) made on the device when the booking is saved: it is the idempotency
key from the station to the gallery, and its time-ordered layout keeps the SQLite primary-key index
append-mostly. :func:`new_uuid7` is the one maker (monotonic within a process), :func:`check_uuid7` the
one checker and :func:`uuid7_time` reads its time back.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sync.protocol.topics import SLUG_RE

POSES: tuple[str, ...] = ("frontal", "left_profile", "right_profile", "smt")
"""Capture poses: the three mug-shot views and scars/marks/tattoos (SMT, may repeat)."""

SINGLE_POSES = frozenset({"frontal", "left_profile", "right_profile"})
"""Poses a record holds at most once; the gallery indexes them by pose."""

MAX_IMAGE_SIDE = 20_000
"""Largest image width or height in pixels (store and wire)."""

MAX_TEMPLATE_DIM = 4096
"""Most values in one face template (store and wire)."""


@dataclass(frozen=True)
class FieldRule:
    """One text field of the record: its name, its one length limit, its pattern (None: any printable
    text) and why the limit is what it is."""

    name: str
    max_len: int
    pattern: re.Pattern[str] | None
    description: str


RECORD_ID = FieldRule("record_id", 36, None, "canonical lower-case UUIDv7 (RFC 9562), made on the device")
STATION = FieldRule(
    "station", 63, SLUG_RE, "a slug: it is an MQTT topic level and the certificate CN, so the topic slug is the truth"
)
COUNTY = FieldRule("county", 63, SLUG_RE, "a slug, as in the MQTT topic")
AGENCY_ORI = FieldRule(
    "agency_ori", 9, re.compile(r"[A-Z]{2}[A-Z0-9]{7}"),
    "NCIC ORI: 9 characters, the 2-letter state code then 7 letters or digits",
)
BOOKING_NUMBER = FieldRule(
    "booking_number", 32, re.compile(r"[A-Za-z0-9\-_/. ]{1,32}"),
    "what jail management systems issue; the store never accepted more, so no station sent more",
)
OPERATOR_ID = FieldRule("operator_id", 64, None, "store and wire already agreed")
TEMPLATE_MODEL = FieldRule("template_model", 128, None, "store and wire already agreed")
OVERRIDE_REASON = FieldRule(
    "override_reason", 500, None,
    "the store's limit (what stored records hold); the NIST 10.038 comment cut at 126 is the export's own",
)
SMT_DESCRIPTION = FieldRule(
    "smt_description", 200, None, "the store's and capture screen's limit; fits the NIST 10.042 description (256)"
)

FIELDS: tuple[FieldRule, ...] = (
    RECORD_ID, STATION, COUNTY, AGENCY_ORI, BOOKING_NUMBER, OPERATOR_ID, TEMPLATE_MODEL, OVERRIDE_REASON,
    SMT_DESCRIPTION,
)
"""Every text field of the record, in one table."""


class RecordRuleError(ValueError):
    """A value the record's rules refuse. ``code`` is a wire-style reason code (``wrong_type``,
    ``bad_value``, ``bad_uuid``); ``problem`` says which rule failed (``type``, ``too_long``, ``pattern``,
    ``not_uuid``, ``not_canonical``, ``not_v7``) so callers can word their own message."""

    def __init__(self, rule: FieldRule, code: str, problem: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.code = code
        self.problem = problem
        self.message = message


def check_field(rule: FieldRule, value: object, what: str | None = None) -> str:
    """Return ``value`` if it is text within ``rule``'s length and pattern, else raise `RecordRuleError`.

    Character checks (controls, spaces) stay with each side, whose messages the officer or the log reads.
    """
    what = what or rule.name
    if not isinstance(value, str):
        raise RecordRuleError(rule, "wrong_type", "type", f"{what} must be text, got {type(value).__name__}")
    if len(value) > rule.max_len:
        raise RecordRuleError(rule, "bad_value", "too_long", f"{what} is longer than {rule.max_len} characters")
    if rule.pattern is not None and not rule.pattern.fullmatch(value):
        # The value is not echoed: a booking number in an ack detail or a rejection log is case data.
        raise RecordRuleError(rule, "bad_value", "pattern", f"{what} does not match {rule.pattern.pattern}")
    return value


# --- record ids (UUIDv7) ----------------------------------------------------------------------------

_id_lock = threading.Lock()
_last_ms = 0
_last_counter = 0


def _next_ms_and_counter() -> tuple[int, int]:
    global _last_ms, _last_counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            counter = secrets.randbits(11)
        else:
            ms = _last_ms
            counter = _last_counter + 1
            if counter > 0xFFF:
                ms += 1
                counter = secrets.randbits(11)
        _last_ms, _last_counter = ms, counter
    return ms, counter


def new_uuid7(unix_ms: int | None = None) -> str:
    """Return a new UUIDv7 (RFC 9562) as its canonical lower-case string.

    Layout: 48-bit Unix time in milliseconds, version 7, a 12-bit counter in ``rand_a`` (RFC 9562
    section 6.2, method 1) and 62 random bits in ``rand_b``. The counter starts at a random value below
    2048 each new millisecond (leaving room to count up) and is incremented for ids made in the same
    millisecond, or when the wall clock steps backwards (NTP corrections happen on devices that boot
    without an RTC). On counter overflow the timestamp is advanced by one millisecond. So ids made in
    this process sort strictly in creation order, which keeps the outbox's delivery order stable and the
    SQLite index append-mostly. Ids from different processes are still unique through the random bits.

    ``unix_ms`` (tests and tools) makes an id for that millisecond with a random counter, outside the
    monotonic sequence. Python gains ``uuid.uuid7`` only in 3.14; the project supports 3.10-3.13.
    """
    if unix_ms is None:
        ms, counter = _next_ms_and_counter()
    else:
        ms, counter = unix_ms, secrets.randbits(11)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    return str(uuid.UUID(int=value))


def check_uuid7(value: object, what: str = "record_id") -> str:
    """Return ``value`` if it is a UUIDv7 (RFC 4122 variant) in canonical lower-case text, else raise
    `RecordRuleError` (code ``wrong_type`` or ``bad_uuid``)."""
    if not isinstance(value, str):
        raise RecordRuleError(
            RECORD_ID, "wrong_type", "type", f"{what} must be a text UUID, got {type(value).__name__}")
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise RecordRuleError(RECORD_ID, "bad_uuid", "not_uuid", f"{what} is not a UUID") from None
    if str(parsed) != value:
        raise RecordRuleError(
            RECORD_ID, "bad_uuid", "not_canonical", f"{what} must be canonical lower-case 8-4-4-4-12 hex")
    if parsed.version != 7 or parsed.variant != uuid.RFC_4122:
        raise RecordRuleError(
            RECORD_ID, "bad_uuid", "not_v7", f"{what} is not a UUIDv7 (version nibble {value[14]})")
    return value


def uuid7_time(value: str) -> datetime:
    """The creation time (UTC, millisecond precision) carried in a UUIDv7."""
    ms = uuid.UUID(check_uuid7(value)).int >> 80
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
