"""A capture that fails a quality gate: the live screen says what to fix, a manual capture shows which
checks failed, accepting it is refused without a reason and allowed with one, and the reason reaches the
record and the audit log."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.conftest import add_officer, audit_actions, saved_record_id, shoot, sign_in

BOOKING = "2026-000200"
REASON = "subject kept turning away; supervisor approved"


def test_failing_capture_needs_an_override_reason(page, start_server, face_sources) -> None:
    server = start_server(camera=face_sources.failing)
    officer = add_officer(server.data_dir, "o.evans")
    sign_in(page, server, officer)
    page.fill("#start-number", BOOKING)
    page.click("#start-submit")

    # Live: never ready, the first failing check in plain words, in the warning colour.
    guidance = page.locator("#guidance")
    expect(guidance).to_have_class(re.compile(r"\bfailing\b"), timeout=20_000)
    expect(page.locator("#guidance-text")).to_contain_text(re.compile(r"^(Ask|The|Eyes|Another|No|Part)"))
    expect(page.locator("#face-box")).to_be_visible()
    shoot(page, "booking-live", ["#preview", "#face-box", "#guidance-text", "#capture-btn", "#pose-frontal",
                                 "#save-btn"])
    expect(page.locator("#save-btn")).to_be_disabled()  # nothing accepted yet

    page.click("#capture-btn")
    verdict = page.locator("#review-verdict")
    expect(verdict).to_contain_text("Frontal: Does not meet the standard", timeout=20_000)
    expect(page.locator("#review-guidance li").first).to_be_visible()
    expect(page.locator("#review-checks li.fail").first).to_be_visible()
    expect(page.locator("#review-checks-summary")).to_contain_text(re.compile(r"[1-9]\d* failed"))
    expect(page.locator("#override-box")).to_be_visible()
    expect(page.locator("#accept-btn")).to_have_text("Keep with reason")
    shoot(page, "review-fail", ["#review-image", "#review-verdict", "#review-guidance", "#override-reason",
                                "#retake-btn", "#accept-btn"])

    # Without a reason: refused, still in review.
    page.click("#accept-btn")
    message = page.locator("#review-message")
    expect(message).to_contain_text("fails the quality standard")
    expect(message).to_contain_text("reason")
    expect(page.locator("#screen-review")).to_be_visible()

    # With a reason: kept, and the step says so.
    page.fill("#override-reason", REASON)
    page.click("#accept-btn")
    expect(page.locator("#pose-frontal .step-state")).to_have_text(f"Kept: {REASON}")
    expect(page.locator("#pose-frontal")).to_have_class(re.compile(r"\boverride\b"))

    # The profiles are optional: save with the frontal view only.
    page.click("#auto-btn")  # stop auto-capturing the left profile the page moved on to
    page.click("#save-btn")
    saved = page.locator("#saved-message")
    expect(saved).to_be_visible(timeout=20_000)
    record_id = saved_record_id(page)

    from appliance.store import Store

    with Store.open_data_dir(server.data_dir) as store:
        record = store.load_record(record_id)
    frontal = record.captures[0]
    assert frontal.pose == "frontal" and frontal.override_reason == REASON
    assert frontal.quality["report"]["passed"] is False
    assert frontal.operator_id == "o.evans"
    overrides = [d for a, b, d in audit_actions(server.data_dir) if b == "override"]
    assert overrides == [{"record_id": record_id, "seq": 0, "pose": "frontal", "reason": REASON}]
