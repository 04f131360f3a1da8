"""The audit log: append-only and hash-chained, so an edited, removed or reordered entry is detectable.

Each entry holds ``seq`` (1, 2, 3, ...), ``at`` (UTC), ``actor`` (officer id, ``system``, ``county``),
``action`` and ``details`` (canonical JSON), plus ``prev_hash`` (the previous entry's hash) and
``hash`` = SHA-256 over the canonical encoding of all of those (see `entry_hash`). Changing any field
of any entry changes its hash; removing or moving an entry breaks the next entry's ``prev_hash`` or the
run of sequence numbers. `verify` walks the chain and reports the first entry that does not fit.

What the chain proves, and what it does not: it proves the log is internally consistent. Someone with
write access to the file could rewrite the whole chain from some point on; that is caught by comparing
with the county's copy of the log, not locally: the sync agent sends every entry to the county gallery
(`delivered_seq` is how far the gallery has acknowledged) and its status carries the signed head
(`head`), so a rewrite shows as a fork or a changed head there, and truncating the newest entries as a
head older than what the county holds.

Retention (CJIS: keep at least a year) removes only a prefix of old entries, and first stores a
checkpoint (the last removed entry's seq and hash) so the remaining chain still verifies from there.

Actions in use: ``logon``, ``logon_failed``, ``logoff``, ``session_lock``, ``capture``, ``override``,
``export``, ``purge``, ``purge_images``, ``config_change``, ``key_rotation``, ``audit_retention``,
``decommission``. Any lower-case identifier is accepted, so other parts of the product can add theirs.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance.store.clock import to_text, utc_now
from appliance.store.errors import AuditChainError, ValidationError
from appliance.store.transactions import read_transaction, write_transaction
from sync.protocol.audit_wire import GENESIS_HASH, AuditWireEntry, entry_hash  # shared with the county

MIN_KEEP_DAYS = 365
"""Audit entries are kept at least a year (FBI CJIS Security Policy, audit record retention)."""

_ACTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_DELIVERED_KEY = "audit_delivered_seq"


@dataclass(frozen=True)
class AuditEntry(AuditWireEntry):
    """One audit entry as stored; ``details`` is the canonical JSON text that was hashed. The fields are the
    wire's, so the agent sends stored entries as they are and both ends judge them by one hash rule."""

    @property
    def details_dict(self) -> dict[str, Any]:
        """The details parsed back into a dict."""
        return json.loads(self.details)


@dataclass(frozen=True)
class Checkpoint:
    """Where the chain starts after retention: the last removed entry's seq and hash."""

    seq: int
    hash: str
    removed_total: int
    updated_at: str


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain, with enough context for a person to act on it."""

    first_broken_seq: int | None
    entries: int
    first_seq: int | None
    last_seq: int | None
    checkpoint: Checkpoint | None

    @property
    def ok(self) -> bool:
        return self.first_broken_seq is None


def canonical_details(details: Mapping[str, Any]) -> str:
    """Canonical JSON for ``details``: sorted keys, no spaces, no NaN, UTF-8 kept as is.

    The stored text is exactly what is hashed, so verification never depends on re-serialising.
    """
    try:
        return json.dumps(dict(details), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"audit details must be plain JSON data: {exc}") from None


def checkpoint(conn: sqlite3.Connection) -> Checkpoint | None:
    """The retention checkpoint, or None if no entry was ever removed."""
    row = conn.execute("SELECT seq, hash, removed_total, updated_at FROM audit_checkpoint WHERE id = 1").fetchone()
    return Checkpoint(*row) if row else None


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The newest entry's (seq, hash): what the station's status reports to the county."""
    return _head(conn)


def delivered_seq(conn: sqlite3.Connection) -> int:
    """The last seq the county gallery acknowledged holding (0: none yet)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_DELIVERED_KEY,)).fetchone()
    try:
        return int(row[0]) if row else 0
    except (TypeError, ValueError):
        return 0


def set_delivered_seq(conn: sqlite3.Connection, seq: int) -> None:
    """Move the delivery mark forward to ``seq`` (never back: a late ack for an older batch is harmless)."""
    with write_transaction(conn):
        if seq <= delivered_seq(conn):
            return
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                     "excluded.value", (_DELIVERED_KEY, str(int(seq))))


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    """The seq and hash the next entry chains onto: the newest entry, else the checkpoint, else genesis."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    if row:
        return row[0], row[1]
    cp = checkpoint(conn)
    return (cp.seq, cp.hash) if cp else (0, GENESIS_HASH)


def append(conn: sqlite3.Connection, actor: str, action: str, details: Mapping[str, Any] | None = None,
           *, now: datetime | None = None) -> AuditEntry:
    """Append one entry and return it.

    Runs in the caller's transaction if one is open (so the entry commits or rolls back together with
    the change it describes, e.g. a purge), else in its own ``BEGIN IMMEDIATE`` transaction. Holding
    the write lock while reading the head is what keeps two processes from chaining onto the same entry.
    """
    if not isinstance(actor, str) or not actor or len(actor) > 128 or not actor.isprintable():
        raise ValidationError(f"audit actor {actor!r} must be 1-128 printable characters")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise ValidationError(f"audit action {action!r} must be a lower-case identifier (e.g. 'purge')")
    text = canonical_details(details or {})
    at = to_text(now or utc_now())
    with write_transaction(conn):
        last_seq, prev = _head(conn)
        seq = last_seq + 1
        digest = entry_hash(seq, at, actor, action, text, prev)
        conn.execute(
            "INSERT INTO audit (seq, at, actor, action, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, at, actor, action, text, prev, digest))
    return AuditEntry(seq, at, actor, action, text, prev, digest)


def entries(conn: sqlite3.Connection, *, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
    """Entries with ``seq > after_seq`` in order (the county sync reads the log this way)."""
    sql = "SELECT seq, at, actor, action, details, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq"
    params: tuple[int, ...] = (after_seq,)
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    return [AuditEntry(*row) for row in conn.execute(sql, params)]


def _first_break(conn: sqlite3.Connection, cp: Checkpoint | None) -> tuple[int | None, int, int | None, int | None]:
    """Walk every entry; return (first broken seq or None, entry count, first seq, last seq)."""
    expected_seq = cp.seq + 1 if cp else 1
    prev = cp.hash if cp else GENESIS_HASH
    broken: int | None = None
    count, first, last = 0, None, None
    cursor = conn.execute("SELECT seq, at, actor, action, details, prev_hash, hash FROM audit ORDER BY seq")
    for seq, at, actor, action, details, prev_hash, digest in cursor:
        count += 1
        first = seq if first is None else first
        last = seq
        if broken is None:
            if seq != expected_seq:
                broken = min(seq, expected_seq)
            elif prev_hash != prev or entry_hash(seq, at, actor, action, details, prev_hash) != digest:
                broken = seq
        prev = digest
        expected_seq = seq + 1
    return broken, count, first, last


def verify_report(conn: sqlite3.Connection) -> VerifyReport:
    """Walk the whole chain (from the checkpoint, if any) in one snapshot and report on it."""
    with read_transaction(conn):
        cp = checkpoint(conn)
        broken, count, first, last = _first_break(conn, cp)
    return VerifyReport(broken, count, first, last, cp)


def verify(conn: sqlite3.Connection) -> int | None:
    """Return the seq of the first entry that breaks the chain, or None if the chain is intact.

    An edited entry fails its own hash; a deleted entry leaves a gap in ``seq`` (reported at the
    missing number); a moved entry fails its hash (``seq`` is hashed) or the next ``prev_hash``.
    """
    return verify_report(conn).first_broken_seq


def apply_retention(conn: sqlite3.Connection, keep_days: int, *, now: datetime | None = None,
                    actor: str = "system") -> int:
    """Remove entries older than ``keep_days`` days; return how many were removed.

    Refuses ``keep_days`` below 365. Only a prefix of the chain is removed (up to the first entry that
    is still young enough, so a clock that once stepped backwards never makes a young entry go), the
    checkpoint is moved to the last removed entry first, and the removal itself is audited. If the part
    to be removed does not verify, nothing is removed (`AuditChainError`): deleting it would erase the
    evidence of the break.
    """
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < MIN_KEEP_DAYS:
        raise ValueError(f"audit entries must be kept at least {MIN_KEEP_DAYS} days (CJIS), "
                         f"refusing keep_days={keep_days!r}")
    moment = now or utc_now()
    cutoff = to_text(moment - timedelta(days=keep_days))
    with write_transaction(conn):
        young = conn.execute("SELECT MIN(seq) FROM audit WHERE at >= ?", (cutoff,)).fetchone()[0]
        if young is None:
            young = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit").fetchone()[0]
        row = conn.execute("SELECT seq, hash FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                           (young,)).fetchone()
        if row is None:
            return 0
        last_seq, last_hash = row
        cp = checkpoint(conn)
        broken, _, _, _ = _first_break(conn, cp)
        if broken is not None and broken <= last_seq + 1:
            raise AuditChainError(
                f"audit chain is broken at seq {broken}; refusing to remove entries up to {last_seq}, "
                f"which would erase the evidence. Compare with the county's copy first")
        removed = conn.execute("SELECT COUNT(*) FROM audit WHERE seq <= ?", (last_seq,)).fetchone()[0]
        total = (cp.removed_total if cp else 0) + removed
        conn.execute(
            "INSERT INTO audit_checkpoint (id, seq, hash, removed_total, updated_at) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
            "removed_total = excluded.removed_total, updated_at = excluded.updated_at",
            (last_seq, last_hash, total, to_text(moment)))
        conn.execute("DELETE FROM audit WHERE seq <= ?", (last_seq,))
        append(conn, actor, "audit_retention",
               {"removed": removed, "through_seq": last_seq, "keep_days": keep_days}, now=moment)
    return removed
