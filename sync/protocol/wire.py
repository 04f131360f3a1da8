"""The booking record on the wire: CBOR content inside a COSE_Sign1 envelope signed with Ed25519.

It stays one module (over 500 lines) because it is the wire format's one specification: records, the
signed envelope, acks and commands share its field validators and are read together.

Why it looks like this
----------------------
* **CBOR (RFC 8949)** carries the JPEG bytes and the float32 template as byte strings, with no
  base64 inflation, and is what the design names.
* **COSE_Sign1 (RFC 9052)** so that any county tool with a COSE library can verify a record.
  ``pycose`` 1.1 (its latest release) was tried first: it signs Ed25519 correctly, but it cannot
  decode messages under cbor2 6 (cbor2 6 returns tag contents as tuples, pycose expects lists) and
  it pulls ``ecdsa``/``oscrypto``/``certvalidator`` into the gallery. The envelope is therefore
  built here from the RFC with ``cbor2`` and ``cryptography``; it is byte-for-byte the structure
  pycose emits (the tests check that our decoder accepts a pycose-signed record when pycose is
  installed). The exact layout::

      COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8, 3: content_type, 4: kid},
                           unprotected: {},            ; must be empty: everything is signed
                           payload: bstr .cbor content,
                           signature: bstr .size 64 ])
      signed bytes = cbor(["Signature1", protected, h'', payload])   ; RFC 9052 section 4.4

  A **schema 2** record (what stations send now) does not sign its photos byte by byte: the signed
  content carries each capture's ``size`` and ``sha256`` instead of its ``jpeg``, and the JPEGs travel
  beside the COSE_Sign1, in capture order::

      record (schema 2) = [ COSE_Sign1 over the content above,   ; any COSE library verifies it alone
                            [ jpeg: bstr, ... ] ]                ; one per capture, same order

  The gallery verifies the signature first, then each JPEG's size and SHA-256 against the signed ones,
  and refuses a JPEG that differs (``unsigned_jpeg``, naming no record: someone on the way changed it, so
  the station keeps the record and sends it again). Why: Ed25519 hashes everything it signs (twice to
  sign, once to verify), and a 1 MB record also went through CBOR twice more to be validated; with the
  photos beside the signature a record costs the station and the gallery one SHA-256 pass over each
  photo, which the capture's digest needed anyway. It is COSE's own answer too (RFC 9052 lets a payload
  travel apart from its signature); here the small signed structure is attached and the bulk is bound by
  digest, so the envelope stays a complete COSE_Sign1. A **schema 1** record (one COSE_Sign1, the JPEGs
  inside the signed content) is still accepted from stations not yet updated, and the same record in
  either schema is the same content to the gallery (:meth:`VerifiedRecord.same_content`).

  ``alg`` -8 is EdDSA (RFC 9053); the only algorithm accepted, so no downgrade is possible. The
  content type (label 3) separates records from county commands, so a signature made for one can
  never be replayed as the other. ``kid`` (label 4) is the UTF-8 signer id: the station slug for
  records, a county key id for commands. ``crit`` and any other header is refused.
* **Schema version** ``schema`` inside the content (records 2 or 1, commands 1); an unknown version is
  rejected, never guessed, and a record's schema must match its framing.
* **Timestamps** are CBOR tag 1 (epoch seconds, float when there are microseconds; a float64 keeps
  microseconds exactly for this era). Tag 0 (RFC 3339 text) is also accepted; both must be UTC.
* **Acks** are JSON (UTF-8, sorted keys): they hold no binary data, county IT can read them with
  ``mosquitto_sub``, and any gallery implementation can produce them.

Everything the decoder rejects raises :class:`WireError` with a stable, short ``code`` that the
gallery sends back as the ack's ``reason``. ``encode_record`` runs the same validation as
``decode_record`` so that a station never sends what the gallery would refuse.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, NoReturn

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.protocol import record as rules
from sync.protocol.jpeg import jpeg_dimensions
from sync.protocol.record import MAX_IMAGE_SIDE, MAX_TEMPLATE_DIM, POSES
from sync.protocol.topics import is_slug

#: The record schema a station sends: 2 signs the record with each JPEG's size and SHA-256, the JPEGs travel
#: beside the signed bytes (see the module docstring). The gallery still reads 1 (JPEGs inside the signed
#: content) from stations not yet updated.
SCHEMA_VERSION = 2
RECORD_SCHEMAS = (1, 2)
#: County commands kept their own version when records moved to 2.
COMMAND_SCHEMA_VERSION = 1
RECORD_CONTENT_TYPE = "application/vnd.booking-station.record+cbor"
COMMAND_CONTENT_TYPE = "application/vnd.booking-station.command+cbor"
ACK_CONTENT_TYPE = "application/json"

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HDR_ALG, HDR_CRIT, HDR_CONTENT_TYPE, HDR_KID = 1, 2, 3, 4

#: Largest signed record accepted. A SAP 50 frontal JPEG is a few MB; three poses plus SMT photos
#: fit well inside. The broker's ``message_size_limit`` is generated from the same number.
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_COMMAND_BYTES = 64 * 1024
MAX_CAPTURES = 32  # NGI takes 25 photo sets per transaction; leaves room for SMT photos
MAX_QUALITY_NODES = 2000
MAX_QUALITY_DEPTH = 8  # the station's report: report.measures.<name>.detail.<key> is 5 deep
# CBOR nesting the decoder accepts for a record: record -> captures -> capture -> quality (3), the quality
# report itself, and one more level so an over-deep report fails the quality check with its clear message.
MAX_RECORD_CBOR_DEPTH = 3 + MAX_QUALITY_DEPTH + 2
MAX_COMMAND_LIFETIME = timedelta(days=30)
CLOCK_SKEW = timedelta(minutes=5)

Pose = Literal["frontal", "left_profile", "right_profile", "smt"]
AckStatus = Literal["stored", "duplicate", "rejected"]
ACK_STATUSES: tuple[str, ...] = ("stored", "duplicate", "rejected")
CommandAction = Literal["purge", "config", "rotate"]
COMMAND_ACTIONS: tuple[str, ...] = ("purge", "config", "rotate")
ROTATE_TARGETS: tuple[str, ...] = ("signing-key", "tls-certificate")

# C0/C1 controls, DEL, line/paragraph separators and bidi overrides: none belongs in a booking
# field, and each can corrupt a log line, a Type-10 text field or what an operator sees.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


class WireError(ValueError):
    """A payload the protocol refuses. ``code`` is stable and machine-readable (it becomes the
    ack's ``reason``); ``message`` is for logs and people. ``record_id`` is set only when the
    signature had been verified, so an unverified payload can never make the gallery name (and so
    reject) a record id that a real station may still deliver.
    """

    def __init__(self, code: str, message: str, *, record_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.record_id = record_id


def _fail(code: str, message: str) -> NoReturn:
    raise WireError(code, message)


class _UnsignedJpeg(WireError):
    """A schema 2 JPEG that is not the one signed. The signed content is authentic, the bytes beside it are
    not, so the refusal never names the record: a station (or the gallery) must not give up a record because
    someone on the way changed its photo; the station keeps it and sends it again."""

    def __init__(self, message: str) -> None:
        super().__init__("unsigned_jpeg", message)


# --------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class WireTemplate:
    """A face template: ``values`` is ``dim`` float32 numbers, little-endian, as bytes, so that any
    platform reads it the same way. ``model`` names the model and version; the gallery never
    compares templates of different models."""

    model: str
    dim: int
    values: bytes

    @classmethod
    def from_floats(cls, model: str, values: list[float] | tuple[float, ...]) -> WireTemplate:
        """Pack a float sequence (e.g. ``ndarray.tolist()``) as little-endian float32."""
        return cls(model=model, dim=len(values), values=struct.pack(f"<{len(values)}f", *values))

    def floats(self) -> tuple[float, ...]:
        """The template as Python floats."""
        return struct.unpack(f"<{self.dim}f", self.values)


@dataclass(frozen=True)
class WireBooking:
    """Who and when: agency ORI, the agency's booking number, the operator id, capture time (UTC)."""

    ori: str
    booking_number: str
    operator: str
    captured_at: datetime


@dataclass(frozen=True)
class WireCapture:
    """One photo of the booking: a pose (``smt`` for scars, marks and tattoos, which then needs a
    ``description``), the JPEG exactly as stored on the device, its pixel size and SHA-256, the
    quality report, the template (frontal captures usually) and the officer's override reason
    when a gating measure failed but the photo was kept. ``operator`` names the officer who took this
    photo when it is not the booking's operator (a hand-over mid-booking); it is left out otherwise, so a
    record without a hand-over is encoded exactly as before and a gallery that predates the key reads it."""

    pose: str
    jpeg: bytes
    width: int
    height: int
    sha256: bytes
    quality: dict[str, Any] = field(default_factory=dict)
    template: WireTemplate | None = None
    override_reason: str | None = None
    description: str | None = None
    operator: str | None = None

    @classmethod
    def build(
        cls,
        pose: str,
        jpeg: bytes,
        width: int,
        height: int,
        *,
        quality: dict[str, Any] | None = None,
        template: WireTemplate | None = None,
        override_reason: str | None = None,
        description: str | None = None,
        operator: str | None = None,
    ) -> WireCapture:
        """A capture with its SHA-256 computed from ``jpeg``."""
        return cls(
            pose=pose,
            jpeg=jpeg,
            width=width,
            height=height,
            sha256=hashlib.sha256(jpeg).digest(),
            quality=dict(quality or {}),
            template=template,
            override_reason=override_reason,
            description=description,
            operator=operator,
        )


@dataclass(frozen=True)
class WireRecord:
    """A booking record as the station sends it. ``record_id`` is a UUIDv7 made on the device at
    capture time and is the idempotency key end to end."""

    record_id: str
    station: str
    county: str
    booking: WireBooking
    captures: tuple[WireCapture, ...]
    created_at: datetime
    #: The schema it is (or was) sent in; not part of the record's identity (equality ignores it).
    schema: int = field(default=SCHEMA_VERSION, compare=False)


@dataclass(frozen=True)
class VerifiedRecord:
    """What :func:`verify_record` returns: the record, the signer's kid and the SHA-256 of the
    signed content. The content hash (not the envelope's) is what the gallery compares to tell a
    repeat from a replay, so re-signing the same content after a key rotation is still a repeat."""

    record: WireRecord
    kid: str
    content_sha256: bytes

    def same_content(self, digest: bytes) -> bool:
        """True when ``digest`` is this record's content hash in either schema: a record first delivered in
        schema 1 and sent again in schema 2 after the station was updated (its ack was lost) is a repeat,
        not a replay. The other schema's content is built only when the first comparison fails."""
        if digest == self.content_sha256:
            return True
        other = 1 if self.record.schema == 2 else 2
        return hashlib.sha256(_dumps(record_as_map(self.record, schema=other))).digest() == digest


uuid7 = rules.new_uuid7
"""A new UUIDv7 (the one maker, :func:`sync.protocol.record.new_uuid7`)."""


def check_uuid7(value: object, what: str = "record_id") -> str:
    """Return ``value`` if it is a UUIDv7 in canonical lower-case text form, else raise."""
    try:
        return rules.check_uuid7(value, what)
    except rules.RecordRuleError as exc:
        _fail(exc.code, exc.message)


# ----------------------------------------------------------------------------- field validation
def _check_keys(obj: Mapping[Any, Any], where: str, required: set[str], optional: set[str]) -> None:
    missing = required - obj.keys()
    if missing:
        _fail("missing_field", f"{where}: missing {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        _fail("unknown_field", f"{where}: unknown field(s) {', '.join(sorted(map(repr, unknown)))}")


def _map(obj: object, where: str) -> Mapping[Any, Any]:
    if not isinstance(obj, Mapping):
        _fail("wrong_type", f"{where} must be a map, got {type(obj).__name__}")
    return obj


def _int(obj: object, where: str, lo: int, hi: int) -> int:
    if type(obj) is not int:  # bool is an int subclass: refuse it too
        _fail("wrong_type", f"{where} must be an integer, got {type(obj).__name__}")
    if not lo <= obj <= hi:
        _fail("bad_value", f"{where} = {obj} is outside {lo}..{hi}")
    return obj


def _bytes(obj: object, where: str) -> bytes:
    if type(obj) is not bytes:
        _fail("wrong_type", f"{where} must be a byte string, got {type(obj).__name__}")
    return obj


def _text(obj: object, where: str, max_len: int) -> str:
    if type(obj) is not str:
        _fail("wrong_type", f"{where} must be text, got {type(obj).__name__}")
    if not obj or not obj.strip():
        _fail("bad_value", f"{where} must not be empty")
    if len(obj) > max_len:
        _fail("bad_value", f"{where} is longer than {max_len} characters")
    if _CONTROL_RE.search(obj):
        _fail("control_character", f"{where} contains a control character")
    return obj


def _opt_text(obj: object, where: str, max_len: int) -> str | None:
    return None if obj is None else _text(obj, where, max_len)


def _field(obj: object, where: str, rule: rules.FieldRule) -> str:
    """A record text field: the codec's text checks, then the record's rule (its limit and pattern)."""
    text = _text(obj, where, rule.max_len)
    try:
        return rules.check_field(rule, text, where)
    except rules.RecordRuleError as exc:
        _fail(exc.code, exc.message)


def _opt_field(obj: object, where: str, rule: rules.FieldRule) -> str | None:
    return None if obj is None else _field(obj, where, rule)


def _slug(obj: object, where: str) -> str:
    if type(obj) is not str:
        _fail("wrong_type", f"{where} must be text, got {type(obj).__name__}")
    if _CONTROL_RE.search(obj):
        _fail("control_character", f"{where} contains a control character")
    if not is_slug(obj):
        _fail("bad_value", f"{where} {obj!r} is not a slug")
    return obj


def _utc(obj: object, where: str) -> datetime:
    if not isinstance(obj, datetime):
        _fail("wrong_type", f"{where} must be a CBOR tag 1 or tag 0 date-time, got {type(obj).__name__}")
    offset = obj.utcoffset()
    if offset is None or offset != timedelta(0):
        _fail("bad_value", f"{where} must be in UTC")
    return obj.astimezone(timezone.utc)


def _plain_value(obj: object, where: str, depth: int, budget: list[int]) -> Any:
    """Check a free-form value (quality report, config settings): text-keyed maps, lists, text,
    finite numbers, booleans and null, bounded in depth and size. Returns a plain copy."""
    budget[0] -= 1
    if budget[0] < 0:
        _fail("bad_value", f"{where}: more than {MAX_QUALITY_NODES} values")
    if depth > MAX_QUALITY_DEPTH:
        _fail("bad_value", f"{where}: nested deeper than {MAX_QUALITY_DEPTH}")
    if obj is None or type(obj) is bool:
        return obj
    if type(obj) is int:
        return _int(obj, where, -(2**63), 2**64 - 1)
    if type(obj) is float:
        if not math.isfinite(obj):
            _fail("bad_value", f"{where} is not a finite number")
        return obj
    if type(obj) is str:
        if len(obj) > 1024:
            _fail("bad_value", f"{where} is longer than 1024 characters")
        if _CONTROL_RE.search(obj):
            _fail("control_character", f"{where} contains a control character")
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain_value(v, f"{where}[{i}]", depth + 1, budget) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if type(k) is not str:
                _fail("wrong_type", f"{where}: keys must be text")
            _text(k, f"{where} key", 64)
            out[k] = _plain_value(v, f"{where}.{k}", depth + 1, budget)
        return out
    _fail("wrong_type", f"{where}: {type(obj).__name__} is not allowed")


def _template(obj: object, where: str) -> WireTemplate | None:
    if obj is None:
        return None
    m = _map(obj, where)
    _check_keys(m, where, {"model", "dim", "values"}, set())
    model = _field(m["model"], f"{where}.model", rules.TEMPLATE_MODEL)
    dim = _int(m["dim"], f"{where}.dim", 1, MAX_TEMPLATE_DIM)
    values = _bytes(m["values"], f"{where}.values")
    if len(values) != 4 * dim:
        _fail("template_dim_mismatch", f"{where}: {len(values)} bytes is not {dim} float32 values")
    if not all(math.isfinite(v) for v in struct.unpack(f"<{dim}f", values)):
        _fail("bad_value", f"{where}.values holds NaN or infinity")
    return WireTemplate(model=model, dim=dim, values=values)


def _capture(obj: object, where: str, attached: bytes | None = None) -> WireCapture:
    """One capture map. Schema 1 holds the JPEG (``jpeg``); schema 2 holds its ``size`` and the JPEG is
    ``attached`` (the bytes that travelled beside the signed content, checked here against both)."""
    m = _map(obj, where)
    _check_keys(
        m,
        where,
        {"pose", "jpeg" if attached is None else "size", "width", "height", "sha256", "quality", "template",
         "override_reason"},
        {"description", "operator"},
    )
    pose = m["pose"]
    if type(pose) is not str:
        _fail("wrong_type", f"{where}.pose must be text")
    if pose not in POSES:
        _fail("unknown_pose", f"{where}.pose {pose[:40]!r} is not one of {', '.join(POSES)}")
    description = _opt_field(m.get("description"), f"{where}.description", rules.SMT_DESCRIPTION)
    if pose == "smt" and description is None:
        _fail("missing_field", f"{where}: an smt capture needs a description")
    if pose != "smt" and description is not None:
        _fail("bad_value", f"{where}: only smt captures carry a description")
    width = _int(m["width"], f"{where}.width", 1, MAX_IMAGE_SIDE)
    height = _int(m["height"], f"{where}.height", 1, MAX_IMAGE_SIDE)
    digest = _bytes(m["sha256"], f"{where}.sha256")
    if len(digest) != 32:
        _fail("bad_value", f"{where}.sha256 must be 32 bytes")
    if attached is None:
        jpeg = _bytes(m["jpeg"], f"{where}.jpeg")
        if hashlib.sha256(jpeg).digest() != digest:
            _fail("sha256_mismatch", f"{where}.sha256 does not match the JPEG bytes")
    else:
        jpeg = attached
        size = _int(m["size"], f"{where}.size", 1, 2**32)
        if len(jpeg) != size or hashlib.sha256(jpeg).digest() != digest:
            raise _UnsignedJpeg(f"{where}: the JPEG sent beside the signed record ({len(jpeg)} bytes) is not the "
                                f"one signed ({size} bytes, its SHA-256): it was changed on the way")
    dims = jpeg_dimensions(jpeg)
    if dims is None:
        _fail("bad_jpeg", f"{where}.jpeg is not a baseline/progressive JPEG with a frame header")
    if dims != (width, height):
        _fail("bad_value", f"{where}: JPEG is {dims[0]}x{dims[1]}, fields say {width}x{height}")
    quality = _plain_value(_map(m["quality"], f"{where}.quality"), f"{where}.quality", 0, [MAX_QUALITY_NODES])
    return WireCapture(
        pose=pose,
        jpeg=jpeg,
        width=width,
        height=height,
        sha256=digest,
        quality=quality,
        template=_template(m["template"], f"{where}.template"),
        override_reason=_opt_field(m["override_reason"], f"{where}.override_reason", rules.OVERRIDE_REASON),
        operator=_opt_field(m.get("operator"), f"{where}.operator", rules.OPERATOR_ID),
        description=description,
    )


def _record_schema(m: Mapping[Any, Any], attachments: list[bytes] | None) -> int:
    """The content's schema, which must be one this gallery reads and match how the payload was framed."""
    if "schema" not in m:
        _fail("missing_field", "record: missing schema")
    schema = m["schema"]
    if type(schema) is not int or schema not in RECORD_SCHEMAS:
        _fail("unknown_schema", f"schema {str(schema)[:20]!r} is not supported (this reads "
                                f"{', '.join(map(str, RECORD_SCHEMAS))})")
    if schema == 1 and attachments is not None:
        _fail("bad_value", "a schema 1 record holds its JPEGs in the signed content, not beside it")
    if schema == 2 and attachments is None:
        _fail("missing_field", "a schema 2 record needs its JPEGs beside the signed content")
    return schema


def _record_from_obj(obj: object, attachments: list[bytes] | None = None) -> WireRecord:
    """The record in a content map; ``attachments`` are a schema 2 record's JPEGs, in capture order."""
    m = _map(obj, "record")
    schema = _record_schema(m, attachments)
    _check_keys(m, "record", {"schema", "record_id", "station", "county", "booking", "captures", "created_at"}, set())
    record_id = check_uuid7(m["record_id"])
    try:
        booking_m = _map(m["booking"], "booking")
        _check_keys(booking_m, "booking", {"ori", "booking_number", "operator", "captured_at"}, set())
        ori = _text(booking_m["ori"], "booking.ori", rules.AGENCY_ORI.max_len)
        if not rules.AGENCY_ORI.pattern.fullmatch(ori):
            _fail("bad_value", "booking.ori must be a 9-character NCIC ORI (2-letter state code, then A-Z, 0-9)")
        booking = WireBooking(
            ori=ori,
            booking_number=_field(booking_m["booking_number"], "booking.booking_number", rules.BOOKING_NUMBER),
            operator=_field(booking_m["operator"], "booking.operator", rules.OPERATOR_ID),
            captured_at=_utc(booking_m["captured_at"], "booking.captured_at"),
        )
        captures_obj = m["captures"]
        if not isinstance(captures_obj, (list, tuple)):
            _fail("wrong_type", "captures must be an array")
        if not captures_obj:
            _fail("missing_field", "captures is empty: a record needs at least one capture")
        if len(captures_obj) > MAX_CAPTURES:
            _fail("too_many_captures", f"{len(captures_obj)} captures; at most {MAX_CAPTURES}")
        if attachments is not None and len(attachments) != len(captures_obj):
            _fail("bad_value", f"{len(captures_obj)} captures but {len(attachments)} JPEGs beside them")
        captures = tuple(_capture(c, f"captures[{i}]", None if attachments is None else attachments[i])
                         for i, c in enumerate(captures_obj))
        poses = [c.pose for c in captures if c.pose != "smt"]
        if len(poses) != len(set(poses)):
            _fail("duplicate_pose", "a frontal or profile pose appears more than once")
        return WireRecord(
            record_id=record_id,
            station=_slug(m["station"], "station"),
            county=_slug(m["county"], "county"),
            booking=booking,
            captures=captures,
            created_at=_utc(m["created_at"], "created_at"),
            schema=schema,
        )
    except WireError as exc:
        if not isinstance(exc, _UnsignedJpeg):
            exc.record_id = record_id
        raise


def record_as_map(record: WireRecord, *, schema: int = 1) -> dict[str, Any]:
    """The record as the CBOR content map of ``schema`` (for tools and tests that need the raw form): 1 holds
    each JPEG, 2 (what gets signed now) its size instead, the JPEGs travelling beside it."""

    def capture(c: WireCapture) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pose": c.pose,
            **({"jpeg": c.jpeg} if schema == 1 else {"size": len(c.jpeg)}),
            "width": c.width,
            "height": c.height,
            "sha256": c.sha256,
            "quality": c.quality,
            "template": None
            if c.template is None
            else {"model": c.template.model, "dim": c.template.dim, "values": c.template.values},
            "override_reason": c.override_reason,
        }
        if c.description is not None:
            out["description"] = c.description
        if c.operator is not None:
            out["operator"] = c.operator
        return out

    return {
        "schema": schema,
        "record_id": record.record_id,
        "station": record.station,
        "county": record.county,
        "booking": {
            "ori": record.booking.ori,
            "booking_number": record.booking.booking_number,
            "operator": record.booking.operator,
            "captured_at": record.booking.captured_at,
        },
        "captures": [capture(c) for c in record.captures],
        "created_at": record.created_at,
    }


# ------------------------------------------------------------------------------------ COSE_Sign1
def _dumps(obj: object) -> bytes:
    """Deterministic CBOR (sorted keys, shortest forms) so the same record always encodes to the
    same bytes: a station that re-encodes a record sends a true repeat, not a "replay"."""
    try:
        return cbor2.dumps(obj, canonical=True, datetime_as_timestamp=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as exc:
        raise WireError("wrong_type", f"cannot encode: {exc}") from None


def _loads_exact(data: bytes, *, max_depth: int, text_keys_only: bool) -> object:
    """Decode exactly one CBOR item that spans all of ``data`` (cbor2 ignores trailing bytes)."""
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(
            fp, max_depth=max_depth, allow_duplicate_keys=False, strict_hashable_types=text_keys_only
        ).decode()
    except Exception as exc:  # cbor2 wraps most errors, but a semantic tag decoder may not
        raise WireError("not_cbor", f"not well-formed CBOR ({type(exc).__name__})") from None
    if fp.tell() != len(data):
        raise WireError("not_cbor", f"{len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj


def sign1(content: bytes, *, content_type: str, kid: str, key: Ed25519PrivateKey) -> bytes:
    """Wrap ``content`` in a COSE_Sign1 signed by ``key`` (see the module docstring)."""
    return cbor2.dumps(_sign1_tag(content, content_type=content_type, kid=kid, key=key))


def _sign1_tag(content: bytes, *, content_type: str, kid: str, key: Ed25519PrivateKey) -> cbor2.CBORTag:
    protected = cbor2.dumps({HDR_ALG: ALG_EDDSA, HDR_CONTENT_TYPE: content_type, HDR_KID: kid.encode()}, canonical=True)
    to_sign = cbor2.dumps(["Signature1", protected, b"", content])
    return cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, content, key.sign(to_sign)])


KeyLookup = Callable[[str], "Ed25519PublicKey | None"]


def open_sign1(payload: bytes, *, content_type: str, verify_key_lookup: KeyLookup, max_bytes: int) -> tuple[str, bytes]:
    """Check a COSE_Sign1 envelope and its Ed25519 signature; return ``(kid, content)``.

    ``verify_key_lookup(kid)`` returns the signer's public key, or None for an unknown signer; it
    may also raise :class:`WireError` itself (e.g. ``kid_mismatch``) to reject with its own code.
    """
    protected, content, signature = _sign1_parts(payload, max_bytes)
    return _verified_sign1(protected, content, signature, content_type, verify_key_lookup), content


def _verified_sign1(protected: bytes, content: bytes, signature: bytes, content_type: str,
                    verify_key_lookup: KeyLookup) -> str:
    """The signer's kid once the envelope's header and Ed25519 signature check out."""
    kid = _signer(protected, content_type)
    if len(signature) != 64:
        _fail("bad_signature", "an Ed25519 signature is 64 bytes")
    key = verify_key_lookup(kid)
    if key is None:
        _fail("unknown_kid", f"no public key for signer {kid!r}")
    try:
        key.verify(signature, cbor2.dumps(["Signature1", protected, b"", content]))
    except InvalidSignature:
        _fail("bad_signature", f"signature does not verify with {kid!r}'s key")
    return kid


def _sign1_parts(payload: bytes, max_bytes: int) -> tuple[bytes, bytes, bytes]:
    """The envelope's protected header, content and signature (the unprotected header must be empty)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        _fail("wrong_type", "payload must be bytes")
    payload = bytes(payload)
    if len(payload) > max_bytes:
        _fail("oversize", f"{len(payload)} bytes is over the {max_bytes}-byte limit")
    # Text/byte-string map keys only: the unprotected header must be empty anyway, and an int-keyed
    # map is where hash-colliding keys could stall the decoder for minutes (CPU denial of service).
    return _sign1_fields(_loads_exact(payload, max_depth=4, text_keys_only=True))


def _sign1_fields(msg: object) -> tuple[bytes, bytes, bytes]:
    """:func:`_sign1_parts` of an envelope already decoded."""
    if not isinstance(msg, cbor2.CBORTag) or msg.tag != COSE_SIGN1_TAG:
        _fail("not_cose_sign1", "not a tagged COSE_Sign1 (CBOR tag 18)")
    parts = msg.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        _fail("not_cose_sign1", "COSE_Sign1 must be an array of 4")
    protected, unprotected, content, signature = parts
    if type(protected) is not bytes or type(content) is not bytes or type(signature) is not bytes:
        _fail("not_cose_sign1", "COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        _fail("not_cose_sign1", "COSE_Sign1 unprotected header must be a map")
    if unprotected:
        _fail("bad_header", "the unprotected header must be empty: every header is signed")
    return protected, content, signature


def _signer(protected: bytes, content_type: str) -> str:
    """The kid of a protected header that names EdDSA, ``content_type`` and nothing this receiver does not
    understand."""
    if len(protected) > 1024:
        _fail("bad_header", "the protected header is over 1024 bytes")
    header = _loads_exact(protected, max_depth=2, text_keys_only=False) if protected else {}
    if not isinstance(header, Mapping):
        _fail("bad_header", "the protected header is not a map")
    if HDR_ALG not in header:
        _fail("wrong_alg", "no alg in the protected header")
    if header[HDR_ALG] != ALG_EDDSA or type(header[HDR_ALG]) is not int:
        _fail("wrong_alg", f"alg {str(header[HDR_ALG])[:20]} is not EdDSA (-8)")
    if set(header) - {HDR_ALG, HDR_CONTENT_TYPE, HDR_KID}:
        _fail("bad_header", "the protected header has parameters this receiver does not understand")
    if header.get(HDR_CONTENT_TYPE) != content_type:
        _fail("wrong_content_type", f"content type is not {content_type}")
    kid_raw = header.get(HDR_KID)
    if type(kid_raw) is not bytes or not kid_raw:
        _fail("missing_kid", "no kid (signer id) in the protected header")
    try:
        kid = kid_raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail("unknown_kid", "kid is not UTF-8")
    if len(kid) > 128 or _CONTROL_RE.search(kid):
        _fail("unknown_kid", "kid is too long or holds control characters")
    return kid


def encode_record(record: WireRecord, signing_key: Ed25519PrivateKey) -> bytes:
    """Validate ``record`` and return it signed by the station key (kid = ``record.station``), in the record's
    ``schema``: 2 (the default) signs the small content and frames it with the JPEGs, 1 is the old form."""
    if record.schema not in RECORD_SCHEMAS:
        _fail("unknown_schema", f"schema {record.schema!r} cannot be encoded")
    content = _dumps(record_as_map(record, schema=record.schema))
    jpegs = None if record.schema == 1 else [c.jpeg for c in record.captures]
    # Validate what the gallery will see, from the bytes, so encode and decode can never disagree.
    _record_from_obj(_loads_exact(content, max_depth=MAX_RECORD_CBOR_DEPTH, text_keys_only=True), jpegs)
    envelope = _sign1_tag(content, content_type=RECORD_CONTENT_TYPE, kid=record.station, key=signing_key)
    return cbor2.dumps(envelope if jpegs is None else [envelope, jpegs])


def _record_framing(payload: bytes, max_bytes: int) -> tuple[tuple[bytes, bytes, bytes], list[bytes] | None]:
    """A record payload's envelope parts and, for schema 2, the JPEGs framed beside it."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        _fail("wrong_type", "payload must be bytes")
    if len(payload) > max_bytes:
        _fail("oversize", f"{len(payload)} bytes is over the {max_bytes}-byte limit")
    msg = _loads_exact(bytes(payload), max_depth=5, text_keys_only=True)
    if isinstance(msg, cbor2.CBORTag):
        return _sign1_fields(msg), None
    if not isinstance(msg, (list, tuple)) or len(msg) != 2 or not isinstance(msg[1], (list, tuple)):
        _fail("not_cose_sign1", "a record is a COSE_Sign1, or an array of a COSE_Sign1 and the JPEGs")
    jpegs = list(msg[1])
    if len(jpegs) > MAX_CAPTURES or not all(type(j) is bytes for j in jpegs):
        _fail("bad_value", f"the JPEGs beside a record are at most {MAX_CAPTURES} byte strings")
    return _sign1_fields(msg[0]), jpegs


def verify_record(
    payload: bytes, verify_key_lookup: KeyLookup, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> VerifiedRecord:
    """Verify and validate a signed record of either schema; raise :class:`WireError` on anything malformed.
    The signature is checked before anything of the content is read, the JPEGs against it after."""
    (protected, content, signature), jpegs = _record_framing(payload, max_bytes)
    kid = _verified_sign1(protected, content, signature, RECORD_CONTENT_TYPE, verify_key_lookup)
    record = _record_from_obj(_loads_exact(content, max_depth=MAX_RECORD_CBOR_DEPTH, text_keys_only=True), jpegs)
    if record.station != kid:
        raise WireError(
            "kid_mismatch", f"record says station {record.station!r}, signed by {kid!r}", record_id=record.record_id
        )
    return VerifiedRecord(record=record, kid=kid, content_sha256=hashlib.sha256(content).digest())


def decode_record(
    payload: bytes, verify_key_lookup: KeyLookup, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> WireRecord:
    """:func:`verify_record` without the envelope details."""
    return verify_record(payload, verify_key_lookup, max_bytes=max_bytes).record


# ------------------------------------------------------------------------------------------ acks
@dataclass(frozen=True)
class Ack:
    """The gallery's answer to one record. ``stored`` and ``duplicate`` both mean "committed in the
    gallery": the station may mark the record delivered. ``rejected`` carries a ``reason`` code
    (a :class:`WireError` code or a gallery code such as ``unknown_station``, ``revoked_device``,
    ``replay``) and a human ``detail``; ``record_id`` is null when the payload was not verified."""

    record_id: str | None
    status: str
    reason: str | None = None
    detail: str | None = None

    @property
    def delivered(self) -> bool:
        """True when the station may mark the record delivered."""
        return self.status in ("stored", "duplicate")


def encode_ack(ack: Ack) -> bytes:
    """JSON bytes of a validated ack."""
    _validate_ack(ack)
    body = {"v": 1, "record_id": ack.record_id, "status": ack.status, "reason": ack.reason}
    if ack.detail is not None:
        body["detail"] = ack.detail
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def decode_ack(payload: bytes) -> Ack:
    """Parse and validate an ack; raise :class:`WireError` if it is malformed."""
    if len(payload) > 4096:
        _fail("oversize", "an ack is at most 4096 bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        _fail("not_json", "ack is not UTF-8 JSON")
    m = _map(obj, "ack")
    _check_keys(m, "ack", {"v", "record_id", "status", "reason"}, {"detail"})
    if m["v"] != 1 or type(m["v"]) is not int:
        _fail("unknown_schema", "ack version is not 1")
    ack = Ack(record_id=m["record_id"], status=m["status"], reason=m["reason"], detail=m.get("detail"))
    _validate_ack(ack)
    return ack


def _validate_ack(ack: Ack) -> None:
    if ack.status not in ACK_STATUSES:
        _fail("bad_value", f"ack status {str(ack.status)[:20]!r} is not one of {', '.join(ACK_STATUSES)}")
    if ack.record_id is not None:
        check_uuid7(ack.record_id)
    if ack.status == "rejected":
        if type(ack.reason) is not str or not _REASON_RE.fullmatch(ack.reason):
            _fail("bad_value", "a rejected ack needs a reason code (a-z, 0-9, _)")
    else:
        if ack.record_id is None:
            _fail("missing_field", f"a {ack.status} ack needs a record_id")
        if ack.reason is not None:
            _fail("bad_value", f"a {ack.status} ack has no reason")
    if ack.detail is not None:
        _text(ack.detail, "ack.detail", 300)


# -------------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class WireCommand:
    """A county command to one station, signed by the county key, valid from ``issued_at`` until
    ``expires_at`` (a purge or seal must not run months late without a re-check).

    ``args`` by action: ``purge`` ``{"record_id": uuid7, "reason": text}``; ``config``
    ``{"settings": {text: value}}``; ``rotate`` ``{"target": "signing-key"|"tls-certificate"}``.
    The station should remember executed ``command_id`` values until they expire, so that a
    redelivered command runs once."""

    command_id: str
    county: str
    station: str
    action: str
    issued_at: datetime
    expires_at: datetime
    args: dict[str, Any] = field(default_factory=dict)
    schema: int = COMMAND_SCHEMA_VERSION


def _command_args(action: str, obj: object) -> dict[str, Any]:
    m = _map(obj, "args")
    if action == "purge":
        _check_keys(m, "args", {"record_id", "reason"}, set())
        return {
            "record_id": check_uuid7(m["record_id"], "args.record_id"),
            "reason": _text(m["reason"], "args.reason", 256),
        }
    if action == "config":
        _check_keys(m, "args", {"settings"}, set())
        settings = _plain_value(_map(m["settings"], "args.settings"), "args.settings", 0, [MAX_QUALITY_NODES])
        return {"settings": settings}
    _check_keys(m, "args", {"target"}, set())
    if m["target"] not in ROTATE_TARGETS:
        _fail("bad_value", f"args.target must be one of {', '.join(ROTATE_TARGETS)}")
    return {"target": m["target"]}


def _command_from_obj(obj: object) -> WireCommand:
    m = _map(obj, "command")
    if "schema" not in m:
        _fail("missing_field", "command: missing schema")
    if type(m["schema"]) is not int or m["schema"] != COMMAND_SCHEMA_VERSION:
        _fail("unknown_schema", "command schema is not supported")
    _check_keys(
        m, "command", {"schema", "command_id", "county", "station", "action", "issued_at", "expires_at", "args"}, set()
    )
    action = m["action"]
    if type(action) is not str:
        _fail("wrong_type", "action must be text")
    if action not in COMMAND_ACTIONS:
        _fail("unknown_action", f"action {action[:20]!r} is not one of {', '.join(COMMAND_ACTIONS)}")
    issued_at = _utc(m["issued_at"], "issued_at")
    expires_at = _utc(m["expires_at"], "expires_at")
    if expires_at <= issued_at:
        _fail("bad_value", "expires_at is not after issued_at")
    if expires_at - issued_at > MAX_COMMAND_LIFETIME:
        _fail("bad_value", f"a command may live at most {MAX_COMMAND_LIFETIME.days} days")
    return WireCommand(
        command_id=check_uuid7(m["command_id"], "command_id"),
        county=_slug(m["county"], "county"),
        station=_slug(m["station"], "station"),
        action=action,
        issued_at=issued_at,
        expires_at=expires_at,
        args=_command_args(action, m["args"]),
    )


def encode_command(command: WireCommand, signing_key: Ed25519PrivateKey, *, kid: str) -> bytes:
    """Validate ``command`` and sign it with the county key named ``kid``."""
    obj = {
        "schema": command.schema,
        "command_id": command.command_id,
        "county": command.county,
        "station": command.station,
        "action": command.action,
        "issued_at": command.issued_at,
        "expires_at": command.expires_at,
        "args": command.args,
    }
    content = _dumps(obj)
    _command_from_obj(_loads_exact(content, max_depth=8, text_keys_only=True))
    return sign1(content, content_type=COMMAND_CONTENT_TYPE, kid=kid, key=signing_key)


def decode_command(
    payload: bytes,
    verify_key_lookup: KeyLookup,
    *,
    now: datetime | None = None,
    county: str | None = None,
    station: str | None = None,
    max_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
) -> WireCommand:
    """Verify a county command; reject a bad signature, an expired or not-yet-valid command (with
    :data:`CLOCK_SKEW` of tolerance for issue time only), and one addressed to another station."""
    _, content = open_sign1(
        payload, content_type=COMMAND_CONTENT_TYPE, verify_key_lookup=verify_key_lookup, max_bytes=max_bytes
    )
    command = _command_from_obj(_loads_exact(content, max_depth=8, text_keys_only=True))
    now = datetime.now(timezone.utc) if now is None else now
    if now >= command.expires_at:
        _fail("expired", f"command expired at {command.expires_at.isoformat()}")
    if command.issued_at > now + CLOCK_SKEW:
        _fail("not_yet_valid", f"command is issued at {command.issued_at.isoformat()}, in the future")
    if (county is not None and command.county != county) or (station is not None and command.station != station):
        _fail("wrong_target", f"command is for {command.county}/{command.station}")
    return command
