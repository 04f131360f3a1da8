"""The gallery's search index: derived from the gallery store, never the other way round.

The store is the truth; the index only ever holds (store template sequence number, template) pairs of
frontal templates, so it can always be rebuilt from the store and checked against it:

* :meth:`SearchIndex.catch_up` adds every frontal template stored after the engine's watermark, and moves
  the watermark only after the engine holds them. It is safe at any moment and after a SIGKILL at any
  point: the engine reloads its last durable state, adding is idempotent, and the store still has
  everything newer. With PostgreSQL several workers commit concurrently, so a sequence number can become
  visible after a higher one: catch-up then re-reads the last ``overlap`` numbers below the watermark
  (SQLite commits in sequence order, one writer at a time, and needs no overlap).
* :meth:`SearchIndex.reconcile` (a worker's start) also removes what the store no longer holds.
* :meth:`SearchIndex.search` filters every hit against the store, so a record the store no longer holds
  (purged between an index save and a crash, say) is never returned even before reconcile runs.
* :meth:`SearchIndex.verify` lists the differences; :meth:`SearchIndex.rebuild` starts over from the store.

Retraining beside the worker (``background_retrain``, the gallery worker's index): an inverted file that has
outgrown its lists is retrained from scratch, which at county scale takes tens of seconds to minutes. Done
inside ``add`` it would stop the worker (no record indexed, no booking-time check answered) for all that
time, so instead the engine only says it is due, and a background thread builds a spare engine from the
store (the same streamed load as a rebuild) while the worker keeps indexing into, and searching, the old
one. While the spare is built only the spare writes the index file, once, whole and atomically: a kill at
any moment leaves the old file or the new one, each consistent with its own watermark, and the usual
catch-up (and ``reconcile`` on start) brings either level with the store. When the spare is ready, the
next catch-up adds to it what the store received meanwhile, removes what was purged meanwhile, and swaps
it in under the index's lock; the old engine is dropped without being saved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from sync.county.gallery.store import GalleryStore, SequencedTemplate, SQLiteStore
from sync.county.search.engine import DIM, SearchEngine, as_vectors
from sync.county.search.settings import SearchSettings

log = logging.getLogger(__name__)

POSE = "frontal"
BATCH = 5_000
PG_OVERLAP = 1_000


@dataclass(frozen=True)
class Candidate:
    """One stored record whose frontal template is near the probe."""

    record_id: str
    booking_number: str
    ori: str
    station: str
    captured_at: datetime
    pose: str
    distance: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["captured_at"] = self.captured_at.isoformat()
        out["distance"] = round(self.distance, 6)
        return out


@dataclass(frozen=True)
class SearchResult:
    candidates: list[Candidate]
    searched: int
    took_ms: float


@dataclass(frozen=True)
class VerifyReport:
    """Differences between the store's frontal templates and the index (sequence numbers)."""

    stored: int
    indexed: int
    missing: list[int] = field(default_factory=list)  # in the store, not in the index
    extra: list[int] = field(default_factory=list)  # in the index, not in the store

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "stored": self.stored, "indexed": self.indexed, "missing": self.missing[:100],
                "extra": self.extra[:100], "missing_count": len(self.missing), "extra_count": len(self.extra)}


def _vectors(rows: list[SequencedTemplate]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r.seq for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r.vector for r in rows), dtype="<f4").reshape(len(rows), DIM)
    return ids, vecs


#: A retrain that failed is tried again after this long (it would fail again at once for the same reason).
RETRAIN_RETRY_AFTER = 600.0
#: Templates read from the store per query while a spare is built: short enough that the receiver's inserts,
#: which wait for the same store lock, are held back for milliseconds rather than a second.
RETRAIN_BATCH = 10_000


class RetrainCancelled(Exception):
    """The index was closed while a spare was being built."""


@dataclass
class _Retrain:
    """One background retrain: the spare engine, the thread building it, and what happened meanwhile."""

    engine: Any
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    removed: list[int] = field(default_factory=list)  # ids removed from the old engine since the build began
    error: BaseException | None = None
    saved: bool = False  # the spare has written the index file


class SearchIndex:
    """A :class:`SearchEngine` kept in step with a :class:`GalleryStore` (see the module docstring).
    Thread-safe: the worker's indexing and the booking-time check's searches take turns on one lock, and a
    background retrain works on its own spare engine outside it."""

    def __init__(self, engine: SearchEngine, *, model: str | None = None, background_retrain: bool = False) -> None:
        self.engine = engine
        self.model = model
        self._lock = threading.RLock()
        self._retrain: _Retrain | None = None
        self._retrain_failed_at = -1e18
        self._read_only = bool(getattr(getattr(engine, "settings", None), "read_only", False))
        self.background_retrain = background_retrain and hasattr(engine, "retrain_due")
        if self.background_retrain:
            engine.defer_retrain = True  # type: ignore[attr-defined]
        #: Called by the retrain thread with each chunk it is about to add (tests hold a retrain mid-way).
        self.on_retrain_chunk: Callable[[int], None] | None = None

    def _feed(self, store: GalleryStore, after: int, limit: int = BATCH) -> list[SequencedTemplate]:
        return store.templates_after(after, limit=limit, pose=POSE, dim=DIM, model=self.model)

    def catch_up(self, store: GalleryStore) -> int:
        """Add every frontal template stored since the watermark; returns how many were new. Swaps in a
        retrained spare that is ready, and starts a retrain that is due (``background_retrain``)."""
        with self._lock:
            self._adopt_retrain(store)
            added = self._catch_up(self.engine, store)
            self._start_retrain(store)
            return added

    def _catch_up(self, engine: SearchEngine, store: GalleryStore) -> int:
        watermark = engine.watermark
        after = watermark if isinstance(store, SQLiteStore) else max(0, watermark - PG_OVERLAP)
        added = 0
        while rows := self._feed(store, after):
            ids, vecs = _vectors(rows)
            added += engine.add(ids, vecs)
            after = rows[-1].seq
            watermark = max(watermark, after)
            engine.checkpoint(watermark)
        top = store.max_template_seq()  # templates of other poses move the watermark too
        if top > watermark:
            watermark = top
            engine.checkpoint(watermark)
        return added

    # ------------------------------------------------------------------ retraining beside the worker
    @property
    def retraining(self) -> bool:
        """True while a spare engine is being built (or waits to be swapped in)."""
        return self._retrain is not None

    def _start_retrain(self, store: GalleryStore) -> None:
        if not self.background_retrain or self._retrain is not None:
            return
        if not self.engine.retrain_due():  # type: ignore[attr-defined]
            return
        if time.monotonic() - self._retrain_failed_at < RETRAIN_RETRY_AFTER:
            return
        retrain = _Retrain(self.engine.spare())  # type: ignore[attr-defined]
        self.engine.set_saving(False)  # type: ignore[attr-defined]  # only the spare writes the file now
        total = self.engine.count()
        retrain.thread = threading.Thread(target=self._build_spare, args=(retrain, store, total),
                                          name="search-retrain", daemon=True)
        self._retrain = retrain
        log.info("search index: retraining %d templates in the background", total)
        retrain.thread.start()

    def _build_spare(self, retrain: _Retrain, store: GalleryStore, total: int) -> None:
        """The retrain thread: load the spare from the store (no lock of ours held), then save it whole."""
        started = time.perf_counter()
        try:
            top = store.max_template_seq()
            loaded = retrain.engine.load_stream(max(total, 1), self._spare_chunks(store, retrain))
            retrain.engine.checkpoint(top)
            if not self._read_only:
                retrain.engine.set_saving(True)
                retrain.engine.checkpoint(retrain.engine.watermark, force=True)
                retrain.saved = True
            log.info("search index: %d templates retrained in %.1f s", loaded, time.perf_counter() - started)
        except Exception as exc:  # reported on the worker's thread, which keeps the old index
            retrain.error = exc
        finally:
            retrain.done.set()

    def _spare_chunks(self, store: GalleryStore, retrain: _Retrain) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        after = 0
        while rows := self._feed(store, after, limit=RETRAIN_BATCH):
            if retrain.cancel.is_set():
                raise RetrainCancelled("the index was closed")
            ids, vecs = _vectors(rows)
            if self.on_retrain_chunk is not None:
                self.on_retrain_chunk(int(ids.size))
            yield ids, vecs
            after = rows[-1].seq

    def _adopt_retrain(self, store: GalleryStore) -> bool:
        """Swap in a finished spare (caught up and with the removals made meanwhile); True when swapped."""
        retrain = self._retrain
        if retrain is None or not retrain.done.is_set():
            return False
        self._retrain = None
        old = self.engine
        if retrain.error is not None:
            self._retrain_failed_at = time.monotonic()
            log.error("search index: the background retrain failed (%s); searching the old index, retrying in "
                      "%.0f min", retrain.error, RETRAIN_RETRY_AFTER / 60)
            old.set_saving(not self._read_only)  # type: ignore[attr-defined]
            return False
        spare = retrain.engine
        self._catch_up(spare, store)
        if retrain.removed:
            spare.remove(retrain.removed)
        spare.defer_retrain = True
        spare.set_saving(not self._read_only)
        self.engine = spare
        old.close()  # not saving: the spare wrote the file (or nobody may)
        log.info("search index: the retrained index took over (%d templates)", spare.count())
        return True

    def _remove(self, ids: list[int]) -> int:
        """Remove from the live engine, and remember it for a spare being built from an older store."""
        if self._retrain is not None:
            self._retrain.removed.extend(ids)
        return self.engine.remove(ids)

    def wait_retrain(self, store: GalleryStore, timeout: float | None = None) -> bool:
        """Wait for a running retrain to finish and swap it in (a worker's next catch-up does that by itself;
        tests and benchmarks want to know when). True when no retrain is left running."""
        retrain = self._retrain
        if retrain is not None and not retrain.done.wait(timeout):
            return False
        with self._lock:
            self._adopt_retrain(store)
        return self._retrain is None

    def _stop_retrain(self) -> _Retrain | None:
        """Cancel a running retrain and wait for its thread; returns it (finished or not)."""
        retrain, self._retrain = self._retrain, None
        if retrain is not None:
            retrain.cancel.set()
            if retrain.thread is not None:
                retrain.thread.join()
        return retrain

    def reconcile(self, store: GalleryStore) -> tuple[int, int]:
        """Catch up, then drop what the store no longer holds: (added, removed). For a worker's start."""
        with self._lock:
            added = self.catch_up(store)
            report = self.verify(store)
            removed = self._remove(report.extra) if report.extra else 0
            if report.missing:
                added += self._add_seqs(store, report.missing)
            self.engine.checkpoint(self.engine.watermark, force=True)
            return added, removed

    def _add_seqs(self, store: GalleryStore, seqs: list[int]) -> int:
        rows = store.templates_by_seq(seqs)
        if not rows:
            return 0
        ids, vecs = _vectors(rows)
        return self.engine.add(ids, vecs)

    def remove_record(self, store: GalleryStore, record_id: str) -> int:
        """Take a record's templates out (call it before the store deletes the record; after, it falls
        back to removing everything the store no longer holds)."""
        with self._lock:
            seqs = store.record_template_seqs(record_id)
            removed = self._remove(seqs) if seqs else self.reconcile(store)[1]
            self.engine.checkpoint(self.engine.watermark, force=True)
            return removed

    def rebuild(self, store: GalleryStore) -> int:
        """Empty the index and load every frontal template from the store; returns how many."""
        with self._lock:
            retrain = self._stop_retrain()  # a rebuild supersedes it
            if retrain is not None:
                self.engine.set_saving(not self._read_only)  # type: ignore[attr-defined]
            return self._rebuild(store)

    def _rebuild(self, store: GalleryStore) -> int:
        top = store.max_template_seq()
        stream = getattr(self.engine, "load_stream", None)
        if stream is not None:  # chunk by chunk: a county gallery is not held twice in memory
            total = len(store.template_seqs(pose=POSE, dim=DIM, model=self.model))
            loaded = stream(total, lambda: self._chunks(store))  # two passes: see FaissEngine.load_stream
            self.engine.checkpoint(max(top, self.engine.watermark), force=True)
            return int(loaded)
        chunks = list(self._chunks(store))
        ids = np.concatenate([c[0] for c in chunks]) if chunks else np.empty(0, dtype=np.int64)
        vecs = np.concatenate([c[1] for c in chunks]) if chunks else np.empty((0, DIM), dtype=np.float32)
        bulk = getattr(self.engine, "bulk_load", None)
        if bulk is not None:
            bulk(ids, vecs)
        else:  # pragma: no cover - every engine has bulk_load or load_stream
            self.engine.clear()
            self.engine.add(ids, vecs)
        self.engine.checkpoint(top, force=True)
        return int(ids.size)

    def _chunks(self, store: GalleryStore) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        after = 0
        while rows := self._feed(store, after, limit=50_000):
            yield _vectors(rows)
            after = rows[-1].seq

    def verify(self, store: GalleryStore) -> VerifyReport:
        with self._lock:
            stored = np.array(store.template_seqs(pose=POSE, dim=DIM, model=self.model), dtype=np.int64)
            indexed = self.engine.ids()
        return VerifyReport(
            stored=int(stored.size),
            indexed=int(indexed.size),
            missing=[int(v) for v in np.setdiff1d(stored, indexed, assume_unique=True)],
            extra=[int(v) for v in np.setdiff1d(indexed, stored, assume_unique=True)],
        )

    def status(self, store: GalleryStore) -> dict[str, Any]:
        with self._lock:
            info = dict(self.engine.describe())
            info["retraining"] = self.retraining
        top = store.max_template_seq()
        info.update(store_sequence=top, behind=max(0, top - int(info["watermark"])))  # type: ignore[call-overload]
        return info

    def search(
        self,
        store: GalleryStore,
        query: object,
        *,
        k: int = 10,
        threshold: float | None = None,
        exclude_record: str | None = None,
    ) -> SearchResult:
        """The ``k`` nearest stored records to ``query`` (at or below ``threshold``), nearest first."""
        start = time.perf_counter()
        q = as_vectors(query)
        want = k + (1 if exclude_record else 0)
        fetch = want
        while True:
            with self._lock:
                hits = self.engine.search(q, fetch)
                searched = self.engine.count()
            owners = store.template_owners([h.id for h in hits])
            candidates = [
                Candidate(o.record_id, o.booking_number, o.ori, o.station, o.captured_at, o.pose, h.distance)
                for h in hits
                if (o := owners.get(h.id)) is not None and o.record_id != exclude_record
                and (threshold is None or h.distance <= threshold)
            ]
            stale = len(hits) - len(owners)
            if not stale or len(hits) < fetch or len(candidates) >= k or fetch > 8 * want:
                break
            log.warning("search index holds %d template(s) the store no longer has; run index verify", stale)
            fetch *= 4
        return SearchResult(candidates[:k], searched, (time.perf_counter() - start) * 1000)

    def close(self) -> None:
        """Stop a retrain (its thread is waited for) and close the engine. When the spare already wrote the
        index file, the old engine is not saved over it: either file is whole, and the next start catches up."""
        with self._lock:
            retrain = self._stop_retrain()
            if retrain is not None and not retrain.saved:
                self.engine.set_saving(not self._read_only)  # type: ignore[attr-defined]
            self.engine.close()


def open_engine(settings: SearchSettings, db_url: str, *, read_only: bool = False) -> SearchEngine:
    """The engine ``settings`` name, for the gallery at ``db_url``; ``read_only`` (FAISS): never write the
    index file, for a command that runs beside the worker that owns it."""
    if settings.engine == "pgvector":
        from sync.county.search.pgvector_engine import PgvectorEngine, PgvectorSettings

        return PgvectorEngine(PgvectorSettings(
            url=settings.database_url(db_url), schema=settings.schema, method=settings.method, m=settings.m,
            ef_construction=settings.ef_construction, ef_search=settings.ef_search, probes=settings.probes,
            rerank=settings.rerank))
    from sync.county.search.faiss_engine import FaissEngine, FaissSettings

    return FaissEngine(FaissSettings(
        folder=settings.index_folder(db_url), ivf_threshold=settings.ivf_threshold, nprobe=settings.nprobe,
        rerank=settings.rerank, save_interval=settings.save_interval, threads=settings.threads,
        read_only=read_only, retrain_growth=float(settings.retrain_growth)))


def open_index(settings: SearchSettings, db_url: str, *, read_only: bool = False,
               background_retrain: bool = False) -> SearchIndex:
    """The index ``settings`` name; ``background_retrain`` for a long-running worker (see the module docstring):
    a command that runs once and exits retrains in line, as before."""
    return SearchIndex(open_engine(settings, db_url, read_only=read_only), model=settings.model,
                       background_retrain=background_retrain)
