"""The booking-time check end to end: the station's spool, its real sync agent, a real Mosquitto with the
generated ACL, the real gallery worker answering from a FAISS index over a SQLite gallery.

The gallery holds two earlier bookings whose frontal template is the probe's, and one far away; the
answer names the two (nearest first) and both sides audit. A station cannot ask on another station's
topic, nor have the answer sent to another station; with the gallery down the booking goes on and the
screen says the check was not done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from appliance.store import audit
from sync.county.broker_config import gallery_identity
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.county.search.booking_check import BookingCheckResponder
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from sync.protocol import check, topics, wire
from sync.protocol.enroll import default_command_kid
from sync.station.checks import CheckSpool
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY

MODEL = "dlib-resnet-v1@1"


def _unit(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(128).astype("<f4")
    return vec / np.linalg.norm(vec)


PROBE = _unit(5)


def _record(booking: str, vec: np.ndarray, day: int) -> tuple[wire.WireRecord, bytes]:
    cap = factory.capture("frontal", template=wire.WireTemplate(MODEL, 128, vec.astype("<f4").tobytes()))
    rec = factory.record(booking=wire.WireBooking("WA0170000", booking, "ofc-1", factory.T0.replace(day=day)),
                         captures=(cap,))
    return rec, wire.encode_record(rec, factory.key(1))


def _gallery(tmp_path: Path, broker: MosquittoBroker, county_key: Any) -> GalleryReceiver:
    store = SQLiteStore(tmp_path / "g.db")
    for n, station in ((1, "st-01"), (2, "st-02")):
        raw = factory.key(n).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        store.register_device(station, COUNTY, raw)
    near = PROBE + 0.02 * _unit(6)
    for booking, vec, day in (("2024-0001", PROBE, 3), ("2025-0042", near / np.linalg.norm(near), 4),
                              ("2025-0099", _unit(7), 5)):
        _, payload = _record(booking, vec, day)
        store.insert_record(wire.verify_record(payload, lambda kid: factory.key(1).public_key()), payload)
    index = open_index(SearchSettings(folder=tmp_path / "search"), str(tmp_path / "g.db"))
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = ReceiverConfig(county=COUNTY, ca_file=str(broker.pki.ca_cert), cert_file=str(cert), key_file=str(key),
                            host=broker.host, port=broker.port)
    receiver = GalleryReceiver(config, store)
    receiver.index = index
    receiver.checks = BookingCheckResponder(store, index, county=COUNTY, key=county_key,
                                            kid=default_command_kid(COUNTY))
    receiver.start()
    assert receiver.wait_ready(15), broker.logs()
    return receiver


def _wait_final(spool: CheckSpool, request_id: str, asked: float, timeout: float) -> Any:
    deadline = time.monotonic() + timeout + 10
    while time.monotonic() < deadline:
        status = spool.status(request_id, asked_at=asked, timeout=timeout)
        if status.final:
            return status
        time.sleep(0.05)
    raise AssertionError("the check never ended")


def _station_audit(store: Any, action: str) -> list[dict[str, Any]]:
    return [e.details_dict for e in audit.entries(store.conn) if e.action == action]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_gallery_names_prior_bookings_of_the_face(tmp_path: Path, broker: MosquittoBroker, pki: Any,
                                                      protocol: str) -> None:
    station = factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, protocol=protocol,
                                   booking_check=True, booking_check_timeout=8.0, **factory.FAST)
    receiver = _gallery(tmp_path, broker, station.county_key)
    agent = factory.AgentThread(station).start()
    store = station.open_store()
    try:
        spool = CheckSpool(station.data_dir)
        assert spool.timeout() == 8.0  # the agent carries checks
        asked = time.time()
        request_id = spool.ask(PROBE.tolist(), MODEL)
        status = _wait_final(spool, request_id, asked, 8.0)
        assert status.state == "answered", status
        assert [(p["booking_number"], p["ori"], p["captured_on"]) for p in status.priors] == [
            ("2024-0001", "WA0170000", "2026-03-03"), ("2025-0042", "WA0170000", "2026-03-04")]
        assert "Possible prior bookings" in status.message
        [gallery_audit] = receiver.store.list_audit(action="booking_check")
        assert gallery_audit.subject == "st-01" and gallery_audit.details["request_id"] == request_id
        factory.wait_for(lambda: _station_audit(store, "booking_check_answered"), message="the station's audit")
        assert _station_audit(store, "booking_check_asked")[0]["request_id"] == request_id
        assert _station_audit(store, "booking_check_answered")[0]["priors"] == ["WA0170000/2024-0001",
                                                                               "WA0170000/2025-0042"]
    finally:
        agent.close()
        store.close()
        receiver.stop()
        receiver.store.close()


def test_the_acl_keeps_checks_on_the_station_own_topics(tmp_path: Path, broker: MosquittoBroker, pki: Any) -> None:
    county_key = factory.key(factory.COUNTY_COMMAND_KEY_SEED)
    receiver = _gallery(tmp_path, broker, county_key)
    st1 = MqttTestClient(broker, "st-01").connect()
    st2 = MqttTestClient(broker, "st-02").connect()
    try:
        st2.subscribe(topics.answers_topic(COUNTY, "st-02"))
        st1.subscribe(topics.answers_topic(COUNTY, "st-02"))  # granted by Mosquitto 2.0, but never delivered

        def request(station: str, key: Any, reply_to: str | None = None) -> bytes:
            req = check.CheckRequest(wire.uuid7(), COUNTY, station,
                                     wire.WireTemplate(MODEL, 128, PROBE.astype("<f4").tobytes()),
                                     dt.datetime.now(dt.timezone.utc), reply_to)
            return check.encode_request(req, key)

        # st-01 writes on st-02's checks topic (even with st-02's own signed request): the broker drops it
        st1.publish(topics.checks_topic(COUNTY, "st-02"), request("st-02", factory.key(2),
                                                                  topics.answers_topic(COUNTY, "st-02")))
        # st-01 on its own topic, asking for the answer on st-02's answers topic: the gallery refuses
        st1.publish(topics.checks_topic(COUNTY, "st-01"), request("st-01", factory.key(1),
                                                                  topics.answers_topic(COUNTY, "st-02")))
        factory.wait_for(lambda: receiver.store.list_audit(action="booking_check_refused"),
                         message="the refusal of the bad response topic")
        assert receiver.store.list_audit(action="booking_check_refused")[0].details["reason"] == "bad_reply_topic"
        assert st2.no_message(1.0) and st1.no_message(0.2)
        assert receiver.store.list_audit(action="booking_check") == []  # nothing was answered
        # st-02 asking on its own topic is answered, to st-02 only (3.1.1 style reply_to)
        st2.publish(topics.checks_topic(COUNTY, "st-02"), request("st-02", factory.key(2),
                                                                  topics.answers_topic(COUNTY, "st-02")))
        message = st2.next_message(10)
        answer = check.decode_answer(message.payload, lambda kid: county_key.public_key(), county=COUNTY,
                                     station="st-02")
        assert answer.status == "answered" and answer.priors[0].booking_number == "2024-0001"
        assert st1.no_message(0.5)
    finally:
        st1.close()
        st2.close()
        receiver.stop()
        receiver.store.close()


def test_with_the_gallery_down_the_booking_goes_on(tmp_path: Path, broker: MosquittoBroker, pki: Any) -> None:
    station = factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, booking_check=True,
                                   booking_check_timeout=1.5, **factory.FAST)
    agent = factory.AgentThread(station).start()
    store = station.open_store()
    try:
        spool = CheckSpool(station.data_dir)
        asked = time.time()
        request_id = spool.ask(PROBE.tolist(), MODEL)
        status = _wait_final(spool, request_id, asked, 1.5)
        assert status.state == "not_done" and "was not done" in status.message and status.priors == []
        assert time.time() - asked >= 1.5
        factory.wait_for(lambda: _station_audit(store, "booking_check_asked"), message="the question's audit")
        assert not list(spool.folder.glob(f"{request_id}.*"))  # the UI forgot it
        # a booking is still saved and queued as always
        rid = factory.store_booking(store, 1)
        assert rid in [e.record_id for e in store.queue()]
    finally:
        agent.close()
        store.close()


def test_a_forged_or_misaddressed_answer_is_not_spooled(tmp_path: Path) -> None:
    from sync.station.checks import CheckCarrier

    seen: list[tuple[str, dict[str, Any]]] = []
    carrier = CheckCarrier(tmp_path, county=COUNTY, station="st-01", key=factory.key(1),
                           command_keys={default_command_kid(COUNTY): factory.key(77).public_key()}, v5=True,
                           audit=lambda a, d: seen.append((a, d)))
    carrier.enable(5.0)
    request_id = CheckSpool(tmp_path).ask(PROBE.tolist(), MODEL)
    [out] = list(carrier.outgoing())
    carrier.sent(out.request_id)
    good = check.CheckAnswer(request_id, COUNTY, "st-01", "answered", factory.T0, 3, ())
    forged = check.encode_answer(good, factory.key(99), kid=default_command_kid(COUNTY))
    other = check.encode_answer(dataclasses.replace(good, station="st-02"), factory.key(77),
                                kid=default_command_kid(COUNTY))
    assert not carrier.on_answer(forged) and not carrier.on_answer(other)
    assert [a for a, _ in seen] == ["booking_check_asked", "booking_check_answer_refused",
                                    "booking_check_answer_refused"]
    assert carrier.on_answer(check.encode_answer(good, factory.key(77), kid=default_command_kid(COUNTY)))
    status = CheckSpool(tmp_path).status(request_id, asked_at=time.time(), timeout=5)
    assert (status.state, status.priors) == ("answered", [])


def test_a_worker_answers_checks_only_when_county_toml_says_so(tmp_path: Path, monkeypatch: Any) -> None:
    from sync.county.config import CONFIG_ENV, CountyConfigError, load_county_config
    from sync.county.enroll.ca import CountyCA
    from sync.county.search.booking_check import responder_from_config

    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    store = SQLiteStore(tmp_path / "g.db")
    index = open_index(SearchSettings(folder=tmp_path / "search"), str(tmp_path / "g.db"))
    toml = tmp_path / "county.toml"
    monkeypatch.setenv(CONFIG_ENV, str(toml))
    try:
        toml.write_text('[ca]\ndir = "ca"\n')
        assert responder_from_config(store, index, COUNTY) is None  # off by default
        toml.write_text('[ca]\ndir = "ca"\n[search]\nbooking_check = true\nbooking_check_threshold = 0.5\n')
        responder = responder_from_config(store, index, COUNTY)
        assert responder is not None and (responder.kid, responder.threshold) == (f"county:{COUNTY}", 0.5)
        assert responder.photos is False  # photos only where the county's policy allows them
        toml.write_text('[ca]\ndir = "ca"\n[search]\nbooking_check = true\nbooking_check_photos = true\n')
        assert getattr(responder_from_config(store, index, COUNTY), "photos", None) is True
        assert responder_from_config(store, None, COUNTY) is None  # no index: nothing to answer from
        assert responder_from_config(store, index, "pierce") is None  # another county's CA
        # a copy of the key the worker's user may read, when the CA folder is not readable to it
        (tmp_path / "answers.key").write_bytes((ca.directory / "command-signing.key").read_bytes())
        toml.write_text('[search]\nbooking_check = true\nbooking_check_key = "answers.key"\n')
        responder = responder_from_config(store, index, COUNTY)
        assert responder is not None and responder.key.public_key() == ca.command_public_key
        toml.write_text('[search]\nbooking_check = true\nbooking_check_key = "missing.key"\n')
        assert responder_from_config(store, index, COUNTY) is None
        toml.write_text("[search]\nbooking_check = true\nbooking_check_threshold = 3\n")
        with pytest.raises(CountyConfigError, match="booking_check_threshold"):
            load_county_config(toml)
        toml.write_text('[search]\nbooking_check_photos = "yes"\n')
        with pytest.raises(CountyConfigError, match="booking_check_photos"):
            load_county_config(toml)
        assert ca.county == COUNTY
    finally:
        index.close()
        store.close()


def test_a_station_asking_far_more_than_a_desk_does_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", COUNTY, factory.key(1).public_key().public_bytes(serialization.Encoding.Raw,
                                                                                     serialization.PublicFormat.Raw))
    index = open_index(SearchSettings(folder=tmp_path / "search"), str(tmp_path / "g.db"))
    responder = BookingCheckResponder(store, index, county=COUNTY, key=factory.key(77), kid=f"county:{COUNTY}",
                                      max_per_minute=2)
    try:
        replies = []
        for _ in range(3):
            req = check.CheckRequest(wire.uuid7(), COUNTY, "st-01", wire.WireTemplate(MODEL, 128, PROBE.tobytes()),
                                     dt.datetime.now(dt.timezone.utc))
            payload = check.encode_request(req, factory.key(1))
            replies.append(responder.handle(topics.checks_topic(COUNTY, "st-01"), payload,
                                            response_topic=topics.answers_topic(COUNTY, "st-01"), correlation=b"x"))
        assert [r is not None for r in replies] == [True, True, False]
        assert replies[0].answer.status == "answered" and replies[0].answer.priors == ()  # an empty gallery
        assert store.list_audit(action="booking_check_refused")[0].details["reason"] == "rate_limited"
    finally:
        index.close()
        store.close()


def _photo_gallery(tmp_path: Path) -> tuple[SQLiteStore, Any]:
    """A gallery of two bookings of the probe's face, each frontal a real 1382x1868 face photo, and the
    index over it."""
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", COUNTY, factory.key(1).public_key().public_bytes(serialization.Encoding.Raw,
                                                                                     serialization.PublicFormat.Raw))
    for n, name in enumerate(("img1.jpg", "img2.jpg")):
        jpeg, width, height = factory.face_jpeg(name)
        cap = wire.WireCapture.build("frontal", jpeg, width, height,
                                     template=wire.WireTemplate(MODEL, 128, PROBE.astype("<f4").tobytes()))
        rec = factory.record(booking=wire.WireBooking("WA0170000", f"2024-000{n}", "ofc-1", factory.T0),
                             captures=(cap, factory.capture("left_profile")))
        payload = wire.encode_record(rec, factory.key(1))
        store.insert_record(wire.verify_record(payload, lambda kid: factory.key(1).public_key()), payload)
    return store, open_index(SearchSettings(folder=tmp_path / "search"), str(tmp_path / "g.db"))


def _ask(responder: BookingCheckResponder) -> Any:
    req = check.CheckRequest(wire.uuid7(), COUNTY, "st-01", wire.WireTemplate(MODEL, 128, PROBE.tobytes()),
                             dt.datetime.now(dt.timezone.utc))
    return responder.handle(topics.checks_topic(COUNTY, "st-01"), check.encode_request(req, factory.key(1)),
                            response_topic=topics.answers_topic(COUNTY, "st-01"), correlation=None)


def test_photos_go_with_the_answer_only_when_the_policy_allows(tmp_path: Path) -> None:
    import cv2

    store, index = _photo_gallery(tmp_path)
    try:
        plain = _ask(BookingCheckResponder(store, index, county=COUNTY, key=factory.key(77), kid="county:king"))
        assert [p.photo for p in plain.answer.priors] == [None, None]
        assert b"photo" not in plain.payload and b"\xff\xd8\xff" not in plain.payload  # not one photo byte
        reply = _ask(BookingCheckResponder(store, index, county=COUNTY, key=factory.key(77), kid="county:king",
                                           photos=True, max_per_minute=100))
        answer = check.decode_answer(reply.payload, lambda kid: factory.key(77).public_key(), county=COUNTY,
                                     station="st-01")  # signed with the answer, checked with it
        assert [p.booking_number for p in answer.priors] == ["2024-0000", "2024-0001"]
        for prior in answer.priors:
            assert prior.photo is not None and prior.photo[:2] == b"\xff\xd8"
            assert len(prior.photo) <= check.MAX_PHOTO_BYTES
            image = cv2.imdecode(np.frombuffer(prior.photo, np.uint8), cv2.IMREAD_COLOR)
            assert max(image.shape[:2]) == check.MAX_PHOTO_SIDE  # shrunk to the cap, proportions kept
        assert len(reply.payload) < check.MAX_ANSWER_BYTES
        assert store.list_audit(action="booking_check")[0].details["photos"] == 2
    finally:
        index.close()
        store.close()


def test_a_thumbnail_is_bounded_or_none() -> None:
    import cv2

    from sync.county.search.booking_check import thumbnail

    jpeg, width, height = factory.face_jpeg("img1.jpg")
    for size in ((width, height), None):  # the reduced decode gives the same bounds as the full one
        small = thumbnail(jpeg, size=size)
        assert small is not None and len(small) <= check.MAX_PHOTO_BYTES
        assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (160, 118)
    tiny = factory.jpeg(48, 60)  # never enlarged
    assert cv2.imdecode(np.frombuffer(thumbnail(tiny) or b"", np.uint8), cv2.IMREAD_COLOR).shape[:2] == (60, 48)
    assert thumbnail(b"\xff\xd8 not a jpeg") is None
    assert thumbnail(jpeg, max_bytes=200) is None  # no quality fits: no photo rather than a big one


def _plain_jpeg(width: int, height: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def test_the_station_shows_the_text_of_an_answer_whose_photos_it_cannot_decode(tmp_path: Path, caplog: Any) -> None:
    from sync.station.checks import CheckCarrier

    seen: list[tuple[str, dict[str, Any]]] = []
    carrier = CheckCarrier(tmp_path, county=COUNTY, station="st-01", key=factory.key(1),
                           command_keys={default_command_kid(COUNTY): factory.key(77).public_key()}, v5=True,
                           audit=lambda a, d: seen.append((a, d)))
    carrier.enable(5.0)
    request_id = CheckSpool(tmp_path).ask(PROBE.tolist(), MODEL)
    carrier.sent(next(iter(carrier.outgoing())).request_id)
    good, too_big = _plain_jpeg(128, 160), _plain_jpeg(200, 250)  # too big: more pixels than a thumbnail has
    priors = tuple(check.PriorBooking(f"2019-00{n}", "WA0170000", dt.date(2019, 1, 1 + n), 0.3, photo)
                   for n, photo in enumerate((b"\xff\xd8garbage", good, b"GIF89a not a jpeg", too_big)))
    answer = check.CheckAnswer(request_id, COUNTY, "st-01", "answered", factory.T0, 3, priors)
    with caplog.at_level("WARNING", logger="sync.station.checks"):
        assert carrier.on_answer(check.encode_answer(answer, factory.key(77), kid=default_command_kid(COUNTY)))
    status = CheckSpool(tmp_path).status(request_id, asked_at=time.time(), timeout=5)
    assert status.state == "answered" and [p["booking_number"] for p in status.priors] == [
        "2019-000", "2019-001", "2019-002", "2019-003"]  # every prior's text is shown
    assert [p["photo"] for p in status.to_json()["priors"]] == [False, True, False, False]
    assert status.photo(1) == good and status.photo(0) is None and status.photo(9) is None
    assert "photo\": \"" not in json.dumps(status.to_json())  # the screen's JSON carries no photo bytes
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "3 photo(s)" in warnings[0].getMessage()  # logged once for the answer
    assert seen[-1] == ("booking_check_answered", {
        "request_id": request_id, "status": "answered", "photos": 1, "photos_unusable": 3,
        "priors": ["WA0170000/2019-000", "WA0170000/2019-001", "WA0170000/2019-002", "WA0170000/2019-003"]})
