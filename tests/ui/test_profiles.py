"""Profile views in the officer UI: a subject who never turns (the camera shows a frontal face) is never
taken as a profile automatically; captured by hand, the review says it is not a profile and keeping it
needs a reason, like any failed gate."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.ui.conftest import add_officer, confirm_turn, sign_in

REASON = "subject cannot turn: neck brace"


def test_a_frontal_face_is_refused_as_a_profile(page, start_server, face_sources) -> None:
    server = start_server(camera=face_sources.passing)  # the subject faces the camera throughout
    officer = add_officer(server.data_dir, "o.kim")
    sign_in(page, server, officer)
    page.fill("#start-number", "2026-000700")
    page.click("#start-submit")
    expect(page.locator("#review-verdict")).to_have_text("Frontal: Meets the standard", timeout=20_000)
    page.click("#accept-btn")

    confirm_turn(page, "Left profile")
    guidance = page.locator("#guidance-text")
    expect(guidance).to_contain_text("Left profile: ask the subject to turn to their right", timeout=20_000)
    for _ in range(12):  # 3 s, longer than the 2 s hold: never ready, never captured
        expect(page.locator("#screen-booking")).to_be_visible()
        expect(page.locator("#countdown")).to_be_hidden()
        page.wait_for_timeout(250)

    page.click("#capture-btn")
    verdict = page.locator("#review-verdict")
    expect(verdict).to_have_text("Left profile: Not a profile view turned the right way", timeout=20_000)
    expect(page.locator("#review-checks li.fail")).to_contain_text("Head turned for this profile")
    page.click("#accept-btn")
    expect(page.locator("#review-message")).to_contain_text("reason")
    page.fill("#override-reason", REASON)
    page.click("#accept-btn")
    expect(page.locator("#pose-left_profile .step-state")).to_have_text(f"Kept: {REASON}")
