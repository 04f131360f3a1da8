"""Booking sessions: one arrestee's photos, from the live preview to the committed record.

Who drives it: the officer UI (a web page polling the station) and `booking-station capture` (a terminal
station, the demo). Both use the same object and the same steps:

    station = CaptureStation.from_config(config, data_dir=..., station_id=...)   # models load once
    session = station.start_booking(agency_ori, booking_number, operator_id)    # fields checked here
    session.open_camera()                      # the station's camera, or any spec ("replay:/srv/demo")
    session.select_pose("frontal")             # arms auto-capture for this pose
    session.start_live()                       # background loop ... or call session.step() yourself
    session.live_status()                      # preview: face box, guidance, ready flag, progress
    session.preview_jpeg()                     # ... and the frame itself, for the preview <img>
    session.capture()                          # manual capture (auto-capture happens by itself)
    session.review()                           # the candidate: full report, guidance, needs override?
    session.retake() / session.accept(override_reason=None)
    ...  left_profile, right_profile, any number of smt (select_pose("smt", description="..."))
    record_id = session.save()                 # one store transaction; only now is it "saved"

    session = station.resume_booking(booking, accepted)   # after a restart: a draft's accepted captures

Threading (chosen): the camera loop is *pulled*. `step()` reads one frame, analyses it and feeds
auto-capture; the caller decides where that runs. `start_live()` runs `step()` in one background thread
for a UI that only polls `live_status()`; the CLI and the tests call `step()` themselves, which makes them
deterministic. Every public method is thread-safe: the state sits behind one lock that is never held
during camera reads or model runs, the station's vision lock serializes the models (TFLite interpreters
are not thread-safe), and a generation counter discards the result of a capture that was being processed
while the officer switched pose or retook.

Failure rules (a fault costs at most a frame or an attempt, never an accepted photo or the booking):

* a corrupt frame (`FrameUnreadable`) is skipped and counted, never fatal;
* a camera that disappears (`CameraError`, including a replay that ended) closes that camera, says so in
  `live_status().camera_error`, and keeps every capture already accepted and the candidate under review.
  `open_camera()` reconnects (or switches source) and the session continues; a complete booking can be
  saved without a camera;
* a booking number (or ORI, operator id) with control characters is refused by `start_booking`, before
  any photo is taken;
* `save()` raises the store's error (e.g. `DiskFullError`, `QueueFullError`) with the store's message,
  keeps the session as it was so the officer can save again, and reuses the same record id, so a retry
  can never make two records of one booking. The store guarantees nothing stored before is touched.

Which poses are needed: the frontal view, exactly once (it carries the template; the store refuses a
record without it). Profile views are wanted but not required: an arrestee who cannot or will not turn
must not cost the booking. `summary().missing` lists them, and the CLI warns.

Modules: `snapshots` (what a session hands out, and `CaptureError`), `station` (`CaptureStation`) and
`booking` (`BookingSession`). Everything is importable from here.
"""

from __future__ import annotations

from appliance.capture.autocapture import OverrideRequired
from appliance.capture.session.booking import IDLE_WAIT_SECONDS as IDLE_WAIT_SECONDS
from appliance.capture.session.booking import RECOMMENDED_POSES as RECOMMENDED_POSES
from appliance.capture.session.booking import BookingSession
from appliance.capture.session.snapshots import MAX_SMT_DESCRIPTION as MAX_SMT_DESCRIPTION
from appliance.capture.session.snapshots import (
    AcceptedCapture,
    CaptureError,
    CaptureReview,
    LiveStatus,
    Phase,
    SessionSummary,
    check_smt_description,
)
from appliance.capture.session.station import DEFAULT_PROFILE as DEFAULT_PROFILE
from appliance.capture.session.station import CaptureStation
from appliance.store import StationStoreError, ValidationError

__all__ = [
    "AcceptedCapture", "BookingSession", "CaptureError", "CaptureReview", "CaptureStation", "LiveStatus",
    "OverrideRequired", "Phase", "SessionSummary", "StationStoreError", "ValidationError", "check_smt_description",
]  # fmt: skip
