"""The gallery's durable work queue: a ``jobs`` table beside the records, in the same database.

Why a table and not a thread with a list: the ack tells the station it may forget a record, so anything
the gallery still owes that record (its export files, a search index entry) has to be written down in the
same transaction as the record itself. :meth:`JobQueueMixin._enqueue` is called by
``GalleryStore.insert_record`` inside that transaction; after the commit the ack goes out, and the work
happens later in :mod:`sync.county.gallery.worker`, off the ack path.

Rules the queue keeps:

* One row per ``(kind, record_id)`` (``UNIQUE``, inserted with ``ON CONFLICT DO NOTHING``): a repeat of a
  record enqueues nothing new, and a record stored before a kind existed gains its job on the station's
  next repeat. Done rows stay (state ``done``, with their result), so each piece of work is done once and
  one can see when.
* A job is *claimed* with a lease (``claimed_by``, ``lease_until``) and ``attempts`` counts claims. A
  worker that dies mid-job leaves its claims ``running``: the same worker identity releases them when it
  starts again, and any worker takes over a claim whose lease ran out. Work must therefore be idempotent
  (exports are: fixed file names, atomic writes).
* A failure is retried with exponential backoff (``not_before``); a failure that will repeat whatever
  happens (a record that is not a valid transaction) is ``failed`` and waits for county IT.
* Kinds are plain strings: ``export:<format>`` for each configured export format, ``index`` for the search
  index. Adding a kind means a handler in the worker and its name in the list enqueued at commit; the
  table needs nothing.

PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so several gallery workers share one queue; SQLite has
one writer at a time anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

JobState = Literal["pending", "running", "done", "failed"]
JOB_STATES: tuple[JobState, ...] = ("pending", "running", "done", "failed")

JOBS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id {serial},
        kind TEXT NOT NULL,
        record_id TEXT NOT NULL REFERENCES records (record_id) ON DELETE CASCADE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at {ts} NOT NULL,
        not_before {ts} NOT NULL,
        claimed_by TEXT,
        lease_until {ts},
        finished_at {ts},
        last_error TEXT,
        last_error_at {ts},
        result TEXT,
        UNIQUE (kind, record_id)
    )""",
    """CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, not_before)""",
    """CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_until)""",
]

_JOB_COLUMNS = "id, kind, record_id, state, attempts, created_at, not_before, claimed_by, last_error"


@dataclass(frozen=True)
class Job:
    """One claimed (or listed) piece of work for one record."""

    id: int
    kind: str
    record_id: str
    state: str
    attempts: int
    created_at: datetime
    not_before: datetime
    claimed_by: str | None = None
    last_error: str | None = None


@dataclass
class KindSummary:
    """The queue of one kind: ``waiting`` = pending + running; ``retrying`` = waiting after an error."""

    kind: str
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    retrying: int = 0
    oldest_waiting: datetime | None = None

    @property
    def waiting(self) -> int:
        return self.pending + self.running


@dataclass
class QueueSummary:
    """What ``booking-gallery status`` shows: per kind, and the most recent error anywhere."""

    kinds: dict[str, KindSummary] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_error_kind: str | None = None
    last_error_record: str | None = None

    @property
    def waiting(self) -> int:
        return sum(k.waiting for k in self.kinds.values())

    @property
    def failed(self) -> int:
        return sum(k.failed for k in self.kinds.values())

    @property
    def retrying(self) -> int:
        return sum(k.retrying for k in self.kinds.values())

    @property
    def oldest_waiting(self) -> datetime | None:
        times = [k.oldest_waiting for k in self.kinds.values() if k.oldest_waiting is not None]
        return min(times) if times else None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobQueueMixin:
    """The queue's SQL, mixed into ``GalleryStore`` (which provides the transaction and dialect helpers)."""

    dialect: dict[str, str]
    _lock: Any

    if TYPE_CHECKING:  # provided by GalleryStore
        def _transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Any]: ...
        def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any: ...
        def _to_ts(self, value: datetime) -> Any: ...
        def _from_ts(self, value: Any) -> datetime: ...

    def _enqueue(self, cur: Any, record_id: str, kinds: Iterable[str], now: datetime) -> None:
        """Inside the caller's transaction: one pending job per kind for ``record_id`` (none if it exists)."""
        ts = self._to_ts(now)
        for kind in kinds:
            self._exec(
                cur,
                "INSERT INTO jobs (kind, record_id, state, attempts, created_at, not_before) "
                "VALUES (?, ?, 'pending', 0, ?, ?) ON CONFLICT (kind, record_id) DO NOTHING",
                (kind, record_id, ts, ts),
            )

    def enqueue_jobs(self, record_id: str, kinds: Iterable[str], *, now: datetime | None = None) -> None:
        """Enqueue work for a record already stored (e.g. a kind added later); idempotent."""
        with self._lock, self._transaction() as cur:
            self._enqueue(cur, record_id, kinds, now or _utcnow())

    def _job(self, row: Sequence[Any]) -> Job:
        return Job(int(row[0]), row[1], row[2], row[3], int(row[4]), self._from_ts(row[5]), self._from_ts(row[6]),
                   row[7], row[8])

    def claim_jobs(self, worker: str, kinds: Sequence[str], *, limit: int = 16, lease: float = 300.0,
                   now: datetime | None = None) -> list[Job]:
        """Claim up to ``limit`` due jobs of ``kinds`` for ``worker``: pending ones whose time has come, then
        running ones whose lease ran out (their worker died). Oldest first."""
        if not kinds:
            return []
        now = now or _utcnow()
        ts = self._to_ts(now)
        marks = ", ".join("?" for _ in kinds)
        lock = self.dialect.get("skip_locked", "")
        with self._lock, self._transaction() as cur:
            rows = self._exec(
                cur, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'pending' AND not_before <= ? AND kind IN "
                     f"({marks}) ORDER BY not_before, id LIMIT ? {lock}", (ts, *kinds, int(limit))).fetchall()
            if len(rows) < limit:
                rows += self._exec(
                    cur, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_until < ? AND kind IN "
                         f"({marks}) ORDER BY lease_until, id LIMIT ? {lock}",
                    (ts, *kinds, int(limit) - len(rows))).fetchall()
            until = self._to_ts(now + timedelta(seconds=lease))
            for row in rows:
                self._exec(cur, "UPDATE jobs SET state = 'running', claimed_by = ?, lease_until = ?, "
                                "attempts = attempts + 1 WHERE id = ?", (worker, until, row[0]))
        return [replace(self._job(row), state="running", attempts=int(row[4]) + 1, claimed_by=worker)
                for row in rows]

    def release_claims(self, worker: str) -> int:
        """Hand back every job ``worker`` still holds (it starts again, so the earlier process is gone)."""
        with self._lock, self._transaction() as cur:
            cur = self._exec(cur, "UPDATE jobs SET state = 'pending', lease_until = NULL "
                                  "WHERE state = 'running' AND claimed_by = ?", (worker,))
            return max(0, int(cur.rowcount))

    def finish_job(self, job: Job, result: str | None = None, *, now: datetime | None = None) -> None:
        """Mark ``job`` done (also if its lease ran out meanwhile: the work is idempotent, so done is done)."""
        with self._lock, self._transaction() as cur:
            self._exec(cur, "UPDATE jobs SET state = 'done', finished_at = ?, lease_until = NULL, result = ? "
                            "WHERE id = ? AND state <> 'done'",
                       (self._to_ts(now or _utcnow()), None if result is None else result[:1000], job.id))

    def fail_job(self, job: Job, error: str, *, retry_in: float | None, now: datetime | None = None) -> None:
        """Record a failure: back to ``pending`` after ``retry_in`` seconds, or ``failed`` when None."""
        now = now or _utcnow()
        state = "failed" if retry_in is None else "pending"
        not_before = now + timedelta(seconds=retry_in or 0.0)
        with self._lock, self._transaction() as cur:
            self._exec(cur, "UPDATE jobs SET state = ?, not_before = ?, lease_until = NULL, last_error = ?, "
                            "last_error_at = ? WHERE id = ? AND state = 'running'",
                       (state, self._to_ts(not_before), error[:1000], self._to_ts(now), job.id))

    def retry_failed_jobs(self, *, now: datetime | None = None) -> int:
        """Put every ``failed`` job back in the queue (after county IT fixed the cause)."""
        with self._lock, self._transaction() as cur:
            cur = self._exec(cur, "UPDATE jobs SET state = 'pending', not_before = ? WHERE state = 'failed'",
                             (self._to_ts(now or _utcnow()),))
            return max(0, int(cur.rowcount))

    def list_jobs(self, *, state: str | None = None, kind: str | None = None, limit: int = 100) -> list[Job]:
        """Jobs, oldest first, optionally of one state and kind."""
        where, params = [], []
        for column, value in (("state", state), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(cur, f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY id LIMIT ?",
                              (*params, int(limit))).fetchall()
        return [self._job(r) for r in rows]

    def job_summary(self) -> QueueSummary:
        """Counts per kind and state, the oldest waiting job and the latest error."""
        summary = QueueSummary()
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur, "SELECT kind, state, COUNT(*), MIN(created_at), "
                     "SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END) FROM jobs GROUP BY kind, state"
            ).fetchall()
            last = self._exec(cur, "SELECT kind, record_id, last_error, last_error_at FROM jobs "
                                   "WHERE last_error_at IS NOT NULL ORDER BY last_error_at DESC LIMIT 1").fetchone()
        for kind, state, count, oldest, errored in rows:
            k = summary.kinds.setdefault(kind, KindSummary(kind))
            setattr(k, state, int(count))
            if state in ("pending", "running"):
                k.retrying += int(errored or 0)
                first = self._from_ts(oldest)
                k.oldest_waiting = first if k.oldest_waiting is None else min(first, k.oldest_waiting)
        if last is not None:
            summary.last_error_kind, summary.last_error_record, summary.last_error = last[0], last[1], last[2]
            summary.last_error_at = self._from_ts(last[3])
        return summary
