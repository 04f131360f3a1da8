"""The queue screen with real outbox rows in every delivery state, and the alarms an officer must see:
the station offline (from the sync agent's status), the queue growing (old undelivered records) and the
disk low (the store's alarm)."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone

import cv2
from playwright.sync_api import expect

from tests.ui.conftest import AGENCY, STATION, add_officer, shoot, sign_in


def _save(store, face_sources, number: str) -> str:
    from appliance.store import Booking, Capture

    jpeg = face_sources.passing.read_bytes()
    image = cv2.imread(str(face_sources.passing))
    assert image is not None
    height, width = image.shape[:2]
    booking = Booking(agency_ori=AGENCY, booking_number=number, operator_id="o.ives",
                      captured_at=store.clock(), station_id=STATION)
    return store.save_booking(booking, [Capture.from_jpeg("frontal", jpeg, width, height, "o.ives")])


def test_queue_shows_delivery_states_and_alarms(page, start_server, face_sources, tmp_path) -> None:
    from appliance.store import Store

    data = tmp_path / "data"
    data.mkdir()
    now = datetime.now(timezone.utc)
    with Store.open_data_dir(data, clock=lambda: now - timedelta(minutes=70)) as store:
        waiting = _save(store, face_sources, "2026-000601")  # waiting for 70 minutes
        store.mark_failed(waiting, "no gallery is subscribed on the broker (PUBACK 0x10)")  # the agent's words
    with Store.open_data_dir(data) as store:
        delivered = _save(store, face_sources, "2026-000602")
        rejected = _save(store, face_sources, "2026-000603")
        store.mark_delivered(delivered, "stored")
        store.mark_rejected(rejected, "template model not accepted by the county gallery")
        store.raise_alarm("disk_low", "Booking NOT saved: the disk is too full. 120.0 MiB free on /var/lib/"
                                      "booking-station, and at least 512.0 MiB must stay free.")
    # The sync agent's own status file (sync/station/agent/status.py), as a running agent that cannot reach the broker
    # writes it; this test process stands in for the agent's pid.
    (data / "sync").mkdir(mode=0o700)
    (data / "sync" / "status.json").write_text(json.dumps({
        "v": 1, "state": "offline", "connected": False, "at": now.isoformat(), "last_ack_at": None,
        "broker": "gallery.county.example:8883", "last_error": "TLS handshake failed", "pid": os.getpid()}),
        encoding="utf-8")

    server = start_server(data_dir=data)
    officer = add_officer(data, "o.ives")
    sign_in(page, server, officer)
    pill = page.locator("#nav-alarm")
    expect(pill).to_be_visible()
    expect(page.locator("#nav-alarm-count")).to_have_text("3")

    pill.click()
    alarms = page.locator("#alarms .alarm")
    expect(alarms).to_have_count(3)
    offline = page.locator("#alarms [data-alarm='offline']")
    expect(offline).to_contain_text("No connection to the county gallery")
    # The agent's technical reason is behind the alarm's collapsed Details line, not in its sentence.
    expect(offline.locator(".message-details code")).to_have_text("TLS handshake failed")
    expect(offline.locator(".message-details code")).to_be_hidden()
    disk = page.locator("#alarms [data-alarm='disk_low']")
    expect(disk).to_contain_text("The station's disk is nearly full")
    expect(disk.locator(".message-details code")).to_contain_text("120.0 MiB free on /var/lib/")
    for alarm in (offline, disk):  # no path, size or protocol code in the words an officer reads
        words = alarm.evaluate("el => [...el.childNodes].filter(n => n.nodeName !== 'DETAILS')"
                               ".map(n => n.textContent).join('')")
        assert not re.search(r"[KMGT]iB|/var/|TLS|PUBACK", words), words
    expect(page.locator("#alarms [data-alarm='queue_growing']")).to_contain_text("the oldest for 70 minutes")
    expect(page.locator("#count-pending")).to_have_text("1")
    expect(page.locator("#count-delivered")).to_have_text("1")
    expect(page.locator("#count-rejected")).to_have_text("1")
    expect(page.locator("#last-contact")).not_to_have_text("never")  # the gallery's ack just now
    row = page.locator("#queue-body tr[data-booking='2026-000603']")
    expect(row).to_contain_text("Rejected")
    expect(row).to_contain_text("template model not accepted")
    expect(page.locator("#queue-body tr[data-booking='2026-000602']")).to_contain_text("Delivered")
    # The agent's technical reason is said in words; the code stays behind the row's Details line.
    waiting_row = page.locator("#queue-body tr[data-booking='2026-000601']")
    expect(waiting_row).to_contain_text("The county gallery is not taking bookings right now")
    assert "PUBACK" not in waiting_row.inner_text()
    waiting_row.locator("summary").click()
    expect(waiting_row.locator(".message-details code")).to_have_text(
        "no gallery is subscribed on the broker (PUBACK 0x10)")
    page.locator("#screen-queue").evaluate("el => { el.scrollTop = 0; }")
    shoot(page, "alarm", ["#alarms [data-alarm='offline']", "#alarms [data-alarm='disk_low']", "#count-pending",
                          "#nav-alarm"])


RECORD = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
# The sync agent's alarms, with texts as the agent words them (sync/station/agent/incoming.py, delivery.py,
# audit.py; sync/station/remote.py): MQTT reason names and codes, the gallery's reject codes, record ids,
# topics and paths. Each is county IT's text, for the Details line.
AGENT_ALARMS = {
    "broker_refusing": "the county broker refuses this station's records (Not authorized, 0x87 on "
                       "booking/lincoln/desk-1/records); they stay queued. Call county IT",
    "gallery_refusing": "the county gallery refuses this station's records without naming them (unknown_station: "
                        "no device key for lincoln/desk-1); records stay queued and are retried. Call county IT",
    "record_rejected": f"the county gallery rejected record {RECORD} (booking 2026-000603, NE0000000): "
                       f"bad_signature: signature does not verify with 'desk-1-2026'. The record is kept on this "
                       f"station and is not sent again; a supervisor must review it with county IT",
    "ack_conflict": f"record {RECORD} was already acked as 'stored'; a rejection (duplicate_record: seen) "
                    f"contradicts that, so it was not applied. Check the gallery's copy",
    "record_unsendable": f"record {RECORD} (booking 2026-000604) cannot be sent as stored (oversize: payload of "
                         f"9000000 bytes is over 8388608). It is kept on this station; call county IT",
    "audit_refused": "the county gallery refuses this station's audit entries (bad_chain); they stay here and are "
                     "sent again",
    "audit_conflict": "the county's copy of the audit log does not match this station's at entry 42 or before "
                      "(fork); call county IT",
    "key_rotation_failed": "rotate signing-key: cannot write /var/lib/booking-station/keys/signing.key.new "
                           "(EACCES)",
}
# What the words an officer reads must not carry: a topic or path (any slash), an MQTT reason code or name, a
# protocol or reject code (snake_case), a record id, a byte count.
TECHNICAL = re.compile(r"/|0x[0-9a-f]+|\bMQTT\b|PUBACK|TLS|authori[sz]ed|\b[a-z]+_[a-z_]+\b|"
                       r"[0-9a-f]{8}-[0-9a-f]{4}|\bbytes\b|EACCES", re.IGNORECASE)


def test_agent_alarm_names_are_the_agents() -> None:
    """The UI words the agent's alarms by name without importing the agent: the names must be the agent's."""
    from sync.station import remote
    from sync.station.agent import audit, common

    names = {common.ALARM_RECORD_REJECTED, common.ALARM_RECORD_UNSENDABLE, common.ALARM_GALLERY_REFUSING,
             common.ALARM_ACK_CONFLICT, common.ALARM_BROKER_REFUSING, audit.ALARM_AUDIT_CONFLICT,
             audit.ALARM_AUDIT_REFUSED, remote.ALARM_KEY_ROTATION_FAILED}
    assert names == set(AGENT_ALARMS)


def test_agent_delivery_alarms_in_plain_words(page, start_server, tmp_path) -> None:
    """Every alarm the sync agent raises reads as a plain sentence; its own text is behind Details."""
    from appliance.store import Store

    data = tmp_path / "data"
    data.mkdir()
    with Store.open_data_dir(data) as store:
        for name, message in AGENT_ALARMS.items():
            store.raise_alarm(name, message)
    server = start_server(data_dir=data)
    sign_in(page, server, add_officer(data, "o.ives"))
    expect(page.locator("#nav-alarm-count")).to_have_text(str(len(AGENT_ALARMS)))
    page.locator("#nav-alarm").click()
    expect(page.locator("#alarms .alarm")).to_have_count(len(AGENT_ALARMS))
    for name, message in AGENT_ALARMS.items():
        shown = page.locator(f"#alarms [data-alarm='{name}']")
        expect(shown.locator("strong")).not_to_contain_text("_")  # a title, not the alarm's name
        words = shown.evaluate("el => [...el.childNodes].filter(n => n.nodeName !== 'DETAILS')"
                               ".map(n => n.textContent).join('')")
        assert "county IT" in words or "supervisor" in words, words  # says who to tell
        assert not TECHNICAL.search(words), f"{name}: {words}"
        code = shown.locator(".message-details code")
        expect(code).to_be_hidden()  # collapsed until asked for
        expect(code).to_have_text(message)
    rejected = page.locator("#alarms [data-alarm='record_rejected']")
    rejected.locator("summary").click()
    expect(rejected.locator(".message-details code")).to_be_visible()
    page.locator("#screen-queue").evaluate("el => { el.scrollTop = 0; }")
    shoot(page, "alarm-delivery", ["#alarms [data-alarm='broker_refusing']", "#nav-alarm"])
