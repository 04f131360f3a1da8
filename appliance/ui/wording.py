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


@dataclass(frozen=True)
class Plain:
    """A message in plain words and the technical text behind it."""

    text: str
    detail: str | None = None


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
