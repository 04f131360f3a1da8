"""A full disk refuses a booking at the desk before it starts (not at the save, after the officer's photos)."""

from __future__ import annotations

from tests.ui.conftest import add_officer, api_call
from tests.ui.test_api import H, _signed_in


def test_a_full_disk_refuses_the_booking_before_it_starts(start_server) -> None:  # type: ignore[no-untyped-def]
    # As far as the store's floor says, the disk is full: 1 PB must stay free.
    server = start_server(config="[store]\nfloor_bytes = 1000000000000000\n")
    opener = _signed_in(server, add_officer(server.data_dir, "o.full"))
    status, body, _ = api_call(server, "POST", "/api/v1/bookings", {"booking_number": "2026-000900"}, H, opener)
    assert status == 507 and body["code"] == "store_full"
    # In the officer's words; the figures are behind Details (the technical line).
    assert body["error"].startswith("Booking NOT started: the station's disk is full.")
    assert "Bookings already saved are kept" in body["error"] and "TiB" not in body["error"]
    assert body["detail"].startswith("store_full: disk_full (free_bytes=")
    state = api_call(server, "GET", "/api/v1/booking", opener=opener)[1]
    assert state["booking"] is None  # nothing was opened, no camera started, no draft written
    assert not (server.data_dir / "ui" / "draft.bin").exists()
