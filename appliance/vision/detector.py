"""BlazeFace face detection (MediaPipe short- and full-range models) without MediaPipe.

Runs on every preview frame, so everything around the two interpreter calls is vectorised numpy and one
affine warp (`resample.warp_affine`): anchors are computed once per model, only anchors whose logit clears the score
threshold are decoded, and non-maximum suppression loops over the (few) surviving candidates.

Coordinates: every point this module returns is in OpenCV pixel coordinates of the input image, i.e.
(x, y) = (column, row) of a pixel centre. The models themselves work in normalised coordinates where the
tensor spans [0, 1] edge to edge; the half-pixel difference is converted explicitly so that warps built on
these points (face mesh crops, face chips) land where the model looked.

Parameters follow MediaPipe's published graph options for these models:
SSD anchors with fixed size 1 x 1, letterboxed input scaled to [-1, 1], box and keypoint regressions
relative to the anchor centre in input pixels, sigmoid scores with the logit clipped to +-100, weighted
non-maximum suppression at IoU 0.3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.vision.resample import warp_affine
from appliance.vision.runtime import Model, RuntimeOptions
from appliance.vision.types import Detection

SCORE_CLIP = 100.0  # MediaPipe clips raw logits to +-100 before the sigmoid
NUM_KEYPOINTS = 6


@dataclass(frozen=True)
class AnchorSpec:
    """The SSD anchor options of one BlazeFace variant (MediaPipe `SsdAnchorsCalculatorOptions`).

    Only what the face models use is modelled: one aspect ratio (1.0), fixed anchor size (so min/max
    scale do not affect the result), anchor offset 0.5.
    """

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # 0 disables the extra anchor per layer

    def anchors(self) -> np.ndarray:
        """(N, 2) anchor centres (x, y), normalised to [0, 1], in the order the model emits its rows.

        Consecutive layers that share a stride share a feature map; each location of that map carries
        one anchor per layer for the aspect ratio plus one for the interpolated scale, emitted row by
        row, column by column, anchor by anchor.
        """
        centres: list[np.ndarray] = []
        layer = 0
        while layer < len(self.strides):
            stride = self.strides[layer]
            per_location = 0
            while layer < len(self.strides) and self.strides[layer] == stride:
                per_location += 1 + (1 if self.interpolated_scale_aspect_ratio > 0 else 0)
                layer += 1
            side = math.ceil(self.input_size / stride)
            grid = (np.arange(side, dtype=np.float32) + 0.5) / side
            ys, xs = np.meshgrid(grid, grid, indexing="ij")
            cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
            centres.append(np.repeat(cells, per_location, axis=0))
        return np.concatenate(centres, axis=0)


SHORT_RANGE = AnchorSpec(input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0)
FULL_RANGE = AnchorSpec(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0)


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -SCORE_CLIP, SCORE_CLIP)))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box against (N, 4) boxes, x0 y0 x1 y1."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's "weighted" suppression: each cluster becomes the score-weighted mean of its members.

    Averaging (rather than keeping the top box) steadies boxes and keypoints from frame to frame, which
    the live guidance depends on. The cluster keeps the score of its best member.
    """
    order = np.argsort(-scores, kind="stable")
    kept: list[tuple[np.ndarray, np.ndarray, float]] = []
    while order.size:
        top = order[0]
        overlap = _iou(boxes[top], boxes[order])
        members = order[overlap > iou_threshold]
        members = members if members.size else order[:1]
        order = order[overlap <= iou_threshold]
        weights = scores[members]
        total = float(weights.sum())
        box = (boxes[members] * weights[:, None]).sum(axis=0) / total
        kps = (keypoints[members] * weights[:, None, None]).sum(axis=0) / total
        kept.append((box, kps, float(scores[top])))
    return kept


class _BlazeFace:
    """One BlazeFace model with its anchors; converts an image to detections in image pixels."""

    def __init__(self, path: Path | str, spec: AnchorSpec, options: RuntimeOptions, name: str) -> None:
        self.model = Model(path, options)
        self.spec = spec
        self.name = name
        shape = self.model.input_shape
        if shape[1:3] != (spec.input_size, spec.input_size):
            raise ValueError(
                f"{path}: input shape {shape} does not match the {name}-range detector "
                f"({spec.input_size}x{spec.input_size})"
            )
        self.anchors = spec.anchors()
        # Outputs are told apart by shape (16 regression values vs 1 logit), not by order or name: the
        # sparse full-range copy names and orders them differently.
        self._reg_index = next(
            i for i, d in enumerate(self.model.outputs) if int(d["shape"][-1]) == 4 + 2 * NUM_KEYPOINTS
        )
        self._cls_index = next(i for i, d in enumerate(self.model.outputs) if int(d["shape"][-1]) == 1)
        n_out = int(self.model.outputs[self._reg_index]["shape"][-2])
        if n_out != len(self.anchors):
            raise ValueError(f"{path}: model emits {n_out} boxes, the {name}-range anchors number {len(self.anchors)}")

    def detect(self, image_rgb: np.ndarray, min_score: float, iou: float) -> list[Detection]:
        h, w = image_rgb.shape[:2]
        size = self.spec.input_size
        square = float(max(h, w))
        pad_x, pad_y = (square - w) / 2.0, (square - h) / 2.0
        s = size / square
        # Letterbox + resize in one warp: tensor continuous coords = s * (image continuous + pad); in pixel
        # index coords (centre at integer) that is t = s * i + s * (pad + 0.5) - 0.5. Padding is black.
        matrix = np.array(
            [[s, 0.0, s * (pad_x + 0.5) - 0.5], [0.0, s, s * (pad_y + 0.5) - 0.5]], dtype=np.float64
        )
        tensor = warp_affine(image_rgb, matrix, (size, size), border="constant")
        x = tensor.astype(np.float32)
        x *= 2.0 / 255.0
        x -= 1.0
        outputs = self.model.run(x[None])
        raw = outputs[self._reg_index].reshape(-1, 4 + 2 * NUM_KEYPOINTS)
        logits = outputs[self._cls_index].reshape(-1)

        hit = np.flatnonzero(logits >= _logit(min_score))
        if hit.size == 0:
            return []
        raw = raw[hit].astype(np.float64)
        anchors = self.anchors[hit].astype(np.float64)
        scores = _sigmoid(logits[hit].astype(np.float64))

        # Anchors have fixed size 1 x 1, so the regression is simply input pixels / input size.
        rel = raw / size
        centre = rel[:, 0:2] + anchors
        half = rel[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = rel[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]

        # Undo the letterbox: normalised tensor -> image continuous -> image pixel-index coordinates.
        offset = np.array([pad_x + 0.5, pad_y + 0.5])
        boxes = boxes * square - np.tile(offset, 2)
        kps = kps * square - offset

        found = weighted_nms(boxes, kps, scores, iou)
        return [Detection(box=b, score=sc, keypoints=k, model=self.name) for b, k, sc in found]


class FaceDetector:
    """Faces in an RGB frame: short-range BlazeFace, then full range when short range sees nothing.

    Short range is 3x cheaper and is trained for faces within about 2 m, which is the booking desk. The
    full-range model only runs when short range finds no face, so a subject standing back (a small face
    in the frame) is still found and guided closer, without paying for it on every good frame.
    Not thread-safe (the interpreters are not); give each thread its own detector.
    """

    def __init__(
        self,
        short_path: Path | str,
        full_path: Path | str,
        options: RuntimeOptions = RuntimeOptions(),
        min_score_short: float = 0.5,
        min_score_full: float = 0.6,
        iou: float = 0.3,
    ) -> None:
        self.short = _BlazeFace(short_path, SHORT_RANGE, options, "short")
        self.full = _BlazeFace(full_path, FULL_RANGE, options, "full")
        self.min_score_short = min_score_short
        self.min_score_full = min_score_full
        self.iou = iou

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """Faces in a uint8 HxWx3 RGB image, largest box first, in image pixels.

        Boxes are not clipped to the image: a face running off the edge is something the crop measures
        need to see.
        """
        _check_image(image_rgb)
        found = self.short.detect(image_rgb, self.min_score_short, self.iou)
        if not found:
            found = self.full.detect(image_rgb, self.min_score_full, self.iou)
        found.sort(key=lambda d: d.area, reverse=True)
        return found


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image {image.shape}")
