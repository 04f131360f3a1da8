"""SIGKILL a gallery worker while it stores and indexes records, at random moments, then check that the index
file is whole, catches up on the next start and holds exactly the store's frontal templates."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sync.county.gallery.store import SQLiteStore
from sync.county.search.faiss_engine import INDEX_FILE
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from tests.sync.county.search.conftest import RAW

REPO = Path(__file__).resolve().parents[4]


def _worker(db: Path, index_dir: Path, start: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.county.search.ingest_worker", str(db), str(index_dir), str(start),
         str(count)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigkill_mid_ingest_then_catch_up_and_verify(tmp_path: Path) -> None:
    db, index_dir = tmp_path / "gallery.db", tmp_path / "search"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    rng = random.Random(12)
    start = 1
    for _ in range(2):
        proc = _worker(db, index_dir, start, 100_000)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        for _ in range(rng.randint(10, 40)):  # records stored and indexed before the kill
            proc.stdout.readline()
        time.sleep(rng.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        stored = store.count_records()
        assert stored >= start + 10 - 1
        leftovers = [p.name for p in index_dir.iterdir() if p.name != INDEX_FILE]
        # a kill during a save leaves at most its temporary file (removed by nobody, harmless: never read)
        assert all(name.startswith(f".{INDEX_FILE}.") and name.endswith(".tmp") for name in leftovers)
        index = open_index(SearchSettings(folder=index_dir), str(db))  # the saved file loads whole
        before = index.verify(store)
        assert before.extra == []  # a killed worker never indexes what the store does not hold
        index.close()  # nothing changed: nothing written
        start = stored + 1
    # the next worker's start brings it level: it reconciles, indexes 5 more, and stops cleanly
    proc = _worker(db, index_dir, start, 5)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    index = open_index(SearchSettings(folder=index_dir), str(db))
    report = index.verify(store)
    assert report.ok and report.stored == store.count_records() == start + 4
    assert index.engine.watermark == store.max_template_seq()
    index.close()
    store.close()
