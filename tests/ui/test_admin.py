"""Enrolling officers without a root shell: the station admin's Officers screen (PIN rule shown up front, a
QR code the authenticator app reads, the issuer naming county and station), the CLI's QR code, and the
on-screen number keypad for PIN and code (tap and mouse; the keyboard still works)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import cv2
import numpy as np
import pyotp
from click.testing import CliRunner
from playwright.sync_api import expect

from tests.ui.conftest import PIN, SIZES, Officer, add_officer, api_call, audit_actions, shoot, sign_in

STATION_TOML = '[station]\ncounty = "king-county"\nstation = "desk-1"\n'


def _decode_qr(png: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert text, "the QR code on the screen does not decode"
    return text


def _add(data_dir: Path, officer_id: str, role: str, config: Path | None = None, as_json: bool = True):
    from appliance.ui.cli import main

    args = ["--config", str(config)] if config else []
    args += ["users", "add", officer_id, "--role", role, "--pin-stdin", "--data-dir", str(data_dir)]
    return CliRunner().invoke(main, args + (["--json"] if as_json else []), input=f"{PIN}\n")


def test_users_add_prints_a_qr_code_and_names_county_and_station(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "station.toml"
    config.write_text(STATION_TOML, encoding="utf-8")
    result = _add(data, "o.dale", "officer", config, as_json=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    blocks = [line for line in lines if "\u2588" in line or "\u2580" in line]
    assert len(blocks) >= 15 and len({len(line) for line in blocks}) == 1, "no square QR code in the output"
    uri = next(line.split("URI:", 1)[1].strip() for line in lines if "URI:" in line)
    assert urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["issuer"] == ["Booking station king-county desk-1"]

    result = _add(data, "o.elm", "station-admin", config)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # one JSON document
    assert doc["qr_svg"].lstrip().startswith("<svg") and "<path" in doc["qr_svg"]
    assert "king-county" in doc["totp_uri"] and "desk-1" in doc["totp_uri"]
    from appliance.ui.cli import main

    listed = CliRunner().invoke(main, ["users", "list", "--json", "--data-dir", str(data)])
    roles = {user["officer_id"]: user["role"] for user in json.loads(listed.stdout)["users"]}
    assert roles == {"o.dale": "officer", "o.elm": "station-admin"}
    bad = _add(data, "o.fir", "chief", config)
    assert bad.exit_code == 2
    # Typed at the prompt: the PIN rule comes first, not only as the refusal.
    typed = CliRunner().invoke(main, ["users", "add", "o.gum", "--data-dir", str(data)], input=f"{PIN}\n{PIN}\n")
    assert typed.exit_code == 0, typed.output
    assert "The PIN is 6 to 16 digits" in typed.output.split("PIN:")[0]


def test_a_station_admin_enrols_an_officer_on_the_desk(browser, start_server, tmp_path: Path) -> None:
    server = start_server()
    result = _add(server.data_dir, "o.admin", "station-admin")
    assert result.exit_code == 0, result.output
    admin = Officer("o.admin", PIN, json.loads(result.stdout)["totp_secret"])
    plain = add_officer(server.data_dir, "o.plain")

    context = browser.new_context(viewport={"width": SIZES[0][0], "height": SIZES[0][1]}, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        # Sign in with the on-screen keypad: the PIN with the mouse, the code by touch.
        page.goto(server.url + "/")
        expect(page.locator("#signin-keypad button")).to_have_count(12)
        shoot(page, "signin-keypad", ["#signin-pin", "#signin-keypad [data-key='next']", "#signin-submit"],
              tmp_path / "shots")
        page.fill("#signin-officer", admin.officer_id)
        page.click("#signin-keypad [data-key='9']")
        page.click("#signin-keypad [data-key='back']")
        expect(page.locator("#signin-pin")).to_have_value("")
        for digit in admin.pin:
            page.click(f"#signin-keypad [data-key='{digit}']")
        expect(page.locator("#signin-pin")).to_have_value(admin.pin)
        page.tap("#signin-keypad [data-key='next']")
        for digit in admin.code():
            page.tap(f"#signin-keypad [data-key='{digit}']")
        page.tap("#signin-keypad [data-key='next']")  # on the last field: signs in
        expect(page.locator("#screen-signin")).to_be_hidden()

        # The Officers screen: the PIN rule is there before any mistake.
        page.click("#nav-admin")
        expect(page.locator("#pin-rule")).to_have_text(
            "The PIN is 6 to 16 digits, not all one digit and not a run like 123456.")
        expect(page.locator("#officer-list")).to_contain_text("o.plain")
        shoot(page, "admin-enrol", ["#pin-rule", "#enrol-officer", "#enrol-pin", "#enrol-submit"], tmp_path / "shots")
        page.fill("#enrol-officer", "o.new")
        page.fill("#enrol-name", "Officer New")
        page.click("#enrol-pin")
        page.keyboard.type("123456")  # the keyboard still works
        page.click("#enrol-submit")
        expect(page.locator("#enrol-message")).to_contain_text("too easy to guess")
        expect(page.locator("#enrol-pin")).to_be_focused()  # emptied and ready for another PIN
        page.keyboard.type("86420975")
        page.click("#enrol-submit")
        expect(page.locator("#enrol-result")).to_be_visible()
        expect(page.locator("#enrol-issuer")).to_have_text("Booking station desk-1 (o.new)")
        expect(page.locator("#officer-list")).to_contain_text("o.new \u2013 Officer New")
        shoot(page, "admin-qr", ["#enrol-qr", "#enrol-result-title", "#enrol-done"], tmp_path / "shots")
        uri = _decode_qr(page.locator("#enrol-qr").screenshot())
        secret = page.locator("#enrol-secret").text_content()
        totp = pyotp.parse_uri(uri)
        assert totp.secret == secret and totp.issuer == "Booking station desk-1" and totp.name == "o.new"
        actions = [(a, b, d) for a, b, d in audit_actions(server.data_dir) if b == "account_create"]
        assert ("o.admin", "account_create") in [(a, b) for a, b, _ in actions]
        assert actions[-1][2]["officer_id"] == "o.new" and actions[-1][2]["via"] == "desk"

        # The new officer signs in with what the QR code gave the app.
        page.click("#nav-signout")
        sign_in(page, server, Officer("o.new", "86420975", totp.secret), goto=False)
        expect(page.locator("#nav-admin")).to_be_hidden()  # an officer, not an admin
        status = page.evaluate("async () => (await fetch('/api/v1/admin/officers')).status")
        assert status == 403
    finally:
        context.close()
    assert plain.officer_id == "o.plain"
    status, body, _ = api_call(server, "GET", "/api/v1/admin/officers")
    assert status == 401


def _fetch_status(page, path: str) -> int:
    """The status of a POST the page's own session makes (cookie and CSRF header, as officers.js sends it)."""
    return page.evaluate("async (p) => (await fetch(p, {method: 'POST', headers: {'X-Booking-Station': '1'}}))"
                         ".status", path)


def test_a_station_admin_unlocks_and_gives_a_new_code_on_the_desk(browser, start_server, tmp_path: Path) -> None:
    """The Officers screen does what `users unlock` and `users reset-totp` do, without a root shell: a locked
    officer signs in again after Unlock; after New code (confirmed first) the old authenticator code is refused
    and the new QR code's works; both audited with the admin as actor, like enrolment."""
    server = start_server()
    result = _add(server.data_dir, "o.admin", "station-admin")
    assert result.exit_code == 0, result.output
    admin = Officer("o.admin", PIN, json.loads(result.stdout)["totp_secret"])
    locked = add_officer(server.data_dir, "o.locked")
    lost = add_officer(server.data_dir, "o.lost")
    csrf = {"X-Booking-Station": "1"}
    for _ in range(5):  # five wrong PINs lock the account
        status, body, _ = api_call(server, "POST", "/api/v1/session",
                                   {"officer_id": "o.locked", "pin": "13572468", "code": "123456"}, csrf)
    assert (status, body["code"]) == (403, "account_locked")

    context = browser.new_context(viewport={"width": SIZES[0][0], "height": SIZES[0][1]}, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in(page, server, admin)
        page.click("#nav-admin")
        locked_row = page.locator("#officer-list li[data-officer='o.locked']")
        lost_row = page.locator("#officer-list li[data-officer='o.lost']")
        expect(locked_row).to_contain_text("LOCKED")
        expect(lost_row.locator(".officer-unlock")).to_have_count(0)  # only a locked account offers Unlock
        locked_row.locator(".officer-unlock").scroll_into_view_if_needed()
        shoot(page, "admin-officers", ["#officer-list li[data-officer='o.locked'] .officer-unlock",
                                       "#officer-list li[data-officer='o.lost'] .officer-reset"])

        locked_row.locator(".officer-unlock").click()
        expect(page.locator("#officer-message")).to_have_text("o.locked is unlocked and can sign in again.")
        expect(locked_row).not_to_contain_text("LOCKED")
        expect(locked_row.locator(".officer-unlock")).to_have_count(0)
        status, body, _ = api_call(server, "POST", "/api/v1/session",
                                   {"officer_id": "o.locked", "pin": locked.pin, "code": locked.code()}, csrf)
        assert status == 200 and body["officer_id"] == "o.locked"

        # New code: asked first; Cancel changes nothing.
        lost_row.locator(".officer-reset").click()
        expect(page.locator("#reset-confirm")).to_be_visible()
        expect(page.locator("#reset-confirm-text")).to_contain_text("Give o.lost a new authenticator code?")
        page.locator("#reset-confirm-yes").scroll_into_view_if_needed()
        shoot(page, "admin-reset-confirm", ["#reset-confirm-text", "#reset-confirm-yes", "#reset-confirm-no"])
        page.click("#reset-confirm-no")
        expect(page.locator("#reset-confirm")).to_be_hidden()
        assert "totp_reset" not in [b for _, b, _ in audit_actions(server.data_dir)]

        lost_row.locator(".officer-reset").click()
        page.click("#reset-confirm-yes")
        expect(page.locator("#enrol-result")).to_be_visible()
        expect(page.locator("#enrol-result-title")).to_have_text("New authenticator code for o.lost")
        expect(page.locator("#enrol-issuer")).to_have_text("Booking station desk-1 (o.lost)")
        page.locator("#enrol-done").scroll_into_view_if_needed()
        shoot(page, "admin-reset-qr", ["#enrol-qr", "#enrol-result-title", "#enrol-done"])
        uri = _decode_qr(page.locator("#enrol-qr").screenshot())
        totp = pyotp.parse_uri(uri)
        assert totp.secret == page.locator("#enrol-secret").text_content() and totp.name == "o.lost"
        assert totp.secret != lost.secret
        status, body, _ = api_call(server, "POST", "/api/v1/session",
                                   {"officer_id": "o.lost", "pin": lost.pin, "code": lost.code()}, csrf)
        assert status == 401 and body["code"] == "wrong_credentials"  # the old phone's code stops working
        status, body, _ = api_call(server, "POST", "/api/v1/session",
                                   {"officer_id": "o.lost", "pin": lost.pin, "code": totp.now()}, csrf)
        assert status == 200 and body["officer_id"] == "o.lost"

        entries = [(a, b, d) for a, b, d in audit_actions(server.data_dir) if b in ("account_unlock", "totp_reset")]
        assert entries == [("o.admin", "account_unlock", {"officer_id": "o.locked", "via": "desk"}),
                           ("o.admin", "totp_reset", {"officer_id": "o.lost", "via": "desk"})]
        assert _fetch_status(page, "/api/v1/admin/officers/o.nobody/unlock") == 404
        assert _fetch_status(page, "/api/v1/admin/officers/o.nobody/reset-totp") == 404

        # An officer who is not an admin is refused both.
        page.click("#nav-signout")
        sign_in(page, server, locked, goto=False)
        assert _fetch_status(page, "/api/v1/admin/officers/o.lost/unlock") == 403
        assert _fetch_status(page, "/api/v1/admin/officers/o.lost/reset-totp") == 403
    finally:
        context.close()
