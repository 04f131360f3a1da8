"""Transactions with explicit boundaries, because the store's guarantees are made of them.

The connection is opened with ``isolation_level=None`` so the sqlite3 module never starts or commits a
transaction behind our back; these two context managers are then the only places that do.

Writers take the write lock up front (``BEGIN IMMEDIATE``): with several processes on one database
(officer UI, sync agent, scheduler) a deferred transaction that reads first and writes later can fail
with SQLITE_BUSY at its first write, after work was done; an immediate one waits (busy timeout) at the
start instead. A block run while a transaction is already open joins it, so a helper such as
`appliance.store.audit.append` can be called alone or as part of a larger write and is atomic with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; SQLite may already have rolled back (e.g. disk full)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):  # the original error is the one worth reporting
            conn.execute("ROLLBACK")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction: all of it is committed, or none of it.

    Control returns from the ``with`` only after ``COMMIT`` succeeded, which with ``synchronous=FULL``
    means the change is on disk. Any exception (including one raised by ``COMMIT`` itself, e.g. a full
    disk) rolls everything back and propagates.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        _rollback_quietly(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        _rollback_quietly(conn)
        raise


@contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run several reads against one snapshot (WAL readers see the database as of ``BEGIN``).

    Without it, two SELECTs may straddle another process's commit, e.g. a booking read before and its
    captures after a purge.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        _rollback_quietly(conn)
