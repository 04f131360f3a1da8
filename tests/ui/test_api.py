"""The JSON API without a browser: the guards (session, CSRF header, Origin, Host), the cookie's flags,
the security headers, clear refusals of bad input, and the jail management system's calls."""

from __future__ import annotations

import http.cookiejar
import os
import urllib.request
from pathlib import Path

import pytest

from tests.ui.conftest import AGENCY, add_officer, api_call

H = {"X-Booking-Station": "1"}


@pytest.fixture
def jms_token(tmp_path: Path) -> tuple[Path, str]:
    token = "jms-" + os.urandom(24).hex()
    path = tmp_path / "jms.token"
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path, token


def _signed_in(server, officer) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, body, headers = api_call(server, "POST", "/api/v1/session",
                                     {"officer_id": officer.officer_id, "pin": officer.pin, "code": officer.code()},
                                     H, opener)
    assert status == 200, body
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    return opener


def test_guards_and_headers(start_server, jms_token) -> None:
    server = start_server(extra=["--jms-token-file", str(jms_token[0])])
    officer = add_officer(server.data_dir, "o.jones")

    status, body, _ = api_call(server, "GET", "/api/v1/booking")
    assert status == 401 and body["code"] == "signed_out"
    status, _, _ = api_call(server, "GET", "/api/v1/booking/frame.jpg")
    assert status == 401

    # Sign-in itself needs the custom header (no login CSRF), and a foreign Origin is refused.
    creds = {"officer_id": "o.jones", "pin": officer.pin, "code": "000000"}
    status, body, _ = api_call(server, "POST", "/api/v1/session", creds)
    assert status == 403 and body["code"] == "csrf"
    status, body, _ = api_call(server, "POST", "/api/v1/session", creds, {**H, "Origin": "http://evil.example"})
    assert status == 403 and "another site" in body["error"]

    opener = _signed_in(server, officer)
    status, body, _ = api_call(server, "GET", "/api/v1/booking", opener=opener)
    assert status == 200 and body["booking"] is None
    # With the session cookie but without the header (what a cross-site form could send): refused.
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "X1"}, opener=opener)
    assert status == 403 and body["code"] == "csrf"

    # A bad booking number is refused with the reason, before any photo.
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-0007\r"}, H, opener)
    assert status == 422 and "U+000D" in body["error"]
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-0007",
                                                                  "agency_ori": "nope"}, H, opener)
    assert status == 422 and "ORI" in body["error"]

    # DNS rebinding: a foreign Host is refused before any handler runs.
    status, _, _ = api_call(server, "GET", "/api/v1/health", headers={"Host": "evil.example"})
    assert status == 400

    with urllib.request.urlopen(server.url + "/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert r.headers["Cache-Control"] == "no-store" and r.headers["X-Content-Type-Options"] == "nosniff"


def test_jail_management_system_announces_a_booking(start_server, jms_token) -> None:
    server = start_server(extra=["--jms-token-file", str(jms_token[0])])
    officer = add_officer(server.data_dir, "o.king")
    bearer = {"Authorization": f"Bearer {jms_token[1]}"}

    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000700"},
                               {"Authorization": "Bearer wrong-token"})
    assert status == 401 and body["code"] == "bad_token"
    status, body, _ = api_call(server, "POST", "/api/v1/bookings",
                               {"booking_number": "2026-000700", "agency_ori": AGENCY}, bearer)
    assert status == 201 and body == {"state": "requested", "booking_number": "2026-000700", "agency_ori": AGENCY}
    status, body, _ = api_call(server, "GET", "/api/v1/bookings?booking_number=2026-000700", headers=bearer)
    assert status == 200 and body["state"] == "requested"

    opener = _signed_in(server, officer)
    status, body, _ = api_call(server, "GET", "/api/v1/booking", opener=opener)
    assert [r["booking_number"] for r in body["requests"]] == ["2026-000700"]
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000700"}, H, opener)
    assert status == 201 and body["booking"]["booking_number"] == "2026-000700" and body["requests"] == []
    assert body["booking"]["operator_id"] == "o.king"
    status, body, _ = api_call(server, "GET", "/api/v1/bookings?booking_number=2026-000700", headers=bearer)
    assert body["state"] == "open"

    # A second booking while one is open: refused, naming the open one.
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000701"}, H, opener)
    assert status == 409 and "2026-000700 is still open" in body["error"]
    # Discarding needs a reason and is audited.
    status, body, _ = api_call(server, "POST", "/api/v1/booking/discard", {"reason": " "}, H, opener)
    assert status == 422
    status, body, _ = api_call(server, "POST", "/api/v1/booking/discard", {"reason": "wrong number"}, H, opener)
    assert status == 200 and body["booking"] is None
    from tests.ui.conftest import audit_actions

    discards = [d for a, b, d in audit_actions(server.data_dir) if b == "booking_discard"]
    assert discards and discards[0]["reason"] == "wrong number" and discards[0]["booking_number"] == "2026-000700"


def test_a_refused_save_keeps_the_booking(start_server, tmp_path: Path) -> None:
    """The queue is full ([store] max_pending): 'Booking NOT saved' with the store's message and alarm;
    the booking stays open with its photos (in memory and in the draft) and nothing was stored."""
    import time

    server = start_server(config="[store]\nmax_pending = 0\n")
    officer = add_officer(server.data_dir, "o.lane")
    opener = _signed_in(server, officer)
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000800"}, H, opener)
    assert status == 201
    api_call(server, "POST", "/api/v1/booking/pose", {"pose": "frontal"}, H, opener)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]
        if body["booking"]["review"] is not None:
            break
        time.sleep(0.2)
    assert body["booking"]["review"]["passed"] is True
    status, body, _ = api_call(server, "POST", "/api/v1/booking/accept", {}, H, opener)
    assert status == 200 and body["booking"]["accepted"] == ["frontal"]

    status, body, _ = api_call(server, "POST", "/api/v1/booking/save", None, H, opener)
    assert status == 507 and body["code"] == "store_full" and body["error"].startswith("Booking NOT saved")
    body = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]
    assert body["booking"]["accepted"] == ["frontal"] and body["booking"]["saved"] is False
    assert (server.data_dir / "ui" / "draft.bin").is_file()
    queue = api_call(server, "GET", "/api/v1/queue", opener=opener)[1]
    assert "queue_full" in [a["name"] for a in queue["alarms"]]
    from appliance.store import Store

    with Store.open_data_dir(server.data_dir) as store:
        assert store.records_for_booking("2026-000800") == []


def test_systemd_hears_ready_and_watchdog_pings(start_server, tmp_path: Path) -> None:
    """The unit is Type=notify with WatchdogSec=30: READY=1 once listening, then WATCHDOG=1 pings."""
    import socket
    import time

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(1.0)
        start_server(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ("READY=1" in seen and seen.count("WATCHDOG=1") >= 2):
            try:
                seen += sock.recv(4096).decode().splitlines()
            except TimeoutError:
                continue
    assert "READY=1" in seen and seen.count("WATCHDOG=1") >= 2, seen
    assert seen.index("READY=1") < seen.index("WATCHDOG=1")
