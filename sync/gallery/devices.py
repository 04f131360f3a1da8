"""The device registry: which stations may deliver records, and with which signing key.

County IT registers a station when it provisions it (the station's Ed25519 public key, as the PEM
file the provisioning step writes) and revokes it when the device is lost, stolen or retired.
Revocation here stops the gallery accepting its records; revoking its TLS certificate (the
broker's ``crlfile``) stops it connecting at all. Do both.
"""

from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.gallery.store import Device, DeviceExistsError, GalleryStore, StoreError


class KeyFileError(ValueError):
    """A public-key file that is not an Ed25519 public key."""


def load_public_key(data: bytes) -> bytes:
    """Raw 32-byte Ed25519 public key from PEM (``BEGIN PUBLIC KEY``), DER or the raw 32 bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif len(data) == 32:
            key = Ed25519PublicKey.from_public_bytes(data)
        else:
            key = serialization.load_der_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"not a public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"a station signs with Ed25519; this is a {type(key).__name__}")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(raw: bytes) -> bytes:
    """PEM text of a raw Ed25519 public key (what provisioning writes and ``register`` reads)."""
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(raw: bytes) -> str:
    """Short SHA-256 fingerprint to compare a key read out on the device with the registry."""
    digest = hashlib.sha256(raw).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def register(store: GalleryStore, station: str, county: str, key_file: str | PathLike[str]) -> Device:
    """Register ``station`` with the Ed25519 public key in ``key_file``."""
    raw = load_public_key(Path(key_file).read_bytes())
    return store.register_device(station, county, raw)


def list_devices(store: GalleryStore) -> list[Device]:
    return store.list_devices()


def revoke(store: GalleryStore, station: str) -> Device:
    return store.revoke_device(station)


class StoreDeviceRegistry:
    """The enrolment server's ``DeviceRegistry`` (``sync.enroll.registry``) backed by the gallery
    store, so a station's key lands directly in the table the receiver verifies against.

    Same rules as the enrolment side expects: the same station with the same key again is a
    no-op (a retried enrolment); a different key, another county or a revoked station is a
    ``RegistryConflict`` (replacing an identity must be a deliberate act by county IT).
    """

    def __init__(self, store: GalleryStore) -> None:
        self.store = store

    def register_device(self, county: str, station: str, public_key_pem: str) -> None:
        # Imported here so the gallery works without the enrolment package installed.
        from sync.enroll.registry import RegistryConflict, RegistryError

        try:
            raw = load_public_key(public_key_pem.strip().encode())
        except KeyFileError as exc:
            raise RegistryError(f"station {station!r}: {exc}") from None
        for _ in range(2):  # a concurrent registration of the same station is re-checked once
            existing = self.store.get_device(station)
            if existing is not None:
                if existing.public_key == raw and existing.county == county and existing.active:
                    return
                state = "revoked" if not existing.active else f"registered to {existing.county} with another key"
                raise RegistryConflict(
                    f"station {station!r} is {state}; revoke or re-provision it deliberately, or enrol under a "
                    "new station id"
                )
            try:
                self.store.register_device(station, county, raw)
                return
            except DeviceExistsError:
                continue
            except (StoreError, ValueError) as exc:
                raise RegistryError(f"station {station!r}: {exc}") from None
        raise RegistryError(f"station {station!r}: registration raced and did not settle")
