"""End to end: real bookings in the real store (real face JPEGs), the real sync agent, a real Mosquitto
with mutual TLS and the generated ACL, the real gallery receiver. Each record must arrive exactly once,
be acked, and show as delivered on the station; what the gallery refuses must show as such, with an
alarm, and nothing may be lost.

The security cases here are the device's side of them (the gallery's side is in test_gallery_broker.py):
a revoked station, a record id replayed with other content, an old payload replayed, and county
commands arriving over the broker (forged, expired, for another station, and a valid purge)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.store import Store, audit
from sync.county.broker_config import gallery_identity
from sync.protocol import topics, wire
from sync.protocol.enroll import default_command_kid
from sync.station.agent import ALARM_GALLERY_REFUSING, ALARM_RECORD_REJECTED, ALARM_RECORD_UNSENDABLE, encode_stored
from tests.sync import factory
from tests.sync.broker import PKI, MosquittoBroker, MqttTestClient, mosquitto_binary, start_gallery, stop_gallery
from tests.sync.conftest import COUNTY

FACE_FILES = ("img1.jpg", "img12.jpg", "img25.jpg", "img51.jpg", "img5.jpg", "img44.jpg", "img46.jpg", "img50.jpg")
OPS = gallery_identity(COUNTY, 2)  # a second county identity (the gallery's rights), to watch and command
KID = default_command_kid(COUNTY)


@pytest.fixture
def broker(tmp_path: Path, pki: PKI) -> Iterator[MosquittoBroker]:
    """The generated broker, with a second gallery identity for the county operator client."""
    if mosquitto_binary() is None:
        pytest.fail("Mosquitto is needed for the sync agent tests: apt-get install -y mosquitto")
    b = MosquittoBroker(tmp_path / "broker", pki, COUNTY, gallery_workers=2)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _station(tmp_path: Path, pki: PKI, broker: MosquittoBroker, **sync: Any) -> factory.Station:
    return factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, **{**factory.FAST, **sync})


@pytest.fixture
def station(tmp_path: Path, pki: PKI, broker: MosquittoBroker) -> factory.Station:
    return _station(tmp_path, pki, broker)


@pytest.fixture
def gallery(broker: MosquittoBroker, tmp_path: Path, station: factory.Station) -> Iterator[Any]:
    receiver = start_gallery(broker, tmp_path / "gallery.db", {station.name: station.signing_key})
    yield receiver
    stop_gallery(receiver)


@pytest.fixture
def store(station: factory.Station) -> Iterator[Store]:
    s = station.open_store()
    yield s
    s.close()


def real_face(i: int) -> tuple[bytes, int, int]:
    return factory.face_jpeg(FACE_FILES[i % len(FACE_FILES)])


def delivered_ids(store: Store) -> set[str]:
    return {e.record_id for e in store.queue("delivered")}


# ------------------------------------------------------------------------------------- delivery
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_twenty_bookings_arrive_once_acked_and_delivered(tmp_path: Path, pki: PKI, broker: MosquittoBroker,
                                                         protocol: str) -> None:
    station = _station(tmp_path, pki, broker, protocol=protocol)
    gallery = start_gallery(broker, tmp_path / "gallery.db", {station.name: station.signing_key})
    store = station.open_store()
    ids = [factory.store_booking(store, n, face=real_face(n), profiles=n % 2 == 0) for n in range(20)]
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: store.queue_counts()["delivered"] == 20, message="20 records delivered")
        # a booking saved while the agent runs is found and sent too
        late = factory.store_booking(store, 20, face=real_face(3))
        factory.wait_for(lambda: late in delivered_ids(store), message="the late booking delivered")
    finally:
        agent.close()
        stop_gallery(gallery)
    ids.append(late)
    gallery_store = factory_gallery_store(tmp_path)
    assert store.queue_counts() == {"pending": 0, "delivered": 21, "rejected": 0}
    assert {e.ack_status for e in store.queue("delivered")} == {"stored"}
    assert gallery_store.count_records() == 21 and gallery_store.list_rejections() == []
    for record_id in ids:
        payload = gallery_store.get_payload(record_id)
        assert payload is not None
        record = wire.decode_record(payload, lambda kid: station.signing_key.public_key())
        local = store.load_record(record_id)
        assert record.station == "st-01" and record.booking.booking_number == local.booking.booking_number
        assert [c.jpeg for c in record.captures] == [c.jpeg for c in local.captures]
        assert len(gallery_store.templates(record_id)) == 1
    assert agent.agent.stats["published"] == 21 and agent.agent.stats["acks_stored"] == 21
    gallery_store.close()
    store.close()


def factory_gallery_store(tmp_path: Path) -> Any:
    from sync.county.gallery.store import SQLiteStore

    return SQLiteStore(tmp_path / "gallery.db")


def test_status_is_retained_and_the_last_will_marks_the_station_offline(
    tmp_path: Path, station: factory.Station, gallery: Any, broker: MosquittoBroker, store: Store
) -> None:
    factory.store_booking(store, 1)
    ops = MqttTestClient(broker, OPS).connect()
    status_topic = topics.status_topic(COUNTY, station.name)
    log = tmp_path / "agent.log"

    def next_status(state: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = ops.next_message(timeout=20)
            body = json.loads(message.payload)
            if body["state"] == state:
                return body
        raise AssertionError(f"no {state} status")

    try:
        ops.subscribe(status_topic)
        child = factory.spawn_agent(station, log)
        online = next_status("online")
        assert (online["station"], online["county"], online["v"]) == ("st-01", COUNTY, 1)
        assert online["software"].startswith("booking-station ")
        assert set(online["queue"]) == {"pending", "delivered", "rejected"} and "oldest_pending_age_s" in online
        assert "last_ack_at" in online and "in_flight" in online and isinstance(online["alarms"], list)
        factory.wait_for(lambda: store.queue_counts()["delivered"] == 1, message="delivery")
        status = _status_json(station)
        assert status["agent"]["running"] and status["agent"]["connected"]
        assert status["queue"]["delivered"] == 1 and status["last_ack_at"] is not None
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        will = next_status("offline")
        assert (will["station"], will["reason"]) == ("st-01", "connection lost")
        child = factory.spawn_agent(station, log)
        next_status("online")
        child.send_signal(signal.SIGTERM)
        assert child.wait(20) == 0, log.read_text()
        stopped = next_status("offline")
        assert stopped["reason"] == "stopped" and stopped["queue"]["delivered"] == 1
        assert stopped["last_ack_at"] is not None
        assert _status_json(station)["agent"]["running"] is False
    finally:
        ops.close()
    # retained: whoever looks later still sees the last word
    later = MqttTestClient(broker, OPS).connect()
    try:
        later.subscribe(status_topic)
        message = later.next_message(10)
        assert message.retain and json.loads(message.payload)["reason"] == "stopped"
    finally:
        later.close()


def _status_json(station: factory.Station) -> dict[str, Any]:
    from click.testing import CliRunner

    from sync.station.cli import main as sync_cli

    r = CliRunner().invoke(sync_cli, ["status", "--json", "--config", str(station.config_path),
                                      "--data-dir", str(station.data_dir)])
    status = json.loads(r.output)
    # Exit 0 exactly when the agent runs and is connected (what monitoring checks).
    assert r.exit_code == (0 if status["agent"]["running"] and status["agent"]["connected"] else 1), r.output
    return status


def test_a_record_that_cannot_be_encoded_is_kept_alarmed_and_does_not_block_others(
    station: factory.Station, gallery: Any, store: Store
) -> None:
    from appliance.store import Booking, Capture

    jpeg, w, h = factory.small_face()
    bad = store.save_booking(Booking("WA0170000", "2026-BAD", "ofc-1", factory.T0, "st-01"),
                             [Capture.from_jpeg("frontal", jpeg, w, h, "ofc-1",
                                                quality=factory.too_deep_quality())])
    good = [factory.store_booking(store, n) for n in range(3)]
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: set(good) <= delivered_ids(store), message="the good records")
        factory.wait_for(lambda: ALARM_RECORD_UNSENDABLE in {a.name for a in store.active_alarms()},
                         message="the unsendable alarm")
    finally:
        agent.close()
    [entry] = store.queue("pending")
    assert entry.record_id == bad and entry.attempts >= 1 and "nested deeper" in (entry.last_error or "")
    assert gallery.store.get_record(bad) is None and store.load_record(bad).record_id == bad


# ------------------------------------------------------------------------------------- security
def test_a_revoked_station_is_refused_its_records_stay_queued_and_it_alarms(
    station: factory.Station, gallery: Any, store: Store
) -> None:
    gallery.store.revoke_device("st-01")
    ids = [factory.store_booking(store, n) for n in range(3)]
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: all(e.attempts >= 2 for e in store.queue("pending")), message="retries")
    finally:
        agent.close()
    # The gallery names no record in a refusal it could not verify, so none is marked rejected: they
    # stay pending (retried with backoff) and the supervisor sees why.
    assert store.queue_counts() == {"pending": 3, "delivered": 0, "rejected": 0}
    assert gallery.store.count_records() == 0
    assert {r.reason for r in gallery.store.list_rejections()} == {"revoked_device"}
    alarms = {a.name: a.message for a in store.active_alarms()}
    assert "revoked_device" in alarms[ALARM_GALLERY_REFUSING]
    assert all("revoked_device" in (e.last_error or "") for e in store.queue("pending"))
    assert {e.record_id for e in store.queue()} == set(ids)


def test_a_record_id_replayed_with_other_content_is_rejected_kept_and_alarmed(
    station: factory.Station, gallery: Any, store: Store
) -> None:
    """The gallery already holds this id with different content (e.g. a station restored from an old
    backup reused it, or someone replayed an id): it answers replay, naming the record."""
    rid = factory.store_booking(store, 1)
    other = factory.record("st-01", record_id=rid)
    payload = wire.encode_record(other, station.signing_key)
    gallery.store.insert_record(wire.verify_record(payload, lambda k: station.signing_key.public_key()), payload)
    fine = factory.store_booking(store, 2)
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: store.queue_counts()["rejected"] == 1 and fine in delivered_ids(store),
                         message="rejected + delivered")
        time.sleep(2 * factory.FAST["retry_cap"])  # a rejected record is never sent again
    finally:
        agent.close()
    [entry] = store.queue("rejected")
    assert entry.record_id == rid and entry.reject_reason is not None and entry.reject_reason.startswith("replay")
    assert store.load_record(rid).booking.booking_number == "2026-000001"  # kept, never deleted
    assert rid in {a.name: a.message for a in store.active_alarms()}[ALARM_RECORD_REJECTED]
    assert [e.details_dict["record_id"] for e in audit.entries(store.conn) if e.action == "delivery_rejected"] == [rid]
    assert [r.record_id for r in gallery.store.list_rejections()] == [rid]
    assert gallery.store.get_payload(rid) == payload  # the gallery's copy is untouched


def test_an_old_payload_replayed_on_the_wire_is_a_duplicate_and_changes_nothing(
    station: factory.Station, gallery: Any, store: Store, broker: MosquittoBroker
) -> None:
    rid = factory.store_booking(store, 1)
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: rid in delivered_ids(store), message="delivery")
    finally:
        agent.close()
    before = store.queue("delivered")
    old = encode_stored(store, rid, county=COUNTY, station="st-01", key=station.signing_key,
                        max_bytes=wire.DEFAULT_MAX_RECORD_BYTES)
    # someone holding the station's certificate replays the captured payload
    replayer = MqttTestClient(broker, "st-01").connect()
    try:
        replayer.subscribe(topics.acks_topic(COUNTY, "st-01"))
        replayer.publish(topics.records_topic(COUNTY, "st-01"), old)
        ack = wire.decode_ack(replayer.next_message(10).payload)
    finally:
        replayer.close()
    assert (ack.record_id, ack.status) == (rid, "duplicate")
    assert gallery.store.count_records() == 1
    agent = factory.AgentThread(station).start()  # the station meanwhile: nothing to change
    try:
        time.sleep(1.0)
    finally:
        agent.close()
    assert store.queue("delivered") == before


def _command(action: str, station: str = "st-01", **changes: Any) -> wire.WireCommand:
    now = dt.datetime.now(dt.timezone.utc)
    fields: dict[str, Any] = {"command_id": wire.uuid7(), "county": COUNTY, "station": station, "action": action,
                              "issued_at": now - dt.timedelta(seconds=30), "expires_at": now + dt.timedelta(hours=1),
                              "args": {}}
    fields.update(changes)
    return wire.WireCommand(**fields)


def test_county_commands_over_the_broker_are_verified_run_once_and_audited(
    station: factory.Station, store: Store, broker: MosquittoBroker
) -> None:
    """No gallery runs here, so the booking to purge is certainly still undelivered: a sealed
    booking must not be sent, and purging it must not wait for delivery."""
    keep = factory.store_booking(store, 1)
    sealed = factory.store_booking(store, 2)
    before = dt.datetime.now(dt.timezone.utc)
    purge = {"record_id": sealed, "reason": "sealed by court order"}
    forged = wire.encode_command(_command("purge", args=purge), factory.key(99), kid=KID)
    expired = wire.encode_command(
        _command("purge", args=purge, issued_at=before - dt.timedelta(days=3),
                 expires_at=before - dt.timedelta(days=2)),
        station.county_key, kid=KID)
    elsewhere = wire.encode_command(_command("purge", station="st-02", args=purge), station.county_key, kid=KID)
    valid = wire.encode_command(_command("purge", args=purge), station.county_key, kid=KID)
    ops = MqttTestClient(broker, OPS).connect()
    agent = factory.AgentThread(station)
    store.append_audit("test", "marker", {})  # audit entries after this one are the agent's
    [marker] = [e.seq for e in audit.entries(store.conn) if e.action == "marker"]
    try:
        agent.start()
        topic = topics.commands_topic(COUNTY, "st-01")
        for payload in (forged, expired, elsewhere, valid, valid):
            assert not ops.publish(topic, payload).is_failure
        factory.wait_for(lambda: len([e for e in audit.entries(store.conn, after_seq=marker)
                                      if e.action in ("command_applied", "command_refused")]) == 5,
                         message="five audited command outcomes")
    finally:
        agent.close()
        ops.close()
    outcomes = [(e.action, e.details_dict.get("code")) for e in audit.entries(store.conn, after_seq=marker)
                if e.action in ("command_applied", "command_refused")]
    assert outcomes == [("command_refused", "bad_signature"), ("command_refused", "expired"),
                        ("command_refused", "wrong_target"), ("command_applied", None),
                        ("command_refused", "duplicate")]
    purges = [e.details_dict for e in audit.entries(store.conn, after_seq=marker) if e.action == "purge"]
    assert len(purges) == 1 and purges[0]["record_ids"] == [sealed] and purges[0]["reason"] == "sealed by court order"
    assert purges[0]["states"] == {sealed: "pending"}
    assert [e.record_id for e in store.queue()] == [keep]


def test_a_station_the_broker_refuses_keeps_its_records_and_alarms(
    station: factory.Station, gallery: Any, store: Store, pki: PKI
) -> None:
    """The station presents a certificate for another identity (the broker ACL is keyed on the CN;
    the same happens to a station whose ACL entry county IT revoked): MQTT 5 PUBACK says 0x87."""
    import shutil

    from sync.station.agent import ALARM_BROKER_REFUSING

    cert, key = pki.client("st-09")
    shutil.copy(cert, station.data_dir / "keys" / "tls.crt")
    shutil.copy(key, station.data_dir / "keys" / "tls.key")
    factory.store_booking(store, 1)
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: ALARM_BROKER_REFUSING in {a.name for a in store.active_alarms()},
                         message="the broker alarm")
        factory.wait_for(lambda: store.queue("pending")[0].attempts >= 2, message="retries")
    finally:
        agent.close()
    assert store.queue_counts() == {"pending": 1, "delivered": 0, "rejected": 0}
    assert "Not authorized" in (store.queue("pending")[0].last_error or "")
    assert gallery.store.count_records() == 0
