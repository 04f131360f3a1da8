"""A stored booking record as the signed wire record the gallery receives (pure and deterministic, so a
resend is a ``duplicate`` and never a ``replay``), and the station's record-signing key."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.store import StationStoreError, Store, UnknownStationRecordError
from appliance.store.db import StationRecord
from sync.protocol import wire
from sync.station.agent.common import SyncSetupError
from sync.station.remote import private_files_ok


class Unsendable(Exception):
    """A stored record that cannot be turned into a valid wire record (or is over the size limit)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def to_wire_record(stored: StationRecord, *, county: str, station: str) -> wire.WireRecord:
    """The wire form of a stored record. Pure and deterministic: the same stored record always gives
    the same WireRecord, which is what makes a resend a ``duplicate`` and not a ``replay``."""
    b = stored.booking
    captures = []
    for c in stored.captures:
        template = None
        if c.template is not None:
            if c.template_model is None:
                raise Unsendable("bad_template", f"{c.pose} template has no model id")
            template = wire.WireTemplate.from_floats(c.template_model, list(c.template))
        captures.append(
            wire.WireCapture(
                pose=c.pose,
                jpeg=c.jpeg,
                width=c.width,
                height=c.height,
                sha256=bytes.fromhex(c.sha256),
                quality=dict(c.quality),
                template=template,
                override_reason=c.override_reason,
                description=c.smt_description,
                # Named only after a hand-over: a record without one stays byte-identical to before.
                operator=c.operator_id if c.operator_id != b.operator_id else None,
            )
        )
    return wire.WireRecord(
        record_id=stored.record_id,
        station=station,
        county=county,
        booking=wire.WireBooking(
            ori=b.agency_ori, booking_number=b.booking_number, operator=b.operator_id, captured_at=b.captured_at
        ),
        captures=tuple(captures),
        created_at=stored.created_at,
    )


def encode_stored(
    store: Store, record_id: str, *, county: str, station: str, key: Ed25519PrivateKey, max_bytes: int
) -> bytes:
    """Load (decrypt, check hashes), convert and sign one record. Raises :class:`Unsendable` when the
    record cannot be sent as stored, ``UnknownStationRecordError`` when it is gone (purged meanwhile)."""
    return sign_wire_record(load_wire_record(store, record_id, county=county, station=station), key=key,
                            max_bytes=max_bytes)


def load_wire_record(store: Store, record_id: str, *, county: str, station: str) -> wire.WireRecord:
    """The first half of :func:`encode_stored`, which needs the store (so it runs on the store's thread)."""
    try:
        stored = store.load_record(record_id)
    except UnknownStationRecordError:
        raise
    except StationStoreError as exc:  # DecryptError, RecordIntegrityError, RecordPurgedError
        raise Unsendable(type(exc).__name__, str(exc)) from None
    if stored.booking.station_id != station:
        raise Unsendable(
            "station_mismatch", f"record was saved by station {stored.booking.station_id!r}, this is {station!r}"
        )
    try:
        return to_wire_record(stored, county=county, station=station)
    except wire.WireError as exc:
        raise Unsendable(exc.code, exc.message) from None
    except (struct.error, OverflowError, ValueError, TypeError) as exc:
        raise Unsendable("encode_failed", str(exc)) from None


def sign_wire_record(record: wire.WireRecord, *, key: Ed25519PrivateKey, max_bytes: int) -> bytes:
    """The second half of :func:`encode_stored`: encode, validate and sign. Pure and free of the store,
    so it may run on another thread (the signature's hashing releases the GIL)."""
    try:
        payload = wire.encode_record(record, key)
    except wire.WireError as exc:
        raise Unsendable(exc.code, exc.message) from None
    except (struct.error, OverflowError, ValueError, TypeError) as exc:
        raise Unsendable("encode_failed", str(exc)) from None
    if len(payload) > max_bytes:
        raise Unsendable("oversize", f"signed record is {len(payload)} bytes, the limit is {max_bytes}")
    return payload


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The station's Ed25519 record-signing key (PEM, PKCS#8), which must be private to its owner."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SyncSetupError(f"record-signing key {path} does not exist; provision the station first") from None
    except OSError as exc:
        raise SyncSetupError(f"record-signing key {path} cannot be read: {exc.strerror or exc}") from None
    if not private_files_ok(path):
        raise SyncSetupError(f"record-signing key {path} is readable by others; run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SyncSetupError(f"record-signing key {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SyncSetupError(f"record-signing key {path} is not an Ed25519 key")
    return key
