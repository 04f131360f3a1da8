"""The wire format: round trips, one test per rejection, interop and a seeded fuzz.

Over 500 lines because it holds one test per rejection reason of `sync.protocol.wire`, besides round trips and fuzz."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from sync.protocol import wire
from tests.sync import factory

KEY = factory.key(1)
OTHER_KEY = factory.key(2)
COUNTY_KEY = factory.key(50)


def lookup(kid: str) -> Any:
    return {"st-01": KEY.public_key(), "st-02": OTHER_KEY.public_key()}.get(kid)


def decode(payload: bytes, **kw: Any) -> wire.WireRecord:
    return wire.decode_record(payload, lookup, **kw)


def sign_map(obj: Any, *, kid: str = "st-01", key: Any = KEY, content_type: str = wire.RECORD_CONTENT_TYPE) -> bytes:
    """Sign an arbitrary content map, bypassing encode's validation, to reach decode's checks."""
    content = cbor2.dumps(obj, datetime_as_timestamp=True)
    return wire.sign1(content, content_type=content_type, kid=kid, key=key)


def envelope(
    protected: Any, unprotected: Any, content: bytes, *, key: Any = KEY, tag: int = 18, signature: bytes | None = None
) -> bytes:
    """A COSE_Sign1 with any header, correctly signed unless ``signature`` is given."""
    ph = protected if isinstance(protected, bytes) else cbor2.dumps(protected)
    sig = signature if signature is not None else key.sign(cbor2.dumps(["Signature1", ph, b"", content]))
    return cbor2.dumps(cbor2.CBORTag(tag, [ph, unprotected, content, sig]))


def good_map() -> dict[str, Any]:
    return wire.record_as_map(factory.record())


def rejects(code: str, payload: bytes, **kw: Any) -> wire.WireError:
    with pytest.raises(wire.WireError) as info:
        decode(payload, **kw)
    assert info.value.code == code, info.value
    return info.value


# ---------------------------------------------------------------------------------- round trips
def test_round_trip_keeps_every_field() -> None:
    rec = factory.record()
    payload = wire.encode_record(rec, KEY)
    assert decode(payload) == rec
    verified = wire.verify_record(payload, lookup)
    assert verified.kid == "st-01"
    out = verified.record
    assert out.booking.captured_at == factory.T0 and out.booking.captured_at.tzinfo == dt.timezone.utc
    assert out.captures[0].template is not None
    assert out.captures[0].template.floats() == factory.template().floats()
    assert out.captures[2].description == "tattoo, left forearm, eagle"
    assert out.captures[0].quality["0x41"] == {"raw": 0.83, "score": 83}


def test_a_capture_operator_travels_only_after_a_hand_over() -> None:
    """A capture names its officer only when it differs from the booking's: records without a hand-over
    keep the map they always had (a gallery that predates the key still reads them)."""
    rec = factory.record()
    assert all("operator" not in c for c in wire.record_as_map(rec)["captures"])
    taken = replace(rec, captures=(rec.captures[0], replace(rec.captures[1], operator="o2"), *rec.captures[2:]))
    out = decode(wire.encode_record(taken, KEY))
    assert [c.operator for c in out.captures][:2] == [None, "o2"]
    bad = wire.record_as_map(taken)
    bad["captures"][1]["operator"] = "o2\n"
    rejects("control_character", sign_map(bad))


def test_encoding_is_deterministic_so_a_resend_is_byte_identical() -> None:
    rec = factory.record()
    assert wire.encode_record(rec, KEY) == wire.encode_record(rec, KEY)


def test_round_trip_with_a_real_face_photo_and_override() -> None:
    face, width, height = factory.face_jpeg("img1.jpg")
    cap = wire.WireCapture.build(
        "frontal",
        face,
        width,
        height,
        template=factory.template(512),
        override_reason="subject cannot remove head bandage (medical)",
    )
    rec = factory.record(captures=(cap,))
    assert decode(wire.encode_record(rec, KEY)) == rec


def test_tag0_rfc3339_utc_times_are_accepted() -> None:
    obj = good_map()
    obj["booking"]["captured_at"] = cbor2.CBORTag(0, "2026-03-01T14:30:05.123456Z")
    assert decode(sign_map(obj)).booking.captured_at == factory.T0


def test_uuid7_helper_makes_valid_sortable_ids() -> None:
    ids = [wire.uuid7(unix_ms=1_700_000_000_000 + i) for i in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert wire.check_uuid7(ids[0]) == ids[0]


def test_pycose_signed_record_verifies_and_ours_verifies_in_pycose() -> None:
    """Interop with an independent COSE implementation, both ways (pycose is in the dev set)."""
    from pycose.algorithms import EdDSA
    from pycose.headers import KID, Algorithm, ContentType
    from pycose.keys import OKPKey
    from pycose.keys.curves import Ed25519
    from pycose.messages import Sign1Message

    d = KEY.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    x = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    rec = factory.record()
    content = cbor2.dumps(wire.record_as_map(rec), canonical=True, datetime_as_timestamp=True)
    theirs = Sign1Message(
        phdr={Algorithm: EdDSA, KID: b"st-01", ContentType: wire.RECORD_CONTENT_TYPE}, payload=content
    )
    theirs.key = OKPKey(crv=Ed25519, d=d, x=x)
    assert decode(theirs.encode()) == rec

    signed, _jpegs = cbor2.loads(wire.encode_record(rec, KEY))  # schema 2: the COSE_Sign1, then the JPEGs
    parts = list(signed.value)
    parts[1] = dict(parts[1])  # pycose 1.1 expects a dict where cbor2 6 gives a frozendict
    ours = Sign1Message.from_cose_obj(parts, True)
    ours.key = OKPKey(crv=Ed25519, x=x)
    assert ours.verify_signature()


# ------------------------------------------------------------------------ envelope rejections
def test_rejects_oversize_before_parsing() -> None:
    payload = wire.encode_record(factory.record(), KEY)
    rejects("oversize", payload, max_bytes=len(payload) - 1)
    assert decode(payload, max_bytes=len(payload)).station == "st-01"


@pytest.mark.parametrize("payload", [b"", b"\xff", b"\x1c\x00", b'{"json": true}', b"\xa2\x61a\x01\x61a\x02"])
def test_rejects_not_cbor(payload: bytes) -> None:
    rejects("not_cbor", payload)


def test_rejects_trailing_bytes() -> None:
    rejects("not_cbor", wire.encode_record(factory.record(), KEY) + b"\x00")


@pytest.mark.parametrize(
    "obj",
    [
        {"record_id": "x"},
        [b"", {}, b"", b""],  # untagged
        cbor2.CBORTag(17, [b"", {}, b"", b""]),  # COSE_Mac0
        cbor2.CBORTag(18, [b"", {}, b""]),
        cbor2.CBORTag(18, [{}, {}, b"", b""]),
        cbor2.CBORTag(18, [b"", [], b"", b""]),
        cbor2.CBORTag(18, [b"", None, b"", b""]),
        cbor2.CBORTag(18, [b"", {}, "text", b""]),
    ],
)
def test_rejects_not_cose_sign1(obj: Any) -> None:
    rejects("not_cose_sign1", cbor2.dumps(obj))


def test_rejects_wrong_or_missing_alg() -> None:
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    base = {3: wire.RECORD_CONTENT_TYPE, 4: b"st-01"}
    rejects("wrong_alg", envelope({**base, 1: -7}, {}, content))  # ES256
    rejects("wrong_alg", envelope({**base, 1: -8.0}, {}, content))
    rejects("wrong_alg", envelope({**base, 1: "EdDSA"}, {}, content))
    rejects("wrong_alg", envelope(base, {}, content))


def test_rejects_headers_it_does_not_understand() -> None:
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    ok = {1: -8, 3: wire.RECORD_CONTENT_TYPE, 4: b"st-01"}
    rejects("bad_header", envelope(ok, {"kid": b"st-02"}, content))
    rejects("not_cbor", envelope(ok, {4: b"st-02"}, content))  # int keys outside the signed header
    rejects("bad_header", envelope({**ok, 5: b"\x00" * 1100}, {}, content))
    rejects("bad_header", envelope({**ok, 2: [99]}, {}, content))  # crit
    rejects("bad_header", envelope({**ok, 99: 1}, {}, content))
    rejects("bad_header", envelope(cbor2.dumps([1, -8]), {}, content))
    rejects("not_cbor", envelope(b"\xa1\x01", {}, content))


def test_rejects_wrong_content_type() -> None:
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    rejects("wrong_content_type", envelope({1: -8, 3: wire.COMMAND_CONTENT_TYPE, 4: b"st-01"}, {}, content))
    rejects("wrong_content_type", envelope({1: -8, 4: b"st-01"}, {}, content))


def test_rejects_missing_or_unknown_kid() -> None:
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    ct = {1: -8, 3: wire.RECORD_CONTENT_TYPE}
    rejects("missing_kid", envelope(ct, {}, content))
    rejects("missing_kid", envelope({**ct, 4: b""}, {}, content))
    rejects("missing_kid", envelope({**ct, 4: "st-01"}, {}, content))
    rejects("unknown_kid", envelope({**ct, 4: b"\xff\xfe"}, {}, content))
    rejects("unknown_kid", envelope({**ct, 4: b"st-01\x00"}, {}, content))
    rejects("unknown_kid", sign_map(good_map(), kid="st-99"))


def test_rejects_bad_signature() -> None:
    payload = bytearray(wire.encode_record(replace(factory.record(), schema=1), KEY))
    payload[-1] ^= 0x01  # last signature byte
    rejects("bad_signature", bytes(payload))
    signed, jpegs = cbor2.loads(wire.encode_record(factory.record(), KEY))
    parts = list(signed.value)
    parts[3] = bytes([parts[3][0] ^ 1]) + parts[3][1:]
    rejects("bad_signature", cbor2.dumps([cbor2.CBORTag(18, parts), jpegs]))
    rejects("bad_signature", wire.encode_record(factory.record(), OTHER_KEY))  # st-01's kid, wrong key
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    rejects(
        "bad_signature",
        envelope({1: -8, 3: wire.RECORD_CONTENT_TYPE, 4: b"st-01"}, {}, content, signature=b"\x00" * 63),
    )


def test_signature_covers_the_content() -> None:
    payload = wire.encode_record(replace(factory.record(), schema=1), KEY)
    parts = list(cbor2.loads(payload).value)
    parts[2] = parts[2].replace(b"2026-000123", b"2026-000124")
    rejects("bad_signature", cbor2.dumps(cbor2.CBORTag(18, parts)))
    signed, jpegs = cbor2.loads(wire.encode_record(factory.record(), KEY))
    parts = list(signed.value)
    parts[2] = parts[2].replace(b"2026-000123", b"2026-000124")
    rejects("bad_signature", cbor2.dumps([cbor2.CBORTag(18, parts), jpegs]))


def test_schema_2_signs_each_jpeg_digest_and_sends_the_bytes_beside_it() -> None:
    """The signed content holds each capture's size and SHA-256, not the photo; the photos follow the
    COSE_Sign1 in capture order, and the record decodes to the same captures as schema 1."""
    rec = factory.record()
    signed, jpegs = cbor2.loads(wire.encode_record(rec, KEY))
    content = cbor2.loads(signed.value[2])
    assert content["schema"] == 2 == wire.SCHEMA_VERSION
    assert [c["size"] for c in content["captures"]] == [len(c.jpeg) for c in rec.captures]
    assert all("jpeg" not in c for c in content["captures"])
    assert jpegs == [c.jpeg for c in rec.captures]
    out = decode(wire.encode_record(rec, KEY))
    assert out == rec and out.schema == 2


def test_a_jpeg_byte_changed_beside_the_signature_is_refused_without_naming_the_record() -> None:
    """Flip one byte of a photo (or cut it, or swap two): the signed digest no longer matches. The refusal
    names no record, so the station keeps it and sends it again rather than giving it up."""
    rec = factory.record()
    signed, jpegs = cbor2.loads(wire.encode_record(rec, KEY))
    flipped = bytearray(jpegs[0])
    flipped[len(flipped) // 2] ^= 0x01
    err = rejects("unsigned_jpeg", cbor2.dumps([signed, [bytes(flipped), *jpegs[1:]]]))
    assert err.record_id is None
    assert "captures[0]" in err.message and "not the one signed" in err.message
    rejects("unsigned_jpeg", cbor2.dumps([signed, [jpegs[0][:-1], *jpegs[1:]]]))
    other = factory.jpeg(seed=9)  # another photo in its place
    assert other != jpegs[0]
    rejects("unsigned_jpeg", cbor2.dumps([signed, [other, *jpegs[1:]]]))
    rejects("bad_value", cbor2.dumps([signed, jpegs[:-1]]))  # one photo missing
    rejects("bad_value", cbor2.dumps([signed, [*jpegs, jpegs[0]]]))  # one too many
    rejects("bad_value", cbor2.dumps([signed, ["text", *jpegs[1:]]]))
    rejects("missing_field", cbor2.dumps(signed))  # schema 2 content without its photos


def test_a_forged_or_unsigned_schema_2_record_is_refused() -> None:
    rec = factory.record()
    _, jpegs = cbor2.loads(wire.encode_record(rec, KEY))
    forged, _ = cbor2.loads(wire.encode_record(rec, OTHER_KEY))  # st-01's kid, another key
    rejects("bad_signature", cbor2.dumps([forged, jpegs]))
    content = cbor2.dumps(wire.record_as_map(rec, schema=2), datetime_as_timestamp=True)
    unsigned = cbor2.CBORTag(18, [cbor2.dumps({1: -8, 3: wire.RECORD_CONTENT_TYPE, 4: b"st-01"}), {}, content,
                                  b"\x00" * 64])
    rejects("bad_signature", cbor2.dumps([unsigned, jpegs]))
    rejects("not_cose_sign1", cbor2.dumps([content, jpegs]))
    rejects("not_cose_sign1", cbor2.dumps([unsigned, jpegs, jpegs]))


def test_schema_1_records_from_stations_not_yet_updated_still_verify() -> None:
    rec = replace(factory.record(), schema=1)
    payload = wire.encode_record(rec, KEY)
    assert isinstance(cbor2.loads(payload), cbor2.CBORTag)  # the old framing: one COSE_Sign1, photos inside
    out = wire.verify_record(payload, lookup)
    assert out.record == rec and out.record.schema == 1
    signed, jpegs = cbor2.loads(wire.encode_record(factory.record(), KEY))
    # a schema 1 content framed like schema 2 is refused, whatever the photos beside it
    rejects("bad_value", cbor2.dumps([cbor2.loads(payload), jpegs]))


def test_the_same_record_in_either_schema_is_the_same_content() -> None:
    """A record delivered in schema 1 whose ack was lost, sent again in schema 2 after the station's update,
    is a repeat (the gallery answers duplicate), not a replay; a changed record in the other schema is not."""
    rec = factory.record()
    v1 = wire.verify_record(wire.encode_record(replace(rec, schema=1), KEY), lookup)
    v2 = wire.verify_record(wire.encode_record(rec, KEY), lookup)
    assert v1.content_sha256 != v2.content_sha256
    assert v2.same_content(v1.content_sha256) and v1.same_content(v2.content_sha256)
    other = wire.verify_record(wire.encode_record(replace(rec, created_at=factory.T0 + dt.timedelta(seconds=1)),
                                                  KEY), lookup)
    assert not other.same_content(v1.content_sha256) and not other.same_content(v2.content_sha256)


def test_rejects_a_record_signed_by_another_station() -> None:
    err = rejects("kid_mismatch", sign_map(wire.record_as_map(factory.record("st-02")), kid="st-01"))
    assert err.record_id is not None


def test_key_lookup_may_reject_with_its_own_code() -> None:
    def strict(kid: str) -> Any:
        raise wire.WireError("revoked_device", kid)

    with pytest.raises(wire.WireError) as info:
        wire.decode_record(wire.encode_record(factory.record(), KEY), strict)
    assert info.value.code == "revoked_device"


# --------------------------------------------------------------------------- content rejections
@pytest.mark.parametrize("schema", [3, 0, "1", 1.0, None, True])
def test_rejects_unknown_schema(schema: Any) -> None:
    obj = good_map()
    obj["schema"] = schema
    rejects("unknown_schema", sign_map(obj))


def _paths() -> list[tuple[str, ...]]:
    obj = good_map()
    out: list[tuple[str, ...]] = [(k,) for k in obj]
    out += [("booking", k) for k in obj["booking"]]
    out += [("captures", "0", k) for k in obj["captures"][0]]
    out += [("captures", "0", "template", k) for k in obj["captures"][0]["template"]]
    out.append(("captures", "2", "description"))
    return out


def _parent(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path[:-1]:
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


@pytest.mark.parametrize("path", _paths(), ids="/".join)
def test_rejects_each_missing_field(path: tuple[str, ...]) -> None:
    obj = good_map()
    del _parent(obj, path)[path[-1]]
    rejects("missing_field", sign_map(obj))


@pytest.mark.parametrize(
    "path", [(), ("booking",), ("captures", "0"), ("captures", "0", "template")], ids=lambda p: "/".join(p) or "record"
)
def test_rejects_unknown_fields(path: tuple[str, ...]) -> None:
    obj = good_map()
    target = _parent(obj, (*path, "x"))
    target["extra"] = 1
    rejects("unknown_field", sign_map(obj))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("station",), 7),
        (("booking",), ["WA0170000"]),
        (("booking", "operator"), b"ofc"),
        (("booking", "captured_at"), 1772375405),
        (("booking", "captured_at"), "2026-03-01T14:30:05Z"),
        (("captures",), {"0": 1}),
        (("captures", "0", "jpeg"), "not bytes"),
        (("captures", "0", "width"), "48"),
        (("captures", "0", "width"), True),
        (("captures", "0", "height"), 60.0),
        (("captures", "0", "sha256"), "ab" * 32),
        (("captures", "0", "quality"), [1, 2]),
        (("captures", "0", "quality"), {"k": {"a", "b"}}),
        (("captures", "0", "quality"), {"k": cbor2.CBORTag(99999, "x")}),
        (("captures", "0", "template"), b"\x00" * 8),
        (("captures", "0", "template", "dim"), "128"),
        (("captures", "0", "template", "values"), [0.1] * 128),
        (("captures", "0", "override_reason"), 5),
        (("captures", "0", "pose"), 1),
    ],
    ids=lambda v: "/".join(v) if isinstance(v, tuple) else None,
)
def test_rejects_wrong_types(path: tuple[str, ...], value: Any) -> None:
    obj = good_map()
    _parent(obj, path)[path[-1]] = value
    rejects("wrong_type", sign_map(obj))


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.uuid4()),
        str(uuid.UUID(wire.uuid7())).upper(),
        wire.uuid7().replace("-", ""),
        "{" + wire.uuid7() + "}",
        "not-a-uuid",
        "",
        wire.uuid7()[:14] + "1" + wire.uuid7()[15:],
        str(uuid.UUID(int=uuid.UUID(wire.uuid7()).int & ~(0b11 << 62))),  # NCS variant
    ],
)
def test_rejects_bad_uuid(value: str) -> None:
    obj = good_map()
    obj["record_id"] = value
    rejects("bad_uuid", sign_map(obj))


def test_rejects_sha256_mismatch() -> None:
    obj = good_map()
    obj["captures"][1]["sha256"] = hashlib.sha256(b"other").digest()
    err = rejects("sha256_mismatch", sign_map(obj))
    assert err.record_id == obj["record_id"]  # verified: the gallery can name the record
    obj = good_map()
    obj["captures"][0]["jpeg"] = obj["captures"][0]["jpeg"][:-10] + b"\x00" * 10
    rejects("sha256_mismatch", sign_map(obj))


def test_rejects_template_dim_mismatch() -> None:
    obj = good_map()
    obj["captures"][0]["template"]["dim"] = 127
    rejects("template_dim_mismatch", sign_map(obj))
    obj["captures"][0]["template"]["values"] += b"\x00"
    rejects("template_dim_mismatch", sign_map(obj))


def test_rejects_non_finite_template_values() -> None:
    obj = good_map()
    obj["captures"][0]["template"] = {"model": "m", "dim": 2, "values": struct.pack("<2f", 0.5, float("nan"))}
    rejects("bad_value", sign_map(obj))


@pytest.mark.parametrize("pose", ["FRONTAL", "profile", "back", ""])
def test_rejects_unknown_pose(pose: str) -> None:
    obj = good_map()
    obj["captures"][0]["pose"] = pose
    rejects("unknown_pose", sign_map(obj))


def test_rejects_too_many_captures_and_none() -> None:
    obj = good_map()
    obj["captures"] = [obj["captures"][2]] * (wire.MAX_CAPTURES + 1)
    rejects("too_many_captures", sign_map(obj))
    obj["captures"] = obj["captures"][: wire.MAX_CAPTURES]
    assert len(decode(sign_map(obj)).captures) == wire.MAX_CAPTURES  # smt may repeat
    obj["captures"] = []
    rejects("missing_field", sign_map(obj))


def test_rejects_duplicate_frontal() -> None:
    obj = good_map()
    obj["captures"][1] = copy.deepcopy(obj["captures"][0])
    rejects("duplicate_pose", sign_map(obj))


@pytest.mark.parametrize(
    "path",
    [
        ("booking", "booking_number"),
        ("booking", "operator"),
        ("captures", "2", "description"),
        ("captures", "0", "override_reason"),
        ("captures", "0", "template", "model"),
    ],
    ids="/".join,
)
@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f", "\x85", "\u202e", "\u2028"], ids=repr)
def test_rejects_control_characters(path: tuple[str, ...], char: str) -> None:
    obj = good_map()
    _parent(obj, path)[path[-1]] = f"ab{char}cd"
    rejects("control_character", sign_map(obj))


def test_rejects_control_characters_in_quality_keys_values_and_ids() -> None:
    for mutate in (
        lambda o: o["captures"][0]["quality"].update({"bad\x1b[31m": 1}),
        lambda o: o["captures"][0]["quality"].update({"note": "a\x00b"}),
        lambda o: o.update({"station": "st-01\n"}),
    ):
        obj = good_map()
        mutate(obj)
        rejects("control_character", sign_map(obj))


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda o: o["booking"].update(ori="WA017"), "bad_value"),
        (lambda o: o["booking"].update(ori="wa0170000"), "bad_value"),
        (lambda o: o["booking"].update(booking_number=""), "bad_value"),
        (lambda o: o["booking"].update(operator="x" * 65), "bad_value"),
        (lambda o: o.update(station="ST-01"), "bad_value"),
        (lambda o: o.update(county="king/+"), "bad_value"),
        (lambda o: o["captures"][0].update(width=0), "bad_value"),
        (lambda o: o["captures"][0].update(width=49), "bad_value"),  # disagrees with the JPEG
        (
            lambda o: o["captures"][0].update(jpeg=b"\x89PNG....", sha256=hashlib.sha256(b"\x89PNG....").digest()),
            "bad_jpeg",
        ),
        (lambda o: o["captures"][0].update(description="frontal with text"), "bad_value"),
        (lambda o: o["captures"][0]["quality"].update(x=float("inf")), "bad_value"),
        (lambda o: o["captures"][0]["quality"].update(deep=factory.too_deep_quality()), "bad_value"),
        (lambda o: o["captures"][0]["quality"].update(big=list(range(3000))), "bad_value"),
        (lambda o: o["booking"].update(captured_at=cbor2.CBORTag(0, "2026-03-01T14:30:05+02:00")), "bad_value"),
    ],
)
def test_rejects_bad_values(mutate: Callable[[dict[str, Any]], None], code: str) -> None:
    obj = good_map()
    mutate(obj)
    rejects(code, sign_map(obj))


def test_rejects_duplicate_map_keys_in_signed_content() -> None:
    """Two parsers must never see two different records in one signed payload."""
    content = cbor2.dumps(good_map(), datetime_as_timestamp=True)
    dup = b"\xa8" + content[1:] + cbor2.dumps("station") + cbor2.dumps("st-02")  # 7 -> 8 entries
    assert content[0] == 0xA7
    rejects("not_cbor", wire.sign1(dup, content_type=wire.RECORD_CONTENT_TYPE, kid="st-01", key=KEY))


def test_encode_refuses_what_decode_would_reject() -> None:
    rec = factory.record()
    bad = replace(rec, captures=(replace(rec.captures[0], sha256=b"\x00" * 32),))
    with pytest.raises(wire.WireError) as info:
        wire.encode_record(bad, KEY)
    assert info.value.code == "unsigned_jpeg"
    with pytest.raises(wire.WireError) as info:
        wire.encode_record(replace(bad, schema=1), KEY)
    assert info.value.code == "sha256_mismatch"
    with pytest.raises(wire.WireError):
        wire.encode_record(replace(rec, created_at=dt.datetime(2026, 1, 1)), KEY)  # naive


# ------------------------------------------------------------------------------------------ acks
def test_ack_round_trip() -> None:
    rid = wire.uuid7()
    for ack in (
        wire.Ack(rid, "stored"),
        wire.Ack(rid, "duplicate"),
        wire.Ack(None, "rejected", "bad_signature", "signature does not verify"),
        wire.Ack(rid, "rejected", "replay"),
    ):
        raw = wire.encode_ack(ack)
        assert json.loads(raw)["status"] == ack.status
        assert wire.decode_ack(raw) == ack
    assert wire.Ack(rid, "duplicate").delivered and not wire.Ack(rid, "rejected", "x").delivered


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff",
        b"[]",
        b'{"v":1,"record_id":null,"status":"stored","reason":null}',
        b'{"v":1,"status":"stored","reason":null}',
        b'{"v":2,"record_id":null,"status":"rejected","reason":"x"}',
        b'{"v":1,"record_id":null,"status":"rejected","reason":null}',
        b'{"v":1,"record_id":null,"status":"rejected","reason":"Bad Reason"}',
        b'{"v":1,"record_id":null,"status":"lost","reason":"x"}',
        b'{"v":1,"record_id":"abc","status":"rejected","reason":"x"}',
        b'{"v":1,"record_id":null,"status":"rejected","reason":"x","detail":"a\\u0000b"}',
        b'{"v":1,"record_id":null,"status":"rejected","reason":"x","more":1}',
        b"{" + b" " * 5000 + b"}",
    ],
)
def test_decode_ack_rejects_malformed(body: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_ack(body)


# -------------------------------------------------------------------------------------- commands
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)


def county_lookup(kid: str) -> Any:
    return COUNTY_KEY.public_key() if kid == "county:king:2026" else None


def command(action: str = "purge", **changes: Any) -> wire.WireCommand:
    args = {
        "purge": {"record_id": wire.uuid7(), "reason": "sealed under PC 851.91"},
        "config": {"settings": {"profile": "nist-sap40", "retention_days": 7}},
        "rotate": {"target": "signing-key"},
    }[action]
    base = wire.WireCommand(
        command_id=wire.uuid7(),
        county="king",
        station="st-01",
        action=action,
        issued_at=NOW - dt.timedelta(minutes=1),
        expires_at=NOW + dt.timedelta(days=1),
        args=args,
    )
    return replace(base, **changes)


def decode_cmd(payload: bytes, **kw: Any) -> wire.WireCommand:
    kw.setdefault("now", NOW)
    return wire.decode_command(payload, county_lookup, **kw)


@pytest.mark.parametrize("action", wire.COMMAND_ACTIONS)
def test_command_round_trip(action: str) -> None:
    cmd = command(action)
    payload = wire.encode_command(cmd, COUNTY_KEY, kid="county:king:2026")
    assert decode_cmd(payload, county="king", station="st-01") == cmd


def _cmd_rejects(code: str, payload: bytes, **kw: Any) -> None:
    with pytest.raises(wire.WireError) as info:
        decode_cmd(payload, **kw)
    assert info.value.code == code, info.value


def test_command_rejections() -> None:
    sign = lambda c, key=COUNTY_KEY, kid="county:king:2026": wire.encode_command(c, key, kid=kid)  # noqa: E731
    _cmd_rejects("expired", sign(command()), now=NOW + dt.timedelta(days=1))
    _cmd_rejects(
        "not_yet_valid", sign(command(issued_at=NOW + dt.timedelta(hours=1), expires_at=NOW + dt.timedelta(days=1)))
    )
    _cmd_rejects("bad_signature", sign(command(), key=KEY))
    _cmd_rejects("unknown_kid", sign(command(), kid="county:king:2019"))
    _cmd_rejects("wrong_target", sign(command()), station="st-02")
    _cmd_rejects("wrong_target", sign(command()), county="pierce")
    # a station-signed record is not a command, even if the station key were trusted
    _cmd_rejects("wrong_content_type", wire.encode_record(replace(factory.record(), schema=1), KEY))
    _cmd_rejects("wrong_content_type", cbor2.dumps(cbor2.loads(wire.encode_record(factory.record(), KEY))[0]))
    with pytest.raises(wire.WireError):
        sign(command(expires_at=NOW + dt.timedelta(days=90)))
    with pytest.raises(wire.WireError):
        sign(replace(command(), action="format"))
    with pytest.raises(wire.WireError):
        sign(command("rotate", args={"target": "everything"}))
    with pytest.raises(wire.WireError):
        sign(command("purge", args={"record_id": "x", "reason": "r"}))


# ------------------------------------------------------------------------------------------ fuzz
def _random_cbor_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return rng.randint(-(2**70), 2**70)
    if kind == 1:
        return rng.choice([0.0, -1.5, float("nan"), float("inf"), 1e308])
    if kind == 2:
        return rng.randbytes(rng.randrange(0, 40))
    if kind == 3:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 12)))
    if kind == 4:
        return rng.choice([None, True, False, cbor2.undefined])
    if kind == 5:
        return cbor2.CBORTag(
            rng.choice([0, 1, 2, 3, 4, 24, 32, 35, 37, 258, 1004, 55799, 99999]),
            rng.choice([rng.randbytes(4), "x", 5, -1.0, [1], "2026-13-45T99:00:00Z"]),
        )
    if kind == 6:
        return wire.uuid7()
    if kind == 7:
        return rng.choice(["frontal", "smt", "st-01", "king", "", "WA0170000"])
    if kind in (8, 9):
        return [_random_cbor_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {
        rng.choice(["a", "pose", "jpeg", 1, b"k"]): _random_cbor_value(rng, depth + 1)
        for _ in range(rng.randrange(0, 4))
    }


def _mutate_map(rng: random.Random, obj: Any) -> None:
    """Change, delete or add one field somewhere in the record map."""
    target = obj
    for _ in range(rng.randrange(0, 4)):
        children = [
            v for v in (target.values() if isinstance(target, dict) else target) if isinstance(v, (dict, list)) and v
        ]
        if not children:
            break
        target = rng.choice(children)
    if isinstance(target, dict):
        op = rng.randrange(3)
        key = rng.choice(list(target)) if target else "x"
        if op == 0 and target:
            del target[key]
        elif op == 1:
            target[key] = _random_cbor_value(rng)
        else:
            target[rng.choice(["extra", key, 7])] = _random_cbor_value(rng)
    elif isinstance(target, list) and target:
        i = rng.randrange(len(target))
        if rng.random() < 0.5:
            target[i] = _random_cbor_value(rng)
        else:
            del target[i]


def test_fuzz_decode_only_ever_raises_wire_error() -> None:
    """Random bytes, flipped bytes, truncations and re-signed field mutations: decode either
    returns a valid record or raises WireError; never another exception."""
    rng = random.Random(20260301)
    seeds = [
        wire.encode_record(factory.record(), KEY),
        wire.encode_record(factory.record(captures=(factory.capture("smt"),)), KEY),
        wire.encode_record(replace(factory.record(), schema=1), KEY),
        wire.encode_record(replace(factory.record(captures=(factory.capture("smt"),)), schema=1), KEY),
    ]
    accepted = rejected = 0
    codes: set[str] = set()
    for i in range(4000):
        op = i % 6
        base = bytearray(rng.choice(seeds))
        if op == 0:
            payload = rng.randbytes(rng.randrange(0, 300))
        elif op == 1:
            for _ in range(rng.randrange(1, 9)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            payload = bytes(base)
        elif op == 2:
            payload = bytes(base[: rng.randrange(len(base))])
        elif op == 3:
            at = rng.randrange(len(base))
            payload = bytes(base[:at] + rng.randbytes(rng.randrange(1, 20)) + base[at:])
        elif op == 4:
            obj = good_map()
            for _ in range(rng.randrange(1, 4)):
                _mutate_map(rng, obj)
            try:
                payload = sign_map(obj)
            except (cbor2.CBOREncodeError, TypeError, ValueError):
                continue
        else:
            msg = cbor2.loads(bytes(base))
            parts = list((msg[0] if isinstance(msg, list) else msg).value)
            j = rng.randrange(4)
            parts[j] = _random_cbor_value(rng) if rng.random() < 0.7 else cbor2.dumps(_random_cbor_value(rng))
            signed = cbor2.CBORTag(rng.choice([18, 18, 18, 98]), parts)
            payload = cbor2.dumps([signed, msg[1]] if isinstance(msg, list) else signed)
        try:
            rec = decode(payload)
        except wire.WireError as exc:
            rejected += 1
            codes.add(exc.code)
            assert exc.code and exc.message
        else:
            accepted += 1
            assert isinstance(rec, wire.WireRecord)
            # whatever got through must survive our own strict encoder
            wire.encode_record(rec, KEY)
    assert rejected > 3000
    # the fuzz reached the deep checks, not just the envelope
    assert {"not_cbor", "not_cose_sign1", "bad_signature", "missing_field", "wrong_type"} <= codes, codes


def test_colliding_integer_keys_are_refused_without_decoding_them() -> None:
    """Integers equal modulo 2**61-1 share one hash: a map of them would stall dict building."""
    collide = {k * (2**61 - 1): 0 for k in range(1, 2000)}
    rejects("not_cbor", cbor2.dumps(cbor2.CBORTag(18, [b"", collide, b"", b""])))
    obj = good_map()
    obj["captures"][0]["quality"] = collide
    rejects("not_cbor", sign_map(obj))
