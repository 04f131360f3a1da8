"""Gallery storage: registered devices, verified records, their templates and a rejection log.

One small interface (:class:`GalleryStore`), two implementations: SQLite for a single county
server and the tests, PostgreSQL where a county already runs it or runs several gallery workers.
Both share the table groups' SQL (written with ``?`` placeholders; PostgreSQL gets ``%s``).

Rules the implementations keep:

* ``insert_record`` is one transaction (record, templates) and idempotent on ``record_id``: the
  first insert returns ``"stored"``, a repeat with the same signed content returns
  ``"duplicate"`` and a different content under a known id raises :class:`RecordConflictError`
  (the receiver acks that ``rejected``/``replay``). The gallery acks only after this commit.
* ``insert_record`` checks every stored column against its rule in :mod:`sync.protocol.record` (the wire
  decoder has already; this keeps a record built by other means out) and raises :class:`RecordFieldError`.
* The whole signed payload is kept, so the gallery can always show the station's signature.
* SQLite runs with WAL and ``synchronous=FULL`` (a committed record survives power loss before the
  ack goes out) and ``secure_delete`` (purged images are overwritten, CJIS media rules).
* Rejections keep the payload's hash and size, never its bytes: a rejected payload may still be
  criminal-justice information and has no business sitting in a log table.
* ``purge_records`` removes records and their templates in one transaction with a tombstone per record id
  (``purged``: the id, booking and reason, never the images) and an ``audit`` row; ``insert_record``
  refuses a purged id with :class:`RecordPurgedError`, so a station that still holds a sealed booking in
  its outbox cannot bring it back. ``audit`` is a plain append-only log of county-side actions (who,
  what, on which subject, JSON details); it has no chain of its own yet.
* ``station_status`` keeps only the *latest* status body per station (fleet health, from the
  retained ``status`` topic); it is an operational view, not an audit trail. The table was added
  after schema 1 shipped and is created with ``IF NOT EXISTS`` on open, so an existing gallery
  database gains it without a migration step and older workers simply ignore it.
* ``jobs`` is the durable work queue (:mod:`sync.county.gallery.jobs`): what the gallery still owes a
  record after its ack (exports, indexing) is enqueued inside the record's own transaction, so an ack
  never goes out for a record whose follow-up work could be forgotten. Created on open like
  ``station_status``. ``insert_records`` commits a group of records in one transaction (group commit).

The package keeps one concept per module; this ``__init__`` only re-exports every name callers import from
``sync.county.gallery.store`` and opens a store from a ``--db`` value:

* :mod:`~sync.county.gallery.store.errors`, :mod:`~sync.county.gallery.store.models` (the dataclasses and
  ``check_record_fields``), :mod:`~sync.county.gallery.store.clock` and
  :mod:`~sync.county.gallery.store.schema` (the DDL of both dialects);
* :mod:`~sync.county.gallery.store.core` (lock, dialect hooks, schema creation) and one mixin per table
  group: :mod:`~sync.county.gallery.store.records`, :mod:`~sync.county.gallery.store.templates`,
  :mod:`~sync.county.gallery.store.devices`, :mod:`~sync.county.gallery.store.rejections`,
  :mod:`~sync.county.gallery.store.audit`, :mod:`~sync.county.gallery.store.status` (and the job queue's in
  :mod:`sync.county.gallery.jobs`), assembled in :mod:`~sync.county.gallery.store.base` as
  :class:`GalleryStore`;
* the dialects :mod:`~sync.county.gallery.store.sqlite` and :mod:`~sync.county.gallery.store.postgres`.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from sync.county.gallery.store.base import GalleryStore
from sync.county.gallery.store.clock import parse_iso
from sync.county.gallery.store.errors import (
    DeviceExistsError,
    GalleryDatabaseMissingError,
    GalleryStoreError,
    NotAGalleryDatabaseError,
    RecordConflictError,
    RecordFieldError,
    RecordPurgedError,
    UnknownDeviceError,
)
from sync.county.gallery.store.models import (
    AuditEntry,
    Device,
    DeviceStatus,
    GalleryRecord,
    InsertResult,
    PendingInsert,
    Rejection,
    SequencedTemplate,
    StationStatus,
    StoredTemplate,
    TemplateOwner,
    check_record_fields,
)
from sync.county.gallery.store.postgres import PostgresStore
from sync.county.gallery.store.schema import SCHEMA_VERSION
from sync.county.gallery.store.sqlite import DEFAULT_DB, SQLiteStore

__all__ = [
    "DEFAULT_DB",
    "SCHEMA_VERSION",
    "AuditEntry",
    "Device",
    "DeviceExistsError",
    "DeviceStatus",
    "GalleryDatabaseMissingError",
    "GalleryRecord",
    "GalleryStore",
    "GalleryStoreError",
    "InsertResult",
    "NotAGalleryDatabaseError",
    "PendingInsert",
    "PostgresStore",
    "RecordConflictError",
    "RecordFieldError",
    "RecordPurgedError",
    "Rejection",
    "SQLiteStore",
    "SequencedTemplate",
    "StationStatus",
    "StoredTemplate",
    "TemplateOwner",
    "UnknownDeviceError",
    "check_record_fields",
    "open_store",
    "parse_iso",
]


def open_store(url: str | os.PathLike[str], *, create: bool = True) -> GalleryStore:
    """Open a store from ``--db``: a ``postgresql://`` (or ``postgres://``) URL, optionally with
    ``?schema=NAME``, or a SQLite path (also written ``sqlite:///abs/path``).

    ``create=False`` is for commands that only read: a SQLite database that does not exist is
    :class:`GalleryDatabaseMissingError` instead of a new empty one (PostgreSQL is unaffected)."""
    text = os.fspath(url)
    parts = urlsplit(text)
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query, keep_blank_values=True)
        schema = query.pop("schema", ["public"])[-1]
        conninfo = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return PostgresStore(conninfo, schema=schema)
    if parts.scheme == "sqlite":
        return SQLiteStore(parts.path, create=create)
    if parts.scheme and len(parts.scheme) > 1:
        raise GalleryStoreError(f"unsupported database URL scheme {parts.scheme!r}; use a path or postgresql://")
    return SQLiteStore(text, create=create)
