"""The booking-time check, measured where the officer waits: from the UI's question to the answer on disk.

The real path on loopback with mutual TLS: the station's spool, its sync agent (signs, publishes with an
MQTT 5 response topic), the generated Mosquitto configuration, a gallery worker (verifies, searches its
FAISS index over a SQLite gallery of ``RECORDS`` bookings with random unit templates plus one prior of
the probe, signs the answer), back to the agent (verifies, writes the answer) and the UI's poll. Beside it,
in the same run, the index search alone (what the gallery's size changes; its scaling to 1 M templates is
``tests/bench/search.py``). Everything shares one 2-core machine: the figures are a floor.
Run once whatever the thread count (``threads != 1`` returns nothing).

At county scale (``python -m tests.bench.booking_check --records 1000000``; not part of ``make bench``): the
gallery is bulk-inserted straight into the SQLite store, one minimal synthetic record per template (booking
number, ORI, capture time; an empty payload, so no photos and no signature behind them), the templates from
the fitted generator of ``tests/bench/search_data.py``, and the FAISS index is built from them in one pass
(inverted file, default settings) instead of record by record. Each question is a second capture of a
gallery identity, so its mate is the prior the answer should name. Nothing else changes: the same station,
agent, Mosquitto and worker as above.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization

from tests.bench import Result

COUNTY = "king"
RECORDS = 2_000


def _unit(rng: np.random.Generator) -> np.ndarray:
    vec = rng.standard_normal(128).astype("<f4")
    return vec / np.linalg.norm(vec)


def _fill(store: Any, probe: np.ndarray) -> None:
    from sync.protocol import wire
    from tests.sync import factory

    key = factory.key(1)
    store.register_device("st-01", COUNTY, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                         serialization.PublicFormat.Raw))
    rng = np.random.default_rng(7)
    for n in range(RECORDS):
        vec = probe if n == RECORDS // 2 else _unit(rng)
        cap = factory.capture("frontal", template=wire.WireTemplate("dlib-resnet-v1@1", 128, vec.tobytes()))
        rec = factory.record(booking=wire.WireBooking("WA0170000", f"B-{n}", "ofc-1", factory.T0), captures=(cap,))
        payload = wire.encode_record(rec, key)
        store.insert_record(wire.verify_record(payload, lambda kid: key.public_key()), payload)


def _round_trips(spool: Any, probes: list[np.ndarray], repeats: int) -> tuple[list[float], int]:
    """Round trips (ms), one question at a time, the probes in turn; and how many answers named a prior."""
    samples, named = [], 0
    for n in range(repeats):
        started = time.time()
        request_id = spool.ask(probes[n % len(probes)].tolist(), "dlib-resnet-v1@1")
        while True:
            status = spool.status(request_id, asked_at=started, timeout=10.0)
            if status.final:
                break
            time.sleep(0.002)
        assert status.state == "answered", status
        named += bool(status.priors)
        samples.append((time.time() - started) * 1000)
        spool.forget(request_id)
    return samples, named


def run(threads: int, repeats: int) -> list[Result]:
    if threads != 1:
        return []
    from sync.county.gallery.store import SQLiteStore
    from sync.county.search.index import open_index
    from sync.county.search.settings import SearchSettings

    repeats = max(20, repeats)
    probe = _unit(np.random.default_rng(3))

    def gallery(work: Path) -> tuple[Any, Any, list[np.ndarray]]:
        store = SQLiteStore(work / "g.db")
        _fill(store, probe)
        index = open_index(SearchSettings(folder=work / "search"), str(work / "g.db"))
        index.rebuild(store)
        return store, index, [probe]

    samples, search_ms, named = _measure(gallery, repeats)
    assert named == repeats + 2, f"only {named} answers named the probe's prior"
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    return [
        Result("check", f"booking check round trip, gallery of {RECORDS} records", 1, statistics.median(samples), "ms",
               len(samples), f"p90 {p90:.0f} ms; spool -> agent -> Mosquitto (TLS) -> worker -> back; "
               "the agent looks at the spool every 0.1 s"),
        Result("check", "  of which the index search (same gallery)", 1, statistics.median(search_ms), "ms",
               len(search_ms), "FAISS, k 25, threshold 0.6, store filter"),
    ]


def _measure(gallery: Any, repeats: int) -> tuple[list[float], list[float], int]:
    """Round trips and index searches (ms) over the gallery ``gallery(work)`` makes (store, index, probes),
    and how many answers named at least one prior."""
    from sync.county.broker_config import gallery_identity
    from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
    from sync.county.search.booking_check import BookingCheckResponder
    from sync.protocol.enroll import default_command_kid
    from sync.station.checks import CheckSpool
    from tests.sync import factory
    from tests.sync.broker import MosquittoBroker, make_pki

    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        broker = MosquittoBroker(work / "broker", pki, COUNTY)
        broker.start()
        store, index, probes = gallery(work)
        cert, key = pki.client(gallery_identity(COUNTY))
        receiver = GalleryReceiver(ReceiverConfig(county=COUNTY, ca_file=str(pki.ca_cert), cert_file=str(cert),
                                                  key_file=str(key), host=broker.host, port=broker.port), store)
        receiver.index = index
        station = factory.make_station(work / "st-01", pki, broker.host, broker.port, booking_check=True,
                                       booking_check_timeout=10.0, **factory.FAST)
        receiver.checks = BookingCheckResponder(store, index, county=COUNTY, key=station.county_key,
                                                kid=default_command_kid(COUNTY), max_per_minute=10_000)
        receiver.start()
        agent = factory.AgentThread(station).start()
        try:
            assert receiver.wait_ready(15)
            samples, named = _round_trips(CheckSpool(station.data_dir), probes, repeats + 2)
            search_ms = []  # after the round trips, as warm as they were, the same probes
            for n in range(repeats + 2):
                started = time.perf_counter()
                index.search(store, probes[n % len(probes)], k=25, threshold=0.6)
                search_ms.append((time.perf_counter() - started) * 1000)
        finally:
            agent.close()
            receiver.stop()
            index.close()
            store.close()
            broker.stop()
    return samples[2:], search_ms[2:], named


def _bulk_gallery(records: int, count: int) -> Any:
    """``gallery(work)`` for :func:`_measure`: ``records`` synthetic records bulk-inserted (see the module
    docstring), the index built from their templates in one pass, and ``count`` mated probes."""
    from tests.bench.search_data import CHUNK, GalleryModel, chunk_sizes, mated_probes

    def gallery(work: Path) -> tuple[Any, Any, list[np.ndarray]]:
        from sync.county.gallery.store import SQLiteStore
        from sync.county.search.index import open_index
        from sync.county.search.settings import SearchSettings

        model = GalleryModel.fit()
        store = SQLiteStore(work / "g.db")
        store.register_device("st-01", COUNTY, _station_raw_key())
        started = time.perf_counter()
        conn = sqlite3.connect(work / "g.db")
        conn.execute("PRAGMA synchronous = OFF")
        t0 = dt.datetime(2010, 1, 1, tzinfo=dt.timezone.utc)
        for c, size in enumerate(chunk_sizes(records)):
            vecs = model.chunk(c, size)
            first = c * CHUNK
            rows = [(f"bulk-{first + i + 1:08d}", (t0 + dt.timedelta(minutes=first + i)).isoformat())
                    for i in range(size)]
            with conn:
                conn.executemany(
                    "INSERT INTO records (record_id, station, county, received_at, ori, booking_number, operator, "
                    "captured_at, created_at, capture_count, content_sha256, payload) VALUES "
                    "(?, 'st-01', 'king', ?2, 'WA0170000', 'B-' || substr(?1, 6), 'ofc-1', ?2, ?2, 1, zeroblob(32), "
                    "x'')", rows)
                conn.executemany(
                    "INSERT INTO templates (record_id, capture_index, pose, model, dim, vector) VALUES "
                    "(?, 0, 'frontal', 'dlib-resnet-v1@1', 128, ?)",
                    [(rid, vecs[i].astype("<f4").tobytes()) for i, (rid, _) in enumerate(rows)])
                conn.executemany("INSERT INTO template_seq (seq, record_id, capture_index) VALUES (?, ?, 0)",
                                 [(first + i + 1, rid) for i, (rid, _) in enumerate(rows)])
        conn.close()
        print(f"  {records} records bulk-inserted in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        index = open_index(SearchSettings(folder=work / "search"), str(work / "g.db"), read_only=True)
        ids = np.arange(1, records + 1, dtype=np.int64)
        vectors = np.concatenate([model.chunk(c, size) for c, size in enumerate(chunk_sizes(records))])
        index.engine.bulk_load(ids, vectors)
        del vectors
        index.engine.checkpoint(store.max_template_seq())
        print(f"  index built in {time.perf_counter() - started:.0f} s ({index.engine.describe()})", flush=True)
        probes, _ = mated_probes(model, records, count)
        return store, index, list(probes)

    return gallery


def _station_raw_key() -> bytes:
    from tests.sync import factory

    return factory.key(1).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def run_scale(records: int, repeats: int) -> list[Result]:
    """The round trip at ``records`` templates (see the module docstring), beside the search alone."""
    samples, search_ms, named = _measure(_bulk_gallery(records, repeats + 2), repeats)

    def p90(values: list[float]) -> float:
        return sorted(values)[int(0.9 * (len(values) - 1))]

    return [
        Result("check", f"booking check round trip, {records:,} templates", 1, statistics.median(samples), "ms",
               len(samples), f"p90 {p90(samples):.0f} ms; {named} of {len(samples) + 2} answers named a prior; "
               "bulk-inserted synthetic gallery"),
        Result("check", "  the index search alone (same gallery)", 1, statistics.median(search_ms), "ms",
               len(search_ms), f"p90 {p90(search_ms):.1f} ms; FAISS IVF, k 25, threshold 0.6, store filter"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.booking_check", description=run_scale.__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    for r in run_scale(args.records, args.repeats):
        print(f"| {r.stage:<44} | {r.median:>8.1f} {r.unit} | {r.runs:>4} runs | {r.note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
