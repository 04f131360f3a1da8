"""Bad moments in the middle of a booking: the session locks, the camera stops, the server restarts.
In each, the captures already accepted are still there afterwards."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from tests.ui.conftest import add_officer, audit_actions, confirm_turn, saved_record_id, shoot, sign_in, turning_frames


def _start_and_accept_frontal(page, booking: str) -> None:
    page.fill("#start-number", booking)
    page.click("#start-submit")
    expect(page.locator("#review-verdict")).to_have_text("Frontal: Meets the standard", timeout=20_000)
    page.click("#accept-btn")
    expect(page.locator("#pose-frontal .step-state")).to_have_text("\u2713 Accepted")


def test_an_idle_session_locks_and_the_booking_survives_signing_in_again(page, start_server,
                                                                        tmp_path: Path) -> None:
    server = start_server(extra=["--idle-lock-minutes", "0.15"])  # 9 s instead of 30 min: warned 4.5 s before
    officer = add_officer(server.data_dir, "o.fox")
    sign_in(page, server, officer)
    _start_and_accept_frontal(page, "2026-000300")
    verdict = page.locator("#review-verdict")
    confirm_turn(page, "Left profile")
    expect(verdict).to_contain_text("Left profile:", timeout=20_000)  # auto-captured; the officer walks away

    # The lock is announced with a countdown; "I'm still here" is an action and starts the count again.
    warning = page.locator("#idle-warning")
    expect(warning).to_be_visible(timeout=20_000)
    expect(page.locator("#idle-warning-text")).to_contain_text(re.compile(r"locks in 0:0\d\. The booking is kept"))
    page.click("#idle-stay")
    expect(warning).to_be_hidden()
    expect(warning).to_be_visible(timeout=20_000)
    shoot(page, "idle-warning", ["#idle-warning-text", "#idle-stay", "#accept-btn"], tmp_path / "shots")
    first = page.locator("#idle-warning-text").inner_text()
    page.wait_for_timeout(1200)
    assert page.locator("#idle-warning-text").inner_text() != first, "the countdown does not count"

    # Nobody touches the screen: the page's own polling does not keep the session open.
    expect(page.locator("#screen-signin")).to_be_visible(timeout=30_000)
    expect(page.locator("#signin-message")).to_contain_text("locked after 9 seconds without activity")
    expect(page.locator("#review-image")).to_be_hidden()
    assert any(a == "o.fox" and b == "session_lock" for a, b, _ in audit_actions(server.data_dir))

    sign_in(page, server, officer, goto=False)
    expect(page.locator("#top-booking")).to_contain_text("2026-000300")
    kept = page.locator("#toast")
    expect(kept).to_have_text("Booking kept: 2026-000300, 1 photo accepted. Carry on.")
    expect(page.locator("#handover-dialog")).to_be_hidden()  # the same officer: no hand-over
    shoot(page, "booking-kept", ["#toast", "#top-booking-ori", "#accept-btn"], tmp_path / "shots")
    expect(verdict).to_contain_text("Left profile:")  # the candidate waits where it was
    page.click("#accept-btn")
    expect(page.locator("#pose-frontal .step-state")).to_have_text("\u2713 Accepted")
    confirm_turn(page, "Right profile")
    expect(verdict).to_contain_text("Right profile:", timeout=20_000)
    page.click("#accept-btn")
    expect(page.locator("#pose-left_profile .step-state")).to_have_text("\u2713 Accepted")
    page.click("#save-btn")
    expect(page.locator("#saved-message")).to_contain_text("2026-000300", timeout=20_000)


def test_a_camera_that_stops_keeps_the_accepted_captures(page, start_server, face_sources, faces_dir: Path,
                                                         tmp_path: Path) -> None:
    # A finite camera: 72 frames at 10 fps (the subject faces the camera, then turns away), then the replay
    # ends as an unplugged camera would.
    frames = turning_frames(tmp_path / "frames", face_sources, faces_dir, frontal=12, turned=60)
    server = start_server(camera=frames, camera_options={"loop": False})
    officer = add_officer(server.data_dir, "o.gray")
    sign_in(page, server, officer)
    _start_and_accept_frontal(page, "2026-000400")
    confirm_turn(page, "Left profile")
    expect(page.locator("#review-verdict")).to_contain_text("Left profile:", timeout=20_000)

    # The camera ends while the officer looks at the left profile: the review says so at once.
    notice = page.locator("#review-camera")
    expect(notice).to_contain_text("capture(s) already accepted are kept", timeout=20_000)
    page.click("#retake-btn")
    guidance = page.locator("#guidance")
    expect(guidance).to_have_class(re.compile(r"\blost\b"))
    expect(page.locator("#guidance-title")).to_have_text("Camera stopped")
    expect(page.locator("#guidance-text")).to_contain_text("Accepted photos are kept")
    expect(page.locator("#guidance-detail")).to_contain_text("ended after 72 images")
    expect(page.locator("#preview-empty")).to_have_text("Camera stopped")
    expect(page.locator("#reconnect-btn")).to_be_visible()
    expect(page.locator("#capture-btn")).to_be_disabled()
    expect(page.locator("#pose-frontal .step-state")).to_have_text("\u2713 Accepted")
    expect(page.locator("#save-btn")).to_be_enabled()  # a complete booking can be saved without the camera
    shoot(page, "camera-stopped", ["#guidance-text", "#reconnect-btn", "#pose-frontal", "#save-btn"])

    page.click("#reconnect-btn")  # the camera is back (the replay starts again)
    expect(page.locator("#review-verdict")).to_contain_text("Left profile:", timeout=20_000)
    page.click("#accept-btn")
    confirm_turn(page, "Right profile")
    expect(page.locator("#review-verdict")).to_contain_text("Right profile:", timeout=20_000)
    page.click("#accept-btn")
    expect(page.locator("#pose-left_profile .step-state")).to_have_text("\u2713 Accepted")
    page.click("#save-btn")
    expect(page.locator("#saved-message")).to_contain_text("2026-000400", timeout=20_000)


def test_a_server_restart_mid_booking_loses_no_accepted_capture(page, start_server) -> None:
    server = start_server()
    officer = add_officer(server.data_dir, "o.hill")
    sign_in(page, server, officer)
    _start_and_accept_frontal(page, "2026-000500")
    confirm_turn(page, "Left profile")
    expect(page.locator("#review-verdict")).to_contain_text("Left profile:", timeout=20_000)  # not accepted
    draft = server.data_dir / "ui" / "draft.bin"
    assert draft.is_file() and draft.stat().st_mode & 0o077 == 0
    assert b"2026-000500" not in draft.read_bytes()  # encrypted, not merely stored

    server.crash()  # SIGKILL: no shutdown code runs
    server.start()  # same data directory, same port
    expect(page.locator("#screen-signin")).to_be_visible(timeout=20_000)  # sessions did not survive; photos did
    sign_in(page, server, officer, goto=False)
    expect(page.locator("#top-booking")).to_contain_text("2026-000500")
    expect(page.locator("#pose-frontal .step-state")).to_have_text("\u2713 Accepted")
    # The candidate was never accepted, so it is not kept; the next view is armed for a manual capture at once.
    expect(page.locator("#pose-left_profile .step-state")).to_have_text("Taking now")
    expect(page.locator("#capture-btn")).to_be_enabled(timeout=20_000)
    expect(page.locator("#auto-btn")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#guidance-text")).to_have_text("Press Capture.", timeout=20_000)
    assert ("system", "booking_restore") in [(a, b) for a, b, _ in audit_actions(server.data_dir)]

    page.click("#save-btn")
    saved = page.locator("#saved-message")
    expect(saved).to_contain_text("2026-000500", timeout=20_000)
    record_id = saved_record_id(page)
    from appliance.store import Store

    with Store.open_data_dir(server.data_dir) as store:
        record = store.load_record(record_id)
    assert [c.pose for c in record.captures] == ["frontal"] and record.captures[0].template is not None
    assert not draft.exists()
