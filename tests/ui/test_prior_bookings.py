"""The booking-time check on the officer's screen, through the real page and server.

The sync agent's side of the spool (`CheckCarrier`: it signs the question and verifies the county's
answer) is run by the test instead of an MQTT round trip (that is `tests/sync/county/test_booking_check.py`):
a frontal's check that gets no answer in time is reported as not done; a retaken frontal's check is
answered and the page shows "Possible prior bookings". Nothing waits for either: the booking is saved.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from sync.protocol import check
from sync.protocol.enroll import default_command_kid
from sync.station.checks import CheckCarrier, spool_dir
from tests.sync import factory
from tests.ui.conftest import STATION, add_officer, audit_actions, shoot, sign_in

COUNTY = "king"
COUNTY_KEY = factory.key(77)


def _carrier(data_dir: Path) -> CheckCarrier:
    return CheckCarrier(data_dir, county=COUNTY, station=STATION, key=factory.key(1),
                        command_keys={default_command_kid(COUNTY): COUNTY_KEY.public_key()}, v5=True,
                        audit=lambda action, details: None)


def _question(data_dir: Path, carrier: CheckCarrier, *, seen: set[str]) -> Any:
    """The next spooled question, signed as the agent signs it, marked sent."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for out in carrier.outgoing():
            if out.request_id not in seen:
                seen.add(out.request_id)
                carrier.sent(out.request_id)
                return check.decode_request(out.payload, lambda kid: factory.key(1).public_key())
        time.sleep(0.1)
    raise AssertionError(f"no question in {spool_dir(data_dir)}")


def test_the_screen_shows_possible_prior_bookings(page, start_server, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    carrier = _carrier(data_dir)
    carrier.enable(20.0)  # as the agent does with [sync] booking_check = true
    server = start_server(data_dir=data_dir)
    officer = add_officer(server.data_dir, "o.lee", "Officer Lee")
    sign_in(page, server, officer)
    page.fill("#start-number", "2026-000555")
    page.click("#start-submit")
    expect(page.locator("#screen-review")).to_be_visible(timeout=20_000)
    page.click("#accept-btn")

    question = _question(data_dir, carrier, seen=set())
    assert (question.template.dim, question.station) == (128, STATION)  # the accepted frontal's template
    expect(page.locator(".prior-check:visible")).to_contain_text("Checking the county gallery")
    answer = check.CheckAnswer(question.request_id, COUNTY, STATION, "answered", question.asked_at, 1200, (
        check.PriorBooking("2019-004711", "VA0290000", question.asked_at.date().replace(year=2019), 0.31),
        check.PriorBooking("2022-000017", "VA0290000", question.asked_at.date().replace(year=2022), 0.44)))
    assert carrier.on_answer(check.encode_answer(answer, COUNTY_KEY, kid=default_command_kid(COUNTY)))
    box = page.locator(".prior-check:visible")
    expect(box).to_contain_text("Possible prior bookings", timeout=10_000)
    expect(box.locator("li")).to_have_count(2)
    expect(box.locator("li").first).to_contain_text("Booking 2019-004711 \u2013 VA0290000")
    actions = [d for _, a, d in audit_actions(data_dir) if a == "booking_check_answered"]
    assert actions[0]["priors"] == ["VA0290000/2019-004711", "VA0290000/2022-000017"]


def test_the_booking_state_reports_the_check_and_saving_never_waits(start_server, tmp_path: Path) -> None:
    import http.cookiejar
    import urllib.request

    from tests.ui.conftest import api_call

    headers = {"X-Booking-Station": "1"}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    carrier = _carrier(data_dir)
    carrier.enable(2.0)
    server = start_server(data_dir=data_dir)
    officer = add_officer(server.data_dir, "o.ray")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    api_call(server, "POST", "/api/v1/session", {"officer_id": officer.officer_id, "pin": officer.pin,
                                                  "code": officer.code()}, headers, opener)
    api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000902"}, headers, opener)

    def accept_frontal() -> None:
        api_call(server, "POST", "/api/v1/booking/pose", {"pose": "frontal", "auto": False}, headers, opener)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            b = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]["booking"]
            if b["review"] is not None and b["review"]["pose"] == "frontal":
                break
            if b["live"].get("ready") and b["live"].get("phase") == "live":
                api_call(server, "POST", "/api/v1/booking/capture", None, headers, opener)
            time.sleep(0.2)
        status, body, _ = api_call(server, "POST", "/api/v1/booking/accept", {"override_reason": "test"}, headers,
                                   opener)
        assert status == 200, body

    def final() -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pc = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]["booking"]["prior_check"]
            if pc and pc["state"] != "pending":
                return pc
            time.sleep(0.2)
        raise AssertionError("the check never ended")

    seen: set[str] = set()
    accept_frontal()
    pending = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]["booking"]["prior_check"]
    assert pending["state"] == "pending"
    question = _question(data_dir, carrier, seen=seen)
    assert question.request_id == pending["request_id"] and question.template.dim == 128
    first = final()  # no answer within 2 s
    assert first["state"] == "not_done" and "was not done" in first["message"] and first["priors"] == []

    accept_frontal()  # a retaken frontal asks again
    second = _question(data_dir, carrier, seen=seen)
    answer = check.CheckAnswer(second.request_id, COUNTY, STATION, "answered", second.asked_at, 1200, (
        check.PriorBooking("2019-004711", "VA0290000", second.asked_at.date().replace(year=2019), 0.31),))
    assert carrier.on_answer(check.encode_answer(answer, COUNTY_KEY, kid=default_command_kid(COUNTY)))
    shown = final()
    assert shown["state"] == "answered" and shown["priors"][0]["booking_number"] == "2019-004711"
    assert "Possible prior bookings" in shown["message"]
    actions = [(a, d) for _, a, d in audit_actions(data_dir) if a.startswith("booking_check")]
    assert [a for a, _ in actions] == ["booking_check_not_done", "booking_check_answered"]
    # advice only: saving never waited for it
    status, body, _ = api_call(server, "POST", "/api/v1/booking/save", None, headers, opener)
    assert status == 200 and body["record_id"], body
    assert [p.name for p in spool_dir(data_dir).iterdir()] == ["enabled.json"]  # no template left behind


def test_the_screen_shows_prior_bookings_photos_when_the_county_sends_them(page, start_server,
                                                                            tmp_path: Path) -> None:
    from sync.county.search.booking_check import thumbnail

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    carrier = _carrier(data_dir)
    carrier.enable(20.0)
    server = start_server(data_dir=data_dir)
    officer = add_officer(server.data_dir, "o.kim", "Officer Kim")
    sign_in(page, server, officer)
    page.fill("#start-number", "2026-000556")
    page.click("#start-submit")
    expect(page.locator("#screen-review")).to_be_visible(timeout=20_000)
    page.click("#accept-btn")

    question = _question(data_dir, carrier, seen=set())
    photos = [thumbnail(factory.face_jpeg(name)[0]) for name in ("img1.jpg", "img2.jpg")]
    day = question.asked_at.date()
    answer = check.CheckAnswer(question.request_id, COUNTY, STATION, "answered", question.asked_at, 1200, (
        check.PriorBooking("2019-004711", "VA0290000", day.replace(year=2019), 0.31, photos[0]),
        check.PriorBooking("2021-000300", "VA0290000", day.replace(year=2021), 0.38, b"\xff\xd8 cannot decode"),
        check.PriorBooking("2022-000017", "VA0290000", day.replace(year=2022), 0.44, photos[1])))
    assert carrier.on_answer(check.encode_answer(answer, COUNTY_KEY, kid=default_command_kid(COUNTY)))
    box = page.locator(".prior-check:visible")
    expect(box.locator("li")).to_have_count(3, timeout=10_000)  # every prior's text, photo or not
    expect(box.locator("li").nth(1)).to_contain_text("Booking 2021-000300 \u2013 VA0290000")
    expect(box.locator("li").nth(1).locator("img")).to_have_count(0)  # the one it could not decode
    expect(box.locator("img.prior-photo")).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('.prior-check:not([hidden]) img.prior-photo')]"
                           ".every((i) => i.complete && Math.max(i.naturalWidth, i.naturalHeight) === 160)")
    box.scroll_into_view_if_needed()
    files = shoot(page, "prior-bookings-photos", visible=[".prior-check:visible img.prior-photo"])
    assert len(files) == 2
    # each photo is served by its position in the list; a prior without one has none
    assert page.request.get(server.url + "/api/v1/booking/prior/0.jpg").body() == photos[0]
    assert page.request.get(server.url + "/api/v1/booking/prior/1.jpg").status == 404

    # the review screen of the next photo shows them too
    page.click("#pose-smt")
    page.fill("#smt-description", "tattoo, left forearm")
    page.click("#smt-start")
    page.click("#capture-btn")
    expect(page.locator("#screen-review")).to_be_visible(timeout=20_000)
    review = page.locator("#screen-review .prior-check")
    expect(review.locator("li")).to_have_count(3)
    expect(review.locator("img.prior-photo")).to_have_count(2)
    review.locator("img.prior-photo").first.scroll_into_view_if_needed()
    shoot(page, "prior-bookings-photos-review", visible=["#screen-review .prior-check img.prior-photo", "#accept-btn"])
