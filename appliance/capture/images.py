"""Image helpers for captures that are kept as taken: JPEG encoding, the subject crop of profile views,
and a cheap sharpness score.

The frontal view is standardized by `appliance.quality.standardize` (profile geometry). Profile views and
scars/marks/tattoos are not: the standard's frontal geometry does not apply to them, and an SMT photo must
show the mark exactly as the officer framed it. A profile view is only cut down to the subject, so the
record does not carry a booking desk's worth of background, and when no face is found in it (a true 90
degree profile often defeats a frontal face detector) it is kept whole rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

JPEG_QUALITY = 92
"""High enough that JPEG blocks do not show up as compression artefacts in the county's own checks."""

# The subject box of a profile view, in multiples of the detected face box's height: from the face box
# the crop reaches up over the hair, down to the shoulders, and sideways over the back of the head
# (which of the two sides that is depends on which way the subject faces, so both sides get it).
PROFILE_ABOVE = 0.9
PROFILE_BELOW = 1.1
PROFILE_HALF_WIDTH = 1.2


class EncodeError(ValueError):
    """An image could not be encoded as JPEG (not a uint8 RGB array)."""


@dataclass(frozen=True)
class Encoded:
    """A JPEG and the pixel size it holds."""

    jpeg: bytes
    width: int
    height: int


def encode_jpeg(image_rgb: np.ndarray, quality: int = JPEG_QUALITY) -> Encoded:
    """RGB uint8 -> baseline JPEG bytes. OpenCV writes a bare JFIF header, so no EXIF (camera serial
    numbers, GPS, times) can leave the device inside a capture."""
    if not (isinstance(image_rgb, np.ndarray) and image_rgb.dtype == np.uint8 and image_rgb.ndim == 3
            and image_rgb.shape[2] == 3 and image_rgb.size):
        got = f"{image_rgb.dtype} {image_rgb.shape}" if isinstance(image_rgb, np.ndarray) else type(image_rgb).__name__
        raise EncodeError(f"only an RGB uint8 image can be encoded, got {got}")
    bgr = cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails here on allocation failure
        raise EncodeError("the JPEG encoder failed")
    return Encoded(buf.tobytes(), int(image_rgb.shape[1]), int(image_rgb.shape[0]))


def subject_box(face_box: np.ndarray | tuple[float, float, float, float],
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A generous crop (x0, y0, x1, y1, integer pixels) around a detected face: hair to shoulders and
    the back of the head, moved (not shrunk) to stay inside the image where it fits.

    Moving rather than clipping keeps the subject's proportions in the crop when the face is near an
    edge; only a box larger than the image is clipped.
    """
    width, height = size
    x0, y0, x1, y1 = (float(v) for v in face_box)
    face_h = max(1.0, y1 - y0)
    cx = (x0 + x1) / 2.0
    box_w = 2 * PROFILE_HALF_WIDTH * face_h
    top = y0 - PROFILE_ABOVE * face_h
    box_h = (y1 + PROFILE_BELOW * face_h) - top
    left = cx - box_w / 2.0
    left, box_w = _fit(left, box_w, width)
    top, box_h = _fit(top, box_h, height)
    return round(left), round(top), round(left + box_w), round(top + box_h)


def _fit(start: float, length: float, limit: int) -> tuple[float, float]:
    if length >= limit:
        return 0.0, float(limit)
    start = min(max(start, 0.0), limit - length)
    return start, length


def sharpness(image_rgb: np.ndarray) -> float:
    """Variance of the Laplacian on a 320 px wide grey copy: higher is sharper. Used to pick the best
    frame of a stable window for views that have no quality gates (profiles, SMT)."""
    grey = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    w = grey.shape[1]
    if w > 320:
        grey = cv2.resize(grey, (320, max(1, round(grey.shape[0] * 320 / w))), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
