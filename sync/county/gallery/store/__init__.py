"""Gallery storage: registered devices, verified records, their templates and a rejection log.

It stays one module (over 500 lines) because the SQLite and PostgreSQL stores share the interface's SQL,
which is easiest to keep in step when it sits beside both dialects.

One small interface (:class:`GalleryStore`), two implementations: SQLite for a single county
server and the tests, PostgreSQL where a county already runs it or runs several gallery workers.
Both share the SQL below (written with ``?`` placeholders; PostgreSQL gets ``%s``).

Rules the implementations keep:

* ``insert_record`` is one transaction (record, templates) and idempotent on ``record_id``: the
  first insert returns ``"stored"``, a repeat with the same signed content returns
  ``"duplicate"`` and a different content under a known id raises :class:`RecordConflictError`
  (the receiver acks that ``rejected``/``replay``). The gallery acks only after this commit.
* ``insert_record`` checks every stored column against its rule in :mod:`sync.protocol.record` (the wire
  decoder has already; this keeps a record built by other means out) and raises :class:`RecordFieldError`.
* The whole signed payload is kept, so the gallery can always show the station's signature.
* SQLite runs with WAL and ``synchronous=FULL`` (a committed record survives power loss before the
  ack goes out) and ``secure_delete`` (purged images are overwritten, CJIS media rules).
* Rejections keep the payload's hash and size, never its bytes: a rejected payload may still be
  criminal-justice information and has no business sitting in a log table.
* ``purge_records`` removes records and their templates in one transaction with a tombstone per record id
  (``purged``: the id, booking and reason, never the images) and an ``audit`` row; ``insert_record``
  refuses a purged id with :class:`RecordPurgedError`, so a station that still holds a sealed booking in
  its outbox cannot bring it back. ``audit`` is a plain append-only log of county-side actions (who,
  what, on which subject, JSON details); it has no chain of its own yet.
* ``station_status`` keeps only the *latest* status body per station (fleet health, from the
  retained ``status`` topic); it is an operational view, not an audit trail. The table was added
  after schema 1 shipped and is created with ``IF NOT EXISTS`` on open, so an existing gallery
  database gains it without a migration step and older workers simply ignore it.
* ``jobs`` is the durable work queue (:mod:`sync.county.gallery.jobs`): what the gallery still owes a
  record after its ack (exports, indexing) is enqueued inside the record's own transaction, so an ack
  never goes out for a record whose follow-up work could be forgotten. Created on open like
  ``station_status``. ``insert_records`` commits a group of records in one transaction (group commit).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.county.gallery.jobs import JOBS_SCHEMA, JobQueueMixin
from sync.protocol import record as rules
from sync.protocol.topics import check_slug
from sync.protocol.wire import VerifiedRecord, WireRecord

DEFAULT_DB = "/var/lib/booking-gallery/gallery.db"
SCHEMA_VERSION = 1
DeviceStatus = Literal["active", "revoked"]
InsertResult = Literal["stored", "duplicate"]


class GalleryStoreError(Exception):
    """A gallery storage failure the caller should report, not a crash."""


class GalleryDatabaseMissingError(GalleryStoreError):
    """A command that only reads was given a SQLite database that does not exist (nothing is created)."""


class NotAGalleryDatabaseError(GalleryStoreError):
    """The database file exists but is not a SQLite database."""


class DeviceExistsError(GalleryStoreError):
    """The station is already registered (revoked stations stay registered, so their records
    keep their provenance)."""


class UnknownDeviceError(GalleryStoreError):
    """No such station is registered."""


class RecordConflictError(GalleryStoreError):
    """A record with this id is already stored with different signed content: a replay."""


class RecordPurgedError(GalleryStoreError):
    """The record id was purged (a sealed or expunged booking): it is never stored again."""


class RecordFieldError(GalleryStoreError):
    """A record field the record's rules (:mod:`sync.protocol.record`) refuse; the wire decoder refuses it
    first, so this guards the columns against a record built by other means."""


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


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_iso(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 text, or None (absent, naive or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devices (
        station TEXT PRIMARY KEY,
        county TEXT NOT NULL,
        public_key {blob} NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
        registered_at {ts} NOT NULL,
        revoked_at {ts}
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        record_id TEXT PRIMARY KEY,
        station TEXT NOT NULL REFERENCES devices (station),
        county TEXT NOT NULL,
        received_at {ts} NOT NULL,
        ori TEXT NOT NULL,
        booking_number TEXT NOT NULL,
        operator TEXT NOT NULL,
        captured_at {ts} NOT NULL,
        created_at {ts} NOT NULL,
        capture_count INTEGER NOT NULL,
        content_sha256 {blob} NOT NULL,
        payload {blob} NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS records_station ON records (station, received_at)""",
    """CREATE INDEX IF NOT EXISTS records_booking ON records (ori, booking_number)""",
    """CREATE TABLE IF NOT EXISTS templates (
        record_id TEXT NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
        capture_index INTEGER NOT NULL,
        pose TEXT NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector {blob} NOT NULL,
        PRIMARY KEY (record_id, capture_index)
    )""",
    """CREATE INDEX IF NOT EXISTS templates_model ON templates (model)""",
    """CREATE TABLE IF NOT EXISTS rejections (
        id {serial},
        received_at {ts} NOT NULL,
        topic TEXT NOT NULL,
        station TEXT,
        record_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload_sha256 {blob} NOT NULL,
        payload_size INTEGER NOT NULL
    )""",
    # Refusals collapsed per station and reason (what log_rejection writes since; ``rejections`` keeps the
    # rows of older workers): a counter, the first example and the last one.
    """CREATE TABLE IF NOT EXISTS rejection_groups (
        id {serial},
        station_key TEXT NOT NULL,
        reason TEXT NOT NULL,
        count BIGINT NOT NULL,
        first_at {ts} NOT NULL,
        first_detail TEXT NOT NULL,
        first_sha256 {blob} NOT NULL,
        first_size INTEGER NOT NULL,
        last_at {ts} NOT NULL,
        topic TEXT NOT NULL,
        station TEXT,
        record_id TEXT,
        detail TEXT NOT NULL,
        payload_sha256 {blob} NOT NULL,
        payload_size INTEGER NOT NULL,
        UNIQUE (station_key, reason)
    )""",
    # No foreign key to devices: a status from a station the registry does not know (a certificate
    # the county CA issued, a device table restored from an old backup) is exactly what the fleet
    # view must be able to show.
    # Added after schema 1, like station_status: created on open, so an older database gains them.
    """CREATE TABLE IF NOT EXISTS audit (
        id {serial},
        at {ts} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        details TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS purged (
        record_id TEXT PRIMARY KEY,
        station TEXT NOT NULL,
        ori TEXT NOT NULL,
        booking_number TEXT NOT NULL,
        purged_at {ts} NOT NULL,
        reason TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS station_status (
        station TEXT PRIMARY KEY,
        county TEXT NOT NULL,
        state TEXT NOT NULL,
        reported_at {ts},
        received_at {ts} NOT NULL,
        body TEXT NOT NULL
    )""",
    # One increasing number per template, given in the transaction that stores it: the search index's
    # watermark (what it has taken in) and the integer id the search engines hold. Added after schema 1
    # shipped: created on open, and filled once for the templates an older gallery already holds.
    """CREATE TABLE IF NOT EXISTS template_seq (
        seq {serial},
        record_id TEXT NOT NULL,
        capture_index INTEGER NOT NULL,
        UNIQUE (record_id, capture_index),
        FOREIGN KEY (record_id, capture_index) REFERENCES templates (record_id, capture_index) ON DELETE CASCADE
    )""",
    *JOBS_SCHEMA,
]

_RECORD_COLUMNS = (
    "record_id, station, county, received_at, ori, booking_number, operator, captured_at, created_at, "
    "capture_count, content_sha256"
)


class GalleryStore(JobQueueMixin, ABC):
    """Storage behind the gallery receiver and the CLI. Thread-safe: one lock per store, since the
    MQTT network thread, the job worker and a CLI or health thread may share one. The work queue's
    methods come from :class:`~sync.county.gallery.jobs.JobQueueMixin`."""

    placeholder = "?"
    dialect: dict[str, str] = {}

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- dialect hooks
    @abstractmethod
    def _transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Any]:
        """Context manager yielding a cursor inside one committed-or-rolled-back transaction;
        ``write=False`` lets SQLite readers run beside a writer in another process."""

    @abstractmethod
    def _to_ts(self, value: datetime) -> Any: ...

    @abstractmethod
    def _from_ts(self, value: Any) -> datetime: ...

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _create_schema(self) -> None:
        with self._transaction() as cur:
            for statement in _SCHEMA:
                cur.execute(statement.format(**self.dialect))
            row = self._exec(cur, "SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._exec(cur, "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise GalleryStoreError(f"gallery database schema {row[0]} is not {SCHEMA_VERSION}; migrate it first")
            if self._exec(cur, "SELECT 1 FROM meta WHERE key = 'template_seq'").fetchone() is None:
                self._exec(cur, "INSERT INTO template_seq (record_id, capture_index) SELECT t.record_id, "
                                "t.capture_index FROM templates t JOIN records r ON r.record_id = t.record_id "
                                "ORDER BY r.received_at, t.record_id, t.capture_index")
                self._exec(cur, "INSERT INTO meta (key, value) VALUES ('template_seq', '1')")

    # -- devices
    def register_device(self, station: str, county: str, public_key: bytes, *, now: datetime | None = None) -> Device:
        """Register a station's signing key. A station is registered once; revoked stays revoked."""
        check_slug(station, "station")
        check_slug(county, "county")
        Ed25519PublicKey.from_public_bytes(public_key)  # raises ValueError on a bad key
        device = Device(station, county, bytes(public_key), "active", now or _utcnow())
        with self._lock, self._transaction() as cur:
            if self._exec(cur, "SELECT 1 FROM devices WHERE station = ?", (station,)).fetchone():
                raise DeviceExistsError(f"station {station!r} is already registered")
            self._exec(
                cur,
                "INSERT INTO devices (station, county, public_key, status, registered_at) VALUES (?, ?, ?, ?, ?)",
                (station, county, device.public_key, "active", self._to_ts(device.registered_at)),
            )
        return device

    def _device(self, row: Sequence[Any]) -> Device:
        return Device(
            station=row[0],
            county=row[1],
            public_key=bytes(row[2]),
            status=row[3],
            registered_at=self._from_ts(row[4]),
            revoked_at=None if row[5] is None else self._from_ts(row[5]),
        )

    def get_device(self, station: str) -> Device | None:
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(
                cur,
                "SELECT station, county, public_key, status, registered_at, revoked_at FROM devices WHERE station = ?",
                (station,),
            ).fetchone()
        return None if row is None else self._device(row)

    def list_devices(self) -> list[Device]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT station, county, public_key, status, registered_at, revoked_at FROM devices "
                "ORDER BY county, station",
            ).fetchall()
        return [self._device(r) for r in rows]

    def revoke_device(self, station: str, *, now: datetime | None = None) -> Device:
        """Mark a station revoked: its records are refused from now on, stored ones stay."""
        with self._lock, self._transaction() as cur:
            cur = self._exec(
                cur,
                "UPDATE devices SET status = 'revoked', revoked_at = ? WHERE station = ? AND status = 'active'",
                (self._to_ts(now or _utcnow()), station),
            )
            if (
                cur.rowcount != 1
                and not self._exec(cur, "SELECT 1 FROM devices WHERE station = ?", (station,)).fetchone()
            ):
                raise UnknownDeviceError(f"station {station!r} is not registered")
        device = self.get_device(station)
        assert device is not None
        return device

    # -- records
    def insert_record(
        self, verified: VerifiedRecord, payload: bytes, *, received_at: datetime | None = None,
        jobs: Sequence[str] = (),
    ) -> InsertResult:
        """Store a verified record and its templates in one transaction; see the module docstring.
        ``jobs`` are the work-queue kinds owed to the record, enqueued in the same transaction (also on a
        duplicate, where the queue's uniqueness makes it a no-op unless the kind is new)."""
        rec = verified.record
        check_record_fields(rec)
        received = received_at or _utcnow()
        with self._lock, self._transaction() as cur:
            result = self._insert_record(cur, verified, payload, received)
            if result is not None and jobs:
                self._enqueue(cur, rec.record_id, jobs, received)
        if result is not None:
            return result
        raise RecordConflictError(f"record {rec.record_id} is already stored with different content")

    def _insert_record(self, cur: Any, verified: VerifiedRecord, payload: bytes,
                       received: datetime) -> InsertResult | None:
        """Inside a transaction: ``stored``, ``duplicate``, or None for different content under a known id."""
        rec = verified.record
        if self._exec(cur, "SELECT 1 FROM purged WHERE record_id = ?", (rec.record_id,)).fetchone():
            raise RecordPurgedError(f"record {rec.record_id} was purged; it is not stored again")
        cur = self._exec(
            cur,
            f"INSERT INTO records ({_RECORD_COLUMNS}, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (record_id) DO NOTHING",
            (
                rec.record_id,
                rec.station,
                rec.county,
                self._to_ts(received),
                rec.booking.ori,
                rec.booking.booking_number,
                rec.booking.operator,
                self._to_ts(rec.booking.captured_at),
                self._to_ts(rec.created_at),
                len(rec.captures),
                verified.content_sha256,
                bytes(payload),
            ),
        )
        if cur.rowcount == 1:
            for index, capture in enumerate(rec.captures):
                if capture.template is None:
                    continue
                self._exec(
                    cur,
                    "INSERT INTO templates (record_id, capture_index, pose, model, dim, vector) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        rec.record_id,
                        index,
                        capture.pose,
                        capture.template.model,
                        capture.template.dim,
                        capture.template.values,
                    ),
                )
                self._exec(cur, "INSERT INTO template_seq (record_id, capture_index) VALUES (?, ?)",
                           (rec.record_id, index))
            return "stored"
        row = self._exec(cur, "SELECT content_sha256 FROM records WHERE record_id = ?", (rec.record_id,)).fetchone()
        if row is not None and bytes(row[0]) == verified.content_sha256:
            return "duplicate"
        return None

    def insert_records(self, batch: Sequence[PendingInsert]) -> list[InsertResult | GalleryStoreError]:
        """Group commit: several verified records in ONE transaction (one fsync instead of one each), with
        their jobs. Per record: ``stored``, ``duplicate``, or the error that refuses it alone
        (:class:`RecordFieldError`, :class:`RecordConflictError`); the others are stored anyway. A database
        failure raises and stores none of them, like :meth:`insert_record`."""
        results: list[InsertResult | GalleryStoreError | None] = []
        for item in batch:
            try:
                check_record_fields(item.verified.record)
                results.append(None)
            except RecordFieldError as exc:
                results.append(exc)
        with self._lock, self._transaction() as cur:
            for n, item in enumerate(batch):
                if results[n] is not None:
                    continue
                rec = item.verified.record
                try:
                    result = self._insert_record(cur, item.verified, item.payload, item.received_at)
                except RecordPurgedError as exc:  # refused alone; the others in the group are stored
                    results[n] = exc
                    continue
                if result is None:
                    results[n] = RecordConflictError(f"record {rec.record_id} is already stored with different content")
                    continue
                results[n] = result
                if item.jobs:
                    self._enqueue(cur, rec.record_id, item.jobs, item.received_at)
        return [r for r in results if r is not None]

    def _record(self, row: Sequence[Any]) -> GalleryRecord:
        return GalleryRecord(
            record_id=row[0],
            station=row[1],
            county=row[2],
            received_at=self._from_ts(row[3]),
            ori=row[4],
            booking_number=row[5],
            operator=row[6],
            captured_at=self._from_ts(row[7]),
            created_at=self._from_ts(row[8]),
            capture_count=int(row[9]),
            content_sha256=bytes(row[10]),
        )

    def get_record(self, record_id: str) -> GalleryRecord | None:
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(cur, f"SELECT {_RECORD_COLUMNS} FROM records WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else self._record(row)

    def get_payload(self, record_id: str) -> bytes | None:
        """The signed payload exactly as the station sent it."""
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(cur, "SELECT payload FROM records WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def list_records(self, *, limit: int = 100, station: str | None = None) -> list[GalleryRecord]:
        """Newest first."""
        where, params = ("WHERE station = ?", [station]) if station else ("", [])
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                f"SELECT {_RECORD_COLUMNS} FROM records {where} ORDER BY received_at DESC, record_id LIMIT ?",
                [*params, int(limit)],
            ).fetchall()
        return [self._record(r) for r in rows]

    def find_records(self, *, booking_number: str | None = None, ori: str | None = None,
                     station: str | None = None, operator: str | None = None, since: datetime | None = None,
                     until: datetime | None = None, limit: int = 100, offset: int = 0) -> list[GalleryRecord]:
        """Records matching every given filter (exact values; ``since``/``until`` bound the capture time,
        ``until`` exclusive), newest capture first: what the county console lists."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("booking_number", booking_number), ("ori", ori), ("station", station),
                              ("operator", operator)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("captured_at >= ?")
            params.append(self._to_ts(since))
        if until is not None:
            clauses.append("captured_at < ?")
            params.append(self._to_ts(until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                f"SELECT {_RECORD_COLUMNS} FROM records {where} ORDER BY captured_at DESC, record_id "
                "LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)],
            ).fetchall()
        return [self._record(r) for r in rows]

    def rejections_of(self, record_id: str) -> list[Rejection]:
        """The refused deliveries of one record id, oldest first (a record's delivery history): rows an older
        worker logged one by one, and each (station, reason) group whose latest example is this record (refusals
        are counted per group, so an earlier refusal of the record may since have been overwritten there)."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT -id, received_at, topic, station, record_id, reason, detail, payload_sha256, payload_size "
                "FROM rejections WHERE record_id = ? UNION ALL SELECT id, last_at, topic, station, record_id, reason, "
                "detail, payload_sha256, payload_size FROM rejection_groups WHERE record_id = ? ORDER BY 2, 1",
                (record_id, record_id),
            ).fetchall()
        return [Rejection(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], r[5], r[6], bytes(r[7]), int(r[8]))
                for r in rows]

    def audit_of(self, subject: str, *, limit: int = 100) -> list[AuditEntry]:
        """The audit entries about one subject (a record id), newest first."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT id, at, actor, action, subject, details FROM audit WHERE subject = ? ORDER BY id DESC LIMIT ?",
                (subject, int(limit)),
            ).fetchall()
        return [AuditEntry(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def count_records(self) -> int:
        with self._lock, self._transaction(write=False) as cur:
            return int(self._exec(cur, "SELECT COUNT(*) FROM records").fetchone()[0])

    def templates(self, record_id: str) -> list[StoredTemplate]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT record_id, capture_index, pose, model, dim, vector FROM templates WHERE record_id = ? "
                "ORDER BY capture_index",
                (record_id,),
            ).fetchall()
        return [StoredTemplate(r[0], int(r[1]), r[2], r[3], int(r[4]), bytes(r[5])) for r in rows]

    def find_booking(self, ori: str, booking_number: str) -> list[GalleryRecord]:
        """Every stored record of one booking (an agency's booking number is unique within its ORI)."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                f"SELECT {_RECORD_COLUMNS} FROM records WHERE ori = ? AND booking_number = ? ORDER BY record_id",
                (ori, booking_number),
            ).fetchall()
        return [self._record(r) for r in rows]

    def purge_records(
        self, records: Sequence[GalleryRecord], *, actor: str, reason: str, now: datetime | None = None
    ) -> list[str]:
        """Delete ``records`` (templates cascade), leave a tombstone each and one audit row, in one
        transaction; returns the ids that were still stored. ``secure_delete`` overwrites the pages."""
        at = self._to_ts(now or _utcnow())
        removed: list[str] = []
        with self._lock, self._transaction() as cur:
            for rec in records:
                cur = self._exec(cur, "DELETE FROM templates WHERE record_id = ?", (rec.record_id,))
                cur = self._exec(cur, "DELETE FROM records WHERE record_id = ?", (rec.record_id,))
                if cur.rowcount == 1:
                    removed.append(rec.record_id)
                self._exec(
                    cur,
                    "INSERT INTO purged (record_id, station, ori, booking_number, purged_at, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING",
                    (rec.record_id, rec.station, rec.ori, rec.booking_number, at, reason[:1000]),
                )
            subject = f"{records[0].ori}/{records[0].booking_number}" if records else ""
            self._add_audit(cur, at, actor, "purge", subject,
                            {"reason": reason[:1000], "record_ids": [r.record_id for r in records], "removed": removed})
        return removed

    def purged_booking(self, ori: str, booking_number: str) -> list[tuple[str, str]]:
        """``(record_id, station)`` of every purged record of one booking (a repeated purge re-sends its
        station commands)."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT record_id, station FROM purged WHERE ori = ? AND booking_number = ? ORDER BY record_id",
                (ori, booking_number),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def purged_count(self) -> int:
        """How many record ids were ever purged: a search index compares it to know when to reconcile."""
        with self._lock, self._transaction(write=False) as cur:
            return int(self._exec(cur, "SELECT COUNT(*) FROM purged").fetchone()[0])

    def is_purged(self, record_id: str) -> bool:
        with self._lock, self._transaction(write=False) as cur:
            return self._exec(cur, "SELECT 1 FROM purged WHERE record_id = ?", (record_id,)).fetchone() is not None

    # -- audit
    def _add_audit(self, cur: Any, at: Any, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
        self._exec(
            cur,
            "INSERT INTO audit (at, actor, action, subject, details) VALUES (?, ?, ?, ?, ?)",
            (at, actor[:200], action[:64], subject[:200], json.dumps(details, sort_keys=True, default=str)),
        )

    def audit(self, actor: str, action: str, subject: str, details: dict[str, Any] | None = None, *,
              now: datetime | None = None) -> None:
        """Append one county-side action to the audit log."""
        with self._lock, self._transaction() as cur:
            self._add_audit(cur, self._to_ts(now or _utcnow()), actor, action, subject, details or {})

    def list_audit(self, *, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first, optionally of one action."""
        where, params = ("WHERE action = ?", [action]) if action else ("", [])
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                f"SELECT id, at, actor, action, subject, details FROM audit {where} ORDER BY id DESC LIMIT ?",
                [*params, int(limit)],
            ).fetchall()
        return [AuditEntry(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    # -- the search index's feed (see sync.county.search.index)
    def _template_filter(self, pose: str, dim: int, model: str | None) -> tuple[str, list[Any]]:
        where, params = "t.pose = ? AND t.dim = ?", [pose, int(dim)]
        if model is not None:
            where, params = where + " AND t.model = ?", [*params, model]
        return where, params

    def templates_after(
        self, after: int, *, limit: int = 10_000, pose: str = "frontal", dim: int = 128, model: str | None = None
    ) -> list[SequencedTemplate]:
        """Templates of ``pose`` with a sequence number above ``after``, in sequence order."""
        where, params = self._template_filter(pose, dim, model)
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq, t.record_id, t.model, t.vector FROM template_seq s JOIN templates t ON "
                f"t.record_id = s.record_id AND t.capture_index = s.capture_index WHERE s.seq > ? AND {where} "
                "ORDER BY s.seq LIMIT ?",
                [int(after), *params, int(limit)],
            ).fetchall()
        return [SequencedTemplate(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]

    def template_seqs(self, *, pose: str = "frontal", dim: int = 128, model: str | None = None) -> list[int]:
        """Every sequence number of a stored template of ``pose``, ascending."""
        where, params = self._template_filter(pose, dim, model)
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq FROM template_seq s JOIN templates t ON t.record_id = s.record_id AND "
                f"t.capture_index = s.capture_index WHERE {where} ORDER BY s.seq",
                params,
            ).fetchall()
        return [int(r[0]) for r in rows]

    def templates_by_seq(self, seqs: Sequence[int]) -> list[SequencedTemplate]:
        """The stored templates behind ``seqs`` (unknown ones are left out)."""
        found: list[SequencedTemplate] = []
        for start in range(0, len(seqs), 500):
            chunk = [int(s) for s in seqs[start : start + 500]]
            with self._lock, self._transaction(write=False) as cur:
                rows = self._exec(
                    cur,
                    "SELECT s.seq, t.record_id, t.model, t.vector FROM template_seq s JOIN templates t ON "
                    "t.record_id = s.record_id AND t.capture_index = s.capture_index "
                    f"WHERE s.seq IN ({', '.join('?' * len(chunk))}) ORDER BY s.seq",
                    chunk,
                ).fetchall()
            found += [SequencedTemplate(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]
        return found

    def max_template_seq(self) -> int:
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(cur, "SELECT MAX(seq) FROM template_seq").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def record_template_seqs(self, record_id: str) -> list[int]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(cur, "SELECT seq FROM template_seq WHERE record_id = ? ORDER BY seq",
                              (record_id,)).fetchall()
        return [int(r[0]) for r in rows]

    def template_owners(self, seqs: Sequence[int]) -> dict[int, TemplateOwner]:
        """The records still stored behind ``seqs``: a purged record's templates are simply absent."""
        if not seqs:
            return {}
        chunk = [int(s) for s in seqs]
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq, r.record_id, t.pose, r.station, r.ori, r.booking_number, r.captured_at "
                "FROM template_seq s JOIN templates t ON t.record_id = s.record_id AND t.capture_index = "
                "s.capture_index JOIN records r ON r.record_id = s.record_id "
                f"WHERE s.seq IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        return {int(r[0]): TemplateOwner(int(r[0]), r[1], r[2], r[3], r[4], r[5], self._from_ts(r[6])) for r in rows}

    # -- rejections
    def log_rejection(
        self,
        *,
        topic: str,
        station: str | None,
        record_id: str | None,
        reason: str,
        detail: str,
        payload_sha256: bytes,
        payload_size: int,
        received_at: datetime | None = None,
    ) -> int:
        """Count one refusal in its (station, reason) group and keep it as the group's last example; the
        first example stays. Returns the group's count: one certificate sending junk in a loop costs one
        row, not one per payload. Payload bytes are never kept, only their hash and size."""
        at = self._to_ts(received_at or _utcnow())
        values = (station or "", reason[:64], at, detail[:1000], payload_sha256, payload_size, at, topic[:512],
                  station, record_id, detail[:1000], payload_sha256, payload_size)
        with self._lock, self._transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO rejection_groups (station_key, reason, count, first_at, first_detail, first_sha256, "
                "first_size, last_at, topic, station, record_id, detail, payload_sha256, payload_size) "
                "VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_key, reason) DO UPDATE SET "
                "count = rejection_groups.count + 1, last_at = excluded.last_at, topic = excluded.topic, "
                "station = excluded.station, record_id = excluded.record_id, detail = excluded.detail, "
                "payload_sha256 = excluded.payload_sha256, payload_size = excluded.payload_size",
                values,
            )
            row = self._exec(cur, "SELECT count FROM rejection_groups WHERE station_key = ? AND reason = ?",
                             (station or "", reason[:64])).fetchone()
        return int(row[0])

    def list_rejections(self, *, limit: int = 100) -> list[Rejection]:
        """Newest first: one entry per station and reason (plus single rows an older worker logged)."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT id, last_at, topic, station, record_id, reason, detail, payload_sha256, payload_size, "
                "count, first_at, first_detail, first_sha256, first_size FROM rejection_groups "
                "UNION ALL SELECT -id, received_at, topic, station, record_id, reason, detail, payload_sha256, "
                "payload_size, 1, received_at, detail, payload_sha256, payload_size FROM rejections "
                "ORDER BY 2 DESC, 1 DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [
            Rejection(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], r[5], r[6], bytes(r[7]), int(r[8]),
                      int(r[9]), self._from_ts(r[10]), r[11], bytes(r[12]), int(r[13]))
            for r in rows
        ]

    # -- station status (fleet health)
    def put_station_status(
        self,
        station: str,
        county: str,
        body: dict[str, Any],
        *,
        received_at: datetime | None = None,
    ) -> None:
        """Keep ``body`` as the latest status of ``station`` (replacing the previous one)."""
        check_slug(station, "station")
        check_slug(county, "county")
        state = str(body.get("state", ""))
        reported = parse_iso(body.get("at"))
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        with self._lock, self._transaction() as cur:
            self._exec(
                cur,
                "INSERT INTO station_status (station, county, state, reported_at, received_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (station) DO UPDATE SET county = excluded.county, "
                "state = excluded.state, reported_at = excluded.reported_at, received_at = excluded.received_at, "
                "body = excluded.body",
                (
                    station,
                    county,
                    state,
                    None if reported is None else self._to_ts(reported),
                    self._to_ts(received_at or _utcnow()),
                    text,
                ),
            )

    def get_station_status(self, station: str) -> StationStatus | None:
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(
                cur,
                "SELECT station, county, state, reported_at, received_at, body FROM station_status WHERE station = ?",
                (station,),
            ).fetchone()
        return None if row is None else self._station_status(row)

    def list_station_status(self) -> list[StationStatus]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT station, county, state, reported_at, received_at, body FROM station_status "
                "ORDER BY county, station",
            ).fetchall()
        return [self._station_status(r) for r in rows]

    def _station_status(self, row: Sequence[Any]) -> StationStatus:
        try:
            body = json.loads(row[5])
        except ValueError:
            body = {}
        return StationStatus(
            station=row[0],
            county=row[1],
            state=row[2],
            reported_at=None if row[3] is None else self._from_ts(row[3]),
            received_at=self._from_ts(row[4]),
            body=body if isinstance(body, dict) else {},
        )

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteStore(GalleryStore):
    """SQLite file store: WAL, ``synchronous=FULL``, foreign keys and ``secure_delete`` on."""

    dialect = {"blob": "BLOB", "ts": "TEXT", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """``create=False`` (commands that only read) opens an existing file or raises
        :class:`GalleryDatabaseMissingError`: no folder and no empty database is made."""
        super().__init__()
        self.path = Path(path)
        target, uri = str(self.path), False
        if target == ":memory:":
            pass
        elif create:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not self.path.exists():
                # The database holds criminal-justice information: owner-only from the start.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        else:
            if not self.path.is_file():
                raise GalleryDatabaseMissingError(f"the gallery database {self.path} does not exist")
            # mode=rw: SQLite itself refuses to create the file if it vanished since the check.
            target, uri = f"file:{quote(str(self.path.resolve()))}?mode=rw", True
        try:
            self._conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.OperationalError as exc:
            raise GalleryDatabaseMissingError(f"cannot open the gallery database {self.path}: {exc}") from None
        try:
            if not create and target != ":memory:":
                _require_gallery_schema(self._conn, self.path)
            for pragma in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA secure_delete = ON",
            ):
                self._conn.execute(pragma)
            self._create_schema()
        except NotAGalleryDatabaseError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise
            raise NotAGalleryDatabaseError(f"{self.path} is not a gallery database: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _to_ts(self, value: datetime) -> str:
        return value.astimezone(timezone.utc).isoformat()

    def _from_ts(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).astimezone(timezone.utc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _require_gallery_schema(conn: sqlite3.Connection, path: Path) -> None:
    """A command that only reads must not turn some other SQLite file into a gallery (by creating the tables
    in it): the file must already say it is one."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:  # no meta table: some other application's database
        row = None
    if row is None:
        raise NotAGalleryDatabaseError(f"{path} is not a gallery database: it has no gallery schema")


_SCHEMA_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresStore(GalleryStore):
    """PostgreSQL store (psycopg 3). ``schema`` isolates a gallery (and each test run)."""

    placeholder = "%s"
    dialect = {"blob": "BYTEA", "ts": "TIMESTAMPTZ", "serial": "BIGSERIAL PRIMARY KEY",
               "skip_locked": "FOR UPDATE SKIP LOCKED"}

    def __init__(self, conninfo: str, *, schema: str = "public") -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise GalleryStoreError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
        if not _SCHEMA_NAME_RE.fullmatch(schema):
            raise GalleryStoreError(f"schema name {schema!r} must match {_SCHEMA_NAME_RE.pattern}")
        self.schema = schema
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise GalleryStoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        from psycopg import sql

        self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self._create_schema()

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def _to_ts(self, value: datetime) -> datetime:
        return value.astimezone(timezone.utc)

    def _from_ts(self, value: Any) -> datetime:
        return value.astimezone(timezone.utc)

    def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests, decommissioning)."""
        from psycopg import sql

        with self._lock:
            self._conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_store(url: str | os.PathLike[str], *, create: bool = True) -> GalleryStore:
    """Open a store from ``--db``: a ``postgresql://`` (or ``postgres://``) URL, optionally with
    ``?schema=NAME``, or a SQLite path (also written ``sqlite:///abs/path``).

    ``create=False`` is for commands that only read: a SQLite database that does not exist is
    :class:`GalleryDatabaseMissingError` instead of a new empty one (PostgreSQL is unaffected)."""
    text = os.fspath(url)
    parts = urlsplit(text)
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query, keep_blank_values=True)
        schema = query.pop("schema", ["public"])[-1]
        conninfo = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return PostgresStore(conninfo, schema=schema)
    if parts.scheme == "sqlite":
        return SQLiteStore(parts.path, create=create)
    if parts.scheme and len(parts.scheme) > 1:
        raise GalleryStoreError(f"unsupported database URL scheme {parts.scheme!r}; use a path or postgresql://")
    return SQLiteStore(text, create=create)
