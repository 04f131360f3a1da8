"""A whole booking through the real page: auto-capture of the three views, an SMT photo, a manual retake,
save (reported only after the store's commit), the queue, and a booking number that is already in use."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.conftest import (
    add_officer,
    audit_actions,
    confirm_turn,
    saved_record_id,
    shoot,
    sign_in,
    turning_frames,
)

BOOKING = "2026-000123"


def _accept_review(page, label: str) -> None:
    """Wait for the review of `label` (e.g. 'Left profile'), check it passed, accept it."""
    verdict = page.locator("#review-verdict")
    expect(page.locator("#screen-review")).to_be_visible(timeout=40_000)
    expect(verdict).to_contain_text(f"{label}:")
    page.click("#accept-btn")
    expect(page.locator("#screen-booking")).to_be_visible()


def test_full_booking_with_auto_capture_is_saved_and_queued(page, start_server, face_sources, faces_dir,
                                                            tmp_path) -> None:
    # The subject faces the camera for 10 s, then is turned away for 2.5 s (the loop repeats): a profile
    # is taken at the end of a turned-away run, so the manual frontal retake after the right profile falls
    # well inside the next facing run.
    server = start_server(camera=turning_frames(tmp_path / "frames", face_sources, faces_dir, frontal=100,
                                                turned=25))
    officer = add_officer(server.data_dir, "o.diaz", "Officer Diaz")
    sign_in(page, server, officer)

    # The live gates pass on this portrait: the page shows the ready state, then auto-capture fires. The
    # ready state can last less than one of Playwright's polls before the review replaces it, so the page
    # itself records that it was shown (waiting for it to be visible raced with auto-capture).
    page.evaluate("""() => {
        window.sawReady = false;
        new MutationObserver(() => { if (document.querySelector('#guidance.ready')) window.sawReady = true; })
            .observe(document.body, {subtree: true, attributes: true, attributeFilter: ['class']});
    }""")
    page.fill("#start-number", BOOKING)
    page.click("#start-submit")
    expect(page.locator("#top-booking")).to_contain_text(BOOKING)

    expect(page.locator("#screen-review")).to_be_visible(timeout=20_000)
    assert page.evaluate("window.sawReady"), "the ready state was never shown before auto-capture"
    verdict = page.locator("#review-verdict")
    expect(verdict).to_have_text("Frontal: Meets the standard")
    expect(page.locator("#review-checks-summary")).to_contain_text(re.compile(r"\d+ passed, 0 failed"))
    expect(page.locator("#review-checks li.fail")).to_have_count(0)
    expect(page.locator("#review-checks")).to_contain_text("Head facing the camera")
    expect(page.locator("#override-box")).to_be_hidden()
    shoot(page, "review-pass", ["#review-image", "#review-verdict", "#retake-btn", "#accept-btn"])
    page.click("#accept-btn")

    # After the frontal view the page moves on by itself to the left profile, but auto-capture waits for the
    # officer to ask the subject to turn; once the turned pose holds, a countdown runs, then the photo.
    page.evaluate("""() => {
        window.countdown = [];
        new MutationObserver(() => {
            const c = document.querySelector('#countdown');
            if (c && !c.hidden) window.countdown.push(c.textContent);
        }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    }""")
    confirm_turn(page, "Left profile")
    expect(page.locator("#turned-btn")).to_be_hidden()
    _accept_review(page, "Left profile")
    seen = page.evaluate("window.countdown")
    assert "2" in seen and "1" in seen, seen  # the 2 s hold counted down on screen
    confirm_turn(page, "Right profile")
    _accept_review(page, "Right profile")
    expect(page.locator("#guidance-text")).to_contain_text("All views taken")
    for pose in ("frontal", "left_profile", "right_profile"):
        expect(page.locator(f"#pose-{pose} .step-state")).to_have_text("\u2713 Accepted")

    # Retake the frontal view by hand with auto-capture off: the ready state holds until Capture.
    page.click("#auto-btn")
    expect(page.locator("#auto-btn")).to_have_attribute("aria-pressed", "false")
    page.click("#pose-frontal")
    expect(page.locator("#guidance")).to_have_class(re.compile(r"\bready\b"), timeout=20_000)
    expect(page.locator("#guidance-text")).to_have_text("Press Capture.")
    expect(page.locator("#preview-wrap")).to_have_class(re.compile(r"\bready\b"))
    expect(page.locator("#face-box")).to_be_visible()
    shoot(page, "booking-ready", ["#preview", "#face-box", "#guidance", "#capture-btn", "#save-btn", "#pose-smt"])
    page.click("#capture-btn")
    expect(verdict).to_have_text("Frontal: Meets the standard", timeout=20_000)
    page.click("#accept-btn")
    expect(page.locator("#pose-frontal .step-state")).to_have_text("\u2713 Accepted")

    # A scar/mark/tattoo photo: described, framed by the officer, captured by hand.
    page.click("#pose-smt")
    page.fill("#smt-description", "tattoo, left forearm")
    page.click("#smt-start")
    expect(page.locator("#guidance-text")).to_contain_text("tattoo, left forearm")
    page.click("#capture-btn")
    expect(verdict).to_contain_text("Scar / mark / tattoo:", timeout=20_000)
    expect(verdict).to_contain_text("check it by eye")
    page.click("#accept-btn")
    expect(page.locator("#pose-smt .step-state")).to_have_text("1 taken")

    page.click("#save-btn")
    saved = page.locator("#saved-message")
    expect(saved).to_be_visible(timeout=20_000)
    expect(saved).to_contain_text(f"booking {BOOKING}")
    record_id = saved_record_id(page)
    expect(page.locator("#top-booking")).to_be_hidden()

    # "Saved" was shown only for a committed record: read it back from the station database.
    from appliance.store import Store

    with Store.open_data_dir(server.data_dir) as store:
        record = store.load_record(record_id)
        assert record.booking.booking_number == BOOKING and record.booking.operator_id == "o.diaz"
        assert [c.pose for c in record.captures] == ["frontal", "left_profile", "right_profile", "smt"]
        assert record.captures[0].template is not None and record.captures[0].width == 480
        assert record.captures[3].smt_description == "tattoo, left forearm"
        assert all(c.override_reason is None for c in record.captures)
        assert record.outbox.state == "pending"
    assert not (server.data_dir / "ui" / "draft.bin").exists()  # the draft goes once the record is committed
    actions = [b for a, b, _ in audit_actions(server.data_dir)]
    assert "booking_open" in actions and "capture" in actions

    # The queue screen lists it as waiting for delivery.
    page.click("#nav-queue")
    row = page.locator(f"#queue-body tr[data-booking='{BOOKING}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Waiting")
    expect(page.locator("#count-pending")).to_have_text("1")
    expect(page.locator("#last-contact")).to_have_text("never")
    shoot(page, "queue", ["#count-pending", "#last-contact", f"#queue-body tr[data-booking='{BOOKING}']",
                          "#nav-booking"])

    # The same booking number again: refused with a clear message, nothing opened.
    page.click("#nav-booking")
    page.fill("#start-number", BOOKING)
    page.click("#start-submit")
    message = page.locator("#start-message")
    expect(message).to_contain_text(f"Booking number {BOOKING} (VA0290000) is already in use")
    assert record_id not in message.locator(".message-text").inner_text()  # the record id is for county IT:
    expect(message.locator(".message-details code")).to_have_text(f"booking_number_in_use: record {record_id}")
    expect(page.locator("#screen-start")).to_be_visible()
    expect(page.locator("#saved-message")).to_be_hidden()  # no green "Saved" beside the red refusal
    shoot(page, "start-number-in-use", ["#start-message", "#start-submit"])
