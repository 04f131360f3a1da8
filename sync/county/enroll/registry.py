"""Where the enrolment server records each station's record-signing key.

The gallery verifies every record against the Ed25519 key its station enrolled with, so the key must
land in the gallery's device table. That table belongs to the gallery (``sync.county.gallery``); the
enrolment server only needs the one call below, so it depends on this small interface and the county
wires in the gallery's implementation. :class:`JsonDeviceRegistry` is the default: a JSON file in the
CA directory, enough for a county that runs the enrolment server on its own and for the tests.

Rules every implementation keeps:

* Registering the same station with the same key again is a no-op (a device retrying after a lost
  answer, or re-enrolling its existing keys for a new certificate).
* Registering a station that is already registered with a *different* key raises
  :class:`RegistryConflict`: replacing a station's identity must be a deliberate act in the registry
  (revoke, then enrol under a new station id), never a side effect of someone holding a token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from sync.protocol.enroll import load_ed25519_public_key
from sync.protocol.enroll import public_key_pem as canonical_pem
from sync.protocol.files import write_file_atomic

REGISTRY_FILE = "devices.json"


class RegistryError(Exception):
    """The registry could not record the device; the enrolment fails and the token stays usable."""


class RegistryConflict(RegistryError):
    """The station is already registered with another signing key."""


@runtime_checkable
class DeviceRegistry(Protocol):
    """What the enrolment server needs from a device registry."""

    def register_device(self, county: str, station: str, public_key_pem: str) -> None:
        """Record ``station``'s Ed25519 public key (PEM). Idempotent for the same key; raises
        :class:`RegistryConflict` for a different key and :class:`RegistryError` for other failures."""
        ...

    def get_public_key(self, county: str, station: str) -> str | None:
        """The Ed25519 public key (PEM) ``station`` of ``county`` is registered with, or None when it is
        unknown, of another county or revoked (used to check a certificate rotation's proof)."""
        ...


class JsonDeviceRegistry:
    """The default registry: ``devices.json`` (0600) in the CA directory.

    ``{"stations": {"desk-1": {"county": ..., "public_key": PEM, "registered_at": ISO}}}``. Writes are
    atomic (temp file and rename) and serialized by a lock file, so the HTTP server's threads and an
    administrator's command never interleave.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def in_ca_dir(cls, directory: Path | str) -> JsonDeviceRegistry:
        return cls(Path(directory) / REGISTRY_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"stations": {}}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"device registry {self.path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("stations"), dict):
            raise RegistryError(f"device registry {self.path} is not a registry file")
        return data

    def register_device(self, county: str, station: str, public_key_pem: str) -> None:
        try:
            key = load_ed25519_public_key(public_key_pem)
        except ValueError as exc:
            raise RegistryError(f"station {station!r}: {exc}") from exc
        canonical = canonical_pem(key)
        with self._locked():
            data = self._read()
            current = data["stations"].get(station)
            if current is not None:
                if current.get("public_key") == canonical and current.get("county") == county:
                    return
                raise RegistryConflict(
                    f"station {station!r} is already registered with another signing key (since "
                    f"{current.get('registered_at', '?')}); revoke it in the device registry, or enrol the new "
                    "device under a new station id"
                )
            data["stations"][station] = {
                "county": county,
                "public_key": canonical,
                "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            write_file_atomic(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o600)

    def get_public_key(self, county: str, station: str) -> str | None:
        entry = self._read()["stations"].get(station)
        if not isinstance(entry, dict) or entry.get("county") != county or entry.get("revoked_at"):
            return None
        key = entry.get("public_key")
        return key if isinstance(key, str) else None

    def get(self, station: str) -> dict | None:
        """The registry entry of ``station`` (county, public_key PEM, registered_at), or None."""
        return self._read()["stations"].get(station)

    def stations(self) -> dict[str, dict]:
        return dict(self._read()["stations"])
