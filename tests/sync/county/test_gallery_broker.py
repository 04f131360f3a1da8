"""End to end through a real Mosquitto with mutual TLS and the generated ACL: stations publish
signed records, the gallery verifies, commits and acks on the station's acks topic."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.broker_config import gallery_identity
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY

NOT_AUTHORIZED = 0x87


def _raw(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _start_gallery(
    broker: MosquittoBroker,
    tmp_path: Path,
    station_keys: dict[str, Any],
    *,
    protocol: str = "5",
    max_record_bytes: int = wire.DEFAULT_MAX_RECORD_BYTES,
) -> GalleryReceiver:
    store = SQLiteStore(tmp_path / "gallery.db")
    for station, key in station_keys.items():
        store.register_device(station, COUNTY, _raw(key))
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = ReceiverConfig(
        county=COUNTY,
        ca_file=str(broker.pki.ca_cert),
        cert_file=str(cert),
        key_file=str(key),
        host=broker.host,
        port=broker.port,
        protocol=protocol,
        max_record_bytes=max_record_bytes,
    )
    receiver = GalleryReceiver(config, store)
    receiver.start()
    assert receiver.wait_ready(10), f"gallery did not subscribe:\n{broker.logs()}"
    return receiver


@pytest.fixture
def gallery(broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]) -> Iterator[GalleryReceiver]:
    receiver = _start_gallery(broker, tmp_path, station_keys)
    try:
        yield receiver
    finally:
        receiver.stop()
        receiver.store.close()


def _station(broker: MosquittoBroker, name: str, *, protocol: str = "5") -> MqttTestClient:
    client = MqttTestClient(broker, name, protocol=protocol).connect()
    codes = client.subscribe(topics.acks_topic(COUNTY, name))
    assert not codes[0].is_failure, codes
    return client


def _ack(client: MqttTestClient, timeout: float = 10.0) -> wire.Ack:
    message = client.next_message(timeout)
    assert message.topic == topics.acks_topic(COUNTY, client.cn)
    return wire.decode_ack(message.payload)


def test_record_is_stored_then_acked_and_a_repeat_is_a_duplicate(
    broker: MosquittoBroker, gallery: GalleryReceiver, station_keys: dict[str, Any]
) -> None:
    face, width, height = factory.face_jpeg("img1.jpg")
    frontal = wire.WireCapture.build("frontal", face, width, height, quality={"yaw": 1.0}, template=factory.template())
    rec = factory.record("st-01", captures=(frontal, factory.capture("right_profile")))
    payload = wire.encode_record(rec, station_keys["st-01"])
    st1 = _station(broker, "st-01")
    try:
        assert st1.publish(topics.records_topic(COUNTY, "st-01"), payload, correlation=b"c1").value == 0
        message = st1.next_message(10)
        # MQTT 5 extras when present: content type, the station's correlation data echoed, an expiry
        assert message.properties.ContentType == wire.ACK_CONTENT_TYPE
        assert message.properties.CorrelationData == b"c1"
        assert 0 < message.properties.MessageExpiryInterval <= 86400
        assert message.qos == 1 and not message.retain
        ack = wire.decode_ack(message.payload)
        assert (ack.record_id, ack.status, ack.reason) == (rec.record_id, "stored", None)
        stored = gallery.store.get_record(rec.record_id)
        assert stored is not None and stored.capture_count == 2 and stored.booking_number == "2026-000123"
        assert gallery.store.get_payload(rec.record_id) == payload
        assert [t.pose for t in gallery.store.templates(rec.record_id)] == ["frontal"]

        st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
        ack = _ack(st1)
        assert (ack.record_id, ack.status) == (rec.record_id, "duplicate")
        assert gallery.store.count_records() == 1
    finally:
        st1.close()


def test_bad_payloads_are_rejected_with_a_reason_and_the_worker_keeps_serving(
    broker: MosquittoBroker, gallery: GalleryReceiver, station_keys: dict[str, Any]
) -> None:
    st1 = _station(broker, "st-01")
    topic = topics.records_topic(COUNTY, "st-01")
    try:
        forged = wire.encode_record(factory.record("st-01"), factory.key(99))
        replay_base = factory.record("st-01")
        replayed = wire.encode_record(
            factory.record(
                "st-01",
                record_id=replay_base.record_id,
                booking=factory.record().booking.__class__(
                    ori="WA0170000", booking_number="OTHER-1", operator="ofc-1", captured_at=factory.T0
                ),
            ),
            station_keys["st-01"],
        )
        cases: list[tuple[bytes, str, str | None]] = [
            (forged, "bad_signature", None),
            (b"\x00garbage\xff" * 10, "not_cbor", None),
            (json.dumps({"record_id": "x"}).encode(), "not_cbor", None),
            (cbor2.dumps({"record_id": "x"}), "not_cose_sign1", None),
            (b"", "not_cbor", None),
            # signed by st-02's real key but sent on st-01's topic
            (wire.encode_record(factory.record("st-02"), station_keys["st-02"]), "kid_mismatch", None),
        ]
        st1.publish(topic, wire.encode_record(replay_base, station_keys["st-01"]))
        assert _ack(st1).status == "stored"
        cases.append((replayed, "replay", replay_base.record_id))
        for payload, reason, record_id in cases:
            st1.publish(topic, payload)
            ack = _ack(st1)
            assert (ack.status, ack.reason, ack.record_id) == ("rejected", reason, record_id), ack
            assert ack.detail
        # still serving
        good = factory.record("st-01")
        st1.publish(topic, wire.encode_record(good, station_keys["st-01"]))
        ack = _ack(st1)
        assert (ack.record_id, ack.status) == (good.record_id, "stored")
        assert gallery.store.count_records() == 2
        # one row per station and reason, counting every refused payload
        counted = {r.reason: r.count for r in gallery.store.list_rejections()}
        assert counted == dict(Counter(reason for _, reason, _ in cases))
        assert gallery.stats.counts["errors"] == 0
    finally:
        st1.close()


def test_unknown_and_revoked_stations_are_rejected(
    broker: MosquittoBroker, gallery: GalleryReceiver, station_keys: dict[str, Any]
) -> None:
    unknown = _station(broker, "st-09")  # a valid certificate, but not in the gallery registry
    st2 = _station(broker, "st-02")
    try:
        unknown.publish(
            topics.records_topic(COUNTY, "st-09"), wire.encode_record(factory.record("st-09"), factory.key(9))
        )
        ack = _ack(unknown)
        assert (ack.status, ack.reason, ack.record_id) == ("rejected", "unknown_station", None)

        gallery.store.revoke_device("st-02")
        st2.publish(
            topics.records_topic(COUNTY, "st-02"), wire.encode_record(factory.record("st-02"), station_keys["st-02"])
        )
        ack = _ack(st2)
        assert (ack.status, ack.reason) == ("rejected", "revoked_device")
        assert gallery.store.count_records() == 0
    finally:
        unknown.close()
        st2.close()


def test_oversize_payload_is_rejected_by_the_gallery(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    receiver = _start_gallery(broker, tmp_path, station_keys, max_record_bytes=4096)
    st1 = _station(broker, "st-01")
    try:
        face, width, height = factory.face_jpeg("img12.jpg")  # ~20 kB
        rec = factory.record("st-01", captures=(wire.WireCapture.build("frontal", face, width, height),))
        st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(rec, station_keys["st-01"]))
        ack = _ack(st1)
        assert (ack.status, ack.reason, ack.record_id) == ("rejected", "oversize", None)
        small = factory.record("st-01", captures=(factory.capture("frontal", template=None),))
        st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(small, station_keys["st-01"]))
        assert _ack(st1).status == "stored"
    finally:
        st1.close()
        receiver.stop()
        receiver.store.close()


def test_broker_refuses_publishing_on_another_stations_records_topic(
    broker: MosquittoBroker, gallery: GalleryReceiver, station_keys: dict[str, Any]
) -> None:
    st1 = _station(broker, "st-01")
    try:
        payload = wire.encode_record(factory.record("st-02"), station_keys["st-02"])
        rc = st1.publish(topics.records_topic(COUNTY, "st-02"), payload)
        assert rc.value == NOT_AUTHORIZED, rc
        # and it never reached the gallery: a following good record is the next thing it sees
        good = factory.record("st-01")
        st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(good, station_keys["st-01"]))
        assert _ack(st1).record_id == good.record_id
        assert gallery.store.count_records() == 1 and gallery.store.list_rejections() == []
    finally:
        st1.close()


def test_station_cannot_read_another_stations_acks_or_publish_acks(
    broker: MosquittoBroker, gallery: GalleryReceiver, station_keys: dict[str, Any]
) -> None:
    st1 = _station(broker, "st-01")
    st2 = _station(broker, "st-02")
    try:
        # Mosquitto 2.0 with an acl_file grants every SUBACK and applies "read" rules when it
        # delivers (newer brokers or plugins may answer 0x87 instead): either way nothing arrives.
        for topic in (topics.acks_topic(COUNTY, "st-02"), f"booking/v1/{COUNTY}/+/acks", "#"):
            codes = st1.subscribe(topic)
            assert codes[0].value in (NOT_AUTHORIZED, 1), codes
        # st-02's real ack goes to st-02 only
        rec = factory.record("st-02")
        st2.publish(topics.records_topic(COUNTY, "st-02"), wire.encode_record(rec, station_keys["st-02"]))
        assert _ack(st2).record_id == rec.record_id
        assert st1.no_message(0.5)
        # a station cannot forge an ack for another station (or itself)
        fake = wire.encode_ack(wire.Ack(wire.uuid7(), "stored"))
        assert st1.publish(topics.acks_topic(COUNTY, "st-02"), fake).value == NOT_AUTHORIZED
        assert st1.publish(topics.acks_topic(COUNTY, "st-01"), fake).value == NOT_AUTHORIZED
        assert st2.no_message(0.5)
    finally:
        st1.close()
        st2.close()


def test_protocol_works_over_mqtt_311(broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]) -> None:
    receiver = _start_gallery(broker, tmp_path, station_keys, protocol="3.1.1")
    st1 = _station(broker, "st-01", protocol="3.1.1")
    try:
        rec = factory.record("st-01")
        st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(rec, station_keys["st-01"]))
        ack = _ack(st1)
        assert (ack.record_id, ack.status) == (rec.record_id, "stored")
    finally:
        st1.close()
        receiver.stop()
        receiver.store.close()


def _wait_ready(receiver: GalleryReceiver, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not receiver.wait_ready(0.1):
        assert time.monotonic() < deadline, "gallery did not resubscribe"


def test_records_sent_while_the_gallery_is_down_arrive_when_it_returns(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    """The gallery's persistent session makes the broker queue records while it restarts."""
    first = _start_gallery(broker, tmp_path, station_keys)
    first.stop()
    first.store.close()
    st1 = _station(broker, "st-01")
    receiver = None
    try:
        recs = [factory.record("st-01") for _ in range(3)]
        for rec in recs:
            assert (
                st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(rec, station_keys["st-01"])).value
                == 0
            )
        receiver = GalleryReceiver(first.config, SQLiteStore(tmp_path / "gallery.db"))
        receiver.start()
        acks = [_ack(st1) for _ in recs]
        assert {a.record_id for a in acks} == {r.record_id for r in recs}
        assert {a.status for a in acks} == {"stored"}
    finally:
        st1.close()
        if receiver is not None:
            receiver.stop()
            receiver.store.close()


def test_broker_crash_loses_queued_records_but_the_station_resend_recovers_them(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    """SIGKILL the broker while it holds records for a stopped gallery: the broker queue is gone
    (persistence saves once a minute), but the station, which got no gallery ack, publishes again
    from its outbox and each record ends up stored exactly once. The gallery reconnects by itself."""
    gallery_one = _start_gallery(broker, tmp_path, station_keys)
    recs = [factory.record("st-01") for _ in range(4)]
    payloads = [wire.encode_record(r, station_keys["st-01"]) for r in recs]
    st1 = _station(broker, "st-01")
    try:
        st1.publish(topics.records_topic(COUNTY, "st-01"), payloads[0])
        assert _ack(st1).status == "stored"
        gallery_one.stop()  # gallery away; the next three wait in the broker's memory
        for payload in payloads[1:]:
            st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
        st1.close()
        broker.restart(hard=True)
        receiver = GalleryReceiver(gallery_one.config, gallery_one.store)
        receiver.start()
        _wait_ready(receiver)
        st1 = _station(broker, "st-01")
        # the station's outbox still holds all four undelivered-or-unconfirmed records: resend
        for payload in payloads:
            st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
        acks = {}
        deadline = time.monotonic() + 15
        while len(acks) < len(recs) and time.monotonic() < deadline:
            ack = _ack(st1)
            acks[ack.record_id] = ack.status
        assert set(acks) == {r.record_id for r in recs}
        assert acks[recs[0].record_id] == "duplicate"
        assert receiver.store.count_records() == 4
        # a graceful broker restart: the gallery reconnects and resubscribes on its own
        st1.close()
        broker.restart()
        _wait_ready(receiver)
        st1 = _station(broker, "st-01")
        late = factory.record("st-01")
        st1.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(late, station_keys["st-01"]))
        assert _ack(st1, timeout=15).record_id == late.record_id
        assert receiver.store.count_records() == 5
        receiver.stop()
    finally:
        st1.close()
        gallery_one.store.close()


class _FailOnceStore(SQLiteStore):
    """A store whose first insert (single or group commit) blows up with an unexpected exception."""

    failed = False

    def _fail_once(self) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("disk I/O error (simulated)")

    def insert_record(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_once()
        return super().insert_record(*args, **kwargs)

    def insert_records(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_once()
        return super().insert_records(*args, **kwargs)


def test_an_exception_in_the_handler_does_not_kill_the_worker(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    store = _FailOnceStore(tmp_path / "flaky.db")
    store.register_device("st-01", COUNTY, _raw(station_keys["st-01"]))
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = ReceiverConfig(
        county=COUNTY,
        ca_file=str(broker.pki.ca_cert),
        cert_file=str(cert),
        key_file=str(key),
        host=broker.host,
        port=broker.port,
    )
    receiver = GalleryReceiver(config, store)
    receiver.start()
    assert receiver.wait_ready(10)
    st1 = _station(broker, "st-01")
    try:
        rec = factory.record("st-01")
        payload = wire.encode_record(rec, station_keys["st-01"])
        st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
        assert st1.no_message(1.0)  # nothing committed, so no ack: the station will retry
        assert receiver.stats.counts["errors"] == 1
        st1.publish(topics.records_topic(COUNTY, "st-01"), payload)  # the retry
        ack = _ack(st1)
        assert (ack.record_id, ack.status) == (rec.record_id, "stored")
    finally:
        st1.close()
        receiver.stop()
        store.close()
