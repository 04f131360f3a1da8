"""What a booking session hands out: its phase, the live status snapshot, the capture under review,
accepted captures, the summary; the error a step raises, and the SMT description rule."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from appliance.capture.processing import Hint, ProcessedCapture
from appliance.store import Capture
from sync.protocol.record import SMT_DESCRIPTION

MAX_SMT_DESCRIPTION = SMT_DESCRIPTION.max_len  # the record's limit (sync.protocol.record)


class CaptureError(RuntimeError):
    """A session step cannot be done now; the message says why in words the officer can act on."""


class Phase(str, Enum):
    """Where the session is, for the UI's screen."""

    IDLE = "idle"  # no pose selected: preview only
    LIVE = "live"  # looking for the current pose's photo (auto-capture armed)
    PROCESSING = "processing"  # a chosen frame is being measured, standardized and embedded
    REVIEW = "review"  # a candidate waits for accept or retake
    SAVED = "saved"  # the record is committed; the session is finished


@dataclass(frozen=True)
class LiveStatus:
    """A snapshot for the preview. `ready` is the live gates' verdict on the latest frame (green frame
    in the UI); `progress` how far the auto-capture stable window has got (0..1); `face_box` is in the
    pixels of the latest frame (`frame_size`), so the UI can scale it onto the preview."""

    phase: Phase
    pose: str | None
    smt_description: str | None
    auto: bool
    ready: bool
    progress: float
    hold_seconds: float  # the stable window of this pose (a profile's countdown), so the UI can count down
    score: float | None
    guidance: tuple[Hint, ...]
    face_box: tuple[float, float, float, float] | None
    frame_size: tuple[int, int] | None
    frame_sequence: int | None
    frames_seen: int
    frames_skipped: int
    camera: str | None  # description of the open camera, None when none is open
    camera_error: str | None  # why the camera stopped, until it is reopened
    message: str | None  # the latest notable event ("frame skipped: ...", "captured automatically")
    candidate: bool  # a capture waits in review
    accepted: tuple[str, ...]  # poses accepted so far (smt repeated per capture)
    record_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value, "pose": self.pose, "smt_description": self.smt_description,
            "auto": self.auto, "ready": self.ready, "progress": round(self.progress, 3),
            "hold_seconds": round(self.hold_seconds, 2),
            "score": None if self.score is None or not math.isfinite(self.score) else round(self.score, 2),
            "guidance": [h.to_json() for h in self.guidance],
            "face_box": None if self.face_box is None else [round(v, 1) for v in self.face_box],
            "frame_size": None if self.frame_size is None else list(self.frame_size),
            "frame_sequence": self.frame_sequence, "frames_seen": self.frames_seen,
            "frames_skipped": self.frames_skipped, "camera": self.camera, "camera_error": self.camera_error,
            "message": self.message, "candidate": self.candidate, "accepted": list(self.accepted),
            "record_id": self.record_id,
        }


@dataclass(frozen=True)
class CaptureReview:
    """The candidate photo of the current pose, for the officer to accept or retake.

    `needs_override`: the capture fails a gate of the profile, so `accept()` needs a reason.
    `jpeg` is the image that will be stored (the standardized crop for the frontal view).
    """

    pose: str
    mode: str
    passed: bool
    needs_override: bool
    guidance: tuple[Hint, ...]
    quality: dict[str, Any]
    width: int
    height: int
    template_dim: int | None
    template_model: str | None
    notes: tuple[str, ...]
    smt_description: str | None
    jpeg: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """Everything but the image bytes (the UI fetches those separately)."""
        return {"pose": self.pose, "mode": self.mode, "passed": self.passed, "needs_override": self.needs_override,
                "guidance": [h.to_json() for h in self.guidance], "quality": self.quality, "width": self.width,
                "height": self.height, "template_dim": self.template_dim, "template_model": self.template_model,
                "notes": list(self.notes), "smt_description": self.smt_description, "jpeg_bytes": len(self.jpeg)}


@dataclass(frozen=True)
class AcceptedCapture:
    """A capture the officer accepted: it will be in the record as it is now."""

    processed: ProcessedCapture
    operator_id: str
    override_reason: str | None
    accepted_at: datetime
    smt_description: str | None = None

    @property
    def pose(self) -> str:
        return self.processed.pose

    def to_store(self) -> Capture:
        """The store's record of this capture (validated by the store's own rules)."""
        p = self.processed
        return Capture.from_jpeg(
            p.pose, p.jpeg, p.width, p.height, self.operator_id, quality=p.quality,
            template=list(p.template) if p.template is not None else None, template_model=p.template_model,
            override_reason=self.override_reason, smt_description=self.smt_description)


@dataclass(frozen=True)
class SessionSummary:
    """What the booking holds so far: what is accepted, what is still missing, whether it can be saved."""

    agency_ori: str
    booking_number: str
    operator_id: str
    station_id: str
    accepted: tuple[str, ...]
    overrides: tuple[str, ...]  # poses accepted with an override reason
    missing: tuple[str, ...]  # recommended poses not accepted (frontal first if missing)
    can_save: bool
    saved: bool
    record_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {"agency_ori": self.agency_ori, "booking_number": self.booking_number,
                "operator_id": self.operator_id, "station_id": self.station_id, "accepted": list(self.accepted),
                "overrides": list(self.overrides), "missing": list(self.missing), "can_save": self.can_save,
                "saved": self.saved, "record_id": self.record_id}


def check_smt_description(description: object) -> str:
    """A short, printable, one-line description of a scar, mark or tattoo ("tattoo, left forearm")."""
    if not isinstance(description, str) or not description.strip():
        raise CaptureError("an SMT capture needs a short description, e.g. 'tattoo, left forearm'")
    text = unicodedata.normalize("NFC", description).strip()
    bad = [ch for ch in text if not ch.isprintable()]
    if bad:
        raise CaptureError(f"the SMT description contains control characters (U+{ord(bad[0]):04X}); "
                           f"use plain text on one line")
    if len(text) > MAX_SMT_DESCRIPTION:
        raise CaptureError(f"the SMT description is too long ({len(text)} characters, at most {MAX_SMT_DESCRIPTION})")
    return text
