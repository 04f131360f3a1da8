"""The thread that drains the gallery's work queue (:mod:`sync.county.gallery.jobs`), off the ack path.

The receiver commits a record and its jobs in one transaction, acks, and calls :meth:`JobWorker.wake`;
this thread claims due jobs in small batches, runs each kind's handler and records the outcome. Nothing
here can lose work: a job is only marked done after its handler returned, a worker killed mid-job leaves
a claim that is released when the same worker identity starts again (or taken over when its lease runs
out), and every handler is idempotent, so running one twice after a crash gives the same result once.

Handlers are plain callables keyed by job kind; a handler raises :class:`PermanentJobError` for a failure
that will repeat whatever happens (the job is parked as ``failed`` for county IT), anything else is
retried with exponential backoff. Kinds today: ``export:<format>`` (:mod:`sync.county.gallery.exporters`).
The search index plugs in the same way: ``handlers["index"] = ...`` and ``"index"`` is then enqueued with
every record the receiver commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sync.county.gallery.jobs import Job
from sync.county.gallery.store import GalleryStore

log = logging.getLogger(__name__)

#: A job's work: returns a short result for the queue (e.g. the file written), raises on failure.
JobHandler = Callable[[Job], "str | None"]


class PermanentJobError(Exception):
    """A failure retrying cannot fix (e.g. a stored record that is not a valid transaction)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff after the n-th failed attempt: ``first * 2**(n-1)``, at most ``ceiling`` seconds. ``lease``
    is how long a claim lasts before another worker may take the job over."""

    first: float = 2.0
    ceiling: float = 600.0
    lease: float = 300.0

    def delay(self, attempts: int) -> float:
        return min(self.ceiling, self.first * 2 ** max(0, attempts - 1))


class JobWorker:
    """Runs ``handlers`` on the store's due jobs in its own thread (``start``/``stop``), or one batch at a
    time (:meth:`run_once`, for tests and tools)."""

    def __init__(self, store: GalleryStore, handlers: Mapping[str, JobHandler], *, worker_id: str,
                 policy: RetryPolicy | None = None, batch: int = 16, poll: float = 1.0) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.worker_id = worker_id
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self.poll = poll
        self.stats: Counter[str] = Counter()
        #: While this says the receiver is busy, each job waits (at most ``max_defer`` seconds): acks first.
        self.defer_while: Callable[[], bool] | None = None
        self.max_defer = 1.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this worker runs: what the receiver enqueues with each record."""
        return tuple(self.handlers)

    def wake(self) -> None:
        """New work was committed: look now instead of at the next poll."""
        self._wake.set()

    def run_once(self) -> int:
        """Claim one batch of due jobs and run them; returns how many ran."""
        jobs = self.store.claim_jobs(self.worker_id, self.kinds, limit=self.batch, lease=self.policy.lease)
        for job in jobs:
            self._yield_to_acks()
            if self._stop.is_set():
                break  # the rest of the batch stays claimed by us; _loop hands it back
            self._run(job)
        return len(jobs)

    def _yield_to_acks(self) -> None:
        """In one process the GIL makes an export and the receiver take turns: while records are arriving,
        each job waits up to ``max_defer`` seconds, so a burst is acked at the wire's pace and its exports
        follow (at least one a second meanwhile, so they never starve)."""
        if self.defer_while is None:
            return
        deadline = time.monotonic() + self.max_defer
        while self.defer_while() and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(0.02)

    def _run(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        try:
            result = handler(job)
        except PermanentJobError as exc:
            self.stats["failed"] += 1
            log.error("%s of record %s failed and will not be retried: %s", job.kind, job.record_id, exc)
            self.store.fail_job(job, str(exc), retry_in=None)
        except Exception as exc:  # noqa: BLE001 - any other failure is retried; the job says why
            delay = self.policy.delay(job.attempts)
            self.stats["retried"] += 1
            log.warning("%s of record %s failed (attempt %d), retrying in %.0f s: %s", job.kind, job.record_id,
                        job.attempts, delay, exc)
            self.store.fail_job(job, f"{type(exc).__name__}: {exc}", retry_in=delay)
        else:
            self.store.finish_job(job, result)
            self.stats["done"] += 1
            self.stats[job.kind] += 1

    def drain(self, *, max_batches: int = 1_000_000) -> int:
        """Run batches until nothing is due; returns how many jobs ran."""
        total = 0
        for _ in range(max_batches):
            ran = self.run_once()
            total += ran
            if not ran:
                break
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # noqa: BLE001 - a database outage must not end the thread
                log.exception("work queue unavailable; trying again in %.0f s", self.poll)
                ran = 0
            if not ran:
                self._wake.wait(self.poll)
                self._wake.clear()
        try:
            self.store.release_claims(self.worker_id)
        except Exception:  # noqa: BLE001 - the next start releases them instead
            log.exception("could not hand back claimed jobs on stop")

    def start(self) -> None:
        """Release what an earlier process of this worker left claimed, then run in a thread."""
        if not self.handlers or self._thread is not None:
            return
        released = self.store.release_claims(self.worker_id)
        if released:
            log.warning("%d job(s) a previous run of %s left unfinished are queued again", released,
                        self.worker_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gallery-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the job in hand and stop; unclaimed jobs stay queued for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def healthy(self) -> bool:
        """False when the thread should run but has died (the service watchdog then restarts the worker)."""
        return not self.handlers or (self._thread is not None and self._thread.is_alive())
