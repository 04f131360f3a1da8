"""The device registry: which stations may deliver records, and the Ed25519 key each must sign with.

A table group of its own because registration and revocation are county IT's actions (the ``devices``
CLI), while the receiver only reads it to verify signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.county.gallery.store.clock import _utcnow
from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.errors import DeviceExistsError, UnknownDeviceError
from sync.county.gallery.store.models import Device
from sync.protocol.topics import check_slug


class DevicesMixin(StoreCore):
    """Registered stations (table ``devices``), mixed into ``GalleryStore``."""

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
