"""Plain words for the officer, with the technical text kept behind a "details" line.

The store, the sync agent and the quality engine word their errors for county IT and the logs: broker
reason codes, file paths, byte counts, pixel arithmetic. An officer at the desk needs to know what happened
to the booking and what to do next, in one sentence. Each function here returns a `Plain` message: `text`
for the screen and `detail` for the collapsed "Details" line (so county IT, on the phone, can still ask for
the exact cause). Nothing here decides anything: it only rewords.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.store import DiskFullError, QueueFullError
from appliance.store.alarms import DISK_LOW, QUEUE_FULL


@dataclass(frozen=True)
class Plain:
    """A message in plain words and the technical text behind it."""

    text: str
    detail: str | None = None


# Alarms whose own text is for county IT (paths, sizes, MQTT reason codes, record ids, the gallery's reject codes),
# by alarm name. The sync agent's names are spelled out here, not imported: the officer UI does not import the
# agent (sync.station.agent.common and .audit, sync.station.remote name them; tests/ui/test_queue.py checks).
_ALARMS = {
    DISK_LOW: "The station's disk is nearly full: new bookings will be refused. Bookings already saved are kept; "
              "tell county IT.",
    QUEUE_FULL: "Too many bookings are waiting to be sent to the county: new bookings will be refused. Bookings "
                "already saved are kept; tell county IT.",
    "broker_refusing": "The county refuses this station's deliveries. Bookings are kept here and sent again by "
                       "themselves; call county IT.",
    "gallery_refusing": "The county gallery refuses this station's bookings. They are kept here and sent again by "
                        "themselves; call county IT.",
    "record_rejected": "The county gallery refused a booking (the queue below shows which). It is kept on this "
                       "station and not sent again; a supervisor must review it with county IT.",
    "record_unsendable": "A booking cannot be sent as it is stored. It is kept on this station; call county IT.",
    "ack_conflict": "The county gallery gave two different answers about one booking. The booking is kept on this "
                    "station; call county IT.",
    "audit_refused": "The county gallery refuses this station's activity log. The log is kept here and sent again "
                     "by itself; tell county IT.",
    "audit_conflict": "The county's copy of this station's activity log does not match the station's; call county "
                      "IT.",
    "key_rotation_failed": "The station could not change its security key as the county asked. It keeps working; "
                           "tell county IT.",
}


def alarm(name: str, message: str) -> Plain:
    """An alarm for the queue screen: plain words with the raiser's own text behind Details when the words are
    known, else the raiser's text as it is (an alarm nobody has worded yet must still be seen)."""
    words = _ALARMS.get(name)
    if words is None:
        return Plain(message)
    return Plain(words, message or None)


# Delivery errors as the sync agent writes them (outbox.last_error), first match wins: (fragment, words).
_DELIVERY = (
    ("no gallery is subscribed", "The county gallery is not taking bookings right now. The station sends it "
                                 "again by itself."),
    ("broker refused", "The county refused this station's delivery. The booking stays here; call county IT."),
    ("no ack from the gallery", "The county gallery has not confirmed it yet. The station sends it again by "
                                "itself."),
    ("connection lost", "The connection to the county dropped while sending. The station sends it again by "
                        "itself."),
    ("gallery refused", "The county gallery refused it. The booking stays here; call county IT."),
)


def delivery_error(error: str | None) -> Plain | None:
    """The last delivery error of a queued booking, for the queue screen."""
    if not error:
        return None
    low = error.lower()
    for fragment, words in _DELIVERY:
        if fragment in low:
            return Plain(words, error)
    return Plain("Not delivered yet. The station sends it again by itself.", error)


def disk_full_early(exc: Exception, started: bool) -> Plain:
    """The early free-space check refused: before a booking starts, or before a photo is processed."""
    free, floor = getattr(exc, "free_bytes", None), getattr(exc, "floor_bytes", None)
    if started:
        text = ("Photo NOT processed: the station's disk is full. The photos already accepted stay on this "
                "station. Call county IT to free space, then capture again.")
    else:
        text = ("Booking NOT started: the station's disk is full. Bookings already saved are kept. Call county IT "
                "to free space, then start the booking again.")
    return Plain(text, f"store_full: disk_full (free_bytes={free}, floor_bytes={floor})")


def store_refusal(exc: Exception) -> Plain:
    """Why the store refused to save the booking (disk or queue full), with what the officer does now."""
    kept = "Nothing is lost: the photos stay on this station."
    if isinstance(exc, DiskFullError):
        free, floor = getattr(exc, "free_bytes", None), getattr(exc, "floor_bytes", None)
        return Plain(f"Booking NOT saved: the station's disk is full. {kept} Call county IT to free space, "
                     f"then press Save booking again.",
                     f"store_full: disk_full (free_bytes={free}, floor_bytes={floor})")
    if isinstance(exc, QueueFullError):
        return Plain(f"Booking NOT saved: too many bookings are waiting to be sent to the county. {kept} "
                     f"Call county IT, then press Save booking again.", f"store_full: queue_full ({exc})")
    return Plain(f"Booking NOT saved: the station could not store it. {kept} Try Save booking again; if it "
                 f"keeps happening, call county IT.", f"store_error: {exc}")


# Capture-processing refusals (the standardiser's and the detector's words) an officer can act on.
_CAPTURE = (
    ("too few pixels", "The face is too small in the picture. Move the camera closer to the subject (or the "
                       "subject closer to the camera), then capture again."),
    ("no face", "No face was found in the picture. Make sure the subject faces the camera, then capture again."),
)


def capture_problem(text: str) -> Plain:
    """A capture the station could not process, in words, with the engine's text as the detail."""
    low = text.lower()
    for fragment, words in _CAPTURE:
        if fragment in low:
            return Plain(words, text)
    return Plain("The photo could not be processed. Capture again.", text)
