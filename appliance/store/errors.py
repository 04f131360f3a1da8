"""Every error the store raises on purpose, under one base class.

Callers (the officer UI, the sync agent, the command line) catch `StationStoreError` to show its message and
keep running; each subclass exists because some caller reacts to it differently (the UI refuses new
bookings on `DiskFullError` and `QueueFullError`, the sync agent skips a record on
`UnknownStationRecordError`, the command line exits with a setup error on `StoreKeyFileError` or
`CorruptDatabaseError`). Messages are written for the person who has to act on them.
"""

from __future__ import annotations


class StationStoreError(Exception):
    """Base class of the store's errors; the message is meant to be shown as it is."""


class ValidationError(StationStoreError, ValueError):
    """A booking or capture field is unusable; the message names the field and what is wrong with it."""


class StoreKeyFileError(StationStoreError):
    """The key file is missing, unreadable, too widely readable or damaged; the message says which."""


class DecryptError(StationStoreError):
    """Encrypted data did not authenticate: wrong key, or the stored bytes were changed or damaged."""


class WrongKeyError(DecryptError):
    """The key file is a valid key, but not the one this database was encrypted with."""


class RecordIntegrityError(StationStoreError):
    """A decrypted image does not match the sha256 recorded for it."""


class CorruptDatabaseError(StationStoreError):
    """The database file is not a SQLite database or is damaged."""


class DiskFullError(StationStoreError):
    """Too little free disk to store a new booking safely; nothing stored was deleted to make room.

    ``free_bytes`` and ``floor_bytes`` are given when they are known (a pre-check), ``None`` when SQLite
    or the OS reported the disk full in the middle of a write.
    """

    def __init__(self, message: str, *, path: str, free_bytes: int | None = None,
                 floor_bytes: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.free_bytes = free_bytes
        self.floor_bytes = floor_bytes


class QueueFullError(StationStoreError):
    """The outbox holds as many undelivered records as it is allowed to; new bookings wait."""


class DuplicateRecordError(StationStoreError):
    """A record with this id is already stored (record ids are the idempotency key)."""


class UnknownStationRecordError(StationStoreError, LookupError):
    """No record with this id is stored (never saved, or purged)."""


class AmbiguousBookingError(StationStoreError):
    """A booking number matches records of more than one agency; the ORI must be given."""


class OutboxStateError(StationStoreError):
    """The requested outbox transition is not allowed from the record's current state."""


class RecordPurgedError(StationStoreError):
    """The record's images were purged after delivery; only its metadata is left."""


class AuditChainError(StationStoreError):
    """The audit chain is broken, so an operation that would hide the break was refused."""
