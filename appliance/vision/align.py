"""dlib-style face chips from FaceMesh points, and the similarity fit dlib's chip geometry rests on.

The stored template no longer uses these chips (`Embedder.embed_face` cuts dlib's own chip from dlib's
5-point landmarks: `shape_predictor`, `dlib_chip`); they remain a cheap, landmark-only alignment and the
baseline the dlib parity test compares against.

The descriptor network was trained on chips cut by dlib's `get_face_chip(image, shape, 150, 0.25)` from
its 5-point shape predictor, so templates are only comparable with the county gallery's (and stable from
capture to capture) if our chips put the face where dlib's do. We take the same five points from the
mesh (eye corners and the nose base) and reproduce dlib's geometry:

- the five points are fitted to dlib's canonical template by a least-squares similarity transform
  (rotation, uniform scale, translation; dlib's `find_similarity_transform`);
- dlib turns that fit into a square extraction rectangle whose corners map to the chip's corner pixel
  centres, i.e. chip pixel steps are (size * scale - 1) / (size - 1) image pixels, not exactly `scale`;
- when the face is much larger than the chip, dlib first halves the image (5-tap Gaussian pyramid) until
  one more halving would drop below the chip's pixel count, then samples bilinearly. We do the same with
  `cv2.pyrDown`, so large faces are anti-aliased rather than point-sampled. The bilinear step is
  `resample.warp_affine`, whose pixels do not change with the OpenCV version (`cv2.warpAffine`'s do).

Pixels outside the image are black, as in dlib.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from appliance.vision.landmarks import (
    LEFT_EYE_INNER,
    LEFT_EYE_OUTER,
    NOSE_BASE,
    RIGHT_EYE_INNER,
    RIGHT_EYE_OUTER,
)
from appliance.vision.resample import warp_affine
from appliance.vision.types import Face

# dlib's 5-point shape predictor order (shape_predictor_5_face_landmarks): the subject's left eye outer
# and inner corner, the right eye outer and inner corner, then the point under the nose.
FIVE_POINT_MESH_INDICES = (LEFT_EYE_OUTER, LEFT_EYE_INNER, RIGHT_EYE_OUTER, RIGHT_EYE_INNER, NOSE_BASE)

# dlib's canonical positions of those five points in a unit square (dlib/image_transforms/interpolation.h,
# get_face_chip_details), before padding is applied.
DLIB_FIVE_POINT_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

CHIP_SIZE = 150
CHIP_PADDING = 0.25


def five_points(face: Face) -> np.ndarray:
    """(5, 2) alignment points from the face mesh, in dlib's 5-point order (image pixels)."""
    if face.mesh is None:
        raise ValueError("five_points needs the face mesh; run the analyzer with landmarks=True")
    return np.asarray(face.mesh, dtype=float)[list(FIVE_POINT_MESH_INDICES), :2].copy()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (no reflection) taking src points onto dst points, as a 2x3 matrix.

    Written with points as complex numbers: dst ~ a * src + b, where a = scale * e^(i angle). After
    centring, the least-squares a is sum(dst * conj(src)) / sum(|src|^2). For a proper similarity this
    is the same optimum as Umeyama's method that dlib uses.
    """
    src = np.asarray(src, dtype=float)
    dst = np.asarray(dst, dtype=float)
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(), zd.mean()
    zs, zd = zs - ms, zd - md
    denom = float(np.sum(np.abs(zs) ** 2))
    if denom <= 0:
        raise ValueError("similarity_transform needs at least two distinct source points")
    a = np.sum(zd * np.conj(zs)) / denom
    b = md - a * ms
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def chip_to_image(points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 affine from chip pixel coordinates to image pixel coordinates, with dlib's geometry."""
    template = (padding + DLIB_FIVE_POINT_TEMPLATE) / (2 * padding + 1) * size
    fit = similarity_transform(template, np.asarray(points5, dtype=float))
    m = fit[:, :2]
    scale = math.hypot(m[0, 0], m[1, 0])
    centre = m @ np.array([size / 2.0, size / 2.0]) + fit[:, 2]
    # dlib's extraction rectangle is centred on the fitted chip centre with side size * scale, and its
    # corners (side - 1 apart) land on chip pixels 0 and size - 1.
    step = (size * scale - 1.0) / (size - 1.0)
    rot = m / scale * step
    offset = centre - rot @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return np.hstack([rot, offset[:, None]])


def face_chip(
    image_rgb: np.ndarray, points5: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> np.ndarray:
    """(size, size, 3) uint8 face chip: the image warped so the five points sit on dlib's template."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"face_chip expects a uint8 HxWx3 image, got {image_rgb.dtype} {image_rgb.shape}")
    affine = chip_to_image(points5, size, padding)
    step = math.hypot(affine[0, 0], affine[1, 0])
    # Halve while the source square would still hold more pixels than the chip after one more halving
    # (dlib's rule), so the final bilinear step never shrinks by more than 2x.
    levels = 0
    side = step * (size - 1) + 1
    while (side / 2.0 ** (levels + 1)) ** 2 > size * size:
        levels += 1

    source = image_rgb
    if levels:
        # Only the part of the image the chip covers (plus a margin for the filters) is downsampled.
        corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], dtype=float)
        mapped = corners @ affine[:, :2].T + affine[:, 2]
        margin = 2 ** (levels + 2)
        h, w = image_rgb.shape[:2]
        x0 = int(max(0, math.floor(mapped[:, 0].min()) - margin))
        y0 = int(max(0, math.floor(mapped[:, 1].min()) - margin))
        x1 = int(min(w, math.ceil(mapped[:, 0].max()) + margin + 1))
        y1 = int(min(h, math.ceil(mapped[:, 1].max()) + margin + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((size, size, 3), np.uint8)
        source = image_rgb[y0:y1, x0:x1]
        for _ in range(levels):
            source = cv2.pyrDown(source)
        # cv2.pyrDown: level pixel i is centred on source pixel 2i.
        k = 2.0**levels
        affine = affine.copy()
        affine[:, 2] -= (x0, y0)
        affine /= k
    return warp_affine(source, affine, (size, size), border="constant", inverse=True)
