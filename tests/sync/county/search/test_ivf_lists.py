"""The inverted file holds its templates in little more than their own size, built in one go or record by record."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from sync.county.search import faiss_engine
from sync.county.search.engine import exact_hits
from sync.county.search.faiss_engine import MAX_LISTS, FaissEngine, FaissSettings
from sync.county.search.ivf_lists import HEADROOM, grown


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.13, size=(n, 128)) + 0.02).astype(np.float32)


def _address(lists: faiss.ArrayInvertedLists, list_no: int) -> int:
    return int(faiss.rev_swig_ptr(lists.get_codes(list_no), 1).ctypes.data) if lists.list_size(list_no) else 0


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_lists_are_trimmed_after_a_build_and_faiss_never_reallocates_a_reserved_one(tmp_path: Path) -> None:
    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=256))
    base = _vectors(5000, 1)
    engine.bulk_load(np.arange(1, 5001), base)
    cap = engine._lists
    assert engine.kind == "ivf" and cap is not None
    sizes = cap.sizes()
    assert np.array_equal(cap.capacity, sizes + sizes // HEADROOM)
    fresh = _vectors(300, 2)
    rebuilt = 0
    for i, vec in enumerate(fresh):  # one record at a time, as the gallery worker adds them
        lists_before = int(cap.index.invlists.this)
        before = {n: _address(cap.lists, n) for n in range(cap.lists.nlist)}
        old_capacity = cap.capacity.copy()
        engine.add([10_000 + i], vec)
        assert np.array_equal(cap.size, cap.sizes()) and (cap.size <= cap.capacity).all()
        if int(cap.index.invlists.this) != lists_before:
            rebuilt += 1
            continue
        for n in range(cap.lists.nlist):
            if before[n]:  # FAISS moved a list exactly when the bookkeeping says it outgrew its buffer
                assert (_address(cap.lists, n) != before[n]) == (cap.capacity[n] != old_capacity[n])
    assert cap.capacity.sum() <= 1.125 * cap.size.sum() + cap.size.size
    # the moved lists still hold the right vectors: every fresh template is its own nearest, exactly
    everything = np.concatenate((base, fresh))
    ids = np.concatenate((np.arange(1, 5001), 10_000 + np.arange(300)))
    for i in (0, 150, 299):
        got = engine.search(fresh[i], 3)
        assert [h.id for h in got] == [h.id for h in exact_hits(fresh[i], ids, everything, 3)]
        assert got[0].distance == 0.0
    engine.checkpoint(1, force=True)
    engine.close()
    again = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=256))
    assert again.count() == 5300 and [h.id for h in again.search(fresh[7], 1)] == [10_007]
    assert np.array_equal(again._lists.capacity, again._lists.sizes())  # loaded exactly sized


def test_capacity_follows_the_doubling_of_a_full_list() -> None:
    cap, size, added = np.array([0, 0, 4, 4, 10]), np.array([0, 0, 4, 3, 3]), np.array([0, 1, 1, 1, 20])
    assert grown(cap, size, added).tolist() == [0, 1, 8, 4, 40]


def test_an_inverted_file_costs_less_than_1_3_times_its_vectors(tmp_path: Path) -> None:
    n = 50_000
    vecs = _vectors(n, 3)
    gc.collect()
    before = _rss_mib()
    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000))
    engine.bulk_load(np.arange(1, n + 1), vecs)
    for i, vec in enumerate(_vectors(2000, 4)):
        engine.add([n + 1 + i], vec)
    gc.collect()
    grown = _rss_mib() - before
    raw = (n + 2000) * 128 * 4 / 2**20
    assert engine.kind == "ivf" and engine.count() == n + 2000
    assert grown < 1.3 * raw, f"+{grown:.0f} MiB resident for {raw:.0f} MiB of vectors"



def test_a_streamed_load_trains_on_the_first_chunks_and_holds_every_template(tmp_path: Path) -> None:
    vecs = _vectors(5000, 5)
    ids = np.arange(1, 5001) * 3
    chunks = ((ids[s : s + 700], vecs[s : s + 700]) for s in range(0, 5000, 700))
    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=256))
    engine.add([1], vecs[0])  # whatever was there before is gone
    assert engine.load_stream(5000, chunks) == 5000
    assert engine.kind == "ivf" and np.array_equal(engine.ids(), ids)
    for i in (0, 2500, 4999):
        assert [h.id for h in engine.search(vecs[i], 5)] == [h.id for h in exact_hits(vecs[i], ids, vecs, 5)]
    small = FaissEngine(FaissSettings(tmp_path / "small", ivf_threshold=10_000))
    assert small.load_stream(5000, iter([(ids, vecs)])) == 5000 and small.kind == "flat"


def test_the_list_count_follows_4_sqrt_n_and_stops_at_the_cap(tmp_path: Path) -> None:
    settings = FaissSettings(tmp_path)
    assert settings.lists_for(1_000_000) == 4000  # 4 sqrt(N), as measured at 1 M
    assert settings.lists_for(100_000) == 1264
    assert settings.lists_for(10_000) == 256  # 39 templates per list at least, for k-means
    assert settings.lists_for(2_000_000) == settings.lists_for(15_000_000) == MAX_LISTS  # the build stays N x 4,096


def test_a_two_pass_load_allocates_each_list_once_and_holds_what_the_second_pass_read(tmp_path: Path) -> None:
    vecs = _vectors(6000, 6)
    ids = np.arange(1, 6001) * 2
    passes = []

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The store read twice: between the passes 50 templates are purged and 40 booked."""
        passes.append(len(passes))
        keep = slice(0, 6000) if len(passes) < 3 else slice(50, 6000)
        seen_ids, seen = ids[keep], vecs[keep]
        if len(passes) >= 3:
            seen_ids, seen = np.concatenate((seen_ids, 20_001 + np.arange(40))), np.concatenate((seen, _vectors(40, 7)))
        for s in range(0, seen_ids.size, 900):
            yield seen_ids[s : s + 900], seen[s : s + 900]

    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=256))
    stages: list[str] = []
    addresses: dict[int, int] = {}
    reserved: list[np.ndarray] = []

    def progress(stage: str, done: int) -> None:
        stages.append(stage)
        cap = engine._lists
        if stage == "added" and cap is not None:  # no list moves while the second pass fills them, save one
            reserved.append(cap.capacity.copy())  # that outgrew its room (the templates booked meanwhile)
            for n in range(cap.lists.nlist):
                if cap.lists.list_size(n) and cap.capacity[n] == reserved[0][n]:
                    assert addresses.setdefault(n, _address(cap.lists, n)) == _address(cap.lists, n)

    assert engine.load_stream(6000, chunks, progress) == 5990
    assert len(passes) == 3 and stages.count("assigned") == 7 and stages.count("added") == 7  # sample + 2 passes
    assert (reserved[-1] != reserved[0]).sum() < 10  # nearly every list was allocated once, for good
    assert len(addresses) > 100  # and their buffers were watched
    held = np.concatenate((ids[50:], 20_001 + np.arange(40)))
    assert np.array_equal(engine.ids(), np.sort(held)) and engine.kind == "ivf"
    cap = engine._lists
    assert cap is not None and np.array_equal(cap.size, cap.sizes())
    assert cap.capacity.sum() <= 1.125 * cap.size.sum() + cap.size.size
    everything = np.concatenate((vecs[50:], _vectors(40, 7)))
    for i in (0, 3000, 5949, 5989):  # the templates sit in the lists the quantizer chose: exact at every nprobe
        assert [h.id for h in engine.search(everything[i], 5)] == [h.id for h in exact_hits(everything[i], held,
                                                                                               everything, 5)]


def test_an_add_puts_each_template_in_the_list_its_quantizer_chose(tmp_path: Path) -> None:
    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000))
    engine.bulk_load(np.arange(1, 3001), _vectors(3000, 8))
    fresh = _vectors(5000, 9)  # above BULK: assigned on every core, then added without a second assignment
    engine.add(np.arange(10_001, 15_001), fresh)
    index = engine._index
    _, chosen = index.quantizer.search(fresh, 1)
    lists = faiss.downcast_InvertedLists(index.invlists)
    where = {int(i): n for n in range(lists.nlist) for i in faiss.rev_swig_ptr(lists.get_ids(n), lists.list_size(n))}
    assert [where[10_001 + i] for i in range(5000)] == chosen.ravel().tolist()
    assert engine.count() == 8000 and index.ntotal == 8000


def test_an_inverted_file_at_the_list_cap_is_not_retrained_as_the_gallery_grows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss_engine, "MAX_LISTS", 20)
    engine = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=20))
    vecs = _vectors(10_000, 10)
    engine.bulk_load(np.arange(1, 2001), vecs[:2000])
    index = engine._index
    assert engine.kind == "ivf" and index.nlist == 20
    engine.add(np.arange(2001, 10_001), vecs[2000:])  # fourfold and more: no retraining, no second copy
    assert engine._index is index and engine._trained_at == 2000 and engine.count() == 10_000
    assert [h.id for h in engine.search(vecs[9000], 1)] == [9001]
    uncapped = FaissEngine(FaissSettings(tmp_path / "b", ivf_threshold=1000))
    monkeypatch.setattr(faiss_engine, "MAX_LISTS", 4096)
    uncapped.bulk_load(np.arange(1, 2001), vecs[:2000])
    uncapped.add(np.arange(2001, 10_001), vecs[2000:])  # below the cap, a fourfold gallery gets more lists
    assert uncapped._trained_at == 10_000 and uncapped._index.nlist == 256
