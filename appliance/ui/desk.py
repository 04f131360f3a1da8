"""The booking desk: the one booking open at this station, between the web page and the capture session.

It stays one module (about 500 lines) because `BookingDesk` is one object behind one lock (the one
open booking), like the session it wraps.

One station has one camera, so one booking is open at a time; any signed-in officer can carry it on
(a shift change mid-booking is normal), and each accepted capture records the officer who accepted it.
The desk adds what the capture session does not do itself:

* **the hand-over**: one officer carries the open booking on (`OpenBooking.officer`); another officer
  signed in must take it over first (`handover`, audited), so nobody's photos are taken under a name
  the page did not show;
* **the booking number is checked against the store** before a booking opens: a number already saved
  here (for the same agency) is refused with a message saying when and as which record, because a second
  record for one arrest is a mess the county has to untangle by hand;
* **the draft**: after every accept (and SMT removal) the accepted captures are written encrypted to disk
  (`appliance.ui.drafts`); after a restart the booking is reopened from it (`CaptureStation.resume_booking`);
* **the preview picture** (`appliance.ui.preview`) and the review in words (`appliance.ui.review_words`);
* **booking requests from the jail management system**: the JMS can announce a booking (number and
  agency) that the next officer at the desk opens with one touch;
* **the booking-time check**: when the sync agent carries checks (``[sync] booking_check``), accepting the
  frontal asks the county gallery for prior bookings of the face (`sync.station.checks`); the screen shows
  "Possible prior bookings" when the answer comes, or that the check was not done when it does not come in
  time. It is advice: nothing waits for it and nothing is refused because of it.

Every method raises `DeskError` with a message for the officer and a short code for the page.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.camera import CameraError
from appliance.capture.autocapture import OverrideRequired
from appliance.capture.session import (
    AcceptedCapture,
    BookingSession,
    CaptureError,
    CaptureReview,
    CaptureStation,
    Phase,
)
from appliance.store import (
    DiskFullError,
    QueueFullError,
    StationStoreError,
    Store,
    ValidationError,
)
from appliance.store.clock import to_text, utc_now
from appliance.ui.drafts import Draft, DraftError, DraftStore
from appliance.ui.preview import PreviewHub
from appliance.ui.review_words import POSE_WORDS, review_json
from appliance.ui.wording import Plain, capture_problem, disk_full_early, store_refusal
from sync.station.checks import CheckSpool, CheckStatus

log = logging.getLogger(__name__)

AuditFn = Callable[[str, str, dict[str, Any]], None]


class DeskError(Exception):
    """A desk operation cannot be done: `message` for the officer (plain words), `code` for the page, HTTP
    `status`, and `detail`: the technical text behind the page's "Details" line, if any."""

    def __init__(self, message: str, code: str, status: int = 409, detail: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.detail = detail

    @classmethod
    def plain(cls, words: Plain, code: str, status: int = 409) -> DeskError:
        return cls(words.text, code, status, words.detail)


@dataclass
class OpenBooking:
    """The open booking and what the desk knows about it beyond the session."""

    session: BookingSession
    opened_by: str
    opened_at: datetime
    restored: bool = False
    camera_problem: str | None = None  # why the camera could not be opened (the session reports losses)
    officer: str = ""  # who carries the booking on now (the last hand-over); starts as opened_by
    prior_check: PriorCheck | None = None  # the booking-time check of the accepted frontal

    def __post_init__(self) -> None:
        self.officer = self.officer or self.opened_by


@dataclass
class PriorCheck:
    """The question about the accepted frontal, and its answer once there is one."""

    request_id: str
    asked_at: float
    timeout: float
    result: CheckStatus | None = None


@dataclass(frozen=True)
class BookingRequest:
    """A booking announced by the jail management system, waiting for an officer to open it."""

    agency_ori: str
    booking_number: str
    requested_at: datetime
    source: str


class BookingDesk:
    """See the module docstring. Thread-safe: HTTP handlers call it from a thread pool."""

    def __init__(self, station: CaptureStation, open_store: Callable[[], Store], drafts: DraftStore,
                 hub: PreviewHub, audit: AuditFn, checks: CheckSpool | None = None) -> None:
        self.station = station
        self.open_store = open_store
        self.drafts = drafts
        self.hub = hub
        self.audit = audit
        self.checks = checks
        self._lock = threading.RLock()
        self._open: OpenBooking | None = None
        self._requests: dict[tuple[str, str], BookingRequest] = {}
        self._last_saved: dict[str, Any] | None = None
        self.draft_problem: str | None = None

    # --- opening and closing -----------------------------------------------------------------------

    def restore_draft(self) -> bool:
        """Reopen the booking in progress from the draft file (at start-up). True if one was reopened."""
        try:
            draft = self.drafts.load()
        except DraftError as exc:
            self.draft_problem = str(exc)
            log.error("%s", exc)
            self.audit("system", "draft_damaged", {"error": str(exc)})
            return False
        if draft is None:
            return False
        b = draft.booking
        saved = self._saved_records(b.booking_number, b.agency_ori)
        if saved:
            # The booking was committed but the process died before removing the draft: nothing to resume.
            self.drafts.clear()
            self.audit("system", "draft_cleared", {"booking_number": b.booking_number, "agency_ori": b.agency_ori,
                                                   "reason": "already saved", "record_ids": saved})
            return False
        try:
            session = self.station.resume_booking(b, draft.accepted)
        except (CaptureError, ValidationError) as exc:
            # e.g. the station was re-provisioned under another id: keep the file for county IT.
            self.draft_problem = (f"The booking in progress ({b.booking_number}) could not be reopened: {exc}. "
                                  f"Its photos are kept in {self.drafts.path}; call county IT.")
            self.audit("system", "draft_unusable", {"booking_number": b.booking_number, "error": str(exc)})
            return False
        with self._lock:
            # Who carried it on: the officer of the last accepted photo (the draft keeps each photo's officer).
            officer = draft.accepted[-1].operator_id if draft.accepted else draft.opened_by
            self._open = OpenBooking(session, draft.opened_by, draft.opened_at, restored=True, officer=officer)
        self.audit("system", "booking_restore", {"booking_number": b.booking_number, "agency_ori": b.agency_ori,
                                                 "accepted": [a.pose for a in draft.accepted]})
        self._start_camera()
        self._arm_next_pose(session)
        return True

    @staticmethod
    def _arm_next_pose(session: BookingSession) -> None:
        """After a restart, select the next view still missing so Capture works at once. Auto-capture stays
        off: nobody may be at the desk yet, and nothing should be taken before an officer signs in."""
        missing = session.summary().missing
        if missing:
            try:
                session.select_pose(missing[0], auto=False)
            except CaptureError as exc:  # e.g. the camera is not open: the officer picks the view later
                log.warning("restored booking: %s not selected: %s", missing[0], exc)

    def open(self, officer_id: str, agency_ori: str, booking_number: str) -> OpenBooking:
        """Open a booking for this officer; refuses a number already saved here or a second open booking."""
        # Not stripped: a scanner's trailing CR or TAB is refused by the store's rules with its position, so
        # the officer sees it (the page trims what is typed; an integrator must send clean values).
        agency_ori = (agency_ori or "").upper()
        booking_number = booking_number or ""
        with self._lock:
            current = self._open
            if current is not None:
                b = current.session.booking
                if b.booking_number == booking_number and b.agency_ori == agency_ori:
                    raise DeskError(f"Booking {booking_number} is already open at this desk: carry on with it.",
                                    "booking_open")
                count = len(current.session.accepted())
                raise DeskError(f"Booking {b.booking_number} is still open ({count} photo(s) accepted). Save it or "
                                f"discard it before starting booking {booking_number}.", "other_booking_open")
            try:
                session = self.station.start_booking(agency_ori, booking_number, officer_id)
            except ValidationError as exc:
                raise DeskError(str(exc), "invalid", 422) from None
            except DiskFullError as exc:
                raise DeskError.plain(disk_full_early(exc, started=False), "store_full", 507) from None
            saved = self._saved_records(booking_number, agency_ori)
            if saved:
                when = self._saved_when(saved[-1])
                raise DeskError(f"Booking number {booking_number} ({agency_ori}) is already in use: it was saved at "
                                f"this station{when}. Check the number on the booking sheet; a second record "
                                f"for one booking is not allowed.", "booking_number_in_use",
                                detail=f"booking_number_in_use: record {saved[-1]}")
            self._open = OpenBooking(session, officer_id, utc_now())
            self._requests.pop((agency_ori, booking_number), None)
            self._last_saved = None
        self.audit(officer_id, "booking_open", {"booking_number": booking_number, "agency_ori": agency_ori})
        self._write_draft()
        self._start_camera()
        return self._open

    def _saved_records(self, booking_number: str, agency_ori: str) -> list[str]:
        with self.open_store() as store:
            return store.records_for_booking(booking_number, agency_ori)

    def _saved_when(self, record_id: str) -> str:
        try:
            with self.open_store() as store:
                entry = next((e for e in store.queue() if e.record_id == record_id), None)
        except StationStoreError:
            return ""
        if entry is None:
            return ""
        local = entry.created_at.astimezone()
        return f" on {local.day} {local:%b %Y} at {local:%H:%M}"

    def _start_camera(self) -> None:
        """Open the station camera for the open booking and start the live loop; a camera that cannot be
        opened leaves the booking open with the reason shown (the officer reconnects and retries)."""
        with self._lock:
            current = self._open
        if current is None:
            return
        try:
            current.session.open_camera()
            current.camera_problem = None
        except (CameraError, CaptureError) as exc:
            current.camera_problem = (f"The camera cannot be opened: {exc}. Photos already accepted are kept. "
                                      f"Check the camera cable, then press Reconnect camera.")
        current.session.start_live()

    def reconnect_camera(self) -> None:
        current = self.require()
        current.session.stop_live(timeout=2.0)
        self._start_camera()

    def require(self) -> OpenBooking:
        with self._lock:
            if self._open is None:
                raise DeskError("No booking is open. Start one with its booking number.", "no_booking", 404)
            return self._open

    def require_holder(self, officer_id: str) -> OpenBooking:
        """The open booking, if `officer_id` carries it on; another officer must take it over first, so
        nobody adds photos under a colleague's name without the page having said so."""
        current = self.require()
        if current.officer != officer_id:
            b = current.session.booking
            raise DeskError(f"Booking {b.booking_number} is being taken by {current.officer}. Take it over "
                            f"first (you will be named for the photos you take).", "handover_needed", 409)
        return current

    def handover(self, officer_id: str) -> OpenBooking:
        """`officer_id` carries the open booking on from now; audited with who had it and what was taken."""
        with self._lock:
            current = self.require()
            previous, current.officer = current.officer, officer_id
        if previous != officer_id:
            b = current.session.booking
            self.audit(officer_id, "booking_handover", {
                "booking_number": b.booking_number, "agency_ori": b.agency_ori, "from": previous, "to": officer_id,
                "accepted": [{"pose": a.pose, "operator_id": a.operator_id} for a in current.session.accepted()]})
        return current

    def discard(self, officer_id: str, reason: str) -> None:
        """Drop the open booking and its accepted photos (audited with the officer's reason)."""
        reason = (reason or "").strip()
        if not reason or not reason.isprintable() or len(reason) > 200:
            raise DeskError("Say why the booking is discarded (one line, at most 200 characters).",
                            "reason_required", 422)
        with self._lock:
            current = self.require()
            self._open = None
        current.session.close()
        self.hub.clear()
        self.drafts.clear()
        self._drop_prior_check(current)
        b = current.session.booking
        self.audit(officer_id, "booking_discard", {"booking_number": b.booking_number, "agency_ori": b.agency_ori,
                                                   "accepted": [a.pose for a in current.session.accepted()],
                                                   "reason": reason})

    def close(self) -> None:
        """Server shutdown: stop the camera. The draft stays, so the booking reopens on the next start."""
        with self._lock:
            current = self._open
        if current is not None:
            current.session.close()

    # --- capturing ----------------------------------------------------------------------------------

    def select_pose(self, pose: str, description: str | None, auto: bool | None = None) -> None:
        """Start taking `pose`; `auto` switches auto-capture on or off (default: the session's rule)."""
        session = self.require().session
        try:
            session.select_pose(pose, description=(description or None) if pose == "smt" else None, auto=auto)
        except CaptureError as exc:
            raise DeskError(str(exc), "capture_error", 422) from None

    def capture(self) -> CaptureReview:
        session = self.require().session
        try:
            return session.capture(source="latest")
        except CaptureError as exc:
            raise DeskError(_sentence(str(exc)), "capture_error") from None
        except DiskFullError as exc:
            raise DeskError.plain(disk_full_early(exc, started=True), "store_full", 507) from None
        except (ValueError, RuntimeError) as exc:
            raise DeskError.plain(capture_problem(str(exc)), "capture_failed", 500) from None

    def retake(self) -> None:
        try:
            self.require().session.retake()
        except CaptureError as exc:
            raise DeskError(_sentence(str(exc)), "capture_error") from None

    def accept(self, officer_id: str, override_reason: str | None) -> AcceptedCapture:
        reason = override_reason.strip() if isinstance(override_reason, str) else None
        session = self.require().session
        try:
            accepted = session.accept(reason or None, operator_id=officer_id)
        except OverrideRequired as exc:
            raise DeskError(_sentence(str(exc)), "override_required", 422) from None
        except (CaptureError, ValidationError) as exc:
            raise DeskError(_sentence(str(exc)), "capture_error") from None
        self._write_draft()
        if accepted.pose == "frontal":
            self._ask_prior_bookings(accepted)
        return accepted

    def _ask_prior_bookings(self, accepted: AcceptedCapture) -> None:
        """Queue the booking-time check of a newly accepted frontal (never raises: it is advice)."""
        spool, p = self.checks, accepted.processed
        with self._lock:
            current = self._open
        if spool is None or current is None:
            return
        if current.prior_check is not None:
            spool.forget(current.prior_check.request_id)
            current.prior_check = None
        timeout = spool.timeout()
        if timeout is None or p.template is None or p.template_model is None:
            return
        try:
            request_id = spool.ask(p.template, p.template_model)
        except OSError as exc:
            log.warning("booking-time check not asked: %s", exc)
            return
        current.prior_check = PriorCheck(request_id, spool.clock(), timeout)

    def _drop_prior_check(self, current: OpenBooking) -> None:
        """The booking is closed: its question and any answer leave the spool (the template with them)."""
        if current.prior_check is not None and self.checks is not None:
            self.checks.forget(current.prior_check.request_id)

    def _prior_check_json(self, current: OpenBooking) -> dict[str, Any] | None:
        with self._lock:  # one poll finishes the check (and audits it) once
            check, spool = current.prior_check, self.checks
            if check is None or spool is None:
                return None
            return self._finish_check(current, check, spool)

    def _finish_check(self, current: OpenBooking, check: PriorCheck, spool: CheckSpool) -> dict[str, Any]:
        if check.result is None:
            status = spool.status(check.request_id, asked_at=check.asked_at, timeout=check.timeout)
            if not status.final:
                return status.to_json()
            check.result = status
            spool.forget(check.request_id)
            booking = current.session.booking
            self.audit("station", "booking_check_" + status.state, {
                "request_id": check.request_id, "booking_number": booking.booking_number,
                "priors": [f"{p.get('ori')}/{p.get('booking_number')}" for p in status.priors]})
        return check.result.to_json()

    def remove_smt(self, index: int) -> None:
        try:
            self.require().session.remove_smt(index)
        except CaptureError as exc:
            raise DeskError(_sentence(str(exc)), "capture_error", 404) from None
        self._write_draft()

    def _write_draft(self) -> None:
        """Persist the accepted captures; a failure is shown to the officer (the booking is at risk)."""
        with self._lock:
            current = self._open
        if current is None:
            return
        s = current.session
        try:
            self.drafts.save(Draft(s.booking, current.opened_by, current.opened_at, tuple(s.accepted())))
            self.draft_problem = None
        except OSError as exc:
            self.draft_problem = (f"The photos accepted so far could not be kept on disk ({exc.strerror or exc}); "
                                  f"save the booking as soon as possible.")
            log.error("draft not written: %s", exc)

    # --- saving ------------------------------------------------------------------------------------

    def save(self, officer_id: str) -> str:
        """Commit the booking to the store; returns the record id only after the commit."""
        current = self.require()
        try:
            record_id = current.session.save()
        except (DiskFullError, QueueFullError) as exc:
            raise DeskError.plain(store_refusal(exc), "store_full", 507) from None
        except ValidationError as exc:
            raise DeskError(str(exc), "invalid", 422) from None
        except StationStoreError as exc:
            raise DeskError.plain(store_refusal(exc), "store_error", 500) from None
        except CaptureError as exc:
            raise DeskError(_sentence(str(exc)), "capture_error") from None
        b = current.session.booking
        with self._lock:
            if self._open is current:
                self._open = None
            self._last_saved = {"record_id": record_id, "booking_number": b.booking_number,
                                "agency_ori": b.agency_ori, "saved_at": to_text(utc_now()),
                                "poses": [a.pose for a in current.session.accepted()], "saved_by": officer_id}
        self.drafts.clear()
        current.session.close()
        self.hub.clear()
        self._drop_prior_check(current)
        return record_id

    # --- JMS requests ------------------------------------------------------------------------------

    def request(self, agency_ori: str, booking_number: str, source: str) -> BookingRequest:
        """Record a booking announced by the JMS (idempotent on agency + number)."""
        from appliance.store.records import check_booking_number, check_ori

        try:
            agency_ori, booking_number = check_ori(agency_ori), check_booking_number(booking_number)
        except ValidationError as exc:
            raise DeskError(str(exc), "invalid", 422) from None
        saved = self._saved_records(booking_number, agency_ori)
        if saved:
            raise DeskError(f"Booking number {booking_number} ({agency_ori}) is already in use: record {saved[-1]}.",
                            "booking_number_in_use")
        with self._lock:
            key = (agency_ori, booking_number)
            existing = self._requests.get(key)
            if existing is None:
                existing = BookingRequest(agency_ori, booking_number, utc_now(), source)
                self._requests[key] = existing
        return existing

    def requests(self) -> list[BookingRequest]:
        with self._lock:
            return sorted(self._requests.values(), key=lambda r: r.requested_at)

    def booking_state(self, agency_ori: str, booking_number: str) -> dict[str, Any]:
        """Where a booking is, for the JMS: requested, open, saved (with delivery state) or unknown."""
        with self._lock:
            current = self._open
            if current is not None and (current.session.booking.agency_ori,
                                        current.session.booking.booking_number) == (agency_ori, booking_number):
                return {"state": "open", "accepted": [a.pose for a in current.session.accepted()]}
            if (agency_ori, booking_number) in self._requests:
                return {"state": "requested"}
        with self.open_store() as store:
            ids = store.records_for_booking(booking_number, agency_ori)
            entries = {e.record_id: e for e in store.queue()} if ids else {}
        if ids:
            e = entries.get(ids[-1])
            return {"state": "saved", "record_id": ids[-1], "delivery": e.state if e else None,
                    "reject_reason": e.reject_reason if e else None}
        return {"state": "unknown"}

    # --- what the page shows -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the booking screen needs in one poll."""
        with self._lock:
            current, last_saved = self._open, self._last_saved
        out: dict[str, Any] = {"booking": None, "last_saved": last_saved, "draft_problem": self.draft_problem,
                               "requests": [{"agency_ori": r.agency_ori, "booking_number": r.booking_number,
                                             "requested_at": to_text(r.requested_at), "source": r.source}
                                            for r in self.requests()]}
        if current is None:
            return out
        s = current.session
        status = s.live_status().to_json()
        if current.camera_problem and not status.get("camera_error") and status.get("camera") is None:
            status["camera_error"] = current.camera_problem
        summary = s.summary().to_json()
        accepted = []
        smt_index = 0
        for a in s.accepted():
            item = {"pose": a.pose, "label": POSE_WORDS.get(a.pose, a.pose), "operator_id": a.operator_id,
                    "override_reason": a.override_reason, "smt_description": a.smt_description,
                    "passed": a.processed.passed, "mode": a.processed.mode, "width": a.processed.width,
                    "height": a.processed.height}
            if a.pose == "smt":
                item["smt_index"] = smt_index
                item["image"] = f"smt-{smt_index}"
                smt_index += 1
            else:
                item["image"] = a.pose
            accepted.append(item)
        review = s.review()
        out["booking"] = {
            **summary,
            "opened_by": current.opened_by, "opened_at": to_text(current.opened_at), "restored": current.restored,
            "officer": current.officer,
            "live": status, "accepted_items": accepted,
            "review": None if review is None else review_json(review),
            "saving_blocked_reason": None if summary["can_save"] else "Accept a frontal photo first.",
            "prior_check": self._prior_check_json(current),
        }
        return out

    def prior_photo_jpeg(self, index: int) -> bytes:
        """The photo of possible prior booking ``index`` (0 = nearest) of the open booking's check, when the
        county sent one and this station could decode it (``sync.station.checks``)."""
        current = self.require()
        with self._lock:
            check = current.prior_check
            photo = check.result.photo(index) if check is not None and check.result is not None else None
        if photo is None:
            raise DeskError("No such photo of a prior booking.", "not_found", 404)
        return photo

    def accepted_jpeg(self, key: str) -> bytes:
        """The JPEG of an accepted capture: `frontal`, `left_profile`, `right_profile` or `smt-N`."""
        items = self.require().session.accepted()
        if key.startswith("smt-") and key[4:].isdigit():
            smts = [a for a in items if a.pose == "smt"]
            index = int(key[4:])
            if index < len(smts):
                return smts[index].processed.jpeg
        else:
            for a in items:
                if a.pose == key:
                    return a.processed.jpeg
        raise DeskError("No such accepted photo.", "not_found", 404)

    def review_jpeg(self) -> bytes:
        review = self.require().session.review()
        if review is None:
            raise DeskError("No photo is waiting for review.", "not_found", 404)
        return review.jpeg

    def phase(self) -> Phase | None:
        with self._lock:
            current = self._open
        return None if current is None else current.session.live_status().phase


def _sentence(text: str) -> str:
    """Capitalise a session message for display as a sentence."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
