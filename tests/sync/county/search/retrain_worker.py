"""A gallery worker caught mid-retrain, for the SIGKILL test: ``python -m tests.sync.county.search.retrain_worker
DB INDEX_DIR START``. It starts like ``booking-gallery receive`` (the worker's index, retraining in the
background, reconciled with the store), then stores and indexes records from number START on. The retrain
that comes due is held at its first chunk (it prints ``retraining``), and records keep coming until the test
kills the process."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from sync.county.gallery.store import SQLiteStore
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from tests.sync.county.search.conftest import enrol


def main(db: str, index_dir: str, start: int) -> None:
    store = SQLiteStore(db)
    index = open_index(SearchSettings(folder=Path(index_dir), ivf_threshold=700, retrain_growth=1.5,
                                      save_interval=0.0), db, background_retrain=True)
    never, printing = threading.Event(), threading.Lock()

    def say(line: str) -> None:  # two threads print: one whole line at a time
        with printing:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def hold(count: int) -> None:
        say("retraining")
        never.wait()

    index.on_retrain_chunk = hold
    index.reconcile(store)
    rng = np.random.default_rng(start)
    say("ready")
    for n in range(start, start + 100_000):
        enrol(store, rng.normal(0, 0.13, 128).astype(np.float32), n)
        index.catch_up(store)
        say(str(n))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
