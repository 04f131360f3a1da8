"""Retraining beside the worker: while a spare index is built from the store, the worker keeps indexing into and
searching the old one, and the index file stays the old whole one; the spare then takes over with what came
and went meanwhile. A worker killed mid-retrain leaves the old file, which catches up and verifies clean.

A small gallery (700 templates) with the inverted file from 700 on and retraining at 1.5x growth, so the
first retrain comes at the 700th record; the test holds the build at its first chunk (a hook the retrain
thread calls) to look at everything while it is in progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from sync.county.gallery.store import SQLiteStore
from sync.county.search.faiss_engine import INDEX_FILE, FaissEngine, FaissSettings
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from tests.sync.county.search.conftest import RAW, enrol

REPO = Path(__file__).resolve().parents[4]
THRESHOLD = 700
SETTINGS = {"ivf_threshold": THRESHOLD, "retrain_growth": 1.5, "save_interval": 0.0}


def _vectors(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.13, (count, 128)).astype(np.float32)


def _on_disk(folder: Path) -> FaissEngine:
    """The index file as a restarted worker would load it (read only: the test never writes it)."""
    return FaissEngine(FaissSettings(folder=folder, read_only=True))


def test_searches_and_indexing_go_on_while_the_index_retrains(tmp_path: Path) -> None:
    db, folder = tmp_path / "gallery.db", tmp_path / "search"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    vecs = _vectors(THRESHOLD + 20, 1)
    ids = [enrol(store, v, n) for n, v in enumerate(vecs[: THRESHOLD - 1])]
    index = open_index(SearchSettings(folder=folder, **SETTINGS), str(db), background_retrain=True)
    held, release = threading.Event(), threading.Event()

    def hold(count: int) -> None:
        held.set()
        assert release.wait(60), "the test never released the retrain"

    index.on_retrain_chunk = hold
    try:
        assert index.catch_up(store) == THRESHOLD - 1 and not index.retraining
        old = index.engine
        ids.append(enrol(store, vecs[THRESHOLD - 1], THRESHOLD - 1))
        assert index.catch_up(store) == 1  # the 700th: the inverted file is due, and built beside the worker
        assert index.retraining and held.wait(30)
        assert index.engine is old and old.kind == "flat"  # type: ignore[attr-defined]
        saved = (folder / INDEX_FILE).stat().st_mtime_ns
        # meanwhile: records come in and are indexed, searches find them, a purge takes one out
        for n in range(THRESHOLD, THRESHOLD + 20):
            ids.append(enrol(store, vecs[n], n))
            assert index.catch_up(store) == 1
            found = index.search(store, vecs[n], k=1)
            assert [c.record_id for c in found.candidates] == [ids[n]] and found.searched == n + 1
        purged = store.get_record(ids[5])
        assert purged is not None
        assert index.remove_record(store, ids[5]) == 1
        store.purge_records([purged], actor="test", reason="sealed")
        assert index.retraining and index.engine is old
        assert (folder / INDEX_FILE).stat().st_mtime_ns == saved  # nobody wrote the file meanwhile
        assert _on_disk(folder).count() == THRESHOLD
        release.set()
        assert index.wait_retrain(store, timeout=60)
        # the spare took over: an inverted file with the records that came meanwhile, without the purged one
        assert index.engine is not old and index.engine.kind == "ivf"  # type: ignore[attr-defined]
        assert index.verify(store).ok and index.engine.count() == THRESHOLD + 19
        assert [c.record_id for c in index.search(store, vecs[THRESHOLD + 10], k=1).candidates] == [
            ids[THRESHOLD + 10]]
        assert ids[5] not in {c.record_id for c in index.search(store, vecs[5], k=5).candidates}
        ids.append(enrol(store, _vectors(1, 9)[0], THRESHOLD + 20))
        assert index.catch_up(store) == 1 and not index.retraining  # saved by the new engine from now on
        disk = _on_disk(folder)
        assert disk.kind == "ivf" and disk.count() == THRESHOLD + 20
    finally:
        release.set()
        index.close()
    reopened = open_index(SearchSettings(folder=folder, **SETTINGS), str(db))
    try:
        assert reopened.verify(store).ok
    finally:
        reopened.close()
        store.close()


def test_a_worker_killed_mid_retrain_leaves_the_old_whole_index(tmp_path: Path) -> None:
    db, folder = tmp_path / "gallery.db", tmp_path / "search"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    for n, v in enumerate(_vectors(THRESHOLD - 1, 2)):
        enrol(store, v, n)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sync.county.search.retrain_worker", str(db), str(folder), str(THRESHOLD - 1)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline().strip()]
        assert lines[0] == "ready", proc.stderr.read() if proc.stderr else ""
        while "retraining" not in lines:
            lines.append(proc.stdout.readline().strip())
            assert lines[-1], f"the worker stopped before its retrain: {lines[-5:]}"
        for _ in range(10):  # records indexed while the spare is being built
            assert proc.stdout.readline().strip().isdigit()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert store.count_records() >= THRESHOLD + 10
    leftovers = [p.name for p in folder.iterdir() if p.name != INDEX_FILE]
    assert leftovers == []  # the spare never got to write; the old engine had stopped writing
    disk = _on_disk(folder)
    assert (disk.kind, disk.count()) == ("flat", THRESHOLD)  # the old whole index, as saved when it began
    index = open_index(SearchSettings(folder=folder, **SETTINGS), str(db))
    try:
        before = index.verify(store)
        assert before.extra == [] and len(before.missing) == store.count_records() - THRESHOLD
        index.reconcile(store)  # what the next start does
        assert index.verify(store).ok
    finally:
        index.close()
        store.close()
