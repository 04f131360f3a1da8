"""What the queue screen shows: today's bookings and their delivery, the link to the gallery, alarms.

Everything comes from the station database (the outbox is the truth about delivery) plus, when the sync
agent publishes one, its own status file; `station_health` is the one function the server calls, so the
source of any part can change without touching the page.

Alarms the officer must see (a red banner on every screen, and the queue screen in full):

* **offline**: the sync agent says it is not connected, or (without its status) records have been
  waiting longer than `offline_after` and the gallery has acked nothing for that long;
* **queue growing**: more than `queue_alarm_pending` records waiting, or the oldest has waited longer
  than `queue_alarm_age`;
* **disk low**: the store's ``disk_low`` alarm, or free space on the data directory already below the
  store's floor (the next save would be refused);
* any other alarm the store holds (``queue_full``, the sync agent's delivery alarms, ...): in the plain
  words of `appliance.ui.wording.alarm`, the raiser's own message behind Details.

The sync agent's status: the file the agent itself keeps, ``DATA_DIR/sync/status.json`` (see
`sync.station.agent`; read here as plain JSON so the UI does not import the agent): ``connected``,
``at`` (when written), ``last_ack_at``, ``last_error``, ``broker``, ``pid`` and ``reason`` ("stopped" when
it shut down). A stopped agent, or one whose process is gone or not named (`sync.station.status.pid_alive`),
means nothing is being delivered: that is an offline alarm too. A file older than `STALE_STATUS` is not
trusted either way (the agent writes it on every change and at its status interval, 60 s by default) and
the outbox decides instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from appliance.store import Store
from appliance.store.alarms import DISK_LOW
from appliance.store.clock import utc_now
from appliance.store.space import free_bytes, human_bytes
from appliance.ui.wording import alarm as alarm_words
from sync.station.status import pid_alive

SYNC_STATUS_FILE = Path("sync") / "status.json"
STALE_STATUS = timedelta(minutes=5)


@dataclass(frozen=True)
class HealthSettings:
    """Thresholds for the derived alarms."""

    offline_after: timedelta = timedelta(minutes=15)
    queue_alarm_pending: int = 25
    queue_alarm_age: timedelta = timedelta(hours=1)
    disk_floor_bytes: int | None = None  # None: the store's floor


def read_sync_status(data_dir: Path, now: datetime) -> dict[str, Any] | None:
    """The sync agent's view of the link, or None when there is no usable status file.

    ``{"running", "connected", "updated_at", "last_contact", "broker", "error"}``; `running` is False when
    the agent said it stopped or its process is gone (then the file's age does not matter).
    """
    path = Path(data_dir) / SYNC_STATUS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            return None
        updated = _parse_time(doc.get("at"))
        last_ack = _parse_time(doc.get("last_ack_at"))
    except (OSError, ValueError, AttributeError):
        return None
    if updated is None:
        return None
    running = doc.get("reason") != "stopped" and pid_alive(doc.get("pid"))
    if running and now - updated > STALE_STATUS:
        return None
    return {"running": running, "connected": running and bool(doc.get("connected")), "updated_at": updated,
            "last_contact": last_ack, "broker": doc.get("broker"), "error": doc.get("last_error")}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("time without a zone")
    return moment.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def station_health(store: Store, data_dir: Path, settings: HealthSettings, now: datetime | None = None) -> dict:
    """The queue screen's data (see the module docstring); plain JSON-ready values."""
    now = now or utc_now()
    entries = store.queue()
    counts = {"pending": 0, "delivered": 0, "rejected": 0}
    counts.update(store.queue_counts())
    today = now.astimezone().date()
    last_ack = max((e.delivered_at for e in entries if e.delivered_at is not None), default=None)
    rows = []
    for e in reversed(entries):  # newest first
        if e.created_at.astimezone().date() != today:
            continue
        rows.append({
            "record_id": e.record_id, "booking_number": e.booking_number, "agency_ori": e.agency_ori,
            "state": e.state, "saved_at": _iso(e.created_at), "delivered_at": _iso(e.delivered_at),
            "reject_reason": e.reject_reason, "attempts": e.attempts, "last_error": e.last_error,
        })
    pending = [e for e in entries if e.state == "pending"]
    oldest = min((e.created_at for e in pending), default=None)
    oldest_age = None if oldest is None else now - oldest

    sync = read_sync_status(data_dir, now)
    agent_ack: datetime | None = sync["last_contact"] if sync is not None else None
    last_contact = max((t for t in (last_ack, agent_ack) if t is not None), default=None)
    alarms: list[dict[str, str]] = []
    if sync is not None and not sync["running"]:
        alarms.append({"name": "offline", "message": "The delivery service (sync agent) is not running: nothing "
                                                     "is sent to the county gallery. Bookings are kept here; tell "
                                                     "county IT."})
    elif sync is not None and not sync["connected"]:
        # The agent's own reason (a TLS or MQTT error) is for county IT: behind Details, not in the sentence.
        alarms.append({"name": "offline", "message": "No connection to the county gallery. Bookings are kept "
                                                     "here and sent when the link is back.",
                       "detail": str(sync.get("error") or "")})
    elif sync is None and oldest_age is not None and oldest_age > settings.offline_after and (
            last_ack is None or now - last_ack > settings.offline_after):
        alarms.append({"name": "offline", "message": f"Records have waited "
                                                     f"{_duration(oldest_age)} and the gallery has confirmed "
                                                     f"nothing since {_when(last_ack, now)}. Bookings are kept "
                                                     f"here and sent when the link is back; tell county IT."})
    if counts["pending"] > settings.queue_alarm_pending or (
            oldest_age is not None and oldest_age > settings.queue_alarm_age):
        alarms.append({"name": "queue_growing", "message": f"{counts['pending']} booking(s) waiting for "
                                                           f"delivery, the oldest for "
                                                           f"{_duration(oldest_age or timedelta(0))}. Tell "
                                                           f"county IT."})
    store_alarms = store.active_alarms()
    floor = settings.disk_floor_bytes if settings.disk_floor_bytes is not None else store.floor_bytes
    try:
        free = free_bytes(data_dir)
    except OSError:
        free = None
    if not any(a.name == DISK_LOW for a in store_alarms) and free is not None and free < floor:
        low = alarm_words(DISK_LOW, f"{human_bytes(free)} free, at least {human_bytes(floor)} must stay free")
        alarms.append({"name": DISK_LOW, "message": low.text, "detail": low.detail or ""})
    for alarm in store_alarms:
        # The raiser's own text (the store's paths and sizes, the sync agent's reason codes, topics and record
        # ids) is county IT's: the officer reads the plain line, the text stays behind Details.
        plain = alarm_words(alarm.name, alarm.message)
        alarms.append({"name": alarm.name, "message": plain.text, "detail": plain.detail or ""})
    return {
        "now": _iso(now),
        "counts": counts,
        "today": rows,
        "oldest_pending_seconds": None if oldest_age is None else round(oldest_age.total_seconds()),
        "last_contact": _iso(last_contact),
        "last_contact_text": _when(last_contact, now),
        "sync": None if sync is None else {**sync, "updated_at": _iso(sync["updated_at"]),
                                           "last_contact": _iso(sync["last_contact"])},
        "free_bytes": free,
        "alarms": alarms,
    }


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours"
    return f"{hours // 24} days"


def _when(moment: datetime | None, now: datetime) -> str:
    """'14:32 today', '09:10 on 3 Mar', or 'never': local time, as the officer reads it."""
    if moment is None:
        return "never"
    local = moment.astimezone()
    if local.date() == now.astimezone().date():
        return f"{local:%H:%M} today"
    return f"{local:%H:%M} on {local.day} {local:%b %Y}"
