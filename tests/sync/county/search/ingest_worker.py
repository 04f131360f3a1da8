"""A gallery worker without the broker, for the SIGKILL test: ``python -m tests.sync.county.search.ingest_worker
DB INDEX_DIR START COUNT``. It starts like ``booking-gallery receive`` (the index reconciled with the store),
then hands COUNT signed records to the receiver's own ``handle`` (verify, commit, index catch-up), saving
the index after every record so that a kill lands in the middle of a save as often as not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from sync.protocol import topics
from tests.sync.county.search.conftest import signed_record


def main(db: str, index_dir: str, start: int, count: int) -> None:
    store = SQLiteStore(db)
    index = open_index(SearchSettings(folder=Path(index_dir), save_interval=0.0), db)
    index.reconcile(store)
    receiver = GalleryReceiver(ReceiverConfig(county="king", ca_file="-", cert_file="-", key_file="-"), store)
    receiver.index = index
    rng = np.random.default_rng(start)
    topic = topics.records_topic("king", "st-01")
    print("ready", flush=True)
    for n in range(start, start + count):
        _, payload = signed_record(rng.normal(0, 0.13, 128).astype(np.float32), n)
        outcome = receiver.handle(topic, payload)
        assert outcome.ack is not None and outcome.ack.status == "stored", outcome
        print(n, flush=True)
    index.close()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
