"""Alarms: named conditions a person must see (disk low, queue full), kept in the database.

An alarm is raised by whoever notices the condition (the scheduler's disk watch, a refused save) and
cleared when the condition is gone. Keeping them in the station database means the officer UI, the
health heartbeat to the county and the command line all see the same set, across restarts, without
any of them having to have been running when the condition started.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from appliance.store.clock import to_text, utc_now
from appliance.store.transactions import write_transaction

DISK_LOW = "disk_low"
"""Free disk below the floor: new bookings are refused until space is freed."""

QUEUE_FULL = "queue_full"
"""Undelivered records at the configured limit: new bookings are refused until the queue drains."""


@dataclass(frozen=True)
class Alarm:
    """One alarm; ``cleared_at`` is None while it is active."""

    name: str
    message: str
    raised_at: str
    updated_at: str
    cleared_at: str | None


def raise_alarm(conn: sqlite3.Connection, name: str, message: str, *, now: datetime | None = None) -> bool:
    """Raise (or refresh the message of) alarm ``name``; True if it was not already active.

    The return value lets the caller log a condition once when it starts rather than on every check.
    """
    at = to_text(now or utc_now())
    with write_transaction(conn):
        row = conn.execute("SELECT cleared_at FROM alarms WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] is None:
            conn.execute("UPDATE alarms SET message = ?, updated_at = ? WHERE name = ?", (message, at, name))
            return False
        conn.execute(
            "INSERT INTO alarms (name, message, raised_at, updated_at, cleared_at) VALUES (?, ?, ?, ?, NULL) "
            "ON CONFLICT (name) DO UPDATE SET message = excluded.message, raised_at = excluded.raised_at, "
            "updated_at = excluded.updated_at, cleared_at = NULL",
            (name, message, at, at))
    return True


def clear_alarm(conn: sqlite3.Connection, name: str, *, now: datetime | None = None) -> bool:
    """Clear alarm ``name``; True if it was active (the row stays, as the last occurrence)."""
    at = to_text(now or utc_now())
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE alarms SET cleared_at = ?, updated_at = ? WHERE name = ? AND cleared_at IS NULL",
            (at, at, name))
    return cursor.rowcount > 0


def active_alarms(conn: sqlite3.Connection) -> list[Alarm]:
    """Alarms currently raised, oldest first."""
    rows = conn.execute("SELECT name, message, raised_at, updated_at, cleared_at FROM alarms "
                        "WHERE cleared_at IS NULL ORDER BY raised_at, name")
    return [Alarm(*row) for row in rows]
