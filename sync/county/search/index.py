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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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


class SearchIndex:
    """A :class:`SearchEngine` kept in step with a :class:`GalleryStore` (see the module docstring)."""

    def __init__(self, engine: SearchEngine, *, model: str | None = None) -> None:
        self.engine = engine
        self.model = model

    def _feed(self, store: GalleryStore, after: int, limit: int = BATCH) -> list[SequencedTemplate]:
        return store.templates_after(after, limit=limit, pose=POSE, dim=DIM, model=self.model)

    def catch_up(self, store: GalleryStore) -> int:
        """Add every frontal template stored since the watermark; returns how many were new."""
        watermark = self.engine.watermark
        after = watermark if isinstance(store, SQLiteStore) else max(0, watermark - PG_OVERLAP)
        added = 0
        while rows := self._feed(store, after):
            ids, vecs = _vectors(rows)
            added += self.engine.add(ids, vecs)
            after = rows[-1].seq
            watermark = max(watermark, after)
            self.engine.checkpoint(watermark)
        top = store.max_template_seq()  # templates of other poses move the watermark too
        if top > watermark:
            watermark = top
            self.engine.checkpoint(watermark)
        return added

    def reconcile(self, store: GalleryStore) -> tuple[int, int]:
        """Catch up, then drop what the store no longer holds: (added, removed). For a worker's start."""
        added = self.catch_up(store)
        report = self.verify(store)
        removed = self.engine.remove(report.extra) if report.extra else 0
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
        seqs = store.record_template_seqs(record_id)
        removed = self.engine.remove(seqs) if seqs else self.reconcile(store)[1]
        self.engine.checkpoint(self.engine.watermark, force=True)
        return removed

    def rebuild(self, store: GalleryStore) -> int:
        """Empty the index and load every frontal template from the store; returns how many."""
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
        stored = np.array(store.template_seqs(pose=POSE, dim=DIM, model=self.model), dtype=np.int64)
        indexed = self.engine.ids()
        return VerifyReport(
            stored=int(stored.size),
            indexed=int(indexed.size),
            missing=[int(v) for v in np.setdiff1d(stored, indexed, assume_unique=True)],
            extra=[int(v) for v in np.setdiff1d(indexed, stored, assume_unique=True)],
        )

    def status(self, store: GalleryStore) -> dict[str, Any]:
        info = dict(self.engine.describe())
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
            hits = self.engine.search(q, fetch)
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
        return SearchResult(candidates[:k], self.engine.count(), (time.perf_counter() - start) * 1000)

    def close(self) -> None:
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
        read_only=read_only))


def open_index(settings: SearchSettings, db_url: str, *, read_only: bool = False) -> SearchIndex:
    return SearchIndex(open_engine(settings, db_url, read_only=read_only), model=settings.model)
