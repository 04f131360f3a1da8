"""Store benchmark for the `make bench` harness: `save_booking` of a realistic record.

A booking with three captures of ~300 KB each (frontal with a 128-D template, two profiles): encryption,
one SQLite transaction in WAL mode with ``synchronous=FULL`` (an fsync per commit), commit. The
database grows during the run, as on a station. Run alone with ``python -m tests.store.bench``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from appliance.store import Store
from tests.bench import Result, median_ms
from tests.store.conftest import make_booking, make_captures

CAPTURE_BYTES = 300_000


def run(threads: int, repeats: int) -> list[Result]:
    """Median milliseconds per `save_booking` and per `load_record` (threads do not apply: one writer)."""
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp, \
            Store.open_data_dir(Path(tmp), floor_bytes=0) as store:
        booking = make_booking()
        captures = make_captures(size=CAPTURE_BYTES)
        saved: list[str] = []
        save_ms = median_ms(lambda: saved.append(store.save_booking(booking, captures)), repeats)
        load_ms = median_ms(lambda: store.load_record(saved[-1]), repeats)
    note = f"3 captures x {CAPTURE_BYTES // 1000} KB, AES-256-GCM, WAL + synchronous=FULL"
    return [Result("store", "save_booking (one transaction, fsynced)", threads, save_ms, runs=repeats, note=note),
            Result("store", "load_record (decrypt + sha256 check)", threads, load_ms, runs=repeats, note=note)]


if __name__ == "__main__":
    for result in run(threads=1, repeats=20):
        print(f"{result.stage}: median {result.median:.2f} ms over {result.runs} runs ({result.note})")
