"""The rejection log: refused payloads counted per (station, reason), with their hash and size, never bytes.

A group of its own because it is written on the receiver's refusal path, where nothing is stored, and
read by the CLI and the console's delivery history.
"""

from __future__ import annotations

from datetime import datetime

from sync.county.gallery.store.clock import _utcnow
from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.models import Rejection


class RejectionsMixin(StoreCore):
    """Refusals (tables ``rejection_groups`` and older workers' ``rejections``), mixed into ``GalleryStore``."""

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
