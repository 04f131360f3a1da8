"""The gallery database's tables, written once for both dialects.

Each statement has ``{blob}``, ``{ts}`` and ``{serial}`` slots that ``SQLiteStore.dialect`` and
``PostgresStore.dialect`` fill, so the two stores cannot drift apart; :meth:`StoreCore._create_schema
<sync.county.gallery.store.core.StoreCore._create_schema>` runs them on every open (``IF NOT EXISTS``).
The ``jobs`` table's DDL stays with its queue in :mod:`sync.county.gallery.jobs`.
"""

from __future__ import annotations

from sync.county.gallery.jobs import JOBS_SCHEMA

SCHEMA_VERSION = 1


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devices (
        station TEXT PRIMARY KEY,
        county TEXT NOT NULL,
        public_key {blob} NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
        registered_at {ts} NOT NULL,
        revoked_at {ts}
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        record_id TEXT PRIMARY KEY,
        station TEXT NOT NULL REFERENCES devices (station),
        county TEXT NOT NULL,
        received_at {ts} NOT NULL,
        ori TEXT NOT NULL,
        booking_number TEXT NOT NULL,
        operator TEXT NOT NULL,
        captured_at {ts} NOT NULL,
        created_at {ts} NOT NULL,
        capture_count INTEGER NOT NULL,
        content_sha256 {blob} NOT NULL,
        payload {blob} NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS records_station ON records (station, received_at)""",
    """CREATE INDEX IF NOT EXISTS records_booking ON records (ori, booking_number)""",
    """CREATE TABLE IF NOT EXISTS templates (
        record_id TEXT NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
        capture_index INTEGER NOT NULL,
        pose TEXT NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector {blob} NOT NULL,
        PRIMARY KEY (record_id, capture_index)
    )""",
    """CREATE INDEX IF NOT EXISTS templates_model ON templates (model)""",
    """CREATE TABLE IF NOT EXISTS rejections (
        id {serial},
        received_at {ts} NOT NULL,
        topic TEXT NOT NULL,
        station TEXT,
        record_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload_sha256 {blob} NOT NULL,
        payload_size INTEGER NOT NULL
    )""",
    # Refusals collapsed per station and reason (what log_rejection writes since; ``rejections`` keeps the
    # rows of older workers): a counter, the first example and the last one.
    """CREATE TABLE IF NOT EXISTS rejection_groups (
        id {serial},
        station_key TEXT NOT NULL,
        reason TEXT NOT NULL,
        count BIGINT NOT NULL,
        first_at {ts} NOT NULL,
        first_detail TEXT NOT NULL,
        first_sha256 {blob} NOT NULL,
        first_size INTEGER NOT NULL,
        last_at {ts} NOT NULL,
        topic TEXT NOT NULL,
        station TEXT,
        record_id TEXT,
        detail TEXT NOT NULL,
        payload_sha256 {blob} NOT NULL,
        payload_size INTEGER NOT NULL,
        UNIQUE (station_key, reason)
    )""",
    # No foreign key to devices: a status from a station the registry does not know (a certificate
    # the county CA issued, a device table restored from an old backup) is exactly what the fleet
    # view must be able to show.
    # Added after schema 1, like station_status: created on open, so an older database gains them.
    """CREATE TABLE IF NOT EXISTS audit (
        id {serial},
        at {ts} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        details TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS purged (
        record_id TEXT PRIMARY KEY,
        station TEXT NOT NULL,
        ori TEXT NOT NULL,
        booking_number TEXT NOT NULL,
        purged_at {ts} NOT NULL,
        reason TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS station_status (
        station TEXT PRIMARY KEY,
        county TEXT NOT NULL,
        state TEXT NOT NULL,
        reported_at {ts},
        received_at {ts} NOT NULL,
        body TEXT NOT NULL
    )""",
    # One increasing number per template, given in the transaction that stores it: the search index's
    # watermark (what it has taken in) and the integer id the search engines hold. Added after schema 1
    # shipped: created on open, and filled once for the templates an older gallery already holds.
    """CREATE TABLE IF NOT EXISTS template_seq (
        seq {serial},
        record_id TEXT NOT NULL,
        capture_index INTEGER NOT NULL,
        UNIQUE (record_id, capture_index),
        FOREIGN KEY (record_id, capture_index) REFERENCES templates (record_id, capture_index) ON DELETE CASCADE
    )""",
    *JOBS_SCHEMA,
]
