"""The receiver's per-message decision and its config, without a broker."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig, ReceiverConfigError
from sync.county.gallery.store import GalleryStoreError, SQLiteStore
from sync.protocol import mqtt, wire
from tests.sync import factory

KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
TOPIC = "booking/v1/king/st-01/records"


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", "king", RAW)
    store.register_device(
        "st-03",
        "pierce",
        factory.key(3).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )
    config = ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k", max_record_bytes=200_000)
    r = GalleryReceiver(config, store, clock=lambda: dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc))
    yield r
    store.close()


def test_good_record_is_stored_and_acked_on_the_station_topic(receiver: GalleryReceiver) -> None:
    rec = factory.record()
    out = receiver.handle(TOPIC, wire.encode_record(rec, KEY))
    assert out.ack == wire.Ack(rec.record_id, "stored")
    assert out.ack_topic == "booking/v1/king/st-01/acks"
    assert receiver.store.get_record(rec.record_id) is not None
    assert receiver.stats.counts["stored"] == 1


def test_a_schema_1_record_from_a_station_not_yet_updated_is_stored(receiver: GalleryReceiver) -> None:
    rec = replace(factory.record(), schema=1)
    payload = wire.encode_record(rec, KEY)
    assert isinstance(cbor2.loads(payload), cbor2.CBORTag)  # the old framing: photos inside the signed bytes
    assert receiver.handle(TOPIC, payload).ack == wire.Ack(rec.record_id, "stored")
    assert receiver.store.get_payload(rec.record_id) == payload
    # its ack was lost and the updated station sends it again in schema 2: a repeat, not a replay
    again = wire.encode_record(replace(rec, schema=2), KEY)
    assert receiver.handle(TOPIC, again).ack == wire.Ack(rec.record_id, "duplicate")
    assert receiver.store.count_records() == 1


def test_a_photo_changed_beside_the_signature_is_refused_and_nothing_is_stored(receiver: GalleryReceiver) -> None:
    rec = factory.record()
    signed, jpegs = cbor2.loads(wire.encode_record(rec, KEY))
    flipped = bytearray(jpegs[1])
    flipped[-10] ^= 0x40  # one bit of one byte of the second photo
    out = receiver.handle(TOPIC, cbor2.dumps([signed, [jpegs[0], bytes(flipped), *jpegs[2:]]]))
    assert out.ack is not None and out.ack.status == "rejected" and out.ack.reason == "unsigned_jpeg"
    assert out.ack.record_id is None  # the station keeps the record and sends it again
    assert out.ack.detail is not None and "captures[1]" in out.ack.detail and "changed on the way" in out.ack.detail
    assert receiver.store.count_records() == 0
    assert receiver.handle(TOPIC, wire.encode_record(rec, KEY)).ack == wire.Ack(rec.record_id, "stored")


@pytest.mark.parametrize(
    ("topic", "payload_fn", "reason"),
    [
        (
            "booking/v1/king/st-02/records",
            lambda: wire.encode_record(factory.record("st-02"), factory.key(2)),
            "unknown_station",
        ),
        (
            "booking/v1/king/st-03/records",
            lambda: wire.encode_record(factory.record("st-03"), factory.key(3)),
            "wrong_county",
        ),
        (TOPIC, lambda: b"\x00" * 200_001, "oversize"),
        (TOPIC, lambda: wire.encode_record(factory.record(county="pierce"), KEY), "county_mismatch"),
        (
            TOPIC,
            lambda: wire.sign1(b"\xa0", content_type=wire.RECORD_CONTENT_TYPE, kid="st-02", key=KEY),
            "kid_mismatch",
        ),
        (TOPIC, lambda: b"\xd2\x84", "not_cbor"),
    ],
)
def test_refusals_are_acked_and_logged(receiver: GalleryReceiver, topic: str, payload_fn: Any, reason: str) -> None:
    out = receiver.handle(topic, payload_fn())
    assert out.ack is not None and out.ack.status == "rejected" and out.ack.reason == reason
    assert out.ack_topic == topic.replace("/records", "/acks")
    wire.encode_ack(out.ack)  # the ack itself is valid on the wire
    [logged] = receiver.store.list_rejections()
    assert logged.reason == reason and logged.topic == topic
    assert receiver.store.count_records() == 0


@pytest.mark.parametrize(
    "topic",
    [
        "booking/v1/pierce/st-01/records",
        "booking/v1/king/st-01/status",
        "weird/topic",
        "booking/v1/king/ST\x00/records",
    ],
)
def test_topics_outside_this_county_records_are_logged_but_not_acked(receiver: GalleryReceiver, topic: str) -> None:
    out = receiver.handle(topic, b"x")
    assert out.ack is None
    [logged] = receiver.store.list_rejections()
    assert logged.reason == "bad_topic" and "\x00" not in logged.topic


def test_ack_detail_never_carries_control_characters(receiver: GalleryReceiver) -> None:
    obj = wire.record_as_map(factory.record())
    obj["captures"][0]["pose"] = "evil\x1b[2J\u202e"
    payload = wire.sign1(
        cbor2.dumps(obj, datetime_as_timestamp=True), content_type=wire.RECORD_CONTENT_TYPE, kid="st-01", key=KEY
    )
    out = receiver.handle(TOPIC, payload)
    assert out.ack is not None and out.ack.reason == "unknown_pose"
    assert wire.decode_ack(wire.encode_ack(out.ack)) == out.ack


class _Client:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        self.published.append((topic, payload))


def test_on_message_never_raises_and_sends_no_ack_when_the_store_fails(receiver: GalleryReceiver) -> None:
    def broken(*a: Any, **k: Any) -> Any:
        raise GalleryStoreError("database is locked")

    receiver.store.insert_record = broken  # type: ignore[method-assign]
    client = _Client()
    receiver._on_message(mqtt.Message(TOPIC, wire.encode_record(factory.record(), KEY), client=client))
    assert client.published == []  # the station gets no ack and will retry
    assert receiver.stats.counts["errors"] == 1

    receiver._on_message(mqtt.Message(TOPIC, b"garbage", client=client))
    [(topic, body)] = client.published
    assert topic.endswith("/acks") and wire.decode_ack(body).reason == "not_cbor"


def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "receiver.toml"
    path.write_text(
        '[broker]\nhost = "mqtt.king.example"\nport = 8883\nprotocol = "3.1.1"\n'
        'ca_file = "tls/ca.crt"\ncert_file = "tls/gallery.crt"\nkey_file = "tls/gallery.key"\n'
        '[gallery]\ncounty = "king"\ndb = "/srv/gallery.db"\n'
    )
    cfg = ReceiverConfig.from_toml(path)
    assert (cfg.host, cfg.protocol, cfg.county, cfg.db) == ("mqtt.king.example", "3.1.1", "king", "/srv/gallery.db")
    assert cfg.ca_file == str(tmp_path / "tls" / "ca.crt")
    assert cfg.client_id == "gallery.king"
    path.write_text('[gallery]\ncounty = "king"\ncolour = "blue"\n')
    with pytest.raises(ReceiverConfigError, match="colour"):
        ReceiverConfig.from_toml(path)
    path.write_text("[gallery\n")
    with pytest.raises(ReceiverConfigError):
        ReceiverConfig.from_toml(path)
    with pytest.raises(ReceiverConfigError):
        ReceiverConfig(county="king", ca_file="a", cert_file="b", key_file="c", protocol="3.1")


def test_shipped_example_config_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "sync" / "county" / "gallery" / "receiver.example.toml"
    cfg = ReceiverConfig.from_toml(example)
    assert (cfg.county, cfg.port, cfg.protocol, cfg.max_record_bytes) == (
        "king-county",
        8883,
        "5",
        wire.DEFAULT_MAX_RECORD_BYTES,
    )


def test_gallery_side_imports_no_appliance_or_vision_code() -> None:
    """The gallery runs on a server with no camera and no vision stack."""
    import subprocess
    import sys

    code = (
        "import sys, sync.protocol.wire, sync.protocol.topics, sync.county.broker_config, sync.county.gallery.store, "
        "sync.county.gallery.receiver, sync.county.gallery.devices, sync.county.gallery.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('appliance', 'cv2', 'numpy', 'ai_edge_litert')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    repo = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
