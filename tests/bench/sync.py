"""Sync benchmarks: delivery end to end over mutual TLS on loopback, each beside the broker's own ceiling.

Every figure is measured beside its rival in the same run, on the same broker:

* **Broker ceiling**: a plain paho publisher and subscriber (the station's and the gallery's
  certificates, the gallery's shared subscription, QoS 1, 20 in flight) pushing payloads of the same size
  through the same Mosquitto. Nothing of ours is in it; it is the most the wire carries here.
* **1 MB records per second, end to end**: stored bookings of one ~1 MB frontal JPEG (a real face,
  upscaled), delivered by the real agent through the real broker to the real gallery worker process
  (``booking-gallery receive`` with an export folder, so the ANSI/NIST export runs beside it), counted when
  the station has the gallery's ack. With SQLite and with PostgreSQL. The clock starts when the agent is
  connected and subscribed.
* **A 10,000-booking backlog of realistic records**: a standardized frontal (a NIST MEDS mug shot, 480x600)
  plus two profile captures (real face photos at camera size), a template and a full quality report each;
  the broker is down while they queue up, then broker and gallery come back. Reported: seconds from the
  agent's reconnection to the last ack, and when the last export file was written.

Each end-to-end row also says: records lost, stored twice and delivered without a gallery copy (all
must be 0), and the ratio to the broker ceiling. Everything runs on one machine, so station, broker and
gallery share its CPUs: the figures are a floor. ``BENCH_SYNC_BACKLOG`` (default 10000),
``BENCH_SYNC_RECORDS`` (1 MB records per run, default 150), ``BENCH_SYNC_RUNS`` (default 3) and
``BENCH_PG`` (default ``postgresql://127.0.0.1:5432/test``; ``none`` skips PostgreSQL) change the sizes;
``BENCH_SYNC_EXPORT=0`` runs the gallery without an export folder, ``BENCH_SYNC_GROUP_COMMIT=1`` without
group commit (to see what each costs or brings).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import tomli_w

from tests.bench import Result

REPO = Path(__file__).resolve().parents[2]
COUNTY = "king"
PG = os.environ.get("BENCH_PG", "postgresql://127.0.0.1:5432/test")
BACKLOG = int(os.environ.get("BENCH_SYNC_BACKLOG", "10000"))
RECORDS = int(os.environ.get("BENCH_SYNC_RECORDS", "150"))
RUNS = int(os.environ.get("BENCH_SYNC_RUNS", "3"))
EXPORT = os.environ.get("BENCH_SYNC_EXPORT", "1") != "0"
GROUP_COMMIT = int(os.environ.get("BENCH_SYNC_GROUP_COMMIT", "32"))


# ------------------------------------------------------------------------------------------- payloads
def _encode(img: Any, target_bytes: int) -> bytes:
    """``img`` as a JPEG of about ``target_bytes`` (scaled, quality 95)."""
    scale = 1.0
    for _ in range(12):
        resized = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        if abs(len(buf) - target_bytes) < 0.05 * target_bytes:
            break
        scale *= (target_bytes / len(buf)) ** 0.5
    return buf.tobytes()


def _jpeg(data: bytes) -> tuple[bytes, int, int]:
    from sync.protocol.jpeg import jpeg_dimensions

    dims = jpeg_dimensions(data)
    assert dims is not None
    return data, dims[0], dims[1]


def big_face(target_bytes: int = 1_000_000) -> tuple[bytes, int, int]:
    """A real face photo re-encoded as a JPEG of about ``target_bytes`` (upscaled, high quality)."""
    from tests.sync.factory import FACES

    return _jpeg(_encode(cv2.imread(str(FACES / "img1.jpg")), target_bytes))


def booking_images() -> list[tuple[str, tuple[bytes, int, int]]]:
    """A realistic booking: the standardized frontal (a MEDS mug shot, 480x600, as captured) and two
    profile captures (real face photos, 900 px high, JPEG quality 92): about 0.4 MB signed."""
    from tests.conftest import shared_data_dir

    faces = shared_data_dir() / "faces"
    frontal = _jpeg((faces / "openmpf_meds" / "meds-aa-S001-01.jpg").read_bytes())
    profiles = []
    for name in ("img2.jpg", "img3.jpg"):
        img = cv2.imread(str(faces / "deepface" / name))
        scale = 900 / img.shape[0]
        resized = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        profiles.append(_jpeg(buf.tobytes()))
    return [("frontal", frontal), ("left_profile", profiles[0]), ("right_profile", profiles[1])]


def quality_report(pose: str, n: int) -> dict[str, Any]:
    """A quality report the size of a real one: the 29 measures with raw value and score, and the gates."""
    measures = {f"0x{0x41 + i:02x}": {"raw": round(0.5 + ((n + i) % 40) / 100, 4), "score": 50 + (n + i) % 50}
                for i in range(28)}
    measures["glare"] = {"raw": 0.01, "score": 99}
    return {"pose": pose, "profile": "nist-sap30", "measures": measures, "passed": True, "failed": [],
            "guidance": [], "yaw": 88.0 if pose != "frontal" else -1.5}


def store_booking(store: Any, n: int, images: list[tuple[str, tuple[bytes, int, int]]], station: str) -> str:
    """Save booking ``n`` through the real station store (one transaction, encrypted); the frontal gets a
    128-d template."""
    import datetime as dt

    from appliance.store import Booking, Capture
    from tests.sync.factory import T0, template

    captures = []
    for pose, (jpeg, width, height) in images:
        extra: dict[str, Any] = {"quality": quality_report(pose, n)}
        if pose == "frontal":
            extra |= {"template": list(template(128, seed=n).floats()), "template_model": "dlib-resnet-v1@1"}
        captures.append(Capture.from_jpeg(pose, jpeg, width, height, "ofc-1187", **extra))
    booking = Booking("WA0170000", f"2026-{n:06d}", "ofc-1187", T0 + dt.timedelta(minutes=n), station)
    return store.save_booking(booking, captures)


# ------------------------------------------------------------------------------------------- ceiling
def ceiling(broker: Any, size: int, n: int) -> float:
    """Messages per second a plain paho publisher and subscriber get through ``broker`` (mTLS, QoS 1)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from sync.county.broker_config import gallery_identity
    from sync.protocol import topics
    from sync.protocol.tls import tls_context

    def client(cn: str) -> Any:
        cert, key = broker.pki.client(cn)
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{cn}", protocol=MQTTProtocolVersion.MQTTv5)
        c.tls_set_context(tls_context(str(broker.pki.ca_cert), str(cert), str(key)))
        return c

    done, subscribed, connected = threading.Event(), threading.Event(), threading.Event()
    count = [0]

    def on_message(c: Any, u: Any, m: Any) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    sub = client(gallery_identity(COUNTY))
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, *a: c.subscribe(topics.gallery_subscription(COUNTY, topics.SHARE_GROUP), qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    pub = client("st-99")
    pub.max_inflight_messages_set(20)
    pub.on_connect = lambda *a: connected.set()
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        if not (subscribed.wait(15) and connected.wait(15)):
            raise RuntimeError("ceiling clients did not connect")
        payload = os.urandom(size)
        topic = topics.records_topic(COUNTY, "st-99")
        t0 = time.perf_counter()
        for _ in range(n):
            pub.publish(topic, payload, qos=1)
        if not done.wait(600):
            raise RuntimeError(f"ceiling: only {count[0]} of {n} messages arrived")
        return n / (time.perf_counter() - t0)
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()


# ------------------------------------------------------------------------------------------- gallery
class Gallery:
    """A gallery database (SQLite file or a fresh PostgreSQL schema) and its ``receive`` process."""

    def __init__(self, workdir: Path, backend: str, tag: str) -> None:
        self.workdir, self.backend, self.tag = workdir, backend, tag
        self.url = (str(workdir / f"gallery-{tag}.db") if backend == "sqlite"
                    else f"{PG}?schema=bench_{tag.replace('-', '_')}_{uuid.uuid4().hex[:8]}")
        self.export = workdir / f"eft-{tag}"
        self.proc: subprocess.Popen[bytes] | None = None

    def store(self) -> Any:
        from sync.county.gallery.store import open_store

        return open_store(self.url)

    def register(self, station: Any) -> None:
        with self.store() as store:
            store.register_device(station.name, COUNTY, station.signing_key.public_key().public_bytes_raw())

    def start(self, broker: Any) -> None:
        """``booking-gallery receive`` as its own process; returns when it is connected."""
        from sync.county.broker_config import gallery_identity

        cert, key = broker.pki.client(gallery_identity(COUNTY))
        config = self.workdir / f"receiver-{self.tag}.toml"
        config.write_text(tomli_w.dumps({
            "broker": {"host": broker.host, "port": broker.port, "protocol": "5",
                       "ca_file": str(broker.pki.ca_cert), "cert_file": str(cert), "key_file": str(key)},
            "gallery": {"county": COUNTY, "db": self.url, "max_record_bytes": 16 * 1024 * 1024,
                        "group_commit": GROUP_COMMIT},
            **({"export": {"folder": str(self.export)}} if EXPORT else {}),
        }))
        log = self.workdir / f"gallery-{self.tag}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sync.county.cli", "receive", "--config", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 30
        while "connected to" not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gallery worker did not connect:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(0.3)  # its subscription follows the CONNACK

    def exports_done(self, timeout: float = 1800) -> float:
        """Wait until the work queue is empty; returns when (perf_counter)."""
        deadline = time.monotonic() + timeout
        with self.store() as store:
            while store.job_summary().waiting:
                if time.monotonic() > deadline:
                    raise RuntimeError("exports did not finish")
                time.sleep(0.05)
        return time.perf_counter()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def tally(self, station: Any, saved: set[str]) -> dict[str, int]:
        """Lost, stored twice, delivered without a gallery copy, exported, from both ends' databases."""
        with self.store() as gallery:
            in_gallery = {r.record_id for r in gallery.list_records(limit=10_000_000)}
            count = gallery.count_records()
            summary = gallery.job_summary()
            size = gallery.get_payload(next(iter(in_gallery))) if in_gallery else b""
            if self.backend == "postgresql":
                gallery.drop_schema()  # type: ignore[attr-defined]
        store = station.open_store()
        rows = store.queue()
        store.close()
        delivered = {e.record_id for e in rows if e.state == "delivered"}
        exported = {p.stem for p in self.export.glob("*.eft")} if EXPORT else set(saved)
        return {
            "lost": len(saved - in_gallery) + len(saved - {e.record_id for e in rows}),
            "stored_twice": count - len(in_gallery),
            "delivered_without_gallery_copy": len(delivered - in_gallery),
            "not_exported": len(saved - exported),
            "export_failures": sum(k.failed for k in summary.kinds.values()),
            "duplicate_resends": sum(e.ack_status == "duplicate" for e in rows),
            "payload_bytes": len(size or b""),
        }


def _wait_acks(agent: Any, n: int, t0: float, limit: float) -> float:
    while agent.agent.stats["acks_stored"] + agent.agent.stats["acks_duplicate"] < n:
        if time.perf_counter() - t0 > limit or agent.agent.stats["unsendable"]:
            raise RuntimeError(f"records were not all acked: {dict(agent.agent.stats)}")
        time.sleep(0.002)
    return time.perf_counter()


def _verdict(t: dict[str, int]) -> str:
    return (f"lost {t['lost']}, stored twice {t['stored_twice']}, delivered without gallery copy "
            f"{t['delivered_without_gallery_copy']}, not exported {t['not_exported']}")


# ------------------------------------------------------------------------------------------- 1 MB
def throughput(workdir: Path, broker: Any, backend: str, station_no: int) -> tuple[list[float], dict[str, Any]]:
    """``RUNS`` runs of ``RECORDS`` 1 MB records each through one gallery; acked records per second."""
    from tests.sync import factory

    name = f"st-{station_no:02d}"
    station = factory.make_station(workdir / name, broker.pki, broker.host, broker.port, name=name,
                                   signing_key=factory.key(station_no))
    gallery = Gallery(workdir, backend, f"1mb-{backend}")
    gallery.register(station)
    face = big_face()
    gallery.start(broker)
    rates: list[float] = []
    saved: set[str] = set()
    in_flight = 0
    try:
        for run in range(RUNS):  # each run: a fresh batch, then a fresh agent (the clock starts at its subscription)
            store = station.open_store()
            saved |= {store_booking(store, run * RECORDS + i, [("frontal", face)], name) for i in range(RECORDS)}
            store.close()
            agent = factory.AgentThread(station)
            try:
                agent.start()
                t0 = time.perf_counter()
                rates.append(RECORDS / (_wait_acks(agent, RECORDS, t0, 600) - t0))
                in_flight = agent.agent.config.max_in_flight
            finally:
                agent.close()
        gallery.exports_done()
    finally:
        gallery.stop()
    tally = gallery.tally(station, saved)
    return rates, {"tally": tally, "max_in_flight": in_flight, "jpeg": len(face[0])}


# ------------------------------------------------------------------------------------------- backlog
def build_backlog(workdir: Path, broker: Any, n: int) -> tuple[Any, set[str]]:
    """A station with ``n`` realistic bookings pending (its data folder is copied for each backend)."""
    from tests.sync import factory

    station = factory.make_station(workdir / "st-backlog", broker.pki, broker.host, broker.port, name="st-50",
                                   signing_key=factory.key(50), reconnect_max=10.0)
    images = booking_images()
    store = station.open_store()
    store.conn.execute("PRAGMA synchronous = OFF")  # bulk set-up only; the agent's own writes stay FULL
    saved = {store_booking(store, i, images, station.name) for i in range(n)}
    store.close()
    return station, saved


def backlog(workdir: Path, broker: Any, backend: str, template: Any, saved: set[str]) -> dict[str, Any]:
    """Drain the backlog after an outage into a fresh gallery; seconds from reconnection to the last ack."""
    from tests.sync import factory

    root = workdir / f"st-backlog-{backend}"
    shutil.copytree(template.data_dir.parent, root)
    station = factory.make_station(root, broker.pki, broker.host, broker.port, name=template.name,
                                   signing_key=template.signing_key, reconnect_max=10.0)
    gallery = Gallery(workdir, backend, f"backlog-{backend}")
    gallery.register(station)
    broker.stop()  # the outage: the station cannot reach the county
    agent = factory.AgentThread(station)
    agent.start(ready_timeout=None)
    try:
        time.sleep(2.0)  # let the agent's reconnect backoff grow a little, as in a real outage
        broker.start()
        gallery.start(broker)
        t_link = time.perf_counter()
        try:
            if not agent.agent.ready.wait(60):
                raise RuntimeError(f"agent did not reconnect: {agent.agent.last_error}")
            t_ready = time.perf_counter()
            t_done = _wait_acks(agent, len(saved), t_ready, 3600)
            t_exported = gallery.exports_done()
        finally:
            gallery.stop()
    finally:
        agent.close()
    return {"drain": t_done - t_ready, "backoff": t_ready - t_link, "exports": t_exported - t_ready,
            "tally": gallery.tally(station, saved), "max_in_flight": agent.agent.config.max_in_flight}


# ------------------------------------------------------------------------------------------- run
def _backends() -> list[str]:
    if PG.lower() == "none":
        return ["sqlite"]
    try:
        import psycopg

        psycopg.connect(PG, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional for the benchmark
        print(f"PostgreSQL at {PG} is not reachable ({exc}); SQLite only", flush=True)
        return ["sqlite"]
    return ["sqlite", "postgresql"]


def _ceiling_runs(broker: Any, size: int, n: int) -> float:
    return statistics.median(ceiling(broker, size, n) for _ in range(RUNS))


def run(threads: int, repeats: int) -> list[Result]:
    """Every sync figure with its ceiling (``repeats`` is not used: see ``BENCH_SYNC_RUNS``)."""
    if threads != 1:
        return []
    from tests.sync.broker import MosquittoBroker, make_pki

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        workdir = Path(tmp)
        pki = make_pki(workdir / "pki")
        broker = MosquittoBroker(workdir / "broker", pki, COUNTY)
        broker.start()
        try:
            results += _one_mb(workdir, broker)
            results += _realistic(workdir, broker)
        finally:
            broker.stop()
    return results


def _one_mb(workdir: Path, broker: Any) -> list[Result]:
    out = []
    measured = {b: throughput(workdir, broker, b, 10 + i) for i, b in enumerate(_backends())}
    size = max(m[1]["tally"]["payload_bytes"] for m in measured.values())
    top = _ceiling_runs(broker, size, RECORDS)
    out.append(Result("sync", "broker ceiling, 1 MB (paho pub+sub, mTLS, QoS 1)", 1, top, "rec/s", RUNS,
                      f"{size / 1e6:.2f} MB payloads, {RECORDS} per run, {top * size / 1e6:.0f} MB/s"))
    for backend, (rates, info) in measured.items():
        rate = statistics.median(rates)
        out.append(Result("sync", f"1 MB records end to end, {backend}", 1, rate, "rec/s", len(rates),
                          f"{rate / top:.0%} of the broker ceiling; runs {', '.join(f'{r:.1f}' for r in rates)}; "
                          f"max_in_flight {info['max_in_flight']}; {_verdict(info['tally'])}"))
    return out


def _realistic(workdir: Path, broker: Any) -> list[Result]:
    out = []
    template, saved = build_backlog(workdir, broker, BACKLOG)
    measured = {b: backlog(workdir, broker, b, template, saved) for b in _backends()}
    size = max(m["tally"]["payload_bytes"] for m in measured.values())
    top = _ceiling_runs(broker, size, min(BACKLOG, 1000))
    out.append(Result("sync", "broker ceiling, booking record size", 1, top, "rec/s", RUNS,
                      f"{size / 1e6:.2f} MB payloads; {BACKLOG} would take {BACKLOG / top:.1f} s"))
    for backend, m in measured.items():
        rate = BACKLOG / m["drain"]
        out.append(Result("sync", f"drain {BACKLOG:,} realistic bookings, {backend}", 1, m["drain"], "s", 1,
                          f"{rate:.0f} rec/s = {rate / top:.0%} of the ceiling; exports done at "
                          f"{m['exports']:.1f} s; reconnect backoff {m['backoff']:.1f} s (not included); "
                          f"max_in_flight {m['max_in_flight']}; {_verdict(m['tally'])}"))
    return out


if __name__ == "__main__":
    for result in run(1, 1):
        print(result)
