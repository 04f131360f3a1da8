"""The booking-time check on the wire: "was this face booked before?" and the gallery's answer.

After the officer accepts the frontal photo, the station sends its template (never the photo) to the
gallery on its own ``checks`` topic; the gallery answers on the station's own ``answers`` topic with up to
:data:`MAX_PRIORS` prior bookings (booking number, ORI, capture date and, where the county's policy allows,
a small JPEG of the prior booking's frontal: at most :data:`MAX_PHOTO_SIDE` pixels on its longest side and
:data:`MAX_PHOTO_BYTES` bytes, so an answer with five stays far below the broker's packet limit). The
answer is advice for the officer, never a block. Request/response the MQTT 5 way: the request carries the
response topic and the request id as correlation data; over MQTT 3.1.1, which has neither, the request's
``reply_to`` field says where to answer. Either way the gallery answers only on the asking station's own
``answers`` topic (anything else is refused), so a request can never make the gallery write where the station may not.

Both messages are COSE_Sign1 envelopes made and checked by :func:`sync.protocol.wire.sign1` and
:func:`sync.protocol.wire.open_sign1`, each with its own content type (so neither can be replayed as a
record, a command or the other): the request signed by the station's record-signing key (kid = the
station slug), the answer by the county command key (kid ``county:{county}``, which every station holds
to verify commands). The content is deterministic CBOR, like records; errors are :class:`WireError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import record as rules
from sync.protocol.topics import answers_topic, is_slug
from sync.protocol.wire import KeyLookup, WireError, WireTemplate, check_uuid7, open_sign1, sign1

CHECK_CONTENT_TYPE = "application/vnd.booking-station.check+cbor"
ANSWER_CONTENT_TYPE = "application/vnd.booking-station.check-answer+cbor"
SCHEMA_VERSION = 1
MAX_PRIORS = 5
MAX_CHECK_BYTES = 32 * 1024
#: A prior booking's photo (only when the county allows it): a thumbnail, never the capture itself.
MAX_PHOTO_SIDE = 160
MAX_PHOTO_BYTES = 12 * 1024
#: An answer with five photos at their cap, and room for the text around them (the broker takes 16 MiB).
MAX_ANSWER_BYTES = MAX_CHECK_BYTES + MAX_PRIORS * MAX_PHOTO_BYTES
#: A request older than this is not answered (the officer has moved on; the station stopped waiting).
MAX_REQUEST_AGE = timedelta(minutes=5)
ANSWER_STATUSES = ("answered", "unavailable")


def _fail(code: str, message: str) -> None:
    raise WireError(code, message)


@dataclass(frozen=True)
class CheckRequest:
    """One station's question about one frontal template."""

    request_id: str  # UUIDv7, also the MQTT 5 correlation data
    county: str
    station: str
    template: WireTemplate
    asked_at: datetime
    reply_to: str | None = None  # MQTT 3.1.1 only: where to answer (must be the station's answers topic)


@dataclass(frozen=True)
class PriorBooking:
    """A possible prior booking of the same face: what the officer needs to look it up, nothing more."""

    booking_number: str
    ori: str
    captured_on: date
    distance: float
    #: A JPEG thumbnail of the prior booking's frontal, when the county's policy sends photos (else None).
    #: The wire checks only its type and size: whether it decodes is the station's to find out.
    photo: bytes | None = None


@dataclass(frozen=True)
class CheckAnswer:
    """The gallery's answer: ``answered`` with 0-5 priors (nearest first), or ``unavailable`` with a reason
    (no index, a template of another model): then the screen says the check was not done."""

    request_id: str
    county: str
    station: str
    status: str
    answered_at: datetime
    searched: int = 0
    priors: tuple[PriorBooking, ...] = ()
    reason: str | None = None


def _dumps(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True, datetime_as_timestamp=True)


def _loads(content: bytes) -> Mapping[str, Any]:
    try:
        obj = cbor2.loads(content)
    except Exception as exc:  # cbor2 raises several types on bad input
        raise WireError("not_cbor", f"not well-formed CBOR ({type(exc).__name__})") from None
    if not isinstance(obj, Mapping) or any(not isinstance(k, str) for k in obj):
        _fail("wrong_type", "the content must be a map with text keys")
    if obj.get("schema") != SCHEMA_VERSION:
        _fail("unknown_schema", f"schema {str(obj.get('schema'))[:20]!r} is not supported")
    return obj


def _keys(obj: Mapping[str, Any], required: set[str], optional: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    missing = required - obj.keys()
    if missing:
        _fail("missing_field", f"missing {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        _fail("unknown_field", f"unknown field(s) {', '.join(sorted(unknown))}")


def _utc(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() != timedelta(0):
        _fail("bad_value", f"{what} must be a UTC date-time")
    return value.astimezone(timezone.utc)  # type: ignore[union-attr]


def _slug(value: object, what: str) -> str:
    if not is_slug(value):
        _fail("bad_value", f"{what} is not a slug")
    return value  # type: ignore[return-value]


def _template(obj: object) -> WireTemplate:
    if not isinstance(obj, Mapping):
        _fail("wrong_type", "template must be a map")
    _keys(obj, {"model", "dim", "values"})  # type: ignore[arg-type]
    model, dim, values = obj["model"], obj["dim"], obj["values"]  # type: ignore[index]
    if not isinstance(model, str) or not model or len(model) > rules.TEMPLATE_MODEL.max_len:
        _fail("bad_value", "template.model must be a short text")
    if type(dim) is not int or not 1 <= dim <= rules.MAX_TEMPLATE_DIM:
        _fail("bad_value", "template.dim is out of range")
    if type(values) is not bytes or len(values) != 4 * dim:
        _fail("template_dim_mismatch", "template.values is not dim float32 values")
    if not all(math.isfinite(v) for v in struct.unpack(f"<{dim}f", values)):
        _fail("bad_value", "template.values holds NaN or infinity")
    return WireTemplate(model, dim, values)


# ------------------------------------------------------------------------------------------- request
def encode_request(request: CheckRequest, key: Ed25519PrivateKey) -> bytes:
    """The request signed by the station's key (kid = the station slug)."""
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "request_id": request.request_id, "county": request.county,
        "station": request.station, "asked_at": request.asked_at,
        "template": {"model": request.template.model, "dim": request.template.dim, "values": request.template.values},
    }
    if request.reply_to is not None:
        body["reply_to"] = request.reply_to
    content = _dumps(body)
    _request_from(_loads(content))
    return sign1(content, content_type=CHECK_CONTENT_TYPE, kid=request.station, key=key)


def _request_from(obj: Mapping[str, Any]) -> CheckRequest:
    _keys(obj, {"schema", "request_id", "county", "station", "asked_at", "template"}, {"reply_to"})
    reply_to = obj.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or len(reply_to) > 300):
        _fail("bad_value", "reply_to must be a topic name")
    return CheckRequest(check_uuid7(obj["request_id"], "request_id"), _slug(obj["county"], "county"),
                        _slug(obj["station"], "station"), _template(obj["template"]), _utc(obj["asked_at"], "asked_at"),
                        reply_to)


def decode_request(payload: bytes, verify_key_lookup: KeyLookup) -> CheckRequest:
    """Verify and read a request; its ``station`` must be its signer."""
    kid, content = open_sign1(payload, content_type=CHECK_CONTENT_TYPE, verify_key_lookup=verify_key_lookup,
                              max_bytes=MAX_CHECK_BYTES)
    request = _request_from(_loads(content))
    if request.station != kid:
        _fail("kid_mismatch", f"request says station {request.station!r}, signed by {kid!r}")
    return request


def reply_topic(request: CheckRequest, response_topic: str | None) -> str:
    """Where the answer goes: the MQTT 5 response topic, else the request's ``reply_to``; either must be
    the asking station's own ``answers`` topic (:class:`WireError` ``bad_reply_topic`` otherwise)."""
    wanted = answers_topic(request.county, request.station)
    given = response_topic if response_topic is not None else request.reply_to
    if given is None:
        _fail("missing_field", "no response topic (MQTT 5) and no reply_to (MQTT 3.1.1)")
    if given != wanted:
        _fail("bad_reply_topic", f"answers go only to {wanted}")
    return wanted


# -------------------------------------------------------------------------------------------- answer
def encode_answer(answer: CheckAnswer, key: Ed25519PrivateKey, *, kid: str) -> bytes:
    """The answer signed by the county command key named ``kid``."""
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "request_id": answer.request_id, "county": answer.county,
        "station": answer.station, "status": answer.status, "answered_at": answer.answered_at,
        "searched": answer.searched,
        "priors": [_prior_body(p) for p in answer.priors],
    }
    if answer.reason is not None:
        body["reason"] = answer.reason
    content = _dumps(body)
    _answer_from(_loads(content))
    return sign1(content, content_type=ANSWER_CONTENT_TYPE, kid=kid, key=key)


def _prior_body(prior: PriorBooking) -> dict[str, Any]:
    body: dict[str, Any] = {"booking_number": prior.booking_number, "ori": prior.ori,
                            "captured_on": prior.captured_on.isoformat(), "distance": round(float(prior.distance), 4)}
    if prior.photo is not None:  # left out when the policy sends none: an answer without photos is as before
        body["photo"] = prior.photo
    return body


def _prior(obj: object) -> PriorBooking:
    if not isinstance(obj, Mapping):
        _fail("wrong_type", "a prior booking must be a map")
    _keys(obj, {"booking_number", "ori", "captured_on", "distance"}, {"photo"})  # type: ignore[arg-type]
    try:
        number = rules.check_field(rules.BOOKING_NUMBER, obj["booking_number"])  # type: ignore[index]
        ori = rules.check_field(rules.AGENCY_ORI, obj["ori"])  # type: ignore[index]
        day = date.fromisoformat(str(obj["captured_on"]))  # type: ignore[index]
    except (rules.RecordRuleError, ValueError) as exc:
        raise WireError("bad_value", f"prior booking: {exc}") from None
    distance = obj["distance"]  # type: ignore[index]
    if not isinstance(distance, (int, float)) or isinstance(distance, bool) or not math.isfinite(distance):
        _fail("bad_value", "prior booking distance must be a number")
    photo = obj.get("photo")  # type: ignore[union-attr]
    if photo is not None and (type(photo) is not bytes or not 0 < len(photo) <= MAX_PHOTO_BYTES):
        _fail("bad_value", f"a prior booking's photo must be at most {MAX_PHOTO_BYTES} bytes")
    return PriorBooking(number, ori, day, float(distance), photo)


def _answer_from(obj: Mapping[str, Any]) -> CheckAnswer:
    _keys(obj, {"schema", "request_id", "county", "station", "status", "answered_at", "searched", "priors"},
          {"reason"})
    if obj["status"] not in ANSWER_STATUSES:
        _fail("bad_value", f"status must be one of {', '.join(ANSWER_STATUSES)}")
    priors = obj["priors"]
    if not isinstance(priors, (list, tuple)) or len(priors) > MAX_PRIORS:
        _fail("bad_value", f"priors must be a list of at most {MAX_PRIORS}")
    searched = obj["searched"]
    if type(searched) is not int or searched < 0:
        _fail("bad_value", "searched must be a count")
    reason = obj.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 300):
        _fail("bad_value", "reason must be a short text")
    return CheckAnswer(check_uuid7(obj["request_id"], "request_id"), _slug(obj["county"], "county"),
                       _slug(obj["station"], "station"), obj["status"], _utc(obj["answered_at"], "answered_at"),
                       searched, tuple(_prior(p) for p in priors), reason)


def decode_answer(payload: bytes, verify_key_lookup: KeyLookup, *, county: str, station: str) -> CheckAnswer:
    """Verify and read an answer meant for ``county``/``station``."""
    _, content = open_sign1(payload, content_type=ANSWER_CONTENT_TYPE, verify_key_lookup=verify_key_lookup,
                            max_bytes=MAX_ANSWER_BYTES)
    answer = _answer_from(_loads(content))
    if (answer.county, answer.station) != (county, station):
        _fail("wrong_target", f"answer is for {answer.county}/{answer.station}")
    return answer
