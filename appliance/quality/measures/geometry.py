"""Geometry measures: faces present, size, position, pose, eye and mouth opening.

All need only detection, mesh and iris, so all are `live`: a few vector operations per preview frame.
Definitions follow ISO/IEC 29794-5 as OFIQ implements them, with FaceMesh points in place of ADNet's:
T is the distance from the eye midpoint to the chin (mesh point 152); IED is between the iris centres.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.quality.registry import measure
from appliance.quality.session import INNER_LIP_PAIRS, QualitySession
from appliance.quality.types import CannotAssess
from appliance.vision import landmarks as lm


@measure("single_face_present", 0x4C, live=True)
def single_face_present(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Area of the second-largest face box relative to the largest (0 when the subject is alone)."""
    faces = s.faces
    if not faces:
        raise CannotAssess("no face found")
    if len(faces) == 1:
        return 0.0, {"faces": 1.0}
    return faces[1].detection.area / max(faces[0].detection.area, 1e-9), {"faces": float(len(faces))}


def lid_gap(lower: np.ndarray, upper: np.ndarray) -> float:
    """Widest gap between two eyelid curves, perpendicular to the corner-to-corner axis, in pixels.

    `lower` runs from one eye corner to the other along the lower lid; `upper` is the upper lid (any
    order). Both curves are projected onto the eye axis and interpolated on common stations, so the
    result does not depend on which landmarks happen to face each other.
    """
    a, b = lower[0], lower[-1]
    length = float(np.linalg.norm(b - a))
    if length < 1e-6:
        return 0.0
    ax = (b - a) / length
    n = np.array([-ax[1], ax[0]])
    if n[1] < 0:  # the normal points down the image, from the upper lid to the lower
        n = -n
    lo = np.stack([(lower - a) @ ax, (lower - a) @ n], axis=1)
    up = np.stack([(upper - a) @ ax, (upper - a) @ n], axis=1)
    lo, up = lo[np.argsort(lo[:, 0])], up[np.argsort(up[:, 0])]
    start, stop = max(lo[0, 0], up[0, 0]), min(lo[-1, 0], up[-1, 0])
    if stop <= start:
        return 0.0
    xs = np.linspace(start, stop, 24)
    return max(0.0, float(np.max(np.interp(xs, lo[:, 0], lo[:, 1]) - np.interp(xs, up[:, 0], up[:, 1]))))


def eye_openings(s: QualitySession) -> tuple[float, float, str]:
    """(right, left) eye openings in pixels and the landmark source used.

    The iris model's eyelid contour (points 0-8 lower lid corner to corner, 9-15 upper lid) is preferred:
    it looks at a 64 px crop of each eye and follows the lids, where the 468-point mesh's eyelids stay
    near their average shape when the eye closes. The mesh eye rings are the fallback.
    """
    contours = s.face.eye_contours
    if contours is not None:
        c = np.asarray(contours, dtype=float)
        gaps = [lid_gap(c[e, 0:9], np.vstack([c[e, 0:1], c[e, 9:16], c[e, 8:9]])) for e in (0, 1)]
        return gaps[0], gaps[1], "iris"
    gaps = []
    for ring in (lm.RIGHT_EYE_RING, lm.LEFT_EYE_RING):
        pts = s.mesh[list(ring), :2]
        gaps.append(lid_gap(pts[0:9], np.vstack([pts[8:16], pts[0:1]])))
    return gaps[0], gaps[1], "mesh"


@measure("eyes_open", 0x4D, live=True)
def eyes_open(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Smaller eye's opening (widest lid gap) relative to T."""
    right, left, _ = eye_openings(s)
    t = s.t_metric
    return min(right, left) / t, {"right": right / t, "left": left / t}


@measure("mouth_closed", 0x4E, live=True)
def mouth_closed(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Largest gap between the inner lip lines relative to T (0 for closed lips)."""
    gap = max(float(np.linalg.norm(s.mesh[a, :2] - s.mesh[b, :2])) for a, b in INNER_LIP_PAIRS)
    return gap / s.t_metric


@measure("inter_eye_distance", 0x52, live=True)
def inter_eye_distance(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Pixels between the eye centres, corrected for yaw foreshortening (divided by cos yaw)."""
    max_yaw = float(p.get("max_yaw_correction", 60.0))
    yaw = min(abs(s.pose.yaw), max_yaw)
    return s.ied_image / math.cos(math.radians(yaw)), {"planar": s.ied_image}


@measure("head_size", 0x53, live=True)
def head_size(s: QualitySession, p: Mapping[str, Any]) -> float:
    """T (eye midpoint to chin) relative to the image height; ISO/IEC 29794-5's target is 0.45."""
    return s.t_metric / s.height


@measure("leftward_crop", 0x54, live=True)
def leftward_crop(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Distance from the image's left edge to the nearer eye centre, in inter-eye distances."""
    return float(s.eyes[:, 0].min()) / s.ied_image


@measure("rightward_crop", 0x55, live=True)
def rightward_crop(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Distance from the image's right edge to the nearer eye centre, in inter-eye distances."""
    return (s.width - float(s.eyes[:, 0].max())) / s.ied_image


@measure("margin_above", 0x56, live=True)
def margin_above(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Distance from the top edge to the eye midpoint, in units of T."""
    return float(s.eye_mid[1]) / s.t_metric


@measure("margin_below", 0x57, live=True)
def margin_below(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Distance from the eye midpoint to the bottom edge, in units of T."""
    return (s.height - float(s.eye_mid[1])) / s.t_metric


def _pose(s: QualitySession, p: Mapping[str, Any]):
    max_rms = float(p.get("max_fit_rms", 0.12))
    pose = s.pose
    if pose.rms > max_rms:
        raise CannotAssess(f"face mesh does not fit a face shape (residual {pose.rms:.3f} IED)")
    return pose


@measure("head_pose_yaw", 0x58, live=True)
def head_pose_yaw(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Yaw in degrees; positive when the head is turned towards the subject's right (see pose.py)."""
    return _pose(s, p).yaw


@measure("head_pose_pitch", 0x59, live=True)
def head_pose_pitch(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Pitch in degrees; positive when the chin is raised."""
    return _pose(s, p).pitch


@measure("head_pose_roll", 0x5A, live=True)
def head_pose_roll(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Roll in degrees; positive when the head leans towards the subject's right shoulder."""
    return _pose(s, p).roll
