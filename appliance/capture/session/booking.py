"""One booking from preview to saved record (:class:`BookingSession`): camera, live loop, poses and captures,
status, saving. It stays one class in one module (over 500 lines) because every field sits behind one lock,
and the lock discipline is easiest to check when all of it is in view."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.camera import Camera, CameraError, Frame, FrameUnreadable
from appliance.camera.base import fit_within
from appliance.capture.autocapture import Action, AutoCapture, OverrideRequired, validate_reason
from appliance.capture.images import encode_jpeg
from appliance.capture.processing import (
    FRONTAL,
    LEFT_PROFILE,
    POSES,
    RIGHT_PROFILE,
    SIDE_VIEW_POSES,
    SMT,
    LiveAnalysis,
    ProcessedCapture,
)
from appliance.capture.session.snapshots import (
    AcceptedCapture,
    CaptureError,
    CaptureReview,
    LiveStatus,
    Phase,
    SessionSummary,
    check_smt_description,
)
from appliance.store import Booking, DuplicateRecordError
from appliance.store.records import new_record_id

if TYPE_CHECKING:
    from appliance.capture.session.station import CaptureStation


RECOMMENDED_POSES = (FRONTAL, LEFT_PROFILE, RIGHT_PROFILE)
IDLE_WAIT_SECONDS = 0.05


@dataclass
class _Best:
    """The best frame seen for the current pose (a passing frame beats any failing one, then score)."""

    frame: Frame
    passed: bool
    score: float

    def beaten_by(self, passed: bool, score: float) -> bool:
        if passed != self.passed:
            return passed
        return math.isfinite(score) and (not math.isfinite(self.score) or score >= self.score)


class BookingSession:
    """One booking from preview to saved record. See the module docstring for the steps and the rules."""

    def __init__(self, station: CaptureStation, booking: Booking) -> None:
        self.station = station
        self.booking = booking
        self._lock = threading.RLock()  # guards every field below; never held across camera or model calls
        self._read_lock = threading.Lock()  # one camera read + live analysis at a time
        self._save_lock = threading.Lock()
        self._camera: Camera | None = None
        self._camera_error: str | None = None
        self._phase = Phase.IDLE
        self._pose: str | None = None
        self._smt_description: str | None = None
        self._auto_enabled = True
        self._generation = 0
        self._feed_time = 0.0
        self._auto = AutoCapture(station.stable_seconds, max_gap=station.max_gap, clock=lambda: self._feed_time,
                                 max_reason_chars=station.max_reason_chars)
        self._capture_scale: float | None = None  # still pixels per preview pixel; None: not probed yet
        self._latest: Frame | None = None
        self._latest_live: LiveAnalysis | None = None
        self._progress = 0.0
        self._best: _Best | None = None
        self._candidate: ProcessedCapture | None = None
        self._candidate_smt: str | None = None
        self._accepted: dict[str, AcceptedCapture] = {}
        self._smt: list[AcceptedCapture] = []
        self._frames_seen = 0
        self._frames_skipped = 0
        self._message: str | None = None
        self._record_id: str | None = None
        self._saved = False
        self._live_thread: threading.Thread | None = None
        self._live_stop = threading.Event()
        self._last_error: BaseException | None = None

    # --- camera --------------------------------------------------------------------------------------

    def open_camera(self, spec: str | Mapping[str, Any] | None = None, **options: Any) -> str:
        """Open (or reopen after a loss, or switch to) a camera; returns its description.

        Without `spec` the station's configured camera and options; with one, that camera (options then
        default to none). Raises `CameraError` when it cannot be opened; the session is unchanged.
        """
        if spec is None:
            spec = self.station.camera_spec
            options = {**self.station.camera_options, **options}
        if spec is None:
            raise CaptureError("no camera is configured for this station ([camera] source in the config)")
        camera = self.station.camera_factory(spec, **options)
        camera.open()
        with self._read_lock, self._lock:
            old, self._camera = self._camera, camera
            self._capture_scale = None
            self._camera_error = None
            self._latest = None
            self._latest_live = None
            self._auto.reset()
            self._message = f"camera: {camera.description}"
        if old is not None and old is not camera:
            with contextlib.suppress(Exception):
                old.close()
        return camera.description

    def close_camera(self) -> None:
        """Release the camera (e.g. before handing it to another session); captures are kept."""
        with self._read_lock, self._lock:
            camera, self._camera = self._camera, None
        if camera is not None:
            with contextlib.suppress(Exception):
                camera.close()

    # --- the live loop -------------------------------------------------------------------------------

    def step(self) -> LiveStatus:
        """Read one frame, analyse it for the current pose, feed auto-capture; returns the new status.

        When auto-capture fires, the chosen frame is processed here (full report, standard crop,
        template) before this returns, and the session is then in review. Never raises for camera
        trouble: a corrupt frame is skipped and counted, a lost camera is reported in the status.
        """
        with self._read_lock:
            with self._lock:
                camera, pose, generation = self._camera, self._pose or FRONTAL, self._generation
                if self._saved:
                    return self._status_locked()
            if camera is None:
                time.sleep(IDLE_WAIT_SECONDS)  # nothing to read; keep a background loop from spinning
                return self.live_status()
            frame = self._read(camera)
            if frame is None:
                return self.live_status()
            if self._capture_scale is None:
                self._capture_scale = _capture_scale(camera, frame)
            with self.station.vision_lock:
                live = self.station.processor.live(pose, frame.image, self._capture_scale)
            chosen = None
            with self._lock:
                if generation != self._generation:
                    return self._status_locked()  # the officer switched pose meanwhile; the frame is stale
                self._frames_seen += 1
                self._latest, self._latest_live = frame, live
                if self._best is None or self._best.beaten_by(live.passed, live.score):
                    self._best = _Best(frame, live.passed, live.score)
                if self._phase is Phase.LIVE and self._auto_enabled:
                    self._feed_time = frame.timestamp
                    decision = self._auto.feed(frame, live.passed, live.score, [h.code for h in live.guidance])
                    self._progress = decision.progress
                    if decision.action is Action.CAPTURE and decision.capture is not None:
                        chosen = decision.capture.frame
                        self._begin_processing_locked()
                        self._message = "captured automatically"
                else:
                    self._progress = 0.0
        if chosen is not None:
            self._process(chosen, pose, "auto", generation)
        return self.live_status()

    def start_live(self) -> None:
        """Run `step()` in a background thread until `stop_live()` (for a UI that only polls)."""
        with self._lock:
            if self._live_thread is not None and self._live_thread.is_alive():
                return
            self._live_stop.clear()
            thread = threading.Thread(target=self._live_loop, name=f"live-{self.booking.booking_number}",
                                      daemon=True)
            self._live_thread = thread
        thread.start()

    def stop_live(self, timeout: float = 5.0) -> None:
        self._live_stop.set()
        thread = self._live_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _live_loop(self) -> None:
        while not self._live_stop.is_set():
            try:
                status = self.step()
            except Exception as exc:  # a bug must not kill the preview silently; keep it for the UI
                with self._lock:
                    self._last_error = exc
                    self._message = f"live analysis failed: {exc}"
                self._live_stop.wait(0.5)
                continue
            if status.camera is None or status.phase is Phase.SAVED:
                self._live_stop.wait(IDLE_WAIT_SECONDS)

    def _read(self, camera: Camera) -> Frame | None:
        """One frame, or None after counting a skipped frame or recording a lost camera (call with the
        read lock held)."""
        try:
            return camera.read()
        except FrameUnreadable as exc:
            with self._lock:
                self._frames_skipped += 1
                self._message = f"frame skipped: {exc}"
            return None
        except CameraError as exc:
            self._camera_lost(camera, exc)
            return None

    def _camera_lost(self, camera: Camera, exc: CameraError) -> None:
        with self._lock:
            if self._camera is camera:
                self._camera = None
            kept = len(self._accepted) + len(self._smt)
            self._camera_error = (f"{exc}. The {kept} capture(s) already accepted are kept; reconnect the camera "
                                  f"and reopen it to continue, or save the booking if it is complete")
            self._message = self._camera_error
            self._auto.reset()
            self._progress = 0.0
        with contextlib.suppress(Exception):
            camera.close()

    # --- poses and captures -------------------------------------------------------------------------

    def select_pose(self, pose: str, *, description: str | None = None, auto: bool | None = None) -> None:
        """Start taking `pose` (frontal, left_profile, right_profile, smt). Re-selecting an accepted pose
        is a retake: the new photo replaces the old one when accepted. SMT needs a short description.
        `auto`: whether auto-capture is armed (default: on for frontal and profiles, off for SMT, whose
        framing only the officer can judge)."""
        if pose not in POSES:
            raise CaptureError(f"unknown pose {pose!r}; choose one of {', '.join(POSES)}")
        if pose == SMT:
            description = check_smt_description(description)
        elif description is not None:
            raise CaptureError("only an SMT capture (scar, mark, tattoo) takes a description")
        with self._lock:
            self._require_not_saved()
            self._generation += 1
            self._pose, self._smt_description = pose, description
            self._auto_enabled = (pose != SMT) if auto is None else bool(auto)
            # A turned head holds for the countdown before a profile is taken; a frontal for the stable window.
            hold = self.station.profile_hold_seconds if pose in SIDE_VIEW_POSES else self.station.stable_seconds
            self._auto.stable_seconds = float(hold)
            self._candidate, self._candidate_smt = None, None
            self._phase = Phase.LIVE
            self._auto.rearm()
            self._best, self._progress, self._latest, self._latest_live = None, 0.0, None, None
            self._message = f"taking {pose}" + (f" ({description})" if description else "")

    def capture(self, *, source: str = "latest") -> CaptureReview:
        """Manual capture of the current pose: always possible while a pose is selected, whatever the gates
        say (a failing photo then needs an override reason to be accepted). `source`: "latest" takes the
        frame on screen (reading one if none has been read yet), "best" the best frame seen since the pose
        was selected (a passing one if any passed). Returns the review of the processed capture."""
        if source not in ("latest", "best"):
            raise CaptureError(f"capture source must be 'latest' or 'best', got {source!r}")
        with self._lock:
            self._require_not_saved()
            if self._pose is None:
                raise CaptureError("choose a pose first (frontal, left_profile, right_profile or smt)")
            if self._phase is Phase.PROCESSING:
                raise CaptureError("a capture is still being processed; wait for its review")
            frame = self._best.frame if (source == "best" and self._best is not None) else self._latest
        if frame is None:
            frame = self._fresh_frame()
        with self._lock:
            if self._phase is Phase.PROCESSING:
                raise CaptureError("a capture is still being processed; wait for its review")
            pose, generation = self._pose, self._generation
            self._begin_processing_locked()
            self._message = "captured by hand"
        assert pose is not None
        self._process(frame, pose, "manual", generation)
        review = self.review()
        if review is None:
            raise CaptureError("the capture was discarded: the pose changed while it was processed")
        return review

    def _fresh_frame(self, attempts: int = 5) -> Frame:
        """A frame straight from the camera, for a manual capture before the preview has shown one
        (a few corrupt frames are skipped on the way)."""
        with self._read_lock:
            for _ in range(attempts):
                with self._lock:
                    camera = self._camera
                if camera is None:
                    break
                frame = self._read(camera)
                if frame is not None:
                    with self._lock:
                        self._latest = frame
                    return frame
        with self._lock:
            error = self._camera_error or ("no camera is open" if self._camera is None
                                           else "the camera delivered no readable frame")
        raise CaptureError(f"nothing to capture: {error}")

    def _begin_processing_locked(self) -> None:
        self._phase = Phase.PROCESSING
        self._candidate = None
        self._progress = 1.0

    def _still_for(self, frame: Frame) -> Frame:
        """The image to keep for a chosen preview frame. When the camera previews at a lower resolution
        than it captures (a `preview_size`, a Pi camera's still mode), a still is taken now: the pose
        has just held for the whole stable window (or the officer pressed capture), and the record needs
        the full resolution. Otherwise the chosen frame itself, exactly as it was measured."""
        if (self._capture_scale or 1.0) <= 1.0:
            return frame
        with self._read_lock:
            with self._lock:
                camera = self._camera
            if camera is None:
                return frame  # camera gone: the preview frame is all there is
            try:
                still = camera.capture_still()
            except FrameUnreadable:
                return frame
            except CameraError as exc:
                self._camera_lost(camera, exc)
                return frame
        return still if still.size[0] > frame.size[0] else frame

    def _process(self, frame: Frame, pose: str, mode: str, generation: int) -> None:
        captured_at = self.station.utc_now()
        frame = self._still_for(frame)
        try:
            self.station.check_space("Photo NOT processed")
            with self.station.vision_lock:
                processed = self.station.processor.process(pose, np.asarray(frame.image), mode=mode,
                                                           captured_at=captured_at, frame_sequence=frame.sequence)
        except Exception as exc:
            with self._lock:
                if generation == self._generation:
                    self._phase = Phase.LIVE
                    self._auto.rearm()
                    self._message = f"the capture could not be processed ({exc}); capture again"
                    self._last_error = exc
            raise
        with self._lock:
            if generation != self._generation:
                return  # pose changed or retake pressed meanwhile: this result is not wanted any more
            self._candidate, self._candidate_smt = processed, self._smt_description
            self._phase = Phase.REVIEW

    def review(self) -> CaptureReview | None:
        """The candidate waiting for accept or retake, or None."""
        with self._lock:
            p = self._candidate
            if p is None:
                return None
            return CaptureReview(p.pose, p.mode, p.passed, not p.passed, p.guidance, p.quality, p.width, p.height,
                                 None if p.template is None else len(p.template), p.template_model, p.notes,
                                 self._candidate_smt, p.jpeg)

    def retake(self) -> None:
        """Discard the candidate (or the capture being processed) and look for this pose again."""
        with self._lock:
            self._require_not_saved()
            if self._pose is None:
                raise CaptureError("nothing to retake: no pose is selected")
            self._generation += 1
            self._candidate, self._candidate_smt = None, None
            self._phase = Phase.LIVE
            self._auto.rearm()
            self._best, self._progress = None, 0.0
            self._message = f"retake {self._pose}"

    def accept(self, override_reason: str | None = None, *, operator_id: str | None = None) -> AcceptedCapture:
        """Keep the candidate for the record. A candidate that fails a gate needs `override_reason`
        (`OverrideRequired` otherwise, with a message for the officer); the reason is stored with the
        operator and audited as `override` when the booking is saved. A reason given for a passing
        capture is kept too. `operator_id` defaults to the booking's operator."""
        operator = self.booking.operator_id if operator_id is None else operator_id
        if not isinstance(operator, str) or not operator.strip():
            raise CaptureError("accepting a capture needs the operator's id")
        with self._lock:
            self._require_not_saved()
            candidate = self._candidate
            if candidate is None:
                if self._phase is Phase.PROCESSING:
                    raise CaptureError("the capture is still being processed; wait for its review")
                raise CaptureError("nothing to accept: capture the pose first")
            reason = None
            if override_reason is not None or not candidate.passed:
                if not candidate.passed and override_reason is None:
                    failing = "; ".join(h.message for h in candidate.guidance[:3])
                    raise OverrideRequired(
                        f"this {candidate.pose} capture fails the quality standard"
                        f"{f' ({failing})' if failing else ''}: retake it, or enter a reason to keep it anyway")
                reason = validate_reason(override_reason, self.station.max_reason_chars)
            accepted = AcceptedCapture(candidate, operator.strip(), reason, self.station.utc_now(),
                                       self._candidate_smt)
            accepted.to_store()  # the store's checks now, at the desk, rather than at save time
            if candidate.pose == SMT:
                self._smt.append(accepted)
            else:
                self._accepted[candidate.pose] = accepted
            self._generation += 1
            self._candidate, self._candidate_smt = None, None
            self._pose, self._smt_description, self._phase = None, None, Phase.IDLE
            self._best, self._progress = None, 0.0
            self._message = f"{candidate.pose} accepted" + (" with an override" if reason else "")
            return accepted

    def _restore(self, accepted: Iterable[AcceptedCapture]) -> None:
        with self._lock:
            for item in accepted:
                if not isinstance(item, AcceptedCapture):
                    raise CaptureError(f"not an accepted capture: {type(item).__name__}")
                item.to_store()  # the store's checks, as when it was first accepted
                if item.pose == SMT:
                    self._smt.append(item)
                else:
                    self._accepted[item.pose] = item

    def remove_smt(self, index: int) -> None:
        """Drop an accepted SMT capture (by its position among the SMT captures)."""
        with self._lock:
            self._require_not_saved()
            if not 0 <= index < len(self._smt):
                raise CaptureError(f"there is no SMT capture number {index + 1}")
            del self._smt[index]

    def accepted(self) -> list[AcceptedCapture]:
        """Accepted captures in record order: frontal, left profile, right profile, then SMT."""
        with self._lock:
            return [self._accepted[p] for p in RECOMMENDED_POSES if p in self._accepted] + list(self._smt)

    # --- status --------------------------------------------------------------------------------------

    def live_status(self) -> LiveStatus:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> LiveStatus:
        live, frame = self._latest_live, self._latest
        return LiveStatus(
            phase=self._phase, pose=self._pose, smt_description=self._smt_description,
            auto=self._auto_enabled and self._phase is Phase.LIVE,
            ready=bool(live and live.passed), progress=self._progress, hold_seconds=self._auto.stable_seconds,
            score=None if live is None else live.score,
            guidance=() if live is None else live.guidance,
            face_box=None if live is None else live.face_box,
            frame_size=None if frame is None else frame.size,
            frame_sequence=None if frame is None else frame.sequence,
            frames_seen=self._frames_seen, frames_skipped=self._frames_skipped,
            camera=None if self._camera is None else self._camera.description,
            camera_error=self._camera_error, message=self._message, candidate=self._candidate is not None,
            accepted=tuple(a.pose for a in self.accepted()), record_id=self._record_id if self._saved else None)

    def latest_frame(self) -> Frame | None:
        """The latest frame the live loop analysed (read-only pixels; `live_status()` describes it)."""
        with self._lock:
            return self._latest

    def preview_jpeg(self, max_width: int = 640, quality: int = 80) -> bytes | None:
        """The latest frame as a small JPEG for the UI's preview (None before the first frame). Draw the
        face box from `live_status()` on top, scaled by `max_width / frame_size[0]` when it was reduced."""
        frame = self.latest_frame()
        if frame is None:
            return None
        image = fit_within(np.asarray(frame.image), (max_width, max_width * 4))
        return encode_jpeg(image, quality).jpeg

    def summary(self) -> SessionSummary:
        with self._lock:
            items = self.accepted()
            poses = tuple(a.pose for a in items)
            return SessionSummary(
                self.booking.agency_ori, self.booking.booking_number, self.booking.operator_id,
                self.booking.station_id, poses, tuple(a.pose for a in items if a.override_reason is not None),
                tuple(p for p in RECOMMENDED_POSES if p not in self._accepted), FRONTAL in self._accepted,
                self._saved, self._record_id if self._saved else None)

    @property
    def frames_skipped(self) -> int:
        with self._lock:
            return self._frames_skipped

    @property
    def last_error(self) -> BaseException | None:
        """The last unexpected error of the background loop or of processing, for diagnostics."""
        with self._lock:
            return self._last_error

    # --- saving --------------------------------------------------------------------------------------

    def save(self) -> str:
        """Write the booking and its accepted captures in one store transaction; return the record id.

        Refused while a capture waits for accept or retake (the officer would expect it in the record).
        Only after this returns is the booking saved. On a store error (`DiskFullError`, `QueueFullError`,
        ...) nothing of this booking is stored, the session keeps everything, and saving again later uses
        the same record id. Saving twice returns the same id without writing again.
        """
        with self._save_lock:
            with self._lock:
                if self._saved:
                    assert self._record_id is not None
                    return self._record_id
                if self._candidate is not None or self._phase is Phase.PROCESSING:
                    pose = self._candidate.pose if self._candidate is not None else self._pose
                    raise CaptureError(f"a {pose} capture is waiting: accept it or retake it before saving")
                frontal = self._accepted.get(FRONTAL)
                if frontal is None:
                    raise CaptureError("the booking cannot be saved without an accepted frontal photo")
                items = self.accepted()
                booking = replace(self.booking, captured_at=frontal.processed.captured_at)
                retry = self._record_id is not None
                if self._record_id is None:
                    self._record_id = new_record_id()
                record_id = self._record_id
            captures = [item.to_store() for item in items]
            store = self.station.store_opener()
            try:
                try:
                    saved_id = store.save_booking(booking, captures, record_id=record_id)
                except DuplicateRecordError:
                    if not retry:
                        raise
                    saved_id = record_id  # an earlier attempt committed before its caller heard back
            finally:
                store.close()
            with self._lock:
                self._saved = True
                self._record_id = saved_id
                self._phase = Phase.SAVED
                self._pose = None
                self._message = f"saved as record {saved_id}"
            self.stop_live(timeout=1.0)
            return saved_id

    def close(self) -> None:
        """Stop the live loop and release the camera. Accepted captures stay readable until the object
        is dropped; nothing is saved by closing."""
        self.stop_live()
        self.close_camera()

    def __enter__(self) -> BookingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_not_saved(self) -> None:
        if self._saved:
            raise CaptureError(f"booking {self.booking.booking_number} is already saved as record {self._record_id}")


def _capture_scale(camera: Camera, frame: Frame) -> float:
    """Still pixels per preview pixel, probed once per opened camera after its first frame.

    Only a camera that previews at a reduced size (every backend calls that option `preview_size`) is
    probed with a still; the others deliver full-size frames (1.0). The probe comes after a read so a
    replay answers from the frame just read instead of consuming the next one. A failed probe gives
    1.0: the live loop reports the camera's trouble itself on the next read.
    """
    if getattr(camera, "preview_size", None) is None:
        return 1.0
    try:
        still = camera.capture_still()
    except CameraError:
        return 1.0
    return max(1.0, still.size[0] / frame.size[0])
