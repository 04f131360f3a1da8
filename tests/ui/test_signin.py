"""Sign-in with PIN + TOTP, and the lockout after 5 failures (CJIS), through the real page and server."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from playwright.sync_api import expect

from tests.ui.conftest import add_officer, audit_actions, shoot, sign_in


def test_sign_in_with_pin_and_totp_code(page, start_server) -> None:
    server = start_server()
    officer = add_officer(server.data_dir, "o.garcia", "Officer Garcia")
    page.goto(server.url + "/")
    page.wait_for_selector("#screen-signin:not([hidden])")
    shoot(page, "signin", ["#signin-officer", "#signin-pin", "#signin-code", "#signin-submit"])

    sign_in(page, server, officer, goto=False)
    page.wait_for_selector("#screen-start:not([hidden])")
    assert page.locator("#officer-name").inner_text() == "o.garcia"
    assert page.input_value("#start-agency") == "VA0290000"  # the station's default agency
    shoot(page, "start", ["#start-number", "#start-agency", "#start-submit", "#nav-signout"])

    cookie = next(c for c in page.context.cookies() if c["name"] == "bs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ("o.garcia", "logon") in [(a, b) for a, b, _ in audit_actions(server.data_dir)]

    page.click("#nav-signout")
    page.wait_for_selector("#screen-signin:not([hidden])")
    assert ("o.garcia", "logoff") in [(a, b) for a, b, _ in audit_actions(server.data_dir)]


def test_five_failures_lock_the_account_even_for_the_right_pin(page, start_server) -> None:
    server = start_server()
    officer = add_officer(server.data_dir, "o.baker")
    page.goto(server.url + "/")
    message = page.locator("#signin-message")
    for attempt in range(1, 6):
        page.wait_for_selector("#screen-signin:not([hidden])")
        page.fill("#signin-officer", officer.officer_id)
        page.fill("#signin-pin", "13572468")  # wrong PIN
        page.fill("#signin-code", "123456")
        page.click("#signin-submit")
        if attempt < 5:
            left = 5 - attempt
            expect(message).to_contain_text(f"{left} attempt{'s' if left != 1 else ''} left")
    expect(message).to_contain_text("locked")
    assert "locked after 5 failed sign-ins" in message.inner_text()

    # The 6th attempt, with the right PIN and a valid code, is refused with the lock message.
    page.fill("#signin-officer", officer.officer_id)
    page.fill("#signin-pin", officer.pin)
    code = officer.code()
    page.fill("#signin-code", code)
    page.evaluate("document.getElementById('signin-message').textContent = ''")
    page.click("#signin-submit")
    expect(message).to_contain_text("locked")
    assert "locked after 5 failed sign-ins" in message.inner_text()
    assert "Try again after" in message.inner_text()
    assert page.locator("#screen-signin").is_visible()

    entries = [(b, d) for a, b, d in audit_actions(server.data_dir) if a == "o.baker"]
    actions = [b for b, _ in entries]
    assert actions.count("logon_failed") == 6 and actions.count("account_lock") == 1
    assert "logon" not in actions
    assert entries[-1] == ("logon_failed", entries[-1][1]) and entries[-1][1]["reason"] == "locked"

    # The station admin unlocks it; the same officer then signs in.
    from appliance.ui.cli import main

    result = CliRunner().invoke(main, ["users", "unlock", "o.baker", "--data-dir", str(server.data_dir)])
    assert result.exit_code == 0, result.output
    listing = CliRunner().invoke(main, ["users", "list", "--data-dir", str(server.data_dir)])
    assert "o.baker" in listing.output and "LOCKED" not in listing.output
    sign_in(page, server, officer)
    assert page.locator("#officer-name").inner_text() == "o.baker"


def test_reset_totp_replaces_the_second_factor(start_server, tmp_path: Path) -> None:
    import json

    import pyotp

    from appliance.ui.cli import main
    from tests.ui.conftest import api_call

    server = start_server()
    officer = add_officer(server.data_dir, "o.chen")
    result = CliRunner().invoke(main, ["users", "reset-totp", "o.chen", "--json", "--data-dir", str(server.data_dir)])
    assert result.exit_code == 0, result.output
    new_secret = json.loads(result.stdout)["totp_secret"]
    headers = {"X-Booking-Station": "1"}
    status, body, _ = api_call(server, "POST", "/api/v1/session",
                               {"officer_id": "o.chen", "pin": officer.pin, "code": officer.code()}, headers)
    assert status == 401 and body["code"] == "wrong_credentials"
    status, body, _ = api_call(server, "POST", "/api/v1/session",
                               {"officer_id": "o.chen", "pin": officer.pin, "code": pyotp.TOTP(new_secret).now()},
                               headers)
    assert status == 200 and body["officer_id"] == "o.chen"
    assert ("admin:" in next(a for a, b, _ in audit_actions(server.data_dir) if b == "totp_reset"))
