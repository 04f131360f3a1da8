"""dlib's 5-point shape predictor (an ensemble of regression trees), run in numpy from the bundle's arrays.

Why: dlib's face descriptor is only comparable with templates other dlib users hold if the chip is cut
from the same five landmarks dlib's own predictor finds. FaceMesh's eye corners sit a few pixels from
dlib's, enough to move a template 0.1 (a sixth of the 0.6 decision margin), so the template path uses
this predictor; FaceMesh stays for the quality measures.

The evaluation follows dlib's `shape_predictor::operator()` step for step so the points agree to the pixel:

- the shape lives in the detection box's unit square (box corners (0, 0) and (1, 1), dlib's inclusive
  `rectangle` convention: the right/bottom coordinate is the last pixel inside);
- it starts as the mean shape; each cascade level reads its feature pixels at anchor-relative offsets,
  turned by the similarity transform from the mean shape to the current shape, rounded to the nearest
  pixel, grey value (r + g + b) // 3 and 0 outside the image;
- every tree of the level descends by "feature a - feature b > threshold" (left child 2i+1, else 2i+2)
  and the leaf's shape delta is added;
- the final points are mapped into the image and rounded to whole pixels, as dlib returns them.

dlib starts from its HOG detector's rectangle; we have BlazeFace's. The cascade's result depends on the
rectangle (dlib's own detectors, HOG at two upsamplings and its CNN, give points whose templates lie
0.02-0.08 apart), so `face_box` derives a dlib-style rectangle from ours: the BlazeFace box shrunk to
dlib's scale, then refined twice by fitting the mean shape to the predicted points (the box in which
the points sit where the mean shape expects them, which is how the training boxes relate to the
landmarks on average). Measured on the labelled images this came closest to dlib's own templates of
the variants we tried (raw BlazeFace box, a fitted offset, more refinements). A box derived from
BlazeFace's is not dlib's to the pixel, and one pixel is enough to move dlib's points, so the template averages the
chips of a few boxes around it (`BOX_JITTER`, `jittered_boxes`; the figures are beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from appliance.vision.align import similarity_transform

FORMAT_VERSION = 1
SHAPE_PREDICTOR_ROLE = "landmarks_dlib5"
# BlazeFace's box side over dlib's HOG box side for the same face, median over the labelled images.
BLAZEFACE_TO_DLIB_SCALE = 0.962
BOX_REFINEMENTS = 2
# The template averages the descriptors of the chips cut from these boxes around ours: (dx, dy, grow)
# in percent of the box side. dlib's points move by whole pixels when its box moves by one pixel, and
# that alone moves dlib's own template a median 0.033 (measured on the labelled images: the same
# distance as a 1% or a 4% shift, and as dlib's HOG against its CNN detector), so no box short of the
# very rectangle dlib's detector would give lands nearer one dlib template than that. The mean over a
# small neighbourhood sits near the middle of the templates dlib gives for boxes around the face:
# median 0.026-0.028 from dlib's (fixture and HOG-box) templates instead of 0.034, max 0.079 / 0.089
# instead of 0.089 / 0.113. Larger sets (25, 75 boxes) measured the same within 0.002.
BOX_JITTER = (
    (0, 0, 0),
    (-2, -2, 0), (0, -2, 0), (2, -2, 0), (-2, 0, 0), (2, 0, 0), (-2, 2, 0), (0, 2, 0), (2, 2, 0),
    (0, 0, 4), (0, 0, -4),
)
_ARRAYS = ("initial_shape", "split_idx", "split_thresh", "leaf_values", "anchor_idx", "deltas")


class ShapePredictorError(ValueError):
    """The predictor file is not a usable shape predictor (wrong version, missing or inconsistent arrays)."""


@dataclass(frozen=True)
class ShapePredictor:
    initial_shape: np.ndarray  # (P, 2) float32
    split_idx: np.ndarray  # (C, T, S, 2) int
    split_thresh: np.ndarray  # (C, T, S) float32
    leaf_values: np.ndarray  # (C, T, S + 1, P, 2) float32
    anchor_idx: np.ndarray  # (C, F) int
    deltas: np.ndarray  # (C, F, 2) float32

    @classmethod
    def load(cls, path: Path | str) -> ShapePredictor:
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["format_version"]) if "format_version" in data else None
                missing = [k for k in _ARRAYS if k not in data]
                if version != FORMAT_VERSION or missing:
                    raise ShapePredictorError(
                        f"{path}: not a shape predictor file of format {FORMAT_VERSION} "
                        f"(format {version}, missing {missing or 'nothing'})"
                    )
                arrays = {k: data[k] for k in _ARRAYS}
        except (OSError, ValueError) as exc:
            if isinstance(exc, ShapePredictorError):
                raise
            raise ShapePredictorError(f"{path}: cannot read the shape predictor: {exc}") from exc
        predictor = cls(**arrays)
        predictor._check()
        return predictor

    def _check(self) -> None:
        c, t, s, _ = self.split_idx.shape
        p = self.initial_shape.shape[0]
        f = self.anchor_idx.shape[1]
        consistent = (
            self.split_thresh.shape == (c, t, s)
            and self.leaf_values.shape == (c, t, s + 1, p, 2)
            and self.anchor_idx.shape == (c, f)
            and self.deltas.shape == (c, f, 2)
            and int(self.split_idx.max()) < f
            and int(self.anchor_idx.max()) < p
        )
        if not consistent:
            raise ShapePredictorError("shape predictor arrays have inconsistent shapes or indices")

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])

    @cached_property
    def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per level: split pixels a, b and thresholds as (C, T*S), leaf deltas as (C, T*L, P*2), so a
        whole level's trees index one flat array (several times faster than multi-axis indexing)."""
        c, t, s, _ = self.split_idx.shape
        return (
            np.ascontiguousarray(self.split_idx[..., 0].reshape(c, t * s)),
            np.ascontiguousarray(self.split_idx[..., 1].reshape(c, t * s)),
            np.ascontiguousarray(self.split_thresh.reshape(c, t * s)),
            np.ascontiguousarray(self.leaf_values.reshape(c, t * (s + 1), -1)),
        )

    def __call__(self, image_rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(P, 2) landmark pixels (whole numbers, as floats) for the face in dlib rectangle `box`
        = (left, top, right, bottom), right and bottom inclusive."""
        left, top, right, bottom = (float(v) for v in box)
        h, w = image_rgb.shape[:2]
        origin = np.array([left, top])
        extent = np.array([right - left, bottom - top])
        shape = self.initial_shape.astype(np.float32).copy()
        split_a, split_b, thresh, leaves_flat = self._flat
        levels, n_trees, n_splits = self.split_thresh.shape
        first_split = np.arange(n_trees) * n_splits
        first_leaf = np.arange(n_trees) * (n_splits + 1)
        depth = int(np.log2(n_splits + 1))
        for level in range(levels):
            rot = similarity_transform(self.initial_shape, shape)[:, :2].astype(np.float32)
            unit = self.deltas[level] @ rot.T + shape[self.anchor_idx[level]]
            pix = np.floor(unit.astype(np.float64) * extent + origin + 0.5).astype(np.int64)
            inside = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
            feats = np.zeros(len(pix), np.float32)
            feats[inside] = _grey(image_rgb[pix[inside, 1], pix[inside, 0]])
            node = np.zeros(n_trees, np.int64)
            for _ in range(depth):
                at = first_split + node
                go_left = feats[split_a[level, at]] - feats[split_b[level, at]] > thresh[level, at]
                node = 2 * node + np.where(go_left, 1, 2)
            leaf = first_leaf + node - n_splits
            # dlib adds the trees' deltas one by one in float32; a float32 cumulative sum does the same
            # additions in the same order (a pairwise sum would move points across rounding boundaries).
            steps = np.concatenate([shape.reshape(1, -1), leaves_flat[level, leaf]])
            shape = np.cumsum(steps, axis=0, dtype=np.float32)[-1].reshape(-1, 2)
        return np.floor(shape.astype(np.float64) * extent + origin + 0.5)


def _round(v: float) -> int:
    return int(np.floor(v + 0.5))


def _square(cx: float, cy: float, side: float) -> tuple[int, int, int, int]:
    half = side / 2
    return _round(cx - half), _round(cy - half), _round(cx + half), _round(cy + half)


def _fit_box(mean_shape: np.ndarray, points: np.ndarray) -> tuple[int, int, int, int]:
    """The square box in which `points` best match the mean shape (least squares on left, top, side)."""
    n = len(points)
    a = np.zeros((2 * n, 3))
    a[0::2, 0], a[1::2, 1] = 1, 1
    a[0::2, 2], a[1::2, 2] = mean_shape[:, 0], mean_shape[:, 1]
    (left, top, side), *_ = np.linalg.lstsq(a, np.asarray(points, float).reshape(-1), rcond=None)
    return _round(left), _round(top), _round(left + side), _round(top + side)


def face_box(
    predictor: ShapePredictor, image_rgb: np.ndarray, detector_box: np.ndarray
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The dlib-style rectangle for the face BlazeFace boxed as `detector_box` (x0, y0, x1, y1), and
    dlib's five points in it: BlazeFace's box at dlib's scale, then refitted to the points (see above)."""
    x0, y0, x1, y1 = (float(v) for v in detector_box)
    side = ((x1 - x0) + (y1 - y0)) / 2 * BLAZEFACE_TO_DLIB_SCALE
    box = _square((x0 + x1) / 2, (y0 + y1) / 2, side)
    points = predictor(image_rgb, box)
    for _ in range(BOX_REFINEMENTS):
        refined = _fit_box(predictor.initial_shape, points)
        if refined == box:
            break
        box = refined
        points = predictor(image_rgb, box)
    return box, points


def face_points(predictor: ShapePredictor, image_rgb: np.ndarray, detector_box: np.ndarray) -> np.ndarray:
    """dlib's five points for the face BlazeFace boxed as `detector_box` (x0, y0, x1, y1)."""
    return face_box(predictor, image_rgb, detector_box)[1]


def jittered_boxes(box: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """`box` and its neighbours in `BOX_JITTER` (shifts and size changes in percent of the box side),
    rounded to whole pixels; the first is `box` itself. Why: see `BOX_JITTER`."""
    left, top, right, bottom = box
    unit = (right - left) / 100
    out = []
    for dx, dy, grow in BOX_JITTER:
        half = grow * unit / 2
        out.append((
            _round(left + dx * unit - half), _round(top + dy * unit - half),
            _round(right + dx * unit + half), _round(bottom + dy * unit + half),
        ))
    return out


def _grey(pixels: np.ndarray) -> np.ndarray:
    """dlib's grey value of RGB pixels (N, 3): the integer mean of the three channels."""
    if pixels.ndim == 1:
        return pixels
    return pixels.astype(np.uint16).sum(axis=-1) // 3
