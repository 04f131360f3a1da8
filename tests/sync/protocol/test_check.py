"""The booking-time check messages: signed, validated, and never usable as anything else."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from sync.protocol import check, topics, wire
from tests.sync import factory

NOW = dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc)
KEY, COUNTY_KEY = factory.key(1), factory.key(77)


def _request(**changes: object) -> check.CheckRequest:
    base = check.CheckRequest(wire.uuid7(), "king", "st-01", factory.template(), NOW)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_request_round_trips_and_names_its_reply_topic() -> None:
    req = _request()
    got = check.decode_request(check.encode_request(req, KEY), lambda kid: KEY.public_key())
    assert got == req
    own = topics.answers_topic("king", "st-01")
    assert check.reply_topic(got, own) == own  # MQTT 5 response topic
    assert check.reply_topic(_request(reply_to=own), None) == own  # MQTT 3.1.1: in the payload
    for wrong in (topics.answers_topic("king", "st-02"), topics.commands_topic("king", "st-01"), "x/#"):
        with pytest.raises(wire.WireError) as err:
            check.reply_topic(got, wrong)
        assert err.value.code == "bad_reply_topic"
    with pytest.raises(wire.WireError, match="missing_field"):
        check.reply_topic(got, None)


def test_a_request_must_be_signed_by_its_station_and_is_no_record_or_command() -> None:
    forged = check.encode_request(_request(station="st-02"), KEY)  # st-01's key, st-02's name
    keys = {"st-01": KEY.public_key(), "st-02": factory.key(2).public_key()}
    with pytest.raises(wire.WireError) as err:
        check.decode_request(forged, keys.get)
    assert err.value.code == "bad_signature"
    payload = check.encode_request(_request(), KEY)
    with pytest.raises(wire.WireError) as err:
        wire.verify_record(payload, lambda kid: KEY.public_key())
    assert err.value.code == "wrong_content_type"
    with pytest.raises(wire.WireError) as err:
        wire.decode_command(payload, lambda kid: KEY.public_key())
    assert err.value.code == "wrong_content_type"


def test_an_answer_round_trips_and_is_bounded() -> None:
    prior = check.PriorBooking("2019-004711", "WA0170000", dt.date(2019, 5, 1), 0.3125)
    answer = check.CheckAnswer(wire.uuid7(), "king", "st-01", "answered", NOW, 12, (prior,))
    payload = check.encode_answer(answer, COUNTY_KEY, kid="county:king")
    assert check.decode_answer(payload, lambda kid: COUNTY_KEY.public_key(), county="king", station="st-01") == answer
    with pytest.raises(wire.WireError) as err:
        check.decode_answer(payload, lambda kid: COUNTY_KEY.public_key(), county="king", station="st-02")
    assert err.value.code == "wrong_target"
    with pytest.raises(wire.WireError, match="bad_signature"):
        check.decode_answer(payload, lambda kid: factory.key(9).public_key(), county="king", station="st-01")
    with pytest.raises(wire.WireError, match="at most 5"):
        check.encode_answer(dataclasses.replace(answer, priors=(prior,) * 6), COUNTY_KEY, kid="county:king")
    with pytest.raises(wire.WireError, match="bad_value"):
        check.encode_answer(dataclasses.replace(answer, priors=(dataclasses.replace(prior, ori="nope"),)),
                            COUNTY_KEY, kid="county:king")


def test_an_answer_may_carry_thumbnails_within_their_cap() -> None:
    prior = check.PriorBooking("2019-004711", "WA0170000", dt.date(2019, 5, 1), 0.3125)
    plain = check.CheckAnswer(wire.uuid7(), "king", "st-01", "answered", NOW, 12, (prior,))
    without = check.encode_answer(plain, COUNTY_KEY, kid="county:king")
    assert b"photo" not in without  # no policy, no photo key: the answer is byte for byte as before
    photo = factory.jpeg(128, 160)
    full = dataclasses.replace(plain, priors=tuple(
        dataclasses.replace(prior, photo=(photo + bytes(check.MAX_PHOTO_BYTES))[: check.MAX_PHOTO_BYTES])
        for _ in range(check.MAX_PRIORS)))
    payload = check.encode_answer(full, COUNTY_KEY, kid="county:king")  # five photos at their cap
    assert len(payload) <= check.MAX_ANSWER_BYTES
    got = check.decode_answer(payload, lambda kid: COUNTY_KEY.public_key(), county="king", station="st-01")
    assert got == full and len(got.priors[0].photo or b"") == check.MAX_PHOTO_BYTES
    for bad in (bytes(check.MAX_PHOTO_BYTES + 1), b"", "not bytes"):
        with pytest.raises(wire.WireError, match="photo"):
            check.encode_answer(dataclasses.replace(plain, priors=(dataclasses.replace(prior, photo=bad),)),
                                COUNTY_KEY, kid="county:king")
