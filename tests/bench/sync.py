"""Sync benchmarks: end-to-end delivery over mutual TLS on loopback, as the design's budget asks.

* **1 MB records per second, end to end**: 50 stored bookings of one ~1 MB frontal JPEG (a real face,
  upscaled), delivered by the real agent (shipped defaults) through a real Mosquitto (generated config,
  mutual TLS) to the real gallery worker, counted when the station has the gallery's ack. The clock
  starts when the agent is connected and subscribed, so process start and TLS set-up are not in it.
* **Draining a 10,000-record backlog after an outage**: the broker is down while 10,000 small bookings
  queue up and the agent keeps failing to connect; then the broker and the gallery come back. Reported:
  seconds from the agent's reconnection to the last ack (and, in the note, how long its jittered
  reconnect backoff took), plus records lost and stored twice (both must be 0) and resends the gallery
  answered ``duplicate``.

The gallery worker runs as its own process (``booking-gallery receive``), as it would on the county
server; the agent runs in this process so the clock can start at its subscription. Everything is on
one 2-core machine, so station, broker and gallery share the CPUs: the figures are a floor.
Run once whatever the thread count (``threads != 1`` returns nothing): the agent has no thread knob.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import tomli_w

from tests.bench import Result

REPO = Path(__file__).resolve().parents[2]
COUNTY = "king"


def _big_face(target_bytes: int = 1_000_000) -> tuple[bytes, int, int]:
    """A real face photo re-encoded as a JPEG of about ``target_bytes`` (upscaled, high quality)."""
    from tests.sync.factory import FACES

    img = cv2.imread(str(FACES / "img1.jpg"))
    scale = 1.0
    for _ in range(12):
        resized = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        if abs(len(buf) - target_bytes) < 0.05 * target_bytes:
            break
        scale *= (target_bytes / len(buf)) ** 0.5
    return buf.tobytes(), resized.shape[1], resized.shape[0]


def _start_gallery(workdir: Path, broker: Any, db: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``booking-gallery receive`` as its own process, storing into ``db``; returns when subscribed."""
    from sync.county.broker_config import gallery_identity

    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = workdir / f"receiver-{db.stem}.toml"
    config.write_text(tomli_w.dumps({
        "broker": {"host": broker.host, "port": broker.port, "protocol": "5", "ca_file": str(broker.pki.ca_cert),
                   "cert_file": str(cert), "key_file": str(key)},
        "gallery": {"county": COUNTY, "db": str(db)},
    }))
    log = workdir / f"gallery-{db.stem}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sync.county.cli", "receive", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 30
    while "connected to" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gallery worker did not connect:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.3)  # its subscription follows the CONNACK
    return proc, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _register(db: Path, station: Any) -> None:
    from sync.county.gallery.store import SQLiteStore

    store = SQLiteStore(db)
    store.register_device(station.name, COUNTY, station.signing_key.public_key().public_bytes_raw())
    store.close()


def _tally(db: Path, station: Any, saved: set[str]) -> dict[str, int]:
    """Lost, stored twice and duplicate resends, from both ends' databases."""
    from sync.county.gallery.store import SQLiteStore

    gallery = SQLiteStore(db)
    in_gallery = {r.record_id for r in gallery.list_records(limit=10_000_000)}
    count = gallery.count_records()
    gallery.close()
    store = station.open_store()
    rows = store.queue()
    store.close()
    delivered = {e.record_id for e in rows if e.state == "delivered"}
    return {
        "lost": len(saved - in_gallery) + len(saved - {e.record_id for e in rows}),
        "stored_twice": count - len(in_gallery),
        "delivered_without_gallery_copy": len(delivered - in_gallery),
        "duplicate_resends": sum(e.ack_status == "duplicate" for e in rows),
        "delivered": len(delivered),
    }


def _throughput(workdir: Path, broker: Any, n: int = 50) -> Result:
    from tests.sync import factory

    station = factory.make_station(workdir / "st-01", broker.pki, broker.host, broker.port, name="st-01",
                                   signing_key=factory.key(1))
    db = workdir / "gallery-1mb.db"
    _register(db, station)
    face = _big_face()
    store = station.open_store()
    saved = {factory.store_booking(store, i, station=station.name, face=face) for i in range(n)}
    store.close()
    gallery, _ = _start_gallery(workdir, broker, db)
    agent = factory.AgentThread(station)
    try:
        agent.start()
        t0 = time.perf_counter()
        while agent.agent.stats["acks_stored"] + agent.agent.stats["acks_duplicate"] < n:
            if time.perf_counter() - t0 > 300 or agent.agent.stats["unsendable"]:
                raise RuntimeError(f"1 MB records were not all acked: {dict(agent.agent.stats)}")
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
    finally:
        agent.close()
        _stop(gallery)
    tally = _tally(db, station, saved)
    note = (f"{n} records of {len(face[0]) / 1e6:.2f} MB JPEG each, mTLS loopback, defaults "
            f"(max_in_flight {agent.agent.config.max_in_flight}); {elapsed:.2f} s; lost {tally['lost']}, "
            f"stored twice {tally['stored_twice']}, duplicate resends {tally['duplicate_resends']}")
    return Result("sync", "1 MB records end to end (gallery ack)", 1, n / elapsed, "rec/s", 1, note)


def _backlog(workdir: Path, broker: Any, n: int = 10_000) -> Result:
    from tests.sync import factory

    station = factory.make_station(workdir / "st-02", broker.pki, broker.host, broker.port, name="st-02",
                                   signing_key=factory.key(2), reconnect_max=10.0)
    db = workdir / "gallery-backlog.db"
    _register(db, station)
    broker.stop()  # the outage: the station cannot reach the county
    agent = factory.AgentThread(station)
    agent.start(ready_timeout=None)
    try:
        store = station.open_store()
        store.conn.execute("PRAGMA synchronous = OFF")  # bulk set-up only; the agent's own writes stay FULL
        saved = {factory.store_booking(store, i, station=station.name) for i in range(n)}
        store.close()
        time.sleep(2.0)  # let the agent's reconnect backoff grow a little, as in a real outage
        broker.start()
        gallery, _ = _start_gallery(workdir, broker, db)
        t_link = time.perf_counter()
        try:
            if not agent.agent.ready.wait(60):
                raise RuntimeError(f"agent did not reconnect: {agent.agent.last_error}")
            t_ready = time.perf_counter()
            while agent.agent.stats["acks_stored"] + agent.agent.stats["acks_duplicate"] < n:
                if time.perf_counter() - t_ready > 900 or agent.agent.stats["unsendable"]:
                    raise RuntimeError(f"backlog not drained: {dict(agent.agent.stats)}")
                time.sleep(0.01)
            t_done = time.perf_counter()
        finally:
            _stop(gallery)
    finally:
        agent.close()
    tally = _tally(db, station, saved)
    drain = t_done - t_ready
    note = (f"{n} small records (~{len(factory.small_face()[0]) / 1000:.0f} kB real face); {n / drain:.0f} rec/s; "
            f"reconnect backoff after the outage {t_ready - t_link:.1f} s (not included); lost {tally['lost']}, "
            f"stored twice {tally['stored_twice']}, delivered without gallery copy "
            f"{tally['delivered_without_gallery_copy']}, duplicate resends {tally['duplicate_resends']}")
    return Result("sync", "drain 10,000-record backlog after an outage", 1, drain, "s", 1, note)


def run(threads: int, repeats: int) -> list[Result]:
    """Both sync figures once (``repeats`` is not used: one run takes minutes); only for ``threads == 1``."""
    if threads != 1:
        return []
    from tests.sync.broker import MosquittoBroker, make_pki

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        pki = make_pki(workdir / "pki")
        broker = MosquittoBroker(workdir / "broker", pki, COUNTY)
        broker.start()
        try:
            return [_throughput(workdir, broker), _backlog(workdir, broker)]
        finally:
            broker.stop()


if __name__ == "__main__":
    for result in run(1, 1):
        print(result)
