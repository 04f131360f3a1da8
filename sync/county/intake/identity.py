"""Who signs an imported record: the county itself, as the reserved station ``county-import``.

Every gallery record is a signed :class:`~sync.protocol.wire.WireRecord` whose ``station`` is its signer,
and the store verifies (and re-verifies on export) each record with its station's registered key. A
legacy mug shot has no station, so it is signed by the county's own Ed25519 command-signing key (from the
county CA directory) under the station id :data:`IMPORT_STATION`, which is registered in the device table
with that public key. So an imported record is told apart by its station alone, exports and verifies like
any other, and cannot be forged by a station (it would need the county key). A record and a command
signed by the same key cannot stand in for each other: their COSE content types differ.

The enrolment refuses to issue a token for :data:`IMPORT_STATION`, so no device can ever hold that name
on the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.county.gallery.devices import CommandError, load_command_key
from sync.county.gallery.store import Device, DeviceExistsError, GalleryStore
from sync.county.intake import IMPORT_STATION

__all__ = ["IMPORT_STATION", "ImportIdentityError", "ImportSigner", "ensure_registered", "load_signer"]


class ImportIdentityError(ValueError):
    """The county key cannot sign imports into this gallery; the message says why."""


@dataclass(frozen=True)
class ImportSigner:
    """The county and the key that sign imported records."""

    county: str
    key: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_signer(ca_dir: str | PathLike[str]) -> ImportSigner:
    """The county key of the CA in ``ca_dir``."""
    try:
        ca, key = load_command_key(ca_dir)
    except CommandError as exc:
        raise ImportIdentityError(str(exc)) from None
    return ImportSigner(ca.county, key)


def ensure_registered(store: GalleryStore, signer: ImportSigner) -> Device:
    """Register :data:`IMPORT_STATION` with the county key on first use; refuse a registration that
    holds another key or county (a rotated county key needs the old records re-signed first)."""
    device = store.get_device(IMPORT_STATION)
    if device is None:
        try:
            return store.register_device(IMPORT_STATION, signer.county, signer.public_raw)
        except DeviceExistsError:  # another importer registered it meanwhile
            device = store.get_device(IMPORT_STATION)
    assert device is not None
    if device.public_key != signer.public_raw or device.county != signer.county:
        raise ImportIdentityError(
            f"{IMPORT_STATION!r} is registered in this gallery with another key or county ({device.county}); "
            "imports must be signed by the same county key"
        )
    if not device.active:
        raise ImportIdentityError(f"{IMPORT_STATION!r} is revoked in this gallery; imports are refused")
    return device


def verify_key_lookup(device: Device) -> Any:
    """A ``verify_key_lookup`` for :func:`sync.protocol.wire.verify_record` that knows only the import key."""
    return lambda kid: device.verify_key() if kid == IMPORT_STATION else None
