"""Is this really a profile view, turned the right way? The check behind the left and right profile poses.

A profile photo that is in fact a frontal one (the subject never turned, or the officer pressed on too
soon) used to be stored and exported as a profile. Every model in the bundle was trained on faces seen
from the front to about 60 degrees, which is exactly what makes them good witnesses here: they find a
near-frontal face confidently and fit the face mesh to it well, and they stop finding (or fitting) a face
as the head turns to a true profile. So:

1. One head: a second face larger than `max_second_face` of the largest fails (``second_face``).
2. No near-frontal face: when a face is found and the mesh fits it (pose residual at most `max_fit_rms`
   inter-eye distances), its yaw (`appliance.quality.pose`, positive = turned to the subject's right)
   must be at least `min_yaw` degrees in the pose's direction. Less fails ``turn_for_left_profile`` /
   ``turn_for_right_profile`` (the officer asks the subject to turn); as far the other way fails
   ``wrong_profile_side`` (the subject turned the wrong way).
3. When a face is found but the mesh does not fit (a turned head the mesh cannot follow), the detector's
   keypoints judge instead: on a near-frontal face the nose tip sits between the eyes, within
   `max_frontal_nose_offset` eye distances of their midpoint; turned, it moves towards one side.
4. No face at all: the head is turned beyond what the frontal detectors see, which is what a true profile
   looks like to them; it passes with a note that the turn could not be measured (the officer checks it
   by eye on the review screen).

The left profile shows the subject's left side: they turn to their own right (yaw about +90); the right
profile is the mirror image (yaw about -90). Limits: the mesh saturates well before 90 degrees (it
reports 20-60 on heads turned 45-90), so "near 90" cannot be checked and the threshold is set at 45;
an empty frame also passes rule 4, so the review still shows the photo for the officer's eye.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.quality.pose import estimate_pose
from appliance.vision.types import KP_LEFT_EYE, KP_NOSE_TIP, KP_RIGHT_EYE, Face

LEFT_PROFILE = "left_profile"
RIGHT_PROFILE = "right_profile"
DIRECTION = {LEFT_PROFILE: 1.0, RIGHT_PROFILE: -1.0}  # the sign of the yaw each pose needs
TURN_CODE = {LEFT_PROFILE: "turn_for_left_profile", RIGHT_PROFILE: "turn_for_right_profile"}
DEFAULTS: Mapping[str, float] = {"min_yaw": 45.0, "max_fit_rms": 0.12, "max_frontal_nose_offset": 0.35,
                                 "max_second_face": 0.05}


@dataclass(frozen=True)
class SideViewVerdict:
    """The profile check on one frame: `codes` are guidance codes (empty when it passed)."""

    pose: str
    passed: bool
    codes: tuple[str, ...]
    method: str  # "mesh yaw", "detector keypoints" or "no face found"
    yaw: float | None = None  # degrees, positive = turned to the subject's right (None: not measured)
    faces: int = 0
    details: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pose": self.pose, "passed": self.passed, "codes": list(self.codes), "method": self.method,
                "yaw": None if self.yaw is None else round(self.yaw, 1), "faces": self.faces,
                **{k: round(v, 3) for k, v in self.details.items()}}


def nose_offset(face: Face) -> float:
    """Detector nose tip's horizontal offset from the eye midpoint, in eye distances (0 when frontal)."""
    k = face.detection.keypoints
    eyes = k[[KP_RIGHT_EYE, KP_LEFT_EYE]]
    ied = float(np.linalg.norm(eyes[1] - eyes[0]))
    return float(k[KP_NOSE_TIP][0] - eyes[:, 0].mean()) / max(ied, 1.0)


def _verdict_from_yaw(pose: str, yaw: float, limits: Mapping[str, float]) -> tuple[str, ...]:
    want = DIRECTION[pose]
    if want * yaw >= limits["min_yaw"]:
        return ()
    if -want * yaw >= limits["min_yaw"]:
        return ("wrong_profile_side",)
    return (TURN_CODE[pose],)


def check_side_view(pose: str, faces: list[Face], params: Mapping[str, float] | None = None) -> SideViewVerdict:
    """Judge one frame's faces (largest first, the largest with its mesh) for `pose`."""
    if pose not in DIRECTION:
        raise ValueError(f"not a profile pose: {pose!r}")
    limits = {**DEFAULTS, **(params or {})}
    if not faces:
        return SideViewVerdict(pose, True, (), "no face found")
    face = faces[0]
    second = faces[1].detection.area / max(face.detection.area, 1e-9) if len(faces) > 1 else 0.0
    extra = ("second_face",) if second > limits["max_second_face"] else ()
    details = {"second_face": second, "detector_score": float(face.detection.score)}
    if face.mesh is not None:
        fitted = estimate_pose(face.mesh)
        details["fit_rms"] = float(fitted.rms)
        if fitted.rms <= limits["max_fit_rms"]:
            details.update(pitch=float(fitted.pitch), roll=float(fitted.roll))
            codes = _verdict_from_yaw(pose, float(fitted.yaw), limits) + extra
            return SideViewVerdict(pose, not codes, codes, "mesh yaw", float(fitted.yaw), len(faces), details)
    offset = nose_offset(face)
    details["nose_offset"] = offset
    # Nose towards the image's left (negative offset) = turned to the subject's right, like yaw > 0.
    turned = -offset * DIRECTION[pose]
    if abs(offset) <= limits["max_frontal_nose_offset"]:
        codes: tuple[str, ...] = (TURN_CODE[pose],)
    elif turned < 0:
        codes = ("wrong_profile_side",)
    else:
        codes = ()
    codes += extra
    return SideViewVerdict(pose, not codes, codes, "detector keypoints", None, len(faces), details)
