"""The local store: every booking record kept safe in SQLite until the county gallery confirms it.

Modules, one concept each:

* `records`   - the `Booking` and `Capture` dataclasses, their validation, UUIDv7 record ids
* `crypto`    - AES-256-GCM for images and templates, the key file, crypto-erase
* `db`        - `Store`: the SQLite file, atomic saves, reads, purges
* `outbox`    - delivery state per record and retry backoff, for the sync agent
* `audit`     - the append-only, hash-chained audit log and its retention
* `alarms`    - conditions a person must see (disk low, queue full)
* `space`     - free-disk floor and disk-full detection
* `schema`    - the tables, as sqlite-utils migrations
* `transactions`, `clock`, `errors` - the small shared pieces
* `commands`  - `booking-station queue | audit verify | purge`
"""

from appliance.store.db import DEFAULT_FLOOR_BYTES, PurgeResult, StationRecord, Store, data_paths
from appliance.store.errors import (
    AmbiguousBookingError,
    AuditChainError,
    CorruptDatabaseError,
    DecryptError,
    DiskFullError,
    DuplicateRecordError,
    OutboxStateError,
    QueueFullError,
    RecordIntegrityError,
    RecordPurgedError,
    StationStoreError,
    StoreKeyFileError,
    UnknownStationRecordError,
    ValidationError,
    WrongKeyError,
)
from appliance.store.outbox import OutboxEntry
from appliance.store.records import Booking, Capture, new_record_id

__all__ = [
    "DEFAULT_FLOOR_BYTES", "AmbiguousBookingError", "AuditChainError", "Booking", "Capture",
    "CorruptDatabaseError", "DecryptError", "DiskFullError", "DuplicateRecordError", "StoreKeyFileError",
    "OutboxEntry", "OutboxStateError", "PurgeResult", "QueueFullError", "RecordIntegrityError",
    "RecordPurgedError", "Store", "StationStoreError", "StationRecord", "UnknownStationRecordError", "ValidationError",
    "WrongKeyError", "data_paths", "new_record_id",
]
