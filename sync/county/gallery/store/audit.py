"""The county-side audit log: an append-only table of who did what to which subject.

Its own module because other groups write into it inside their own transactions (``purge_records``
calls ``_add_audit``), and it is distinct from the stations' chained audit in
:mod:`sync.county.gallery.audit`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sync.county.gallery.store.clock import _utcnow
from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.models import AuditEntry


class AuditMixin(StoreCore):
    """The ``audit`` table, mixed into ``GalleryStore``."""

    def _add_audit(self, cur: Any, at: Any, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
        self._exec(
            cur,
            "INSERT INTO audit (at, actor, action, subject, details) VALUES (?, ?, ?, ?, ?)",
            (at, actor[:200], action[:64], subject[:200], json.dumps(details, sort_keys=True, default=str)),
        )

    def audit(self, actor: str, action: str, subject: str, details: dict[str, Any] | None = None, *,
              now: datetime | None = None) -> None:
        """Append one county-side action to the audit log."""
        with self._lock, self._transaction() as cur:
            self._add_audit(cur, self._to_ts(now or _utcnow()), actor, action, subject, details or {})

    def list_audit(self, *, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first, optionally of one action."""
        where, params = ("WHERE action = ?", [action]) if action else ("", [])
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                f"SELECT id, at, actor, action, subject, details FROM audit {where} ORDER BY id DESC LIMIT ?",
                [*params, int(limit)],
            ).fetchall()
        return [AuditEntry(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def audit_of(self, subject: str, *, limit: int = 100) -> list[AuditEntry]:
        """The audit entries about one subject (a record id), newest first."""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT id, at, actor, action, subject, details FROM audit WHERE subject = ? ORDER BY id DESC LIMIT ?",
                (subject, int(limit)),
            ).fetchall()
        return [AuditEntry(int(r[0]), self._from_ts(r[1]), r[2], r[3], r[4], json.loads(r[5])) for r in rows]
