"""The whole loop as a booking desk runs it: bookings captured through the capture session from a replay
camera (real face photos, real models, the shipped nist-sap30 profile), saved in the real encrypted store,
delivered by the real sync agent over a real Mosquitto with mutual TLS to the real gallery receiver, and
exported from the gallery as ANSI/NIST-ITL transactions that pass our validator."""

from __future__ import annotations

from pathlib import Path

from appliance.capture.session import CaptureStation
from appliance.config import StationConfig
from sync.county.gallery.export import export_stored
from sync.county.gallery.nist import decode_transaction
from sync.county.gallery.store import SQLiteStore
from sync.protocol import wire
from tests.sync import factory
from tests.sync.broker import PKI, MosquittoBroker, start_gallery, stop_gallery

FACES = ("img36.jpg", "img1.jpg", "img13.jpg", "img20.jpg", "img24.jpg")
ORI = "WA0170000"


def capture_booking(station: CaptureStation, faces_dir: Path, n: int, face: str) -> str:
    """One booking: frontal from a replay camera, auto-captured when the live gates pass, otherwise
    taken by hand and kept with an override reason (these are press photos, not booking backdrops)."""
    session = station.start_booking(ORI, f"2026-{n:06d}", "ofc-1187")
    try:
        session.open_camera(f"replay:{faces_dir / 'deepface' / face}")
        session.select_pose("frontal")
        review = session.capture()
        session.accept(override_reason=None if review.passed else "end-to-end test photo")
        return session.save()
    finally:
        session.close()


def test_bookings_captured_on_a_replay_camera_reach_the_gallery_once(
    tmp_path: Path, pki: PKI, broker: MosquittoBroker, faces_dir: Path
) -> None:
    station = factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, **factory.FAST)
    capture = CaptureStation.from_config(StationConfig(), data_dir=station.data_dir, station_id=station.name,
                                         store_options={"floor_bytes": 0})
    ids = [capture_booking(capture, faces_dir, n, face) for n, face in enumerate(FACES)]
    assert len(set(ids)) == len(FACES)

    gallery = start_gallery(broker, tmp_path / "gallery.db", {station.name: station.signing_key})
    store = station.open_store()
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: store.queue_counts()["delivered"] == len(ids), timeout=60,
                         message=f"{len(ids)} captured bookings delivered")
    finally:
        agent.close()
        stop_gallery(gallery)

    assert store.queue_counts() == {"pending": 0, "delivered": len(ids), "rejected": 0}
    assert agent.agent.stats["acks_stored"] == len(ids)
    gallery_store = SQLiteStore(tmp_path / "gallery.db")
    try:
        assert gallery_store.count_records() == len(ids) and gallery_store.list_rejections() == []
        public = station.signing_key.public_key()
        for record_id in ids:
            record = wire.decode_record(gallery_store.get_payload(record_id), lambda kid: public)
            local = store.load_record(record_id)
            frontal = next(c for c in record.captures if c.pose == "frontal")
            assert frontal.jpeg == next(c.jpeg for c in local.captures if c.pose == "frontal")
            assert frontal.template is not None and frontal.template.dim == 128
            assert record.booking.booking_number == local.booking.booking_number
            eft = export_stored(gallery_store, record_id)  # raises on any validation issue
            records = decode_transaction(eft)
            assert [r.type for r in records][:2] == [1, 2] and any(r.type == 10 for r in records)
    finally:
        gallery_store.close()
        store.close()
