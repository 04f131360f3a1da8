"""The station's audit log on the wire: the chain's hash rule, signed batches of entries, their acks, and
the signed chain head a station's status carries.

Why the county holds a copy: the station's audit chain is unkeyed SHA-256, so anyone who can write the
station's database can rewrite it from some entry on (recomputing every later hash) or drop its newest
entries, and the station's own check still passes. A copy the station cannot reach catches both: the
gallery keeps every entry it received, checks that each new one links to the last one it holds, and
compares the head the station reports (signed, in its status) with what it holds.

The hash rule lives here, not in the station's store, because both sides must compute it identically and
this package is the one both import.

A batch is a COSE_Sign1 (the same envelope and station key as records, :mod:`sync.protocol.wire`) over
CBOR content::

    {"schema": 1, "county": slug, "station": slug,
     "entries": [[seq, at, actor, action, details, prev_hash, hash], ...],   ; consecutive seqs, oldest first
     "head": [seq, hash]}                                                     ; the station's newest entry

The gallery answers each batch on the station's ``audit-acks`` topic with a small JSON ack naming the last
seq it handled (``through_seq``): ``stored`` (every entry linked and is held), ``conflict`` (received, but
an entry did not link: the county raised an alarm; resending would not change that) or ``rejected``
(not verified: the station keeps the entries and retries).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.protocol.topics import is_slug
from sync.protocol.wire import KeyLookup, WireError, _loads_exact, open_sign1, sign1

GENESIS_HASH = "0" * 64
"""``prev_hash`` of a station's very first audit entry."""

FORMAT_TAG = "booking-station-audit-v1"
AUDIT_CONTENT_TYPE = "application/vnd.booking-station.audit+cbor"
AUDIT_ACK_CONTENT_TYPE = "application/json"
SCHEMA_VERSION = 1
#: Entries per batch: small enough that a batch is a few hundred kB at most, large enough that a
#: backlog after a week offline goes in a few dozen messages.
MAX_BATCH_ENTRIES = 200
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_DETAILS_CHARS = 16 * 1024
MAX_SEQ = 2**62
AUDIT_ACK_STATUSES = ("stored", "conflict", "rejected")
_HEAD_TAG = "booking-station-audit-head-v1"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def entry_hash(seq: int, at: str, actor: str, action: str, details: str, prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical encoding of one audit entry.

    The encoding is a JSON array ``[format tag, seq, at, actor, action, details, prev_hash]`` with no
    spaces and ASCII escapes: strings and an integer only, so it has exactly one serialisation and a
    field boundary can never be shifted (``"ab","c"`` and ``"a","bc"`` encode differently).
    """
    payload = json.dumps([FORMAT_TAG, seq, at, actor, action, details, prev_hash],
                         separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class AuditWireEntry:
    """One audit entry as the station stored it (``details`` is the canonical JSON text that was hashed)."""

    seq: int
    at: str
    actor: str
    action: str
    details: str
    prev_hash: str
    hash: str

    @property
    def hash_ok(self) -> bool:
        """True when ``hash`` is the hash of this entry's own fields (an edited entry fails this)."""
        return entry_hash(self.seq, self.at, self.actor, self.action, self.details, self.prev_hash) == self.hash

    def as_list(self) -> list[Any]:
        return [self.seq, self.at, self.actor, self.action, self.details, self.prev_hash, self.hash]


@dataclass(frozen=True)
class AuditBatch:
    """Consecutive entries of one station's chain, and the station's head when it sent them."""

    county: str
    station: str
    entries: tuple[AuditWireEntry, ...]
    head_seq: int
    head_hash: str

    @property
    def through_seq(self) -> int:
        """The last seq this batch carries (the head's seq for an empty batch)."""
        return self.entries[-1].seq if self.entries else self.head_seq


def _fail(code: str, message: str) -> WireError:
    return WireError(code, message)


def _seq(value: object, where: str, lo: int = 0) -> int:
    if type(value) is not int or not lo <= value <= MAX_SEQ:
        raise _fail("bad_value", f"{where} must be an integer {lo}..{MAX_SEQ}")
    return value


def _hex64(value: object, where: str) -> str:
    if type(value) is not str or not _HEX64.fullmatch(value):
        raise _fail("bad_value", f"{where} must be 64 lower-case hex digits")
    return value


def _text(value: object, where: str, limit: int) -> str:
    if type(value) is not str or not value or len(value) > limit:
        raise _fail("bad_value", f"{where} must be text of 1-{limit} characters")
    return value


def _entry(item: object, where: str) -> AuditWireEntry:
    if not isinstance(item, (list, tuple)) or len(item) != 7:
        raise _fail("wrong_type", f"{where} must be an array of 7")
    seq = _seq(item[0], f"{where} seq", 1)
    at = _text(item[1], f"{where} at", 40)
    actor = _text(item[2], f"{where} actor", 128)
    if _CONTROL.search(actor) or _CONTROL.search(at):
        raise _fail("control_character", f"{where} holds a control character")
    action = _text(item[3], f"{where} action", 40)
    if not _ACTION.fullmatch(action):
        raise _fail("bad_value", f"{where} action is not a lower-case identifier")
    details = _text(item[4], f"{where} details", MAX_DETAILS_CHARS)
    return AuditWireEntry(seq, at, actor, action, details, _hex64(item[5], f"{where} prev_hash"),
                          _hex64(item[6], f"{where} hash"))


def _batch_from_obj(obj: object) -> AuditBatch:
    if not isinstance(obj, Mapping):
        raise _fail("wrong_type", "audit batch must be a map")
    keys = {"schema", "county", "station", "entries", "head"}
    if set(obj) != keys:
        raise _fail("missing_field", f"audit batch must have exactly {', '.join(sorted(keys))}")
    if type(obj["schema"]) is not int or obj["schema"] != SCHEMA_VERSION:
        raise _fail("unknown_schema", "audit batch schema is not supported")
    county, station = obj["county"], obj["station"]
    if not is_slug(county) or not is_slug(station):
        raise _fail("bad_value", "county and station must be slugs")
    items, head = obj["entries"], obj["head"]
    if not isinstance(items, (list, tuple)) or len(items) > MAX_BATCH_ENTRIES:
        raise _fail("bad_value", f"entries must be an array of at most {MAX_BATCH_ENTRIES}")
    entries = tuple(_entry(item, f"entries[{i}]") for i, item in enumerate(items))
    for before, after in zip(entries, entries[1:], strict=False):
        if after.seq != before.seq + 1:
            raise _fail("bad_value", f"entries must be consecutive: {after.seq} follows {before.seq}")
    if not isinstance(head, (list, tuple)) or len(head) != 2:
        raise _fail("wrong_type", "head must be [seq, hash]")
    head_seq, head_hash = _seq(head[0], "head seq"), _hex64(head[1], "head hash")
    if entries and head_seq < entries[-1].seq:
        raise _fail("bad_value", "head is older than the batch's last entry")
    return AuditBatch(county, station, entries, head_seq, head_hash)


def encode_batch(batch: AuditBatch, key: Ed25519PrivateKey) -> bytes:
    """Sign a batch with the station's record key (kid = the station); validated as the gallery will."""
    content = cbor2.dumps({"schema": SCHEMA_VERSION, "county": batch.county, "station": batch.station,
                           "entries": [e.as_list() for e in batch.entries],
                           "head": [batch.head_seq, batch.head_hash]}, canonical=True)
    _batch_from_obj(_loads_exact(content, max_depth=4, text_keys_only=True))
    return sign1(content, content_type=AUDIT_CONTENT_TYPE, kid=batch.station, key=key)


def verify_batch(payload: bytes, verify_key_lookup: KeyLookup, *, max_bytes: int = MAX_BATCH_BYTES) -> AuditBatch:
    """Verify the signature and the batch's form; :class:`WireError` on anything else. Whether the entries
    link to the county's copy is the gallery's business (:mod:`sync.county.gallery.audit`)."""
    kid, content = open_sign1(payload, content_type=AUDIT_CONTENT_TYPE, verify_key_lookup=verify_key_lookup,
                              max_bytes=max_bytes)
    batch = _batch_from_obj(_loads_exact(content, max_depth=4, text_keys_only=True))
    if batch.station != kid:
        raise _fail("kid_mismatch", f"audit batch says station {batch.station!r}, signed by {kid!r}")
    return batch


# ------------------------------------------------------------------------------------------ acks
@dataclass(frozen=True)
class AuditAck:
    """The gallery's answer to one batch (see the module docstring)."""

    through_seq: int
    status: str
    reason: str | None = None


def encode_audit_ack(ack: AuditAck) -> bytes:
    _check_ack(ack)
    body = {"v": 1, "through_seq": ack.through_seq, "status": ack.status, "reason": ack.reason}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_audit_ack(payload: bytes) -> AuditAck:
    """Parse and check an audit ack; :class:`WireError` if it is malformed."""
    if len(payload) > 1024:
        raise _fail("oversize", "an audit ack is at most 1024 bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _fail("not_json", "audit ack is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "through_seq", "status", "reason"} or obj["v"] != 1:
        raise _fail("bad_value", "audit ack must be {v: 1, through_seq, status, reason}")
    ack = AuditAck(obj["through_seq"], obj["status"], obj["reason"])
    _check_ack(ack)
    return ack


def _check_ack(ack: AuditAck) -> None:
    _seq(ack.through_seq, "through_seq")
    if ack.status not in AUDIT_ACK_STATUSES:
        raise _fail("bad_value", f"audit ack status must be one of {', '.join(AUDIT_ACK_STATUSES)}")
    if ack.reason is not None and (type(ack.reason) is not str or not _REASON.fullmatch(ack.reason)):
        raise _fail("bad_value", "audit ack reason must be a code (a-z, 0-9, _)")


# ------------------------------------------------------------------------------------ chain head
def _head_message(county: str, station: str, seq: int, digest: str) -> bytes:
    return json.dumps([_HEAD_TAG, county, station, seq, digest], separators=(",", ":")).encode()


def sign_head(county: str, station: str, seq: int, digest: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The ``audit_head`` a station's status carries: its newest entry's seq and hash, signed."""
    return {"seq": seq, "hash": digest, "sig": key.sign(_head_message(county, station, seq, digest)).hex()}


def verify_head(body: object, county: str, station: str, key: Ed25519PublicKey) -> tuple[int, str]:
    """``(seq, hash)`` of a status's ``audit_head`` whose signature verifies with the station's key."""
    if not isinstance(body, dict) or set(body) != {"seq", "hash", "sig"}:
        raise _fail("bad_value", "audit_head must be {seq, hash, sig}")
    seq, digest = _seq(body["seq"], "audit_head seq"), _hex64(body["hash"], "audit_head hash")
    sig = body["sig"]
    if type(sig) is not str or not re.fullmatch(r"[0-9a-f]{128}", sig):
        raise _fail("bad_signature", "audit_head sig must be 128 hex digits")
    try:
        key.verify(bytes.fromhex(sig), _head_message(county, station, seq, digest))
    except InvalidSignature:
        raise _fail("bad_signature", "audit_head signature does not verify with the station's key") from None
    return seq, digest
