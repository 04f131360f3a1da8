"""The expensive work on the one frame chosen for a pose, as opposed to the per-frame live analysis.

Design rule: embedding and the full measures run once, on the chosen frame, never per preview frame, so
the live loop stays cheap enough to judge every frame. `CaptureProcessor.process` turns a chosen frame into
everything the record keeps for that pose:

* frontal: the full quality report of the station's profile, the standardized crop (profile geometry,
  JPEG, EXIF stripped) and the face template with the embedding model's name;
* left/right profile: the profile check (`appliance.quality.side_view`: no near-frontal face, turned the
  pose's way, one head), which gates the view like any gate (failing it needs an override reason); the
  frame cut to the subject (a generous box around the detected face), or the whole frame when no face
  is found there, which the report then says; plus the quality report, kept for information (the
  frontal profile's gates do not apply to a profile view);
* smt (scars, marks, tattoos): the frame as taken.

Everything here is synchronous and not thread-safe (TFLite interpreters are not): the session holds the
station's vision lock around it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.capture.images import encode_jpeg, sharpness, subject_box
from appliance.quality.side_view import SideViewVerdict, check_side_view
from appliance.vision.embedder import Embedder
from appliance.vision.pipeline import FaceAnalyzer
from appliance.vision.types import Face

if TYPE_CHECKING:
    from appliance.quality.engine import QualityEngine
    from appliance.quality.profile import Profile

FRONTAL = "frontal"
LEFT_PROFILE = "left_profile"
RIGHT_PROFILE = "right_profile"
SMT = "smt"
POSES = (FRONTAL, LEFT_PROFILE, RIGHT_PROFILE, SMT)
SIDE_VIEW_POSES = (LEFT_PROFILE, RIGHT_PROFILE)

NO_FACE = "no_face"


@dataclass(frozen=True)
class Hint:
    """One thing for the officer to fix: a short machine code for the UI and one plain sentence."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def hints(items: Iterable[Any]) -> tuple[Hint, ...]:
    """The quality engine's guidance (objects with code/message, or {code, message} mappings) as Hints."""
    out = []
    for item in items or ():
        if isinstance(item, Hint):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(Hint(str(item.get("code", "")), str(item.get("message", ""))))
        else:
            out.append(Hint(str(item.code), str(item.message)))
    return tuple(out)


@dataclass(frozen=True)
class LiveAnalysis:
    """What the preview needs about one frame: the verdict of the live gates, for the pose being taken.

    For the frontal view it is the profile's live gates. A profile view fails every frontal pose gate by
    design, so it has its own check instead (`appliance.quality.side_view`); for it and for SMT `score` is
    the frame's sharpness, which is what picks the best frame of an auto-capture window.
    """

    passed: bool
    score: float
    guidance: tuple[Hint, ...] = ()
    face_box: tuple[float, float, float, float] | None = None
    frame_size: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "score": round(float(self.score), 2),
                "guidance": [h.to_json() for h in self.guidance],
                "face_box": None if self.face_box is None else [round(v, 1) for v in self.face_box],
                "frame_size": None if self.frame_size is None else list(self.frame_size)}


@dataclass(frozen=True)
class ProcessedCapture:
    """A chosen frame turned into what the record keeps for one pose (before the officer accepts it).

    `passed` is the verdict of the profile's gates on the full report (always True for poses without
    gates); a capture that did not pass needs an override reason to be accepted. `quality` is the JSON
    stored with the capture: the full report plus how the image was made (standardized or cropped, and
    why not when it was not).
    """

    pose: str
    jpeg: bytes
    width: int
    height: int
    passed: bool
    guidance: tuple[Hint, ...]
    quality: dict[str, Any]
    template: tuple[float, ...] | None
    template_model: str | None
    mode: str  # "auto" or "manual"
    captured_at: datetime  # UTC wall-clock time of the frame's selection
    frame_sequence: int | None = None
    notes: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)


class CaptureProcessor:
    """Live analysis per frame and full processing of the chosen frame, for every pose.

    engine: the quality engine of the station's profile (`live(image)`, `full(image)`); it must use the
        same analyzer, since the session serializes all model use behind one lock.
    """

    def __init__(self, analyzer: FaceAnalyzer, embedder: Embedder, engine: QualityEngine) -> None:
        self.analyzer = analyzer
        self.embedder = embedder
        self.engine = engine

    @property
    def profile(self) -> Profile:
        """The quality profile: its gates judge the frontal view, its geometry makes the standard crop."""
        return self.engine.profile

    @property
    def template_model(self) -> str:
        return self.embedder.model_name

    # --- per frame ---------------------------------------------------------------------------------

    def live(self, pose: str, image: np.ndarray, capture_scale: float = 1.0) -> LiveAnalysis:
        """The live verdict on a preview frame for `pose` (see `LiveAnalysis`). `capture_scale`: capture
        pixels per preview pixel, so size gates judge the resolution that will be saved."""
        size = (int(image.shape[1]), int(image.shape[0]))
        if pose == FRONTAL:
            result = self.engine.live(image, capture_scale=capture_scale)
            face = getattr(result, "face", None)
            box = None if face is None else tuple(float(v) for v in face.box)
            return LiveAnalysis(bool(result.passed), live_score(result), hints(result.guidance), box, size)
        if pose in SIDE_VIEW_POSES:
            faces = self.analyzer.analyze(image, landmarks=True, iris=False)
            verdict = check_side_view(pose, faces)
            box = tuple(float(v) for v in faces[0].box) if faces else None
            return LiveAnalysis(verdict.passed, sharpness(image), self._side_hints(verdict), box, size)
        return LiveAnalysis(True, sharpness(image), (), None, size)

    def _side_hints(self, verdict: SideViewVerdict) -> tuple[Hint, ...]:
        return tuple(Hint(code, self.profile.message(code)) for code in verdict.codes)

    # --- the chosen frame ---------------------------------------------------------------------------

    def process(self, pose: str, image: np.ndarray, *, mode: str, captured_at: datetime,
                frame_sequence: int | None = None) -> ProcessedCapture:
        """Everything the record keeps for `pose` from this frame (see the module docstring)."""
        if pose == FRONTAL:
            return self._frontal(image, mode, captured_at, frame_sequence)
        if pose in SIDE_VIEW_POSES:
            return self._side_view(pose, image, mode, captured_at, frame_sequence)
        if pose == SMT:
            t0 = time.perf_counter()
            encoded = encode_jpeg(image)
            quality = {"pose": SMT, "gated": False, "source_size": [encoded.width, encoded.height],
                       "sharpness": round(sharpness(image), 2)}
            return ProcessedCapture(SMT, encoded.jpeg, encoded.width, encoded.height, True, (), quality, None, None,
                                    mode, captured_at, frame_sequence,
                                    timings_ms={"encode": _ms(t0)})
        raise ValueError(f"unknown pose {pose!r} (one of {', '.join(POSES)})")

    def _frontal(self, image: np.ndarray, mode: str, captured_at: datetime,
                 sequence: int | None) -> ProcessedCapture:
        from appliance.quality.standardize import StandardizeError, standardize

        timings: dict[str, float] = {}
        notes: list[str] = []
        t0 = time.perf_counter()
        report = self.engine.full(image)
        timings["full_report"] = _ms(t0)
        passed = bool(report.passed)
        guidance = list(hints(report.guidance))
        quality: dict[str, Any] = {"pose": FRONTAL, "gated": True, "profile": self.profile.name,
                                   "source_size": [int(image.shape[1]), int(image.shape[0])],
                                   "report": report.to_json()}
        face = report.face if report.face is not None and report.face.mesh is not None else None

        # The standard crop and the template both come from the face the report measured (one detection).
        t0 = time.perf_counter()
        standard = None
        if face is None:
            notes.append("no face found: the frame is kept as captured, not standardized")
        else:
            try:
                standard = standardize(image, face, self.profile.geometry)
            except StandardizeError as exc:
                notes.append(f"not standardized ({exc}); the frame is kept as captured")
                guidance.append(Hint("not_standardized", f"The photo cannot be cropped to the standard: {exc}"))
                passed = False
        timings["standardize"] = _ms(t0)
        if standard is not None:
            jpeg, width, height = standard.jpeg, standard.width, standard.height
            quality["standardized"] = standard.to_json()
        else:
            encoded = encode_jpeg(image)
            jpeg, width, height = encoded.jpeg, encoded.width, encoded.height
            quality["standardized"] = None

        t0 = time.perf_counter()
        template = self.template(image, face)
        timings["embed"] = _ms(t0)
        if template is None:
            notes.append("no template: the gallery cannot search this booking by face")
            quality["template"] = None
            passed = False
            if not any(h.code == NO_FACE for h in guidance):
                guidance.append(Hint(NO_FACE, self.profile.message(NO_FACE)))
        else:
            quality["template"] = {"model": self.template_model, "dim": len(template)}
        if notes:
            quality["notes"] = list(notes)
        return ProcessedCapture(FRONTAL, jpeg, width, height, passed, tuple(guidance), quality,
                                template, self.template_model if template is not None else None, mode,
                                captured_at, sequence, tuple(notes), timings)

    def template(self, image: np.ndarray, face: Face | None = None) -> tuple[float, ...] | None:
        """Template of `face` (default: the largest face found), from the captured frame itself rather
        than the re-encoded JPEG, so no compression loss enters it; None when no face has landmarks."""
        if face is None:
            faces = self.analyzer.analyze(image, landmarks=True, iris=False, max_faces=1)
            face = faces[0] if faces else None
        if face is None or face.mesh is None:
            return None
        return tuple(float(v) for v in self.embedder.embed_face(image, face))

    def _side_view(self, pose: str, image: np.ndarray, mode: str, captured_at: datetime,
                   sequence: int | None) -> ProcessedCapture:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        faces = self.analyzer.analyze(image, landmarks=True, iris=False)
        verdict = check_side_view(pose, faces)
        timings["side_view"] = _ms(t0)
        size = (int(image.shape[1]), int(image.shape[0]))
        notes: list[str] = []
        quality: dict[str, Any] = {"pose": pose, "gated": True, "source_size": list(size),
                                   "side_view": verdict.to_json()}
        if verdict.method == "no face found":
            notes.append("the head turn could not be measured (no face found): check the profile by eye")
        if faces:
            x0, y0, x1, y1 = subject_box(faces[0].box, size)
            crop = image[y0:y1, x0:x1]
            quality["subject_crop"] = {"box": [x0, y0, x1, y1], "face_box": [round(float(v), 1) for v in faces[0].box],
                                       "detector_score": round(float(faces[0].score), 4)}
        else:
            crop = image
            quality["subject_crop"] = None
            notes.append("no face detected in this profile view: the full frame is kept")
        timings["crop"] = _ms(t0)
        t0 = time.perf_counter()
        report = self.engine.full(crop)
        timings["full_report"] = _ms(t0)
        quality["report"] = ungated(report.to_json())
        if notes:
            quality["notes"] = list(notes)
        encoded = encode_jpeg(np.ascontiguousarray(crop))
        return ProcessedCapture(pose, encoded.jpeg, encoded.width, encoded.height, verdict.passed,
                                self._side_hints(verdict), quality, None, None, mode, captured_at, sequence,
                                tuple(notes), timings)


def ungated(report: dict[str, Any]) -> dict[str, Any]:
    """A full report without the frontal profile's verdicts (overall and per gate) and guidance: kept
    for a profile view, whose measures are informative (exposure, sharpness, background) but which
    fails the frontal pose and framing gates by design, so a stored "passed": false would mislead."""
    out = {k: v for k, v in report.items() if k not in ("passed", "guidance")}
    out["measures"] = {name: {k: v for k, v in entry.items() if k != "passed"}
                       for name, entry in report.get("measures", {}).items()}
    return out


def live_score(result: Any) -> float:
    """The number that ranks frames of an auto-capture window: the engine's own `score` when it gives
    one, else the mean 0-100 score of the live measures it assessed (NaN when none was assessed, which
    auto-capture treats as failing)."""
    score = getattr(result, "score", None)
    if score is not None:
        return _finite(score)
    scores = [m.score for m in getattr(result, "measures", {}).values() if getattr(m, "score", None) is not None]
    return float(np.mean(scores)) if scores else float("nan")


def _finite(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)
