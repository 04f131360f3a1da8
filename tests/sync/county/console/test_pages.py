"""The console's pages in the system Chromium (Playwright): sign in, filter records, open a record, search
by upload (the right booking first), the audit entry it leaves, the fleet; screenshots of every page at
1280x720 and 1920x1080 under ``test-artifacts/screenshots/console-*``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sync.county.console.conftest import OVERRIDE, STATION_BOOKING, Gallery, Server, User, add_user, cli

REPO = Path(__file__).resolve().parents[4]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
SIZES = ((1280, 720), (1920, 1080))


@pytest.fixture(scope="module")
def page(browser: Any) -> Iterator[Any]:
    """One page for the module's walk through the console, in the run's shared Chromium."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def shoot(page: Any, name: str, visible: list[str]) -> None:
    """At each size: no horizontal overflow, the key elements visible and inside the window, a screenshot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{name} at {width}x{height}: horizontal overflow {scroll} > {inner}"
        for selector in visible:
            box = page.locator(selector).first.bounding_box()
            assert box is not None, f"{name}: {selector} is not shown"
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{name} {width}x{height}: {selector}"
            assert box["y"] + box["height"] <= height + 0.5, f"{name} at {width}x{height}: {selector} below the fold"
        page.screenshot(path=str(SCREENSHOTS / f"console-{name}-{width}x{height}.png"))
    page.set_viewport_size({"width": 1280, "height": 720})


def images_loaded(page: Any, selector: str) -> list[int]:
    """Each image's natural width once the browser has finished with all of them (0: it did not load). The
    element can be in the page before its bytes are: wait until every one is complete, loaded or not."""
    page.wait_for_function("sel => [...document.querySelectorAll(sel)].every(e => e.complete)", arg=selector,
                           timeout=20_000)
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : 0)")


@pytest.fixture(scope="module")
def analyst(gallery: Gallery) -> User:
    return add_user(gallery, "analyst-1")


def test_console_pages(page: Any, server: Server, gallery: Gallery, analyst: User) -> None:
    page.goto(server.url + "/records")
    assert page.url.endswith("/signin")  # not signed in: the sign-in page
    shoot(page, "signin", ["input[name=user_id]", "button[type=submit]"])
    page.fill("input[name=user_id]", analyst.user_id)
    page.fill("input[name=pin]", "11112222")
    page.fill("input[name=code]", "123456")
    page.click("button[type=submit]")
    assert "user id, PIN or code is wrong" in page.locator(".error").inner_text()

    page.fill("input[name=user_id]", analyst.user_id)
    page.fill("input[name=pin]", analyst.pin)
    page.fill("input[name=code]", analyst.code())
    page.click("button[type=submit]")
    page.wait_for_url("**/records")
    rows = page.locator("table.records tbody tr")
    # the idle lock: the page leaves for the sign-in page after the configured idle time, whatever is shown
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == "900;url=/signin?locked=1"
    assert rows.count() == len(gallery.booked) + 1
    shoot(page, "records", ["form.filters button", "table.records"])

    page.goto(server.url + "/records?limit=4")  # pages of 4: the next page holds the other 3
    assert rows.count() == 4 and page.locator(".count").inner_text() == "Records 1-4, newest capture first."
    page.click(".pager a.next")
    assert rows.count() == 3 and "Records 5-7" in page.locator(".count").inner_text()
    page.goto(server.url + "/records")

    # filter by officer, then by booking number; open the station record
    page.fill("input[name=officer]", "ofc-5150")
    page.click("form.filters button")
    assert rows.count() == 1 and STATION_BOOKING in rows.first.inner_text()
    page.fill("input[name=officer]", "")
    page.fill("input[name=ori]", "WA0170000")
    page.fill("input[name=since]", "2019-05-02")
    page.fill("input[name=until]", "2019-05-04")
    page.click("form.filters button")
    assert rows.count() == 2
    page.goto(server.url + f"/records?booking_number={STATION_BOOKING}")
    page.click(f"text={STATION_BOOKING}")
    page.wait_for_selector("figure.capture img")
    assert images_loaded(page, "figure.capture img")[0] > 0
    text = page.locator("main").inner_text()
    assert "Did not pass nist-sap30: Move the camera closer" in text and OVERRIDE in text
    assert "Received, signature verified and stored by the gallery" in text
    shoot(page, "record", ["figure.capture img", ".quality"])

    # search by upload: the right booking first, then the audit entry it leaves
    identity, probe = sorted(gallery.probes.items())[2]
    page.click("nav >> text=Face search")
    shoot(page, "search", ["input[type=file]", "form.search button"])
    page.set_input_files("input[type=file]", str(probe))
    page.click("form.search button")  # no reason: the browser refuses (required) and nothing is searched
    assert page.url.endswith("/search") and page.locator(".grid").count() == 0
    page.fill("input[name=reason]", "  incident   26-0042 ")
    page.click("form.search button")
    page.wait_for_selector(".grid .candidate")
    first = page.locator(".grid .candidate").first
    assert gallery.booked[identity][0] in first.inner_text()
    distances = [float(d) for d in re.findall(r"distance ([0-9.]+)", page.locator(".grid").inner_text())]
    assert len(distances) == 7 and distances == sorted(distances)  # the whole gallery, nearest first
    page.wait_for_function("() => [...document.querySelectorAll('.candidate img')].every(i => i.complete)")
    assert all(w > 0 for w in images_loaded(page, ".candidate img"))
    shoot(page, "results", [".grid .candidate"])
    code, out, _ = cli(gallery.config, "audit", "list", "--action", "console_search", "--json")
    entry = json.loads(out)["entries"][0]
    assert (entry["actor"], entry["details"]["reason"]) == ("analyst-1", "incident 26-0042")
    page.click("nav >> text=Audit log")
    assert "incident 26-0042" in page.locator("table.audit tbody tr").first.inner_text()
    shoot(page, "audit", ["table.audit tbody tr"])

    # search from a record
    page.goto(server.url + f"/records/{gallery.booked[identity][1]}")
    page.fill("form.search input[name=reason]", "case 77")
    page.click("form.search button")
    page.wait_for_selector(".count")
    assert gallery.booked[identity][0] not in page.locator(".grid").inner_text()

    page.click("nav >> text=Fleet")
    fleet = page.locator("table.fleet tbody tr")
    assert fleet.count() == 1  # the import pseudo-station never reports and is not shown
    row = fleet.first.inner_text()
    assert all(word in row for word in ("st-07", "online", "pending 2", "booking-station 0.9.1", "disk_low"))
    # the disk column: the figures the station reported, in words, flagged low (under its floor)
    disk_cell = page.locator("table.fleet tbody tr td").nth(4).inner_text()
    assert disk_cell == "300.0 MiB free (floor 512.0 MiB), LOW"
    assert "refuses new bookings" in row
    shoot(page, "fleet", ["table.fleet"])

    page.click("header button")
    page.wait_for_url("**/signin")
    page.goto(server.url + "/records")
    assert page.url.endswith("/signin")
