"""The console's JSON API on the real server (``booking-gallery serve``) over a gallery of imported real faces."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.sync.county.console.conftest import STATION_BOOKING, Gallery, Server, User, add_user, cli


def call(server: Server, method: str, path: str, *, token: str | None = None, body: dict | None = None,
         form: dict[str, str] | None = None, files: dict[str, bytes] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data, hdrs = None, dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None:
        data, hdrs["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None or files is not None:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in (form or {}).items()]
        parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="probe.jpg"\r\n'
                  f'Content-Type: image/jpeg\r\n\r\n'.encode() + v + b"\r\n" for k, v in (files or {}).items()]
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        hdrs["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status, kind = resp.read(), resp.status, resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw


@pytest.fixture(scope="module")
def api_user(gallery: Gallery) -> User:
    return add_user(gallery, "api-user")


@pytest.fixture(scope="module")
def token(server: Server, api_user: User) -> str:
    status, doc = call(server, "POST", "/api/v1/session",
                       body={"user_id": api_user.user_id, "pin": api_user.pin, "code": api_user.code()})
    assert status == 200, doc
    assert doc["user_id"] == "api-user" and len(doc["token"]) > 30
    return doc["token"]


def test_everything_needs_a_session(server: Server) -> None:
    for path in ("/api/v1/records", "/api/v1/fleet", "/api/v1/audit", f"/api/v1/records/{uuid.uuid4()}"):
        status, doc = call(server, "GET", path)
        assert status == 401 and doc["code"] == "signed_out", path
    status, doc = call(server, "GET", "/api/v1/records", token="not-a-token")
    assert status == 401


def test_records_filters_and_record(server: Server, gallery: Gallery, token: str) -> None:
    status, doc = call(server, "GET", "/api/v1/records", token=token)
    assert status == 200 and doc["count"] == len(gallery.booked) + 1
    identity, (booking, record_id) = next(iter(gallery.booked.items()))
    status, doc = call(server, "GET", f"/api/v1/records?booking_number={booking}", token=token)
    assert [r["record_id"] for r in doc["records"]] == [record_id]
    status, doc = call(server, "GET", "/api/v1/records?station=st-07&ori=wa0170000", token=token)
    assert [r["booking_number"] for r in doc["records"]] == [STATION_BOOKING]
    status, doc = call(server, "GET", "/api/v1/records?since=2019-05-02&until=2019-05-04", token=token)
    assert sorted(r["captured_at"][:10] for r in doc["records"]) == ["2019-05-02", "2019-05-03"]
    status, doc = call(server, "GET", "/api/v1/records?since=yesterday", token=token)
    assert status == 400 and "ISO 8601" in doc["error"]

    status, rec = call(server, "GET", f"/api/v1/records/{gallery.station_record}", token=token)
    assert status == 200 and rec["operator"] == "ofc-5150"
    (front,) = rec["captures"]
    assert front["quality_words"] == "Did not pass nist-sap30: Move the camera closer: the face is too small."
    assert "prisoner refused to face the camera" in front["override_words"]
    assert [h["event"] for h in rec["history"]][:2] == ["sealed", "received"]
    code, out, _ = cli(gallery.config, "audit", "list", "--action", "console_record_view", "--json")
    assert (json.loads(out)["entries"][0]["actor"], json.loads(out)["entries"][0]["subject"]) == (
        "api-user", gallery.station_record)  # looking at a record is audited too
    status, jpeg = call(server, "GET", f"/api/v1/records/{gallery.station_record}/photos/0", token=token)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    status, doc = call(server, "GET", f"/api/v1/records/{uuid.uuid4()}", token=token)
    assert status == 404


def test_search_by_upload_answers_the_cli_json_and_is_audited(server: Server, gallery: Gallery, token: str) -> None:
    identity, probe = sorted(gallery.probes.items())[1]
    image = probe.read_bytes()
    status, doc = call(server, "POST", "/api/v1/search", token=token, form={"top": "3"}, files={"image": image})
    assert status == 400 and "reason" in doc["error"]
    status, doc = call(server, "POST", "/api/v1/search", token=token,
                       form={"reason": "case 2026-4711", "top": "3"}, files={"image": image})
    assert status == 200, doc
    assert set(doc) == {"probe", "candidates", "searched", "took_ms"}
    assert doc["searched"] == len(gallery.booked) + 1 and len(doc["candidates"]) == 3
    first = doc["candidates"][0]
    assert set(first) == {"record_id", "booking_number", "ori", "station", "captured_at", "pose", "distance"}
    assert (first["booking_number"], first["record_id"]) == gallery.booked[identity]
    assert first["distance"] < 0.6
    code, out, _ = cli(gallery.config, "audit", "list", "--action", "console_search", "--json")
    entry = json.loads(out)["entries"][0]
    assert code == 0 and entry["actor"] == "api-user" and entry["details"]["reason"] == "case 2026-4711"
    assert entry["details"]["candidates"][0] == first["record_id"]
    # the CLI answers the same first candidate for the same photo
    code, out, _ = cli(gallery.config, "search", probe, "--json", "--top", "3")
    assert [c["record_id"] for c in json.loads(out)["candidates"]] == [c["record_id"] for c in doc["candidates"]]


def test_search_from_a_record_leaves_it_out(server: Server, gallery: Gallery, token: str) -> None:
    _, record_id = next(iter(gallery.booked.values()))
    status, doc = call(server, "POST", "/api/v1/search", token=token,
                       form={"record_id": record_id, "reason": "warrant W-88", "top": "5"})
    assert status == 200 and doc["probe"] == {"record_id": record_id, "embed_ms": doc["probe"]["embed_ms"]}
    assert record_id not in [c["record_id"] for c in doc["candidates"]] and len(doc["candidates"]) == 5
    status, doc = call(server, "POST", "/api/v1/search", token=token, form={"reason": "case 1"},
                       files={"image": b"not a photo at all"})
    assert status == 400 and "photo" in doc["error"]


def test_body_limit_csrf_and_bad_json(server: Server, token: str, api_user: User) -> None:
    big = b"\xff\xd8" + b"0" * 1_200_000
    status, doc = call(server, "POST", "/api/v1/search", token=token, form={"reason": "case 9"}, files={"image": big})
    assert status == 413 and doc["code"] == "too_large"
    # a cookie-authenticated write without the custom header, or from another site, is refused
    status, doc = call(server, "POST", "/api/v1/search", form={"reason": "case 9"},
                       headers={"Cookie": f"bg_console={token}"})
    assert status == 403 and doc["code"] == "csrf"
    status, doc = call(server, "POST", "/api/v1/search", token=token, form={"reason": "case 9"},
                       headers={"Origin": "http://evil.example"})
    assert status == 403
    status, doc = call(server, "POST", "/api/v1/session", body=None, headers={"Content-Type": "application/json"})
    assert status == 400


def test_lockout_after_five_failures_and_unlock(server: Server, gallery: Gallery) -> None:
    user = add_user(gallery, "locked-out")
    for attempt in range(5):
        status, doc = call(server, "POST", "/api/v1/session",
                           body={"user_id": user.user_id, "pin": "13572468", "code": "000000"})
        assert status == (403 if attempt == 4 else 401), (attempt, doc)
    assert doc["code"] == "account_locked"
    status, doc = call(server, "POST", "/api/v1/session",
                       body={"user_id": user.user_id, "pin": user.pin, "code": user.code()})
    assert status == 403 and doc["code"] == "account_locked"  # even the right PIN and code
    code, out, _ = cli(gallery.config, "users", "list", "--json")
    (row,) = [u for u in json.loads(out)["users"] if u["user_id"] == user.user_id]
    assert row["locked"] is True
    code, out, _ = cli(gallery.config, "users", "unlock", user.user_id, "--json")
    assert code == 0 and json.loads(out)["locked"] is False
    status, doc = call(server, "POST", "/api/v1/session",
                       body={"user_id": user.user_id, "pin": user.pin, "code": user.code()})
    assert status == 200
    code, out, _ = cli(gallery.config, "audit", "list", "--json", "--limit", "500")
    actions = [(e["actor"], e["action"]) for e in json.loads(out)["entries"]]
    assert ("locked-out", "console_account_lock") in actions and ("locked-out", "console_logon") in actions
    assert actions.count(("locked-out", "console_logon_failed")) == 6
    code, _, err = cli(gallery.config, "users", "unlock", "nobody")
    assert code == 1 and "no account" in err
