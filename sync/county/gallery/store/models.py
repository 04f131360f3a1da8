"""What the gallery store hands out (frozen dataclasses, one per row kind) and the field check on what goes in.

Kept apart from the SQL so code that only reads results (the console, the fleet view, the search index)
depends on plain data, and so :func:`check_record_fields` sits beside the record columns it guards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.county.gallery.store.errors import RecordFieldError
from sync.protocol import record as rules
from sync.protocol.wire import VerifiedRecord, WireRecord

DeviceStatus = Literal["active", "revoked"]
InsertResult = Literal["stored", "duplicate"]


def check_record_fields(record: WireRecord) -> None:
    """Check every stored column of ``record`` against its rule in :mod:`sync.protocol.record`."""
    b = record.booking
    values: list[tuple[rules.FieldRule, object]] = [
        (rules.RECORD_ID, record.record_id),
        (rules.STATION, record.station),
        (rules.COUNTY, record.county),
        (rules.AGENCY_ORI, b.ori),
        (rules.BOOKING_NUMBER, b.booking_number),
        (rules.OPERATOR_ID, b.operator),
    ]
    values += [(rules.TEMPLATE_MODEL, c.template.model) for c in record.captures if c.template is not None]
    try:
        rules.check_uuid7(record.record_id)
        for rule, value in values:
            rules.check_field(rule, value)
    except rules.RecordRuleError as exc:
        raise RecordFieldError(f"record {str(record.record_id)[:40]!r} not stored: {exc.message}") from None
    for capture in record.captures:
        if capture.pose not in rules.POSES:
            raise RecordFieldError(f"record {record.record_id} not stored: unknown pose {capture.pose[:40]!r}")


@dataclass(frozen=True)
class Device:
    """A registered station and the Ed25519 public key its records must be signed with."""

    station: str
    county: str
    public_key: bytes  # raw 32-byte Ed25519 key
    status: DeviceStatus
    registered_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def verify_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


@dataclass(frozen=True)
class GalleryRecord:
    """The searchable columns of a stored record (the payload itself via ``get_payload``)."""

    record_id: str
    station: str
    county: str
    received_at: datetime
    ori: str
    booking_number: str
    operator: str
    captured_at: datetime
    created_at: datetime
    capture_count: int
    content_sha256: bytes


@dataclass(frozen=True)
class PendingInsert:
    """One verified record waiting for a group commit (:meth:`GalleryStore.insert_records`)."""

    verified: VerifiedRecord
    payload: bytes
    received_at: datetime
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoredTemplate:
    record_id: str
    capture_index: int
    pose: str
    model: str
    dim: int
    vector: bytes


@dataclass(frozen=True)
class SequencedTemplate:
    """A template with its store sequence number (the search index's id for it)."""

    seq: int
    record_id: str
    model: str
    vector: bytes


@dataclass(frozen=True)
class TemplateOwner:
    """The record behind a template sequence number: what a search result shows."""

    seq: int
    record_id: str
    pose: str
    station: str
    ori: str
    booking_number: str
    captured_at: datetime


@dataclass(frozen=True)
class StationStatus:
    """The latest health report of one station, as the gallery last received it.

    ``body`` is the station's JSON status object (see ``sync.station.agent``); ``state`` and ``reported_at``
    (the station's own clock, ``body["at"]``) are copied out so a fleet query need not parse every
    body. ``received_at`` is the gallery's clock: "last seen".
    """

    station: str
    county: str
    state: str
    reported_at: datetime | None
    received_at: datetime
    body: dict[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    """One county-side action: ``actor`` (an operator or a tool), ``action`` (``purge``, ``import``,
    ``booking_check``...), ``subject`` (a record id, a booking) and free ``details``."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """Refused payloads of one station (if the topic said) and reason: the last one's topic, record id,
    detail, hash and size; how many there were; and when the first came, with its detail, hash and size."""

    id: int
    received_at: datetime
    topic: str
    station: str | None
    record_id: str | None
    reason: str
    detail: str
    payload_sha256: bytes
    payload_size: int
    count: int = 1
    first_received_at: datetime | None = None
    first_detail: str | None = None
    first_payload_sha256: bytes | None = None
    first_payload_size: int | None = None
