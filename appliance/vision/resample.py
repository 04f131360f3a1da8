"""Affine resampling and polygon masks whose pixels are the same under every OpenCV we allow.

Model inputs (detector letterbox, mesh and iris crops, the dlib chip) and the quality views are all
affine warps, and `cv2.warpAffine`'s bilinear output is not stable across the versions `pyproject.toml`
allows: 4.x snaps each source position to 1/32 pixel and blends with 15-bit integer weights, 5.0
blends exact float positions, and 5.1 rounds some halves the other way. The models see those few grey
levels (on a 2048-pixel photo BlazeFace's box moved 0.16 px and the iris centres 1.2 px between 4.14
and 5.0), and measures with a threshold inside amplify them. Likewise `fillPoly` with sub-pixel vertices
changed its edge pixels in 4.11.

So the warp is split in two. Where each output pixel samples is computed here, in numpy (float64,
rounded to 1/32 pixel); the sampling itself is `cv2.remap` with those fixed-point maps, an all-integer
path (15-bit weights from a 32 x 32 table) whose output is bit-identical from OpenCV 4.8 to 5.1 and is
three times faster than the same bilinear blend in numpy. A polygon covers the pixels whose centres lie
inside it or within half a pixel of its outline, computed in numpy. `make drift-check` (tests/drift.py)
checks both on the oldest and newest allowed versions. Coordinates are pixel indices (pixel centres at
integers), as in OpenCV.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

BORDERS = ("replicate", "constant")
SUBPIXEL_BITS = 5  # remap's fixed-point maps: OpenCV's INTER_BITS, 1/32 pixel
SUBPIXELS = 1 << SUBPIXEL_BITS
MAX_SIDE = 32000  # remap's integer map coordinates are 16-bit
OUTLINE_RADIUS = 0.5  # pixels: how close to a polygon's outline a pixel centre counts as covered


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine, in closed form (no LAPACK call whose last bits could vary by build)."""
    (a, b, c), (d, e, f) = np.asarray(matrix, dtype=np.float64)
    det = a * e - b * d
    if det == 0:
        raise ValueError("affine matrix is singular")
    return np.array([[e / det, -b / det, (b * f - c * e) / det], [-d / det, a / det, (c * d - a * f) / det]])


def _source_grid(matrix: np.ndarray, size: tuple[int, int], inverse: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source (x, y) of every output pixel, each (h, w) float64; `inverse`: matrix maps output -> source."""
    m = np.asarray(matrix, dtype=np.float64) if inverse else invert_affine(matrix)
    w, h = size
    xs = np.arange(w, dtype=np.float64)[None, :]
    ys = np.arange(h, dtype=np.float64)[:, None]
    return m[0, 0] * xs + (m[0, 1] * ys + m[0, 2]), m[1, 0] * xs + (m[1, 1] * ys + m[1, 2])


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    border: str = "replicate",
    inverse: bool = False,
) -> np.ndarray:
    """Bilinear warp of a uint8 HxW or HxWxC image into `size` (w, h), like `cv2.warpAffine(INTER_LINEAR)`.

    `matrix` maps source to output pixels (output to source with `inverse`). `border`: "replicate"
    repeats the edge pixels, "constant" blends in black, as OpenCV's borders of those names do.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, not {border!r}")
    height, width = image.shape[:2]
    if max(height, width) > MAX_SIDE:
        raise ValueError(f"image of {width}x{height} pixels is too large to warp (at most {MAX_SIDE} a side)")
    sx, sy = _source_grid(matrix, size, inverse)
    # Positions in 1/32 pixel. Far outside the image only the border rule matters, so clip there and
    # stay within remap's 16-bit integer coordinates.
    x = np.floor(np.clip(sx, -4.0, width + 4.0) * SUBPIXELS + 0.5).astype(np.int32)
    y = np.floor(np.clip(sy, -4.0, height + 4.0) * SUBPIXELS + 0.5).astype(np.int32)
    whole = np.empty((*x.shape, 2), np.int16)
    whole[..., 0] = x >> SUBPIXEL_BITS
    whole[..., 1] = y >> SUBPIXEL_BITS
    fraction = ((y & (SUBPIXELS - 1)) << SUBPIXEL_BITS | (x & (SUBPIXELS - 1))).astype(np.uint16)
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.remap(image, whole, fraction, cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def warp_valid(source_shape: tuple[int, ...], matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 mask (255/0) of the output pixels whose nearest source pixel is inside the source image."""
    sx, sy = _source_grid(matrix, size, inverse=False)
    height, width = source_shape[:2]
    inside = (sx >= -0.5) & (sx < width - 0.5) & (sy >= -0.5) & (sy < height - 0.5)
    return inside.astype(np.uint8) * 255


def polygon_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """uint8 mask (255/0) of the polygon `points` ((N, 2) x, y): pixels whose centres lie inside it (even-odd
    rule) or within half a pixel of its outline, which is about what `cv2.fillPoly` covers (it draws the
    outline too), so masks keep their size.

    Inside: one scan line per pixel row of the polygon's bounding box; each edge that spans the row (lower
    end included, upper end excluded, so a vertex is counted once) toggles the pixels from its crossing
    rightwards.
    """
    h, w = shape
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((h, w), bool)
    lo_xy = np.maximum(np.floor(p.min(axis=0) - OUTLINE_RADIUS), 0).astype(int)
    hi_xy = np.minimum(np.ceil(p.max(axis=0) + OUTLINE_RADIUS) + 1, (w, h)).astype(int)
    (x0, y0), (x1, y1) = lo_xy, hi_xy
    if len(p) < 2 or x1 <= x0 or y1 <= y0:
        return mask.astype(np.uint8)
    q = np.roll(p, -1, axis=0)
    rows = np.arange(y0, y1, dtype=np.float64)[:, None]
    lo, hi = np.minimum(p[:, 1], q[:, 1]), np.maximum(p[:, 1], q[:, 1])
    spans = (rows >= lo) & (rows < hi)  # (rows, edges); horizontal edges never span a row
    dy = np.where(q[:, 1] != p[:, 1], q[:, 1] - p[:, 1], 1.0)
    crossing = p[:, 0] + (rows - p[:, 1]) * ((q[:, 0] - p[:, 0]) / dy)
    r, e = np.nonzero(spans)
    cols = np.clip(np.ceil(crossing[r, e]), x0, x1).astype(np.intp) - x0
    toggles = np.zeros((y1 - y0, x1 - x0 + 1), np.int32)
    np.add.at(toggles, (r, cols), 1)
    mask[y0:y1, x0:x1] = (np.cumsum(toggles, axis=1)[:, :-1] & 1).astype(bool)
    for a, b in zip(p, q, strict=True):
        _mark_near_segment(mask, a, b, OUTLINE_RADIUS)
    return mask.astype(np.uint8) * 255


def _mark_near_segment(mask: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> None:
    """Set the pixels of `mask` whose centres are within `radius` of the segment a-b."""
    h, w = mask.shape
    x0, x1 = max(0, math.ceil(min(a[0], b[0]) - radius)), min(w - 1, math.floor(max(a[0], b[0]) + radius))
    y0, y1 = max(0, math.ceil(min(a[1], b[1]) - radius)), min(h - 1, math.floor(max(a[1], b[1]) + radius))
    if x1 < x0 or y1 < y0:
        return
    xs = np.arange(x0, x1 + 1, dtype=np.float64)[None, :] - a[0]
    ys = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] - a[1]
    d = b - a
    length2 = float(d @ d)
    t = np.clip((xs * d[0] + ys * d[1]) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    mask[y0 : y1 + 1, x0 : x1 + 1] |= (xs - t * d[0]) ** 2 + (ys - t * d[1]) ** 2 <= radius * radius


def ellipse_mask(
    shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], angle: float = 0.0
) -> np.ndarray:
    """uint8 mask (255/0) of a filled ellipse: pixels whose centres lie inside it grown by half a pixel.

    `axes` are the half-axes (x then y before rotation), `angle` the rotation in degrees (y down), as for
    `cv2.ellipse`; unlike it, centre and axes are not rounded to whole pixels, so the mask follows a
    landmark's sub-pixel movement instead of jumping a pixel when a coordinate crosses .5.
    """
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    a, b = abs(float(axes[0])) + OUTLINE_RADIUS, abs(float(axes[1])) + OUTLINE_RADIUS
    reach = max(a, b)
    cx, cy = float(centre[0]), float(centre[1])
    x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    if x1 <= x0 or y1 <= y0:
        return mask
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
    dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
    u, v = (dx * c + dy * s) / a, (dy * c - dx * s) / b
    mask[y0:y1, x0:x1] = (u * u + v * v <= 1.0).astype(np.uint8) * 255
    return mask
