"""Standard mug-shot crops: level the eyes, then crop and scale to the profile's composition.

Composition (profile [output]): W x H pixels, eye midpoint centred horizontally at `eye_line_from_bottom`
of the height from the bottom, and the head `head_width_ratio` of the width. The scale comes from the eyes:
the ear-to-ear head breadth is taken as `head_width_in_ied` (2.5) inter-pupil distances, so the output
inter-eye distance is ``head_width_ratio * W / 2.5`` (96 px for SAP 30). Eyes are the steadiest landmarks
we have (iris centres), where the face outline moves with hair, ears and yaw.

When the subject is near an edge of the source, the composition may give a little: the eye line moves by
up to `eye_line_tolerance` of the height, the centre by `centre_tolerance` of the width, and the head
width by `head_width_tolerance` of itself (never below `min_output_ied` between the eyes). The choice
closest to nominal that fits inside the source wins; if none fits, `StandardizeError` says which edge is
short. The source is never enlarged by more than `max_upscale` (5%): upscaling adds pixels, not detail,
and a SAP level is a claim about detail.

The output is a fresh baseline JPEG from `cv2.imencode` (JFIF, no EXIF or other metadata from the source)
at the profile's quality. The achieved geometry is measured on the output and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from appliance.quality.profile import Geometry
from appliance.quality.session import warp_face
from appliance.vision import landmarks as lm
from appliance.vision.types import Face

# Ear-to-ear head breadth over the mesh's cheek-to-cheek width (points 234-454): 2.5 / 2.19, the median
# face width in inter-eye distances over the shared portraits. Used only to *report* the head width.
HEAD_OVER_FACE_WIDTH = 1.14
EDGE_SLACK = 0.5  # pixels of the output footprint allowed outside the source (rounding)


class StandardizeError(ValueError):
    """The source cannot give the profile's output; the message says why and what would fix it."""


@dataclass
class Standardized:
    """A standardized capture and the geometry it achieved."""

    image: np.ndarray  # RGB uint8, height x width
    jpeg: bytes
    width: int
    height: int
    eye_line_from_bottom: float  # achieved, fraction of the height
    centre_offset: float  # eye midpoint from the centre line, fraction of the width (+ = right)
    head_width_ratio: float  # estimated ear-to-ear width / image width
    ied: float  # output pixels between the iris centres
    scale: float  # output pixels per source pixel
    rotation: float  # eye-line tilt removed, degrees (same sign as head_pose_roll's in-plane part)
    jpeg_quality: int

    def to_json(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "eye_line_from_bottom": round(self.eye_line_from_bottom, 4),
            "centre_offset": round(self.centre_offset, 4),
            "head_width_ratio": round(self.head_width_ratio, 4),
            "ied": round(self.ied, 2),
            "scale": round(self.scale, 4),
            "rotation": round(self.rotation, 2),
            "jpeg_quality": self.jpeg_quality,
            "bytes": len(self.jpeg),
        }


def _affine(eyes: np.ndarray, ied_out: float, target: tuple[float, float]) -> np.ndarray:
    (rx, ry), (lx, ly) = eyes
    dx, dy = lx - rx, ly - ry
    dist = math.hypot(dx, dy)
    k = ied_out / dist
    c, s = dx / dist, dy / dist
    rot = np.array([[c, s], [-s, c]]) * k
    mid = np.array([(rx + lx) / 2, (ry + ly) / 2])
    return np.hstack([rot, (np.asarray(target) - rot @ mid)[:, None]])


def _corners(geometry: Geometry) -> np.ndarray:
    w, h = geometry.width, geometry.height
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])


def _shortfalls(eyes: np.ndarray, ied_out: float, targets: np.ndarray, geometry: Geometry,
                src_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) source pixels the output window reaches past the left, right, top, bottom source edges,
    for each of N eye-midpoint targets (0 where it fits). Vectorised: the plan tries ~1000 layouts."""
    affine = _affine(eyes, ied_out, (0.0, 0.0))
    inv = np.linalg.inv(affine[:, :2])
    mid = eyes.mean(axis=0)
    corners = _corners(geometry)  # output corners relative to a target at the origin
    base = (corners @ inv.T) + mid  # (4, 2) source corners when the eye midpoint maps to (0, 0)
    src = base[None, :, :] - (targets @ inv.T)[:, None, :]  # (N, 4, 2)
    src_w, src_h = src_size
    return np.maximum(0.0, np.stack([
        -0.5 - src[..., 0].min(axis=1),
        src[..., 0].max(axis=1) - (src_w - 0.5),
        -0.5 - src[..., 1].min(axis=1),
        src[..., 1].max(axis=1) - (src_h - 0.5),
    ], axis=1) - EDGE_SLACK)


def plan(eyes: np.ndarray, src_size: tuple[int, int], geometry: Geometry) -> tuple[np.ndarray, float]:
    """(affine source -> output, output IED) for the composition closest to nominal that fits."""
    eyes = np.asarray(eyes, dtype=float)
    src_ied = float(np.linalg.norm(eyes[1] - eyes[0]))
    if src_ied < 2:
        raise StandardizeError("eye centres are too close together to standardize")
    nominal = geometry.output_ied
    lo = max(geometry.min_output_ied, nominal * (1 - geometry.head_width_tolerance))
    hi = nominal * (1 + geometry.head_width_tolerance)
    ceiling = src_ied * geometry.max_upscale
    if ceiling < lo:
        raise StandardizeError(
            f"the source has too few pixels for this profile: {src_ied:.0f} px between the eyes, "
            f"{lo / geometry.max_upscale:.0f} px needed for a {geometry.width}x{geometry.height} output with at "
            f"least {lo:.0f} px between the eyes (upscaling is limited to {100 * (geometry.max_upscale - 1):.0f}%); "
            "move the camera closer or use a higher resolution"
        )
    hi = min(hi, ceiling)
    w, h = geometry.width, geometry.height
    dys = np.linspace(-geometry.eye_line_tolerance, geometry.eye_line_tolerance, 11)
    dxs = np.linspace(-geometry.centre_tolerance, geometry.centre_tolerance, 11)
    gx, gy = np.meshgrid(dxs, dys)
    gx, gy = gx.ravel(), gy.ravel()
    targets = np.stack([w / 2 - 0.5 + gx * w, h * (1 - geometry.eye_line_from_bottom - gy) - 0.5], axis=1)
    start = min(max(nominal, lo), hi)
    best: tuple[float, float, np.ndarray] | None = None
    for ied_out in np.unique(np.r_[start, np.linspace(lo, hi, 9)]):
        fits = ~np.any(_shortfalls(eyes, float(ied_out), targets, geometry, src_size) > 0, axis=1)
        if not fits.any():
            continue
        cost = ((ied_out - nominal) / nominal / max(geometry.head_width_tolerance, 1e-6)) ** 2 + \
            (gy / max(geometry.eye_line_tolerance, 1e-6)) ** 2 + (gx / max(geometry.centre_tolerance, 1e-6)) ** 2
        cost = np.where(fits, cost, np.inf)
        k = int(np.argmin(cost))
        if best is None or cost[k] < best[0]:
            best = (float(cost[k]), float(ied_out), targets[k])
    if best is None:
        nominal_target = np.array([[w / 2 - 0.5, h * (1 - geometry.eye_line_from_bottom) - 0.5]])
        short = _shortfalls(eyes, start, nominal_target, geometry, src_size)[0]
        edges = ", ".join(f"{edge} by {px:.0f} px" for edge, px in zip(("left", "right", "top", "bottom"), short,
                                                                      strict=True) if px > 0)
        raise StandardizeError(
            f"the head is too close to the edge of the photo for the {w}x{h} composition (short at the {edges}): "
            "centre the subject with more room around the head, or step back"
        )
    _, ied_out, target = best
    return _affine(eyes, ied_out, (float(target[0]), float(target[1]))), ied_out


def standardize(image: np.ndarray, face: Face, geometry: Geometry) -> Standardized:
    """Level, crop and scale `image` around `face` to `geometry`; encode a fresh JPEG."""
    if face.mesh is None:
        raise StandardizeError("standardizing needs the face mesh (run the analyzer with landmarks)")
    eyes = np.asarray(face.eyes, dtype=float)
    affine, ied_out = plan(eyes, (image.shape[1], image.shape[0]), geometry)
    out, _ = warp_face(image, affine, (geometry.width, geometry.height))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, geometry.jpeg_quality])
    if not ok:  # pragma: no cover - OpenCV fails only on invalid parameters
        raise StandardizeError("JPEG encoding failed")
    out_eyes = eyes @ affine[:, :2].T + affine[:, 2]
    mid = out_eyes.mean(axis=0)
    mesh = np.asarray(face.mesh, dtype=float)[:, :2] @ affine[:, :2].T + affine[:, 2]
    face_width = float(np.linalg.norm(mesh[lm.LEFT_FACE_EDGE] - mesh[lm.RIGHT_FACE_EDGE]))
    scale = math.sqrt(abs(float(np.linalg.det(affine[:, :2]))))
    (rx, ry), (lx, ly) = eyes
    return Standardized(
        image=out,
        jpeg=data.tobytes(),
        width=geometry.width,
        height=geometry.height,
        eye_line_from_bottom=1.0 - (float(mid[1]) + 0.5) / geometry.height,
        centre_offset=(float(mid[0]) + 0.5) / geometry.width - 0.5,
        head_width_ratio=face_width * HEAD_OVER_FACE_WIDTH / geometry.width,
        ied=float(np.linalg.norm(out_eyes[1] - out_eyes[0])),
        scale=scale,
        rotation=-math.degrees(math.atan2(ly - ry, lx - rx)),
        jpeg_quality=geometry.jpeg_quality,
    )
