"""Legacy import speed: templates per second per core, beside the embedding ceiling in the same run.

- ceiling: one process decoding, detecting (with landmarks) and embedding a real 2048x2048 portrait after
  another, nothing else: the most an import could do per core;
- import: ``Importer`` (the code behind ``booking-gallery import``) with N worker processes over the same
  photos, each under its own booking number (so each is embedded and stored), into a fresh SQLite gallery:
  reading, embedding, signing, verifying and committing every record.
Two imports per worker count (a few photos, then many) give the pool's start-up and the steady rate
(the difference); per core = steady templates per second / workers. The gap to the ceiling is what the
pool, the signature and the store's synchronous commit cost.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from appliance.imageio import decode_image
from appliance.vision.bundle import Bundle
from appliance.vision.embedder import Embedder
from appliance.vision.pipeline import FaceAnalyzer
from appliance.vision.runtime import RuntimeOptions
from sync.county.enroll.ca import CountyCA
from sync.county.gallery.store import SQLiteStore
from sync.county.intake.identity import load_signer
from sync.county.intake.legacy import Importer
from sync.county.intake.sources import ImportItem
from tests.bench import Result, median_ms
from tests.conftest import shared_data_dir

PHOTOS = ("img1.jpg", "img3.jpg", "img13.jpg", "img20.jpg", "img22.jpg", "img8.jpg")


def _items(count: int) -> list[ImportItem]:
    folder = shared_data_dir() / "faces" / "deepface"
    when = datetime(2019, 5, 1, tzinfo=timezone.utc)
    return [ImportItem(f"bench {n}", f"B-{n}", "WA0170000", when, "frontal", path=folder / PHOTOS[n % len(PHOTOS)])
            for n in range(count)]


def run(threads: int, repeats: int) -> list[Result]:
    bundle = Bundle.load()
    analyzer, embedder = FaceAnalyzer(bundle, RuntimeOptions(threads=1)), Embedder(bundle, RuntimeOptions(threads=1))
    data = [(shared_data_dir() / "faces" / "deepface" / name).read_bytes() for name in PHOTOS]
    turn = iter(range(10**9))

    def one() -> None:
        raw = data[next(turn) % len(data)]
        rgb = decode_image(raw)
        faces = analyzer.analyze(rgb, landmarks=True, iris=False)
        embedder.embed_face(rgb, faces[0])

    ceiling_ms = median_ms(one, max(repeats, len(PHOTOS)))
    small, large = 2 * threads, max(4 * len(PHOTOS), 12 * threads)
    took = {n: _import_seconds(n, threads) for n in (small, large)}
    steady = (large - small) / max(took[large] - took[small], 1e-6)  # templates/s once the pool runs
    ceiling = 1000.0 / ceiling_ms
    return [
        Result("intake", "embed one photo, 1 process (ceiling per core)", threads, ceiling, "t/s", repeats,
               f"{ceiling_ms:.0f} ms per 2048 px portrait"),
        Result("intake", f"import, {threads} worker(s), per core", threads, steady / threads, "t/s", 1,
               f"{steady:.2f} t/s in all ({large - small} photos after the first {small}), "
               f"{100 * steady / threads / ceiling:.0f}% of the ceiling per core"),
        Result("intake", f"import, {threads} worker(s): pool start + {small} photos", threads, took[small], "s", 1,
               f"{os.cpu_count()} cores"),
    ]


def _import_seconds(count: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ca = CountyCA.init(Path(tmp) / "ca", "bench")
        with SQLiteStore(Path(tmp) / "g.db") as store:
            importer = Importer(store, load_signer(ca.directory), workers=workers)
            started = time.perf_counter()
            summary = importer.run(_items(count))
            seconds = time.perf_counter() - started
    assert summary.imported == count, summary.refused
    return seconds
