"""The embedded engine: FAISS in the gallery worker's own process, persisted as one file in the index folder.

One query at a time runs on one thread by default (``threads``): a single query gains little from OpenMP,
and OpenMP threads spinning for a core on a busy two-core server made a 100 k exact search five times
slower (23 ms on one thread, 110-130 ms on two, measured beside other work). Training uses every core.

Small galleries get exact search (``IndexFlatL2`` behind ``IndexIDMap2``): every template is compared,
which below 50,000 templates stays under about 10 ms (100 k: 17-24 ms). From ``ivf_threshold`` templates on,
an inverted file (``IndexIVFFlat``, about ``4 * sqrt(N)`` lists up to 4,096: :meth:`FaissSettings.lists_for`;
``nprobe`` of them scanned per query) keeps
a query to a small share of the gallery; the lists hold the float32 vectors themselves, and a short list
of ``rerank`` candidates is re-ranked exactly (float64) against them, so distances are exact and only the
choice of lists is approximate. The inverted file is retrained when the gallery has grown ``retrain_growth``
(4) times since it was trained (the lists would otherwise grow long and slow), until it has the most lists
it may have; inside the engine that
blocks the caller for the whole training, so the gallery worker's index (``defer_retrain``) asks
:meth:`FaissEngine.retrain_due` instead and builds a :meth:`FaissEngine.spare` beside it
(:mod:`sync.county.search.index`). Its lists are kept close to the size of
what they hold (:mod:`sync.county.search.ivf_lists`), so the index costs about 1.1-1.25 times its vectors.

Persistence: one file, ``faiss.index``, written atomically (temporary file, fsync, rename) with the
watermark and the id list inside it, so the three can never disagree; it is written and read as a
stream, never held in memory beside the index. Saving a large index costs
seconds (1 M templates: a 0.5 GB file, 8 s on a busy 2-core machine), so :meth:`FaissEngine.checkpoint`
saves at most every ``save_interval`` seconds (and on ``force``/close); after a crash the index reloads
its last save and the caller catches up from the store from that watermark.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from sync.county.search.engine import DIM, Hit, SearchEngine, SearchEngineError, as_ids, as_vectors, exact_hits
from sync.county.search.ivf_lists import ListCapacity, release_free_memory
from sync.protocol.files import write_file_atomic_stream

MAGIC = b"BGFAISS1"
INDEX_FILE = "faiss.index"
FILE_MODE = 0o600  # templates are biometric data
MAX_LISTS = 4096  # the cap on the inverted file's lists: see FaissSettings.lists_for
BULK = 4096  # templates in one add from which they are assigned to their lists on every core

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]
Progress = Callable[[str, int], None]


@contextlib.contextmanager
def every_core() -> Iterator[None]:
    """FAISS on every core for a bulk step (training, assigning a batch to lists), then back to the setting
    for queries: a single query gains little from OpenMP threads, a batch of thousands scales with cores."""
    searching = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(searching)


def add_assigned(index: faiss.IndexIVF, vectors: np.ndarray, ids: np.ndarray, assigned: np.ndarray) -> None:
    """Add ``vectors`` to the lists already chosen for them (``assigned``): FAISS's own ``add_with_ids``
    would search the coarse quantizer a second time, which at county scale is most of the build."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = np.ascontiguousarray(ids, dtype=np.int64)
    lists = np.ascontiguousarray(assigned, dtype=np.int64)  # held here: swig_ptr keeps no reference
    index.add_core(int(keys.size), faiss.swig_ptr(vecs), faiss.swig_ptr(keys), faiss.swig_ptr(lists))


def _first_rows(chunks: Chunks, wanted: int) -> np.ndarray:
    """The first ``wanted`` templates of ``chunks`` (the training sample of a streamed load)."""
    held, count = [], 0
    for _, vecs in chunks:
        held.append(as_vectors(vecs)[: wanted - count])
        count += held[-1].shape[0]
        if count >= wanted:
            break
    return np.concatenate(held) if held else np.empty((0, DIM), dtype=np.float32)


@dataclass(frozen=True)
class FaissSettings:
    """Where the index lives and how it searches (``[search]`` of county.toml)."""

    folder: Path
    ivf_threshold: int = 50_000
    nprobe: int = 64
    rerank: int = 64
    save_interval: float = 300.0
    threads: int = 1  # for queries; 0: FAISS's default (every core). Training always uses every core.
    read_only: bool = False  # a command beside the running worker: catch up in memory, never write the file
    retrain_growth: float = 4.0  # retrain the inverted file once the gallery is this many times its trained size

    def lists_for(self, count: int) -> int:
        """The inverted file's list count for ``count`` templates (the one place it is decided): about
        ``4 * sqrt(N)`` (FAISS's advice), at least 39 templates per list for k-means, at most
        ``MAX_LISTS``. The cap is what makes a county gallery buildable: training and assigning every
        template to its list cost ``N x lists``, so ``4 * sqrt(N)`` lists (15,500 at 15 M) would take hours
        on two cores, while a query only grows with the templates it scans (``N * nprobe / lists``). At
        15 M, 4,096 lists hold about 3,700 templates each; measured with ``make bench-scale`` (README):
        the build in well under an hour and nprobe 64 far below the 50 ms target."""
        return max(16, min(int(4 * math.sqrt(max(count, 1))), count // 39, MAX_LISTS))


class FaissEngine(SearchEngine):
    """See the module docstring."""

    name = "faiss"

    def __init__(self, settings: FaissSettings, *, load: bool = True) -> None:
        self.settings = settings
        #: True: :meth:`add` never retrains; whoever owns the engine watches :meth:`retrain_due` instead.
        self.defer_retrain = False
        if settings.threads > 0:
            faiss.omp_set_num_threads(settings.threads)
        self.path = Path(settings.folder) / INDEX_FILE
        self._watermark = 0
        self._trained_at = 0
        self._idbuf = np.empty(0, dtype=np.int64)  # sorted ids in the first _count places, room after
        self._count = 0
        self._index: faiss.Index = self._new_flat()
        self._lists: ListCapacity | None = None  # the inverted file's list capacities (None: exact search)
        self._dirty = False
        self._saved_at = time.monotonic()
        if load and self.path.exists():
            self._load()

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def _new_flat() -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatL2(DIM))

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self._index, faiss.IndexIVFFlat) else "flat"

    def _load(self) -> None:
        try:
            with self.path.open("rb") as file:  # streamed: the file is never held in memory beside the index
                if file.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not a gallery search index")
                (head_len,) = struct.unpack("<Q", file.read(8))
                head = json.loads(file.read(head_len))
                count = int(head["count"])
                ids = np.frombuffer(file.read(8 * count), dtype="<i8", count=count).astype(np.int64)
                index = faiss.read_index(faiss.PyCallbackIOReader(file.read))
        except (OSError, ValueError, KeyError, RuntimeError, struct.error) as exc:
            raise SearchEngineError(f"cannot read the search index {self.path}: {exc} (rebuild it: "
                                    "booking-gallery index rebuild)") from None
        if index.ntotal != count or index.d != DIM:
            raise SearchEngineError(f"the search index {self.path} is inconsistent (rebuild it)")
        if isinstance(index, faiss.IndexIVFFlat):
            index.nprobe = self.settings.nprobe
        self._index = index
        self._lists = ListCapacity(index) if isinstance(index, faiss.IndexIVFFlat) else None
        self._set_ids(ids)
        self._watermark = int(head["watermark"])
        self._trained_at = int(head.get("trained_at", 0))

    def _save(self) -> None:
        head = json.dumps({"watermark": self._watermark, "count": int(self._ids.size), "kind": self.kind,
                           "trained_at": self._trained_at}).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)

        def write(file: BinaryIO) -> None:  # streamed: no second copy of the index in memory while saving
            file.write(b"".join((MAGIC, struct.pack("<Q", len(head)), head)))
            file.write(self._ids.astype("<i8").tobytes())
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(file.write))

        write_file_atomic_stream(self.path, write, FILE_MODE)
        self._dirty = False
        self._saved_at = time.monotonic()

    # ------------------------------------------------------------------ ids
    @property
    def _ids(self) -> np.ndarray:
        return self._idbuf[: self._count]

    def _set_ids(self, ids: np.ndarray) -> None:
        self._idbuf = np.ascontiguousarray(ids, dtype=np.int64).copy()
        self._count = int(self._idbuf.size)

    def _append_ids(self, keys: np.ndarray) -> None:
        """Append ascending ids above every held one in amortised O(len(keys)): a worker adds one template
        per record, and copying 15 M ids each time would cost more than the add itself."""
        end = self._count + keys.size
        if end > self._idbuf.size:
            grown = np.empty(max(end, 2 * self._idbuf.size, 1024), dtype=np.int64)
            grown[: self._count] = self._ids
            self._idbuf = grown
        self._idbuf[self._count : end] = keys
        self._count = end

    # ------------------------------------------------------------------ contract
    def _contains(self, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self._ids, ids)
        found = np.zeros(ids.size, dtype=bool)
        inside = pos < self._ids.size
        found[inside] = self._ids[pos[inside]] == ids[inside]
        return found

    def _fresh(self, ids: object, vectors: object) -> tuple[np.ndarray, np.ndarray]:
        """The templates of an add not held yet, by ascending id (an id given twice: its first template)."""
        vecs = as_vectors(vectors)
        keys = as_ids(ids, vecs.shape[0])
        keys, first = np.unique(keys, return_index=True)
        fresh = ~self._contains(keys)
        return keys[fresh], vecs[first[fresh]]

    def _assign(self, vecs: np.ndarray) -> np.ndarray:
        """The inverted lists ``vecs`` belong to (a batch on every core, one record on the query threads)."""
        assert self._lists is not None
        with every_core() if vecs.shape[0] >= BULK else contextlib.nullcontext():
            return self._lists.assign(vecs)

    def _took(self, keys: np.ndarray) -> None:
        """Follow ``keys`` just added to the index in the sorted id list."""
        if self._count and keys[0] < self._ids[-1]:
            self._set_ids(np.sort(np.concatenate((self._ids, keys))))
        else:
            self._append_ids(keys)
        self._dirty = True

    def add(self, ids: object, vectors: object) -> int:
        keys, vecs = self._fresh(ids, vectors)
        if not keys.size:
            return 0
        if self._lists is None:
            self._index.add_with_ids(vecs, keys)
        else:
            assigned = self._assign(vecs)
            self._lists.adding(assigned)
            add_assigned(self._index, vecs, keys, assigned)
            self._lists.added(assigned)
        self._took(keys)
        self._maybe_retrain()
        return int(keys.size)

    def remove(self, ids: object) -> int:
        keys = as_ids(ids)
        keys = np.unique(keys[self._contains(keys)])
        if not keys.size:
            return 0
        self._index.remove_ids(keys)
        if self._lists is not None:
            self._lists.removed()
        self._set_ids(self._ids[~np.isin(self._ids, keys)])
        self._dirty = True
        return int(keys.size)

    def search(self, query: object, k: int) -> list[Hit]:
        q = as_vectors(query)
        if q.shape[0] != 1:
            raise SearchEngineError("search takes one template")
        if k <= 0 or self._ids.size == 0:
            return []
        wanted = min(max(k, self.settings.rerank), int(self._ids.size))
        _, found = self._index.search(q, wanted)
        keys = found[0][found[0] >= 0]
        if not keys.size:
            return []
        return exact_hits(q[0], keys, self._index.reconstruct_batch(keys), k)

    def count(self) -> int:
        return int(self._ids.size)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def watermark(self) -> int:
        return self._watermark

    def checkpoint(self, watermark: int, *, force: bool = False) -> bool:
        if watermark != self._watermark:
            self._watermark = int(watermark)
            self._dirty = True
        due = time.monotonic() - self._saved_at >= self.settings.save_interval
        if self._dirty and not self.settings.read_only and (force or due or not self.path.exists()):
            self._save()
            return True
        return False

    def clear(self) -> None:
        self._index, self._lists = self._new_flat(), None
        release_free_memory()
        self._set_ids(np.empty(0, dtype=np.int64))
        self._watermark = 0
        self._trained_at = 0
        self._dirty = True

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(kind=self.kind, file=str(self.path))
        if isinstance(self._index, faiss.IndexIVFFlat):
            info.update(lists=int(self._index.nlist), nprobe=int(self._index.nprobe))
        return info

    def close(self) -> None:
        if self._dirty and not self.settings.read_only:
            self._save()

    # ------------------------------------------------------------------ flat -> inverted file
    def _all_vectors(self) -> np.ndarray:
        return self._index.reconstruct_batch(self._ids)

    def _maybe_retrain(self) -> None:
        """Retrain inline when due, except in the worker's index, which builds a spare beside it instead."""
        if self.defer_retrain or not self.retrain_due():
            return
        self.train(self._all_vectors(), self._ids)

    def retrain_due(self) -> bool:
        """True when the index should become an inverted file, or its lists be trained anew (grown
        ``retrain_growth`` times since they were trained), unless it already has the lists that size calls
        for (at the cap): a retraining reads every vector back beside the index, twice the memory for a
        county gallery, and would buy no shorter lists."""
        count = int(self._ids.size)
        if count < self.settings.ivf_threshold:
            return False
        if self.kind != "ivf":
            return True
        return (count >= self.settings.retrain_growth * self._trained_at
                and self.settings.lists_for(count) > int(self._index.nlist))

    def spare(self) -> FaissEngine:
        """An empty engine with these settings that has not read the index file and will not write it until
        :meth:`set_saving` allows: a retrain builds into it beside this one, then takes this one's place."""
        return FaissEngine(replace(self.settings, read_only=True), load=False)

    def set_saving(self, on: bool) -> None:
        """Let :meth:`checkpoint` and :meth:`close` write the index file, or not (while a spare is being built,
        only the spare writes it, once, whole)."""
        self.settings = replace(self.settings, read_only=not on)

    def train(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Replace the index by an inverted file trained on ``vectors`` (every one of them then added)."""
        lists = self.settings.lists_for(ids.size)
        sample = vectors
        if vectors.shape[0] > 64 * lists:
            pick = np.random.default_rng(0).choice(vectors.shape[0], 64 * lists, replace=False)
            sample = vectors[np.sort(pick)]
        index = self._new_ivf(sample, lists)
        lists = ListCapacity(index)
        with every_core():
            assigned = lists.assign(vectors)
        lists.adding(assigned)  # every list sized for its templates before they come: no doubling
        add_assigned(index, vectors, ids, assigned)
        lists.added(assigned)
        self._index, self._lists, self._trained_at, self._dirty = index, lists, int(ids.size), True
        release_free_memory()

    def _new_ivf(self, sample: np.ndarray, lists: int) -> faiss.IndexIVFFlat:
        """An empty inverted file with ``lists`` lists trained on ``sample``, reconstructable by id (the
        re-ranking reads the stored vectors back)."""
        quantizer = faiss.IndexFlatL2(DIM)
        index = faiss.IndexIVFFlat(quantizer, DIM, lists, faiss.METRIC_L2)
        index.own_fields = True
        quantizer.this.disown()
        with every_core():
            index.train(np.ascontiguousarray(sample))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.nprobe = self.settings.nprobe
        return index

    def prepare_ivf(self, sample: object, expected: int) -> None:
        """Empty the engine and train an inverted file for about ``expected`` templates on ``sample``, for a
        gallery loaded in pieces (too large to hold twice in memory); then :meth:`add` the pieces."""
        vecs = as_vectors(sample)
        self.clear()
        lists = self.settings.lists_for(expected)
        self._index, self._trained_at = self._new_ivf(vecs[: 64 * lists], lists), int(expected)
        self._lists = ListCapacity(self._index)

    def set_nprobe(self, nprobe: int) -> None:
        """Lists scanned per query from now on (benchmarks compare several on one trained index)."""
        if isinstance(self._index, faiss.IndexIVFFlat):
            self._index.nprobe = int(nprobe)

    def bulk_load(self, ids: object, vectors: object) -> None:
        """Empty the engine and load a whole gallery at once (rebuild, benchmarks): one training pass."""
        vecs = as_vectors(vectors)
        keys = as_ids(ids, vecs.shape[0])
        order = np.argsort(keys, kind="stable")
        keys, vecs = keys[order], vecs[order]
        self.clear()
        if keys.size >= self.settings.ivf_threshold:
            self._set_ids(keys)
            self.train(vecs, keys)
        else:
            self.add(keys, vecs)

    def load_stream(self, total: int, chunks: Chunks | Callable[[], Chunks], progress: Progress | None = None) -> int:
        """Empty the engine and load about ``total`` templates arriving in ascending-id ``chunks`` (a rebuild
        from the store), holding at most a training sample beside the index: loading a whole county
        gallery at once would need it two or three times over. The inverted file is trained on the first
        templates (64 per list), which the store gives in the order they were booked. Given a function
        that reads the chunks again, the load takes two passes (:meth:`_load_twice`: each template assigned
        to its list once, every list sized once); given the chunks, one pass whose lists grow as they fill.
        ``progress(stage, templates)`` hears of every chunk. Returns how many."""
        self.clear()
        if total < self.settings.ivf_threshold:
            return sum(self.add(ids, vecs) for ids, vecs in (chunks() if callable(chunks) else chunks))
        if callable(chunks):
            return self._load_twice(total, chunks, progress or (lambda stage, done: None))
        wanted = 64 * self.settings.lists_for(total)
        held: list[tuple[np.ndarray, np.ndarray]] = []
        loaded, stream = 0, iter(chunks)
        for ids, vecs in stream:
            held.append((ids, vecs))
            if sum(v.shape[0] for _, v in held) >= wanted:
                break
        if held:
            self.prepare_ivf(np.concatenate([v for _, v in held])[:wanted], total)
        while held:  # the sample's chunks first, each let go once added
            loaded += self.add(*held.pop(0))
        for ids, vecs in stream:
            loaded += self.add(ids, vecs)
            if progress is not None:
                progress("added", loaded)
        return loaded

    def _load_twice(self, total: int, chunks: Callable[[], Chunks], progress: Progress) -> int:
        """A streamed load in two passes: the first assigns every template to its list (12 bytes each
        kept: id and list), then every list is allocated once for what it will hold (plus the usual
        headroom), and the second adds the templates to the lists chosen for them. Templates the second
        pass meets that the first did not (booked meanwhile) are assigned then. In one pass the lists
        would be rebuilt each time they outgrow their headroom (dozens of times on the way to 15 M,
        copying the gallery each time), and FAISS's own add assigns every template a second time."""
        self.prepare_ivf(_first_rows(chunks(), 64 * self.settings.lists_for(total)), total)
        lists = self._lists
        assert lists is not None
        seen_ids, seen_lists, done = [], [], 0
        for ids, vecs in chunks():
            keys, fresh = self._fresh(ids, vecs)
            seen_ids.append(keys)
            seen_lists.append(self._assign(fresh).astype(np.int32))
            done += keys.size
            progress("assigned", done)
        known = np.concatenate(seen_ids) if seen_ids else np.empty(0, dtype=np.int64)
        order = np.argsort(known, kind="stable")
        known, chosen = known[order], np.concatenate(seen_lists)[order] if seen_lists else np.empty(0, np.int32)
        del seen_ids, seen_lists, order
        lists.rebuild(np.bincount(chosen, minlength=lists.size.size))  # each list allocated once
        loaded = 0
        for ids, vecs in chunks():
            keys, fresh = self._fresh(ids, vecs)
            if not keys.size:
                continue
            at = np.minimum(np.searchsorted(known, keys), max(known.size - 1, 0))
            hit = known[at] == keys if known.size else np.zeros(keys.size, dtype=bool)
            assigned = np.where(hit, chosen[at] if known.size else 0, -1).astype(np.int64)
            if not hit.all():
                assigned[~hit] = self._assign(fresh[~hit])
            add_assigned(self._index, fresh, keys, assigned)
            lists.follow(assigned)
            self._took(keys)
            loaded += keys.size
            progress("added", loaded)
        lists.added(np.empty(0, dtype=np.int64))  # trims the lists if fewer came than were counted
        release_free_memory()
        return loaded
