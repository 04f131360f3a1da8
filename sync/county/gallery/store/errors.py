"""The gallery store's errors: one module so a caller (receiver, CLI, console) can name every refusal the
store raises without importing the store itself or either database driver."""

from __future__ import annotations


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
