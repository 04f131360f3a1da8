"""Group commit for the gallery receiver: several verified records in one transaction, acked after it.

Why: a durable commit costs a disk flush (SQLite ``synchronous=FULL``, PostgreSQL's WAL flush), and one
flush per record is most of what a record costs once it is verified. So the MQTT network thread only
verifies (topic, size, device, signature, record) and hands the record here; one committer thread takes
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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sync.county.gallery.store import PendingInsert
from sync.protocol import mqtt

if TYPE_CHECKING:
    from sync.county.gallery.receiver import Checked, GalleryReceiver

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class GroupCommitSettings:
    """``max_batch`` records per transaction at most; ``max_wait`` seconds of added latency at most."""

    max_batch: int = 32
    max_wait: float = 0.005
    max_queue: int = 256


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

    def submit(self, checked: Checked, message: mqtt.Message) -> None:
        """Queue one verified record (waits while the queue is full: back-pressure on the network thread).
        After :meth:`stop` the record is dropped unacknowledged: the broker resends it to the next session."""
        while not self._closed.is_set():
            try:
                self._queue.put((checked, message), timeout=0.5)
                return
            except queue.Full:
                continue

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gallery-commit", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit and ack what is queued, then stop."""
        if self._thread is not None:
            self._closed.set()
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

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

    def _commit(self, items: list[tuple[Checked, mqtt.Message]]) -> None:
        receiver = self.receiver
        kinds = receiver.job_kinds
        try:
            pending = []
            for checked, _ in items:
                assert checked.verified is not None  # only verified records are submitted
                pending.append(PendingInsert(checked.verified, checked.payload, checked.received_at, kinds))
            results = receiver.store.insert_records(pending)
        except Exception:  # noqa: BLE001 - the station retries; never stop the committer
            receiver.stats.counts["errors"] += len(items)
            log.exception("could not commit %d record(s); no ack sent, their stations will retry", len(items))
            for _, message in items:
                _puback(message)
            return
        self.batches += 1
        self.committed += len(items)
        if receiver.jobs is not None:
            receiver.jobs.wake()
        for (checked, message), result in zip(items, results, strict=True):
            try:
                outcome = receiver.settle(checked, result)
                if outcome.ack is not None and outcome.ack_topic is not None:
                    receiver.publish_ack(message.client, outcome.ack_topic, outcome.ack, message)
            except Exception:  # noqa: BLE001 - one record's store error must not keep the others' acks
                receiver.stats.counts["errors"] += 1
                log.exception("could not store a record on %s; no ack sent, the station will retry", message.topic)
            finally:
                _puback(message)


def _puback(message: mqtt.Message) -> None:
    """PUBACK to the broker (``manual_ack``); a lost connection makes the broker resend, which is fine."""
    try:
        message.client.ack(message.mid, message.qos)
    except Exception:  # noqa: BLE001 - the session will redeliver it
        log.debug("PUBACK of message %d failed", message.mid, exc_info=True)
