"""Group commit for the gallery receiver: several verified records in one transaction, acked after it.

Why: a durable commit costs a disk flush (SQLite ``synchronous=FULL``, PostgreSQL's WAL flush), and one
flush per record is most of what a record costs once it is verified. So the MQTT network thread only
hands each record message to a few checker threads (topic, size, device, signature, JPEG decode: the
costly part, which then overlaps with reading the next records) and queues the pending check in arrival
order; one committer thread takes the results in that order (answering refusals in place), takes
what has queued, up to ``max_batch`` records, waiting at most ``max_wait`` seconds after the first for
more, commits them with their work-queue jobs in ONE transaction
(:meth:`~sync.county.gallery.store.GalleryStore.insert_records`), and only then sends each station its
ack and the broker its PUBACK. The added latency is bounded by ``max_wait`` (plus the commit itself);
under load the batch fills by itself while the previous one commits, so nothing waits for the clock.

Nothing is acked before its commit: the client runs with ``manual_ack``, so the broker keeps each message
in the gallery's session until the PUBACK here. A failed transaction sends no gallery ack (the station
retries, as with a single record) but does PUBACK, so a database outage cannot fill the broker's
in-flight window. The queue is bounded: when the committer falls behind, the network thread waits, and
the broker holds the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync.county.gallery.store import GalleryStoreError, InsertResult, PendingInsert
from sync.protocol import mqtt

if TYPE_CHECKING:
    from sync.county.gallery.receiver import Checked, GalleryReceiver

log = logging.getLogger(__name__)

_STOP = object()

#: A queued record message: its check's result, or the future of a check still running.
Queued = tuple["Checked | Future[Checked]", mqtt.Message]


@dataclass(frozen=True)
class GroupCommitSettings:
    """``max_batch`` records per transaction at most; ``max_wait`` seconds of added latency at most."""

    max_batch: int = 32
    max_wait: float = 0.005
    max_queue: int = 256
    #: Threads that verify records (signature, JPEG decode) while the network thread reads the next
    #: ones; OpenCV, OpenSSL and hashlib release the GIL, so these overlap on separate cores.
    checkers: int = 2


class GroupCommitter:
    """The committer thread of one receiver (see the module docstring)."""

    def __init__(self, receiver: GalleryReceiver, settings: GroupCommitSettings | None = None) -> None:
        self.receiver = receiver
        self.settings = settings or GroupCommitSettings()
        self.batches = 0
        self.committed = 0
        self._queue: queue.Queue[object] = queue.Queue(self.settings.max_queue)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, checked: Checked, message: mqtt.Message) -> None:
        """Queue one verified record (waits while the queue is full: back-pressure on the network thread).
        After :meth:`stop` the record is dropped unacknowledged: the broker resends it to the next session."""
        self._put((checked, message))

    def submit_message(self, message: mqtt.Message) -> None:
        """Check a record message on a checker thread and queue it in arrival order: the committer takes
        the checks' results in that order, so commits, acks and PUBACKs keep the order the broker sent."""
        if self._pool is None:
            self.submit(self.receiver.check(message.topic, message.payload), message)
            return
        self._put((self._pool.submit(self.receiver.check, message.topic, message.payload), message))

    def _put(self, item: Queued) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def start(self) -> None:
        if self._thread is None:
            if self.settings.checkers > 0:
                self._pool = ThreadPoolExecutor(self.settings.checkers, thread_name_prefix="gallery-check")
            self._thread = threading.Thread(target=self._loop, name="gallery-commit", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit and ack what is queued, then stop."""
        if self._thread is not None:
            self._closed.set()
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _take(self) -> tuple[list[tuple[Checked, mqtt.Message]], bool]:
        """The next batch (blocking for its first item) and whether a stop was asked for."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.settings.max_wait
        while len(batch) < self.settings.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                self._commit(batch)  # type: ignore[arg-type]
                return [], True
            batch.append(item)
        return batch, False  # type: ignore[return-value]

    def _loop(self) -> None:
        while True:
            batch, stopping = self._take()
            if batch:
                self._commit(batch)
            if stopping:
                return

    def _commit(self, queued: list[Queued]) -> None:
        """Commit the batch's verified records in one transaction, then answer every message of the batch in
        arrival order (a refusal in its place) and PUBACK it."""
        receiver = self.receiver
        items = [(self._result(item, message), message) for item, message in queued]
        verified = [checked for checked, _ in items if checked is not None and checked.verified is not None]
        results: dict[int, InsertResult | GalleryStoreError] = {}
        if verified:
            kinds = receiver.job_kinds
            try:
                done = receiver.store.insert_records(
                    [PendingInsert(c.verified, c.payload, c.received_at, kinds) for c in verified])  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the station retries; never stop the committer
                receiver.stats.counts["errors"] += len(verified)
                log.exception("could not commit %d record(s); no ack sent, their stations will retry", len(verified))
                done = None
            if done is not None:
                results = {id(c): r for c, r in zip(verified, done, strict=True)}
                self.batches += 1
                self.committed += len(verified)
                if receiver.jobs is not None:
                    receiver.jobs.wake()
        for checked, message in items:
            try:
                if checked is None or (checked.verified is not None and id(checked) not in results):
                    continue  # no ack: the check or the commit failed, the station retries
                outcome = checked.outcome if checked.verified is None else receiver.settle(checked,
                                                                                             results[id(checked)])
                if outcome.ack is not None and outcome.ack_topic is not None:
                    receiver.publish_ack(message.client, outcome.ack_topic, outcome.ack, message)
            except Exception:  # noqa: BLE001 - one record's store error must not keep the others' acks
                receiver.stats.counts["errors"] += 1
                log.exception("could not store a record on %s; no ack sent, the station will retry", message.topic)
            finally:
                _puback(message)

    def _result(self, item: Checked | Future[Checked], message: mqtt.Message) -> Checked | None:
        """A queued check's result, or None (logged, counted) when the check itself failed unexpectedly."""
        try:
            return item.result() if isinstance(item, Future) else item
        except Exception:  # noqa: BLE001 - one bad message must not stop the committer
            self.receiver.stats.counts["errors"] += 1
            log.exception("could not check a message on %s; no ack sent, the station will retry", message.topic)
            return None


def _puback(message: mqtt.Message) -> None:
    """PUBACK to the broker (``manual_ack``); a lost connection makes the broker resend, which is fine."""
    try:
        message.client.ack(message.mid, message.qos)
    except Exception:  # noqa: BLE001 - the session will redeliver it
        log.debug("PUBACK of message %d failed", message.mid, exc_info=True)
