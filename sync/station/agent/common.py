"""What the sync agent's parts share: the logger, timings, status file and content type, the alarms it
raises, and the error that stops it from starting."""

from __future__ import annotations

import logging

from appliance import __version__ as APPLIANCE_VERSION

log = logging.getLogger("booking_station.sync")

SOFTWARE = f"booking-station {APPLIANCE_VERSION}"
STATUS_FILE = "status.json"
STATUS_CONTENT_TYPE = "application/json"
#: A record copy the broker still holds for an absent gallery after a day is stale: the outbox has
#: sent it again since. Expiring it bounds the broker memory taken by repeats (MQTT 5 only).
RECORD_EXPIRY_SECONDS = 24 * 3600
#: Status is also sent when the queue changed, but not more often than this.
STATUS_MIN_INTERVAL = 5.0
#: How long the agent thread sleeps when there is nothing to do (new bookings are found this late).
POLL_SECONDS = 0.5
#: The same while booking-time checks are carried: an officer is waiting for the answer, so the spool is
#: looked at five times as often (an idle wake-up costs microseconds).
CHECK_POLL_SECONDS = 0.1
NO_MATCHING_SUBSCRIBERS = 0x10

# Alarms this agent raises (appliance.store.alarms keeps them; the UI and `booking-station queue` show them).
ALARM_RECORD_REJECTED = "record_rejected"
ALARM_RECORD_UNSENDABLE = "record_unsendable"
ALARM_GALLERY_REFUSING = "gallery_refusing"
ALARM_ACK_CONFLICT = "ack_conflict"
ALARM_BROKER_REFUSING = "broker_refusing"


class SyncSetupError(RuntimeError):
    """The agent cannot start (missing key, unreadable certificate, bad config); the message says why."""
