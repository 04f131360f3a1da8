"""The booking-time check, measured where the officer waits: from the UI's question to the answer on disk.

The real path on loopback with mutual TLS: the station's spool, its sync agent (signs, publishes with an
MQTT 5 response topic), the generated Mosquitto configuration, a gallery worker (verifies, searches its
FAISS index over a SQLite gallery of ``RECORDS`` bookings with random unit templates plus one prior of
the probe, signs the answer), back to the agent (verifies, writes the answer) and the UI's poll. Beside it,
in the same run, the index search alone (what the gallery's size changes; its scaling to 1 M templates is
``tests/bench/search.py``). Everything shares one 2-core machine: the figures are a floor.
Run once whatever the thread count (``threads != 1`` returns nothing).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization

from tests.bench import Result, median_ms

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


def _round_trips(spool: Any, probe: np.ndarray, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.time()
        request_id = spool.ask(probe.tolist(), "dlib-resnet-v1@1")
        while True:
            status = spool.status(request_id, asked_at=started, timeout=10.0)
            if status.final:
                break
            time.sleep(0.002)
        assert status.state == "answered" and status.priors, status
        samples.append((time.time() - started) * 1000)
        spool.forget(request_id)
    return samples


def run(threads: int, repeats: int) -> list[Result]:
    if threads != 1:
        return []
    from sync.county.broker_config import gallery_identity
    from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
    from sync.county.gallery.store import SQLiteStore
    from sync.county.search.booking_check import BookingCheckResponder
    from sync.county.search.index import open_index
    from sync.county.search.settings import SearchSettings
    from sync.protocol.enroll import default_command_kid
    from sync.station.checks import CheckSpool
    from tests.sync import factory
    from tests.sync.broker import MosquittoBroker, make_pki

    repeats = max(20, repeats)
    probe = _unit(np.random.default_rng(3))
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        broker = MosquittoBroker(work / "broker", pki, COUNTY)
        broker.start()
        store = SQLiteStore(work / "g.db")
        _fill(store, probe)
        index = open_index(SearchSettings(folder=work / "search"), str(work / "g.db"))
        index.rebuild(store)
        search_ms = median_ms(lambda: index.search(store, probe, k=25, threshold=0.6), repeats)
        cert, key = pki.client(gallery_identity(COUNTY))
        receiver = GalleryReceiver(ReceiverConfig(county=COUNTY, ca_file=str(pki.ca_cert), cert_file=str(cert),
                                                  key_file=str(key), host=broker.host, port=broker.port), store)
        receiver.index = index
        station = factory.make_station(work / "st-01", pki, broker.host, broker.port, booking_check=True,
                                       booking_check_timeout=10.0, **factory.FAST)
        receiver.checks = BookingCheckResponder(store, index, county=COUNTY, key=station.county_key,
                                                kid=default_command_kid(COUNTY))
        receiver.start()
        agent = factory.AgentThread(station).start()
        try:
            assert receiver.wait_ready(15)
            samples = _round_trips(CheckSpool(station.data_dir), probe, repeats + 2)[2:]
        finally:
            agent.close()
            receiver.stop()
            index.close()
            store.close()
            broker.stop()
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    return [
        Result("check", f"booking check round trip, gallery of {RECORDS} records", 1, statistics.median(samples), "ms",
               len(samples), f"p90 {p90:.0f} ms; spool -> agent -> Mosquitto (TLS) -> worker -> back; "
               "the agent looks at the spool every 0.1 s"),
        Result("check", "  of which the index search (same gallery)", 1, search_ms, "ms", repeats,
               "FAISS, k 25, threshold 0.6, store filter"),
    ]
