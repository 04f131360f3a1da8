"""One contract, every engine: FAISS exact, FAISS inverted file, pgvector HNSW (and IVFFlat after a bulk load)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sync.county.search.engine import SearchEngine, SearchEngineError
from sync.county.search.faiss_engine import FaissEngine, FaissSettings

N = 1200


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest, schema: str) -> SearchEngine:
    if kind == "faiss-flat":
        return FaissEngine(FaissSettings(tmp_path / "idx", ivf_threshold=10**9))
    if kind == "faiss-ivf":
        return FaissEngine(FaissSettings(tmp_path / "idx", ivf_threshold=1000, nprobe=16))
    from sync.county.search.pgvector_engine import PgvectorEngine, PgvectorSettings

    method = "ivfflat" if kind == "pgvector-ivfflat" else "hnsw"
    return PgvectorEngine(PgvectorSettings(request.getfixturevalue("pg_uri"), schema=schema, method=method))


@pytest.fixture(params=["faiss-flat", "faiss-ivf", "pgvector-hnsw"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SearchEngine, object]]:
    schema = f"c_{uuid.uuid4().hex[:10]}"
    opened: list[SearchEngine] = []

    def reopen() -> SearchEngine:
        e = _open(request.param, tmp_path, request, schema)
        opened.append(e)
        return e

    yield reopen(), reopen
    if hasattr(opened[-1], "drop"):
        opened[-1].drop()
    for e in opened:
        e.close()


def _gallery(seed: int = 0) -> np.ndarray:
    """Templates shaped like dlib's: norms about 1.5, clustered (identities with near-duplicate captures)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.13, size=(N // 2, 128)) + 0.02
    vecs = np.repeat(centres, 2, axis=0) + rng.normal(0, 0.02, size=(N, 128))
    return vecs.astype(np.float32)


def test_search_ranks_by_exact_euclidean_distance(engine: tuple[SearchEngine, object]) -> None:
    e, _ = engine
    vecs = _gallery()
    ids = np.arange(1, N + 1) * 7
    assert e.add(ids, vecs) == N
    assert e.count() == N and np.array_equal(e.ids(), ids)
    rng = np.random.default_rng(5)
    queries = vecs[rng.choice(N, 40, replace=False)] + rng.normal(0, 0.02, size=(40, 128)).astype(np.float32)
    agree = 0
    for q in queries:
        hits = e.search(q, 10)
        exact = np.linalg.norm(vecs.astype(np.float64) - q.astype(np.float64), axis=1)
        truth = ids[np.argsort(exact, kind="stable")[:10]]
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
        for h in hits:  # every reported distance is the exact one
            assert h.distance == pytest.approx(exact[list(ids).index(h.id)], abs=1e-9)
        agree += len(set(truth[:10]) & {h.id for h in hits})
        assert hits[0].id == truth[0]
    # Exact search agrees on all ten; an approximate index must find the mate (above) while the far end of
    # the ten, random impostors at nearly equal distances here, may differ.
    assert agree / (10 * len(queries)) >= (1.0 if e.describe().get("kind") == "flat" else 0.75)


def test_add_is_idempotent_and_remove_forgets(engine: tuple[SearchEngine, object]) -> None:
    e, _ = engine
    vecs = _gallery(1)[:200]
    assert e.add(np.arange(1, 201), vecs) == 200
    assert e.add(np.arange(1, 201), vecs) == 0
    assert e.add(np.arange(150, 251), _gallery(1)[149:250]) == 50
    assert e.count() == 250
    assert e.remove([3, 4, 99_999]) == 2
    assert e.remove([3]) == 0
    assert 3 not in {h.id for h in e.search(vecs[2], 20)}
    assert e.search(vecs[10], 1)[0].id == 11
    assert e.count() == 248 and 4 not in set(e.ids().tolist())
    assert e.search(vecs[0], 0) == []


def test_watermark_and_contents_survive_reopening(engine: tuple[SearchEngine, object]) -> None:
    e, reopen = engine
    vecs = _gallery(2)[:1100]
    e.add(np.arange(1, 1101), vecs)
    assert e.watermark == 0
    e.checkpoint(1100, force=True)
    e.close()
    again = reopen()  # type: ignore[operator]
    assert again.watermark == 1100 and again.count() == 1100
    assert again.search(vecs[42], 1)[0].id == 43
    again.clear()
    assert again.count() == 0 and again.watermark == 0 and again.search(vecs[0], 5) == []


def test_bad_templates_are_refused(engine: tuple[SearchEngine, object]) -> None:
    e, _ = engine
    with pytest.raises(SearchEngineError, match="128"):
        e.add([1], np.zeros((1, 64), dtype=np.float32))
    with pytest.raises(SearchEngineError, match="finite"):
        e.add([1], np.full((1, 128), np.nan, dtype=np.float32))
    with pytest.raises(SearchEngineError, match="positive"):
        e.add([0], np.zeros((1, 128), dtype=np.float32))
    with pytest.raises(SearchEngineError, match="ids for"):
        e.add([1, 2], np.zeros((1, 128), dtype=np.float32))
    assert e.count() == 0


def test_faiss_switches_to_an_inverted_file_and_a_damaged_file_is_named(tmp_path: Path) -> None:
    e = FaissEngine(FaissSettings(tmp_path, ivf_threshold=1000, nprobe=8))
    vecs = _gallery(3)
    e.add(np.arange(1, 801), vecs[:800])
    assert e.kind == "flat"
    e.add(np.arange(801, N + 1), vecs[800:])
    assert e.kind == "ivf" and e.describe()["lists"] >= 16
    e.checkpoint(N, force=True)
    e.close()
    assert (tmp_path / "faiss.index").stat().st_mode & 0o777 == 0o600
    (tmp_path / "faiss.index").write_bytes(b"BGFAISS1" + b"\x00" * 20)
    with pytest.raises(SearchEngineError, match="rebuild"):
        FaissEngine(FaissSettings(tmp_path))


def test_pgvector_ivfflat_after_a_bulk_load(pg_uri: str) -> None:
    from sync.county.search.pgvector_engine import PgvectorEngine, PgvectorSettings

    e = PgvectorEngine(PgvectorSettings(pg_uri, schema="ivf_bulk", method="ivfflat", probes=8))
    try:
        vecs = _gallery(4)
        e.bulk_load(np.arange(1, N + 1), vecs)
        assert e.count() == N
        assert [e.search(vecs[i], 1)[0].id for i in (0, 100, N - 1)] == [1, 101, N]
    finally:
        e.drop()
        e.close()
