"""The database schema, as an ordered set of sqlite-utils migrations.

Devices in the field are updated, not reinstalled, so every schema change is a new migration appended
here and applied on open; a migration never changes once released. `apply` runs them while holding the
write lock, so two processes starting together (UI and sync agent) cannot both apply the same one.

The tables carry their rules as constraints where SQLite can check them (allowed poses and states, an
image is NULL exactly when it was purged, a delivered record has a delivery time) and triggers guard
the two invariants that matter most if some future code path has a bug: outbox states only move
forward from ``pending``, and audit entries are never edited, only removed below a retention
checkpoint. Triggers do not stop someone with write access to the file (the hash chain and the
county's copy of the audit log are what detect that); they stop our own mistakes.

Large blobs are the last columns of ``captures`` so reading the metadata of a row never walks the
blob's overflow pages.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

from appliance.store.transactions import write_transaction

MIGRATION_SET = "booking-station-store"

migrations = Migrations(MIGRATION_SET)


def _run(db: Database, statements: list[str]) -> None:
    # Statement by statement: executescript() would COMMIT the surrounding transaction first.
    for sql in statements:
        db.execute(sql)


@migrations()
def m0001_initial(db: Database) -> None:
    """Bookings, captures, outbox, audit (with its retention checkpoint), alarms and meta."""
    _run(db, [
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """CREATE TABLE bookings (
            record_id TEXT PRIMARY KEY NOT NULL,
            agency_ori TEXT NOT NULL,
            booking_number TEXT NOT NULL,
            operator_id TEXT NOT NULL,
            captured_at TEXT NOT NULL,
            station_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX bookings_by_number ON bookings (booking_number, agency_ori)",
        """CREATE TABLE captures (
            record_id TEXT NOT NULL REFERENCES bookings (record_id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            pose TEXT NOT NULL CHECK (pose IN ('frontal', 'left_profile', 'right_profile', 'smt')),
            smt_description TEXT,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            image_bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            quality TEXT NOT NULL,
            template_model TEXT,
            template_dim INTEGER,
            override_reason TEXT,
            operator_id TEXT NOT NULL,
            purged_at TEXT,
            template BLOB,
            image BLOB,
            PRIMARY KEY (record_id, seq),
            CHECK ((image IS NULL) = (purged_at IS NOT NULL))
        )""",
        """CREATE TABLE outbox (
            record_id TEXT PRIMARY KEY NOT NULL REFERENCES bookings (record_id) ON DELETE CASCADE,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'rejected')),
            attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            delivered_at TEXT,
            ack_status TEXT CHECK (ack_status IS NULL OR ack_status IN ('stored', 'duplicate', 'rejected')),
            reject_reason TEXT,
            rejected_at TEXT,
            CHECK ((state = 'delivered') = (delivered_at IS NOT NULL)),
            CHECK ((state = 'rejected') = (reject_reason IS NOT NULL))
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
        """CREATE TRIGGER outbox_state_forward_only BEFORE UPDATE OF state ON outbox
           WHEN OLD.state <> 'pending' AND NEW.state <> OLD.state
           BEGIN SELECT RAISE(ABORT, 'outbox: a delivered or rejected record cannot change state'); END""",
        """CREATE TABLE audit (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            details TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""",
        """CREATE TABLE audit_checkpoint (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            hash TEXT NOT NULL,
            removed_total INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be changed'); END""",
        """CREATE TRIGGER audit_delete_below_checkpoint BEFORE DELETE ON audit
           WHEN OLD.seq > COALESCE((SELECT seq FROM audit_checkpoint WHERE id = 1), 0)
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only: only retention removes entries'); END""",
        """CREATE TRIGGER audit_checkpoint_forward_only BEFORE UPDATE ON audit_checkpoint
           WHEN NEW.seq < OLD.seq
           BEGIN SELECT RAISE(ABORT, 'audit checkpoint only moves forward'); END""",
        """CREATE TABLE alarms (
            name TEXT PRIMARY KEY NOT NULL,
            message TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            cleared_at TEXT
        )""",
    ])


def apply(conn: sqlite3.Connection) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now (usually none).

    Runs inside one ``BEGIN IMMEDIATE`` transaction: sqlite-utils nests each migration in a savepoint,
    and the whole upgrade is committed at once or not at all.
    """
    db = Database(conn, execute_plugins=False, recursive_triggers=False)
    with write_transaction(conn):
        pending = [m.name for m in migrations.pending(db)]
        if pending:
            migrations.apply(db)
    return pending
