"""Stored records: the idempotent insert (one record or a group commit), the queries, and the purge that
replaces records by tombstones.

Insert and purge live together because each guards the other: ``insert_record`` refuses an id the purge
left a tombstone for, and the purge removes exactly what the insert stored (records, templates and their
sequence numbers, in one transaction each). The rules ``insert_record`` keeps (its "module docstring")
are listed in the package's docstring, :mod:`sync.county.gallery.store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sync.county.gallery.store.clock import _utcnow
from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.errors import (
    GalleryStoreError,
    RecordConflictError,
    RecordFieldError,
    RecordPurgedError,
)
from sync.county.gallery.store.models import GalleryRecord, InsertResult, PendingInsert, check_record_fields
from sync.protocol.wire import VerifiedRecord

_RECORD_COLUMNS = (
    "record_id, station, county, received_at, ori, booking_number, operator, captured_at, created_at, "
    "capture_count, content_sha256"
)


class RecordsMixin(StoreCore):
    """Records (tables ``records``, ``templates``, ``template_seq`` on insert, ``purged``), mixed into
    ``GalleryStore``."""

    if TYPE_CHECKING:  # provided by GalleryStore's other mixins (the job queue, the audit log)
        def _enqueue(self, cur: Any, record_id: str, kinds: Sequence[str], now: datetime) -> None: ...
        def _add_audit(self, cur: Any, at: Any, actor: str, action: str, subject: str,
                       details: dict[str, Any]) -> None: ...

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
        if row is not None and verified.same_content(bytes(row[0])):
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

    def count_records(self) -> int:
        with self._lock, self._transaction(write=False) as cur:
            return int(self._exec(cur, "SELECT COUNT(*) FROM records").fetchone()[0])

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
