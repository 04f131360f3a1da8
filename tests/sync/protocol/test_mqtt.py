"""The MQTT client factory (sync.protocol.mqtt) against a real Mosquitto, over MQTT 5 and 3.1.1: typed
events, subscriptions made on connecting, MQTT 5 properties only where the protocol has them, and doctor's
probe resuming a station's session without consuming what the broker holds for it."""

from __future__ import annotations

import queue

import pytest

from sync.county.broker_config import gallery_identity
from sync.protocol import mqtt, topics
from tests.sync.broker import MosquittoBroker
from tests.sync.conftest import COUNTY


def _settings(broker: MosquittoBroker, cn: str, protocol: str, **kw: object) -> mqtt.Settings:
    cert, key = broker.pki.client(cn)
    return mqtt.Settings(host=broker.host, port=broker.port, client_id=cn, ca_file=str(broker.pki.ca_cert),
                         cert_file=str(cert), key_file=str(key), protocol=protocol, **kw)  # type: ignore[arg-type]


def _next(events: queue.Queue[mqtt.Event], kind: type, timeout: float = 10.0) -> mqtt.Event:
    while True:
        event = events.get(timeout=timeout)
        if isinstance(event, kind):
            return event


def test_settings_refuse_an_unknown_protocol() -> None:
    with pytest.raises(mqtt.MqttSetupError):
        mqtt.Settings(host="h", port=1, client_id="c", ca_file="a", cert_file="b", key_file="k", protocol="3.1")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_events_and_a_probe_that_leaves_the_station_session_alone(broker: MosquittoBroker, protocol: str) -> None:
    acks = topics.acks_topic(COUNTY, "st-01")
    station = _settings(broker, "st-01", protocol, subscriptions=((acks, 1),), manual_ack=True, auto_reconnect=False)
    events: queue.Queue[mqtt.Event] = queue.Queue()
    client = mqtt.Client(station, events, tag=7)
    client.connect()
    client.loop_start()
    connected = _next(events, mqtt.Connected)
    assert isinstance(connected, mqtt.Connected) and connected.client is client and client.tag == 7
    subscribed = _next(events, mqtt.Subscribed)
    assert isinstance(subscribed, mqtt.Subscribed) and not subscribed.failed
    client.disconnect()
    _next(events, mqtt.Disconnected)
    client.loop_stop()

    # The gallery acks while the station is away: the broker keeps it in the station's session.
    gallery_events: queue.Queue[mqtt.Event] = queue.Queue()
    gallery = mqtt.Client(_settings(broker, gallery_identity(COUNTY), protocol, clean_start=True, session_expiry=0),
                          gallery_events)
    gallery.connect()
    gallery.loop_start()
    _next(gallery_events, mqtt.Connected)
    info = gallery.publish(acks, b"held ack", content_type="application/cbor", correlation_data=b"r-1", expiry=60)
    published = _next(gallery_events, mqtt.Published)
    assert isinstance(published, mqtt.Published) and published.mid == info.mid and not published.reason.is_failure
    gallery.disconnect()
    gallery.loop_stop()

    # doctor's probe resumes the session and reads nothing past the CONNACK ...
    result = mqtt.probe(station, timeout=5)
    assert result.connected is not None and result.connected.session_present
    assert mqtt.probe(station, timeout=5, connect=False).connected is None

    # ... so the held ack is still there for the station's next connection.
    events = queue.Queue()
    client = mqtt.Client(station, events)
    client.connect()
    client.loop_start()
    try:
        message = _next(events, mqtt.Message)
        assert isinstance(message, mqtt.Message) and (message.topic, message.payload) == (acks, b"held ack")
        if protocol == "5":
            assert message.correlation_data == b"r-1" and message.properties.ContentType == "application/cbor"
        else:
            assert message.correlation_data is None
        client.ack(message.mid, message.qos)
    finally:
        client.disconnect()
        client.loop_stop()


def test_probe_failures_name_their_stage(broker: MosquittoBroker) -> None:
    station = _settings(broker, "st-01", "3.1.1")
    with pytest.raises(mqtt.ProbeError) as failed:
        mqtt.probe(mqtt.Settings(**{**station.__dict__, "key_file": "/nonexistent"}), timeout=2)
    assert failed.value.stage == "tls_files"
    broker.stop()
    with pytest.raises(mqtt.ProbeError) as failed:
        mqtt.probe(station, timeout=2)
    assert failed.value.stage == "refused"
