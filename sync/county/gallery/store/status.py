"""Station status: the latest health body of each station (the fleet view), not a history.

Its own group because it is operational state, replaced on every retained ``status`` message, unlike the
records and logs the other groups keep.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sync.county.gallery.store.clock import _utcnow, parse_iso
from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.models import StationStatus
from sync.protocol.topics import check_slug


class StationStatusMixin(StoreCore):
    """The ``station_status`` table, mixed into ``GalleryStore``."""

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
