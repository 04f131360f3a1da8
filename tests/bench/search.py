"""Face search at county scale (`make bench`: 100 k templates; `make bench-scale`: 1 M and 15 M).

For one synthetic gallery (``tests/bench/search_data.py``: fitted to real dlib templates) and one set of
mated probes (a second capture of a random gallery identity), in the same run:

* numpy exact search (one query at a time: ``|x|^2 - 2 x.q`` over the whole gallery, argpartition), the
  reference for the hit rates and the floor for latency;
* FAISS through :class:`~sync.county.search.faiss_engine.FaissEngine` as the gallery worker runs it
  (exact below its threshold; an inverted file with ``4 * sqrt(N)`` lists, at most 4,096, above it, at several nprobe),
  including the exact re-ranking;
* pgvector HNSW through :class:`~sync.county.search.pgvector_engine.PgvectorEngine` in a private
  PostgreSQL (100 k only by default: its graph build is the slow part).

Reported per engine: query latency p50 (the median column) and p99, mated hit rate at rank 1 and 10 next
to exact search's, build time, memory added by the index (resident set growth), and the ingest rate with
the index maintained (single-template adds into the built index, as the worker does per record).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tests.bench import Result
from tests.bench.search_data import CHUNK, DIM, GalleryModel, chunk_sizes, mated_probes, real_distances

GROUP = "search"
PROBES = 1000


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory of this process (``VmHWM``: its peak since :func:`reset_peak`), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Start ``VmHWM`` again from the current resident set (Linux: writing 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _label(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 else f"{n // 1000} k"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), float(np.percentile(samples, 99))


def say(text: str) -> None:
    """A progress line (a 15 M run takes most of an hour: the log shows where it is)."""
    print(f"  {time.strftime('%H:%M:%S')} {text} (resident {rss_mib() / 1024:.1f} GiB)", flush=True)


class Gallery:
    """The generated gallery: held in memory up to ``hold`` templates; beyond that, generated once into a
    scratch file in ``folder`` and read back chunk by chunk, so the exact reference and the index build
    stream it instead of holding a second copy (15 M: 7.2 GiB). The file is read with plain reads, not a
    memory map: mapped pages would count in this process's resident set, which the memory figures measure.
    :meth:`close` deletes it."""

    def __init__(self, model: GalleryModel, n: int, hold: int = 2_000_000, folder: Path | None = None) -> None:
        self.model, self.n = model, n
        self.sizes = chunk_sizes(n)
        self.matrix = np.concatenate([model.chunk(c, s) for c, s in enumerate(self.sizes)]) if n <= hold else None
        self.path: Path | None = None
        if self.matrix is None:
            self.path = Path(folder or tempfile.gettempdir()) / f"bench-gallery-{n}-{model.seed}.f32"
            with self.path.open("wb") as file:
                for c, size in enumerate(self.sizes):
                    file.write(model.chunk(c, size).tobytes())
                    if c % 20 == 19 or c == len(self.sizes) - 1:
                        say(f"generated {c * CHUNK + size:,} of {n:,} templates into {self.path.name}")

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with contextlib.ExitStack() as stack:
            file = stack.enter_context(self.path.open("rb")) if self.path is not None else None
            for c, size in enumerate(self.sizes):
                ids = np.arange(c * CHUNK + 1, c * CHUNK + size + 1, dtype=np.int64)
                if file is not None:
                    vecs = np.fromfile(file, dtype=np.float32, count=size * DIM).reshape(size, DIM)
                else:
                    assert self.matrix is not None
                    vecs = self.matrix[c * CHUNK : c * CHUNK + size]
                yield ids, vecs

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def exact_reference(gallery: Gallery, probes: np.ndarray, k: int = 10) -> np.ndarray:
    """Top-``k`` ids per probe by exact float64-checked L2 (batched over chunks)."""
    best_d = np.full((probes.shape[0], 0), np.inf)
    best_i = np.zeros((probes.shape[0], 0), dtype=np.int64)
    pq = (probes.astype(np.float64) ** 2).sum(1)[:, None]
    for c, (ids, vecs) in enumerate(gallery.chunks()):
        if gallery.path is not None and c % 20 == 19:
            say(f"exact reference: {ids[-1]:,} templates searched")
        d = pq + (vecs.astype(np.float64) ** 2).sum(1)[None, :] - 2 * probes.astype(np.float64) @ vecs.T.astype(
            np.float64)
        part = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k]
        best_d = np.concatenate((best_d, np.take_along_axis(d, part, 1)), axis=1)
        best_i = np.concatenate((best_i, ids[part]), axis=1)
        order = np.argsort(best_d, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def numpy_latency(gallery: Gallery, probes: np.ndarray, count: int) -> list[float]:
    """One query at a time, as a search command would run exact search without an index."""
    samples = []
    norms = None if gallery.matrix is None else (gallery.matrix.astype(np.float32) ** 2).sum(1)
    for q in probes[:count]:
        t0 = time.perf_counter()
        if gallery.matrix is not None:
            d = norms - 2 * (gallery.matrix @ q)
            top = np.argpartition(d, 10)[:10]
            top[np.argsort(d[top])]
        else:
            for _, vecs in gallery.chunks():
                d = (vecs**2).sum(1) - 2 * (vecs @ q)
                np.argpartition(d, 10)[:10]
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def hit_rates(found: list[list[int]], mates: np.ndarray) -> tuple[float, float]:
    r1 = np.mean([bool(f) and f[0] == m for f, m in zip(found, mates, strict=True)])
    r10 = np.mean([m in f[:10] for f, m in zip(found, mates, strict=True)])
    return float(r1), float(r10)


def timed_search(search: Callable[[np.ndarray], list[int]], probes: np.ndarray) -> tuple[list[list[int]], list[float]]:
    found, samples = [], []
    for q in probes[:3]:
        search(q)  # warm-up
    for q in probes:
        t0 = time.perf_counter()
        found.append(search(q))
        samples.append((time.perf_counter() - t0) * 1000)
    return found, samples


def _row(n: int, stage: str, threads: int, samples: list[float], found: list[list[int]], mates: np.ndarray,
         exact: tuple[float, float], extra: str) -> Result:
    p50, p99 = _percentiles(samples)
    r1, r10 = hit_rates(found, mates)
    note = (f"p99 {p99:.2f} ms; mate rank 1 {100 * r1:.1f}%, top 10 {100 * r10:.1f}% "
            f"(exact {100 * exact[0]:.1f}% / {100 * exact[1]:.1f}%){'; ' + extra if extra else ''}")
    return Result(GROUP, f"{_label(n)} {stage}", threads, p50, "ms", len(samples), note)


def bench_faiss(gallery: Gallery, probes: np.ndarray, mates: np.ndarray, exact: tuple[float, float], threads: int,
                nprobes: tuple[int, ...], folder: Path) -> list[Result]:
    from sync.county.search.faiss_engine import FaissEngine, FaissSettings
    from sync.county.search.ivf_lists import release_free_memory

    n = gallery.n
    results = []
    gc.collect()
    release_free_memory()  # a baseline without freed-but-kept heap pages, which the build would reuse
    before = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    engine = FaissEngine(FaissSettings(folder, threads=threads))
    step = max(n // 15, CHUNK)

    def progress(stage: str, done: int) -> None:
        if done % step < CHUNK or done == n:
            say(f"faiss build: {stage} {done:,} of {n:,} templates ({time.perf_counter() - t0:.0f} s)")

    # as `index rebuild` loads the store: trained on 64 templates per list from the first chunks, then two
    # passes (every template assigned to its list, every list allocated once, then the templates added)
    engine.load_stream(n, gallery.chunks, progress)
    build = time.perf_counter() - t0
    gc.collect()
    memory, peak = rss_mib() - before, rss_mib("VmHWM") - before
    say(f"faiss build done in {build:.0f} s, +{memory / 1024:.2f} GiB; saving")
    t0 = time.perf_counter()
    engine.checkpoint(n, force=True)
    save = time.perf_counter() - t0
    size = (folder / "faiss.index").stat().st_size / 2**20
    peak_gib = (before + peak) / 1024
    kind = engine.kind
    raw = n * DIM * 4 / 2**20
    engine.close()
    del engine
    gc.collect()
    release_free_memory()
    before_load = rss_mib()
    reset_peak()
    t0 = time.perf_counter()
    engine = FaissEngine(FaissSettings(folder, threads=threads))
    load = time.perf_counter() - t0
    loaded, load_peak = rss_mib() - before_load, rss_mib("VmHWM") - before_load
    say(f"saved in {save:.0f} s, reloaded in {load:.0f} s; searching")
    facts = (f"build {build:.1f} s, +{memory:.0f} MiB resident ({memory / raw:.2f}x the {raw:.0f} MiB of vectors; "
             f"peak +{peak:.0f}), file {size:.0f} MiB saved in {save:.1f} s; reloaded in {load:.1f} s: "
             f"+{loaded:.0f} MiB ({loaded / raw:.2f}x; peak +{load_peak:.0f}); process peak {peak_gib:.1f} GiB")

    def search(q: np.ndarray) -> list[int]:
        return [h.id for h in engine.search(q, 10)]

    for nprobe in nprobes if kind == "ivf" else (0,):
        engine.set_nprobe(nprobe)
        found, samples = timed_search(search, probes)
        stage = f"faiss ivf-flat {engine.describe().get('lists')} lists nprobe {nprobe}" if nprobe else "faiss exact"
        results.append(_row(n, stage, threads, samples, found, mates, exact, facts))
        facts = ""
    # ingest with the index maintained: one template per add, as the worker adds each stored record
    fresh = gallery.model.capture(gallery.model.centres(10_000, 500), 0, 10_000)
    t0 = time.perf_counter()
    for i, vec in enumerate(fresh):
        engine.add([n + 1 + i], vec)
    rate = len(fresh) / (time.perf_counter() - t0)
    gc.collect()
    after = rss_mib() - before_load
    results.append(Result(GROUP, f"{_label(n)} faiss {kind}: ingest, one template per add", threads, rate,
                          "/s", len(fresh), "the index kept current per record (saving is separate, see build); "
                          f"then +{after:.0f} MiB resident ({after / raw:.2f}x the vectors)"))
    engine.close()
    return results


def bench_pgvector(gallery: Gallery, probes: np.ndarray, mates: np.ndarray, exact: tuple[float, float],
                   threads: int, ef_searches: tuple[int, ...]) -> list[Result]:
    import pgserver

    from sync.county.search.pgvector_engine import PgvectorEngine, PgvectorSettings

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as folder:
        server = pgserver.get_server(folder, cleanup_mode="stop")
        try:
            engine = PgvectorEngine(PgvectorSettings(server.get_uri(), schema="bench"))
            ids = np.concatenate([i for i, _ in gallery.chunks()])
            vecs = np.concatenate([v for _, v in gallery.chunks()])
            engine._conn.execute(f"SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = {threads}")
            t0 = time.perf_counter()
            engine.bulk_load(ids, vecs)
            build = time.perf_counter() - t0
            facts = f"COPY + HNSW build (m 16, ef_construction 64) {build:.1f} s"
            for ef in ef_searches:
                engine.settings = PgvectorSettings(engine.settings.url, schema="bench", ef_search=ef, rerank=10)
                found, samples = timed_search(lambda q: [h.id for h in engine.search(q, 10)], probes[:300])
                results.append(_row(gallery.n, f"pgvector hnsw ef_search {ef}", threads, samples, found,
                                    mates[:300], exact, facts))
                facts = ""
            fresh = gallery.model.capture(gallery.model.centres(10_001, 200), 0, 10_001)
            t0 = time.perf_counter()
            for i, vec in enumerate(fresh):
                engine.add([gallery.n + 1 + i], vec)
            rate = len(fresh) / (time.perf_counter() - t0)
            results.append(Result(GROUP, f"{_label(gallery.n)} pgvector hnsw: ingest, one template per add", threads,
                                  rate, "/s", len(fresh), "one committed transaction each"))
            engine.drop()
            engine.close()
        finally:
            server.cleanup()
    return results


def _generator_row(gallery: Gallery, probes: np.ndarray, mates: np.ndarray, threads: int) -> Result:
    """The generated distances beside the real ones (the generator's honesty check, every run)."""
    assert gallery.matrix is not None
    n = gallery.n
    genuine = np.linalg.norm(probes[:500] - gallery.matrix[mates[:500] - 1], axis=1)
    impostor = np.linalg.norm(probes[:500] - gallery.matrix[(mates[:500] + n // 2) % n], axis=1)
    real_g, real_i = real_distances()

    def spread(d: np.ndarray) -> str:
        return f"{np.median(d):.2f} ({np.percentile(d, 5):.2f}-{np.percentile(d, 95):.2f})"

    return Result(GROUP, f"{_label(n)} generator: genuine distance median", threads, float(np.median(genuine)), "",
                  genuine.size, f"genuine {spread(genuine)}, impostor {spread(impostor)}; real templates: genuine "
                  f"{spread(real_g)}, impostor {spread(real_i)} (median, 5th-95th percentile)")


def measure(n: int, threads: int, *, nprobes: tuple[int, ...] = (32, 64, 128), pgvector: bool = True,
            ef_searches: tuple[int, ...] = (40, 100), probes_count: int = PROBES,
            scratch: Path | None = None) -> list[Result]:
    import faiss

    faiss.omp_set_num_threads(threads)
    model = GalleryModel.fit()
    gallery = Gallery(model, n, folder=scratch)
    try:
        return _measure(gallery, threads, nprobes, pgvector, ef_searches, probes_count)
    finally:
        gallery.close()


def _measure(gallery: Gallery, threads: int, nprobes: tuple[int, ...], pgvector: bool,
             ef_searches: tuple[int, ...], probes_count: int) -> list[Result]:
    n, model = gallery.n, gallery.model
    probes, mates = mated_probes(model, n, probes_count)
    truth = exact_reference(gallery, probes)
    exact = hit_rates([list(t) for t in truth], mates)
    results = [] if gallery.matrix is None else [_generator_row(gallery, probes, mates, threads)]
    samples = numpy_latency(gallery, probes, 50 if gallery.matrix is not None else 3)
    p50, p99 = _percentiles(samples)
    results.append(Result(GROUP, f"{_label(n)} numpy exact", threads, p50, "ms", len(samples),
                          f"p99 {p99:.2f} ms; mate rank 1 {100 * exact[0]:.1f}%, top 10 {100 * exact[1]:.1f}%; raw "
                          f"vectors {n * DIM * 4 / 2**20:.0f} MiB"
                          f"{'' if gallery.matrix is not None else '; streamed from a scratch file, not held'}"))
    with tempfile.TemporaryDirectory(prefix="bench-faiss-") as folder:
        results += bench_faiss(gallery, probes, mates, exact, threads, nprobes, Path(folder))
    if pgvector:
        results += bench_pgvector(gallery, probes, mates, exact, threads, ef_searches)
    return results


def run(threads: int, repeats: int) -> list[Result]:
    """`make bench`: 100 k templates (the 1 M and 15 M runs are `make bench-scale`)."""
    return measure(100_000, threads, pgvector=threads == 1)  # pgvector once: its client is one thread
